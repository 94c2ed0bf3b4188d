"""The nftables ruleset of one lab node: kube-proxy's Services and the NetworkPolicies.

One table per node namespace, named `dnsc-<lab>` (the lab prefix and name), applied atomically with
`nft -f` (a re-apply replaces it whole). It holds:

- Services, as kube-proxy's nftables mode does: a verdict map from
  ClusterIP.proto.port to a per-service chain that picks an endpoint with
  `numgen random` and DNATs to it. A Service with no endpoints is rejected.
- Masquerade for pod traffic leaving the pod network (to the upstream).
- NetworkPolicies, enforced where the pod's traffic enters or leaves its node:
  a pod selected for Egress gets a chain on its source IP (forward and input
  hooks: traffic to NodeLocal DNS on the node is policed too); a pod selected
  for Ingress gets a chain on its destination IP (forward hook, after DNAT,
  so policies see pod IPs as in Kubernetes). A chain returns when any rule of
  any selecting policy allows the packet, and drops otherwise. Replies are
  allowed by conntrack (`ct state established,related`), as policies are
  stateful.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from dnscorrelate.cluster.lab.kube import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod
from dnscorrelate.cluster.lab.spec import LabSpec
from dnscorrelate.cluster.lab.topology import POD_CIDR, PREFIX, NodeInfo, PodInfo, ServiceInfo, Topology

DIRECTIONS = {"Egress": ("daddr", "egress"), "Ingress": ("saddr", "ingress")}


def table_name(lab: str) -> str:
    return f"{PREFIX}{lab}"


def comment(text: str) -> str:
    """An nft comment: quotes removed, cut to nft's 128-byte limit."""
    text = text.replace('"', "'")
    return f'comment "{text[:124] + "..." if len(text) > 127 else text}"'


def chain_id(ip: str) -> str:
    return ip.replace(".", "-")


def block(header: str, lines: list[str], indent: str = "  ") -> list[str]:
    return [f"{indent}{header} {{", *(f"{indent}  {line}" for line in lines), f"{indent}}}"]


# --- Services --------------------------------------------------------------


def service_chains(services: list[ServiceInfo]) -> tuple[list[str], list[str], list[str]]:
    """(vmap entries, chain definitions, no-endpoint keys) for every ClusterIP port."""
    entries, chains, rejects = [], [], []
    for s, svc in enumerate(s for s in services if s.cluster_ip):
        for p, port in enumerate(svc.ports):
            if port.protocol == "SCTP":
                continue
            proto = port.protocol.lower()
            key = f"{svc.cluster_ip} . {proto} . {port.port}"
            if not port.endpoints:
                rejects.append(key)
                continue
            name = f"svc-{s}-{p}"
            entries.append(f"{key} : goto {name}")
            picks = ", ".join(f"{i} : goto {name}-ep{i}" for i in range(len(port.endpoints)))
            label = comment(f"{svc.key}:{port.name or port.port}")
            chains += block(f"chain {name}", [f"numgen random mod {len(port.endpoints)} vmap {{ {picks} }} {label}"])
            for i, ep in enumerate(port.endpoints):
                chains += block(f"chain {name}-ep{i}", [f"meta l4proto {proto} dnat to {ep.ip}:{ep.port} {comment(ep.pod)}"])
    return entries, chains, rejects


# --- NetworkPolicies -------------------------------------------------------


@dataclass(frozen=True)
class PolicyContext:
    topology: Topology

    @property
    def spec(self) -> LabSpec:
        return self.topology.spec

    def namespace_labels(self, name: str) -> dict[str, str]:
        labels = next((ns.metadata.labels for ns in self.spec.namespaces if ns.metadata.name == name), {})
        return {**labels, "kubernetes.io/metadata.name": name}

    def peer_pods(self, peer: NetworkPolicyPeer, policy: NetworkPolicy) -> list[PodInfo]:
        """The pods a pod/namespace-selector peer selects, per the NetworkPolicy API."""
        pods = []
        for pod in self.topology.pods:
            if peer.namespaceSelector is None:
                in_scope = pod.namespace == policy.metadata.namespace
            else:
                in_scope = peer.namespaceSelector.matches(self.namespace_labels(pod.namespace))
            if in_scope and (peer.podSelector is None or peer.podSelector.matches(pod.labels)):
                pods.append(pod)
        return pods


