"""Leave no lab behind: after down, after kill -9, after a crashed or interrupted `lab up`.

Tests that sweep with `lab down --all` run the CLI under their own prefix and
run directory, so a lab the developer has running is never touched.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnscorrelate.cluster.lab import netns
from dnscorrelate.cluster.lab.runtime import ETC_NETNS, Lab, teardown
from dnscorrelate.cluster.spec import load_spec

from tests.subprocesses import ctrl_c_reaches_it

from .conftest import unique_name

ISOLATED = {"DNSCORRELATE_PREFIX": "dnsct-", "DNSCORRELATE_RUN_DIR": "/run/dnscorrelate/test-labs"}


def isolated_cli(*args, wait=True):
    env = {**os.environ, **ISOLATED}
    cmd = [sys.executable, "-m", "dnscorrelate", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=ctrl_c_reaches_it)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def leftovers(prefix: str, run_dir: str) -> dict:
    """Everything on the machine that carries `prefix` or lives under `run_dir`."""
    inodes = {netns.netns_inode(n) for n in netns.list_netns(prefix)}
    run = Path(run_dir)
    return {
        "netns": netns.list_netns(prefix),
        "etc_netns": sorted(p.name for p in ETC_NETNS.glob(f"{prefix}*")),
        "pids": sorted(set(netns.pids_in(inodes)) | {p for p in netns.pids_with_arg(f"{run_dir}/") if netns.alive(p)}),
        "run_dirs": sorted(p.name for p in run.iterdir()) if run.is_dir() else [],
        "root_nft_tables": [t for t in netns.run(["nft", "list", "tables"]).split("\n") if prefix in t],
    }


NOTHING = {"netns": [], "etc_netns": [], "pids": [], "run_dirs": [], "root_nft_tables": []}


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_twenty_up_down_cycles_leave_nothing(lab_ready):
    from dnscorrelate.cluster.lab.runtime import RUN_ROOT

    spec = load_spec()
    for cycle in range(20):
        lab = Lab.up(spec, unique_name("c"))
        assert netns.list_netns(lab.topology.prefix), "the lab made its namespaces"
        teardown(lab.name)
        left = leftovers(lab.topology.prefix, str(RUN_ROOT / lab.name))
        left["run_dirs"] = [d for d in left["run_dirs"] if d == lab.name]
        assert left == NOTHING, f"cycle {cycle}"


def test_down_all_after_kill_9_of_every_lab_process(lab_ready):
    up = isolated_cli("lab", "up", "--name", "crashed")
    assert up.returncode == 0, up.stderr
    before = leftovers("dnsct-", ISOLATED["DNSCORRELATE_RUN_DIR"])
    assert len(before["pids"]) == 6  # upstream and two replicas, each with its log stamper
    for pid in before["pids"]:
        os.kill(pid, signal.SIGKILL)
    down = isolated_cli("lab", "down", "--all")
    assert down.returncode == 0, down.stderr
    assert leftovers("dnsct-", ISOLATED["DNSCORRELATE_RUN_DIR"]) == NOTHING


@pytest.fixture
def big_spec(tmp_path):
    """A lab with 200 extra pods: its `up` takes long enough to be interrupted midway, every time."""
    pods = "".join(f"  - {{kind: Pod, metadata: {{name: p{i}, namespace: demo}}}}\n" for i in range(200))
    path = tmp_path / "big.yaml"
    path.write_text("manifests:\n" + pods)
    return str(path)


def test_down_all_after_lab_up_itself_was_killed(lab_ready, big_spec):
    up = isolated_cli("lab", "up", "--name", "halfway", "--spec", big_spec, wait=False)
    assert wait_for(lambda: len(netns.list_netns("dnsct-halfway-")) > 3)
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert isolated_cli("lab", "down", "--all").returncode == 0
    assert leftovers("dnsct-", ISOLATED["DNSCORRELATE_RUN_DIR"]) == NOTHING


def test_ctrl_c_during_lab_up_removes_what_it_made(lab_ready, big_spec):
    up = isolated_cli("lab", "up", "--name", "interrupted", "--spec", big_spec, wait=False)
    assert wait_for(lambda: len(netns.list_netns("dnsct-interrupted-")) > 3)
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=30)
    assert up.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert leftovers("dnsct-", ISOLATED["DNSCORRELATE_RUN_DIR"]) == NOTHING


@pytest.fixture(autouse=True)
def sweep_isolated_labs():
    yield
    isolated_cli("lab", "down", "--all")


def test_ctrl_c_during_a_scenario_run_tears_its_lab_down(lab_ready):
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "stale-endpoint.yaml"
    run = isolated_cli("run", str(scenario), "--report-dir", "", wait=False)
    assert wait_for(lambda: len(netns.list_netns("dnsct-")) > 3, timeout=30)
    time.sleep(1.0)  # into the faults and queries
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "Traceback" not in err
    assert leftovers("dnsct-", ISOLATED["DNSCORRELATE_RUN_DIR"]) == NOTHING
