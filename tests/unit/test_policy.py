"""The one NetworkPolicy evaluator (cluster/policy.py) on both inputs it serves: the lab's YAML spec and
the JSON the official Kubernetes client gives (camelCase, nulls for unset fields, list items without `kind`)."""

import copy

import pytest
from pydantic import TypeAdapter

from dnscorrelate.cluster import policy
from dnscorrelate.cluster.facts import ClusterFacts, blocking_policies, facts_from_files
from dnscorrelate.cluster.lab.facts import facts_from_topology
from dnscorrelate.cluster.lab.topology import build_topology
from dnscorrelate.cluster.model import KubeObject, NetworkPolicy, Pod

from .conftest import ALLOW_DNS, DENY_EGRESS, spec_with

ALLOW_WEB_BY_NAME = {"kind": "NetworkPolicy", "metadata": {"name": "web-by-name", "namespace": "demo"},
                     "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{
                         "to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}}
UPSTREAM_EXCEPT = {"kind": "NetworkPolicy", "metadata": {"name": "no-upstream", "namespace": "kube-system"},
                   "spec": {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "policyTypes": ["Egress"], "egress": [{
                       "to": [{"ipBlock": {"cidr": "192.168.49.0/24", "except": ["192.168.49.1/32"]}}]}]}}

MYPOD, COREDNS_0, WEB_0, UPSTREAM = "10.244.0.4", "10.244.0.2", "10.244.0.5", "192.168.49.1"


def api_json(manifest: dict) -> dict:
    """`manifest` as the official client's JSON shows it: a list item (no kind), server-set metadata, and
    null for every optional field left unset."""
    item = copy.deepcopy(manifest)
    item.pop("kind")
    item["metadata"].update({"uid": "0b5c", "resourceVersion": "812", "creationTimestamp": "2026-11-23T18:00:00Z",
                             "labels": item["metadata"].get("labels"), "annotations": None, "managedFields": [{"manager": "kubectl"}]})
    spec = item["spec"]
    spec.setdefault("ingress", None)
    spec.setdefault("egress", None)
    spec["podSelector"].setdefault("matchExpressions", None)
    spec["podSelector"].setdefault("matchLabels", None)
    for rule in spec["egress"] or []:
        for peer in rule.get("to", []):
            for key in ("podSelector", "namespaceSelector", "ipBlock"):
                peer.setdefault(key, None)
        for port in rule.setdefault("ports", None) or []:
            port.setdefault("endPort", None)
            port.setdefault("protocol", "TCP")
    return item


def api_pod(name: str, namespace: str, labels: dict, ip: str, ports=None) -> dict:
    containers = [{"name": "c", "image": "registry.k8s.io/pause:3.10", "ports": ports, "resources": {}, "env": None}]
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": name, "ownerReferences": None},
            "spec": {"containers": containers, "nodeName": "kind-worker", "dnsPolicy": "ClusterFirst", "dnsConfig": None,
                     "hostname": None, "subdomain": None},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.3", "conditions": None}}


def api_objects(*policies: dict) -> list:
    """The lab's default pods, namespaces and `policies`, as a cluster's API would list them."""
    http = [{"name": "http", "containerPort": 8080, "protocol": "TCP", "hostPort": None}]
    pods = [api_pod("coredns-0", "kube-system", {"k8s-app": "kube-dns"}, COREDNS_0, [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
            api_pod("mypod", "demo", {"app": "client"}, MYPOD),
            api_pod("web-0", "demo", {"app": "web"}, WEB_0, http)]
    namespaces = [{"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}, "spec": {"finalizers": ["kubernetes"]},
                   "status": {"phase": "Active"}} for n in ("default", "kube-system", "demo")]
    items = [("Pod", p) for p in pods] + [("Namespace", n) for n in namespaces] + [("NetworkPolicy", api_json(p)) for p in policies]
    adapter = TypeAdapter(KubeObject)
    return [adapter.validate_python({**item, "kind": kind}) for kind, item in items]


def lab_facts(*policies: dict) -> ClusterFacts:
    return facts_from_topology(build_topology(spec_with(manifests=list(policies)), "t"))


def api_facts(*policies: dict) -> ClusterFacts:
    return facts_from_files("", api_objects(*policies))


@pytest.fixture(params=["lab", "api"])
def facts_of(request):
    return lab_facts if request.param == "lab" else api_facts


def refs(found: list[NetworkPolicy]) -> list[str]:
    return [p.ref for p in found]


def test_the_client_json_parses_into_the_same_policy_as_the_yaml():
    from_yaml = NetworkPolicy.model_validate(ALLOW_DNS)
    from_api = NetworkPolicy.model_validate(api_json(ALLOW_DNS))
    assert from_api.spec == from_yaml.spec
    assert from_api.spec.egress[0].peers[0].ipBlock is None and from_api.spec.egress[0].ports[0].endPort is None


def test_nulls_mean_absent_not_empty():
    item = api_json(DENY_EGRESS)
    parsed = NetworkPolicy.model_validate(item)
    assert item["spec"]["egress"] is None and parsed.spec.egress == []
    assert parsed.policy_types == {"Egress"} and parsed.metadata.labels == {}


def test_unselected_pods_are_not_isolated(facts_of):
    facts = facts_of(DENY_EGRESS)
    assert blocking_policies(facts, "Egress", COREDNS_0, UPSTREAM, "udp", 53) == []  # kube-system is not selected
    assert blocking_policies(facts, "Egress", "10.9.9.9", COREDNS_0, "udp", 53) == []  # not a pod


def test_deny_all_blocks_dns_and_names_the_policy(facts_of):
    assert refs(blocking_policies(facts_of(DENY_EGRESS), "Egress", MYPOD, COREDNS_0, "udp", 53)) == ["demo/deny-egress"]


def test_an_allow_rule_admits_its_peer_and_port_only(facts_of):
    facts = facts_of(DENY_EGRESS, ALLOW_DNS)
    assert blocking_policies(facts, "Egress", MYPOD, COREDNS_0, "udp", 53) == []
    assert blocking_policies(facts, "Egress", MYPOD, COREDNS_0, "tcp", 53) == []
    assert refs(blocking_policies(facts, "Egress", MYPOD, COREDNS_0, "udp", 5353)) == ["demo/deny-egress", "demo/allow-dns"]
    assert refs(blocking_policies(facts, "Egress", MYPOD, WEB_0, "udp", 53)) == ["demo/deny-egress", "demo/allow-dns"]


def test_a_named_port_resolves_on_the_destination_pod(facts_of):
    facts = facts_of(ALLOW_WEB_BY_NAME)
    assert blocking_policies(facts, "Egress", MYPOD, WEB_0, "tcp", 8080) == []
    assert refs(blocking_policies(facts, "Egress", MYPOD, WEB_0, "tcp", 80)) == ["demo/web-by-name"]
    assert refs(blocking_policies(facts, "Egress", MYPOD, COREDNS_0, "tcp", 8080)) == ["demo/web-by-name"]  # no such port there


def test_ip_block_except_holds_out_one_address(facts_of):
    facts = facts_of(UPSTREAM_EXCEPT)
    assert refs(blocking_policies(facts, "Egress", COREDNS_0, UPSTREAM, "udp", 53)) == ["kube-system/no-upstream"]
    assert blocking_policies(facts, "Egress", COREDNS_0, "192.168.49.7", "udp", 53) == []


def test_ingress_isolation_checks_the_source_namespace_labels():
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "dns-from-team", "namespace": "kube-system"},
            "spec": {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}]}]}}
    facts = lab_facts(deny)
    assert refs(blocking_policies(facts, "Ingress", COREDNS_0, MYPOD, "udp", 53)) == ["kube-system/dns-from-team"]
    mypod = facts.pods[MYPOD]
    peer = facts.policies[0].spec.ingress[0].peers[0]
    assert not policy.peer_selects(peer, facts.policies[0], mypod, facts.model.namespace_labels)
    assert policy.peer_selects(peer, facts.policies[0], mypod, lambda ns: {"team": "a"})  # a labelled namespace is admitted


