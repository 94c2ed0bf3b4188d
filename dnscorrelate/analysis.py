"""The pipeline after capture: correlate the evidence, diagnose it. Shared by `correlate`, `run` and `trace`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dnscorrelate import events
from dnscorrelate.cluster.facts import ClusterFacts, facts_from_files
from dnscorrelate.correlate import correlate
from dnscorrelate.diagnose import Analysis, diagnose
from dnscorrelate.errors import EventsError, SpecError
from dnscorrelate.schema import ParsedLogs
from dnscorrelate.sources.coredns_log import read_logs
from dnscorrelate.textfiles import read_user_text


def analyze(frame: pd.DataFrame | None, logs: ParsedLogs | None, facts: ClusterFacts | None, capture_stats: dict | None = None) -> Analysis:
    correlation = correlate(frame, logs, capture_stats, dns_servers(facts) if facts else None, clock_of_vantage(facts, capture_stats))
    return Analysis(correlation, diagnose(correlation, facts), facts)


SAVED_MANIFESTS = "cluster.yaml"  # beside a capture directory's files: the Pods, Services, … it was taken with
SAVED_COREFILE = "Corefile"


def save_facts(facts: ClusterFacts, directory: Path) -> None:
    """What `correlate --events DIR` needs of the cluster, saved in the capture directory: its objects and Corefile."""
    from dnscorrelate.cluster.facts import manifests_yaml

    (directory / SAVED_MANIFESTS).write_text(manifests_yaml(facts))
    if facts.corefile:
        (directory / SAVED_COREFILE).write_text(facts.corefile)


def analyze_files(files: list, logs: ParsedLogs | None, facts: ClusterFacts | None, capture_stats: dict | None = None,
                  part_rows: int | None = None, lookups_per_window: int | None = None,
                  every_trace: Callable[[pd.DataFrame], None] | None = None) -> Analysis:
    """`analyze` of a capture directory's Parquet files, correlated out of core (correlate/outofcore.py); past
    `lookups_per_window` lookups, diagnosed a window of them at a time (diagnose/windows.py). `every_trace` is
    handed every lookup's trace, a window's at a time: the Analysis keeps only those its findings cite."""
    from dnscorrelate.correlate.outofcore import PART_ROWS, WINDOW_LOOKUPS, OutOfMemory, correlate_files
    from dnscorrelate.diagnose.windows import WindowedDiagnosis

    windowed = WindowedDiagnosis(facts)
    per_window = lookups_per_window or WINDOW_LOOKUPS

    def each_window(correlation, owned: set[int]) -> None:
        windowed.add(correlation, owned)
        if every_trace:
            traces = correlation.traces
            every_trace(traces[traces["trace_id"].isin(owned).to_numpy()])

    try:
        correlation = correlate_files(files, logs, capture_stats, dns_servers(facts) if facts else None,
                                      clock_of_vantage(facts, capture_stats), part_rows=part_rows or PART_ROWS,
                                      lookups_per_window=per_window, each_window=each_window)
    except OutOfMemory as err:
        raise EventsError(str(err)) from None
    if windowed.windows:
        return windowed.analysis(correlation, per_window)
    if every_trace:
        every_trace(correlation.traces)
    return Analysis(correlation, diagnose(correlation, facts), facts)


def clock_of_vantage(facts: ClusterFacts | None, capture_stats: dict | None = None) -> dict[str, str] | None:
    """{vantage: node} the facts know: each pod's node (`NS/NAME`, as its vantage is named) and each node itself, so
    that the nodes' clocks can be put on one time line (correlate/clocks.py). None without facts, and for a capture
    that one clock timed (`one_clock` in its stats: a capture on this machine, the lab's or kind's nodes alike),
    where there is no offset to estimate; the agents' rows name their own node whatever this says."""
    if facts is None or (capture_stats or {}).get("one_clock"):
        return None
    nodes = {pod.key: pod.spec.nodeName for pod in facts.model.pods if pod.spec.nodeName}
    nodes.update({node.metadata.name: node.metadata.name for node in facts.model.nodes})
    return nodes


def dns_servers(facts: ClusterFacts) -> dict[str, tuple[str, str]]:
    """{address: (name, role)} of the DNS servers the facts know: the kube-dns Service's VIP, each CoreDNS pod,
    NodeLocal DNS's address. They name the server of lookups one vantage point saw (correlate/vantage.py)."""
    servers = {ip: (key, "coredns") for ip, key in facts.coredns_pods.items()}
    if facts.cluster_dns_ip:
        servers[facts.cluster_dns_ip] = (f"kube-dns ({facts.cluster_dns_ip})", "coredns")
    if facts.nodelocal_ip:
        servers[facts.nodelocal_ip] = (f"NodeLocal DNS ({facts.nodelocal_ip})", "node")
    return servers


