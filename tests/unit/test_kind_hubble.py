"""`cluster up --hubble`'s visibility policy (kind/README.md, "Hubble"): what the default selects and
allows, and the user's own file refused with the file, the document and the field when Hubble would
see no DNS through it."""

import pytest

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.kind.network import DNS_VISIBILITY_POLICY, has_dns_rule, visibility_policies
from dnscorrelate.errors import ClusterError


def test_the_default_sends_every_pods_dns_to_kube_dns_through_the_proxy_without_default_deny():
    [policy] = visibility_policies("default")
    spec = policy["spec"]
    assert policy["kind"] == "CiliumClusterwideNetworkPolicy" and policy["metadata"]["name"] == DNS_VISIBILITY_POLICY
    assert spec["endpointSelector"] == {}  # every pod
    assert spec["enableDefaultDeny"] == {"egress": False, "ingress": False}  # selecting a pod changes nothing else
    assert "ingress" not in spec
    [rule] = spec["egress"]
    assert rule["toEndpoints"] == [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}]
    [port] = rule["toPorts"]
    assert port["ports"] == [{"port": "53", "protocol": "ANY"}]  # UDP and TCP
    assert port["rules"] == {"dns": [{"matchPattern": "*"}]}


def test_none_applies_nothing():
    assert visibility_policies("none") == []


def test_a_users_file_of_cilium_policies_is_taken_as_written(tmp_path):
    path = tmp_path / "visibility.yaml"
    path.write_text("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: demo-dns, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toEndpoints: [{matchLabels: {k8s:k8s-app: kube-dns}}]
      toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchName: example.com}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-l4, namespace: demo}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoints: [{}]}]
""")
    policies = visibility_policies(str(path))
    assert [p["metadata"]["name"] for p in policies] == ["demo-dns", "web-l4"]
    assert [has_dns_rule(p) for p in policies] == [True, False]


@pytest.mark.parametrize("text, message", [
    ("kind: NetworkPolicy\nmetadata: {name: x}\n", "document 1: kind: 'NetworkPolicy' is not one of CiliumNetworkPolicy"),
    ("kind: CiliumNetworkPolicy\nmetadata: {name: x}\n---\nkind: CiliumNetworkPolicy\nspec: {}\n", "document 2: metadata.name: missing"),
    ("kind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {egress: [{toPorts: [{ports: [{port: '53'}]}]}]}\n",
     "no policy has a toPorts rules.dns entry"),
    ("kind: [unclosed\n", "not YAML"),
])
def test_a_file_hubble_would_see_no_dns_through_is_refused_naming_where(tmp_path, text, message):
    path = tmp_path / "visibility.yaml"
    path.write_text(text)
    with pytest.raises(ClusterError, match=str(path)) as err:
        visibility_policies(str(path))
    assert message in str(err.value)


def test_a_missing_file_is_named():
    with pytest.raises(ClusterError, match="--hubble-policy /nonexistent/v.yaml: No such file"):
        visibility_policies("/nonexistent/v.yaml")


def test_hubble_on_flannel_is_refused_before_anything_is_made():
    with pytest.raises(ClusterError, match="--hubble needs --cni cilium"):
        kind.up("never", cni="flannel", hubble=True)


def test_run_takes_a_cni_only_for_kind():
    from click.testing import CliRunner

    from dnscorrelate.cli import main

    result = CliRunner().invoke(main, ["run", "--cni", "cilium", "scenarios/healthy.yaml"])
    assert result.exit_code == 2 and "--cni goes with --backend kind" in result.output


def test_trace_hubble_on_a_lab_says_where_hubble_runs():
    from dnscorrelate.cluster.lab.backend import LabBackend
    from dnscorrelate.errors import CaptureError
    from dnscorrelate.live.session import NamespacesBackend, Session

    for backend in (LabBackend.__new__(LabBackend), NamespacesBackend([])):
        with pytest.raises(CaptureError, match="--hubble reads Cilium's Hubble"):
            Session(backend, hubble=True)
