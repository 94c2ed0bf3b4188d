"""Reading a lab's DNS server logs, as `kubectl logs --timestamps --prefix` shows them."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path

from dnscorrelate.cluster.lab.netns import LabError


def log_lines(path: Path, prefix: str) -> Iterator[tuple[str, str]]:
    """(timestamp, prefixed line) for each line of one timestamped log file."""
    if not path.exists():
        return
    with path.open(errors="replace") as f:
        for line in f:
            stamp, _, rest = line.rstrip("\n").partition(" ")
            yield stamp, f"{prefix} {stamp} {rest}"


def merged(lab, component: str, replica: int | None = None) -> Iterator[str]:
    """The lines of `component`'s servers (coredns replicas, upstream, nodelocal), merged in time order."""
    roles = {
        "coredns": lambda r: r.startswith("coredns-") and (replica is None or r == f"coredns-{replica}"),
        "upstream": lambda r: r == "upstream",
        "nodelocal": lambda r: r.startswith("nodelocal-"),
    }[component]
    processes = [p for p in lab.processes if roles(p.role)]
    if not processes:
        raise LabError(f"lab {lab.name!r} runs no {component} server" + (f" replica {replica}" if replica is not None else ""))
    streams = [log_lines(Path(p.log), f"[pod/{p.role}/coredns]") for p in processes]
    for _, line in heapq.merge(*streams):
        yield line
