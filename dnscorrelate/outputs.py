"""Output paths checked before the work that fills them: a capture or a scenario run must not end in
a traceback because its file cannot be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dnscorrelate.errors import OutputError


def check_output_file(path: str | Path, option: str) -> Path:
    """`path` if a file can be written there (its folder exists and takes new files, and it is not a
    folder); OutputError naming the option otherwise. Nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: folder {folder} does not exist; create it first")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: not writable")
    probe_folder(folder, f"{option} {path}")
    return path


def check_output_dir(path: str | Path, option: str) -> Path:
    """`path`, created if missing, if files can be written in it; OutputError naming the option otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot create it ({err.strerror or err})") from None
    probe_folder(path, f"{option} {path}")
    return path


def probe_folder(folder: Path, what: str) -> None:
    """Create and remove a file in `folder`: permissions, read-only mounts and /proc all answer truthfully
    only to an attempt (root passes os.access checks a read-only file system then refuses)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dnscorrelate-probe-"):
            pass
    except OSError as err:
        raise OutputError(f"{what}: cannot write in {folder} ({err.strerror or err})") from None
