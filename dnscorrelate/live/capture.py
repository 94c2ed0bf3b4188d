"""Capture DNS packets in a set of network namespaces: a `cluster.backend.Capture` on this machine. A backend
names the targets (the lab's `cluster/lab/capture.py`); `live.session.Session` is how the commands use it.

    with Capture(targets, watch=new_targets) as capture:
        ...                                  # traffic
    frame = capture.events()                 # the packet-event table
    capture.stats                            # lost samples, decode errors, non-DNS packets, ...

The tracer is compiled once per process (see `bpf.tracer`); a Capture only
attaches dispatchers, which costs well under a millisecond per namespace.
Namespaces that appear while a capture runs are attached by `watch`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pandas as pd

from dnscorrelate.cluster.backend import Target
from dnscorrelate.live import bpf, links, nsenter
from dnscorrelate.live.records import RecordBuffer
from dnscorrelate.sources.decode import Vantage, concat_parts, decode_settled

DEFAULT_PORTS = (53,)
WATCH_INTERVAL_S = 0.2
POLL_INTERVAL_MS = 20  # at most this much delay before live views see an event
# A consumer that takes records at its own pace (the node agent) lets them gather in the ring buffer between its
# takes: each read has a fixed cost, and each batch one in every step after it. The reader still reads early once
# the ring is this full, so that a burst or a stalled consumer loses nothing: it looks every POLL_INTERVAL_MS, and
# the rest of the 32 MiB ring holds 36k records: 0.4 s at 85k records a second, the lab's one node at 10k qps, where
# the 0.2 s between two of a node agent's takes fill a little under a third.
EARLY_READ_FILL = 0.34
# CoreDNS's namespace is captured receive-only where the node's own namespace is captured too: every packet CoreDNS
# sends crosses its veth, and the node records it on the other end a microsecond later, byte for byte (the
# correlator names CoreDNS as its sender: senders.py `sent_from`). A second record of each costs CoreDNS's core
# the tracer's run and the kernel's clone of the packet for the tap: a quarter of what capture costs it
# (bench/README.md, capture cost at the maximum).
RECEIVE_ONLY_ROLES = ("coredns",)
# Likewise a node's namespace skips its copy of what it sends into a veth whose other end is a captured namespace (a
# pod's, CoreDNS's): that namespace records the packet as it arrives, a microsecond later (links.py). The copy would
# cost the sender's core a tracer run: on the way back from CoreDNS, CoreDNS's. The dispatcher skips it in the kernel
# (bpf.py `dispatcher_instructions`); the correlator reads the forwarding and the DNAT from the namespace's receipt
# (correlate/legs.py).
SKIP_COPIES_MAX = 1024  # veths a node's dispatcher compares against: one instruction each
# Not where the node's own namespace answers pods' DNS: its answer's one sighting is the node's copy. Cilium's DNS
# proxy (in cilium-agent, host network; its node has `cilium_host`) and NodeLocal DNS as a host-network DaemonSet (its
# dummy `nodelocaldns`) do.
NODE_DNS_INTERFACES = ("cilium_host", "nodelocaldns")
# A consumer that drains (`capture -o FILE.parquet`) bounds what waits undecoded: past BACKLOG_MAX_BYTES of
# records (about 2.7 s at 10k qps, 78k records/s) the reader stops taking from the ring buffer until decoding
# catches up, so the kernel drops what does not fit and counts it (`lost_samples`) instead of memory growing.
BACKLOG_MAX_BYTES = int(os.environ.get("DNSCORRELATE_BACKLOG_BYTES", 128 << 20))  # only tests and loss experiments change it
DECODE_CHUNK_BYTES = 32 << 20  # drain() decodes at most this much at once: its working memory stays bounded


def netns_targets(specs: list[str]) -> list[Target]:
    """Targets from user arguments: a /run/netns name, a path, or /proc/PID/ns/net."""
    targets = []
    for spec in specs:
        path = spec if "/" in spec else str(nsenter.NETNS_DIR / spec)
        if not os.path.exists(path):
            raise bpf.CaptureError(f"{spec}: no such network namespace ({path})")
        targets.append(Target(path, spec))
    return targets


def answers_dns_itself(interfaces) -> bool:
    """Whether a node's namespace, by its interfaces' names, answers pods' DNS itself (NODE_DNS_INTERFACES)."""
    return any(name in NODE_DNS_INTERFACES for name in interfaces)


