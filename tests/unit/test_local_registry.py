"""The local registry beside a kind cluster (`cluster up --registry`) and `agent image --push`, without Docker: the
kind config the nodes get, containerd's hosts.toml, the ConfigMap kind's guide publishes, the guard letting the nodes
reach it, and the names a push accepts. The whole path runs on a real cluster in tests/cluster/test_registry.py."""

import tomllib

import pytest
import yaml
from click.testing import CliRunner

from dnscorrelate.cli import main
from dnscorrelate.cluster.kind import registry
from dnscorrelate.cluster.kind.build import Build
from dnscorrelate.cluster.kind.cluster import KindCluster, kind_config
from dnscorrelate.cluster.kind.network import guard_rules


def build(cap_shim):
    return Build("kind", "kubectl", "node:1", "client:1", "agent:1", "upstream:1", "flannel:1", "v1.34.4", cap_shim,
                 registry_image="dnscorrelate/registry:1")


@pytest.mark.parametrize("cap_shim", [True, False])
def test_with_a_registry_the_nodes_containerd_reads_registry_hosts_from_certs_d(cap_shim):
    config = yaml.safe_load(kind_config(build(cap_shim), registry=True))
    patches = [tomllib.loads(p) for p in config["containerdConfigPatches"]]
    cri = {k: v for p in patches for k, v in p["plugins"]["io.containerd.grpc.v1.cri"].items()}
    assert cri["registry"] == {"config_path": "/etc/containerd/certs.d"}
    assert ("containerd" in cri) == cap_shim  # the shim's patch stays as it was
    plain = yaml.safe_load(kind_config(build(cap_shim)))
    assert "registry" not in str(plain.get("containerdConfigPatches", ""))  # without --registry: nothing changes


def test_pulls_of_the_registrys_name_go_to_its_container_over_http_and_the_cluster_is_told_where_it_is():
    hosts = tomllib.loads(registry.hosts_toml("dnsc-reg-registry"))
    assert hosts == {"host": {"http://dnsc-reg-registry:5000": {"capabilities": ["pull", "resolve"]}}}
    configmap = registry.hosting_configmap("localhost:40123")
    assert configmap["metadata"] == {"name": "local-registry-hosting", "namespace": "kube-public"}
    assert yaml.safe_load(configmap["data"]["localRegistryHosting.v1"])["host"] == "localhost:40123"
    assert registry.container_name(KindCluster("reg")) == "dnsc-reg-registry"


def test_the_guard_lets_the_nodes_reach_the_registry_and_nothing_more():
    without = guard_rules(["172.18.0.2"], "172.19.0.2")
    with_registry = guard_rules(["172.18.0.2"], "172.19.0.2", ["172.18.0.4", "fc00:f853:ccd:e793::4"])
    assert "172.18.0.4" not in without and "172.18.0.4" in with_registry and "fc00:f853:ccd:e793::4" in with_registry
    assert with_registry.replace(", 172.18.0.4", "").replace(", fc00:f853:ccd:e793::4", "") == without


@pytest.mark.parametrize("reference, expected", [
    ("localhost:5001/dnscorrelate/agent", ("localhost:5001/dnscorrelate/agent", None)),
    ("localhost:5001/dnscorrelate/agent:v1", ("localhost:5001/dnscorrelate/agent", "v1")),
    ("registry.example.com/team/agent:2", ("registry.example.com/team/agent", "2")),
])
def test_a_push_takes_a_registry_qualified_name_and_tag(reference, expected):
    assert registry.split_reference(reference) == expected


@pytest.mark.parametrize("reference, says", [
    ("dnscorrelate/agent:1", "name the registry first"),
    ("agent", "name the registry first"),
    ("localhost:5001/agent@sha256:" + "0" * 64, "not a digest"),
])
def test_a_name_docker_hub_would_take_or_a_digest_is_refused_before_anything_is_pushed(reference, says, monkeypatch):
    monkeypatch.setattr(registry, "push_image", lambda *a, **k: pytest.fail("nothing may be pushed"))
    with pytest.raises(ValueError, match=says):
        registry.split_reference(reference)
    result = CliRunner().invoke(main, ["agent", "image", "--push", reference])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
