"""Network namespaces: create, configure, enter, find processes in, delete.

iproute2 does the configuration (`ip -n NS -batch -`: one fork per
namespace, readable commands in errors). Entering a namespace is done per
thread with setns(2) (`live/nsenter.py`, shared with the capture), so that
sysctls, sockets and capture attach points need no fork.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from dnscorrelate.errors import LabError  # noqa: F401 (re-exported)
from dnscorrelate.live.nsenter import NETNS_DIR, entered_path  # noqa: F401 (re-exported: the lab enters its namespaces as a capture does)


def run(cmd: list[str], stdin: str | None = None) -> str:
    """Run `cmd`, returning its stdout; a failure raises LabError with the command and its stderr."""
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]}: not found; run `make setup` (needs iproute2 and nftables)") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise LabError(f"`{' '.join(cmd)}` failed: {detail}")
    return done.stdout


def ip_batch(commands: list[str], netns: str | None = None) -> None:
    """Run iproute2 `commands` in one `ip -batch`, inside `netns` when given."""
    if commands:
        run(["ip", *(["-n", netns] if netns else []), "-batch", "-"], stdin="\n".join(commands) + "\n")


def list_netns(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def add_netns(names: list[str]) -> None:
    ip_batch([f"netns add {name}" for name in names])


def delete_netns(names: list[str]) -> None:
    """Delete the named namespaces; ones already gone are ignored."""
    existing = set(list_netns())
    ip_batch([f"netns del {name}" for name in names if name in existing])


def netns_inode(name: str) -> int:
    return os.stat(NETNS_DIR / name).st_ino


def entered(netns: str) -> contextlib.AbstractContextManager[None]:
    """Run the block with the calling thread inside the named namespace."""
    return entered_path(NETNS_DIR / netns)


def set_sysctls(netns: str, values: dict[str, str]) -> None:
    """Write net.* sysctls inside `netns` (/proc/sys/net follows the writer's namespace)."""
    with entered(netns):
        for key, value in values.items():
            Path("/proc/sys", key.replace(".", "/")).write_text(value)


def pids_in(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes` (what `ip netns pids` does, for many at once)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def pids_with_arg(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment`."""
    pids = []
    needle = fragment.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def kill_all(pids: list[int], timeout: float = 2.0) -> None:
    """SIGKILL `pids` and wait until they are gone. Lab processes keep no state worth a graceful
    stop, and CoreDNS's `health { lameduck 5s }` would make SIGTERM take five seconds."""
    pids = [p for p in set(pids) if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)  # our own children: reap them
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
