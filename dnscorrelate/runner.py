"""Run a scenario: lab up, capture, faults, queries, correlate, diagnose, compare, report, tear down.

The runner is the one place that knows the injected fault. It applies the
faults through the backend's `Faults` and, at the end, compares the diagnosis
with `expect`; the diagnoser itself gets only the evidence (packets, CoreDNS
logs) and the cluster's facts. It speaks to a lab or a kind cluster only
through `cluster.backend`'s interfaces and each backend's front module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dnscorrelate import events
from dnscorrelate.analysis import Analysis, analyze
from dnscorrelate.cluster.backend import Backend, ClientResult, Faults
from dnscorrelate.live.session import Session
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.spec import LabSpec, default_spec, merge
from dnscorrelate.scenarios import Fault, Scenario

SETTLE_S = 0.3  # let the last packets and log lines arrive before stopping


@dataclass
class ScenarioResult:
    scenario: Scenario
    backend: str = "lab"
    passed: bool = False
    analysis: Analysis | None = None
    error: str = ""  # the run itself failed (lab, fault); then passed is False
    clients: list[ClientResult] = field(default_factory=list)
    capture_stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    propagation: list[tuple[str, float]] = field(default_factory=list)  # (fault, seconds until in effect), kind only
    facts: ClusterFacts | None = None  # the cluster as the report draws it: the facts after the faults
    report: str = ""

    @property
    def missing(self) -> list[str]:
        """Expected codes the diagnosis lacks (and the hop, when one was expected and no finding has it)."""
        if self.analysis is None:
            return list(self.scenario.expect.findings)
        codes = {f.code for f in self.analysis.findings}
        missing = [c for c in self.scenario.expect.findings if c not in codes]
        hop = self.scenario.expect.hop
        if hop and not any(f.code in self.scenario.expect.findings and f.hop == hop for f in self.analysis.findings):
            missing.append(f"hop {hop}")
        return missing

    def explain(self) -> str:
        """Why a run did not pass, with what the clients got and what the capture saw (for test failures and logs)."""
        findings = [(f.code, f.hop, f.summary) for f in self.analysis.findings] if self.analysis else []
        clients = [(c.client, c.name, c.rcode or "no answer", round(c.seconds, 2), c.error) for c in self.clients]
        correlation = self.analysis.correlation.stats if self.analysis else {}
        capture = {k: self.capture_stats.get(k) for k in ("namespaces", "events", "records_received", "lost_samples", "duration_seconds")}
        return (f"{self.scenario.name}: missing {self.missing}; found {findings}; error {self.error or None}; clients {clients}; "
                f"capture {capture}; packets {correlation.get('packets')}, traces {correlation.get('traces')}, "
                f"log records {correlation.get('log_records')}")


def apply_fault(backend: Faults, fault: Fault) -> None:
    """One fault, as the cluster would experience it: the fault calls its method of the backend's `Faults`
    (a backend that cannot make it raises `FaultNotSupported`)."""
    fault.apply_to(backend)


class Stage:
    """A cluster made for a run: its backend, its clients' queries, its evidence saved, its teardown."""

    name: str
    backend: Backend

    def queries(self, query) -> list[ClientResult]:
        return self.backend.run_queries(query.from_, query.client, query.name, query.type, query.proto, query.count,
                                        query.concurrency, query.timeout)

    def save_evidence(self, directory: Path, session: Session) -> None:
        """What a colleague needs to re-run the analysis offline: events, logs (and the lab's topology)."""
        directory.mkdir(parents=True, exist_ok=True)
        events.save(session.events(), directory / "events.parquet", session.stats)
        self.backend.save_files(directory)

    def new_window(self) -> None:
        """The next scenario on this cluster starts here (only a shared kind cluster serves several)."""

    def down(self) -> None:
        raise NotImplementedError


class LabStage(Stage):
    """A fresh lab for one scenario, named sXXXXXXXX."""

    def __init__(self, spec: LabSpec) -> None:
        from dnscorrelate.cluster.lab.backend import LabBackend

        self.name = f"s{uuid.uuid4().hex[:8]}"
        self.backend = LabBackend.up(spec, self.name)

    def down(self) -> None:
        from dnscorrelate.cluster.lab.backend import teardown

        teardown(self.name)


class KindStage(Stage):
    """A fresh two-node kind cluster for one scenario, built from its merged lab spec (cluster/kind/), reached
    through the kube backend, given what it needs of kind: the kubeconfig, the upstream container's address
    and the client image (faults through the API, kube/faults.py; clients through exec, kube/clients.py).
    Its pod network is `cni` (flannel, or Cilium: no Hubble, so no visibility policy changes what a scenario's
    NetworkPolicies deny). Named scnXXXXXXXX, removed by `down` on success, failure and Ctrl-C."""

    def __init__(self, spec: LabSpec, step: Callable[[str], None] = lambda message: None, cni: str = "flannel") -> None:
        from dnscorrelate.cluster.kind import cluster as kind
        from dnscorrelate.cluster.kind.build import load_build
        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.name = f"scn{uuid.uuid4().hex[:8]}"
        self.cluster, self.up_timings = kind.up(self.name, spec=spec, say=lambda message: step(f"cluster {message}"), cni=cni)
        try:
            self.backend = KubeBackend(str(self.cluster.kubeconfig), self.cluster.context, upstream=kind.upstream_address(self.cluster),
                                       pod_image=load_build().client_image)
            for key, text in sorted(spec.customServerBlocks.items()):  # kind's CoreDNS gets them as AKS's does
                self.backend.set_custom_server_block(key, text)
            self.backend.propagation.clear()
        except BaseException:
            self.down()
            raise

    def new_window(self) -> None:
        """The next scenario on this cluster starts here: its logs are read from now on."""
        from datetime import datetime, timezone

        self.backend.started = datetime.now(timezone.utc)

    def down(self) -> None:
        from dnscorrelate.cluster.kind import cluster as kind

        kind.down(self.name)


