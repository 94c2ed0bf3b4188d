"""Cluster facts: what the diagnoser may know besides the evidence, to name a cause, and what the HTML report draws.

The cluster's objects (a `ClusterModel`: Pods, Services, EndpointSlices,
NetworkPolicies, Namespaces, Nodes), the Corefile, and the DNS settings the
pods see (cluster domain, DNS Service IP, search lists). A backend fills them
(the lab from its topology, the kube backend from the API), or a user hands
files over (`--corefile`, `--manifests`); never from the fault a scenario
injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnscorrelate.cluster import policy
from dnscorrelate.cluster.corefile import (  # noqa: F401 (serving_block is re-exported for the diagnoser)
    ForwardBlock, ServerBlock, corefile_from_config_maps, parse_forwards, parse_server_blocks, serving_block,
)
from dnscorrelate.cluster.model import ClusterModel, NetworkPolicy, Pod


@dataclass
class ClusterFacts:
    cluster: str = ""  # its name as the user calls it: the kubeconfig context, `lab NAME`; "" when unknown
    corefile: str = ""
    custom_server_blocks: dict[str, str] = field(default_factory=dict)
    domain: str = "cluster.local"
    cluster_dns_ip: str = ""
    nodelocal_ip: str = ""
    resolv_conf_upstreams: tuple[str, ...] = ()  # what `forward . /etc/resolv.conf` means on CoreDNS's pods
    model: ClusterModel = field(default_factory=ClusterModel)
    coredns_pods: dict[str, str] = field(default_factory=dict)  # ip -> namespace/name of each DNS server pod
    search: dict[str, list[str]] = field(default_factory=dict)  # pod ip -> search list

    @property
    def pods(self) -> dict[str, Pod]:
        """ip -> pod, for pods with an address."""
        return self.model.pods_by_ip

    @property
    def services(self) -> dict[str, list[str]]:
        """namespace -> its Services' names."""
        names: dict[str, list[str]] = {}
        for svc in self.model.services:
            names.setdefault(svc.metadata.namespace, []).append(svc.metadata.name)
        return names

    @property
    def policies(self) -> list[NetworkPolicy]:
        return self.model.policies

    def policies_selecting(self, pod: Pod, direction: str | None = None) -> list[NetworkPolicy]:
        """The policies that isolate `pod` in `direction` (in either direction when None)."""
        directions = ("Ingress", "Egress") if direction is None else (direction,)
        return [p for p in self.policies if any(policy.isolates(p, pod, d) for d in directions)]

    def pod_key(self, ip: str) -> str:
        pod = self.pods.get(ip)
        return pod.key if pod else ip

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


def pod_search_list(pod: Pod, domain: str) -> list[str]:
    """The search domains the kubelet writes into `pod`'s resolv.conf: `<ns>.svc.<domain> svc.<domain> <domain>`
    unless its dnsPolicy is Default (the node's, none on the lab's and kind's nodes) or None, then dnsConfig's."""
    cluster = [] if pod.spec.dnsPolicy in ("Default", "None") else [
        f"{pod.metadata.namespace}.svc.{domain}", f"svc.{domain}", domain]
    return cluster + (pod.spec.dnsConfig.searches if pod.spec.dnsConfig else [])


def facts_from_files(corefile: str = "", manifests: list | None = None) -> ClusterFacts:
    """Facts from what a user can hand over offline: the Corefile and Kubernetes objects. The `coredns` and
    `coredns-custom` ConfigMaps among the objects stand in for a missing Corefile."""
    model = ClusterModel.from_objects(manifests or [])
    from_maps, custom = corefile_from_config_maps(model.config_maps)
    return ClusterFacts(corefile=corefile or from_maps, custom_server_blocks=custom, model=model)


def blocking_policies(facts: ClusterFacts, direction: str, subject_ip: str, other_ip: str, proto: str, port: int) -> list[NetworkPolicy]:
    """The policies that isolate the pod at `subject_ip` in `direction` when none of them allows
    traffic with the pod/address at `other_ip` on proto/port; [] when allowed, not isolated or not a known pod."""
    subject = facts.pods.get(subject_ip)
    if subject is None:
        return []
    return policy.blocking_policies(facts.policies, direction, subject, facts.pods.get(other_ip), other_ip, proto, port,
                                    facts.model.namespace_labels)


SAVED_KINDS = ("namespaces", "pods", "services", "policies")  # what `correlate --manifests` reads back (cluster/spec.py)


def manifests_yaml(facts: ClusterFacts) -> str:
    """The facts' Namespaces, Pods, Services and NetworkPolicies as one `kind: List` YAML, as `correlate --manifests`
    reads them: saved beside a capture directory so that it is correlated with the names it was taken with."""
    import yaml

    items = [o.model_dump(mode="json", by_alias=True, exclude_none=True) for kind in SAVED_KINDS for o in getattr(facts.model, kind)]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)
