"""Capture cost and loss under real load: dnsperf from a lab pod against the kube-dns VIP, capture off and on.

    sudo .venv/bin/python bench/capture_load.py [--rates 2000 4000 8000 16000 0] [--seconds 5] [--repeat 3] [--mixes cached forwarded]
    sudo .venv/bin/python bench/capture_load.py --cpu-per-query [--seconds 5] [--repeat 6] [--mixes cached forwarded]
    sudo .venv/bin/python bench/capture_load.py --agent-cpu [--rates 10000] [--seconds 10] [--repeat 2]

For two mixes (cache hits: a few external names CoreDNS has cached;
forwarded: names unique to each run, so every query goes to the upstream)
and each rate (0 = as fast as dnsperf can), it runs dnsperf in --repeat
interleaved pairs, capture off then on, and prints for the median run of each
side: the qps CoreDNS achieved, CoreDNS's CPU time (all
replicas and the upstream, from /proc), the capture's own CPU (this process:
ring-buffer polling and copying; decoding happens later and is not counted),
events per second delivered, and lost samples. Prints figures; asserts
nothing. Everything shares the machine's two cores with dnsperf.

--cpu-per-query: the on/off ratio as CoreDNS's CPU per query rather than qps, which other work on the machine
moves far more than capture does. CoreDNS's processes (replicas and upstream) are pinned to core 1, dnsperf
and this process (the capture's reader) to core 0; at the maximum rate, --repeat interleaved off/on pairs
give CoreDNS CPU seconds / queries answered. The ratio off/on of the medians is the qps ratio CoreDNS would
show if its core were its limit (the tracer's own time is charged to whoever sends or receives the packet,
CoreDNS included). Load average is printed before and after: the figures mean little when it is high.

--agent-cpu: the node agent's own CPU (`kube/agent.py`'s `Agent`, run in this process over the lab's
namespaces, its stream written to /dev/null) while dnsperf sends cache hits at --rates qps, filtering for
another pod's lookups (`trace`'s default: every record here is counted and dropped) and sending every record
(the full stream), alternating, --repeat times. The lab is one node: its agent sees every hop of every
lookup, more than any one node of a cluster would.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHED = ["example.com A", "www.example.com A", "github.com A", "api.github.com A", "kubernetes.io A", "example.org A"]
TICKS = os.sysconf("SC_CLK_TCK")
PIN_DNSPERF = "--cpu-per-query" in sys.argv  # dnsperf on core 0, apart from CoreDNS


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dnsperf(netns: str, server: str, names: Path, seconds: int, rate: int) -> float:
    """Queries per second dnsperf got answered."""
    cmd = ["ip", "netns", "exec", netns, *(["taskset", "-c", "0"] if PIN_DNSPERF else []), "dnsperf", "-s", server, "-d", str(names), "-l", str(seconds), "-c", "8", "-q", "500", "-t", "2"]
    if rate:
        cmd += ["-Q", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def warm_cache(lab, directory: Path) -> Path:
    """The cache-hit names as a dnsperf file in `directory`, each asked once so CoreDNS has it cached."""
    names = directory / "cached.txt"
    names.write_text("\n".join(CACHED) + "\n")
    dnsperf(lab.pod("mypod", "demo").netns, lab.topology.cluster_dns_ip, names, 1, 1000)
    return names


def measure(lab, names: Path, seconds: int, rate: int, capture_on: bool) -> dict:
    from dnscorrelate.cluster.lab.capture import lab_targets
    from dnscorrelate.live.capture import Capture

    pids = [p.pid for p in lab.processes]
    pod = lab.pod("mypod", "demo")
    capture = Capture(lab_targets(lab)) if capture_on else None
    if capture:
        capture.start()
    cpu_before, own_before = cpu_seconds(pids), own_cpu()
    qps = dnsperf(pod.netns, lab.topology.cluster_dns_ip, names, seconds, rate)
    coredns_cpu = cpu_seconds(pids) - cpu_before
    result = {"qps": qps, "coredns_cpu": coredns_cpu, "capture_cpu": 0.0, "events_per_s": 0.0, "lost": 0}
    if capture:
        capture.stop()
        result["capture_cpu"] = own_cpu() - own_before
        result["events_per_s"] = capture.stats["records_received"] / seconds
        result["lost"] = capture.stats["lost_samples"]
        capture.raw.clear()
    return result


def pin(pids: list[int], core: int) -> None:
    """Every thread of these processes onto one core."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, check=True)


