"""Turnaround: how long a lab takes to come up and go away, and where a scenario's time goes.

    sudo .venv/bin/python bench/turnaround.py [--cycles 10] [--scenarios scenarios/]

Prints figures; asserts nothing. Scenario times are split as the runner
records them: setup (lab up, capture start, faults), queries, analysis
(correlate + diagnose), report (HTML). The first scenario also pays for
compiling the tracer once.
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


def lab_cycles(cycles: int) -> None:
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec

    spec = load_spec()
    ups, downs = [], []
    for i in range(cycles):
        started = time.perf_counter()
        lab = Lab.up(spec, f"bench{i}")
        ups.append(time.perf_counter() - started)
        started = time.perf_counter()
        teardown(lab.name)
        downs.append(time.perf_counter() - started)
    for label, values in (("lab up", ups), ("lab down", downs), ("up + down", [u + d for u, d in zip(ups, downs)])):
        print(f"{label:10s} median {statistics.median(values):.3f} s  min {min(values):.3f} s  max {max(values):.3f} s  ({cycles} cycles)")


def scenario_times(folder: str) -> None:
    from dnscorrelate.runner import run_scenario
    from dnscorrelate.scenarios import load_scenario, scenario_paths

    print(f"\n{'scenario':22s} {'setup':>7s} {'queries':>8s} {'analysis':>9s} {'report':>7s} {'total':>7s}  verdict")
    with tempfile.TemporaryDirectory() as reports:
        totals = []
        for path in scenario_paths([folder]):
            result = run_scenario(load_scenario(path), Path(reports))
            t = result.timings
            total = sum(t.values())
            totals.append(total)
            print(f"{result.scenario.name:22s} {t.get('setup', 0):7.2f} {t.get('queries', 0):8.2f} {t.get('analysis', 0):9.2f} "
                  f"{t.get('report', 0):7.2f} {total:7.2f}  {'pass' if result.passed else 'FAIL'}")
        print(f"{'all':22s} {'':7s} {'':8s} {'':9s} {'':7s} {sum(totals):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--scenarios", default=str(ROOT / "scenarios"))
    args = parser.parse_args()
    lab_cycles(args.cycles)
    scenario_times(args.scenarios)


if __name__ == "__main__":
    main()
