"""`cluster up --cni cilium`: Cilium (built here from its Go module) as the pod network, enforcing
NetworkPolicy itself; DNS through CoreDNS, a policy's drop and its removal, and trace's hops."""

import time

import pytest
from kubernetes import client as k8s

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.model import NetworkPolicy
from tests.cluster.tracing import started_trace

from .test_kind import pod_exec

pytestmark = pytest.mark.cluster
DIG = ["dig", "+short", "+tries=1", "+timeout=2", "example.com"]


def test_cilium_runs_on_every_node_and_pods_resolve_through_coredns(cilium_cluster):
    core = k8s.CoreV1Api(kind.api_client(cilium_cluster))
    nodes = {n.metadata.name for n in core.list_node().items}
    agents = core.list_namespaced_pod("kube-system", label_selector="k8s-app=cilium").items
    assert {p.spec.node_name for p in agents} == nodes and len(nodes) == 2
    assert all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions) for p in agents)
    assert not core.list_namespaced_pod("kube-system", label_selector="app=dnsc-policy").items  # Cilium enforces policy
    assert not core.list_namespaced_pod("kube-system", label_selector="app=dnsc-flannel").items
    web = core.read_namespaced_service("web", "demo").spec.cluster_ip
    assert web in pod_exec(cilium_cluster, "demo", "mypod", ["getent", "ahosts", "web.demo.svc.cluster.local"])
    assert pod_exec(cilium_cluster, "demo", "mypod", DIG).split() == ["192.0.2.10"]


def test_a_networkpolicy_drops_dns_once_cilium_says_it_is_enforced_and_deleting_it_restores_it(cilium_cluster):
    """The kube backend's faults wait for Cilium's own signal (every endpoint realized the new policy
    revision): the first lookup after apply() returns is dropped, the first after delete() answered."""
    from dnscorrelate.cluster.kube.faults import KubeFaults

    faults = KubeFaults(kind.api_client(cilium_cluster))
    deny = NetworkPolicy.model_validate({
        "kind": "NetworkPolicy", "metadata": {"name": "deny-egress", "namespace": "demo"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}})
    applied_s = faults.apply([deny])
    try:
        out = pod_exec(cilium_cluster, "demo", "mypod", DIG)
        assert "timed out" in out and "192.0.2.10" not in out, out
    finally:
        deleted_s = faults.delete("NetworkPolicy", "demo", "deny-egress")
    assert pod_exec(cilium_cluster, "demo", "mypod", DIG).split() == ["192.0.2.10"]
    assert applied_s < 30 and deleted_s < 30
    print(f"policy enforced {applied_s:.2f} s after create, lifted {deleted_s:.2f} s after delete")


def test_trace_shows_every_hop_through_ciliums_service_translation(cilium_cluster):
    """Cilium translates the kube-dns VIP in BPF at the pod's veth (kube-proxy's rules see none of it) and
    crosses nodes over its VXLAN device; the node's capture sees the VIP as the packet arrives and the
    endpoint as it leaves, so trace stitches pod -> DNAT -> CoreDNS -> upstream as on flannel."""
    import json
    import subprocess
    import sys
    import uuid

    trace = started_trace(["pod/mypod", "-n", "demo", "--context", cilium_cluster.context, "--kubeconfig", str(cilium_cluster.kubeconfig),
                           "--duration", "20", "-o", "json"])
    names = [f"trace-{uuid.uuid4().hex[:8]}.example.org" for _ in range(4)]  # spread over both replicas
    for name in names:
        pod_exec(cilium_cluster, "demo", "mypod", ["dig", "+short", "+tries=1", "+timeout=2", name])
    out, err = trace.communicate(timeout=60)
    assert trace.returncode == 0, err
    records = {r["qname"]: r for r in map(json.loads, out.splitlines())}
    for name in names:
        record = records[name + "."]
        roles = [h["role"] for h in record["hops"]]
        assert roles[0] == "pod" and roles[-1] == "pod"
        assert {"node", "coredns", "upstream"} <= set(roles)
        assert record["dnat"]["to"].endswith(":53") and record["hops"][0]["dst_ip"] == "10.96.0.10"
        assert record["served_from"] == "upstream" and record["log"] is not None
        assert set(record["findings"]) <= {"ok"}
