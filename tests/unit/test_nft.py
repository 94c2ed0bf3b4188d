"""NetworkPolicies and Services compiled to nftables, checked on the rendered text."""

import re

from dnscorrelate.cluster.lab import nft
from dnscorrelate.cluster.lab.topology import build_topology

from .conftest import ALLOW_DNS, DENY_EGRESS, spec_with

def render(*manifests, nodes=1, node=0):
    topology = build_topology(spec_with(nodes=nodes, manifests=list(manifests)), "t")
    return nft.ruleset(topology, topology.nodes[node])


def chain(ruleset, name):
    match = re.search(rf"  chain {re.escape(name)} {{\n(.*?)\n  }}", ruleset, flags=re.S)
    return [line.strip() for line in match.group(1).splitlines()] if match else None


def test_without_policies_nothing_is_isolated():
    ruleset = render()
    assert "egress-" not in ruleset and "ingress-" not in ruleset
    assert chain(ruleset, "forward") == ["type filter hook forward priority filter; policy accept;", "ct state established,related accept"]


def test_services_dnat_randomly_to_each_endpoint():
    ruleset = render()
    assert "10.96.0.10 . udp . 53 : goto svc-1-0" in ruleset
    assert chain(ruleset, "svc-1-0")[0].startswith("numgen random mod 2 vmap { 0 : goto svc-1-0-ep0, 1 : goto svc-1-0-ep1 }")
    assert chain(ruleset, "svc-1-0-ep1") == ['meta l4proto udp dnat to 10.244.0.3:53 comment "kube-system/coredns-1"']


def test_a_service_without_endpoints_is_rejected():
    assert "ip daddr . meta l4proto . th dport { 10.96.0.1 . tcp . 443 } reject" in render()


def test_deny_all_egress_leaves_only_the_drop():
    ruleset = render(DENY_EGRESS)
    for ip in ("10.244.0.4", "10.244.0.5", "10.244.0.6"):  # every pod in demo
        rules = chain(ruleset, f"egress-{ip.replace('.', '-')}")
        assert len(rules) == 1 and rules[0].startswith("counter drop") and "demo/deny-egress" in rules[0]
    assert chain(ruleset, "egress-10-244-0-2") is None  # kube-system is not selected
    assert "ip saddr vmap { 10.244.0.4 : jump egress-10-244-0-4" in ruleset


def test_allow_dns_returns_for_coredns_pods_on_udp_and_tcp_53():
    rules = chain(render(DENY_EGRESS, ALLOW_DNS), "egress-10-244-0-4")
    assert rules[:2] == [
        'ip daddr { 10.244.0.2, 10.244.0.3 } meta l4proto udp th dport 53 counter return comment "demo/allow-dns egress[0]"',
        'ip daddr { 10.244.0.2, 10.244.0.3 } meta l4proto tcp th dport 53 counter return comment "demo/allow-dns egress[0]"',
    ]
    assert rules[-1].startswith("counter drop") and "demo/deny-egress, demo/allow-dns" in rules[-1]


def test_ingress_to_coredns_is_policed_after_dnat():
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "dns-ingress", "namespace": "kube-system"},
            "spec": {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "none"}}}]}]}}
    ruleset = render(deny)
    assert "ip daddr vmap { 10.244.0.2 : jump ingress-10-244-0-2, 10.244.0.3 : jump ingress-10-244-0-3 }" in ruleset
    assert chain(ruleset, "ingress-10-244-0-2")[0].startswith("counter drop")  # the selector matches no namespace


def test_ip_block_with_except_and_port_range():
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "cidr", "namespace": "demo"},
              "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{
                  "to": [{"ipBlock": {"cidr": "192.168.49.0/24", "except": ["192.168.49.1/32"]}}],
                  "ports": [{"protocol": "UDP", "port": 1000, "endPort": 2000}]}]}}
    rules = chain(render(policy), "egress-10-244-0-4")
    assert rules[0].startswith("ip daddr 192.168.49.0/24 ip daddr != 192.168.49.1/32 meta l4proto udp th dport 1000-2000 counter return")


def test_named_egress_port_resolves_on_each_destination_pod():
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "demo"},
              "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{
                  "to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}}
    rules = chain(render(policy), "egress-10-244-0-4")
    assert rules[0].startswith("ip daddr 10.244.0.5 meta l4proto tcp th dport 8080 counter return")
    assert rules[1].startswith("ip daddr 10.244.0.6 meta l4proto tcp th dport 8080 counter return")


def test_an_empty_rule_allows_everything():
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "all", "namespace": "demo"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    assert chain(render(policy), "egress-10-244-0-4")[0] == 'counter return comment "demo/all egress[0]"'


def test_each_node_polices_only_its_own_pods():
    on_node_1 = render(DENY_EGRESS, nodes=2, node=1)
    on_node_0 = render(DENY_EGRESS, nodes=2, node=0)
    topology = build_topology(spec_with(nodes=2), "t")
    mypod = topology.pod("demo/mypod")
    local, remote = (on_node_0, on_node_1) if mypod.node == "node-0" else (on_node_1, on_node_0)
    assert f"egress-{mypod.ip.replace('.', '-')}" in local and f"egress-{mypod.ip.replace('.', '-')}" not in remote
