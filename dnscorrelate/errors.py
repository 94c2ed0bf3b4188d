"""The errors a user can cause. Each message says what is wrong and what to do; the CLI prints them
without a traceback and exits 2. Kept in one light module so the CLI can catch them without
importing pandas or bcc."""


class SpecError(Exception):
    """A lab spec, manifest or scenario that cannot be used; names file, field, line and reason."""


class LabError(Exception):
    """Something the lab could not do; the message says what and how to fix it."""


class CaptureError(Exception):
    """Capture cannot run here; the message says why (no bcc, no headers, not root, ...)."""


class EventsError(Exception):
    """An events file that cannot be read; the message names the file and the problem."""


class LogFormatError(Exception):
    """A log format string or log file that cannot be used; the message says which."""


class ClusterError(Exception):
    """A Kubernetes cluster that cannot be built, reached or changed; the message names the step and what to do."""


class FaultNotSupported(ClusterError):
    """A fault the backend cannot make (a kind cluster's links, a running pod's resolv.conf): which, where and why."""

    def __init__(self, fault: str, backend: str, reason: str) -> None:
        super().__init__(f"the {backend} backend cannot make the fault `{fault}`: {reason}")
        self.fault, self.backend, self.reason = fault, backend, reason


class OutputError(Exception):
    """An output file or folder that cannot be written; found before any work is done."""


USER_ERRORS = (SpecError, LabError, CaptureError, EventsError, LogFormatError, ClusterError, OutputError)


# --- ending a command: Ctrl-C, kill, a closed terminal ------------------------------------------------------

TERMINATING = ("SIGTERM", "SIGHUP")  # `kill` and a closed terminal end a command as Ctrl-C does


def interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, so every command's Ctrl-C path (a session
    stopped, the node agents removed) runs for them too."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for name in TERMINATING:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)


class Uninterruptible:
    """`with Uninterruptible() as held:` a step that must finish (removing what a session put on a cluster): Ctrl-C,
    SIGTERM and SIGHUP arriving meanwhile are held, counted in `held.signals`, and the first of them is raised
    as KeyboardInterrupt once the step is done. Outside the main thread (where handlers cannot be set) it does
    nothing."""

    def __init__(self, on_signal=lambda name: None) -> None:
        self.on_signal = on_signal  # told of each held signal (to say the step goes on)
        self.signals: list[str] = []
        self._previous: dict = {}

    def __enter__(self) -> "Uninterruptible":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", *TERMINATING):
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self._previous[number] = signal.signal(number, self._hold)
        return self

    def _hold(self, signum, _frame) -> None:
        import signal

        name = signal.Signals(signum).name
        self.signals.append(name)
        self.on_signal(name)

    def __exit__(self, exc_type, *_) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        if self.signals and exc_type is None:
            raise KeyboardInterrupt(self.signals[0])
