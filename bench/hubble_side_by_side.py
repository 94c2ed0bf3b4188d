"""Hubble beside dnscorrelate on the same traffic, on a Cilium cluster with Hubble (issue 21 item 5).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/hubble_side_by_side.py --name NAME [--dnsperf-seconds 60] [--qps 200]
         [--json out.json] [--scenarios a,b,...]

NAME is a cluster of `cluster up --cni cilium --hubble` (left up). In order:

1. The scenarios whose meaning a visibility policy would change (their own Cilium policies, a NetworkPolicy's deny)
   run with no visibility policy; the others with the default one (every pod's DNS through the DNS proxy), which is
   created for them and removed after. Each scenario's session reads Hubble as `run` does on Cilium.
2. dnsperf from demo/mypod's network namespace (the host's dnsperf, entered into the pod's namespace: its packets
   leave through the pod's veth as the pod's own do) to the kube-dns VIP, at a fixed rate, without and then with
   the visibility policy: dnsperf's own figures, and the CPU seconds the Cilium agent of mypod's node (the DNS
   proxy runs in it) and the CoreDNS processes used meanwhile (/proc/PID/stat).
3. A shorter dnsperf run with the visibility policy, captured by a session with Hubble: per lookup, as for the
   scenarios.

Per lookup (dnscorrelate/side_by_side.py): seen by us / Hubble / both; rcode and answers agreement; the latency each
reports; timeouts, policy drops, the upstream leg and the VIP translation as each shows them. Prints Markdown
tables (bench/README.md holds the last ones) and, with --json, every row. Asserts nothing
(tests/cluster/test_cilium.py runs a smoke version).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (scenario, with the visibility policy): the Cilium scenarios and the deny bring their own policies
SCENARIOS = [("fqdn-policy-denied", False), ("dns-rule-refused", False), ("dns-proxy-hop", False), ("deny-dns-egress", False),
             ("healthy", True), ("missing-service", True), ("deny-dns-ingress", True), ("bad-forward-server", True)]
NAMES = ["web.demo.svc.cluster.local A", "example.com A", "example.org AAAA", "github.com A", "kubernetes.io A", "nothing.demo.svc.cluster.local A"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def visibility(stage, on: bool) -> None:
    """The default visibility policy created (on) or removed (off), and every agent's endpoints realized it."""
    from kubernetes.client.rest import ApiException

    from dnscorrelate.cluster import cilium
    from dnscorrelate.cluster.kind.network import DNS_VISIBILITY_POLICY, dns_visibility_policy
    from dnscorrelate.cluster.kube.faults import KubeFaults, wait_for

    faults = KubeFaults(stage.backend.api)
    exists = faults.exists(faults.cilium_policy_reader("CiliumClusterwideNetworkPolicy"), DNS_VISIBILITY_POLICY, "")
    if exists == on:
        return
    before = cilium.policy_revisions(faults.core)
    try:
        if on:
            faults.create_cilium_policy(dns_visibility_policy())
        else:
            faults.delete_cilium_policy("CiliumClusterwideNetworkPolicy", DNS_VISIBILITY_POLICY, "")
    except ApiException as err:
        raise SystemExit(f"visibility policy: {err.status} {err.reason}") from None
    cilium.wait_enforced(faults.core, before, lambda probe, what: wait_for(probe, what, poll_s=0.2))


def scenario_rows(stage, names: list[tuple[str, bool]]):
    """(scenario, passed, per-lookup frame) for each scenario, on the shared stage."""
    from dnscorrelate.runner import run_scenario
    from dnscorrelate.scenarios import load_scenario
    from dnscorrelate.side_by_side import lookups_side_by_side

    for name, with_visibility in names:
        visibility(stage, with_visibility)
        scenario = load_scenario(ROOT / "scenarios" / f"{name}.yaml", "kind", "cilium")
        with tempfile.TemporaryDirectory() as saved:
            result = run_scenario(scenario, evidence_dir=Path(saved), stage=stage, hubble=True)  # every scenario: Hubble too
            if result.analysis is None:
                print(f"{name}: not run: {result.error}", file=sys.stderr)
                continue
            from dnscorrelate import events
            from dnscorrelate.sources.coredns_log import read_logs

            frame, stats = events.load(Path(saved) / name / "events.parquet")
            logs = read_logs(sorted((Path(saved) / name).glob("coredns-*.log")), result.facts.corefile)
            yield name, with_visibility, result.passed, lookups_side_by_side(frame, logs, result.facts, stats)


def pod_netns(stage, pod: str = "demo/mypod") -> str:
    [target] = [t for t in stage.backend.capture_targets() if t.vantage == pod]
    return target.path


