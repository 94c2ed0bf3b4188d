import pytest

from dnscorrelate.cluster.model import NetworkPolicy
from dnscorrelate.cluster.lab.spec import load_spec, merge, validate, Source
from dnscorrelate.cluster.lab.topology import build_topology


def spec_with(**overlay):
    """The default spec with `overlay` (spec fields, manifests as dicts) merged over it."""
    return merge(load_spec(), validate(overlay, Source("test", None)))


@pytest.fixture
def topology():
    return build_topology(load_spec(), "t")


def policy(name, namespace="demo", **spec):
    return NetworkPolicy.model_validate({"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec})
