"""Every shipped scenario (scenarios/*.yaml) runs as its own test, through the pytest plugin's run_scenario.

Each brings up a real lab, injects its fault, captures, and must be diagnosed
as its `expect` says, from evidence alone."""

from pathlib import Path

import pytest

from dnscorrelate.scenarios import scenario_paths

SCENARIOS = scenario_paths([str(Path(__file__).resolve().parents[2] / "scenarios")])

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(run_scenario, lab_ready, path):
    result = run_scenario(path)
    assert result.passed, result.explain()
    assert result.capture_stats["lost_samples"] == 0
    assert result.analysis.correlation.stats["unparsed_lines"] == 0
