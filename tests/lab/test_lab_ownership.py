"""Issue 13: labs belong to the process that made them. `lab down --all` spares labs a live process uses
(unless --force); `lab up` and `run` remove labs whose owner was killed with -9, and say so.

Run under a prefix and run directory of their own, so no one else's lab is touched."""

import os
import signal
import subprocess
import sys

from dnscorrelate.cluster.lab import netns

ISOLATED = {"DNSCORRELATE_PREFIX": "dnso-", "DNSCORRELATE_RUN_DIR": "/run/dnscorrelate/ownership-test-labs"}
OWNER = """
import sys, time
from dnscorrelate.cluster.lab.runtime import Lab
from dnscorrelate.cluster.spec import load_spec
Lab.up(load_spec(), sys.argv[1])
print("up", flush=True)
time.sleep(600)
"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dnscorrelate", *args], env={**os.environ, **ISOLATED},
                          capture_output=True, text=True, timeout=60)


def owned_lab(name):
    """A process that brings lab `name` up for itself and keeps running."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, name], env={**os.environ, **ISOLATED}, stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "up"
    return owner


def lab_is_up(name):
    return bool(netns.list_netns(f"dnso-{name}-"))


def test_down_all_spares_a_live_owners_lab_and_up_sweeps_it_once_the_owner_is_killed(lab_ready):
    owner = owned_lab("busy")
    try:
        down = cli("lab", "down", "--all")
        assert down.returncode == 0 and f"kept lab busy: process {owner.pid} still uses it" in down.stderr, down.stderr
        assert lab_is_up("busy")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert lab_is_up("busy")  # kill -9 leaves it behind ...
        up = cli("lab", "up", "--name", "fresh")
        assert up.returncode == 0, up.stderr
        assert f"removed lab busy: process {owner.pid}, which made it, is gone" in up.stderr  # ... until the next up
        assert not lab_is_up("busy") and lab_is_up("fresh")
        down = cli("lab", "down", "--all")  # a `lab up` lab is the user's: --all removes it
        assert down.returncode == 0 and not lab_is_up("fresh"), down.stderr
    finally:
        owner.kill()
        cli("lab", "down", "--all", "--force")


def test_down_all_force_removes_a_live_owners_lab_too(lab_ready):
    owner = owned_lab("forced")
    try:
        down = cli("lab", "down", "--all", "--force")
        assert down.returncode == 0 and not lab_is_up("forced"), down.stderr
    finally:
        owner.kill()
        cli("lab", "down", "--all", "--force")
