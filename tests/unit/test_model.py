"""The cluster model: API-shaped objects parse, the lookups answer, and the lab fills the model as a cluster would."""

import pytest
from pydantic import TypeAdapter

from dnscorrelate.cluster.corefile import corefile_from_config_maps
from dnscorrelate.cluster.facts import facts_from_files
from dnscorrelate.cluster.lab.facts import lab_model
from dnscorrelate.cluster.lab.topology import build_topology
from dnscorrelate.cluster.model import ClusterModel, KubeObject

from .conftest import spec_with

OBJECTS = TypeAdapter(list[KubeObject])

KIND_NODE = {"kind": "Node", "metadata": {"name": "kind-worker", "labels": {"kubernetes.io/os": "linux"}},
             "spec": {"podCIDR": None, "podCIDRs": ["10.244.1.0/24"], "providerID": "kind://docker/kind/kind-worker"},
             "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}, {"type": "Hostname", "address": "kind-worker"}]}}
KUBE_DNS = {"kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53, "nodePort": None}],
                     "externalName": None, "sessionAffinity": "None"}}
DNS_SLICE = {"kind": "EndpointSlice", "addressType": "IPv4",
             "metadata": {"name": "kube-dns-x7k2p", "namespace": "kube-system", "labels": {"kubernetes.io/service-name": "kube-dns"}},
             "endpoints": [{"addresses": ["10.244.1.3"], "conditions": {"ready": True, "serving": True, "terminating": False},
                            "nodeName": "kind-worker", "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-7db6d8ff4d-abcde"},
                            "hostname": None, "zone": None}],
             "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "appProtocol": None}]}
COREDNS_POD = {"kind": "Pod", "metadata": {"name": "coredns-7db6d8ff4d-abcde", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
               "spec": {"nodeName": "kind-worker", "dnsPolicy": "Default", "containers": [{"name": "coredns", "ports": None}]},
               "status": {"podIP": "10.244.1.3", "podIPs": [{"ip": "10.244.1.3"}], "hostIP": "172.18.0.3"}}
STRAY_POD = {"kind": "Pod", "metadata": {"name": "debug", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
             "status": {"podIP": None, "phase": "Pending"}}
COREFILE_MAP = {"kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n"}}
CUSTOM_MAP = {"kind": "ConfigMap", "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
              "data": {"corp.server": "corp.test:53 {\n  forward . 10.0.0.53\n}\n", "log.override": "log"}}


def api_model() -> ClusterModel:
    return ClusterModel.from_objects(OBJECTS.validate_python([KIND_NODE, KUBE_DNS, DNS_SLICE, COREDNS_POD, STRAY_POD, COREFILE_MAP, CUSTOM_MAP]))


def test_a_node_has_its_internal_ip_and_pod_cidr():
    node = api_model().nodes[0]
    assert (node.internal_ip, node.pod_cidr) == ("172.18.0.3", "10.244.1.0/24")


def test_pods_are_found_by_ip_and_pods_without_one_are_not():
    model = api_model()
    assert model.pod_by_ip("10.244.1.3").key == "kube-system/coredns-7db6d8ff4d-abcde"
    assert len(model.pods) == 2 and list(model.pods_by_ip) == ["10.244.1.3"]


def test_a_service_s_pods_come_from_its_endpoint_slices_when_it_has_some():
    model = api_model()
    kube_dns = model.services_in("kube-system")[0]
    assert [p.metadata.name for p in model.service_pods(kube_dns)] == ["coredns-7db6d8ff4d-abcde"]  # not the stray selected pod
    without_slices = ClusterModel(pods=model.pods, services=model.services)
    assert [p.metadata.name for p in without_slices.service_pods(kube_dns)] == ["coredns-7db6d8ff4d-abcde", "debug"]


def test_the_corefile_comes_from_the_coredns_config_maps():
    corefile, custom = corefile_from_config_maps(api_model().config_maps)
    assert corefile.startswith(".:53 {") and list(custom) == ["corp.server"]
    facts = facts_from_files("", list(OBJECTS.validate_python([COREFILE_MAP, CUSTOM_MAP])))
    assert [b.zones for b in facts.forward_blocks()] == [(".",), ("corp.test",)]


def test_the_lab_fills_the_model_as_a_cluster_would():
    topology = build_topology(spec_with(nodes=2), "t")
    model = lab_model(topology)
    assert [(n.metadata.name, n.internal_ip, n.pod_cidr) for n in model.nodes] == [
        ("node-0", "192.168.49.2", "10.244.0.0/24"), ("node-1", "192.168.49.3", "10.244.1.0/24")]
    for placed in topology.pods:
        pod = model.pod_by_ip(placed.ip)
        assert (pod.key, pod.spec.nodeName, pod.status.hostIP) == (placed.key, placed.node, topology.node(placed.node).lan_ip)
    web = next(s for s in model.services if s.key == "demo/web")
    assert web.spec.clusterIP == topology.services[[s.key for s in topology.services].index("demo/web")].cluster_ip


def test_lab_endpoint_slices_list_each_service_s_endpoints():
    topology = build_topology(spec_with(), "t")
    model = lab_model(topology)
    for svc in topology.services:
        service = next(s for s in model.services if s.key == svc.key)
        slices = model.endpoint_slices_of(service)
        from_slices = sorted((ep.addresses[0], port.port, port.protocol) for s in slices for ep in s.endpoints for port in s.ports)
        from_topology = sorted((ep.ip, ep.port, port.protocol) for port in svc.ports for ep in port.endpoints)
        assert from_slices == from_topology, svc.key
        assert [p.key for p in model.service_pods(service)] == svc.selected_pods


def test_a_session_names_each_log_by_its_source_s_replica(tmp_path):
    """A backend that streams pod logs names replicas by pod, whatever the file is called."""
    from dnscorrelate.cluster.backend import LogSource
    from dnscorrelate.live.session import NamespacesBackend, Session
    from dnscorrelate.errors import LogFormatError

    log = tmp_path / "stream-1.log"
    log.write_text('2026-11-23T18:00:00.000000001Z [INFO] 10.244.0.4:40000 - 4242 "A IN web.demo.svc.cluster.local. udp 60 false 1232" '
                   'NOERROR qr,aa,rd 110 0.000123s\n')

    class Streaming(NamespacesBackend):
        def __init__(self, sources):
            super().__init__([])
            self.sources = sources

        def log_sources(self):
            return self.sources

    logs = Session(Streaming([LogSource("coredns-7db6d8ff4d-abcde", str(log))])).logs()
    assert list(logs.records["replica"].astype(str)) == ["coredns-7db6d8ff4d-abcde"]
    assert list(logs.records["id"]) == [4242]
    missing = Session(Streaming([LogSource("coredns-0", str(tmp_path / "gone.log"))]))
    with pytest.raises(LogFormatError, match="gone.log: cannot read"):
        missing.logs()


def test_search_lists_follow_dns_policy_and_dns_config():
    from dnscorrelate.cluster.facts import pod_search_list
    from dnscorrelate.cluster.model import Pod

    def pod(**spec):
        return Pod.model_validate({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec})

    assert pod_search_list(pod(), "cluster.local") == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert pod_search_list(pod(dnsPolicy="Default"), "cluster.local") == []
    assert pod_search_list(pod(dnsPolicy="None", dnsConfig={"searches": ["corp.test"], "nameservers": None}), "k8s.test") == ["corp.test"]
    assert pod_search_list(pod(dnsConfig={"searches": ["corp.test"]}), "k8s.test")[-2:] == ["k8s.test", "corp.test"]
