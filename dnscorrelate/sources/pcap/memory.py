"""Memory reused while a capture is read, instead of fresh pages for every array.

The bulk path makes many short-lived arrays of a few MiB each (one element per packet). Left alone,
glibc hands each one to the kernel when it is freed and maps new pages for the next, and numpy asks
for transparent huge pages on each: every array then costs page faults, zeroing and, when memory is
fragmented (a page cache filling RAM), compaction. On the 1M-packet benchmark that was 0.6-0.9 s of
system time per read against 1.3 s of user time. For the read only, glibc keeps freed memory for reuse
(mallopt's mmap and trim thresholds) and numpy's huge-page advice is off; after it, both are put back
and the memory kept is returned (malloc_trim). Where glibc or numpy's switch is missing, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from contextlib import contextmanager

import numpy as np

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
DEFAULT_THRESHOLD = 128 * 1024  # glibc's default for both
KEEP = 1 << 30  # above any array of a read: freed memory stays in the heap for the next one
INT_MAX = 2**31 - 1  # mallopt takes a C int
_lock = threading.Lock()
_depth = 0


def glibc():
    """glibc's mallopt and malloc_trim, or None (another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def huge_page_switch():
    """numpy's private switch for huge-page advice on large arrays (it returns the previous value), or None."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


@contextmanager
def memory_reused():
    """Within the block, freed arrays are reused rather than returned to the kernel (see the module's docstring)."""
    global _depth
    libc, switch = glibc(), huge_page_switch()
    with _lock:
        _depth += 1
        outermost = _depth == 1
        if outermost:
            if libc is not None:
                libc.mallopt(M_MMAP_THRESHOLD, KEEP)
                libc.mallopt(M_TRIM_THRESHOLD, INT_MAX)
            advised = switch(False) if switch is not None else None
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if outermost:
                if switch is not None:
                    switch(advised)
                if libc is not None:
                    libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
                    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
                    libc.malloc_trim(0)
