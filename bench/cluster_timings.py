"""The kind cluster's costs: the offline build per step, and `cluster up`/`down` per step, with
kind's own share (`kind create cluster`, the "nodes" step) beside what dnscorrelate adds.

    sudo .venv/bin/python bench/cluster_timings.py [--cycles 2]

The build's figures are read from build-times.tsv, which kind/build.sh appends to on every step it
runs (a fresh machine's run is the one with the kube-binary and rootfs steps). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_steps(tsv: Path) -> None:
    """Each step's most recent duration: what a fresh build costs (cached steps do not run)."""
    if not tsv.exists():
        print(f"no {tsv}: run `make cluster` first")
        return
    latest: dict[str, str] = {}
    for line in tsv.read_text().splitlines():
        when, step, seconds = line.split("\t")
        latest[step] = seconds
    total = sum(int(s) for s in latest.values())
    print("build step         seconds (latest run of each)")
    for step, seconds in latest.items():
        print(f"  {step:16s} {seconds:>6s}")
    print(f"  {'all steps':16s} {total:>6d}")


def up_down_cycles(cycles: int) -> None:
    from dnscorrelate.cluster.kind import cluster as kind

    rows: list[dict[str, float]] = []
    for i in range(cycles):
        name = f"bench{i}"
        made, timings = kind.up(name)
        started = time.monotonic()
        kind.down(name)
        rows.append({**timings.steps, "down": time.monotonic() - started})
    print(f"\ncluster up/down, {cycles} cycle(s), median seconds")
    for step in rows[0]:
        values = [r[step] for r in rows]
        note = "  <- kind create cluster (kind's own work: nodes, kubeadm init/join)" if step == "nodes" else ""
        print(f"  {step:12s} {statistics.median(values):7.1f}{note}")
    ups = [sum(v for k, v in r.items() if k != "down") for r in rows]
    print(f"  {'up in all':12s} {statistics.median(ups):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    from dnscorrelate.cluster.kind.build import CACHE

    build_steps(CACHE / "build-times.tsv")
    if not args.build_only:
        up_down_cycles(args.cycles)


if __name__ == "__main__":
    main()
