"""Hop `upstream`: the upstream resolver itself."""

from __future__ import annotations

from dnscorrelate.diagnose.evidence import Evidence, logs_only
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.forwarding import forward_targets
from dnscorrelate.diagnose.words import in_ms, names, plural

SLOW_UPSTREAM_MS = 100.0


def upstream_error(ev: Evidence) -> list[Finding]:
    """The upstream answered CoreDNS's exchange with a failure of its own."""
    traces, upstream = ev.traces, ev.upstream
    errored = upstream[upstream["answered"] & upstream["rcode"].isin(["SERVFAIL", "REFUSED", "NOTIMP"]) & (upstream["depth"] == 1)]
    findings = []
    for (address, rcode), group in errored.groupby(["server_addr", "rcode"]):
        ids = traces[traces["trace_id"].isin(group["trace_id"])]
        advice = "the upstream refuses these clients or names (an ACL, or a resolver that is not recursive for them)" if rcode == "REFUSED" else "the upstream itself fails to resolve them"
        findings.append(finding(
            "upstream-error",
            f"Upstream {address} answered {rcode} for {plural(len(group), 'query')} ({names(group['qname'])}): {advice}; CoreDNS passes that on to the pods.",
            evidence(ids, upstream=address), len(group)))
    return findings


def upstream_slow(ev: Evidence) -> list[Finding]:
    """Upstream exchanges whose round trip, seen at the replica, is over the threshold."""
    traces, upstream = ev.traces, ev.upstream
    slow = upstream[upstream["answered"] & (upstream["rtt_ns"].astype("float") > SLOW_UPSTREAM_MS * 1e6) & (upstream["depth"] == 1)]
    findings = []
    for address, group in slow.groupby("server_addr"):
        rtt = group["rtt_ns"].astype(float)
        ids = traces[traces["trace_id"].isin(group["trace_id"])]
        findings.append(finding(
            "upstream-slow",
            f"Upstream {address} is slow: {plural(len(group), 'answer')} took {in_ms(rtt.median())} median, {in_ms(rtt.max())} at worst "
            f"(threshold {SLOW_UPSTREAM_MS:.0f} ms); pods wait on it for every uncached external name. Check that resolver or add a faster one.",
            evidence(ids, upstream=address, median_ms=round(rtt.median() / 1e6, 3)), len(group)))
    return findings


def slow_forwarded_in_logs(ev: Evidence) -> list[Finding]:
    """Slow answers CoreDNS did not give itself (not authoritative), known from its log alone: the log's
    duration holds the upstream's round trip and CoreDNS's own time, which only packets split."""
    traces = ev.traces
    own = traces["server_self_ns"].astype(float)
    slow = traces[logs_only(traces) & (traces["outcome"] == "answered") & own.isna() & traces["rcode"].isin(["NOERROR", "NXDOMAIN"])
                  & (traces["error"] == "") & (traces["server_ns"].astype(float) > SLOW_UPSTREAM_MS * 1e6)]
    if slow.empty:
        return []
    t = slow["server_ns"].astype(float)
    upstream = names(slow["qname"].map(lambda q: forward_targets(ev.facts, q)))
    return [finding(
        "upstream-slow",
        f"{plural(len(slow), 'answer')} CoreDNS did not serve itself ({names(slow['qname'])}) took {in_ms(t.median())} median, "
        f"{in_ms(t.max())} at worst, by its log: that time is mostly its upstream{' ' + upstream if upstream else ''}'s round trip "
        "(the log does not split it from CoreDNS's own time; a capture on the replica would).",
        evidence(slow, **({"upstream": upstream} if upstream else {})), len(slow))]


CAUSES = [upstream_error, upstream_slow, slow_forwarded_in_logs]
