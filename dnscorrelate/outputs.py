"""Output paths checked before the work that fills them: a capture or a scenario run must not end in
a traceback because its file cannot be written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from dnscorrelate.errors import USER_ERRORS, OutputError


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


@contextlib.contextmanager
def written_whole(path: str | Path, option: str, private: bool = False):
    """A temporary path beside `path` to write to; renamed to `path` only once writing finished, so a full
    disk or a crash never leaves a truncated file that looks complete. OutputError names the option and
    the reason; the partial file is removed. `private`: readable by its owner only (0600), for a file that
    holds a cluster's facts (its pods, addresses and Corefile)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    if not private:  # mkstemp makes 0600; else the file should read as one open() would make it
        os.fchmod(handle, 0o666 & ~current_umask())
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except OSError as err:
        raise OutputError(f"{option} {path}: could not write it ({err.strerror or err}); nothing was written there") from None
    except USER_ERRORS as err:  # a writer's own error names the temporary file: name the one asked for
        raise OutputError(f"{option} {path}: could not write it ({str(err).replace(temporary + ': ', '')}); "
                          "nothing was written there") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
