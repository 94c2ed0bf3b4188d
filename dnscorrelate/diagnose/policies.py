"""NetworkPolicies named as causes, from the cluster facts."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts, blocking_policies


def lost_per_client(lost: pd.DataFrame, facts: ClusterFacts, at_node: bool, node_captured: bool = True):
    """(client vantage, its lost queries, the NetworkPolicy that drops them or '') for queries lost before CoreDNS
    that were (`at_node`) or were not seen at the node. Not being seen at the node tells something only where a
    node was captured (`node_captured`): without that, nothing is yielded for `at_node=False`."""
    seen = lost["seen_at_node"].astype(bool)
    if not at_node and not node_captured:
        return
    for client, group in lost[seen if at_node else ~seen].groupby("client_vantage", sort=True):
        yield client, group, policy_cause(facts, group["client_ip"].iloc[0], group)


def policies_phrase(policies: list) -> tuple[str, bool]:
    """('NetworkPolicy a/b, NetworkPolicy c/d', whether there is just one), to name them in a sentence."""
    return ", ".join(f"NetworkPolicy {p.ref}" for p in policies), len(policies) == 1


def policy_cause(facts: ClusterFacts, client_ip: str, group: pd.DataFrame) -> str:
    """Which NetworkPolicy drops DNS from `client_ip` to CoreDNS, from the facts; '' when unknown."""
    proto = group["proto"].iloc[0]
    targets = list(facts.coredns_pods) or [t.split(":")[0] for t in group["dnat_to"] if t]
    client = facts.pod_key(client_ip)
    for direction in ("Egress", "Ingress"):
        for target in targets:
            subject, other = (client_ip, target) if direction == "Egress" else (target, client_ip)
            blocking = blocking_policies(facts, direction, subject, other, proto, 53)
            if not blocking:
                continue
            refs, one = policies_phrase(blocking)
            if direction == "Egress":
                return (f"{refs} {'selects' if one else 'select'} {client} for Egress and allow{'s' if one else ''} no "
                        f"{proto.upper()} 53 to the CoreDNS pods; allow egress to pods labelled k8s-app=kube-dns in kube-system on UDP and TCP 53")
            return (f"{refs} {'selects' if one else 'select'} the CoreDNS pod {facts.coredns_pods.get(target, target)} for Ingress "
                    f"and {'does' if one else 'do'} not admit {client} on {proto.upper()} 53; allow ingress from all pods on UDP and TCP 53")
    return ""


def upstream_policy_cause(facts: ClusterFacts, group: pd.DataFrame, address: str) -> str:
    """A NetworkPolicy that keeps the CoreDNS replicas from reaching `address`, from the facts."""
    ip = address.rsplit(":", 1)[0]
    for replica in dict.fromkeys(group["server"]):
        replica_ip = next((i for i, key in facts.coredns_pods.items() if key == replica), None)
        for proto in dict.fromkeys([*group["proto"].str.upper(), "UDP", "TCP"]):
            blocking = blocking_policies(facts, "Egress", replica_ip, ip, proto, 53) if replica_ip else []
            if blocking:
                refs, one = policies_phrase(blocking)
                return (f"{refs} {'selects' if one else 'select'} {replica} for Egress and allow{'s' if one else ''} no {proto} 53 to {ip}: new connections are dropped "
                        "(flows already open may go on until conntrack forgets them); allow egress to the upstream on UDP and TCP 53")
    return ""