def boot_to_wall_ns() -> int:
    """Offset from CLOCK_BOOTTIME (the kernel's timestamps) to wall-clock time, from the tightest of a few samples."""
    best = None
    for _ in range(5):
        before = time.time_ns()
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        after = time.time_ns()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) // 2 - boot)
    return best[1]


def interface_names(path: str) -> dict[int, str]:
    with nsenter.entered_path(path):
        return dict(socket.if_nameindex())


class Capture:
    def __init__(
        self,
        targets: list[Target],
        ports: tuple[int, ...] = DEFAULT_PORTS,
        watch: Callable[[], list[Target]] | None = None,
        read_every_s: float = POLL_INTERVAL_MS / 1000,
        receive_only_servers: bool = True,
        skip_copies: bool = True,
    ) -> None:
        self.targets = list(targets)
        self.receive_only_servers = receive_only_servers  # RECEIVE_ONLY_ROLES' namespaces, where a node's is captured
        self.skip_copies = skip_copies  # a node's copies of what enters a captured namespace (SKIP_COPIES_MAX)
        self._nodes: dict[int, tuple[socket.socket, str]] = {}  # capture id: (socket, namespace path) of each node
        self._others: dict[int, str] = {}  # capture id: namespace path of each namespace that is not a node
        self._peers: dict[int, dict[int, int]] = {}  # capture id: links.veth_peers of those, read once a marked node is
        self.skipped_on: dict[str, list[int]] = {}  # node vantage: the veths whose copies it skips
        self.read_every_s = read_every_s  # how long records may wait in the ring buffer (unless it fills)
        self.ports = ports
        self.watch = watch
        self.vantages: dict[int, Vantage] = {}
        self.sockets: list[socket.socket] = []
        self.records = RecordBuffer()  # the tracer's records as read, and what live views decoded of them
        # Every row is timed by this machine's clock, whatever node the facts put its namespace on: the correlator must
        # not estimate offsets between those nodes (an estimate within its bound of zero still moves one node's rows
        # against another vantage's, and can reorder a masqueraded hop). Said from the start: live views analyse
        # before stop() counts.
        self.stats: dict[str, int | float] = {"one_clock": 1}
        self.warnings: list[str] = []  # `cluster.backend.Capture`'s: a local capture fails instead
        self.timings: dict[str, float] = {}  # no set-up steps beyond compile and attach
        self.attach_seconds = 0.0
        self.compile_seconds = 0.0
        self.tracer_kind = ""  # bpf.TRACERS: how the tracer was loaded, once started
        self._attached_inodes: set[int] = set()
        self.receive_only: list[str] = []  # the vantages captured receive-only (RECEIVE_ONLY_ROLES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: pd.DataFrame | None = None
        self._drained: Counter = Counter()  # decode counters and packets of what drain() handed out
        self._held = b""  # records of TCP messages drain() saw unfinished: decoded with what follows
        self.backlog_limit: int | None = None  # bytes of undecoded records the reader waits at (set by drain)
        self.backlog_full_seconds = 0.0  # time the reader waited for decoding to catch up
        self._last_read = 0.0  # time.monotonic() of the last read of the ring buffer
        # Held to read the ring buffer, and to attach a namespace until its vantage is known: the reader thread and a
        # consumer's `taking` both read, and no record may be taken before its vantage is in `vantages`.
        self._reading = threading.Lock()

    @property
    def remote_nodes(self) -> list[str]:
        return []  # it captures on this machine

    @property
    def raw(self) -> list[bytes]:
        """The record batches held (read, not yet taken), as the ring buffer's reader appends them."""
        return self.records.batches

    # --- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self.tracer = bpf.tracer()
        self.compile_seconds = time.monotonic() - started  # bcc compiling, or libbpf loading the CO-RE object
        self.tracer_kind = self.tracer.how
        if self.tracer._sink is not None:
            raise bpf.CaptureError("another capture is already running in this process")
        self.tracer.reset()
        self.tracer.set_ports(list(self.ports))
        self._counters_before = self.tracer.counters()
        self.boot_to_wall = boot_to_wall_ns()
        self.tracer.drain()  # drops what an earlier capture's last packets left: their capture ids are not ours
        self.tracer.start(self.records.batches)
        self.started_ns = time.time_ns()
        attach_started = time.monotonic()
        for target in self.targets:
            self._attach(target)
        self.attach_seconds = time.monotonic() - attach_started
        self._thread = threading.Thread(target=self._run, name="dnscorrelate-capture", daemon=True)
        self._thread.start()

    def _attach(self, target: Target) -> None:
        with self._reading:  # a record of this namespace is read only once its vantage is known
            self._attach_unread(target)

    def _attach_unread(self, target: Target) -> None:
        capture_id = len(self.vantages) + 1
        try:
            # A namespace is attached once, whatever path names it: a later watch round may find a pod's namespace
            # through another of its processes, and a second socket there would report each packet twice.
            inode = os.stat(target.path).st_ino
            if inode in self._attached_inodes:
                return
            receive_only = self.receives_only(target)
            sock = self.tracer.attach(target.path, capture_id, receive_only)
            names = interface_names(target.path)
        except OSError as err:
            if target in self.targets:
                raise bpf.CaptureError(f"cannot capture in {target.path}: {err.strerror}") from None
            return  # a namespace that vanished as the watcher found it
        self.sockets.append(sock)
        self.vantages[capture_id] = Vantage(inode, target.vantage, target.role, names)
        self._attached_inodes.add(inode)
        self.receive_only += [target.vantage] if receive_only else []
        if self.skip_copies:
            self._skip_copies_into(capture_id, target, sock)

    def _skip_copies_into(self, capture_id: int, target: Target, sock: socket.socket) -> None:
        """Note the new namespace, and have every marked node's dispatcher skip what it sends into a captured one. Without
        a marked node (a cluster's), no namespace's links are read."""
        if target.role == "node":
            if target.skip_copies:
                self._nodes[capture_id] = (sock, target.path)
        else:
            self._others[capture_id] = target.path
        if not self._nodes:
            return
        for other, path in self._others.items():
            if other not in self._peers:
                try:
                    self._peers[other] = links.veth_peers(path)
                except OSError:
                    self._peers[other] = {}  # a namespace that vanished: nothing of it to skip
        try:
            for node_id, (node_sock, path) in self._nodes.items():
                if answers_dns_itself(self.vantages[node_id].ifnames.values()):
                    continue
                skip = sorted(links.copies_into_captured(links.veth_peers(path), list(self._peers.values())))[:SKIP_COPIES_MAX]
                vantage = self.vantages[node_id].vantage
                if skip != self.skipped_on.get(vantage, []):
                    self.tracer.skip_outgoing(node_sock, node_id, tuple(skip))
                    self.skipped_on[vantage] = skip
        except OSError:
            return  # a namespace that vanished: its node keeps the copies it records (nothing is lost, one more record)

    def receives_only(self, target: Target) -> bool:
        """Whether `target` is captured receive-only: a server's namespace, in a capture that has a node's."""
        nodes = [t for t in self.targets if t.role == "node"] + [v for v in self.vantages.values() if v.role == "node"]
        return self.receive_only_servers and target.role in RECEIVE_ONLY_ROLES and bool(nodes)

    def _run(self) -> None:
        next_watch = time.monotonic() + WATCH_INTERVAL_S
        while not self._stop.is_set():
            if self.backlog_limit is not None and self.backlog_bytes() >= self.backlog_limit:
                # Decoding is behind: leave the records in the ring buffer, which drops (and counts) what does not fit.
                waited = time.monotonic()
                self._stop.wait(POLL_INTERVAL_MS / 1000)
                self.backlog_full_seconds += time.monotonic() - waited
            else:
                if self.read_every_s > POLL_INTERVAL_MS / 1000:
                    self._stop.wait(POLL_INTERVAL_MS / 1000)  # a consumer reads at its takes: only watch the ring fill
                else:
                    self.tracer.ring.wait(POLL_INTERVAL_MS)  # the kernel wakes us only every 1024 events a CPU
                if time.monotonic() - self._last_read >= self.read_every_s or self.tracer.ring.fill() >= EARLY_READ_FILL:
                    self.read_ring()
            if self.watch and time.monotonic() >= next_watch:
                for target in self.watch():
                    self._attach(target)
                next_watch = time.monotonic() + WATCH_INTERVAL_S

    def stop(self) -> None:
        if self._thread is None:
            return
        for sock in self.sockets:
            sock.close()  # detaches the filter: no new events
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.tracer.drain()
        self.tracer.stop()
        self.stopped_ns = time.time_ns()
        kernel = self.kernel_counters()
        self.stats.update({
            "namespaces": len(self.vantages),
            "namespaces_receive_only": len(self.receive_only),
            "veths_node_copies_skipped": sum(len(v) for v in self.skipped_on.values()),
            "events": kernel["events"],
            "lost_samples": kernel["lost"],
            "non_dns_packets": kernel["non_dns"],
            "non_ip_packets": kernel["non_ip"],
            "truncated_headers": kernel["truncated_header"],
            "tcp_without_payload": kernel["tcp_no_payload"],
            "records_received": self.records.records_received(),
            "compile_seconds": round(self.compile_seconds, 3),
            "attach_seconds": round(self.attach_seconds, 4),
            "duration_seconds": round((self.stopped_ns - self.started_ns) / 1e9, 3),
        })
        if self.backlog_limit is not None:
            self.stats["backlog_full_seconds"] = round(self.backlog_full_seconds, 3)

    def kernel_counters(self) -> dict[str, int]:
        """The tracer's counters since this capture started (events, lost, non_dns, ...), while it runs."""
        after = self.tracer.counters()
        return {name: after[name] - self._counters_before.get(name, 0) for name in after}

    def backlog_bytes(self) -> int:
        """Bytes of records read from the ring buffer and not yet decoded or taken."""
        return self.records.pending_bytes()

    def read_ring(self) -> None:
        """Move the records in the ring buffer into `raw`, as one batch."""
        with self._reading:
            self._last_read = time.monotonic()
            self.tracer.drain()

    @contextlib.contextmanager
    def taking(self) -> Iterator[list]:
        """The records so far, removed, for a consumer that forwards them as they come (the node agent) instead of
        decoding them here, and is done with them inside the block: the batches the reader read, then the ring
        buffer's records read in place, as EVENT_DTYPE rows (not copied: valid only inside the block; the ring is
        freed at its end, and the reader waits until then). `events()` and `new_events()` then see only the rest."""
        with self._reading:
            batches = self.records.take(len(self.raw))
            with self.tracer.ring.in_place() as in_ring:
                self.records.took_elsewhere(in_ring.nbytes)
                self._last_read = time.monotonic()
                yield batches + [in_ring] if len(in_ring) else batches

    def drain(self, last: bool = False) -> pd.DataFrame:
        """Decode and forget the records read so far, for a consumer that writes events as they come (`capture
        -o FILE.parquet`): memory stays bounded however long the capture runs. `events()` then holds only the
        rest, while `stats` (decode counters, `packets`) count everything. TCP messages not finished yet are
        kept for the next call, unless it is the `last` (after `stop`).

        From the first call on, the records waiting are bounded (`BACKLOG_MAX_BYTES`: the reader pauses and the
        kernel counts what it drops as `lost_samples`, the pauses as `backlog_full_seconds`), and they are decoded
        `DECODE_CHUNK_BYTES` at a time, each chunk forgotten before the next is joined; the events of the chunks
        are the rows one decode of them all gives."""
        if self.backlog_limit is None:
            self.backlog_limit = BACKLOG_MAX_BYTES
        remaining = len(self.raw)  # what arrived so far; what arrives meanwhile waits for the next call
        frames = []
        while True:
            count, size = 0, 0
            while count < remaining and (count == 0 or size + len(self.raw[count]) <= DECODE_CHUNK_BYTES):
                size += len(self.raw[count])
                count += 1
            remaining -= count
            raw = self._held + b"".join(self.records.take(count))
            frame, counts, self._held = decode_settled(raw, self.vantages, self.boot_to_wall, hold_open=not (last and remaining == 0))
            del raw
            self._drained.update(counts)
            self._drained["packets"] += len(frame)
            frames.append(frame)
            if remaining == 0:
                return concat_parts(frames)

    # --- results -----------------------------------------------------------

    def new_events(self) -> pd.DataFrame:
        """Events of the records that arrived since the last call (for live views); counters keep adding up."""
        return self.records.new_events(self.vantages, self.boot_to_wall)

    def events(self) -> pd.DataFrame:
        """The packet-event table of everything captured (decoded once, then cached)."""
        if self._frame is None:
            self._frame = self.records.decode_all(self.vantages, self.boot_to_wall, head=self._held)
            counts = self.records.decode_stats + Counter({k: v for k, v in self._drained.items() if k != "packets"})
            self.stats.update({k: int(v) for k, v in counts.items()})
            self.stats.setdefault("decode_errors", 0)
            self.stats["packets"] = len(self._frame) + self._drained["packets"]
        return self._frame
