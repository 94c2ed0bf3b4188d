"""pytest fixtures for DNS regression tests of your own Corefile and NetworkPolicies.

Installed with dnscorrelate (a `pytest11` entry point), so any test can use:

- `run_scenario(path_or_scenario, backend=None)`: run a scenario file (or a Scenario) and get
  its result; `result.passed`, `result.missing`, `result.analysis.findings`. `backend` is "lab"
  (a fresh lab) or "kind" (a fresh two-node kind cluster, ~2 min); by default pytest's
  `--dns-backend` option, itself "lab" by default. On kind every scenario whose changes can be
  undone (runner.shareable: all shipped kind scenarios) runs on the session's `dns_cluster`: its
  faults journaled and undone after it, the cluster proven back to its baseline before the next.
- `dns_cluster`: one kind cluster for the whole test session (session scope), made from the
  default lab spec and removed at the end, or `--dns-cluster NAME`, one already up (`cluster up
  --name NAME`), left up; with `--dns-backend context:NAME`, your cluster as it is (each scenario
  in a namespace of its own, shared objects only with `--dns-allow-cluster-changes`): `.cluster` (name, context, kubeconfig), `.backend` (a KubeBackend:
  facts, logs, capture targets, faults through the API, `run_queries`).
- `dns_lab(spec=None)`: bring up a lab (a spec path, a dict merged over the
  default, or None for the default); torn down after the test.
- `dns_capture(lab)`: a started `Session` (live/session.py) on `lab`: capture in
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


def pytest_addoption(parser):
    parser.addoption("--dns-backend", default="lab", type=backend_option,
                     help="dnscorrelate: where run_scenario runs scenarios: lab (default), kind, or context:NAME (your "
                          "cluster, as kubectl --context NAME; each scenario in a namespace of its own)")
    parser.addoption("--dns-allow-cluster-changes", action="store_true",
                     help="dnscorrelate: with --dns-backend context:NAME, let faults change shared objects (journaled, restored)")
    parser.addoption("--dns-cluster", metavar="NAME", default=None,
                     help="dnscorrelate: with --dns-backend kind, run on this kind cluster, already up, and leave it up")


def backend_option(value: str) -> str:
    import argparse

    if value in ("lab", "kind") or value.startswith("context:") and len(value) > len("context:"):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: choose lab, kind or context:NAME")


@pytest.fixture
def run_scenario(request):
    """run_scenario(path | Scenario, report_dir=None, backend=None, cni="flannel") -> ScenarioResult; `cni` says what the
    session's kind cluster runs (`cilium` accepts Cilium's own policies and `hubble: true`)."""
    from dnscorrelate.runner import run_scenario as run, shareable
    from dnscorrelate.scenarios import Scenario, backend_problems, load_scenario
    from dnscorrelate.errors import SpecError

    def runner(scenario, report_dir: str | Path | None = None, backend: str | None = None, cni: str = "flannel"):
        backend = backend or request.config.getoption("--dns-backend")
        makes = "lab" if backend == "lab" else "kind"  # a user's cluster can make what kind can
        cni = None if backend.startswith("context:") else cni  # a user's cluster: its API says what it runs
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario, makes, cni)
        elif problems := backend_problems(scenario, makes, cni):
            raise SpecError("; ".join(f"{'.'.join(map(str, where))}: {why}" for where, why in problems))
        # on kind, a scenario whose changes can be undone runs on the session's dns_cluster instead of a fresh one;
        # on a user's cluster every scenario runs there
        shared = backend.startswith("context:") or backend == "kind" and shareable(scenario)
        stage = request.getfixturevalue("dns_cluster") if shared else None
        return run(scenario, Path(report_dir) if report_dir else None, backend="context" if backend.startswith("context:") else makes,
                   stage=stage)

    return runner


@pytest.fixture(scope="session")
def dns_cluster(request):
    """One kind cluster (the default lab's workloads) for the test session, or `--dns-cluster NAME`; its
    `.backend` is a KubeBackend. A journal a killed session left on it is undone first (`.notes` says so)."""
    from dnscorrelate.runner import ContextStage, SharedKindStage

    backend = request.config.getoption("--dns-backend")
    if backend.startswith("context:"):
        from dnscorrelate.cluster.kind.build import load_build

        stage = ContextStage(None, backend.split(":", 1)[1], request.config.getoption("--dns-allow-cluster-changes"),
                             load_build().client_image)
    else:
        stage = SharedKindStage(request.config.getoption("--dns-cluster"))
    yield stage
    stage.down()


@pytest.fixture
def dns_lab():
    """dns_lab(spec=None) -> Lab, torn down after the test."""
    from dnscorrelate.cluster.lab.backend import Lab, teardown
    from dnscorrelate.cluster.spec import Source, load_spec, merge, validate

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
    from dnscorrelate.live.session import Session
    from dnscorrelate.cluster.lab.backend import LabBackend

    started = []

    def capture(lab):
        session = Session(LabBackend(lab)).start()
        started.append(session)
        return session

    yield capture
    for session in started:
        session.stop()
