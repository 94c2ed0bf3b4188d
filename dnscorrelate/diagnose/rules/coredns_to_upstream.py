"""Hop `coredns->upstream`: from a CoreDNS replica to the upstream resolver it forwards to."""

from __future__ import annotations

import re

import pandas as pd

from dnscorrelate.correlate.traces import OWN_PURPOSES
from dnscorrelate.diagnose.evidence import NETWORK_REASONS, Evidence, logs_only
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.forwarding import (
    UNKNOWN_UPSTREAM,
    forward_targets,
    upstream_phrase,
)
from dnscorrelate.diagnose.policies import upstream_policy_cause
from dnscorrelate.diagnose.rules.coredns import alert_refs
from dnscorrelate.diagnose.words import host_of, names, plural
from dnscorrelate.findings import WARNING

FORWARD_TIMEOUT_S = 1.0  # a query CoreDNS logged unanswered after this long waited on an upstream (forward gives up at 2-6 s)
LOOP_LINE = re.compile(r'Loop \((?P<path>[^)]*)\) detected for zone "(?P<zone>[^"]*)"')


def upstream_unreachable(ev: Evidence) -> list[Finding]:
    """Lookups that failed because the upstream did not answer: exchanges never answered, TCP connections never
    accepted, errors lines naming a network failure, queries CoreDNS logged unanswered after a forward's wait."""
    traces, upstream, facts = ev.traces, ev.upstream, ev.facts
    unanswered = upstream[~upstream["answered"] & (upstream["depth"] == 1)]
    failed_ids = set(unanswered["trace_id"])
    by_errors = traces[traces["error_reason"].isin(NETWORK_REASONS)]
    # CoreDNS logged them unanswered after waiting as long as forward does: with logs alone, an upstream that
    # did not answer (named when an errors line gives its address).
    silent = traces[logs_only(traces) & (traces["outcome"] == "timed-out") & (traces["log_duration_s"] >= FORWARD_TIMEOUT_S)
                    & traces["error_reason"].isin(["", *NETWORK_REASONS])]
    failing = traces[traces["trace_id"].isin(failed_ids) & (traces["upstream_answered"] == 0) | traces["trace_id"].isin(by_errors["trace_id"])]
    not_connected = traces[(traces["upstream_connects_unanswered"] + traces["upstream_connects_refused"] > 0) & (traces["upstream_answered"] == 0)]
    failing = failing[failing["outcome"] != "answered"].pipe(lambda f: pd.concat([
        f, traces[traces["trace_id"].isin(failed_ids) & (traces["rcode"] == "SERVFAIL")], not_connected[not_connected["outcome"] != "answered"],
        by_errors[(by_errors["upstream_answered"] == 0) & by_errors["rcode"].isin(["SERVFAIL", ""])], silent,
    ])).drop_duplicates("trace_id")
    if not len(failing):
        return []
    findings = []
    server_of = unanswered.drop_duplicates("trace_id").set_index("trace_id")["server_addr"]
    connect = failing["upstream_connect_target"].mask(failing["upstream_connect_target"] == "")
    target = failing["trace_id"].map(server_of)
    target = target.where(target.notna(), connect)
    target = target.where(target.notna(), failing["error_upstream"])  # where, not fillna: no object downcast warning
    named_by_corefile = failing["qname"].map(lambda q: forward_targets(facts, q))
    target = target.mask(target == "", named_by_corefile).mask(lambda t: t == "", UNKNOWN_UPSTREAM)
    for address, group in failing.groupby(target):
        blocks = facts.forwards_to(address)
        where = "; ".join(f"forward for {', '.join(b.zones)} in the {b.source}" for b in blocks)
        reason = names(group["error_reason"]) or connect_reason(group) or logged_unanswered(group) or "no response"
        policy = upstream_policy_cause(facts, group, address)
        n = len(group)
        advice = f" {policy}." if policy else (f" It is the {where}: fix or remove that forward target." if where else " Check the forward targets in the Corefile.")
        findings.append(finding(
            "upstream-unreachable",
            f"{upstream_phrase(address)} does not answer ({reason}): {plural(n, 'lookup')} of {names(group['qname'])} "
            f"failed with {names(group['rcode']) or 'a timeout'}." + advice,
            evidence(group, upstream=address), n))
    return findings


