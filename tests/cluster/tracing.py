"""`dnscorrelate trace` as a cluster test runs it: started, and waited for until it says it captures."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

CAPTURING = b"Ctrl-C to stop"  # trace's first line once the tracer is attached everywhere


def started_trace(args: list[str], timeout_s: float = 240) -> subprocess.Popen:
    """`python -m dnscorrelate trace ARGS`, returned once its capture runs: on a loaded machine compiling and
    attaching the tracer has taken 22 s, so a fixed wait sent the test's queries before the capture began."""
    trace = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "trace", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = b""
    deadline = time.monotonic() + timeout_s
    while CAPTURING not in said:
        if time.monotonic() > deadline or trace.poll() is not None:
            trace.kill()
            out, err = trace.communicate()
            pytest.fail(f"trace {' '.join(args)} did not start capturing within {timeout_s:.0f} s:\n"
                        f"{said.decode(errors='replace')}{err}")
        ready, _, _ = select.select([trace.stderr], [], [], 1.0)
        if ready:
            said += os.read(trace.stderr.fileno(), 65536)  # below the text wrapper, which has read nothing yet
    trace.started_with = said.decode(errors="replace")
    return trace
