"""Hop `pod`: inside the client pod. Its search list's noise; and nothing to look at when no workload looked anything up."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.correlate import Correlation
from dnscorrelate.diagnose.evidence import Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.words import names, plural


def search_path_expansion(ev: Evidence) -> list[Finding]:
    """NXDOMAIN expansions of a dotted name through the client's search list before the name itself."""
    answered, qnames = ev.answered
    findings = []
    for (client, base), group in ev.search_noise.groupby(["client_vantage", "base"]):
        finals = answered[(answered["client_vantage"] == client) & (qnames == base + ".")]
        outcome = names(finals["rcode"])
        findings.append(finding(
            "search-path-expansion",
            f"{client} looked up {base} through its search list first: {plural(len(group), 'extra query')} "
            f"({names(group['qname'], 2)}) all NXDOMAIN before {base}. itself ({outcome}). "
            f"Use the trailing-dot name {base}. or lower ndots (dnsConfig options ndots:1) to skip them.",
            evidence(pd.concat([group, finals])), len(group)))
    return findings


def no_lookups(correlation: Correlation) -> Finding:
    """Nothing to diagnose: said as a warning, never as `ok`, with what the capture did see."""
    stats = correlation.stats
    own = stats.get("own_queries", 0)
    seen = (f"{plural(stats.get('packets', 0), 'packet')} ({stats.get('dns_packets', 0)} DNS) and "
            f"{plural(stats.get('log_records', 0), 'CoreDNS log record')} were read"
            + (f"; {own} of the lookups were CoreDNS's own (loop probes, forward health checks)" if own else ""))
    api = [a for a in correlation.log_alerts if a["kind"] == "api-unreachable"]
    if api:
        seen += (f". CoreDNS could not reach the Kubernetes API ({plural(len(api), 'line')}, e.g. {api[0]['source']}:{api[0]['line_no']}), "
                 "so it serves no or stale cluster names until it does")
    return finding("no-lookups", f"No lookup from a workload was captured, so there is nothing to diagnose: {seen}. "
                   "Check that the pod looked a name up while the capture ran and that its network namespace was captured.",
                   {"stats": {k: stats.get(k, 0) for k in ("packets", "dns_packets", "log_records", "traces", "lost_samples")}}, 0)


CAUSES = [search_path_expansion]