def processes(comm: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLOCK_TICKS


def agent_of(stage, pod: str = "demo/mypod") -> list[int]:
    """The cilium-agent process of the pod's node: the agent runs in its node's own network namespace."""
    node = stage.backend.pod(pod, "demo").spec.nodeName
    node_net = os.stat(f"/proc/{stage.backend.node_pids()[node]}/ns/net").st_ino
    return [pid for pid in processes("cilium-agent") if os.stat(f"/proc/{pid}/ns/net").st_ino == node_net]


def coredns_of(stage) -> list[int]:
    """This cluster's CoreDNS processes (other clusters on the machine run theirs): those in its CoreDNS pods'
    network namespaces."""
    namespaces = {os.stat(t.path).st_ino for t in stage.backend.capture_targets() if t.role == "coredns"}
    return [pid for pid in processes("coredns") if os.stat(f"/proc/{pid}/ns/net").st_ino in namespaces]


def dnsperf(netns: str, seconds: float, qps: int) -> dict:
    """dnsperf in the pod's network namespace to the kube-dns VIP at `qps` for `seconds`: its summary figures."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as data:
        data.write("\n".join(NAMES) + "\n")
    command = ["nsenter", f"--net={netns}", "dnsperf", "-s", "10.96.0.10", "-d", data.name, "-l", str(seconds), "-Q", str(qps),
               "-c", "4", "-t", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    os.unlink(data.name)
    out = done.stdout
    figure = lambda pattern: float(m.group(1)) if (m := re.search(pattern, out)) else None  # noqa: E731
    return {"sent": figure(r"Queries sent:\s+(\d+)"), "completed": figure(r"Queries completed:\s+(\d+)"),
            "lost": figure(r"Queries lost:\s+(\d+)"), "qps": figure(r"Queries per second:\s+([\d.]+)"),
            "avg_latency_ms": (figure(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1000,
            "latency_stddev_ms": (figure(r"Latency StdDev \(s\):\s+([\d.]+)") or 0) * 1000,
            "max_latency_ms": (figure(r"max ([\d.]+)\)") or 0) * 1000, "exit": done.returncode, "stderr": done.stderr.strip()[-300:]}


def cost(stage, seconds: float, qps: int, with_visibility: bool) -> dict:
    visibility(stage, with_visibility)
    netns = pod_netns(stage)
    agent, coredns = agent_of(stage), coredns_of(stage)
    before = cpu_seconds(agent), cpu_seconds(coredns), os.getloadavg()[0]
    started = time.monotonic()
    figures = dnsperf(netns, seconds, qps)
    wall = time.monotonic() - started
    figures.update(agent_cpu_s=round(cpu_seconds(agent) - before[0], 2), coredns_cpu_s=round(cpu_seconds(coredns) - before[1], 2),
                   wall_s=round(wall, 1), load=round(before[2], 1), visibility=with_visibility)
    return figures


def dnsperf_side_by_side(stage, seconds: float, qps: int):
    """A dnsperf run with the visibility policy, captured by a session that reads Hubble: per lookup."""
    from dnscorrelate.live.session import Session
    from dnscorrelate.side_by_side import lookups_side_by_side

    visibility(stage, True)
    netns = pod_netns(stage)
    stage.new_window()
    session = Session(stage.backend, hubble=True)
    session.start()
    try:
        figures = dnsperf(netns, seconds, qps)
        time.sleep(1)
    finally:
        session.stop()
    evidence = session.evidence()
    rows = lookups_side_by_side(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats)
    hubble = {k: v for k, v in session.stats.items() if k.startswith("hubble_")}
    return figures, rows, hubble, evidence.capture_stats


COLUMNS = ["lookups", "seen_by_us", "seen_by_hubble", "seen_by_both", "rcode_agree", "answers_agree", "latency_ms_us",
           "latency_ms_hubble", "timeouts_us", "timeouts_hubble", "drops_us", "drops_hubble", "upstream_leg_us",
           "upstream_leg_hubble", "vip_translation_us", "vip_translation_hubble"]


def table_row(name: str, summary: dict) -> str:
    cells = [str(summary[c]) if c not in ("rcode_agree", "answers_agree") else f"{summary[c]}/{summary['rcode_compared']}" for c in COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="a cluster of `cluster up --cni cilium --hubble`, left up")
    parser.add_argument("--dnsperf-seconds", type=float, default=30)
    parser.add_argument("--qps", type=int, default=200)
    parser.add_argument("--scenarios", help="comma-separated subset of the scenarios")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()

    from dnscorrelate.runner import SharedKindStage
    from dnscorrelate.side_by_side import summarize

    stage = SharedKindStage(args.name)
    if not stage.hubble:
        raise SystemExit(f"{args.name}: Hubble does not answer in every Cilium agent (cluster up --cni cilium --hubble)")
    wanted = [s for s in SCENARIOS if not args.scenarios or s[0] in args.scenarios.split(",")]
    out = {"scenarios": {}, "cost": [], "dnsperf": {}}
    print("| traffic | " + " | ".join(COLUMNS) + " |\n|" + " --- |" * (len(COLUMNS) + 1))
    for name, with_visibility, passed, rows in scenario_rows(stage, wanted):
        summary = summarize(rows)
        print(table_row(f"{name}{' (visibility)' if with_visibility else ''}{'' if passed else ' FAIL'}", summary), flush=True)
        out["scenarios"][name] = {"visibility": with_visibility, "passed": passed, "summary": summary,
                                  "rows": json.loads(rows.to_json(orient="records"))}
    figures, rows, hubble, capture = dnsperf_side_by_side(stage, min(args.dnsperf_seconds, 20), args.qps)
    summary = summarize(rows)
    print(table_row(f"dnsperf {min(args.dnsperf_seconds, 20):.0f} s at {args.qps} qps (visibility)", summary))
    out["dnsperf"] = {"dnsperf": figures, "summary": summary, "hubble": hubble,
                      "capture": {k: capture.get(k) for k in ("events", "lost_samples", "records_received")}}
    print(f"\nHubble during dnsperf: {hubble}\ncapture: {out['dnsperf']['capture']}\ndnsperf: {figures}")
    print("\n| DNS proxy | dnsperf qps | lost | avg latency ms | stddev ms | cilium-agent CPU s | CoreDNS CPU s | load |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for with_visibility in (False, True, False):
        figures = cost(stage, args.dnsperf_seconds, args.qps, with_visibility)
        out["cost"].append(figures)
        print(f"| {'on (visibility policy)' if with_visibility else 'none'} | {figures['qps']} | {figures['lost']} | "
              f"{figures['avg_latency_ms']:.2f} | {figures['latency_stddev_ms']:.2f} | {figures['agent_cpu_s']} | "
              f"{figures['coredns_cpu_s']} | {figures['load']} |", flush=True)
    visibility(stage, False)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
