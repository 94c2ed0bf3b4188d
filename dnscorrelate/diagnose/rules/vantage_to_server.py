"""Hop `vantage->server`: what one vantage point (a capture, nothing naming the places around it) sees of the
way to the server its queries went to and back. It can say what arrived there and when; it cannot say where
on the path something was lost, nor what the server did with a query."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.diagnose.evidence import Evidence, EvidenceWords
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.words import in_ms, names, plural, questions
from dnscorrelate.findings import WARNING

SLOW_RESPONSE_MS = 100.0
CALL_IT_LOST_NS = 10**9  # a capture that ended sooner after every unanswered query cannot call them lost (a warning, not an error)


def one_place(record: EvidenceWords) -> str:
    return f"one {record.point} cannot tell"


def capture_end(ev: Evidence) -> pd.Series:
    """The last time each vantage saw anything, ns."""
    seen = ev.correlation.sightings
    return seen.groupby(seen["vantage"].astype(str))["ts_ns"].max()


def in_seconds(ns: float) -> str:
    return f"{ns / 1e9:.3g} s" if ns >= 1e9 else in_ms(ns)


def no_response_seen(ev: Evidence) -> list[Finding]:
    """Queries a capture saw leave, with no response seen there: said for that place and that server only."""
    lost = ev.seen[((ev.seen["outcome"] == "timed-out") & (ev.seen["icmp"] == "") & (ev.seen["verdict"] != "DROPPED")).to_numpy()]
    if lost.empty:
        return []
    end = capture_end(ev)
    findings = []
    for (vantage, server, received), group in lost.groupby(["client_vantage", "server", "query_received"]):
        record = ev.evidence_at(vantage)
        waits = end.get(vantage, group["t_start"].max()) - group["t_start"]
        longest, shortest = float(waits.max()), float(waits.min())
        too_soon = longest < CALL_IT_LOST_NS
        went_on = f"in the {in_seconds(shortest)} to {in_seconds(longest)} the evidence there went on after each"
        findings.append(finding(
            "no-response-seen",
            (f"{vantage} received {plural(len(group), 'query')} for {server} ({questions(group['qname'])}, from "
             f"{names(group['client_ip'])}) and no response to them left it, {went_on}"
             + (": it ended too soon after them to call them unanswered." if too_soon else
                ": it did not answer them, or answered under another id; what it did with them meanwhile (a lookup of its own, "
                "a wait) is not in this evidence.")) if received else
            f"No response seen at {vantage} to {plural(len(group), 'lookup')} of {questions(group['qname'])} sent to {server}, "
            f"in the {in_seconds(shortest)} to {in_seconds(longest)} {record.record} went on after each"
            + (f": {record.record} ended too soon after them to call them lost." if too_soon else
               f". Where they were lost {one_place(record)}: on the way out, at {server}, or on the way back; a capture nearer the "
               "server, or its log, would."),
            evidence(group, server=server, vantage=vantage, waited_s=round(shortest / 1e9, 3)), len(group),
            severity=WARNING if too_soon else None))
    return findings


ICMP_MEANINGS = {  # (type, code) of ICMP and ICMPv6 destination-unreachable and time-exceeded errors
    (3, 0): "the network is unreachable", (3, 1): "the host is unreachable", (3, 3): "nothing listens on that port",
    (3, 9): "the network is administratively prohibited", (3, 10): "the host is administratively prohibited",
    (3, 13): "a firewall refuses it (administratively prohibited)", (11, 0): "its TTL ran out on the way (a routing loop?)",
    (1, 0): "there is no route to it", (1, 1): "a firewall refuses it (administratively prohibited)",
    (1, 3): "the address is unreachable", (1, 4): "nothing listens on that port",
}
ICMP_TEXT = r"ICMP (?P<type>\d+)/(?P<code>\d+) at (?P<at>.+) about (?P<target>\S+)$"


def icmp_error_seen(ev: Evidence) -> list[Finding]:
    """Queries a capture saw answered by an ICMP error instead of DNS: what the error says, about which address."""
    refused = ev.seen[((ev.seen["outcome"] == "timed-out") & (ev.seen["icmp"] != "")).to_numpy()]
    if refused.empty:
        return []
    parts = refused["icmp"].str.extract(ICMP_TEXT)
    findings = []
    for (vantage, target, kind, code), group in refused.assign(target=parts["target"], kind=parts["type"], code=parts["code"]).groupby(
            ["client_vantage", "target", "kind", "code"]):
        meaning = ICMP_MEANINGS.get((int(kind), int(code)), "an ICMP error")
        findings.append(finding(
            "icmp-error-seen",
            f"{plural(len(group), 'query')} from {vantage} to {target} ({questions(group['qname'])}) drew ICMP {kind}/{code} instead of "
            f"an answer: {meaning}. The server's address is wrong, or it is down, or something on the way refuses DNS to it.",
            evidence(group, target=target, icmp=f"{kind}/{code}"), len(group)))
    return findings


def slow_response_seen(ev: Evidence) -> list[Finding]:
    """Answers that took long from the query to the response at the capture point, per server."""
    answered = ev.seen[(ev.seen["outcome"] == "answered").to_numpy()]
    findings = []
    for (vantage, server), group in answered.groupby(["client_vantage", "server"]):
        took = group["total_ns"].astype(float)
        slow = group[(took > SLOW_RESPONSE_MS * 1e6).to_numpy()]
        if slow.empty:
            continue
        t = slow["total_ns"].astype(float)
        findings.append(finding(
            "slow-response-seen",
            f"Answers from {server} took {in_ms(t.median())} median, {in_ms(t.max())} at worst, at {vantage}: "
            f"{len(slow)} of {plural(len(group), 'lookup')} over {SLOW_RESPONSE_MS:.0f} ms ({questions(slow['qname'])}). "
            f"What the time went to (the path, the server, its upstream) {one_place(ev.evidence_at(vantage))}"
            f"{ev.timing_caveat(slow['trace_id'])}.",
            evidence(slow, server=server, vantage=vantage, median_ms=round(t.median() / 1e6, 3)), len(slow)))
    return findings


def duplicate_response(ev: Evidence) -> list[Finding]:
    """The same response again at one place: more responses than its queries and servers explain."""
    twice = ev.lookups[(ev.lookups["duplicate_responses"] > 0).to_numpy()]
    return [finding(
        "duplicate-response",
        f"{plural(len(group), 'lookup')} of {names(group['qname'])} got {plural(int(group['duplicate_responses'].sum()), 'extra response')} "
        f"from {server} at {vantage}, beyond one per query: the server or a middlebox sent the answer twice, or "
        f"{ev.evidence_at(vantage).copied}. Harmless to the client, which takes the first.",
        evidence(group, server=server), len(group))
        for (vantage, server), group in twice.groupby(["client_vantage", "server"])]


def several_servers_answered(ev: Evidence) -> list[Finding]:
    """One query, sent to several servers, answered by more than one."""
    many = ev.lookups[(ev.lookups["responders"] > 1).to_numpy()]
    if many.empty:
        return []
    seen = ev.correlation.sightings
    answers = seen[seen["trace_id"].isin(set(many["trace_id"])).to_numpy() & seen["qr"].to_numpy() & (seen["kind"] == "dns").to_numpy()]
    servers = answers.groupby("trace_id")["src_ip"].agg(lambda ips: ", ".join(dict.fromkeys(ips.astype(str))))
    findings = []
    for vantage, group in many.groupby("client_vantage"):
        answered_by = names(group["trace_id"].map(servers), 1)
        icmp = next((i for i in group["icmp"] if i), "")
        findings.append(finding(
            "several-servers-answered",
            f"{plural(len(group), 'query')} from {vantage} ({names(group['qname'])}, id {names(group['dns_id'].map(hex))}) went to "
            f"several servers and more than one answered ({answered_by}): the client asks its resolvers in parallel or "
            "retries the next before the first answers; it keeps the first answer"
            + (f", and the later one drew an ICMP error ({icmp})" if icmp else "") + ".",
            evidence(group), len(group)))
    return findings


def query_not_seen(ev: Evidence) -> list[Finding]:
    """Responses whose query the evidence does not hold."""
    strays = ev.strays[(ev.strays["outcome"] == "query-not-seen").to_numpy()]
    return [finding(
        "query-not-seen",
        f"{plural(len(group), 'response')} from {server} to {names(group['client_ip'])} at {vantage} (id "
        f"{names(group['dns_id'].astype(int).map(hex))}, {names(group['qname'])}) answer queries this evidence does not hold: "
        f"sent {ev.evidence_at(vantage).began}, or {ev.evidence_at(vantage).gap}. They are not counted as lookups.",
        evidence(group, server=server), len(group))
        for (vantage, server), group in strays.groupby(["client_vantage", "server"])]


CAUSES = [no_response_seen, icmp_error_seen, slow_response_seen, duplicate_response, several_servers_answered, query_not_seen]
