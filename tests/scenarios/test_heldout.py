"""Scenarios the diagnosis rules were not written for, composed only from the documented primitives
(tests/scenarios/heldout/*.yaml): each must be diagnosed as its expect says."""

from pathlib import Path

import pytest

from dnscorrelate.scenarios import scenario_paths

HELDOUT = scenario_paths([str(Path(__file__).resolve().parent / "heldout")])

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("path", HELDOUT, ids=[p.stem for p in HELDOUT])
def test_heldout_scenario(run_scenario, lab_ready, path):
    result = run_scenario(path)
    assert result.passed, result.explain()
