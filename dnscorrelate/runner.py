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
from dnscorrelate.errors import FaultNotSupported
from dnscorrelate.scenarios import Fault, Scenario

SCENARIO_LABEL = "dnscorrelate.io/scenario"  # kube/journal.py's: what a scenario creates carries it
CONTEXT_RUN_ROOT = Path("/run/dnscorrelate/contexts")  # a user's cluster's journal, by context

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
    owned = False  # a stage shared by scenarios: made for this run (removed by `down`), or one already up
    hubble = False  # the cluster runs Cilium with Hubble in every agent: a scenario's session may read it (`hubble: true`)
    notes: list[str] = []  # what the run should say about it (a killed run's changes undone)

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
    Its pod network is `cni` (flannel, or Cilium: `up_options`). Named scnXXXXXXXX, removed by `down` on success,
    failure and Ctrl-C."""

    def __init__(self, spec: LabSpec, step: Callable[[str], None] = lambda message: None, cni: str = "flannel") -> None:
        from dnscorrelate.cluster.kind import cluster as kind
        from dnscorrelate.cluster.kind.build import load_build
        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.name = f"scn{uuid.uuid4().hex[:8]}"
        self.cluster, self.up_timings = kind.up(self.name, spec=spec, say=lambda message: step(f"cluster {message}"), **up_options(cni))
        try:
            self.backend = KubeBackend(str(self.cluster.kubeconfig), self.cluster.context, upstream=kind.upstream_address(self.cluster),
                                       pod_image=load_build().client_image)
            self.hubble = cni == "cilium"
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

    def __init__(self, name: str | None = None, step: Callable[[str], None] = lambda message: None, cni: str = "flannel") -> None:
        from dnscorrelate.cluster.kind import cluster as kind
        from dnscorrelate.cluster.kind.build import load_build
        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.owned = name is None
        self.notes: list[str] = []  # what a reader should know: a killed run's changes undone
        self.up_timings = None
        if self.owned:
            self.name = f"scn{uuid.uuid4().hex[:8]}"
            self.cluster, self.up_timings = kind.up(self.name, spec=default_spec(), say=lambda message: step(f"cluster {message}"),
                                                    **up_options(cni))
        else:
            self.name = name
            self.cluster = kind.attached(name)
        try:
            self.backend = KubeBackend(str(self.cluster.kubeconfig), self.cluster.context, upstream=kind.upstream_address(self.cluster),
                                       pod_image=load_build().client_image)
            self.hubble = self.backend.call("asking Cilium's agents for Hubble", has_hubble, self.backend.core())
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


def up_options(cni: str) -> dict:
    """How `run` makes a cluster with `cni`: on Cilium, Hubble and its DNS proxy on (DNS rules and toFQDNs in a
    scenario's policies need the proxy; Hubble is the session's vantage on it), and no visibility policy, whose
    allow rule would change what a scenario's policies deny (kind/README.md)."""
    return {"cni": cni, **({"hubble": True, "hubble_policy": "none"} if cni == "cilium" else {})}


def has_hubble(core) -> bool:
    from dnscorrelate.cluster import cilium

    return cilium.hubble_everywhere(core)


SCENARIO_NAMESPACE_PREFIX = "dnsc-scenario-"
LAB_NAMESPACE = "demo"  # the default lab's workloads; on a user's cluster they live in the scenario's own namespace


