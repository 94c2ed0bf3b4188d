"""Hop `pod->node`: from the pod's interface to its node."""

from __future__ import annotations

from dnscorrelate.diagnose.evidence import Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.policies import policy_cause
from dnscorrelate.diagnose.words import plural


def dropped_before_node(ev: Evidence) -> list[Finding]:
    """Queries that never reached the node, and no answer: stopped in the pod or on its way out."""
    lost = ev.lost_before_coredns
    findings = []
    for client, group in lost[~lost["seen_at_node"].astype(bool)].groupby("client_vantage", sort=True):
        n = len(group)
        cause = policy_cause(ev.facts, group["client_ip"].iloc[0], group)
        findings.append(finding(
            "dropped-before-node",
            f"{plural(n, 'DNS query')} from {client} never left the pod's network namespace or never reached the node: "
            f"{cause or 'check the pod interface, its routes and any firewall inside the pod'}.",
            evidence(group), n))
    return findings


CAUSES = [dropped_before_node]
