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