def reusable(scenario: Scenario) -> bool:
    """Whether a scenario can run on a cluster other scenarios use: it changes nothing (no faults) and needs
    nothing beyond the default lab (no overlay), so the cluster is as fresh after it as before."""
    return not scenario.faults and not scenario.lab.model_fields_set


def make_stage(backend: str, spec: LabSpec, step: Callable[[str], None], cni: str = "flannel") -> Stage:
    if backend == "kind":
        return KindStage(spec, step, cni)
    return LabStage(spec)


def run_scenario(
    scenario: Scenario,
    report_dir: Path | None = None,
    evidence_dir: Path | None = None,
    step: Callable[[str], None] = lambda message: None,
    backend: str = "lab",
    stage=None,
    cni: str = "flannel",
) -> ScenarioResult:
    """Run one scenario end to end on a fresh lab or kind cluster (`backend`); it is torn down on
    success, failure and Ctrl-C. A `stage` given (a cluster already up, only for a `reusable` scenario)
    is used and left up. Timings: setup (cluster up, capture started), faults (applied and,
    on kind, propagated: `propagation` has each), queries, analysis, down, report."""
    result = ScenarioResult(scenario, backend=backend)
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        result.timings[name] = result.timings.get(name, 0.0) + now - clock
        clock = now

    owned = stage is None
    if owned:
        step(f"{backend} up")
        stage = make_stage(backend, merge(default_spec(), scenario.lab), step, cni)
    else:
        stage.new_window()
    try:
        session = Session(stage.backend)
        step("capture")
        session.start()
        try:
            lap("setup")
            for index, fault in enumerate(scenario.faults):
                step(f"fault {index + 1}/{len(scenario.faults)}")
                apply_fault(stage.backend, fault)
            result.propagation = list(stage.backend.propagation)
            lap("faults")
            for query in scenario.queries:
                step(f"{query.count} x {query.client} {query.name} {query.type}")
                result.clients += stage.queries(query)
            time.sleep(SETTLE_S)
            lap("queries")
        finally:
            session.stop()
        step("analysis")
        evidence = session.evidence()
        result.capture_stats = evidence.capture_stats
        result.facts = evidence.facts
        result.analysis = analyze(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats)
        result.passed = not result.missing
        if evidence_dir:
            stage.save_evidence(evidence_dir / scenario.name, session)
        lap("analysis")
    finally:
        if owned:
            step(f"{backend} down")
            stage.down()
            lap("down")
    if report_dir is not None:
        from dnscorrelate.report.html import write_scenario_report

        step("report")
        try:
            result.report = str(write_scenario_report(result, report_dir))
        except Exception as err:  # a report that cannot be written must not hide the verdict
            result.error = f"report not written: {type(err).__name__}: {err}"
        lap("report")
    return result


def run_all(scenarios: list[Scenario], report_dir: Path | None, evidence_dir: Path | None = None, console=None, show_progress: bool = True,
            backend: str = "lab", cni: str = "flannel") -> list[ScenarioResult]:
    """Run scenarios one after another with a rich progress display; a scenario that cannot run is
    a failed result with its error, not the end of the run. Writes the report index at the end."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from dnscorrelate.errors import CaptureError, ClusterError, LabError

    results, shared = [], None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=True) as progress:
        overall = progress.add_task("scenarios", total=len(scenarios))
        try:
            for scenario in scenarios:
                def step(message: str, name: str = scenario.name) -> None:
                    progress.update(overall, description=f"{name}: {message}")

                try:
                    if backend == "kind" and reusable(scenario):  # one cluster serves every scenario that changes nothing
                        if shared is None:
                            step("kind up (shared by the scenarios without faults)")
                            shared = make_stage(backend, default_spec(), step, cni)
                            if console is not None:
                                progress.console.print(f"shared kind cluster {shared.name} for the scenarios without faults: up in "
                                                       f"{sum(shared.up_timings.steps.values()):.1f} s")
                        result = run_scenario(scenario, report_dir, evidence_dir, step, backend, stage=shared, cni=cni)
                    else:
                        result = run_scenario(scenario, report_dir, evidence_dir, step, backend, cni=cni)
                except (LabError, CaptureError, ClusterError, OSError) as err:
                    result = ScenarioResult(scenario, backend=backend, error=f"{type(err).__name__}: {err}")
                results.append(result)
                if console is not None:
                    mark = "[green]pass[/]" if result.passed else f"[red]FAIL[/] ({result.error or ', '.join(result.missing)})"
                    progress.console.print(f"{mark} {scenario.name}  [dim]{timing_line(result)}[/]")
                progress.advance(overall)
        finally:
            if shared is not None:  # also on failure and Ctrl-C
                progress.update(overall, description="kind down (shared cluster)")
                shared.down()
    if report_dir is not None and results:
        from dnscorrelate.report.html import write_index

        write_index(results, report_dir)
    return results


def timing_line(result: ScenarioResult) -> str:
    """`setup 104.2 s, faults 9.8 s (corefile 9.8 s), queries 3.1 s, analysis 0.9 s`: where a run's time went."""
    parts = []
    for name, seconds in result.timings.items():
        part = f"{name} {seconds:.1f} s"
        if name == "faults" and result.propagation:
            part += " (" + ", ".join(f"{what} {took:.1f} s" for what, took in result.propagation) + ")"
        parts.append(part)
    return ", ".join(parts)
