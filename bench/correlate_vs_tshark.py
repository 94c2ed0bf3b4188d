"""Correlation throughput on real lab traffic: `dnscorrelate correlate` against tshark, same packets.

    sudo .venv/bin/python bench/correlate_vs_tshark.py [--sizes 10000 100000 1000000] [--rate 5000] [--keep DIR]
    .venv/bin/python bench/correlate_vs_tshark.py --reuse DIR   # time again what --keep DIR saved

1. Brings up the default lab and captures, in every namespace, dnsperf
   traffic from demo/mypod to the kube-dns VIP (a mix of Service names, answered
   by CoreDNS, and external names, forwarded or cached), until there are enough
   packet events.
2. Saves the first N events (by time) as Parquet, and the same N packets as a
   pcap, rebuilt from the tracer's records (Ethernet/IP/UDP or TCP around the
   DNS payload it kept, up to 512 bytes).
3. Times `dnscorrelate correlate --events` (load, correlate, diagnose, print)
   and `tshark -r` matching queries to responses (dns.response_to, dns.time) on
   them, in fresh processes; peak RSS from wait4.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMES = [
    "web.demo.svc.cluster.local A", "web-headless.demo.svc.cluster.local A", "kube-dns.kube-system.svc.cluster.local A",
    "kubernetes.default.svc.cluster.local A", "example.com A", "www.example.com A", "github.com A", "api.github.com A",
    "kubernetes.io A", "example.org A", "web.demo.svc.cluster.local AAAA", "nosuch.demo.svc.cluster.local A",
]


def capture_traffic(target_events: int, rate: int, workdir: Path):
    """(sorted raw records, events table) of dnsperf traffic in a fresh default lab."""
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec
    from dnscorrelate.sources.bpf import EVENT_DTYPE
    from dnscorrelate.cluster.lab.capture import lab_targets
    from dnscorrelate.live.capture import Capture

    queries = workdir / "queries.txt"
    queries.write_text("\n".join(NAMES) + "\n")
    lab = Lab.up(load_spec(), "benchcorr")
    try:
        pod = lab.pod("mypod", "demo")
        with Capture(lab_targets(lab)) as capture:
            seconds = max(2, int(target_events / 8 / rate) + 3)  # eight to nine packets per lookup
            subprocess.run(["ip", "netns", "exec", pod.netns, "dnsperf", "-s", lab.topology.cluster_dns_ip, "-d", str(queries),
                            "-l", str(seconds), "-Q", str(rate), "-c", "4", "-q", "200"], capture_output=True, check=True)
            time.sleep(0.5)
        raw = np.frombuffer(b"".join(capture.raw), dtype=EVENT_DTYPE)
        order = np.argsort(raw["ts_ns"], kind="stable")
        return raw[order], capture.events(), capture.stats, capture.boot_to_wall
    finally:
        teardown(lab.name)


def frame_of(r) -> bytes:
    """An Ethernet frame around one tracer record's L4 payload."""
    payload = bytes(r["payload"][: r["captured"]])
    sport, dport = int(r["sport"]), int(r["dport"])
    if r["proto"] == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, int(r["tcp_seq"]), 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if r["family"] == 6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), int(r["proto"]), 64, bytes(r["saddr"]), bytes(r["daddr"]))
        return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd" + ip + l4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, int(r["proto"]), 0, bytes(r["saddr"][:4]), bytes(r["daddr"][:4]))
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + l4


def write_pcap(records, path: Path, boot_to_wall: int) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # nanosecond pcap, Ethernet
        for r in records:
            frame = frame_of(r)
            seconds, nanos = divmod(int(r["ts_ns"]) + boot_to_wall, 1_000_000_000)
            out.write(struct.pack("<IIII", seconds, nanos, len(frame), len(frame)) + frame)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a running process: its own high-water mark, which starts afresh at exec (wait4's
    ru_maxrss would carry over the forking parent's, here the size of the capture)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of a command run to completion, its output discarded.
    CPU time is shown beside wall time because this VM's wall times vary by up to half between runs."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, peak_rss_mib(process.pid))
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {' '.join(cmd)}")
    return elapsed, children_cpu() - cpu_before, peak


def print_header() -> None:
    print(f"{'events':>9} | {'dnscorrelate s':>14} {'CPU s':>6} {'pkts/s':>8} {'RSS MiB':>7} | {'tshark s':>8} {'CPU s':>6} {'pkts/s':>8} "
          f"{'RSS MiB':>7} | {'speed-up':>8} {'by CPU':>6}")


def compare(size: int, events_path: Path, pcap_path: Path) -> None:
    """Time both tools on the same `size` packets and print one row."""
    ours, ours_cpu, ours_rss = timed([sys.executable, "-m", "dnscorrelate", "correlate", "--events", str(events_path), "-o", "table"])
    theirs, theirs_cpu, theirs_rss = timed(["tshark", "-n", "-r", str(pcap_path), "-T", "fields", "-e", "frame.number",
                                "-e", "dns.id", "-e", "dns.response_to", "-e", "dns.time"])
    print(f"{size:>9} | {ours:>14.2f} {ours_cpu:>6.2f} {size / ours:>8.0f} {ours_rss:>7.0f} | {theirs:>8.2f} {theirs_cpu:>6.2f} {size / theirs:>8.0f} "
          f"{theirs_rss:>7.0f} | {theirs / ours:>7.1f}x {theirs_cpu / ours_cpu:>5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rate", type=int, default=5000, help="dnsperf queries per second")
    parser.add_argument("--keep", type=Path, help="keep the captures (Parquet, pcap) in this folder")
    parser.add_argument("--reuse", type=Path, metavar="DIR", help="time the captures an earlier --keep DIR saved; capture nothing")
    args = parser.parse_args()
    if args.reuse:
        print_header()
        for size in args.sizes:
            compare(size, args.reuse / f"e{size}.parquet", args.reuse / f"p{size}.pcap")
        return
    from dnscorrelate import events

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        raw, frame, stats, boot_to_wall = capture_traffic(max(args.sizes), args.rate, workdir)
        print(f"captured {len(frame)} events ({len(raw)} records) of dnsperf traffic; lost samples {stats['lost_samples']}")
        print_header()
        for size in args.sizes:
            if size > len(raw):
                print(f"{size:>9} (only {len(raw)} captured)")
                continue
            subset = frame.iloc[:size]
            events.save(subset, workdir / f"e{size}.parquet", stats)
            write_pcap(raw[:size], workdir / f"p{size}.pcap", boot_to_wall)
            compare(size, workdir / f"e{size}.parquet", workdir / f"p{size}.pcap")


if __name__ == "__main__":
    main()
