"""Which process owns what the project leaves on this machine, so that what a dead process left is removed by the
next one: a lab's state names its owner, and a scratch directory carries its owner in its name. A pid alone is not
an owner (pids are reused): with it goes the process's start time."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22), None if it is gone or
    a zombie: with the pid, it tells the owner apart from a later process that got the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def this_process() -> dict:
    return {"pid": os.getpid(), "start": process_start(os.getpid())}


def owner_alive(owner: dict | None) -> bool:
    return owner is not None and process_start(int(owner["pid"])) == owner.get("start")


def owned_scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary directory named `prefix` + this process's pid and start time, after removing the ones a dead
    process left under that prefix (a run killed with SIGKILL cleans up nothing)."""
    remove_orphaned_scratch_dirs(prefix)
    owner = this_process()
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{owner['pid']}.{owner['start']}-")


def remove_orphaned_scratch_dirs(prefix: str) -> list[Path]:
    """Remove the directories `owned_scratch_dir(prefix)` made for processes that are gone; the paths removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid, _, start = path.name.removeprefix(prefix).split("-", 1)[0].partition(".")
        if not (pid.isdigit() and start.isdigit()) or owner_alive({"pid": int(pid), "start": int(start)}):
            continue  # not one of ours, or its owner still runs
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
