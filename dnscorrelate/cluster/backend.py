"""The seam between a cluster and the live commands: a `Backend` says where to capture, where the
DNS servers' logs are and what the cluster holds; a `Session` captures and follows those logs for a
time window and hands back the evidence. `capture`, `trace`, `run` and the pytest plugin use only this.

    backend = LabBackend.find(name)               # cluster/lab/backend.py; cluster/kube/ next
    with Session(backend) as session:
        ...                                       # traffic; session.new_events() for live views
    evidence = session.evidence()                 # events, parsed logs, capture stats, facts

A backend for a real cluster implements the same protocol: capture targets
from /proc (`/proc/PID/ns/net`, vantage `pod/NS/NAME` or `node/NAME`) or a
node agent, log sources that follow pod logs, facts read from the API into
`cluster.model`. Changing the cluster (faults) is the next seam: `Faults`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.model import Manifest, Pod
from dnscorrelate.errors import CaptureError
from dnscorrelate.schema import ParsedLogs
from dnscorrelate.sources.capture import DEFAULT_PORTS, Target, netns_targets
from dnscorrelate.sources.capture import Capture as LocalCapture
from dnscorrelate.sources.coredns_log import LogFollower
from dnscorrelate.sources.dnstap_live import DnstapFollower

TargetWatcher = Callable[[], list[Target]]


@dataclass(frozen=True)
class LogSource:
    """One DNS server's log: `replica` names it in traces (coredns-0, nodelocal-node-0; a pod's name on a
    cluster), `path` is the file its timestamped lines are in (a backend that streams writes one)."""

    replica: str
    path: str


@dataclass(frozen=True)
class ClientResult:
    """One query a client in a pod made (the lab's clients, the kube backend's through exec): what came back."""

    client: str  # dnspython, glibc, dig
    name: str
    answered: bool  # a response came back (any rcode)
    rcode: str
    answers: tuple[str, ...]
    seconds: float
    error: str = ""


class Capture(Protocol):
    """A capture a `Session` runs: here, in the backend's namespaces (`sources.capture.Capture`), or elsewhere
    (the kube backend's node agents, `kube/agents.py`'s `AgentCapture`). Decoded events, and counters in `stats`
    (complete once stopped and `events()` has decoded)."""

    stats: dict
    warnings: list[str]  # what it could not do, to say (a node whose agent cannot capture, a stream cut short)
    timings: dict[str, float]  # seconds of its own set-up steps beyond compile and attach (the node agents': ready, start)

    @property
    def vantages(self) -> dict: ...
    @property
    def compile_seconds(self) -> float: ...
    @property
    def attach_seconds(self) -> float: ...
    @property
    def remote_nodes(self) -> list[str]:
        """The nodes whose agents capture for it; empty when it captures on this machine."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def new_events(self) -> pd.DataFrame:
        """Events decoded since the last call (for live views)."""
    def drain(self, last: bool = False) -> pd.DataFrame:
        """Events decoded since the last call and forgotten (for a consumer that writes them as they come)."""
    def events(self) -> pd.DataFrame:
        """Every event (after `stop`)."""


class Backend(Protocol):
    name: str

    def pod(self, ref: str, namespace: str) -> Pod:
        """The pod `ref` names (`pod/NAME`, `NAME` or `NS/NAME`); a user error when there is none."""

    def capture_targets(self) -> list[Target]:
        """Network namespaces to capture in now: (path such as /proc/PID/ns/net or /run/netns/X, vantage, role)."""

    def target_watcher(self) -> TargetWatcher | None:
        """A function the capture calls every moment for namespaces that appeared since (pods started mid-capture)."""

    def remote_capture(self, ports: tuple[int, ...]) -> Capture | None:
        """A capture done elsewhere (the kube backend's node agents), or None to capture here in `capture_targets()`."""

    def log_sources(self) -> list[LogSource]:
        """The DNS servers' logs: CoreDNS replicas and NodeLocal DNS."""

    def dnstap_sources(self) -> list[tuple[str, str]]:
        """(replica, file): Frame Streams files a dnstap sink appends to while a session runs (the lab's, with
        `dnstap: true`); empty without dnstap."""

    def facts(self) -> ClusterFacts:
        """What the cluster holds now: its objects, Corefile, DNS settings."""

    def run_queries(self, pod: str, client: str, name: str, rdtype: str, proto: str, count: int, concurrency: int,
                    timeout: float) -> list[ClientResult]:
        """`count` queries of `name` from the pod `pod` (NS/NAME) with a real client (dnspython, glibc, dig)."""

    def save_files(self, directory: Path) -> None:
        """What re-running the analysis offline needs besides the events: each DNS server's log, and what else the
        backend knows of itself (the lab's topology)."""


class Faults(Protocol):
    """The changes a scenario makes, as a cluster would experience them; `runner.apply_fault` hands each fault
    the backend, and the fault calls its method here. A backend that cannot make one raises
    `errors.FaultNotSupported` saying why (the kube backend: the lab's upstream, links and resolv.conf; the
    scenario format refuses them up front too, with file and line). The kube backend makes the others through
    the API and records how long each took to take effect in `propagation`."""

    propagation: list[tuple[str, float]]  # (fault, seconds until in effect), in order; empty where a change is at once

    def set_corefile(self, corefile: str) -> None: ...
    def set_custom_server_block(self, key: str, text: str) -> None: ...
    def apply(self, manifests: list[Manifest]) -> None: ...
    def delete(self, kind: str, namespace: str, name: str) -> None: ...
    def stop_replica(self, replica: int) -> None: ...
    def set_upstream_corefile(self, corefile: str) -> None: ...
    def set_link(self, source: str, target: str, loss: float, drop: bool) -> None: ...
    def set_resolv_conf(self, pod: str, text: str) -> None: ...


