"""Scratch directories name their owner, and the next run removes the ones whose owner is gone (a run killed with
SIGKILL cleans up nothing; the kube backend's log directory is one)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dnscorrelate.cluster.owners import owned_scratch_dir, owner_alive, process_start, remove_orphaned_scratch_dirs

PREFIX = "dnsc-test-owners-"


def dead_process() -> dict:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    child.wait()
    return {"pid": child.pid, "start": start}


def test_a_dead_owners_directory_is_removed_and_a_live_ones_is_kept():
    gone = dead_process()
    orphan = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{gone['pid']}.{gone['start']}-"))
    stranger = Path(tempfile.mkdtemp(prefix=f"{PREFIX}not-ours-"))
    try:
        with owned_scratch_dir(PREFIX) as mine:
            assert not orphan.exists()
            assert Path(mine).is_dir() and stranger.is_dir()
            assert remove_orphaned_scratch_dirs(PREFIX) == []  # its owner, this process, still runs
        assert not Path(mine).exists()
    finally:
        for path in (orphan, stranger):
            subprocess.run(["rm", "-rf", str(path)], check=False)


def test_a_reused_pid_is_not_its_old_owner():
    me = process_start(os.getpid())
    assert owner_alive({"pid": os.getpid(), "start": me})
    assert not owner_alive({"pid": os.getpid(), "start": (me or 0) + 1})
    assert not owner_alive(dead_process())
