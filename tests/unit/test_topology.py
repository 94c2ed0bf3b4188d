"""From spec to concrete lab: placement, addressing, Service endpoints, cross-object checks."""

import pytest

from dnscorrelate.cluster.spec import SpecError
from dnscorrelate.cluster.lab.topology import build_topology

from .conftest import spec_with


def test_default_topology(topology):
    assert [(p.key, p.ip) for p in topology.pods] == [
        ("kube-system/coredns-0", "10.244.0.2"),
        ("kube-system/coredns-1", "10.244.0.3"),
        ("demo/mypod", "10.244.0.4"),
        ("demo/web-0", "10.244.0.5"),
        ("demo/web-1", "10.244.0.6"),
    ]
    assert all(ns.startswith("dnsc-t-") for ns in topology.all_netns())
    assert len(set(topology.all_netns())) == len(topology.all_netns())


def test_kube_dns_service_has_every_replica_as_endpoint(topology):
    kube_dns = next(s for s in topology.services if s.key == "kube-system/kube-dns")
    assert kube_dns.cluster_ip == "10.96.0.10"
    dns = next(p for p in kube_dns.ports if p.name == "dns")
    assert (dns.protocol, [(e.ip, e.port) for e in dns.endpoints]) == ("UDP", [("10.244.0.2", 53), ("10.244.0.3", 53)])


def test_named_target_port_resolves_on_each_pod(topology):
    web = next(s for s in topology.services if s.key == "demo/web")
    assert web.cluster_ip == "10.96.0.100"
    assert [(e.pod, e.port) for e in web.ports[0].endpoints] == [("demo/web-0", 8080), ("demo/web-1", 8080)]


def test_headless_service_has_no_cluster_ip(topology):
    headless = next(s for s in topology.services if s.key == "demo/web-headless")
    assert headless.cluster_ip is None and headless.selected_pods == ["demo/web-0", "demo/web-1"]


def test_pods_spread_over_nodes_unless_pinned():
    spec = spec_with(nodes=2, manifests=[{"kind": "Pod", "metadata": {"name": "pinned", "namespace": "demo"}, "spec": {"nodeName": "node-1"}}])
    topology = build_topology(spec, "t")
    nodes = {p.key: (p.node, p.ip) for p in topology.pods}
    assert nodes["kube-system/coredns-0"] == ("node-0", "10.244.0.2")
    assert nodes["kube-system/coredns-1"] == ("node-1", "10.244.1.2")
    assert nodes["demo/pinned"][0] == "node-1"
    assert [n.lan_ip for n in topology.nodes] == ["192.168.49.2", "192.168.49.3"]


@pytest.mark.parametrize(
    "manifest, reason",
    [
        ({"kind": "Pod", "metadata": {"name": "x", "namespace": "nowhere"}}, "namespace 'nowhere' is not declared"),
        ({"kind": "Pod", "metadata": {"name": "mypod", "namespace": "demo"}}, "Pod demo/mypod is declared 2 times"),
        ({"kind": "Pod", "metadata": {"name": "x", "namespace": "demo"}, "spec": {"nodeName": "node-7"}}, "spec.nodeName 'node-7'"),
        ({"kind": "Service", "metadata": {"name": "x", "namespace": "demo"}, "spec": {"clusterIP": "10.0.0.1"}}, "outside the service CIDR"),
        ({"kind": "Service", "metadata": {"name": "x", "namespace": "demo"}, "spec": {"type": "ExternalName"}}, "externalName is required"),
    ],
)
def test_what_an_api_server_would_reject(manifest, reason):
    with pytest.raises(SpecError, match=reason):
        build_topology(spec_with(manifests=[manifest]), "t")


@pytest.mark.parametrize("name", ["", "UPPER", "with-dash", "waytoolongname1"])
def test_lab_names_cannot_prefix_each_other(name):
    with pytest.raises(SpecError, match="lab name"):
        build_topology(spec_with(), name)


def test_service_types_a_cluster_has_and_the_lab_does_not_are_refused():
    node_port = {"kind": "Service", "metadata": {"name": "np", "namespace": "demo"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    with pytest.raises(SpecError, match="Service demo/np: spec.type NodePort is not supported by the lab"):
        build_topology(spec_with(manifests=[node_port]), "t")
