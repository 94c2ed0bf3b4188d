"""Cluster facts: what the diagnoser may know besides the evidence, to name a cause.

The Corefile (forward targets per zone), Services, Pods, NetworkPolicies and
the pods' search lists. They come from a lab's topology or from files a user
has (`--corefile`, `--manifests`); never from the fault a scenario injected.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from dnscorrelate.cluster.lab.kube import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod


@dataclass(frozen=True)
class ForwardBlock:
    zones: tuple[str, ...]
    targets: tuple[str, ...]
    source: str  # "Corefile" or "coredns-custom <key>"


@dataclass(frozen=True)
class ServerBlock:
    zones: tuple[str, ...]  # without ports or trailing dots; "." for the root
    plugins: tuple[str, ...]  # the block's directives, in order
    source: str
    port: int = 53

    def serves(self, qname: str) -> str:
        """The longest of its zones that `qname` is in ("" if none)."""
        name = qname.lower().rstrip(".")
        inside = [z for z in self.zones if z == "." or name == z or name.endswith("." + z)]
        return max(inside, key=lambda z: 0 if z == "." else len(z) + 1, default="")


@dataclass
class ClusterFacts:
    corefile: str = ""
    custom_server_blocks: dict[str, str] = field(default_factory=dict)
    domain: str = "cluster.local"
    cluster_dns_ip: str = ""
    nodelocal_ip: str = ""
    resolv_conf_upstreams: tuple[str, ...] = ()  # what `forward . /etc/resolv.conf` means on CoreDNS's pods
    pods: dict[str, Pod] = field(default_factory=dict)  # ip -> manifest
    coredns_pods: dict[str, str] = field(default_factory=dict)  # ip -> namespace/name
    services: dict[str, list[str]] = field(default_factory=dict)  # namespace -> Service names
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    policies: list[NetworkPolicy] = field(default_factory=list)
    search: dict[str, list[str]] = field(default_factory=dict)  # pod ip -> search list

    def pod_key(self, ip: str) -> str:
        pod = self.pods.get(ip)
        return f"{pod.metadata.namespace}/{pod.metadata.name}" if pod else ip

    def forward_blocks(self) -> list[ForwardBlock]:
        blocks = parse_forwards(self.corefile, "Corefile")
        for key, text in sorted(self.custom_server_blocks.items()):
            blocks += parse_forwards(text, f"coredns-custom {key}")
        return [
            ForwardBlock(b.zones, tuple(u for t in b.targets for u in (self.resolv_conf_upstreams if t == "/etc/resolv.conf" and self.resolv_conf_upstreams else (t,))), b.source)
            for b in blocks
        ]

    def server_blocks(self) -> list[ServerBlock]:
        blocks = parse_server_blocks(self.corefile, "Corefile")
        for key, text in sorted(self.custom_server_blocks.items()):
            blocks += parse_server_blocks(text, f"coredns-custom {key}")
        return blocks

    def serving_block(self, qname: str, port: int = 53) -> ServerBlock | None:
        return serving_block(self.server_blocks(), qname, port)

    def forwards_to(self, address: str) -> list[ForwardBlock]:
        """Forward blocks that send queries to `address` (ip or ip:port)."""
        ip = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        return [b for b in self.forward_blocks() if any(t.split(":")[0] == ip for t in b.targets)]


def serving_block(blocks: list[ServerBlock], qname: str, port: int = 53) -> ServerBlock | None:
    """The server block CoreDNS picks for `qname` asked on `port`: the one with the longest zone it is in."""
    serving = [(len(b.serves(qname).strip(".")), b) for b in blocks if b.port == port and b.serves(qname)]
    return max(serving, key=lambda pair: pair[0])[1] if serving else None


def parse_server_blocks(corefile: str, source: str) -> list[ServerBlock]:
    """Every server block's zones and the directives at its top level."""
    blocks, zones, plugins, depth = [], (), [], 0
    for raw in corefile.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            zones, plugins = block_zones(line[:-1]), []
            port = block_port(line[:-1])
        elif depth == 1 and line != "}":
            plugins.append(line.split()[0].rstrip("{"))
        depth += line.count("{") - line.count("}")
        if depth == 0 and zones:
            blocks.append(ServerBlock(zones, tuple(plugins), source, port))
            zones = ()
    return blocks


def block_zones(keys: str) -> tuple[str, ...]:
    """`cluster.local:53 .:53` -> ("cluster.local", ".")."""
    return tuple(z.removeprefix("dns://").split(":")[0].rstrip(".").lower() or "." for z in keys.split())


def block_port(keys: str) -> int:
    """The port a server block listens on, from its first key (53 when none is given): `cluster.local:5353` -> 5353."""
    first = keys.split()[0].removeprefix("dns://") if keys.split() else ""
    port = first.partition(":")[2]
    return int(port) if port.isdigit() else 53


