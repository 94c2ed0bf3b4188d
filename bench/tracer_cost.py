"""The tracer's own cost in the kernel, per packet, under real load; and how the reader batches.

    sudo .venv/bin/python bench/tracer_cost.py [--rate 16000] [--seconds 5] [--runs 3]

Runs dnsperf (cache hits) from demo/mypod against the kube-dns VIP with
capture on, and reads each namespace's dispatcher's run time and run count
from the kernel (`kernel.bpf_stats_enabled`, via `bpftool prog show`). The
dispatcher tail-calls the tracer, so its run time is the tracer's per packet.
Also prints how many records each wake-up of the capture reader took.
Needs bpftool and dnsperf (Debian). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DISPATCHER = "dnsc_dispatch"


def dispatcher_stats() -> dict[int, tuple[int, int]]:
    """Run time (ns) and run count of every dispatcher program, by program id."""
    shown = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(shown) if p.get("name") == DISPATCHER}


def one_run(lab, names: Path, rate: int, seconds: int) -> dict:
    from capture_load import dnsperf

    from dnscorrelate.cluster.lab.capture import lab_targets
    from dnscorrelate.live.capture import Capture

    pod = lab.pod("mypod", "demo")
    with Capture(lab_targets(lab)) as capture:
        before = dispatcher_stats()
        qps = dnsperf(pod.netns, lab.topology.cluster_dns_ip, names, seconds, rate)
        after = dispatcher_stats()
    ns = sum(t - before.get(pid, (0, 0))[0] for pid, (t, _) in after.items())
    runs = sum(n - before.get(pid, (0, 0))[1] for pid, (_, n) in after.items())
    return {"qps": qps, "packets": runs, "ns_per_packet": ns / max(runs, 1), "packets_per_query": runs / max(qps * seconds, 1),
            "records_per_wakeup": capture.stats["records_received"] / max(len(capture.raw), 1)}


def main() -> None:
    from capture_load import warm_cache

    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=16000, help="queries/s offered (0: as fast as dnsperf can)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    stats_flag = Path("/proc/sys/kernel/bpf_stats_enabled")
    was = stats_flag.read_text().strip()
    stats_flag.write_text("1")
    lab = Lab.up(load_spec(), "benchtracer")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            names = warm_cache(lab, Path(tmp))
            print(f"{'run':>3} | {'qps':>7} | {'packets':>8} | {'ns/packet':>9} | {'packets/query':>13} | {'records/wake-up':>15}")
            for run in range(1, args.runs + 1):
                r = one_run(lab, names, args.rate, args.seconds)
                print(f"{run:>3} | {r['qps']:>7.0f} | {r['packets']:>8} | {r['ns_per_packet']:>9.0f} | "
                      f"{r['packets_per_query']:>13.1f} | {r['records_per_wakeup']:>15.0f}")
    finally:
        teardown(lab.name)
        stats_flag.write_text(was)


if __name__ == "__main__":
    main()
