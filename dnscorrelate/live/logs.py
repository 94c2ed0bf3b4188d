"""CoreDNS logs followed while a session runs: each read again whole at every tick of `trace`, parsed by
`sources.coredns_log`, with the lines of a file that was rotated, replaced or truncated since counted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnscorrelate.schema import ParsedLogs
from dnscorrelate.sources.coredns_log import read_logs

HEAD_BYTES = 512  # a file whose first bytes changed was truncated and written again, or replaced


@dataclass(frozen=True)
class FileMark:
    """What a followed file looked like when it was last read, and how many lines it had."""

    inode: int
    size: int
    head: bytes
    lines: int = 0

    def replaced_by(self, now: FileMark) -> bool:
        """Whether the file now is not this one grown: another file (rotated, recreated), shorter
        (copytruncate) or starting differently (truncated and written past its old length)."""
        return now.inode != self.inode or now.size < self.size or now.head[: len(self.head)] != self.head


def file_mark(path: str) -> FileMark | None:
    """The file's mark now; None when it is not there (or cannot be opened: reading it says why)."""
    try:
        with open(path, "rb") as stream:
            status = os.fstat(stream.fileno())
            return FileMark(status.st_ino, status.st_size, stream.read(HEAD_BYTES))
    except OSError:
        return None


class LogFollower:
    """CoreDNS logs read again at every tick of `trace`, each file whole. A file rotated away, replaced or
    truncated since the last read no longer holds the lines read from it then: they are counted as lost
    (`ParsedLogs.lines_lost`, and a warning per file), never dropped silently. It is a lower bound: lines
    written between the last read and the rotation were never read, so they cannot be counted."""

    def __init__(self) -> None:
        self.marks: dict[str, FileMark] = {}  # each file as last read
        self.read_once: set[str] = set()
        self.lost: dict[str, int] = {}

    def read(self, sources: list[tuple[str | None, str]], corefile: str | None = None) -> ParsedLogs:
        readable, now_marks, missing = [], {}, []
        for replica, path in sources:
            path = str(Path(path))  # as read_logs names its source
            now, before = file_mark(path), self.marks.get(path)
            if before is not None and (now is None or before.replaced_by(now)):
                if before.lines:
                    self.lost[path] = self.lost.get(path, 0) + before.lines
                del self.marks[path]  # counted once
            if now is None and path in self.read_once:
                missing.append(path)  # rotated away and not recreated yet: read the others
                continue
            readable.append((replica, path))  # one never read and missing is read_logs' error, as for `correlate`
            now_marks[path] = now
        logs = read_logs(readable, corefile) if readable else ParsedLogs.none()
        for path, mark in now_marks.items():
            self.read_once.add(path)
            if mark is not None:
                self.marks[path] = FileMark(mark.inode, mark.size, mark.head, logs.lines_by_source.get(path, 0))
        for path in missing:
            logs.warnings.append(f"{path}: log file missing when read (rotated or deleted): lines it held are not in this analysis"
                                 f" ({self.lost.get(path, 0)} lines read from it before)")
        for path, n in self.lost.items():
            if path not in missing:
                logs.warnings.append(f"{path}: rotated or truncated while followed: {n} lines read from it before are no longer in it "
                                     "and not in this analysis (nor any written just before that)")
        logs.lines_lost = sum(self.lost.values())
        return logs
