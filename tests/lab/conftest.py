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


@pytest.fixture(scope="session")
def core_tracer_built(tmp_path_factory):
    """The CO-RE object compiled from this checkout's bpf/dns_trace.c by bpf/build.sh (as `make cluster` does), and
    $DNSCORRELATE_TRACER_DIR pointing at it for `bpf.tracer("core")`. Fails (not skips) when clang or libbpf-dev is
    missing: `make setup` installs them."""
    import os
    from pathlib import Path

    from dnscorrelate.live import bpf

    out = tmp_path_factory.mktemp("tracer")
    built = subprocess.run([str(Path(bpf.BPF_SOURCE).parent / "build.sh"), str(out)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"bpf/build.sh cannot build the CO-RE tracer: {built.stderr.strip()}")
    previous = os.environ.get(bpf.TRACER_DIR_ENV)
    os.environ[bpf.TRACER_DIR_ENV] = str(out)
    yield Path(built.stdout.strip())
    if previous is None:
        os.environ.pop(bpf.TRACER_DIR_ENV, None)
    else:
        os.environ[bpf.TRACER_DIR_ENV] = previous
