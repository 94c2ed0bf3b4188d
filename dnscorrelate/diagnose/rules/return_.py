"""Hop `return`: the response's way back to the client."""

from __future__ import annotations

from dnscorrelate.diagnose.evidence import Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.words import plural


def response_lost(ev: Evidence) -> list[Finding]:
    traces = ev.traces
    lost = traces[(traces["outcome"] == "partial") & (traces["client_vantage"] != "")]
    return [
        finding("response-lost",
                f"CoreDNS answered {plural(len(group), 'query')} from {client} but the responses never reached the pod: "
                f"something on the way back (conntrack, a policy on replies, the node) drops them.",
                evidence(group), len(group))
        for client, group in lost.groupby("client_vantage")
    ]


CAUSES = [response_lost]
