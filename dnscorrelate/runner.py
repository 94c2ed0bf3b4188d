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

    def enter(self, scenario: Scenario, step: Callable[[str], None]) -> None:
        """A scenario starts on this stage, which other scenarios use too (made before it, left up after it)."""
        self.new_window()

    def leave(self, step: Callable[[str], None], lap: Callable[[str], None]) -> None:
        """The scenario is done (or failed, or was interrupted): the stage is put back for the next one."""

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
    Named scnXXXXXXXX, removed by `down` on success, failure and Ctrl-C."""

    def __init__(self, spec: LabSpec, step: Callable[[str], None] = lambda message: None) -> None:
        from dnscorrelate.cluster.kind import cluster as kind
        from dnscorrelate.cluster.kind.build import load_build
        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.name = f"scn{uuid.uuid4().hex[:8]}"
        self.cluster, self.up_timings = kind.up(self.name, spec=spec, say=lambda message: step(f"cluster {message}"))
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


# what a shared cluster can take from a scenario's lab overlay and give back: objects it creates and removes,
# ConfigMaps it restores, the upstream container's files; nodes, replicas, NodeLocal DNS and dnstap need a cluster built so
SHAREABLE_OVERLAY = {"manifests", "upstreamZones", "upstreamCorefile", "corefile", "customServerBlocks"}


class SharedKindStage(Stage):
    """One kind cluster for many scenarios: made from the default lab (removed by `down`), or one already up
    (`--name`, left up). Before each scenario its changes are journaled on disk (cluster/kube/journal.py,
    `RUN_DIR/journal.json`) as they are made; after it they are undone, on failure and Ctrl-C too, and the
    cluster is proven back to its baseline (ConfigMaps, CoreDNS ready on the old Corefile, no scenario
    objects, a healthy lookup answered) before the next one. A journal a killed run left is undone first."""

    HEALTHY_QUERY = ("demo/mypod", "dnspython", "web", "A", "udp", 1, 1, 2.0)

    def __init__(self, name: str | None = None, step: Callable[[str], None] = lambda message: None) -> None:
        from dnscorrelate.cluster.kind import cluster as kind
        from dnscorrelate.cluster.kind.build import load_build
        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.owned = name is None
        self.notes: list[str] = []  # what a reader should know: a killed run's changes undone
        self.up_timings = None
        if self.owned:
            self.name = f"scn{uuid.uuid4().hex[:8]}"
            self.cluster, self.up_timings = kind.up(self.name, spec=default_spec(), say=lambda message: step(f"cluster {message}"))
        else:
            self.name = name
            self.cluster = kind.attached(name)
        try:
            self.backend = KubeBackend(str(self.cluster.kubeconfig), self.cluster.context, upstream=kind.upstream_address(self.cluster),
                                       pod_image=load_build().client_image)
            self.journal_path = self.cluster.dir / "journal.json"
            self.recover(step)
            self.baseline = self.backend.baseline()
            self.prove_baseline(step)
        except BaseException:
            if self.owned:
                self.down()
            raise

    def recover(self, step: Callable[[str], None]) -> None:
        """Undo what a run killed mid-scenario left (its journal, the upstream's files), and say so."""
        from dnscorrelate.cluster.kind import cluster as kind

        left = self.backend.restore_journal(self.journal_path, lambda message: step(f"recovering: {message}"))
        if left is not None:
            scenario, done = left
            self.notes.append(f"cluster {self.name}: scenario {scenario} did not finish (its run was killed); "
                              f"restored from its journal: {', '.join(done) or 'nothing had changed yet'}")
        if kind.restore_upstream(self.cluster):
            self.notes.append(f"cluster {self.name}: the upstream resolver's files a killed run changed were restored")

    def enter(self, scenario: Scenario, step: Callable[[str], None]) -> None:
        """Journal on; the scenario's lab overlay made (objects, Corefile, custom blocks through the journaled
        faults; the upstream's files); its log window starts after that."""
        from dnscorrelate.cluster.kind import cluster as kind

        self.backend.start_journal(self.journal_path, scenario.name)
        overlay = scenario.lab
        if overlay.upstreamZones or overlay.upstreamCorefile:
            step("upstream overlay")
            kind.overlay_upstream(self.cluster, merge(default_spec(), overlay))
        if overlay.corefile:
            step("overlay Corefile")
            self.backend.set_corefile(overlay.corefile)
        for key, text in sorted(overlay.customServerBlocks.items()):
            step(f"overlay coredns-custom {key}")
            self.backend.set_custom_server_block(key, text)
        if overlay.manifests:
            step("overlay objects")
            self.backend.apply(overlay.manifests)
        self.backend.propagation.clear()
        self.new_window()

    def leave(self, step: Callable[[str], None], lap: Callable[[str], None]) -> None:
        from dnscorrelate.cluster.kind import cluster as kind

        step("restore")
        self.backend.restore_journal(self.journal_path, lambda message: step(f"restore: {message}"))
        kind.restore_upstream(self.cluster)
        lap("restore")
        self.prove_baseline(step)
        lap("baseline")

    def prove_baseline(self, step: Callable[[str], None]) -> None:
        """ConfigMaps, CoreDNS's replicas and Corefile as at the start, no scenario objects, and a healthy lookup
        answered; a ClusterError saying what differs."""
        from dnscorrelate.errors import ClusterError

        step("baseline check")
        self.backend.wait_baseline(self.baseline)
        [answer] = self.backend.run_queries(*self.HEALTHY_QUERY)
        if answer.rcode != "NOERROR" or not answer.answers:
            raise ClusterError(f"cluster {self.name} is not back to its baseline: {self.HEALTHY_QUERY[0]} asked "
                               f"{self.HEALTHY_QUERY[2]} and got {answer.rcode or 'no answer'} {answer.error}")

    def new_window(self) -> None:
        from datetime import datetime, timezone

        self.backend.started = datetime.now(timezone.utc)

    def down(self) -> None:
        from dnscorrelate.cluster.kind import cluster as kind

        if self.owned:
            kind.down(self.name)


def shareable(scenario: Scenario) -> bool:
    """Whether a scenario can run on a shared cluster: all it changes can be undone (its faults through the
    journal, its overlay within SHAREABLE_OVERLAY)."""
    return scenario.lab.model_fields_set <= SHAREABLE_OVERLAY


def make_stage(backend: str, spec: LabSpec, step: Callable[[str], None]) -> Stage:
    if backend == "kind":
        return KindStage(spec, step)
    return LabStage(spec)


def run_scenario(
    scenario: Scenario,
    report_dir: Path | None = None,
    evidence_dir: Path | None = None,
    step: Callable[[str], None] = lambda message: None,
    backend: str = "lab",
    stage=None,
) -> ScenarioResult:
    """Run one scenario end to end on a fresh lab or kind cluster (`backend`); it is torn down on
    success, failure and Ctrl-C. A `stage` given (a cluster already up, only for a `shareable` scenario)
    is used and left up, the scenario's changes undone and the baseline proven (`restore`, `baseline`). Timings: setup (cluster up, capture started), faults (applied and,
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
        stage = make_stage(backend, merge(default_spec(), scenario.lab), step)
    try:
        if not owned:
            stage.enter(scenario, step)
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
        else:
            stage.leave(step, lap)
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
            backend: str = "lab", cluster_name: str | None = None) -> list[ScenarioResult]:
    """Run scenarios one after another with a rich progress display; a scenario that cannot run is
    a failed result with its error, not the end of the run. On kind, one cluster (`cluster_name`, one
    that is up, else one made for the run) serves every `shareable` scenario; the others get their own.
    Writes the report index at the end."""
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
                    if backend == "kind" and shareable(scenario):  # one cluster serves every scenario whose changes it can undo
                        if shared is None:
                            step(f"kind cluster {cluster_name}: recovering and checking its baseline" if cluster_name
                                 else "kind up (shared by the scenarios)")
                            shared = SharedKindStage(cluster_name, step)
                            if console is not None:
                                for note in shared.notes:
                                    progress.console.print(note, markup=False, highlight=False)
                                made = (f"up in {sum(shared.up_timings.steps.values()):.1f} s" if shared.up_timings
                                        else "already up, left up after")
                                progress.console.print(f"one kind cluster {shared.name} for the scenarios: {made}")
                        result = run_scenario(scenario, report_dir, evidence_dir, step, backend, stage=shared)
                    else:
                        result = run_scenario(scenario, report_dir, evidence_dir, step, backend)
                except (LabError, CaptureError, ClusterError, OSError) as err:
                    result = ScenarioResult(scenario, backend=backend, error=f"{type(err).__name__}: {err}")
                results.append(result)
                if console is not None:
                    mark = "[green]pass[/]" if result.passed else f"[red]FAIL[/] ({result.error or ', '.join(result.missing)})"
                    progress.console.print(f"{mark} {scenario.name}  [dim]{timing_line(result)}[/]")
                progress.advance(overall)
        finally:
            if shared is not None and shared.owned:  # also on failure and Ctrl-C
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
