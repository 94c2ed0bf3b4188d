"""Text files a user hands us (scenarios, specs, manifests, Corefiles), read as bytes and decoded as
UTF-8 with an error that names the file, line and byte, never a UnicodeDecodeError traceback."""

from __future__ import annotations

from pathlib import Path


def read_user_text(path: str | Path, error: type[Exception]) -> str:
    """The file's text; `error` (one of errors.USER_ERRORS) naming the file when it cannot be read or
    is not UTF-8 (a BOM is dropped, as editors on Windows write one)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(f"{path}:{line}: byte {data[err.start]:#04x} at column {column} is not UTF-8; "
                    "save the file as UTF-8") from None