def parse_forwards(corefile: str, source: str) -> list[ForwardBlock]:
    """(zones, targets) of every `forward FROM TO...` with the zones of its server block."""
    blocks, zones, depth = [], (), 0
    for raw in corefile.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            zones = block_zones(line[:-1])
        match = re.match(r"^forward\s+(\S+)\s+([^{]+)", line)
        if match and depth == 1:
            targets = tuple(t.removeprefix("dns://") for t in match.group(2).split())
            blocks.append(ForwardBlock(zones if match.group(1) == "." else (match.group(1).rstrip("."),), targets, source))
        depth += line.count("{") - line.count("}")
    return blocks


def facts_from_topology(topology) -> ClusterFacts:
    """Facts a lab knows: its spec, pods, Services and policies."""
    from dnscorrelate.cluster.lab import files as lab_files
    from dnscorrelate.cluster.lab.topology import all_pods

    spec = topology.spec
    manifests = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in all_pods(spec)}
    facts = ClusterFacts(
        corefile=spec.corefile,
        custom_server_blocks=dict(spec.customServerBlocks),
        domain=topology.domain,
        cluster_dns_ip=topology.cluster_dns_ip,
        nodelocal_ip=topology.nodelocal_ip or "",
        resolv_conf_upstreams=(topology.upstream_ip,),
        policies=list(spec.policies),
    )
    for pod in topology.pods:
        manifest = manifests[pod.key]
        facts.pods[pod.ip] = manifest
        if pod.coredns_replica is not None:
            facts.coredns_pods[pod.ip] = pod.key
        resolv = lab_files.pod_resolv_conf(topology, pod, manifest)
        facts.search[pod.ip] = next((line.split()[1:] for line in resolv.splitlines() if line.startswith("search ")), [])
    for svc in topology.services:
        facts.services.setdefault(svc.namespace, []).append(svc.name)
    for ns in spec.namespaces:
        facts.namespace_labels[ns.metadata.name] = ns.labels
    return facts


def facts_from_files(corefile: str = "", manifests: list | None = None) -> ClusterFacts:
    """Facts from what a user can hand over offline: the Corefile and Kubernetes objects."""
    facts = ClusterFacts(corefile=corefile)
    for m in manifests or []:
        if m.kind == "Service":
            facts.services.setdefault(m.metadata.namespace, []).append(m.metadata.name)
        elif m.kind == "NetworkPolicy":
            facts.policies.append(m)
        elif m.kind == "Namespace":
            facts.namespace_labels[m.metadata.name] = m.labels
    return facts


# --- NetworkPolicy evaluation ------------------------------------------------------


def namespace_labels(facts: ClusterFacts, name: str) -> dict[str, str]:
    return {**facts.namespace_labels.get(name, {}), "kubernetes.io/metadata.name": name}


def peer_admits(facts: ClusterFacts, peer: NetworkPolicyPeer, policy: NetworkPolicy, other: Pod | None, other_ip: str) -> bool:
    if peer.ipBlock is not None:
        address = ipaddress.ip_address(other_ip)
        return address in ipaddress.ip_network(peer.ipBlock.cidr) and not any(
            address in ipaddress.ip_network(e) for e in peer.ipBlock.except_
        )
    if other is None:
        return False
    if peer.namespaceSelector is None:
        in_scope = other.metadata.namespace == policy.metadata.namespace
    else:
        in_scope = peer.namespaceSelector.matches(namespace_labels(facts, other.metadata.namespace))
    return in_scope and (peer.podSelector is None or peer.podSelector.matches(other.metadata.labels))


def port_admits(port: NetworkPolicyPort, target: Pod | None, proto: str, number: int) -> bool:
    if port.protocol != proto:
        return False
    if port.port is None:
        return True
    if isinstance(port.port, str) and not port.port.isdigit():
        resolved = target.named_port(port.port, proto) if target else None
        return resolved == number
    low = int(port.port)
    return low <= number <= (port.endPort or low)


def blocking_policies(facts: ClusterFacts, direction: str, subject_ip: str, other_ip: str, proto: str, port: int) -> list[NetworkPolicy]:
    """The policies that isolate the pod at `subject_ip` in `direction` when none of them allows
    traffic with the pod/address at `other_ip` on proto/port; [] when allowed or not isolated."""
    subject = facts.pods.get(subject_ip)
    if subject is None:
        return []
    isolating = [p for p in facts.policies if p.isolates(subject, direction)]
    other = facts.pods.get(other_ip)
    destination = other if direction == "Egress" else subject
    for policy in isolating:
        for rule in policy.rules(direction):
            peers_ok = not rule.peers or any(peer_admits(facts, peer, policy, other, other_ip) for peer in rule.peers)
            ports_ok = not rule.ports or any(port_admits(p, destination, proto.upper(), port) for p in rule.ports)
            if peers_ok and ports_ok:
                return []
    return isolating