class ChangePlan:
    """A `Faults` that makes nothing: it lists the changes a scenario's faults would make on a cluster
    (`--dry-run` prints them) and which of them touch objects shared with the rest of the cluster: the coredns
    and coredns-custom ConfigMaps, CoreDNS's replicas, objects outside the scenario's namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.changes: list[tuple[str, bool]] = []  # (change, touches a shared object)
        self.propagation: list[tuple[str, float]] = []

    def set_corefile(self, corefile: str) -> None:
        self.changes.append(("replace the Corefile in ConfigMap kube-system/coredns; CoreDNS reloads or restarts", True))

    def set_custom_server_block(self, key: str, text: str) -> None:
        self.changes.append((f"set key {key} of ConfigMap kube-system/coredns-custom, mount it in Deployment kube-system/coredns "
                             "(import line in the Corefile), restart CoreDNS", True))

    def apply(self, manifests) -> None:
        for m in manifests:
            where = m.metadata.name if m.kind == "Namespace" else f"{m.metadata.namespace}/{m.metadata.name}"
            shared = m.kind == "Namespace" and m.metadata.name != self.namespace or m.kind != "Namespace" and m.metadata.namespace != self.namespace
            self.changes.append((f"create {m.kind} {where}", shared))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.changes.append((f"delete {kind} {namespace}/{name} (created again after)", namespace != self.namespace))

    def stop_replica(self, replica: int) -> None:
        self.changes.append((f"delete CoreDNS replica {replica} and scale Deployment kube-system/coredns down by one", True))

    def set_upstream_corefile(self, corefile: str) -> None:
        raise FaultNotSupported("upstreamCorefile", "context", "a cluster's upstream resolver is not ours to change")

    def set_link(self, source: str, target: str, loss: float, drop: bool) -> None:
        raise FaultNotSupported("link", "context", "links are the lab's veth pairs")

    def set_resolv_conf(self, pod: str, text: str) -> None:
        raise FaultNotSupported("resolvConf", "context", "a running pod's resolv.conf is written by the kubelet")


def in_namespace(scenario: Scenario, namespace: str) -> Scenario:
    """The scenario with the default lab's namespace (demo) replaced by `namespace`: its objects, faults and
    the pods its queries come from, and names that spell it out (web.demo.svc...)."""
    data = scenario.model_dump(by_alias=True, exclude_unset=True)

    def move(value):
        if isinstance(value, dict):
            return {k: (namespace if k == "namespace" and v == LAB_NAMESPACE else move(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    data["lab"] = move(data.get("lab", {}))
    data["faults"] = move(data.get("faults", []))
    for query in data["queries"]:
        if query["from"].startswith(f"{LAB_NAMESPACE}/"):
            query["from"] = f"{namespace}/{query['from'].split('/', 1)[1]}"
        query["name"] = query["name"].replace(f".{LAB_NAMESPACE}.svc.", f".{namespace}.svc.")
    return Scenario.model_validate(data)


def planned_changes(scenario: Scenario, namespace: str) -> list[tuple[str, bool]]:
    """(change, shared) for everything the scenario would make on a user's cluster in `namespace`: the namespace,
    the default lab's workloads in it (the client pod), its overlay and its faults, in order."""
    from dnscorrelate.cluster.spec import default_spec

    plan = ChangePlan(namespace)
    plan.changes.append((f"create Namespace {namespace} (labelled {SCENARIO_LABEL}; removed after, with all in it)", False))
    moved = in_namespace(scenario, namespace)
    plan.apply(context_workloads(default_spec(), namespace))
    if moved.lab.corefile:
        plan.set_corefile(moved.lab.corefile)
    for key, text in sorted(moved.lab.customServerBlocks.items()):
        plan.set_custom_server_block(key, text)
    plan.apply(moved.lab.manifests)
    for fault in moved.faults:
        fault.apply_to(plan)
    return plan.changes


def context_workloads(spec: LabSpec, namespace: str) -> list:
    """The default lab's objects of namespace demo (the client pod mypod, web and its pods), moved to `namespace`."""
    moved = []
    for manifest in spec.manifests:
        if manifest.kind != "Namespace" and manifest.metadata.namespace == LAB_NAMESPACE:
            moved.append(type(manifest).model_validate({**manifest.model_dump(by_alias=True, exclude_none=True),
                                                        "metadata": {**manifest.metadata.model_dump(exclude_none=True), "namespace": namespace}}))
    return moved


def refusals(scenario: Scenario, namespace: str) -> list[str]:
    """What the scenario would change of objects shared with the rest of the cluster, one line per fault."""
    lines = []
    for index, fault in enumerate(scenario.faults):
        plan = ChangePlan(namespace)
        fault.apply_to(plan)
        for change, shared in plan.changes:
            if shared:
                lines.append(f"{scenario.name}: faults[{index}] ({fault_name(fault)}) would {change}: a shared object; "
                             "refused without --allow-cluster-changes (then it is journaled and restored after)")
    overlay = scenario.lab
    if overlay.corefile or overlay.customServerBlocks:
        lines.append(f"{scenario.name}: lab.corefile / lab.customServerBlocks change CoreDNS's ConfigMaps: refused without "
                     "--allow-cluster-changes")
    return lines


def fault_name(fault) -> str:
    from dnscorrelate.scenarios import fault_kind

    kind = fault_kind(fault) or type(fault).__name__
    return kind[0].lower() + kind[1:]