def logged_unanswered(group: pd.DataFrame) -> str:
    """'CoreDNS logged N unanswered after 6.0 s' for traces known from its log alone, else ''."""
    logged = group[logs_only(group) & (group["outcome"] == "timed-out")]
    if logged.empty:
        return ""
    return f"CoreDNS logged {plural(len(logged), 'query')} unanswered after {logged['log_duration_s'].median():.1f} s"


def connect_reason(group: pd.DataFrame) -> str:
    tried = int(group["upstream_connects"].sum())
    if not tried:
        return ""
    refused = int(group["upstream_connects_refused"].sum())
    if refused:
        return f"{plural(refused, 'TCP connection')} refused (RST)"
    return f"{plural(tried, 'TCP connection')} never accepted (no SYN-ACK)"


def own_queries(ev: Evidence) -> list[Finding]:
    """CoreDNS's own queries (loop probes, forward health checks) tell something only when they fail: the
    upstream they went to does not answer. Added to the finding so far that already names that upstream, or
    one of their own."""
    traces = ev.correlation.traces
    own = traces[traces["purpose"].isin(OWN_PURPOSES)]
    failed = own[own["error_reason"].isin(NETWORK_REASONS) | (own["outcome"] == "timed-out")]
    address = failed["error_upstream"].mask(failed["error_upstream"] == "", failed["dst_ip"]).mask(lambda a: a == "", UNKNOWN_UPSTREAM)
    new = []
    for target, group in failed.groupby(address):
        kinds = group["purpose"].value_counts()
        what = " and ".join(
            {"loop-probe": f"{plural(int(n), 'loop-plugin probe')} (HINFO for a random name)",
             "health-check": f"{plural(int(n), 'forward health check')} (. IN NS)"}[kind] for kind, n in kinds.items())
        reason = names(group["error_reason"]) or "no response"
        known = next((f for f in ev.findings if f.code == "upstream-unreachable" and host_of(f.evidence.get("upstream", "")) == host_of(target)), None)
        if known:
            known.summary += f" CoreDNS's own {what} to it failed too ({reason})."
            continue
        if "health-check" in kinds:
            summary = (f"{upstream_phrase(target)} does not answer its {what} ({reason}): the forward plugin marks it down, "
                       "and lookups it forwards there fail. Check that resolver and the replicas' path to it.")
            severity = None
        else:  # a warning: the upstream may only ignore HINFO
            summary = (f"{upstream_phrase(target)} does not answer its {what} ({reason}) from {names(group['replica'])}: "
                       "the replica cannot reach it (a firewall, a NetworkPolicy, a route), or it ignores HINFO queries. "
                       "Names CoreDNS forwards there will fail the same way; test one with dig from a pod.")
            severity = WARNING
        new.append(finding("upstream-unreachable", summary, evidence(group, upstream=target, own_queries=True), len(group), severity=severity))
    return new


def forwarding_loop(ev: Evidence) -> list[Finding]:
    """CoreDNS's loop plugin found its forward target sending its queries back to it."""
    alerts = ev.alerts
    findings = []
    for replica, group in alerts[alerts["kind"] == "loop-detected"].groupby("replica"):
        found = group["text"].str.extract(LOOP_LINE)
        zones = names(found["zone"].dropna()) or "?"
        findings.append(finding(
            "forwarding-loop",
            f"{replica or 'CoreDNS'} detected a forwarding loop for zone {zones} ({names(found['path'].dropna(), 1)}, "
            f"{plural(len(group), 'time')}): its forward target sends its queries back to it, so the loop plugin stops "
            "CoreDNS (CrashLoopBackOff). Most often `forward . /etc/resolv.conf` on a node whose resolv.conf names a local "
            "stub (127.0.0.53, systemd-resolved): give the kubelet the real resolv.conf (resolvConf: /run/systemd/resolve/resolv.conf) "
            "or forward to the upstream's address.", alert_refs(group), len(group)))
    return findings


CAUSES = [upstream_unreachable]
OWN_QUERIES = own_queries
ALERTS = [forwarding_loop]
