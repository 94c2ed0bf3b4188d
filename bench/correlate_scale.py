"""Correlation at scale: wall time, peak memory and where the time goes, for N packet events.

    .venv/bin/python bench/correlate_scale.py [--events 1000000] [--source tests/fixtures/healthy]

The table is built from a real lab capture (a fixture: every packet of a set
of lookups, in every namespace) replicated with distinct client addresses,
ports, DNS ids and times, so it has the shape of real traffic at any size.
Each size runs in a fresh process, so peak RSS is that run's alone. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def replicate(frame: pd.DataFrame, target: int, spacing_ns: int = 2_000_000) -> pd.DataFrame:
    """`frame` repeated until it has `target` rows; copy k is shifted in time and gets its own
    client address, ports and DNS ids, like another pod's lookups."""
    copies = -(-target // len(frame))
    k = np.repeat(np.arange(copies), len(frame))[:target]
    base = pd.concat([frame] * copies, ignore_index=True).iloc[:target].copy()
    base["ts_ns"] = base["ts_ns"].to_numpy() + k * spacing_ns
    client = np.array([f"10.{100 + c // 60000}.{(c // 250) % 240}.{c % 250 + 2}" for c in range(copies)], dtype=object)
    pod_ip = "10.244.0.4"
    for column in ("src_ip", "dst_ip"):
        values = base[column].astype(str).to_numpy()
        base[column] = np.where(values == pod_ip, client[k], values)
    base["dns_id"] = (base["dns_id"].to_numpy() + k * 7) % 65536
    for column in ("src_port", "dst_port"):
        values = base[column].to_numpy()
        base[column] = np.where(values == 53, 53, 1024 + (values + k * 13) % 64000)
    from dnscorrelate import events

    return events.conform(base)


def run_once(source: str, size: int) -> dict:
    from dnscorrelate import events
    from dnscorrelate.analysis import analyze

    frame, _ = events.load(Path(source) / "events.parquet")
    frame = replicate(frame, size)
    built_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = analyze(frame, None, None, {})
    profiler.disable()
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # tottime: time in each function itself
    by_area = {"pandas": 0.0, "numpy": 0.0, "dnscorrelate": 0.0, "other": 0.0}
    for (filename, _, function), value in stats.stats.items():
        # numpy's C methods show as `{method 'take' of 'numpy.ndarray' objects}` with no file name.
        where = filename if filename != "~" else function
        area = next((a for a in ("pandas", "numpy", "dnscorrelate") if f"/{a}/" in where or f"{a}." in where), "other")
        by_area[area] += value[2]
    return {
        "events": len(frame),
        "traces": int(result.correlation.stats["traces"]),
        "seconds": round(elapsed, 2),
        "events_per_second": int(len(frame) / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(built_rss / 1024, 1),
        "profile_share": {k: round(v / total, 3) for k, v in by_area.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--source", default=str(ROOT / "tests/fixtures/healthy"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_once(args.source, args.one)))
        return
    print(f"{'events':>9} {'traces':>8} {'seconds':>8} {'events/s':>10} {'peak RSS':>10}  profile (tottime share)")
    for size in args.events:
        out = subprocess.run([sys.executable, __file__, "--source", args.source, "--one", str(size)], capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(out.stdout)
        share = "  ".join(f"{k} {v:.0%}" for k, v in r["profile_share"].items())
        print(f"{r['events']:>9} {r['traces']:>8} {r['seconds']:>8} {r['events_per_second']:>10} {r['peak_rss_mb']:>8} MB  {share}")


if __name__ == "__main__":
    main()
