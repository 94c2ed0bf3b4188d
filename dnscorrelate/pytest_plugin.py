"""pytest fixtures for DNS regression tests of your own Corefile and NetworkPolicies.

Installed with dnscorrelate (a `pytest11` entry point), so any test can use:

- `run_scenario(path_or_scenario)`: run a scenario file (or a Scenario) and get its
  result; `result.passed`, `result.missing`, `result.analysis.findings`.
- `dns_lab(spec=None)`: bring up a lab (a spec path, a dict merged over the
  default, or None for the default); torn down after the test.
- `dns_capture(lab)`: a started `Session` (cluster/backend.py) on `lab`: capture in
  every namespace, its CoreDNS logs and facts; stopped after the test. Call
  `.stop()` then `.events()`, or `.evidence()` for events, parsed logs, capture
  stats and facts.

They need root, like the lab. Example (see scenarios/README.md):

    def test_our_corefile_forwards_corp_names(run_scenario):
        result = run_scenario("dns/corp-forward.yaml")
        assert result.passed, result.missing
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture
def run_scenario(tmp_path):
    """run_scenario(path | Scenario, report_dir=None) -> ScenarioResult."""
    from dnscorrelate.runner import run_scenario as run
    from dnscorrelate.scenarios import Scenario, load_scenario

    def runner(scenario, report_dir: str | Path | None = None):
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        return run(scenario, Path(report_dir) if report_dir else None)

    return runner


@pytest.fixture
def dns_lab():
    """dns_lab(spec=None) -> Lab, torn down after the test."""
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.lab.spec import Source, load_spec, merge, validate

    made = []

    def make(spec=None):
        if isinstance(spec, dict):
            spec = merge(load_spec(), validate(spec, Source("dns_lab", None)))
        elif spec is None or isinstance(spec, (str, Path)):
            spec = load_spec(spec)
        lab = Lab.up(spec, f"p{uuid.uuid4().hex[:8]}")
        made.append(lab)
        return lab

    yield make
    for lab in made:
        teardown(lab.name)


@pytest.fixture
def dns_capture():
    """dns_capture(lab) -> a started Session on the lab."""
    from dnscorrelate.cluster.backend import Session
    from dnscorrelate.cluster.lab.backend import LabBackend

    started = []

    def capture(lab):
        session = Session(LabBackend(lab)).start()
        started.append(session)
        return session

    yield capture
    for session in started:
        session.stop()
