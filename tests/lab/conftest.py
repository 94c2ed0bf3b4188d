"""Lab tests: they need root, network namespaces, nftables and the CoreDNS binary (CI is root)."""

import subprocess
import uuid

import pytest

from dnscorrelate.cluster.lab.netns import LabError
from dnscorrelate.cluster.lab.runtime import Lab, coredns_binary, preflight, teardown
from dnscorrelate.cluster.spec import load_spec

@pytest.fixture(scope="session")
def lab_ready():
    """Fail (not skip) with the reason when this machine cannot run a lab: `make test` sets it up."""
    try:
        preflight()
        coredns_binary()
    except LabError as err:
        pytest.fail(f"lab tests cannot run: {err}")


def unique_name(stem="t"):
    return f"{stem}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def default_lab(lab_ready):
    """One default lab shared by the read-only tests of a module."""
    lab = Lab.up(load_spec(), unique_name("s"))
    yield lab
    teardown(lab.name)


@pytest.fixture
def fresh_lab(lab_ready):
    """A lab of its own for a test that changes it; `fresh_lab(spec)` brings it up."""
    made = []

    def make(spec=None):
        lab = Lab.up(spec or load_spec(), unique_name())
        made.append(lab)
        return lab

    yield make
    for lab in made:
        teardown(lab.name)


def in_pod(lab, pod, *cmd, timeout=20):
    """Run `cmd` in `pod`'s namespace with its resolv.conf, as `lab exec` does; returns the CompletedProcess."""
    target = lab.pod(pod, "demo")
    return subprocess.run(["ip", "netns", "exec", target.netns, *cmd], capture_output=True, text=True, timeout=timeout)


def dig(lab, pod, *args):
    """`dig +short` from `pod` with one try and a 1 s timeout; returns stdout lines."""
    done = in_pod(lab, pod, "dig", "+short", "+tries=1", "+timeout=1", *args)
    return done.stdout.split()
