"""Peak RSS of `dnscorrelate capture -o FILE.parquet` over a long, high-rate capture (issue 13: a 10-minute
capture at 10k qps under 1 GB).

    sudo .venv/bin/python bench/capture_memory.py [--seconds 120] [--rate 10000] [--sample 5]

Brings up a lab, starts `capture --lab ... -o FILE.parquet` in a fresh process, and runs dnsperf in
demo/mypod against the kube-dns VIP (cache-hit names, so the rate is not capped by the upstream) for
--seconds at --rate (0: as fast as dnsperf can). Every --sample seconds it prints the capture process's
RSS and peak RSS (VmRSS, VmHWM from /proc) beside the Parquet file's size so far; at the end, the events
written, the whole run's peak RSS and CPU time (/usr/bin/time) and the machine's load average. A flat RSS column against a growing file is the claim. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def status_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_limited(pid: int, percent: int) -> Path:
    """Move process `pid` (all its threads) into a new cgroup v1 cpu group with a quota of `percent` of one CPU."""
    group = Path(f"/sys/fs/cgroup/cpu/dnsc-benchcap-{pid}")
    group.mkdir()
    (group / "cpu.cfs_period_us").write_text("100000")
    (group / "cpu.cfs_quota_us").write_text(str(percent * 1000))
    (group / "cgroup.procs").write_text(str(pid))
    return group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--rate", type=int, default=10000, help="queries per second dnsperf sends; 0: as fast as it can")
    parser.add_argument("--sample", type=float, default=5.0)
    parser.add_argument("--cpu-limit", type=int, metavar="PERCENT",
                        help="hold the capture process to PERCENT of one CPU (a cgroup v1 cpu quota): a slower machine, to see decoding fall behind")
    args = parser.parse_args()
    from capture_load import dnsperf, warm_cache

    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec

    lab = Lab.up(load_spec(), "benchcapmem")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            names = warm_cache(lab, Path(tmp))
            saved = Path(tmp) / "events.parquet"
            capture = subprocess.Popen(["/usr/bin/time", "-f", "peak RSS %M KB, CPU %U s user %S s system", sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name,
                                        "--duration", str(args.seconds + 5), "-o", str(saved)], stderr=subprocess.PIPE, text=True, cwd=ROOT)
            started_line = capture.stderr.readline()
            if "capturing in" not in started_line:
                raise SystemExit(f"capture did not start: {started_line}{capture.stderr.read()}")
            pid = int(Path(f"/proc/{capture.pid}/task/{capture.pid}/children").read_text().split()[0])  # under /usr/bin/time
            if args.cpu_limit:
                limited = cpu_limited(pid, args.cpu_limit)
            qps: list[float] = []
            load = threading.Thread(target=lambda: qps.append(dnsperf(lab.pod("mypod", "demo").netns, lab.topology.cluster_dns_ip,
                                                                        names, args.seconds, args.rate)))
            started = time.monotonic()
            load_before = os.getloadavg()
            load.start()
            print(f"{'seconds':>7} {'RSS MB':>7} {'peak MB':>8} {'file MB':>8}", flush=True)
            peak = 0.0
            while capture.poll() is None:
                try:
                    rss, peak = status_mb(pid)
                except (FileNotFoundError, ProcessLookupError):
                    break
                partial = list(Path(tmp).glob(".events.parquet.*.partial"))
                size = partial[0].stat().st_size / 2**20 if partial else float("nan")
                print(f"{time.monotonic() - started:>7.0f} {rss:>7.0f} {peak:>8.0f} {size:>8.1f}", flush=True)
                time.sleep(args.sample)
            load.join()
            _, err = capture.communicate()
            print((started_line + err).strip())
            print(f"dnsperf: {qps[0]:.0f} qps answered for {args.seconds} s; capture peak RSS at the last sample {peak:.0f} MB")
            if args.cpu_limit:
                print(f"capture held to {args.cpu_limit}% of one CPU")
                limited.rmdir()
            print("load average (1, 5, 15 min) at the start {:.2f} {:.2f} {:.2f}, at the end {:.2f} {:.2f} {:.2f} on {} CPUs".format(
                *load_before, *os.getloadavg(), os.cpu_count()))
    finally:
        teardown(lab.name)


if __name__ == "__main__":
    main()