@dataclass
class Evidence:
    """What a session saw, ready for `analysis.analyze(events, logs, facts, capture_stats)`."""

    events: pd.DataFrame
    logs: ParsedLogs
    capture_stats: dict
    facts: ClusterFacts


class Session:
    """Capture in every target of a backend (and in new ones as they appear), with its DNS servers' logs and facts."""

    def __init__(self, backend: Backend, ports: tuple[int, ...] = DEFAULT_PORTS) -> None:
        self.backend = backend
        self.capture: Capture = backend.remote_capture(tuple(ports)) or LocalCapture(
            backend.capture_targets(), ports=tuple(ports), watch=backend.target_watcher())
        taps = backend.dnstap_sources()  # CoreDNS's own account, one more source
        self.dnstap = DnstapFollower(taps, [(s.replica, s.path) for s in backend.log_sources()] if taps else [])
        self.running = False
        self.facts = backend.facts()  # as the session starts; evidence() reads them again at the end
        self.followed = LogFollower()  # the logs, read again each tick; lines lost to a rotation counted

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Session:
        self.capture.start()
        self.dnstap.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.dnstap.sources and self.running:
            self.dnstap.settle()  # CoreDNS sends its dnstap buffer once a second: let the last one arrive
        self.running = False
        self.capture.stop()
        self.dnstap.stop()

    @property
    def vantages(self) -> dict:
        return self.capture.vantages

    @property
    def stats(self) -> dict:
        """Capture counters (complete once stopped and `events()` has decoded), and `dnstap_*` ones with dnstap."""
        if not self.dnstap.sources:
            return self.capture.stats
        return {**self.capture.stats, **{f"dnstap_{k}": v for k, v in self.dnstap.stats.items()}}

    @property
    def capture_warnings(self) -> list[str]:
        """What the capture could not do, to say (a node whose agent cannot capture, a stream cut short)."""
        return list(self.capture.warnings)

    @property
    def compile_seconds(self) -> float:
        return self.capture.compile_seconds

    @property
    def attach_seconds(self) -> float:
        return self.capture.attach_seconds

    def new_events(self) -> pd.DataFrame:
        """Packets decoded since the last call (and dnstap messages received), for live views."""
        if not self.dnstap.sources:
            return self.capture.new_events()
        return self.dnstap.new_with_packets(self.capture.new_events())

    def drain_events(self, last: bool = False) -> pd.DataFrame:
        """Packets decoded since the last call and forgotten here (with the dnstap messages received meanwhile),
        for a consumer that writes them as they come. `last` (after `stop`) also decodes the TCP messages left
        unfinished and completes `stats`."""
        packets = self.capture.drain(last)
        if last:
            self.capture.events()  # nothing left to decode: completes the counters
        if not self.dnstap.sources:
            return packets
        return self.dnstap.new_with_packets(packets)

    def events(self) -> pd.DataFrame:
        """Every packet captured (after `stop`), with the dnstap messages CoreDNS sent meanwhile at its replica
        (forwarder rows carrying their packets' DNS ids: `dnstap_live.align_forwarder_ids`)."""
        if not self.dnstap.sources:
            return self.capture.events()
        return self.dnstap.with_packets(self.capture.events())

    def logs(self, corefile: str | None = None) -> ParsedLogs:
        """Every DNS server's log so far, each named by its source's replica, parsed with the Corefile's
        log formats (the session's facts' by default)."""
        corefile = self.facts.corefile if corefile is None else corefile
        # A log rotated away (renamed, deleted, not yet recreated) while `trace` follows it is said and the
        # others read, instead of ending the session; one rotated or truncated since the last read has its
        # lost lines counted (LogFollower). One never read is an error, as before.
        return self.followed.read([(s.replica, s.path) for s in self.backend.log_sources()], corefile or None)

    def evidence(self) -> Evidence:
        """Events, logs and capture counters of the session, with the facts as they are now (after any fault)."""
        self.facts = self.backend.facts()
        events = self.events()
        return Evidence(events, self.logs(), self.stats, self.facts)


class NamespacesBackend:
    """Bare network namespaces a user names (`capture --netns`): packets only, no logs, no cluster facts."""

    name = "netns"

    def __init__(self, specs: list[str]) -> None:
        self.targets = netns_targets(specs)

    def pod(self, ref: str, namespace: str) -> Pod:
        raise CaptureError(f"{ref}: bare network namespaces have no pods; use a lab or a cluster")

    def capture_targets(self) -> list[Target]:
        return list(self.targets)

    def target_watcher(self) -> TargetWatcher | None:
        return None

    def remote_capture(self, ports: tuple[int, ...]) -> Capture | None:
        return None

    def log_sources(self) -> list[LogSource]:
        return []

    def dnstap_sources(self) -> list[tuple[str, str]]:
        return []

    def facts(self) -> ClusterFacts:
        return ClusterFacts()

    def run_queries(self, pod: str, *args) -> list[ClientResult]:
        raise CaptureError(f"{pod}: bare network namespaces have no pods to ask from; use a lab or a cluster")

    def save_files(self, directory: Path) -> None:
        pass  # no logs, no cluster
