"""The seam between a cluster and the live commands, declared: a `Backend` says where to capture, where the
DNS servers' logs are, what the cluster holds and how to ask from its pods; a `Capture` is what a live
session runs (here, or in a backend's node agents); `Faults` are the changes a scenario makes. `live.Session`,
`capture`, `trace`, `run` and the pytest plugin use a backend only through these.

    backend = LabBackend.find(name)               # cluster/lab/backend.py; cluster/kube/backend.py
    with Session(backend) as session:             # live/session.py
        ...                                       # traffic; session.new_events() for live views
    evidence = session.evidence()                 # events, parsed logs, capture stats, facts

A backend for a real cluster implements the same protocols: capture targets from /proc
(`/proc/PID/ns/net`, vantage `pod/NS/NAME` or `node/NAME`) or a node agent's capture, log sources that
follow pod logs, facts read from the API into `cluster.model`, faults through the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.model import Manifest, Pod

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Target:
    """A namespace to capture in: `path` is /run/netns/NAME or /proc/PID/ns/net."""

    path: str
    vantage: str
    role: str = "other"
    # a node's: its copies of what it sends into a captured namespace may be skipped (live/capture.py); the lab's, whose
    # backend captures every namespace on it. A cluster's nodes keep them: the clock estimate across nodes and the node
    # agents' filter were not yet shown to give the same traces without them (tests/cluster/test_fleet.py)
    skip_copies: bool = False


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
    """A capture a `Session` runs: here, in the backend's namespaces (`live.capture.Capture`), or elsewhere
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
    def tracer_kind(self) -> str:
        """How the tracer was loaded (`live.bpf.TRACERS`: `bcc` or `core`; the node agents' kinds joined by `,`)."""
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


class HubbleStream(Protocol):
    """One Cilium agent's Hubble flows as `hubble observe --follow -o json` prints them (`trace --hubble`)."""

    node: str

    def lines(self, since_ns: int) -> Iterator[str]:
        """Its lines from the flows since `since_ns` (ns since the epoch: Hubble keeps a ring of recent flows, so
        none is missed while the stream opens) and then as they come; ends when closed, raises when cut short."""

    def close(self) -> None: ...


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

    def hubble_streams(self, ports: tuple[int, ...]) -> list[HubbleStream]:
        """Each Cilium agent's Hubble flows on `ports` (`trace --hubble`), checked to answer; a CaptureError
        saying why where the backend has none."""

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
