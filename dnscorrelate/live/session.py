"""A live session: capture in every target of a backend (and in new ones as they appear) for a time window,
with its DNS servers' logs followed, its dnstap if it has one, and its facts; then the evidence.
`capture`, `trace`, `run` and the pytest plugin use this, on any `cluster.backend.Backend`.

    with Session(backend) as session:
        ...                                       # traffic; session.new_events() for live views
    evidence = session.evidence()                 # events, parsed logs, capture stats, facts
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dnscorrelate import events
from dnscorrelate.cluster.backend import Backend, Capture, ClientResult, LogSource, Target, TargetWatcher
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.model import Pod
from dnscorrelate.errors import CaptureError
from dnscorrelate.live.capture import DEFAULT_PORTS, netns_targets
from dnscorrelate.live.capture import Capture as LocalCapture
from dnscorrelate.live.dnstap import DnstapFollower
from dnscorrelate.live.hubble import HubbleFollower
from dnscorrelate.live.logs import LogFollower
from dnscorrelate.schema import ParsedLogs

RECENT_NS = 10_000_000_000  # how far back Hubble's live rows look for the packet whose DNS id they take


@dataclass
class Evidence:
    """What a session saw, ready for `analysis.analyze(events, logs, facts, capture_stats)`."""

    events: pd.DataFrame
    logs: ParsedLogs
    capture_stats: dict
    facts: ClusterFacts


class Session:
    """Capture in every target of a backend (and in new ones as they appear), with its DNS servers' logs and facts."""

    def __init__(self, backend: Backend, ports: tuple[int, ...] = DEFAULT_PORTS, hubble: bool = False) -> None:
        self.backend = backend
        # Cilium's Hubble, one more vantage (`trace --hubble`): asked first, so a cluster without it fails before capturing
        self.hubble = HubbleFollower(backend.hubble_streams(tuple(ports)) if hubble else [], tuple(ports))
        self.recent_packets: list[pd.DataFrame] = []  # what Hubble's live rows take their DNS ids from
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
        self.hubble.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.dnstap.sources and self.running:
            self.dnstap.settle()  # CoreDNS sends its dnstap buffer once a second: let the last one arrive
        self.running = False
        self.hubble.stop()
        self.capture.stop()
        self.dnstap.stop()

    @property
    def vantages(self) -> dict:
        return self.capture.vantages

    @property
    def stats(self) -> dict:
        """Capture counters (complete once stopped and `events()` has decoded), `dnstap_*` ones with dnstap and
        `hubble_*` ones with Hubble."""
        stats = dict(self.capture.stats)
        if self.dnstap.sources:
            stats.update({f"dnstap_{k}": v for k, v in self.dnstap.stats.items()})
        if self.hubble.enabled:
            stats.update({f"hubble_{k}": v for k, v in self.hubble.stats.items()})
        return stats

    @property
    def capture_warnings(self) -> list[str]:
        """What the capture could not do, to say (a node whose agent cannot capture, a stream cut short, Hubble's
        own caveats)."""
        return list(self.capture.warnings) + self.hubble.warnings

    @property
    def compile_seconds(self) -> float:
        return self.capture.compile_seconds

    @property
    def tracer_kind(self) -> str:
        """`bcc` or `core` (live/bpf.py); the node agents' kinds joined by `,`."""
        return self.capture.tracer_kind

    @property
    def attach_seconds(self) -> float:
        return self.capture.attach_seconds

    def new_events(self) -> pd.DataFrame:
        """Packets decoded since the last call (and dnstap messages received, and Hubble's flows), for live views."""
        new = self.capture.new_events()
        if self.dnstap.sources:
            new = self.dnstap.new_with_packets(new)
        if not self.hubble.enabled:
            return new
        self.recent_packets = [f for f in self.recent_packets + [new] if len(f) and f["ts_ns"].max() >= time.time_ns() - RECENT_NS]
        return self.hubble.new_events(new, events.concat(self.recent_packets) if self.recent_packets else new)

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
        (forwarder rows carrying their packets' DNS ids: `live.dnstap.align_forwarder_ids`)."""
        packets = self.capture.events()
        if self.dnstap.sources:
            packets = self.dnstap.with_packets(packets)
        return self.hubble.events(packets) if self.hubble.enabled else packets

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

    def hubble_streams(self, ports: tuple[int, ...]) -> list:
        raise CaptureError("--hubble reads Cilium's Hubble: bare network namespaces have none; use --context on a Cilium cluster")

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
