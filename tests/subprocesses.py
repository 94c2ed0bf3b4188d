"""Subprocesses the tests stop as a user would, with Ctrl-C (SIGINT)."""

import signal


def ctrl_c_reaches_it() -> None:
    """A `preexec_fn`: SIGINT back to its default in the child. A shell starts background jobs with SIGINT ignored,
    and a child keeps that: a suite started in the background (`make test &`, under nohup) could not stop its CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
