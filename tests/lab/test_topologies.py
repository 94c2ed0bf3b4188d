"""The lab's options: pods across two nodes, and NodeLocal DNSCache."""

import re

from dnscorrelate.cluster.lab import logs
from dnscorrelate.cluster.spec import load_spec, merge, validate, Source

from .conftest import dig, in_pod


def spec(**fields):
    return merge(load_spec(), validate(fields, Source("test", None)))


def test_two_nodes_route_dns_across_the_node_network(fresh_lab):
    lab = fresh_lab(spec(nodes=2))
    replicas = {p.node for p in lab.topology.coredns_pods}
    assert replicas == {"node-0", "node-1"}
    for _ in range(12):  # random DNAT picks the remote replica too
        assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]
    clients = {line.split()[3].rsplit(":", 1)[0] for line in logs.merged(lab, "coredns") if '"A IN example.com.' in line}
    assert clients == {lab.pod("mypod", "demo").ip}  # no masquerade between pods, across nodes too


def test_node_local_dns_answers_and_forwards_the_cluster_domain_over_tcp(fresh_lab):
    lab = fresh_lab(spec(nodeLocalDNS=True))
    assert "nameserver 169.254.20.10" in in_pod(lab, "mypod", "cat", "/etc/resolv.conf").stdout
    assert dig(lab, "mypod", "web.demo.svc.cluster.local") == ["10.96.0.100"]
    assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]
    local = [l for l in logs.merged(lab, "nodelocal") if "[INFO] 10.244.0.4:" in l]
    assert any('"A IN web.demo.svc.cluster.local. udp' in l for l in local)
    upstream_of_cache = [l for l in logs.merged(lab, "coredns") if '"A IN web.demo.svc.cluster.local. tcp' in l]
    assert upstream_of_cache and all(re.search(r"\[INFO\] 10\.244\.0\.1:\d+ ", l) for l in upstream_of_cache)