def with_dns_servers(facts: ClusterFacts) -> ClusterFacts:
    """The facts, with the kube-dns Service's address and the CoreDNS pods taken from their manifests when they
    do not say them already: the Service kube-system/kube-dns, the pods labelled k8s-app=kube-dns (as the
    API's facts are built)."""
    model = facts.model
    if not facts.cluster_dns_ip:
        service = next((s for s in model.services if s.metadata.namespace == "kube-system" and s.metadata.name == "kube-dns"), None)
        facts.cluster_dns_ip = (service.spec.clusterIP or "") if service else ""
    for pod in model.pods:
        if pod.ip and pod.metadata.labels.get("k8s-app") == "kube-dns":
            facts.coredns_pods.setdefault(pod.ip, pod.key)
    return facts


def from_files(events_path: str | None, log_paths: list, corefile_path: str | None = None,
               manifest_paths: list[str] = (), lab_name: str | None = None,
               evidence: tuple[pd.DataFrame, dict] | None = None, log_formats: list[str] = (),
               traces_out: str | None = None) -> Analysis:
    """`correlate`'s inputs read from disk; facts from a running lab (--lab) or from the given files.
    `log_paths` are paths or (replica, path) pairs; `log_formats` are `log` format strings to try first.
    `evidence` is what sources.evidence.read_evidence made of pcap, Inspektor Gadget and dnstap files. `traces_out`:
    a Parquet file every lookup's trace is written to (a capture directory's, a window at a time)."""
    from dnscorrelate.cluster.spec import load_manifests

    in_parts = bool(events_path) and Path(events_path).is_dir()
    if in_parts and evidence is not None:
        raise EventsError(f"{events_path}: a capture directory is correlated out of core, on its own: give --pcap, --ig-json, "
                          "--dnstap and --hubble-json with an events file instead")
    files = events.capture_files(events_path) if in_parts else []
    frame, capture_stats = (None, events.capture_dir_stats(events_path)) if in_parts else events.load(events_path) if events_path else (None, {})
    if evidence is not None:
        frame, capture_stats = with_evidence(frame, capture_stats, *evidence)
    if in_parts and not (manifest_paths or lab_name or corefile_path):  # the facts `capture -o DIR/` saved beside the files
        saved = Path(events_path)
        manifest_paths = [str(saved / SAVED_MANIFESTS)] if (saved / SAVED_MANIFESTS).exists() else []
        corefile_path = str(saved / SAVED_COREFILE) if (saved / SAVED_COREFILE).exists() else None
    corefile = read_user_text(corefile_path, SpecError) if corefile_path else ""
    if lab_name:
        from dnscorrelate.cluster.lab.backend import LabBackend

        facts = LabBackend.find(lab_name).facts()
        corefile = corefile or facts.corefile
    else:
        manifests = [m for path in manifest_paths for m in load_manifests(path)]
        facts = with_dns_servers(facts_from_files(corefile, manifests))
    logs = read_logs(log_paths, corefile or None, list(log_formats)) if log_paths else None
    if not traces_out:
        return analyze_files(files, logs, facts, capture_stats) if in_parts else analyze(frame, logs, facts, capture_stats)
    from dnscorrelate import schema
    from dnscorrelate.outputs import written_whole
    from dnscorrelate.report.parquet import TableFile

    with written_whole(traces_out, "--traces-out") as temporary:
        written = TableFile(temporary, schema.TRACES)
        try:
            if in_parts:
                result = analyze_files(files, logs, facts, capture_stats, every_trace=written.write)
            else:
                result = analyze(frame, logs, facts, capture_stats)
                written.write(result.correlation.traces)
        finally:
            written.close()  # an error's file is removed whole by written_whole
    result.correlation.stats["traces_written"] = written.rows
    return result


def write_report(result: Analysis, path: str, inputs: list) -> None:
    """`correlate --report`: the self-contained HTML report `trace` and `run` write, drawn from the same facts
    (no cluster section when there are none), titled by the inputs it was made of."""
    from dnscorrelate.outputs import written_whole
    from dnscorrelate.report.html import holds_cluster_facts, render_report

    named = ", ".join(str(i) for i in inputs if i)
    html = render_report(result, f"correlate {named}", "dnscorrelate correlate", facts=result.facts)
    with written_whole(path, "--report", private=holds_cluster_facts(result.facts)) as partial:
        partial.write_text(html)


def with_evidence(frame: pd.DataFrame | None, capture_stats: dict, extra: pd.DataFrame, extra_stats: dict) -> tuple[pd.DataFrame, dict]:
    """Saved capture events and evidence from files as one table; decode errors of both counted."""
    merged = events.concat([frame, extra]) if frame is not None else extra
    stats = {**capture_stats, "decode_errors": int(capture_stats.get("decode_errors", 0)) + int(extra_stats.get("decode_errors", 0))}
    stats.pop("one_clock", None)  # the files added were timed elsewhere
    return merged, stats

