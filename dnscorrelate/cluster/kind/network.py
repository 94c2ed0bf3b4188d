"""The kind cluster's pod network: what kindnet does, without its image.

Each node gets a CNI config for the reference `ptp` and `host-local` plugins (Debian's
containernetworking-plugins, in the node image) over its own podCIDR, a route to every other
node's podCIDR through that node, and a masquerade for traffic leaving the pod network (so the
upstream resolver on the Docker network can answer CoreDNS), and a guard: pods' traffic to anything
but the pod network, the Services and the cluster's own Docker network is dropped at the node, so a
Corefile or a scenario naming some other address never sends a packet off this machine.
NetworkPolicies are enforced by `policy_agent`, not here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"
CNI_CONFIG = "/etc/cni/net.d/10-dnscorrelate.conflist"
NAT_TABLE = "dnsc-podnet"


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    pod_cidr: str


def cni_config(node: Node) -> str:
    """The node's CNI config list: a veth per pod, addresses from the node's podCIDR."""
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "dnscorrelate",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "mtu": 1500,
                "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
                         "ranges": [[{"subnet": node.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def masquerade_rules(docker_subnet: str) -> str:
    """nftables: pods' traffic to the cluster's Docker network leaves with the node's address; to anything
    outside the pod network, the Services and that Docker network, it is dropped."""
    inside = f"{{ {POD_SUBNET}, {SERVICE_SUBNET}, {docker_subnet} }}"
    return (
        f"table ip {NAT_TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {POD_SUBNET} ip daddr != {POD_SUBNET} masquerade\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        f"    ip saddr {POD_SUBNET} ip daddr != {inside} counter drop comment \"off this machine\"\n"
        "  }\n"
        "}\n"
    )


def node_script(node: Node, peers: list[Node], docker_subnet: str) -> str:
    """A shell script that sets up `node`'s pod network; idempotent."""
    routes = "\n".join(f"ip route replace {p.pod_cidr} via {p.ip}" for p in peers)
    return "\n".join([
        "set -e",
        "mkdir -p /etc/cni/net.d",
        f"cat > {CNI_CONFIG}.tmp <<'EOF'\n{cni_config(node)}\nEOF",
        f"mv {CNI_CONFIG}.tmp {CNI_CONFIG}",
        routes,
        f"nft delete table ip {NAT_TABLE} 2>/dev/null || true",
        f"nft -f - <<'EOF'\n{masquerade_rules(docker_subnet)}EOF",
    ]) + "\n"
