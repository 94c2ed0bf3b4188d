"""NetworkPolicy semantics, written once: who a policy isolates, which peers and ports a rule admits,
and the policies that block a flow.

Follows the Kubernetes API reference: a pod selected by some policy of a
policyType is isolated in that direction, and traffic passes only when some
rule of some selecting policy admits both the peer and the port. The lab
compiles these answers to nftables (`cluster/lab/nft.py`); the diagnoser asks
`blocking_policies` to name a cause. Namespace labels come from the caller
(`ClusterModel.namespace_labels`), so any backend can answer them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from dnscorrelate.cluster.model import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod

NamespaceLabels = Callable[[str], dict[str, str]]
ANY_PORT = range(1, 65536)


def isolates(policy: NetworkPolicy, pod: Pod, direction: str) -> bool:
    """Whether `policy` selects `pod` and so isolates it in `direction` (Ingress/Egress)."""
    return (
        pod.metadata.namespace == policy.metadata.namespace
        and direction in policy.policy_types
        and policy.spec.podSelector.matches(pod.metadata.labels)
    )


def isolating_policies(policies: Iterable[NetworkPolicy], pod: Pod, direction: str) -> list[NetworkPolicy]:
    return [p for p in policies if isolates(p, pod, direction)]


def peer_selects(peer: NetworkPolicyPeer, policy: NetworkPolicy, pod: Pod, namespace_labels: NamespaceLabels) -> bool:
    """Whether a pod/namespace-selector peer selects `pod` (never true for an ipBlock peer)."""
    if peer.ipBlock is not None:
        return False
    if peer.namespaceSelector is None:
        in_scope = pod.metadata.namespace == policy.metadata.namespace
    else:
        in_scope = peer.namespaceSelector.matches(namespace_labels(pod.metadata.namespace))
    return in_scope and (peer.podSelector is None or peer.podSelector.matches(pod.metadata.labels))


def selected_pods(peer: NetworkPolicyPeer, policy: NetworkPolicy, pods: Iterable[Pod], namespace_labels: NamespaceLabels) -> list[Pod]:
    return [pod for pod in pods if peer_selects(peer, policy, pod, namespace_labels)]


def peer_admits(peer: NetworkPolicyPeer, policy: NetworkPolicy, other: Pod | None, other_ip: str, namespace_labels: NamespaceLabels) -> bool:
    """Whether `peer` admits the other end of a flow: the pod `other` (None when no pod has the address) at `other_ip`."""
    if peer.ipBlock is not None:
        address = ipaddress.ip_address(other_ip)
        return address in ipaddress.ip_network(peer.ipBlock.cidr) and not any(
            address in ipaddress.ip_network(e) for e in peer.ipBlock.except_
        )
    return other is not None and peer_selects(peer, policy, other, namespace_labels)


def port_range(port: NetworkPolicyPort, destination: Pod | None) -> range | None:
    """The destination ports a policy port admits: ANY_PORT without a port, a named port resolved on
    `destination`, a number or number..endPort; None when the named port does not exist there."""
    if port.port is None:
        return ANY_PORT
    number = port.port
    if isinstance(number, str) and not number.isdigit():
        number = destination.named_port(number, port.protocol) if destination is not None else None
        if number is None:
            return None
    low = int(number)
    return range(low, (port.endPort or low) + 1)


def port_admits(port: NetworkPolicyPort, destination: Pod | None, proto: str, number: int) -> bool:
    span = port_range(port, destination) if port.protocol == proto else None
    return span is not None and number in span


def rule_admits(rule, policy: NetworkPolicy, direction: str, subject: Pod, other: Pod | None, other_ip: str,
                proto: str, port: int, namespace_labels: NamespaceLabels) -> bool:
    """Whether one rule of `policy` admits the flow between `subject` (the isolated pod) and the other end."""
    destination = other if direction == "Egress" else subject
    peers_ok = not rule.peers or any(peer_admits(peer, policy, other, other_ip, namespace_labels) for peer in rule.peers)
    ports_ok = not rule.ports or any(port_admits(p, destination, proto.upper(), port) for p in rule.ports)
    return peers_ok and ports_ok


def blocking_policies(policies: Iterable[NetworkPolicy], direction: str, subject: Pod, other: Pod | None, other_ip: str,
                      proto: str, port: int, namespace_labels: NamespaceLabels) -> list[NetworkPolicy]:
    """The policies that isolate `subject` in `direction` when none of them admits the flow with
    `other`/`other_ip` on proto/port; [] when it is admitted or `subject` is not isolated."""
    isolating = isolating_policies(policies, subject, direction)
    for policy in isolating:
        if any(rule_admits(rule, policy, direction, subject, other, other_ip, proto, port, namespace_labels)
               for rule in policy.rules(direction)):
            return []
    return isolating
