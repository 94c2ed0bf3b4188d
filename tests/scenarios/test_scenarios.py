"""Every shipped scenario (scenarios/*.yaml) runs as its own test, through the pytest plugin's run_scenario.

Each brings up a real lab, injects its fault, captures, and must be diagnosed
as its `expect` says, from evidence alone."""

from pathlib import Path

import pytest

from dnscorrelate.errors import SpecError
from dnscorrelate.scenarios import load_scenario, scenario_paths


def on_the_lab(path: Path) -> bool:
    """Every shipped scenario is the lab's but Cilium's own, which the lab refuses (tests/cluster/test_cilium.py runs
    them); any other refusal is an error of the file, raised."""
    try:
        load_scenario(path)
        return True
    except SpecError as err:
        if "needs Cilium" in str(err):
            return False
        raise


SCENARIOS = [p for p in scenario_paths([str(Path(__file__).resolve().parents[2] / "scenarios")]) if on_the_lab(p)]

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(run_scenario, lab_ready, path):
    result = run_scenario(path)
    assert result.passed, result.explain()
    assert result.capture_stats["lost_samples"] == 0
    assert result.analysis.correlation.stats["unparsed_lines"] == 0
