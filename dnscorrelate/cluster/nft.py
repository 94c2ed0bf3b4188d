"""NetworkPolicies as nftables rules: what the one evaluator (`cluster.policy`) answers, written as
chains. The lab's node tables (`lab/nft.py`, with kube-proxy's Services) and the kind cluster's policy agent
(`kind/policy_agent.py`, a table of its own on each node) both apply these.

A pod selected for Egress gets a chain on its source IP (forward and input hooks: traffic to NodeLocal DNS on
the node is policed too); a pod selected for Ingress gets a chain on its destination IP (forward hook, after
DNAT, so policies see pod IPs as in Kubernetes). A chain returns when any rule of any selecting policy allows
the packet, and drops otherwise. Replies are allowed by conntrack (`ct state established,related`), as
policies are stateful.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from dnscorrelate.cluster.model import ClusterModel, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod
from dnscorrelate.cluster.policy import ANY_PORT, isolating_policies, port_range, selected_pods

DIRECTIONS = {"Egress": ("daddr", "egress"), "Ingress": ("saddr", "ingress")}


def comment(text: str) -> str:
    """An nft comment: quotes removed, cut to nft's 128-byte limit."""
    text = text.replace('"', "'")
    return f'comment "{text[:124] + "..." if len(text) > 127 else text}"'


def chain_id(ip: str) -> str:
    return ip.replace(".", "-")


def block(header: str, lines: list[str], indent: str = "  ") -> list[str]:
    return [f"{indent}{header} {{", *(f"{indent}  {line}" for line in lines), f"{indent}}}"]


# --- NetworkPolicies -------------------------------------------------------


@dataclass(frozen=True)
class PolicyContext:
    """A cluster's pods and namespaces as the model holds them, for the shared evaluator."""

    model: ClusterModel

    def peer_pods(self, peer: NetworkPolicyPeer, policy: NetworkPolicy) -> list[Pod]:
        """The pods a pod/namespace-selector peer selects, per the NetworkPolicy API."""
        return selected_pods(peer, policy, self.model.pods, self.model.namespace_labels)


def port_matches(port: NetworkPolicyPort, target: Pod | None) -> str | None:
    """The nft match for one policy port; None when a named port does not exist on `target`."""
    proto = port.protocol.lower()
    span = port_range(port, target)
    if span is None:
        return None
    if span == ANY_PORT and port.port is None:
        return f"meta l4proto {proto}"
    ports = f"{span.start}-{span.stop - 1}" if port.endPort else f"{span.start}"
    return f"meta l4proto {proto} th dport {ports}"


def address_set(ips: list[str]) -> str:
    return ips[0] if len(ips) == 1 else "{ " + ", ".join(ips) + " }"


def rule_matches(ctx: PolicyContext, policy: NetworkPolicy, rule, direction: str, isolated: Pod) -> list[str]:
    """nft match expressions, one per (peer, port) pair, that together allow what `rule` allows."""
    field = f"ip {DIRECTIONS[direction][0]}"
    ports = rule.ports or [None]
    peers = rule.peers or [None]
    matches = []
    for peer in peers:
        if peer is None:
            targets = [("", None)]
        elif peer.ipBlock is not None:
            excepts = f" {field} != {address_set(peer.ipBlock.except_)}" if peer.ipBlock.except_ else ""
            targets = [(f"{field} {peer.ipBlock.cidr}{excepts}", None)]
        else:
            pods = ctx.peer_pods(peer, policy)
            if not pods:
                continue
            named = any(isinstance(p.port, str) and not p.port.isdigit() for p in rule.ports)
            if direction == "Egress" and named:
                # A named port resolves on each destination pod separately.
                targets = [(f"{field} {pod.ip}", pod) for pod in pods]
            else:
                targets = [(f"{field} {address_set([p.ip for p in pods])}", None)]
        for address, destination in targets:
            for port in ports:
                port_pod = isolated if direction == "Ingress" else destination
                port_match = "" if port is None else port_matches(port, port_pod)
                if port_match is None:
                    continue
                matches.append(" ".join(x for x in (address, port_match) if x))
    return matches


def policy_chain(ctx: PolicyContext, pod: Pod, direction: str, policies: list[NetworkPolicy]) -> list[str]:
    """The chain that lets through what any of `policies` allows for `pod` in `direction`, and drops the rest."""
    lines = []
    for policy in policies:
        for index, rule in enumerate(policy.rules(direction)):
            label = comment(f"{policy.ref} {DIRECTIONS[direction][1]}[{index}]")
            for match in rule_matches(ctx, policy, rule, direction, pod):
                lines.append(f"{match} counter return {label}".lstrip())
    names = ", ".join(p.ref for p in policies)
    lines.append(f"counter drop {comment(f'{pod.key}: {direction} not allowed by {names}')}")
    return block(f"chain {DIRECTIONS[direction][1]}-{chain_id(pod.ip)}", lines)


# --- Tables ---------------------------------------------------------------


def policy_rules(model: ClusterModel, node_name: str) -> tuple[list[str], list[str], list[str]]:
    """(forward-hook lines, input-hook lines, chains) that police the isolated pods on `node_name`."""
    ctx = PolicyContext(model)
    jumps: dict[str, list[str]] = defaultdict(list)
    chains: list[str] = []
    for pod in (p for p in model.pods if p.spec.nodeName == node_name and p.ip):
        for direction in ("Egress", "Ingress"):
            policies = isolating_policies(model.policies, pod, direction)
            if policies:
                jumps[direction].append(f"{pod.ip} : jump {DIRECTIONS[direction][1]}-{chain_id(pod.ip)}")
                chains += policy_chain(ctx, pod, direction, policies)
    egress = [f"ip saddr vmap {{ {', '.join(jumps['Egress'])} }}"] if jumps["Egress"] else []
    ingress = [f"ip daddr vmap {{ {', '.join(jumps['Ingress'])} }}"] if jumps["Ingress"] else []
    established = "ct state established,related accept"
    return [established, *egress, *ingress], [established, *egress], chains


def filter_chains(forward: list[str], input_: list[str]) -> list[str]:
    return (block("chain forward", ["type filter hook forward priority filter; policy accept;", *forward])
            + block("chain input", ["type filter hook input priority filter; policy accept;", *input_]))


def replace_table(table: str, body: list[str]) -> str:
    """An nft script that replaces `table` whole, atomically."""
    return "\n".join([f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{", *body, "}", ""])


def policy_table(model: ClusterModel, node_name: str, table: str) -> str:
    """Only the NetworkPolicies of one node, as a table of their own: what the kind cluster's policy
    agent applies (kube-proxy and the pod network do the rest there)."""
    forward, input_, chains = policy_rules(model, node_name)
    return replace_table(table, filter_chains(forward, input_) + chains)