def cpu_per_query(lab, names_of, seconds: int, repeat: int, mix: str) -> None:
    """Interleaved off/on pairs at the maximum rate, CoreDNS pinned apart: CoreDNS µs per answered query each side."""
    import statistics

    pairs = []
    for attempt in range(repeat):
        pair = {}
        for capture_on in ((False, True) if attempt % 2 == 0 else (True, False)):  # alternate which side goes first
            run = measure(lab, names_of(attempt, capture_on), seconds, 0, capture_on)
            pair[capture_on] = run | {"us_per_query": run["coredns_cpu"] / max(run["qps"] * seconds, 1) * 1e6}
        pairs.append(pair)
        print(f"| {mix} | {attempt + 1} | {pair[False]['qps']:,.0f} | {pair[True]['qps']:,.0f} | {pair[False]['us_per_query']:.1f} | "
              f"{pair[True]['us_per_query']:.1f} | {pair[False]['us_per_query'] / pair[True]['us_per_query']:.3f} | "
              f"{pair[True]['lost']} | {os.getloadavg()[0]:.1f} |", flush=True)
    off = statistics.median(p[False]["us_per_query"] for p in pairs)
    on = statistics.median(p[True]["us_per_query"] for p in pairs)
    ratios = sorted(p[False]["us_per_query"] / p[True]["us_per_query"] for p in pairs)
    print(f"{mix}: CoreDNS CPU per query, median of {repeat}: off {off:.1f} µs, on {on:.1f} µs: ratio {off / on:.3f} "
          f"(pairs {ratios[0]:.3f}-{ratios[-1]:.3f}); goal 0.97: {'met' if off / on >= 0.97 else 'not met'}")


class LabDiscovery:
    """The lab's namespaces, for an agent run in this process (`kube/agent.py`'s `Agent` asks these two)."""

    errors = 0

    def __init__(self, lab) -> None:
        from dnscorrelate.cluster.lab.capture import lab_targets

        self.lab, self.lab_targets = lab, lab_targets

    def targets(self):
        return self.lab_targets(self.lab)

    def watcher(self):
        return lambda: self.lab_targets(self.lab)


def agent_cpu(lab, names: Path, seconds: int, rate: int, filtered: bool) -> dict:
    """CPU seconds of an agent capturing the lab while dnsperf runs, and what it sent."""
    import threading

    from dnscorrelate.cluster.kube.agent import Agent

    with open(os.devnull, "wb") as out:
        agent = Agent(out, "node-0", discovery=LabDiscovery(lab), clients=("10.244.9.99",) if filtered else ())
        thread = threading.Thread(target=agent.run, args=(seconds + 3,))
        before = own_cpu()
        thread.start()
        while agent.capture is None or not agent.writer.bytes_sent:
            time.sleep(0.05)
        start_cpu = own_cpu()
        qps = dnsperf(lab.pod("mypod", "demo").netns, lab.topology.cluster_dns_ip, names, seconds, rate)
        used = own_cpu() - start_cpu
        agent.stop()
        thread.join()
    counters = agent.counters()
    return {"qps": qps, "cpu_share": used / seconds, "startup_cpu": start_cpu - before, "events": counters["events"],
            "sent": agent.writer.records_sent, "bytes": agent.writer.bytes_sent}