class ContextStage(Stage):
    """A user's cluster behind a kubeconfig context, used as it is: each scenario runs in a namespace of its own
    (dnsc-scenario-NAME-XXXX, labelled), holding the default lab's client pod and web Service, removed after;
    its faults go through the API, journaled (a journal a killed run left, under
    /run/dnscorrelate/contexts/CONTEXT/, is undone first) and undone after it; changes to shared objects only
    with `allow_cluster_changes`."""

    HEALTHY_NAME = "kubernetes.default.svc.cluster.local."

    def __init__(self, kubeconfig: str | None, context: str | None, allow_cluster_changes: bool = False,
                 pod_image: str | None = None, step: Callable[[str], None] = lambda message: None) -> None:
        import re

        from dnscorrelate.cluster.kube.backend import KubeBackend

        self.name = context or "current-context"
        self.allow_cluster_changes = allow_cluster_changes
        # faults reach a cluster `cluster up` did not make only here: what they would change outside the scenario's
        # own namespace was refused before (`refusals`) unless --allow-cluster-changes said otherwise
        self.backend = KubeBackend(kubeconfig, context, pod_image=pod_image, allow_cluster_changes=True)
        self.notes: list[str] = []
        self.namespace = ""
        self.journal_path = CONTEXT_RUN_ROOT / re.sub(r"[^A-Za-z0-9_.-]", "_", self.name) / "journal.json"
        left = self.backend.restore_journal(self.journal_path, lambda message: step(f"recovering: {message}"))
        if left is not None:
            self.notes.append(f"context {self.name}: scenario {left[0]} did not finish (its run was killed); restored from its "
                              f"journal: {', '.join(left[1]) or 'nothing had changed yet'}")
        self.baseline = self.backend.baseline()

    def enter(self, scenario: Scenario, step: Callable[[str], None]) -> None:
        from dnscorrelate.cluster.model import Namespace
        from dnscorrelate.errors import ClusterError

        self.namespace = f"{SCENARIO_NAMESPACE_PREFIX}{scenario.name[:30]}-{uuid.uuid4().hex[:4]}"
        moved = in_namespace(scenario, self.namespace)
        if not self.allow_cluster_changes and (refused := refusals(moved, self.namespace)):
            raise ClusterError("; ".join(refused))
        self.backend.start_journal(self.journal_path, scenario.name)
        step(f"namespace {self.namespace}")
        self.backend.apply([Namespace.model_validate({"kind": "Namespace", "metadata": {"name": self.namespace}})])
        step("client pod and web")
        self.backend.apply(context_workloads(default_spec(), self.namespace))
        if moved.lab.corefile:
            self.backend.set_corefile(moved.lab.corefile)
        for key, text in sorted(moved.lab.customServerBlocks.items()):
            self.backend.set_custom_server_block(key, text)
        if moved.lab.manifests:
            self.backend.apply(moved.lab.manifests)
        self.backend.propagation.clear()
        self.new_window()
        return moved

    def leave(self, step: Callable[[str], None], lap: Callable[[str], None]) -> None:
        step("restore")
        self.backend.restore_journal(self.journal_path, lambda message: step(f"restore: {message}"))
        lap("restore")
        step("baseline check")
        self.backend.wait_baseline(self.baseline)
        lap("baseline")

    def new_window(self) -> None:
        from datetime import datetime, timezone

        self.backend.started = datetime.now(timezone.utc)

    def down(self) -> None:
        """The user's cluster stays."""


def shareable(scenario: Scenario) -> bool:
    """Whether a scenario can run on a shared cluster: all it changes can be undone (its faults through the
    journal, its overlay within SHAREABLE_OVERLAY)."""
    return scenario.lab.model_fields_set <= SHAREABLE_OVERLAY


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
    hubble: bool | None = None,
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
        stage = make_stage(backend, merge(default_spec(), scenario.lab), step, cni)
    try:
        if not owned:
            scenario = stage.enter(scenario, step) or scenario  # a user's cluster: moved into the scenario's namespace
        # Hubble's flows are evidence where the scenario asks for them (or the caller does: the side-by-side bench)
        session = Session(stage.backend, hubble=stage.hubble and (scenario.hubble if hubble is None else hubble))
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
            backend: str = "lab", cni: str = "flannel", cluster_name: str | None = None, context_stage: Callable[[Callable[[str], None]], Stage] | None = None
            ) -> list[ScenarioResult]:
    """Run scenarios one after another with a rich progress display; a scenario that cannot run is
    a failed result with its error, not the end of the run. On kind, one cluster (`cluster_name`, one
    that is up, else one made for the run) serves every `shareable` scenario; the others get their own.
    With `context_stage` (a user's cluster), every scenario runs on the stage it makes. A shared cluster
    that could not be made, or was not put back to its baseline, runs no further scenario.
    Writes the report index at the end."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from dnscorrelate.errors import CaptureError, ClusterError, LabError

    results, shared, broken = [], None, ""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())

    def make_shared(step: Callable[[str], None]) -> Stage:
        if context_stage is not None:
            step("connecting, recovering and reading the baseline")
            return context_stage(step)
        step(f"kind cluster {cluster_name}: recovering and checking its baseline" if cluster_name else "kind up (shared by the scenarios)")
        return SharedKindStage(cluster_name, step, cni)

    with Progress(*columns, console=console, disable=not show_progress, transient=True) as progress:
        overall = progress.add_task("scenarios", total=len(scenarios))
        try:
            for scenario in scenarios:
                def step(message: str, name: str = scenario.name) -> None:
                    progress.update(overall, description=f"{name}: {message}")

                try:
                    if context_stage is not None or backend == "kind" and shareable(scenario):
                        if broken:
                            raise ClusterError(f"not run: {broken}")
                        if shared is None:
                            try:
                                shared = make_shared(step)
                            except (ClusterError, OSError) as err:
                                broken = f"the shared cluster could not be used: {err}"
                                raise
                            if console is not None:
                                for note in shared.notes:
                                    progress.console.print(note, markup=False, highlight=False)
                                if isinstance(shared, SharedKindStage):
                                    made = (f"up in {sum(shared.up_timings.steps.values()):.1f} s" if shared.up_timings
                                            else "already up, left up after")
                                    progress.console.print(f"one kind cluster {shared.name} for the scenarios: {made}")
                        try:
                            result = run_scenario(scenario, report_dir, evidence_dir, step, backend, stage=shared, cni=cni)
                        except ClusterError as err:
                            if "baseline" in str(err) or "restor" in str(err):
                                broken = f"the cluster was not put back after {scenario.name}: {err}"
                            raise
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
