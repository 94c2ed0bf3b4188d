"""The nftables ruleset of one lab node: kube-proxy's Services and the NetworkPolicies.

One table per node namespace, named `dnsc-<lab>` (the lab prefix and name), applied atomically with
`nft -f` (a re-apply replaces it whole). It holds:

- Services, as kube-proxy's nftables mode does: a verdict map from
  ClusterIP.proto.port to a per-service chain that picks an endpoint with
  `numgen random` and DNATs to it. A Service with no endpoints is rejected.
- Masquerade for pod traffic leaving the pod network (to the upstream).
- NetworkPolicies, as `cluster/nft.py` writes them (shared with the kind cluster's
  policy agent).
"""

from __future__ import annotations

from dnscorrelate.cluster.lab.facts import lab_model
from dnscorrelate.cluster.lab.topology import POD_CIDR, PREFIX, NodeInfo, ServiceInfo, Topology
from dnscorrelate.cluster.nft import block, comment, filter_chains, policy_rules, replace_table


def table_name(lab: str) -> str:
    return f"{PREFIX}{lab}"


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


# --- The whole table -------------------------------------------------------


def ruleset(topology: Topology, node: NodeInfo) -> str:
    """The nft script that (re)creates this node's table."""
    entries, svc_chains, rejects = service_chains(topology.services)
    forward, input_, policy_chains = policy_rules(lab_model(topology), node.name)
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
        + filter_chains(forward, input_)
        + policy_chains
    )
    return replace_table(table_name(topology.lab), body)
