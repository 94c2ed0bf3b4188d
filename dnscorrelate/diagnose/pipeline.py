"""`diagnose`: the rules in order, their findings in the registry's order; and the `Analysis` it makes."""

from __future__ import annotations

from dataclasses import dataclass

from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.correlate import Correlation
from dnscorrelate.correlate.vantage import VANTAGE
from dnscorrelate.diagnose.evidence import Evidence, logs_only
from dnscorrelate.diagnose.finding import (
    Finding,
    evidence,
    finding,
    findings_about,
    in_registry_order,
)
from dnscorrelate.diagnose.rules import rules
from dnscorrelate.diagnose.rules.pod import no_lookups
from dnscorrelate.diagnose.words import in_ms, names, plural
from dnscorrelate.findings import ERROR, WARNING


@dataclass
class Analysis:
    """A correlation and its diagnosis: what every output presents."""

    correlation: Correlation
    findings: list[Finding]
    facts: ClusterFacts | None = None  # what named the causes, when anything did: the HTML report draws the cluster from it

    def restricted_to(self, trace_ids: set[int]) -> Analysis:
        """The traces in `trace_ids`, with their sightings and upstream exchanges, and the findings about them."""
        return Analysis(self.correlation.restricted_to(trace_ids), findings_about(self.findings, trace_ids), self.facts)


def run(kind: str, ev: Evidence) -> list[Finding]:
    return [f for rule in rules(kind) for f in rule(ev)]


def diagnose(correlation: Correlation, facts: ClusterFacts | None = None, own: set[int] | None = None) -> list[Finding]:
    """Findings, most severe first; `ok` alone when nothing is wrong, `no-lookups` when there was nothing to look at.
    With `own`, the findings about those traces alone (the others are context: diagnose/windows.py), `ok` said of
    them when nothing is wrong with them."""
    ev = Evidence(correlation, facts or ClusterFacts())
    alerts = run("ALERTS", ev)
    if ev.lookups.empty and ev.strays.empty and ev.not_lookups.empty:
        ev.findings = alerts
        return alerts + run("OWN_QUERIES", ev) or [no_lookups(correlation)]
    ev.findings = run("CAUSES", ev)
    ev.explained = set().union(*(f.covers for f in ev.findings))
    ev.findings += run("FALLBACKS", ev)
    ev.findings += run("OWN_QUERIES", ev)
    found = in_registry_order(ev.findings + alerts)
    if own is not None:
        found = findings_about(found, own, recount=True)
    if not any(f.severity in (ERROR, WARNING) for f in found):
        found[:0] = findings_about(all_answered(ev), own, recount=True) if own is not None else all_answered(ev)
    return found


def all_answered(ev: Evidence) -> list[Finding]:
    """`ok` with how many lookups were answered well and how the evidence knows; nothing when none was (`ok` for no
    lookup would contradict the traces)."""
    traces = ev.lookups
    good = traces.loc[((traces["outcome"] == "answered") & traces["rcode"].isin(["NOERROR"])).to_numpy(),  # what is read, not the table
                      ["trace_id", "log_ref", "error", "total_ns", "client_vantage", "client_role", "coverage"]]
    if good.empty:
        return []
    how = ("by CoreDNS's log (which shows no other hop)" if logs_only(good).all()
           else f"as seen at {names(good['client_vantage'])} (one vantage point: the path is not visible)" if (good["coverage"] == VANTAGE).all()
           else "every hop in order")
    return [finding(
        "ok", f"{plural(len(good), 'lookup')} answered correctly, " + how
        + (f" (p50 {in_ms(good['total_ns'].astype(float).median())} {'there' if how.startswith('as seen') else 'at the client'}"
           f"{ev.timing_caveat(good['trace_id'])})."
           if good["total_ns"].notna().any() else "."),
        evidence(good), len(good))]
