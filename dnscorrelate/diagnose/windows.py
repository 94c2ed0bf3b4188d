"""A capture with more lookups than one diagnosis should hold (correlate/outofcore.py hands them over a window at a
time past `WINDOW_LOOKUPS`, in order of their first query), diagnosed window by window, and the windows' findings
merged: memory holds one window's tables, and of the others only the traces their findings cite.

Findings of two windows are one when they say the same thing of the same place: the same code, hop and severity and
the same words once their figures (counts, times, shares; not addresses, ports or names, which are part of what they
say) and their asides in parentheses (the names each window gives as examples) are left out. The merged finding adds up the counts, cites the first traces of each, and keeps the words of the
window with the most: its figures (a median, a share) are that window's, which it says. `ok` stays only when no
window found anything wrong; `no-lookups` of a window (one of the capture's own queries alone) says nothing of the
capture, which has lookups in its other windows.

Each window is diagnosed with the lookups around it (outofcore.py `CONTEXT_NS`), so that what spans its edge (a
search list's queries, an A lookup and its AAAA, a retry) is judged whole, and keeps the findings about its own.

What a window cannot see: a pattern that shows only over more lookups than a window and its context hold (a replica's
share of lookups is each window's; a lookup whose parts lie further apart than the context is judged in parts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.correlate import Correlation
from dnscorrelate.diagnose.finding import EVIDENCE_LIMIT, Finding, in_registry_order
from dnscorrelate.diagnose.pipeline import Analysis, diagnose
from dnscorrelate.findings import ERROR, WARNING

FIGURE = re.compile(r"(?<![\w.:/-])\d[\d,]*(?:\.\d+)?(?![\w.:/-])")  # 12, 1,204, 0.84, 37% (not 10.0.0.1, :53, coredns-1)
ASIDE = re.compile(r"\([^()]*\)")  # innermost first


@dataclass
class Window:
    """One window's lookups and what its diagnosis found (each finding citing, and covering, its cited traces only)."""

    lookups: int
    first_ns: int | None
    last_ns: int | None
    findings: list[Finding]


@dataclass
class WindowedDiagnosis:
    """`add` each window's Correlation as it comes; `analysis` of the whole once the last is in."""

    facts: ClusterFacts | None = None
    windows: list[Window] = field(default_factory=list)
    cited: list[Correlation] = field(default_factory=list)

    def add(self, correlation: Correlation, owned: set[int]) -> None:
        """A window's lookups `owned`, diagnosed with the context around them that `correlation` holds too."""
        found = [cited_only(f) for f in diagnose(correlation, self.facts, own=owned)]
        traces = correlation.traces
        starts = traces.loc[traces["trace_id"].isin(owned).to_numpy(), "t_start"].dropna()
        self.windows.append(Window(len(owned), int(starts.min()) if len(starts) else None, int(starts.max()) if len(starts) else None, found))
        ids = set().union(*(f.covers for f in found))
        self.cited.append(cited_tables(correlation, ids))

    def analysis(self, whole: Correlation, lookups_per_window: int) -> Analysis:
        """The whole capture's Analysis: its counts and warnings (`whole`), the windows' findings merged, and the
        traces they cite with their sightings, upstream exchanges and log records."""
        findings = merged_findings(self.windows)
        ids = {t for f in findings for t in f.evidence.get("traces", [])}
        tables = {name: pd.concat([getattr(c, name) for c in self.cited], ignore_index=True)
                  for name in ("traces", "sightings", "upstream", "logs", "errors")}
        tables = {name: frame[frame["trace_id"].isin(ids).to_numpy()].reset_index(drop=True) for name, frame in tables.items()}
        said = (f"out of core: {whole.stats.get('traces', 0):,} lookups diagnosed in {len(self.windows)} windows of up to "
                f"{lookups_per_window:,} (in order of their first query): each finding adds up its windows' counts, and the "
                f"traces shown are the {len(tables['traces']):,} the findings cite (correlate --traces-out FILE.parquet writes "
                f"every one)")
        correlation = replace(whole, **tables, warnings=[*whole.warnings, said])
        return Analysis(correlation, findings, self.facts)


def cited_only(found: Finding) -> Finding:
    """`found` covering only the traces it cites: the window's every trace id would be kept for nothing."""
    return replace(found, evidence=dict(found.evidence))


def cited_tables(correlation: Correlation, ids: set[int]) -> Correlation:
    """The traces `ids` of a window, with their sightings, upstream exchanges and log and errors records."""
    kept = correlation.restricted_to(ids)
    return replace(kept, logs=correlation.logs[correlation.logs["trace_id"].isin(ids).to_numpy()],
                   errors=correlation.errors[correlation.errors["trace_id"].isin(ids).to_numpy()])


def same_words(found: Finding) -> tuple:
    """What a finding says without its figures and its asides (the examples in parentheses: each window names its own)."""
    words, before = FIGURE.sub("#", found.summary), None
    while words != before:
        words, before = ASIDE.sub("", words), words
    return found.code, found.hop, found.severity, words


def merged_findings(windows: list[Window]) -> list[Finding]:
    """The windows' findings, one for each thing said (module docstring), most telling first."""
    groups: dict[tuple, list[Finding]] = {}
    for window in windows:
        for found in window.findings:
            if found.code != "no-lookups":
                groups.setdefault(same_words(found), []).append(found)
    merged = [one_of(group, len(windows)) for group in groups.values()]
    if any(f.severity in (ERROR, WARNING) for f in merged):
        merged = [f for f in merged if f.code != "ok"]
    return in_registry_order(merged)


def one_of(group: list[Finding], windows: int) -> Finding:
    """One finding for a thing several windows said: counts added, the first traces and lines each cites, the words
    of the window with the most."""
    if len(group) == 1:
        return group[0]
    largest = max(group, key=lambda f: f.count)
    count = sum(f.count for f in group)
    summary = (f"{largest.summary} [{len(group)} of {windows} windows said this: {count:,} in all; the figures above are "
               f"the window with the most]")
    evidence = {**largest.evidence}
    for key, limit in (("traces", EVIDENCE_LIMIT), ("log_lines", EVIDENCE_LIMIT), ("errors", 5)):
        values = [v for f in group for v in f.evidence.get(key, [])]
        if values:
            evidence[key] = values[:limit]
    return Finding(largest.code, largest.hop, summary, evidence, count, largest.severity)
