"""The 11 kind scenarios on one cluster: total wall time after `cluster up`, and per scenario where the time
went (setup, fault propagation, queries, analysis, restore, baseline check).

    sudo .venv/bin/python bench/scenarios_kind.py [--name NAME] [--per-scenario-clusters]

--name runs on a cluster already up (`cluster up --name NAME`, left up); without it one is made first
(its `up` is printed apart, not in the total) and removed after. --per-scenario-clusters also runs the
same scenarios the old way, a fresh cluster each (~20 min on 2 cores), for the side-by-side figure.
Prints figures; asserts nothing (tests/cluster/test_scenarios.py checks that they pass).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KIND_SCENARIOS = ["healthy", "bad-forward-server", "cname-without-a", "coredns-acl", "deny-dns-egress", "deny-dns-ingress",
                  "missing-service", "search-path", "slow-coredns", "truncated", "zone-not-served"]
COLUMNS = ["setup", "faults", "queries", "analysis", "restore", "baseline"]


def one_cluster(name: str | None) -> tuple[float, list]:
    """(seconds for all scenarios after the cluster is up, results) on one shared cluster."""
    from dnscorrelate.runner import SharedKindStage, run_scenario
    from dnscorrelate.scenarios import load_scenario

    scenarios = [load_scenario(ROOT / "scenarios" / f"{n}.yaml", "kind") for n in KIND_SCENARIOS]
    started = time.monotonic()
    stage = SharedKindStage(name, lambda message: None)
    if stage.up_timings:
        print(f"cluster {stage.name} up in {time.monotonic() - started:.1f} s (not counted below)")
    for note in stage.notes:
        print(note)
    results = []
    try:
        started = time.monotonic()
        for scenario in scenarios:
            results.append(run_scenario(scenario, backend="kind", stage=stage))
            print_row(results[-1])
        return time.monotonic() - started, results
    finally:
        stage.down()


def per_scenario_clusters() -> tuple[float, list]:
    """The old way: a fresh cluster per scenario (cluster up, run, down), for comparison."""
    from dnscorrelate.runner import run_scenario
    from dnscorrelate.scenarios import load_scenario

    started = time.monotonic()
    results = []
    for name in KIND_SCENARIOS:
        results.append(run_scenario(load_scenario(ROOT / "scenarios" / f"{name}.yaml", "kind"), backend="kind"))
        print_row(results[-1], ["setup", "faults", "queries", "analysis", "down"])
    return time.monotonic() - started, results


def print_row(result, columns: list[str] = COLUMNS) -> None:
    timings = result.timings
    propagation = ", ".join(f"{what} {s:.1f}" for what, s in result.propagation)
    cells = " ".join(f"{timings.get(c, 0.0):8.1f}" for c in columns)
    verdict = "pass" if result.passed else f"FAIL {result.error or result.missing}"
    print(f"  {result.scenario.name:20s} {cells}  {verdict}  {propagation}", flush=True)
    if not result.passed:
        print(f"    {result.explain()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="a cluster already up (cluster up --name NAME), left up")
    parser.add_argument("--per-scenario-clusters", action="store_true", help="also the old way, a fresh cluster per scenario")
    args = parser.parse_args()
    print(f"  {'scenario':20s} " + " ".join(f"{c:>8s}" for c in COLUMNS) + "  (seconds)")
    total, results = one_cluster(args.name)
    passed = sum(r.passed for r in results)
    print(f"one cluster: {len(results)} scenarios in {total:.1f} s after cluster up ({passed} passed); "
          f"beyond the faults' propagation: {total - sum(r.timings.get('faults', 0.0) for r in results):.1f} s")
    if args.per_scenario_clusters:
        print(f"  {'scenario':20s} " + " ".join(f"{c:>8s}" for c in ["setup", "faults", "queries", "analysis", "down"]))
        old, old_results = per_scenario_clusters()
        print(f"a cluster per scenario: {len(old_results)} scenarios in {old:.1f} s ({sum(r.passed for r in old_results)} passed)")


if __name__ == "__main__":
    main()