def median_run(runs: list[dict]) -> dict:
    """The run with the median qps (its other figures come with it)."""
    return sorted(runs, key=lambda run: run["qps"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 4000, 8000, 16000, 0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="off/on pairs per step; the median run is shown")
    parser.add_argument("--mixes", nargs="+", choices=["cached", "forwarded"], default=["cached", "forwarded"])
    parser.add_argument("--cpu-per-query", action="store_true", help="CoreDNS CPU per query off/on, pinned cores, at the maximum")
    parser.add_argument("--agent-cpu", action="store_true", help="the node agent's CPU, filtered and full, at --rates")
    args = parser.parse_args()
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec
    from dnscorrelate.live.bpf import tracer

    tracer()  # compile once, before any measurement
    lab = Lab.up(load_spec(), "benchload")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cached = warm_cache(lab, Path(tmp))
            if args.agent_cpu:
                print(f"load average {os.getloadavg()}")
                print("| rate | stream | qps | agent CPU (% of a core) | events seen | records sent | bytes sent |")
                print("| --- | --- | --- | --- | --- | --- | --- |")
                for rate in args.rates:
                    for attempt in range(args.repeat):
                        for filtered in (True, False):
                            r = agent_cpu(lab, cached, args.seconds, rate, filtered)
                            print(f"| {rate or 'max'} | {'filtered' if filtered else 'full'} | {r['qps']:,.0f} | "
                                  f"{100 * r['cpu_share']:.1f} | {r['events']:,} | {r['sent']:,} | {r['bytes']:,} |", flush=True)
                print(f"load average after: {os.getloadavg()}")
                return
            if args.cpu_per_query:
                pin([p.pid for p in lab.processes], 1)
                os.sched_setaffinity(0, {0})  # the capture's reader thread is started after this: it inherits core 0
                print(f"CoreDNS and the upstream on core 1; dnsperf and the capture reader on core 0; load average {os.getloadavg()}")
                print("| mix | pair | qps off | qps on | CoreDNS µs/query off | on | off/on | lost | load (1 min) |")
                print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

                def names_of(mix):
                    def names(attempt, capture_on):
                        if mix == "cached":
                            return cached
                        path = Path(tmp) / "fwd.txt"
                        path.write_text("".join(f"p{attempt}-{int(capture_on)}-{i}.example.org A\n" for i in range(300_000)))
                        return path
                    return names

                for mix in args.mixes:
                    cpu_per_query(lab, names_of(mix), args.seconds, args.repeat, mix)
                print(f"load average after: {os.getloadavg()}")
                return
            print(f"{'mix':9s} {'rate':>6s} | {'qps off':>8s} {'qps on':>8s} {'ratio':>6s} | {'CoreDNS CPU s off':>17s} {'on':>6s} "
                  f"| {'capture CPU s':>13s} {'us/query':>8s} {'% core':>6s} | {'events/s':>9s} {'lost':>5s}")
            for mix in args.mixes:
                for step, rate in enumerate(args.rates):
                    if mix == "cached":
                        names = cached
                    else:
                        names = Path(tmp) / f"fwd{step}.txt"
                        names.write_text("".join(f"r{step}-{i}.example.org A\n" for i in range(300_000)))
                    offs, ons = [], []
                    for attempt in range(args.repeat):  # interleaved, so drifts of this VM hit both sides
                        offs.append(measure(lab, names, args.seconds, rate, capture_on=False))
                        if mix == "forwarded":
                            names.write_text("".join(f"s{step}-{attempt}-{i}.example.org A\n" for i in range(300_000)))
                        ons.append(measure(lab, names, args.seconds, rate, capture_on=True))
                        if mix == "forwarded":
                            names.write_text("".join(f"r{step}-{attempt + 1}-{i}.example.org A\n" for i in range(300_000)))
                    off, on = median_run(offs), median_run(ons)
                    per_query = on["capture_cpu"] / max(on["qps"] * args.seconds, 1) * 1e6
                    print(f"{mix:9s} {rate or 'max':>6} | {off['qps']:>8.0f} {on['qps']:>8.0f} {on['qps'] / off['qps']:>6.2f} | "
                          f"{off['coredns_cpu']:>17.2f} {on['coredns_cpu']:>6.2f} | {on['capture_cpu']:>13.2f} {per_query:>8.1f} "
                          f"{on['capture_cpu'] / args.seconds * 100:>5.0f}% | {on['events_per_s']:>9.0f} {on['lost']:>5d}")
    finally:
        teardown(lab.name)


if __name__ == "__main__":
    main()
