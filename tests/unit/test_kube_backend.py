"""The Kubernetes backend's facts, from objects as the API returns them (no cluster needed)."""

from dnscorrelate.cli import log_plugin_warnings
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.kube.backend import facts_from_model
from dnscorrelate.cluster.model import ClusterModel, Pod, Service


def api_pod(namespace, name, ip, labels=None, dns_policy="ClusterFirst"):
    """A pod as `ApiClient().sanitize_for_serialization` gives it: camelCase, nulls, no kind."""
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": None}], "dnsPolicy": dns_policy, "nodeName": "n1"},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}] if ip else None, "phase": "Running" if ip else "Pending"},
    })


def test_facts_name_the_dns_service_the_dns_pods_and_each_pods_search_list():
    dns = Service.model_validate({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                                  "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}})
    model = ClusterModel.from_objects([
        api_pod("kube-system", "coredns-abc-1", "10.244.0.2", {"k8s-app": "kube-dns"}),
        api_pod("demo", "mypod", "10.244.1.5"),
        api_pod("demo", "hostish", "10.244.1.6", dns_policy="Default"),
        api_pod("demo", "pending", None),
        dns,
    ])
    facts = facts_from_model(model, ".:53 {\n log\n}\n", {})
    assert facts.cluster_dns_ip == "10.96.0.10"
    assert facts.coredns_pods == {"10.244.0.2": "kube-system/coredns-abc-1"}
    assert facts.search["10.244.1.5"] == ["demo.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert facts.search["10.244.1.6"] == []  # dnsPolicy Default: the node's resolv.conf, no cluster search list
    assert "pending" not in {p.metadata.name for p in facts.pods.values()}


def test_a_corefile_without_log_is_named_with_what_to_do():
    [warning] = log_plugin_warnings(ClusterFacts(corefile=".:53 {\n    errors\n    forward . 10.0.0.1\n}\n"))
    assert "no `log` plugin" in warning and "edit configmap coredns" in warning
    assert log_plugin_warnings(ClusterFacts(corefile=".:53 {\n    errors\n    log\n}\n")) == []
    assert log_plugin_warnings(ClusterFacts()) == []  # no Corefile known: nothing to say
