"""`dnscorrelate demo`: the main job on the lab, end to end.

Until the scenario runner lands, it brings up the default lab, resolves names
from demo/mypod the way a workload does (glibc through the search list, dig
over UDP and TCP), shows what CoreDNS logged for them, and tears the lab down.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from dnscorrelate.lab import logs
from dnscorrelate.lab.runtime import Lab, teardown
from dnscorrelate.lab.spec import load_spec


@dataclass(frozen=True)
class Lookup:
    title: str
    command: list[str]
    expect: str  # a substring the output must contain


LOOKUPS = [
    Lookup("Service via the search list (glibc)", ["getent", "ahosts", "web"], "10.96.0.100"),
    Lookup("external name via upstream (dig, UDP)", ["dig", "+short", "example.com"], "192.0.2.10"),
    Lookup("external name over TCP", ["dig", "+short", "+tcp", "github.com"], "198.51.100.4"),
    Lookup("headless Service SRV", ["dig", "+short", "SRV", "_http._tcp.web-headless.demo.svc.cluster.local"], "web-0.web-headless"),
    Lookup("missing Service", ["dig", "nosuch.demo.svc.cluster.local"], "status: NXDOMAIN"),
]


def run(console: Console) -> int:
    """Run the demo; returns the exit code (0 when every lookup gave the expected answer)."""
    name = f"demo{uuid.uuid4().hex[:6]}"
    with console.status("bringing up the default lab"):
        lab = Lab.up(load_spec(), name)
    try:
        pod = lab.pod("mypod", "demo")
        table = Table(title=f"lookups from pod {pod.key} ({pod.ip}), lab {name}", title_justify="left")
        for column in ("LOOKUP", "COMMAND", "ANSWER", "OK"):
            table.add_column(column)
        failures = 0
        for lookup in LOOKUPS:
            done = subprocess.run(["ip", "netns", "exec", pod.netns, *lookup.command], capture_output=True, text=True, timeout=30)
            output = done.stdout.strip()
            ok = lookup.expect in output
            failures += not ok
            answer = next((line for line in output.splitlines() if lookup.expect in line), output.splitlines()[0] if output else "<nothing>")
            table.add_row(lookup.title, " ".join(lookup.command), answer.strip(), "[green]yes[/]" if ok else "[red]no[/]")
        console.print(table)
        console.print("\n[bold]CoreDNS log lines for those lookups[/] (dnscorrelate lab logs coredns):")
        for line in logs.merged(lab, "coredns"):
            if f"[INFO] {pod.ip}:" in line:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
    finally:
        teardown(name)
    console.print(f"\nlab {name} removed. {len(LOOKUPS) - failures}/{len(LOOKUPS)} lookups answered as expected.")
    return 1 if failures else 0
