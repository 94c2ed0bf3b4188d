"""Hop `node->coredns`: from the node, through the kube-dns Service's DNAT, to a CoreDNS replica."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.diagnose.evidence import Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.policies import lost_per_client
from dnscorrelate.diagnose.words import plural

IMBALANCE_MIN_TRACES = 20
IMBALANCE_SHARE = 0.8


def dropped_at_node(ev: Evidence) -> list[Finding]:
    """Queries seen at the node that never reached CoreDNS, and no answer."""
    return [finding("dropped-at-node",
                    f"{plural(len(group), 'DNS query')} from {client} reached {group['reached'].iloc[0]} but never reached CoreDNS and "
                    f"got no answer: {cause or 'a NetworkPolicy or firewall on the node drops them'}.",
                    evidence(group), len(group))
            for client, group, cause in lost_per_client(ev.lost_before_coredns, ev.facts, at_node=True)]


def imbalance(ev: Evidence) -> list[Finding]:
    """Requests reaching CoreDNS replicas (directly, or from NodeLocal DNS) piling onto one of them."""
    traces, upstream, facts = ev.traces, ev.upstream, ev.facts
    replicas = set(facts.coredns_pods.values()) or set(traces.loc[traces["server_role"] == "coredns", "server"])
    direct = traces.loc[traces["server_role"] == "coredns", ["trace_id", "server"]]
    relayed = upstream.loc[upstream["server"].isin(replicas), ["trace_id", "server"]]
    served = pd.concat([direct, relayed])
    if len(served) < IMBALANCE_MIN_TRACES:
        return []
    counts = served["server"].value_counts()
    counts = counts.reindex(sorted(set(counts.index) | replicas), fill_value=0)
    if len(counts) < 2 or counts.max() / counts.sum() <= IMBALANCE_SHARE:
        return []
    spread = ", ".join(f"{r} {c}" for r, c in counts.sort_values(ascending=False).items())
    via = " (all relayed by NodeLocal DNS, whose force_tcp connection sticks to one replica)" if len(relayed) and not len(direct) else ""
    return [finding(
        "coredns-imbalance",
        f"Queries are not spread over the CoreDNS replicas ({spread}): one replica takes {counts.max() / counts.sum():.0%}{via}. "
        "Long-lived TCP connections or clients pinned to one address do this; check kube-proxy's balancing and connection reuse.",
        evidence(traces[traces["trace_id"].isin(served["trace_id"])]), int(counts.sum()))]


CAUSES = [dropped_at_node, imbalance]
