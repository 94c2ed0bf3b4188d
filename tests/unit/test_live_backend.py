"""`cli.live_backend`: a --context of a cluster kind did not make goes to the kube backend as it is, without
asking kind; one of a cluster `cluster up` made here gets the kubeconfig it wrote and the agent image built here."""

import pytest

from dnscorrelate import cli
from dnscorrelate.cluster.kind import build as kind_build
from dnscorrelate.cluster.kind import cluster as kind_cluster
from dnscorrelate.cluster.kube import backend as kube_backend


@pytest.fixture
def made(monkeypatch):
    """KubeBackend replaced by a recorder of what it was given."""
    calls = []

    class Recorder:
        def __init__(self, kubeconfig=None, context=None, agent=None):
            calls.append({"kubeconfig": kubeconfig, "context": context, "agent": agent})

    monkeypatch.setattr(kube_backend, "KubeBackend", Recorder)
    return calls


def test_a_context_kind_did_not_make_goes_straight_to_the_kube_backend(made, monkeypatch):
    def never(*args):
        raise AssertionError("kind was asked about a context it did not make")

    monkeypatch.setattr(kind_cluster, "kubeconfig_of_context", never)
    monkeypatch.setattr(kind_build, "agent_image", lambda source_from_host: "dnscorrelate/agent-standalone:1")
    cli.live_backend(None, None, "prod-eu", agent=True)
    assert made[0]["kubeconfig"] is None and made[0]["context"] == "prod-eu"
    assert made[0]["agent"].source_from_host is False and made[0]["agent"].built == "dnscorrelate/agent-standalone:1"


def test_a_context_of_a_cluster_made_here_gets_its_kubeconfig(made, tmp_path, monkeypatch):
    monkeypatch.setattr(kind_cluster, "RUN_ROOT", tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kubeconfig").write_text("apiVersion: v1\n")
    monkeypatch.setattr(kind_build, "agent_image", lambda source_from_host: "dnscorrelate/agent:1" if source_from_host else "")
    cli.live_backend(None, None, "kind-dnsc-dev", agent=True)
    assert made[0]["kubeconfig"] == str(tmp_path / "dev" / "kubeconfig")
    assert made[0]["agent"].source_from_host is True and made[0]["agent"].built == "dnscorrelate/agent:1"


def test_no_agent_image_built_here_leaves_the_choice_to_the_nodes(made, monkeypatch):
    def none_built(source_from_host):
        raise kind_build.ClusterError("no agent image was built here")

    monkeypatch.setattr(kind_build, "agent_image", none_built)
    cli.live_backend(None, None, "prod-eu", agent=True)
    assert made[0]["agent"].built is None


def test_a_registry_image_on_a_cluster_made_here_runs_its_own_package_and_a_bare_name_this_checkout(made, tmp_path, monkeypatch):
    monkeypatch.setattr(kind_cluster, "RUN_ROOT", tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kubeconfig").write_text("apiVersion: v1\n")
    monkeypatch.setattr(kind_build, "agent_image", lambda source_from_host: "dnscorrelate/agent:1" if source_from_host else "s:1")
    cli.live_backend(None, None, "kind-dnsc-dev", agent=True, agent_image="localhost:40123/dnscorrelate/agent@sha256:" + "a" * 64)
    cli.live_backend(None, None, "kind-dnsc-dev", agent=True, agent_image="dnscorrelate/agent:other")
    pulled, mounted = made[0]["agent"], made[1]["agent"]
    assert pulled.source_from_host is False and pulled.image.startswith("localhost:40123/")
    assert mounted.source_from_host is True and mounted.image == "dnscorrelate/agent:other"
