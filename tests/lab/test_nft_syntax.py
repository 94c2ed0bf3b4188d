"""Every ruleset shape the renderer makes is accepted by the real nft (check mode, in a scratch netns)."""

import subprocess
import uuid

import pytest

from dnscorrelate.cluster.lab import nft, netns
from dnscorrelate.cluster.lab.topology import build_topology
from tests.unit.conftest import spec_with
from tests.unit.test_nft import ALLOW_DNS, DENY_EGRESS

INGRESS = {"kind": "NetworkPolicy", "metadata": {"name": "in", "namespace": "kube-system"},
           "spec": {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "ingress": [
               {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}}],
                "ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": 53, "endPort": 60}]}]}}


@pytest.fixture
def scratch_netns(lab_ready):
    name = f"dnsc-x{uuid.uuid4().hex[:8]}-scratch"
    netns.add_netns([name])
    yield name
    netns.delete_netns([name])


@pytest.mark.parametrize("manifests", [[], [DENY_EGRESS], [DENY_EGRESS, ALLOW_DNS], [INGRESS]], ids=["none", "deny", "allow-dns", "ingress"])
def test_nft_accepts_the_ruleset(scratch_netns, manifests):
    topology = build_topology(spec_with(nodes=2, manifests=manifests), "x")
    for node in topology.nodes:
        done = subprocess.run(["ip", "netns", "exec", scratch_netns, "nft", "-c", "-f", "-"],
                              input=nft.ruleset(topology, node), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
