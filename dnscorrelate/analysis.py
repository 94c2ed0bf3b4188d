"""The pipeline after capture: correlate the evidence, diagnose it. Shared by `correlate`, `run` and `trace`."""

from __future__ import annotations

import pandas as pd

from dnscorrelate import events
from dnscorrelate.correlate import correlate
from dnscorrelate.diagnose import Analysis, diagnose
from dnscorrelate.cluster.facts import ClusterFacts, facts_from_files
from dnscorrelate.errors import SpecError
from dnscorrelate.schema import ParsedLogs
from dnscorrelate.sources.coredns_log import read_logs
from dnscorrelate.textfiles import read_user_text


def analyze(frame: pd.DataFrame | None, logs: ParsedLogs | None, facts: ClusterFacts | None, capture_stats: dict | None = None) -> Analysis:
    correlation = correlate(frame, logs, capture_stats)
    return Analysis(correlation, diagnose(correlation, facts))


def from_files(events_path: str | None, log_paths: list, corefile_path: str | None = None,
               manifest_paths: list[str] = (), lab_name: str | None = None,
               evidence: tuple[pd.DataFrame, dict] | None = None, log_formats: list[str] = ()) -> Analysis:
    """`correlate`'s inputs read from disk; facts from a running lab (--lab) or from the given files.
    `log_paths` are paths or (replica, path) pairs; `log_formats` are `log` format strings to try first.
    `evidence` is what sources.evidence.read_evidence made of pcap, Inspektor Gadget and dnstap files."""
    from dnscorrelate.cluster.spec import load_manifests

    frame, capture_stats = events.load(events_path) if events_path else (None, {})
    if evidence is not None:
        frame, capture_stats = with_evidence(frame, capture_stats, *evidence)
    corefile = read_user_text(corefile_path, SpecError) if corefile_path else ""
    if lab_name:
        from dnscorrelate.cluster.lab.backend import LabBackend

        facts = LabBackend.find(lab_name).facts()
        corefile = corefile or facts.corefile
    else:
        manifests = [m for path in manifest_paths for m in load_manifests(path)]
        facts = facts_from_files(corefile, manifests)
    logs = read_logs(log_paths, corefile or None, list(log_formats)) if log_paths else None
    return analyze(frame, logs, facts, capture_stats)


def with_evidence(frame: pd.DataFrame | None, capture_stats: dict, extra: pd.DataFrame, extra_stats: dict) -> tuple[pd.DataFrame, dict]:
    """Saved capture events and evidence from files as one table; decode errors of both counted."""
    merged = events.concat([frame, extra]) if frame is not None else extra
    stats = {**capture_stats, "decode_errors": int(capture_stats.get("decode_errors", 0)) + int(extra_stats.get("decode_errors", 0))}
    return merged, stats

