"""Entering a network namespace from this thread (setns), to attach a capture there: sockets made
inside stay bound to that namespace. Any backend's namespaces: /run/netns/X, /proc/PID/ns/net."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where `ip netns` names namespaces
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered_path(path: str | Path) -> Iterator[None]:
    """Run the block with the calling thread inside the namespace at `path` (/run/netns/X,
    /proc/PID/ns/net); sockets made there stay bound to it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
    except OSError:
        os.close(home)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
