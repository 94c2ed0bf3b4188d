"""The registry path on a real cluster, end to end: `cluster up --registry` (a local registry from the distribution
module beside the kind cluster), `agent image --push` of the standalone agent image to it, `trace --agent --agent-image`
with the nodes pulling that image (it is never preloaded into kind's nodes), a lookup traced through the pulled
agents, and `cluster down` removing the registry with the cluster.

It makes its own cluster (removal is part of what it checks): named $DNSCORRELATE_TEST_REGISTRY_NAME, else reg+random."""

import os
import subprocess
import sys
import uuid

import pytest
from kubernetes import client as k8s

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.kind import registry
from tests.cluster.test_agent import Trace, dig


def node_image_names(cluster) -> set[str]:
    """Every image reference (tags and digests) the nodes' containerd holds, read in the nodes themselves: the
    kubelets' node status lists at most 50 images and only as often as it is posted, so it can lag a pull."""
    names = set()
    for node in kind.node_containers(kind.docker(), cluster).values():
        code, out = node.exec_run(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        assert code == 0, out
        names |= set(out.decode().split())
    return names


def ours_left(name: str) -> list[str]:
    """Containers, networks, the host table and the run directory of cluster `name` still here."""
    client = kind.docker()
    cluster = kind.KindCluster(name)
    left = [f"container {c.name}" for c in client.containers.list(all=True) if c.name.startswith(cluster.kind_name + "-")]
    left += [f"container {c.name}" for c in kind.labelled(client, f"{kind.LABEL}={name}")]
    left += [f"network {n.name}" for n in client.networks.list() if n.name in (cluster.network, cluster.upstream_network)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left += [f"table {cluster.host_table}"] if cluster.host_table in tables else []
    left += [f"directory {cluster.dir}"] if cluster.dir.exists() else []
    return left


def test_the_agent_image_goes_through_a_local_registry_and_the_nodes_pull_it(kind_build, tmp_path):
    if not (kind_build.registry_image and kind_build.agent_standalone_image):
        pytest.fail("this build has no registry or standalone agent image: run `make cluster`")
    name = os.environ.get("DNSCORRELATE_TEST_REGISTRY_NAME") or f"reg{uuid.uuid4().hex[:8]}"
    removed = None
    try:
        made, _ = kind.up(name, registry=True)
        client = kind.docker()
        host = registry.registry_of(made, client)
        assert host and host.startswith("localhost:")
        published = k8s.CoreV1Api(kind.api_client(made)).read_namespaced_config_map("local-registry-hosting", "kube-public")
        assert f'host: "{host}"' in published.data["localRegistryHosting.v1"]
        before = node_image_names(made)
        assert not any(n.startswith(host) or "agent-standalone" in n for n in before), before  # nothing preloaded

        pushed = subprocess.run([sys.executable, "-m", "dnscorrelate", "agent", "image", "--push",
                                 f"{host}/dnscorrelate/agent:test"], capture_output=True, text=True, timeout=600)
        assert pushed.returncode == 0, pushed.stderr
        pinned = pushed.stdout.strip()
        assert pinned.startswith(f"{host}/dnscorrelate/agent@sha256:"), pushed.stdout
        assert f"--agent-image {pinned}" in pushed.stderr and f"--image {pinned}" in pushed.stderr
        built_for = registry.platform(client.images.get(kind_build.agent_standalone_image))
        assert f"({built_for} only" in pushed.stderr  # the one architecture it is for, said

        trace = Trace(made, tmp_path, "--agent", "--agent-image", pinned)
        try:
            trace.wait_started(300)
            looked_up = f"pulled-{uuid.uuid4().hex[:8]}.example.org."
            dig(made, looked_up)
        finally:
            code = trace.finish()
        assert code == 0 and "Traceback" not in trace.err, trace.err
        record = trace.records()[looked_up]
        assert {"pod", "node", "coredns"} <= {h["role"] for h in record["hops"]} and record["served_from"] == "upstream"
        nodes = [line for line in trace.err.splitlines() if line.startswith("node ")]
        assert len(nodes) == 2 and all("(complete)" in line for line in nodes), trace.err

        digest = pinned.split("@", 1)[1]
        logs = client.containers.get(registry.container_name(made)).logs().decode(errors="replace")
        asked = {line.split()[0] for line in logs.splitlines() if f'"GET /v2/dnscorrelate/agent/manifests/{digest}' in line}
        node_ips = {c.attrs["NetworkSettings"]["Networks"][made.network]["IPAddress"]
                    for c in kind.node_containers(client, made).values()}
        assert asked == node_ips, (asked, node_ips)  # each node fetched the manifest itself: nothing was preloaded
        pulled = node_image_names(made)
        assert f"{host}/dnscorrelate/agent@{digest}" in pulled, pulled
    finally:
        removed = kind.down(name)
    assert f"container {registry.container_name(kind.KindCluster(name))}" in removed, removed
    assert ours_left(name) == []