def port_matches(port: NetworkPolicyPort, target: Pod | None) -> str | None:
    """The nft match for one policy port; None when a named port does not exist on `target`."""
    proto = port.protocol.lower()
    if port.port is None:
        return f"meta l4proto {proto}"
    number = port.port
    if isinstance(number, str) and not number.isdigit():
        number = target.named_port(number, port.protocol) if target is not None else None
        if number is None:
            return None
    span = f"{number}-{port.endPort}" if port.endPort else f"{number}"
    return f"meta l4proto {proto} th dport {span}"


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
                targets = [(f"{field} {pod.ip}", ctx.topology.manifest_pod(pod.key)) for pod in pods]
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


def policy_chain(ctx: PolicyContext, pod: PodInfo, direction: str, policies: list[NetworkPolicy]) -> list[str]:
    """The chain that lets through what any of `policies` allows for `pod` in `direction`, and drops the rest."""
    manifest = ctx.topology.manifest_pod(pod.key)
    lines = []
    for policy in policies:
        for index, rule in enumerate(policy.rules(direction)):
            label = comment(f"{policy.ref} {DIRECTIONS[direction][1]}[{index}]")
            for match in rule_matches(ctx, policy, rule, direction, manifest):
                lines.append(f"{match} counter return {label}".lstrip())
    names = ", ".join(p.ref for p in policies)
    lines.append(f"counter drop {comment(f'{pod.key}: {direction} not allowed by {names}')}")
    return block(f"chain {DIRECTIONS[direction][1]}-{chain_id(pod.ip)}", lines)


def isolating_policies(ctx: PolicyContext, pod: PodInfo, direction: str) -> list[NetworkPolicy]:
    manifest = ctx.topology.manifest_pod(pod.key)
    return [p for p in ctx.spec.policies if p.isolates(manifest, direction)]


# --- The whole table -------------------------------------------------------


def ruleset(topology: Topology, node: NodeInfo) -> str:
    """The nft script that (re)creates this node's table."""
    table = table_name(topology.lab)
    ctx = PolicyContext(topology)
    entries, svc_chains, rejects = service_chains(topology.services)

    jumps: dict[str, list[str]] = defaultdict(list)
    policy_chains: list[str] = []
    for pod in (p for p in topology.pods if p.node == node.name):
        for direction in ("Egress", "Ingress"):
            policies = isolating_policies(ctx, pod, direction)
            if policies:
                jumps[direction].append(f"{pod.ip} : jump {DIRECTIONS[direction][1]}-{chain_id(pod.ip)}")
                policy_chains += policy_chain(ctx, pod, direction, policies)

    egress = [f"ip saddr vmap {{ {', '.join(jumps['Egress'])} }}"] if jumps["Egress"] else []
    ingress = [f"ip daddr vmap {{ {', '.join(jumps['Ingress'])} }}"] if jumps["Ingress"] else []
    services = [f"ip daddr . meta l4proto . th dport vmap {{ {', '.join(entries)} }}"] if entries else []
    no_endpoints = [f"ip daddr . meta l4proto . th dport {{ {', '.join(rejects)} }} reject"] if rejects else []

    body = (
        block("chain prerouting", ["type nat hook prerouting priority dstnat; policy accept;", "jump services"])
        + block("chain output", ["type nat hook output priority -100; policy accept;", "jump services"])
        + block("chain services", services)
        + svc_chains
        + block("chain no-endpoints", ["type filter hook prerouting priority dstnat - 10; policy accept;", *no_endpoints])
        + block(
            "chain postrouting",
            ["type nat hook postrouting priority srcnat; policy accept;", f"ip saddr {POD_CIDR} ip daddr != {POD_CIDR} masquerade"],
        )
        + block(
            "chain forward",
            ["type filter hook forward priority filter; policy accept;", "ct state established,related accept", *egress, *ingress],
        )
        + block("chain input", ["type filter hook input priority filter; policy accept;", "ct state established,related accept", *egress])
        + policy_chains
    )
    return "\n".join([f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{", *body, "}", ""])
