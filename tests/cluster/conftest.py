"""Cluster tests: a real two-node kind cluster from the image `make cluster` builds (root, Docker).
One cluster serves the session; it is removed at the end, even when tests fail."""

import os
import uuid

import pytest

from dnscorrelate.errors import ClusterError


@pytest.fixture(scope="session")
def kind_build():
    """Fail (not skip) with the reason when the build is missing: `make test` builds it first."""
    from dnscorrelate.cluster.kind.build import load_build
    from dnscorrelate.cluster.kind.cluster import docker

    if os.geteuid() != 0:
        pytest.skip("cluster tests need root (Docker, kind)")
    try:
        build = load_build()
        docker()
    except ClusterError as err:
        pytest.fail(f"cluster tests cannot run: {err}")
    return build


def cluster_for_tests(env: str, prefix: str, cni: str = "flannel", **up_options):
    """Yield a cluster: the one named by $env when set (it must be up, and stays up, so that a developer runs
    one cluster, not two), else a new one named PREFIX+random, removed afterwards even when tests fail."""
    from dnscorrelate.cluster.kind import cluster as kind

    existing = os.environ.get(env)
    if existing:
        if not kind.status(existing)["nodes"]:
            pytest.fail(f"{env}={existing}: no such cluster is up")
        yield kind.KindCluster(existing)
        return
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    made, _ = kind.up(name, cni=cni, **up_options)
    try:
        yield made
    finally:
        kind.down(name)


@pytest.fixture(scope="session")
def kind_cluster(kind_build):
    """The session's cluster (flannel); DNSCORRELATE_TEST_CLUSTER=NAME uses one already up."""
    yield from cluster_for_tests("DNSCORRELATE_TEST_CLUSTER", "t")


@pytest.fixture(scope="module")
def cilium_cluster(kind_build):
    """A cluster with Cilium as its pod network (`cluster up --cni cilium --hubble --hubble-policy none`:
    Hubble on, but no visibility policy until a test applies one, so the policy tests see Cilium alone), for
    one test module: removed when the module is done (about 130 s in all), so it is the only Cilium cluster
    at a time; in a whole run it is up beside the session's flannel cluster (two kind clusters at once).
    DNSCORRELATE_TEST_CILIUM_CLUSTER=NAME uses one already up (with --hubble) and leaves it up."""
    if not kind_build.cilium_hubble_manifest and not os.environ.get("DNSCORRELATE_TEST_CILIUM_CLUSTER"):
        pytest.fail("this build has no Cilium with Hubble: run `make cluster`")
    yield from cluster_for_tests("DNSCORRELATE_TEST_CILIUM_CLUSTER", "cil", cni="cilium", hubble=True, hubble_policy="none")


@pytest.fixture(scope="session")
def dns_cluster(kind_cluster):
    """The plugin's dns_cluster on the session's one flannel cluster: the scenario tests share it with the other
    cluster tests (each scenario's changes undone and the baseline proven before the next), so a run makes one
    flannel cluster, not two."""
    from dnscorrelate.runner import SharedKindStage

    return SharedKindStage(kind_cluster.name)
