"""A Finding: a code of the registry (dnscorrelate/findings.py), where, one line to act on, and its evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from itertools import islice

import pandas as pd

from dnscorrelate import findings as registry

EVIDENCE_LIMIT = 20
COVERED = "_covered"  # evidence() hands a finding all of its trace ids under this key; the finding keeps them apart


@dataclass
class Finding:
    code: str
    hop: str
    summary: str
    evidence: dict = field(default_factory=dict)
    count: int = 0
    severity: str = "error"  # error, warning, info
    covers: frozenset[int] = field(init=False, repr=False, compare=False)  # every trace it explains, not only those cited

    def __post_init__(self) -> None:
        declared = registry.entry(self.code)
        if self.hop not in declared.hops and (self.hop or declared.hops):
            raise ValueError(f"finding {self.code!r} at hop {self.hop!r}: its entry in dnscorrelate/findings.py allows {declared.hops}")
        if self.severity not in registry.SEVERITIES:
            raise ValueError(f"finding {self.code!r}: severity {self.severity!r} is none of {registry.SEVERITIES}")
        self.covers = frozenset(self.evidence.pop(COVERED, self.evidence.get("traces", ())))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "covers"}


def finding(code: str, summary: str, evidence: dict | None = None, count: int = 0, *, hop: str | None = None,
            severity: str | None = None) -> Finding:
    """A Finding whose hop and severity are its registry entry's usual ones unless given (a hop its entry allows;
    a severity the rule has a reason to change)."""
    declared = registry.entry(code)
    return Finding(code, declared.hop if hop is None else hop, summary, evidence or {}, count,
                   declared.severity if severity is None else severity)


def evidence(traces: pd.DataFrame, **extra) -> dict:
    """Trace ids and log references behind a finding (the first EVIDENCE_LIMIT of each)."""
    ids = traces["trace_id"].to_numpy()
    refs = list(islice((r for r in traces.get("log_ref", pd.Series(dtype=str)) if r), EVIDENCE_LIMIT))
    errors = list(islice((e for e in traces.get("error", pd.Series(dtype=str)) if e), 5))
    found = {"traces": [int(t) for t in ids[:EVIDENCE_LIMIT]], "log_lines": refs, COVERED: ids.tolist()}
    if errors:
        found["errors"] = errors
    return {**found, **extra}


def in_registry_order(found: list[Finding]) -> list[Finding]:
    """Most telling first: the registry's order, then the larger count (stable: rules' own order breaks ties)."""
    return sorted(found, key=lambda f: (registry.ORDER[f.code], -f.count))


def findings_about(found: list[Finding], trace_ids: set[int], recount: bool = False) -> list[Finding]:
    """The findings that explain any of `trace_ids`, each citing (and covering) only those; findings about no trace
    in particular stay. With `recount`, each count is those traces' share of it where others were part of it (a
    count is not always of lookups: queries, a lookup and its retry over TCP)."""
    kept = []
    for f in found:
        mine = sorted(f.covers & trace_ids)
        if not f.covers:
            kept.append(f)
        elif mine:  # cite these lookups, which need not be among the ones cited for everybody
            count = round(f.count * len(mine) / len(f.covers)) if recount and len(mine) < len(f.covers) else f.count
            kept.append(replace(f, evidence={**f.evidence, "traces": mine[:EVIDENCE_LIMIT], COVERED: mine}, count=count))
    return kept
