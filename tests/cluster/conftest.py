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


@pytest.fixture(scope="session")
def kind_cluster(kind_build):
    from dnscorrelate.cluster.kind import cluster as kind

    name = f"t{uuid.uuid4().hex[:8]}"
    made, timings = kind.up(name)
    yield made
    kind.down(name)
