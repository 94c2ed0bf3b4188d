"""pcap reading speed: dnscorrelate's reader (sources/pcap.py, file to events table) against tshark's
field output over the same file, with peak memory.

    .venv/bin/python bench/pcap_speed.py [--events 1000000] [--keep DIR | --reuse DIR]

The capture is made, not downloaded: the healthy scenario's real lab capture
(tests/fixtures/healthy) is replicated to N events with distinct clients, ports,
ids and times (bench/correlate_scale.py's `replicate`), then written as pcapng
with one interface per vantage point by sources/pcapng_out.py. Both tools run in
a fresh process to completion; tshark prints the fields the agreement test
compares. A third line times dpkt alone walking the same file (its pcapng reader
and Ethernet/IP/UDP parse, no DNS decoding), for scale. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from correlate_scale import replicate  # noqa: E402
from correlate_vs_tshark import timed  # noqa: E402

TSHARK_FIELDS = ["frame.number", "ip.src", "ipv6.src", "dns.id", "dns.flags.response", "dns.qry.name", "dns.flags.rcode", "dns.count.answers"]
OURS = "from dnscorrelate.sources.pcap import read_pcap; import sys; f, s = read_pcap(sys.argv[1]); print(len(f), s['packets'])"
DPKT_ONLY = """
import sys, dpkt
n = 0
with open(sys.argv[1], 'rb') as fh:
    for ts, buf in dpkt.pcapng.Reader(fh):
        ip = dpkt.ethernet.Ethernet(buf).data
        n += isinstance(ip.data, (dpkt.udp.UDP, dpkt.tcp.TCP))
print(n)
"""


def build(path: Path, size: int) -> float:
    """Write a `size`-packet pcapng of replicated real lab traffic; returns the seconds it took."""
    from dnscorrelate import events
    from dnscorrelate.sources.pcapng_out import write_pcapng

    frame, _ = events.load(ROOT / "tests/fixtures/healthy/events.parquet")
    started = time.perf_counter()
    write_pcapng(replicate(frame, size), path)
    return time.perf_counter() - started


def row(name: str, size: int, wall: float, cpu: float, rss: float) -> str:
    return f"{name:<34} {wall:>8.2f} {cpu:>7.2f} {size / wall:>10,.0f} {rss:>8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the pcapng in this folder")
    parser.add_argument("--reuse", type=Path, metavar="DIR", help="time the pcapng an earlier --keep DIR saved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        folder = args.reuse or args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"replicated-{args.events}.pcapng"
        if not args.reuse:
            seconds = build(path, args.events)
            print(f"wrote {args.events:,} packets ({path.stat().st_size / 2**20:.0f} MiB) with pcapng_out in {seconds:.1f} s")
        print(f"{'reader':<34} {'wall s':>8} {'CPU s':>7} {'packets/s':>10} {'RSS MiB':>8}")
        ours = timed([sys.executable, "-c", OURS, str(path)])
        print(row("dnscorrelate read_pcap (to events)", args.events, *ours), flush=True)
        theirs = timed(["tshark", "-n", "-r", str(path), "-T", "fields", *[a for f in TSHARK_FIELDS for a in ("-e", f)]])
        print(row("tshark -T fields", args.events, *theirs), flush=True)
        print(row("dpkt alone (no DNS decode)", args.events, *timed([sys.executable, "-c", DPKT_ONLY, str(path)])))
        print(f"dnscorrelate / tshark: {theirs[0] / ours[0]:.1f}x faster by wall time, {theirs[1] / ours[1]:.1f}x by CPU")


if __name__ == "__main__":
    main()
