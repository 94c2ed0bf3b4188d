"""pcap reading speed: dnscorrelate's reader (sources/pcap/, file to events table) against tshark's
field output over the same file, with peak memory, and whether both saw the same DNS messages.

    .venv/bin/python bench/pcap_speed.py [--events 1000000] [--keep DIR | --reuse DIR] [--repeat N] [--per-packet]

The capture is made, not downloaded: the healthy scenario's real lab capture
(tests/fixtures/healthy) is replicated to N events with distinct clients, ports,
ids and times (bench/correlate_scale.py's `replicate`), then written as pcapng
with one interface per vantage point by sources/pcapng_out.py. Both tools run in
a fresh process to completion; tshark prints the fields the agreement test
compares. Then (untimed, unless --no-check) tshark runs again without TCP sequence
analysis and its messages are compared with ours: frame, id, direction, name. `--per-packet` also times the reader with its bulk path off
(`read_pcap_detailed(bulk=False)`, the reference it is tested against). A last line
times dpkt alone walking the same file (its pcapng reader and Ethernet/IP/UDP parse,
no DNS decoding), for scale. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import subprocess  # noqa: E402

from correlate_scale import replicate  # noqa: E402
from correlate_vs_tshark import timed  # noqa: E402

TSHARK_FIELDS = ["frame.number", "ip.src", "ipv6.src", "dns.id", "dns.flags.response", "dns.qry.name", "dns.flags.rcode", "dns.count.answers"]
OURS = "from dnscorrelate.sources.pcap import read_pcap; import sys; f, s = read_pcap(sys.argv[1]); print(len(f), s['packets'])"
PER_PACKET = ("from dnscorrelate.sources.pcap import read_pcap_detailed; import sys; "
              "r = read_pcap_detailed(sys.argv[1], bulk=False); print(len(r.frame))")
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


def agreement(path: Path, tshark_out: Path) -> str:
    """Whether our rows and tshark's lines name the same DNS messages: (frame, id, response?, name)."""
    from dnscorrelate.sources.pcap import read_pcap_detailed

    result = read_pcap_detailed(path)
    frame = result.frame
    is_dns = (frame["kind"] == "dns").to_numpy()
    names = frame["qname"].astype(str).str.rstrip(".").str.lower()
    ours = set(zip(result.frame_numbers[is_dns].tolist(), frame["dns_id"][is_dns].tolist(), frame["qr"][is_dns].tolist(),
                   names[is_dns].tolist()))
    theirs = set()
    for line in tshark_out.read_text().splitlines():
        number, _, _, ids, responses, qnames, *_ = line.split("\t")
        for qid, qr, name in zip(ids.split(","), responses.split(","), qnames.split(",")):
            if qid:
                theirs.add((int(number), int(qid, 16), qr in ("1", "True"), name.lower()))
    if ours == theirs:
        return f"same DNS messages: {len(ours):,} (frame, id, response?, name)"
    return f"DIFFERENT: {len(ours):,} ours, {len(theirs):,} tshark's; only tshark: {sorted(theirs - ours)[:3]}; only ours: {sorted(ours - theirs)[:3]}"


def row(name: str, size: int, wall: float, cpu: float, rss: float) -> str:
    return f"{name:<34} {wall:>8.2f} {cpu:>7.2f} {size / wall:>10,.0f} {rss:>8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the pcapng in this folder")
    parser.add_argument("--reuse", type=Path, metavar="DIR", help="time the pcapng an earlier --keep DIR saved")
    parser.add_argument("--per-packet", action="store_true", help="also time the reader with its bulk path off")
    parser.add_argument("--repeat", type=int, default=1, help="run ours and tshark this many times, interleaved; medians compared")
    parser.add_argument("--no-dpkt", action="store_true", help="skip the dpkt-alone line")
    parser.add_argument("--no-check", action="store_true", help="skip checking that tshark and we saw the same DNS messages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        folder = args.reuse or args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"replicated-{args.events}.pcapng"
        if not args.reuse:
            seconds = build(path, args.events)
            print(f"wrote {args.events:,} packets ({path.stat().st_size / 2**20:.0f} MiB) with pcapng_out in {seconds:.1f} s")
        print(f"{'reader':<34} {'wall s':>8} {'CPU s':>7} {'packets/s':>10} {'RSS MiB':>8}")
        fields = [a for f in TSHARK_FIELDS for a in ("-e", f)]
        runs = {"ours": [], "tshark": []}
        for _ in range(args.repeat):  # interleaved, so both meet the same load
            runs["ours"].append(timed([sys.executable, "-c", OURS, str(path)]))
            print(row("dnscorrelate read_pcap (to events)", args.events, *runs["ours"][-1]), flush=True)
            runs["tshark"].append(timed(["tshark", "-n", "-r", str(path), "-T", "fields", *fields]))
            print(row("tshark -T fields", args.events, *runs["tshark"][-1]), flush=True)
        ours, theirs = (tuple(statistics.median(run[i] for run in runs[name]) for i in range(3)) for name in ("ours", "tshark"))
        if args.per_packet:
            print(row("dnscorrelate, bulk path off", args.events, *timed([sys.executable, "-c", PER_PACKET, str(path)])), flush=True)
        if not args.no_dpkt:
            print(row("dpkt alone (no DNS decode)", args.events, *timed([sys.executable, "-c", DPKT_ONLY, str(path)])))
        if args.repeat > 1:
            print(f"medians of {args.repeat}: ours {ours[0]:.2f} s wall, {ours[1]:.2f} s CPU; tshark {theirs[0]:.2f} s wall, {theirs[1]:.2f} s CPU")
            pairs = [t[0] / o[0] for o, t in zip(runs["ours"], runs["tshark"])]
            print(f"wall-time ratio per pair of runs: {', '.join(f'{p:.1f}x' for p in pairs)}")
        print(f"dnscorrelate / tshark: {theirs[0] / ours[0]:.1f}x faster by wall time, {theirs[1] / ours[1]:.1f}x by CPU", flush=True)
        if not args.no_check:
            # tshark follows one TCP stream across interfaces, so the same segment seen at a second vantage point
            # is a "retransmission" it does not decode; without sequence analysis it decodes every copy, as we do
            tshark_out = folder / f"tshark-{args.events}.tsv"
            with open(tshark_out, "wb") as sink:
                subprocess.run(["tshark", "-n", "-o", "tcp.analyze_sequence_numbers:FALSE", "-r", str(path), "-T", "fields", *fields],
                               stdout=sink, stderr=subprocess.DEVNULL, check=True)
            print(agreement(path, tshark_out))
            tshark_out.unlink()


if __name__ == "__main__":
    main()
