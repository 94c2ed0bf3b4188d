"""What reaches a terminal: control characters from logs, query names and file names are shown as
escapes (`\\x1b`), never sent raw; JSON and HTML keep the text as it is."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, and C1 controls: a terminal acts on them (escape sequences,
# cursor moves, the bell, a cleared screen) instead of showing them.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
_VISIBLE = str.maketrans({c: f"\\x{c:02x}" for c in _CONTROLS})


def printable(text: str) -> str:
    """`text` with every control character a terminal would act on written as a `\\xNN` escape."""
    return text.translate(_VISIBLE)


class SafeConsole(Console):
    """A rich Console whose strings are made printable before rendering (rich itself drops only a few
    control codes and passes ESC through). Table cells given as Text are the caller's to clean."""

    def render_str(self, text: str, **kwargs) -> Text:
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader went away (`| head`): stop quietly with exit 0 (rich exits 1); see quiet_exit."""
        self.quiet = True
        quiet_exit()


def quiet_exit() -> None:
    """Stop writing to a closed stdout and exit 0: a reader that has read enough is no failure. SIGPIPE
    itself stays ignored: with its default action a write to a closed TCP socket (a query over TCP
    in `run`) would kill the process."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
