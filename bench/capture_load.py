"""Capture cost and loss under real load: dnsperf from a lab pod against the kube-dns VIP, capture off and on.

    sudo .venv/bin/python bench/capture_load.py [--rates 2000 4000 8000 16000 0] [--seconds 5] [--repeat 3] [--mixes cached forwarded]

For two mixes (cache hits: a few external names CoreDNS has cached;
forwarded: names unique to each run, so every query goes to the upstream)
and each rate (0 = as fast as dnsperf can), it runs dnsperf in --repeat
interleaved pairs, capture off then on, and prints for the median run of each
side: the qps CoreDNS achieved, CoreDNS's CPU time (all
replicas and the upstream, from /proc), the capture's own CPU (this process:
ring-buffer polling and copying; decoding happens later and is not counted),
events per second delivered, and lost samples. Prints figures; asserts
nothing. Everything shares the machine's two cores with dnsperf.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHED = ["example.com A", "www.example.com A", "github.com A", "api.github.com A", "kubernetes.io A", "example.org A"]
TICKS = os.sysconf("SC_CLK_TCK")


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
    cmd = ["ip", "netns", "exec", netns, "dnsperf", "-s", server, "-d", str(names), "-l", str(seconds), "-c", "8", "-q", "500", "-t", "2"]
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


def median_run(runs: list[dict]) -> dict:
    """The run with the median qps (its other figures come with it)."""
    return sorted(runs, key=lambda run: run["qps"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 4000, 8000, 16000, 0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="off/on pairs per step; the median run is shown")
    parser.add_argument("--mixes", nargs="+", choices=["cached", "forwarded"], default=["cached", "forwarded"])
    args = parser.parse_args()
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec
    from dnscorrelate.live.bpf import tracer

    tracer()  # compile once, before any measurement
    lab = Lab.up(load_spec(), "benchload")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cached = warm_cache(lab, Path(tmp))
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
