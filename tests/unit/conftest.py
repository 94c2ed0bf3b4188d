import pytest

from dnscorrelate.cluster.model import NetworkPolicy
from dnscorrelate.cluster.spec import load_spec, merge, validate, Source
from dnscorrelate.cluster.lab.topology import build_topology


def spec_with(**overlay):
    """The default spec with `overlay` (spec fields, manifests as dicts) merged over it."""
    return merge(load_spec(), validate(overlay, Source("test", None)))


@pytest.fixture
def topology():
    return build_topology(load_spec(), "t")


def policy(name, namespace="demo", **spec):
    return NetworkPolicy.model_validate({"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec})


DENY_EGRESS = {"kind": "NetworkPolicy", "metadata": {"name": "deny-egress", "namespace": "demo"},
               "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
ALLOW_DNS = {"kind": "NetworkPolicy", "metadata": {"name": "allow-dns", "namespace": "demo"},
             "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{
                 "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}