def test_port_range_covers_end_port_and_any_port():
    from dnscorrelate.cluster.model import NetworkPolicyPort

    assert policy.port_range(NetworkPolicyPort(protocol="UDP", port=1000, endPort=2000), None) == range(1000, 2001)
    assert policy.port_range(NetworkPolicyPort(protocol="UDP"), None) == policy.ANY_PORT
    assert policy.port_range(NetworkPolicyPort(port="http"), None) is None


def test_policies_selecting_a_pod_by_direction():
    facts = api_facts(DENY_EGRESS, ALLOW_WEB_BY_NAME)
    mypod, web = facts.model.pod_by_ip(MYPOD), facts.model.pod_by_ip(WEB_0)
    assert [p.metadata.name for p in facts.policies_selecting(mypod, "Egress")] == ["deny-egress", "web-by-name"]
    assert [p.metadata.name for p in facts.policies_selecting(web)] == ["deny-egress"]
    assert facts.policies_selecting(mypod, "Ingress") == []


def test_isolation_follows_policy_type_defaulting():
    ingress_only = NetworkPolicy.model_validate({"metadata": {"name": "i", "namespace": "demo"}, "spec": {"podSelector": {}}})
    pod = Pod.model_validate({"metadata": {"name": "p", "namespace": "demo"}})
    elsewhere = Pod.model_validate({"metadata": {"name": "p", "namespace": "other"}})
    assert policy.isolates(ingress_only, pod, "Ingress") and not policy.isolates(ingress_only, pod, "Egress")
    assert not policy.isolates(ingress_only, elsewhere, "Ingress")


def test_network_policy_types_default_as_in_kubernetes():
    ingress_only = NetworkPolicy.model_validate({"kind": "NetworkPolicy", "metadata": {"name": "a"}, "spec": {}})
    with_egress = NetworkPolicy.model_validate(
        {"kind": "NetworkPolicy", "metadata": {"name": "b"}, "spec": {"egress": [{}]}}
    )
    assert ingress_only.policy_types == {"Ingress"}
    assert with_egress.policy_types == {"Ingress", "Egress"}
