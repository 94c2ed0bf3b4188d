"""Run a scenario: lab up, capture, faults, queries, correlate, diagnose, compare, report, tear down.

The runner is the one place that knows the injected fault. It applies the
faults to the lab and, at the end, compares the diagnosis with `expect`; the
diagnoser itself gets only the evidence (packets, CoreDNS logs) and the lab's
cluster facts.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dnscorrelate import events
from dnscorrelate.analysis import Analysis, analyze
from dnscorrelate.cluster.backend import Session
from dnscorrelate.cluster.lab import faults as lab_faults
from dnscorrelate.cluster.lab.backend import LabBackend
from dnscorrelate.cluster.lab.clients import ClientResult, run_queries
from dnscorrelate.cluster.lab.runtime import Lab, teardown
from dnscorrelate.cluster.lab.spec import default_spec, merge
from dnscorrelate.report.records import trace_records
from dnscorrelate.scenarios import (
    ApplyFault, CorefileFault, CustomServerBlockFault, DeleteFault, LinkFault, ResolvConfFault, Scenario,
    StopReplicaFault, UpstreamCorefileFault,
)

SETTLE_S = 0.3  # let the last packets and log lines arrive before stopping


@dataclass
class ScenarioResult:
    scenario: Scenario
    passed: bool = False
    analysis: Analysis | None = None
    error: str = ""  # the run itself failed (lab, fault); then passed is False
    clients: list[ClientResult] = field(default_factory=list)
    capture_stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    topology: object = None
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

    def to_dict(self) -> dict:
        findings = [f.to_dict() for f in self.analysis.findings] if self.analysis else []
        stats = self.analysis.correlation.stats if self.analysis else {}
        return {
            "name": self.scenario.name,
            "passed": self.passed,
            "expected": self.scenario.expect.model_dump(),
            "missing": self.missing,
            "error": self.error or None,
            "findings": [{k: f[k] for k in ("code", "hop", "summary", "evidence")} for f in findings],
            "traces": trace_records(self.analysis.correlation, with_hops=False) if self.analysis else [],
            "stats": {
                "queries": len(self.clients),
                "answered": sum(c.answered for c in self.clients),
                "lost_samples": int(self.capture_stats.get("lost_samples", 0)),
                "unparsed_lines": int(stats.get("unparsed_lines", 0)),
                "packets": int(stats.get("packets", 0)),
                "traces": int(stats.get("traces", 0)),
                "ambiguous": int(stats.get("ambiguous", 0)),
            },
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "report": self.report or None,
        }


def apply_fault(backend: LabBackend, fault) -> None:
    """One fault, as the cluster would experience it: through the backend's `Faults` when every
    backend can make it, on the lab itself for the lab's own (upstream, links, stopped replica, resolv.conf)."""
    lab = backend.lab
    if isinstance(fault, CorefileFault):
        backend.set_corefile(fault.corefile)
    elif isinstance(fault, CustomServerBlockFault):
        key = fault.key or fault.customServerBlock.split()[0].split(":")[0].rstrip(".").replace(".", "-") + ".server"
        backend.set_custom_server_block(key, fault.customServerBlock)
    elif isinstance(fault, ApplyFault):
        backend.apply([fault.apply])
    elif isinstance(fault, DeleteFault):
        backend.delete(fault.delete.kind, fault.delete.namespace, fault.delete.name)
    elif isinstance(fault, UpstreamCorefileFault):
        lab_faults.set_upstream_corefile(lab, fault.upstreamCorefile)
    elif isinstance(fault, LinkFault):
        lab_faults.set_link(lab, fault.link.from_, fault.link.to, fault.link.loss or 0.0, fault.link.drop)
    elif isinstance(fault, StopReplicaFault):
        backend.stop_replica(fault.stopReplica)
    elif isinstance(fault, ResolvConfFault):
        lab_faults.set_resolv_conf(lab, fault.resolvConf.pod, fault.resolvConf.text)
    else:  # pragma: no cover - the scenario model admits no other kind
        raise TypeError(f"unknown fault {fault!r}")


def save_evidence(directory: Path, lab: Lab, session: Session) -> None:
    """What a colleague needs to re-run the analysis offline: events, logs, the lab's topology."""
    directory.mkdir(parents=True, exist_ok=True)
    events.save(session.events(), directory / "events.parquet", session.stats)
    for process in lab.processes:
        shutil.copy(process.log, directory / f"{process.role}.log")
    (directory / "lab.json").write_text(lab.topology.model_dump_json(indent=1))


def run_scenario(
    scenario: Scenario,
    report_dir: Path | None = None,
    evidence_dir: Path | None = None,
    step: Callable[[str], None] = lambda message: None,
) -> ScenarioResult:
    """Run one scenario end to end; the lab is torn down on success, failure and Ctrl-C."""
    result = ScenarioResult(scenario)
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        result.timings[name] = result.timings.get(name, 0.0) + now - clock
        clock = now

    spec = merge(default_spec(), scenario.lab)
    name = f"s{uuid.uuid4().hex[:8]}"
    step("lab up")
    lab = Lab.up(spec, name)
    try:
        backend = LabBackend(lab)
        session = Session(backend)
        step("capture")
        session.start()
        try:
            for index, fault in enumerate(scenario.faults):
                step(f"fault {index + 1}/{len(scenario.faults)}")
                apply_fault(backend, fault)
            lap("setup")
            for query in scenario.queries:
                step(f"{query.count} x {query.client} {query.name} {query.type}")
                pod = lab.pod(query.from_)
                result.clients += run_queries(pod.netns, query.client, query.name, query.type, query.proto, query.count, query.concurrency, query.timeout)
            time.sleep(SETTLE_S)
            lap("queries")
        finally:
            session.stop()
        step("analysis")
        evidence = session.evidence()
        result.capture_stats = evidence.capture_stats
        result.topology = lab.topology
        result.analysis = analyze(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats)
        result.passed = not result.missing
        if evidence_dir:
            save_evidence(evidence_dir / scenario.name, lab, session)
        lap("analysis")
    finally:
        step("lab down")
        teardown(name)
    if report_dir is not None:
        from dnscorrelate.report.html import write_scenario_report

        step("report")
        try:
            result.report = str(write_scenario_report(result, report_dir))
        except Exception as err:  # a report that cannot be written must not hide the verdict
            result.error = f"report not written: {type(err).__name__}: {err}"
        lap("report")
    return result


def run_all(scenarios: list[Scenario], report_dir: Path | None, evidence_dir: Path | None = None, console=None, show_progress: bool = True) -> list[ScenarioResult]:
    """Run scenarios one after another with a rich progress display; a scenario that cannot run is
    a failed result with its error, not the end of the run. Writes the report index at the end."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from dnscorrelate.cluster.lab.netns import LabError
    from dnscorrelate.sources.bpf import CaptureError

    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=True) as progress:
        overall = progress.add_task("scenarios", total=len(scenarios))
        for scenario in scenarios:
            def step(message: str, name: str = scenario.name) -> None:
                progress.update(overall, description=f"{name}: {message}")

            try:
                result = run_scenario(scenario, report_dir, evidence_dir, step)
            except (LabError, CaptureError, OSError) as err:
                result = ScenarioResult(scenario, error=f"{type(err).__name__}: {err}")
            results.append(result)
            if console is not None:
                mark = "[green]pass[/]" if result.passed else f"[red]FAIL[/] ({', '.join(result.missing) or result.error})"
                progress.console.print(f"{mark} {scenario.name}")
            progress.advance(overall)
    if report_dir is not None and results:
        from dnscorrelate.report.html import write_index

        write_index(results, report_dir)
    return results
