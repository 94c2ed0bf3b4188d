"""Cilium's Hubble as a live source (`trace --hubble`): each agent's flows read as the session runs, parsed
by `sources.hubble` (the reader of `correlate --hubble-json`), one more vantage beside the capture.

Each `HubbleStream` (`cluster/backend.py`) is one agent's `hubble observe --follow -o json` (the kube backend runs it through the
API server's exec in every Cilium agent pod: `cluster/kube`); one thread per stream keeps its lines. Rows
are what `read_hubble_lines` makes of all lines so far, restricted to the session's window (a flow timed
before the session started is counted in `outside_session`, not kept).

Hubble has no DNS id: its reader pairs each REQUEST with its RESPONSE under a synthetic id (65536 and up).
Left so, each lookup would be two traces, ours and Hubble's. `align_ids` gives each DNS proxy row the id
of the client's own packet of the same lookup that the capture saw (same client address and port,
protocol, direction, name and type, nearest in time within ALIGN_WINDOW_NS), so Hubble's rows join the
trace's legs; the other side of a pair takes the same id when the capture saw only one side; rows of a
lookup the capture did not see at all keep their synthetic id and are counted (`ids_without_packet`).
The id the proxy itself sends on to CoreDNS is another one (Cilium's shared DNS client picks it): that leg
is the capture's and CoreDNS's log's, not Hubble's.
"""

from __future__ import annotations

import bisect
import threading
import time

import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.cluster.backend import HubbleStream
from dnscorrelate.sources.hubble import read_hubble_lines

ALIGN_WINDOW_NS = 1_000_000_000
SETTLE_NS = 3_000_000_000  # a live view waits this long for a request's response, or its packet, before showing it alone
STOP_WAIT_S = 1.5  # what stop() gives the agents to send the last flows (Hubble's follow mode is prompt)
STOP_QUIET_S, STOP_LIMIT_S = 0.5, 4.0  # then until quiet and every recent request answered (a loaded node prints late), STOP_LIMIT_S at most
RECENT_S = 5.0  # a request read this long before the stop may still get its response; an older one without it never will


class HubbleFollower:
    """Every agent's Hubble flows while a session runs, as packet-event rows (`events`, `new_events`) and
    counters (`stats`, shown as `hubble_*`)."""

    def __init__(self, streams: list[HubbleStream], ports: tuple[int, ...] = (53,)) -> None:
        self.streams = streams
        self.ports = tuple(ports)
        self.lines: list[str] = []
        self.arrived: list[float] = []  # when each line was read (time.monotonic)
        self.lines_by_node: dict[str, int] = {s.node: 0 for s in streams}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.started_ns = 0
        self.stopped_ns = 0
        self.shown: set[tuple] = set()
        self.counters: dict = {}

    @property
    def enabled(self) -> bool:
        return bool(self.streams)

    def start(self) -> None:
        self.started_ns = time.time_ns()
        for stream in self.streams:
            thread = threading.Thread(target=self.follow, args=(stream,), name=f"hubble-{stream.node}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def follow(self, stream: HubbleStream) -> None:
        try:
            for line in stream.lines(self.started_ns):
                with self.lock:
                    self.lines.append(line)
                    self.arrived.append(time.monotonic())
                    self.lines_by_node[stream.node] += 1
        except Exception as err:  # noqa: BLE001 - a stream cut short is said, and the others go on
            if not self.stopped_ns:
                with self.lock:
                    self.errors.append(f"hubble on {stream.node}: the flow stream ended: {err}")

    def stop(self) -> None:
        if self.stopped_ns or not self.streams:
            return
        time.sleep(STOP_WAIT_S)
        self.settle()
        self.stopped_ns = time.time_ns()
        for stream in self.streams:
            stream.close()
        for thread in self.threads:
            thread.join(timeout=5)

    def settle(self) -> None:
        """Wait until no flow line arrived for STOP_QUIET_S and every DNS request read in the last RECENT_S has
        its response, STOP_LIMIT_S at most: on a loaded machine a lookup's last flows (the proxy's response) come
        seconds late, after a quiet spell, and a session that stops before them shows the lookup unanswered. Only
        recent lines are read again (not the whole session's), and a recent request that truly has no response
        (the proxy dropped it) costs the stop the whole limit."""
        started = time.monotonic()
        deadline = started + STOP_LIMIT_S
        with self.lock:
            seen = len(self.lines)
        while time.monotonic() < deadline:
            time.sleep(STOP_QUIET_S)
            with self.lock:
                seen, before = len(self.lines), seen
                recent = self.lines[bisect.bisect_left(self.arrived, started - STOP_WAIT_S - RECENT_S):] if seen == before else []
            if seen == before and not requests_unanswered(recent, self.ports):
                return

    @property
    def warnings(self) -> list[str]:
        with self.lock:
            return list(self.errors) + list(self.counters.get("warnings", []))

    def rows(self) -> pd.DataFrame:
        """All rows so far within the session's window; `counters` updated."""
        with self.lock:
            lines = list(self.lines)
        frame, stats = read_hubble_lines(lines, "hubble", self.ports, require_flows=False)
        end = self.stopped_ns or time.time_ns()
        inside = (frame["ts_ns"] >= self.started_ns) & (frame["ts_ns"] <= end)
        stats["outside_session"] = int((~inside).sum())
        stats["rows"] = int(inside.sum())
        stats["lines_by_node"] = dict(self.lines_by_node)
        self.counters = stats
        return frame[inside.to_numpy()].reset_index(drop=True)

    def events(self, packets: pd.DataFrame) -> pd.DataFrame:
        """Hubble's rows of the whole session, ids aligned to `packets` (the capture's), with `packets`."""
        rows = self.rows()
        align_ids(rows, packets, self.counters)
        return events.concat([packets, rows]) if len(rows) else packets

    def new_events(self, packets: pd.DataFrame, seen_packets: pd.DataFrame) -> pd.DataFrame:
        """Rows not shown before, ids aligned to the packets seen so far (`seen_packets`), with the new `packets`.
        A request waits up to SETTLE_NS for its response so the pair comes together, and a DNS row for the
        captured packet whose id it takes; after that it is shown as it is."""
        rows = self.rows()
        unanswered = unanswered_requests(rows)
        synthetic = rows["dns_id"].to_numpy().copy()
        align_ids(rows, seen_packets, self.counters)
        # the capture's packet of a lookup may be decoded after Hubble's rows of it: a row not yet joined waits too
        unjoined = ((rows["kind"] == "dns").to_numpy() & (rows["dns_id"].to_numpy() == synthetic))
        waiting = (unanswered | unjoined) & (rows["ts_ns"] > time.time_ns() - SETTLE_NS).to_numpy()
        if self.stopped_ns:
            waiting[:] = False  # nothing more will come
        keys = list(zip(rows["ts_ns"], rows["vantage"], rows["ifname"], rows["qr"], rows["src_ip"], rows["src_port"],
                        rows["dst_ip"], rows["dst_port"], rows["kind"]))
        fresh = np.array([k not in self.shown and not w for k, w in zip(keys, waiting)], dtype=bool)
        self.shown.update(k for k, f in zip(keys, fresh) if f)
        new = rows[fresh] if len(rows) else rows
        return events.concat([packets, new]) if len(new) else packets

    @property
    def stats(self) -> dict:
        shown = {k: v for k, v in self.counters.items() if k != "warnings"}
        shown["streams"] = len(self.streams)
        shown["stream_errors"] = len(self.errors)
        return shown


def unanswered_requests(rows: pd.DataFrame) -> np.ndarray:
    """Which rows are DNS proxy requests whose response is not among `rows` (their synthetic id, from the
    reader's pairing, is on no response)."""
    dns_rows = rows["kind"] == "dns"
    answered = set(rows.loc[dns_rows & rows["qr"], "dns_id"])
    return (dns_rows & ~rows["qr"] & ~rows["dns_id"].isin(answered)).to_numpy()


def align_ids(rows: pd.DataFrame, packets: pd.DataFrame, stats: dict) -> None:
    """Give each DNS proxy row (in place) the DNS id of the client's own packet of the same lookup, when the
    capture saw one (module docstring), and the other side of its pair the same id; counts `ids_aligned`,
    `ids_aligned_by_pair` and `ids_without_packet` into `stats`."""
    proxy = np.flatnonzero((rows["kind"] == "dns").to_numpy()) if len(rows) else np.array([], dtype=int)
    stats["ids_aligned"], stats["ids_aligned_by_pair"], stats["ids_without_packet"] = 0, 0, 0
    if not len(proxy):
        return
    dns_packets = packets[(packets["kind"] == "dns") & (packets["ifname"] != "dns-proxy")] if len(packets) else packets
    index = {}
    for ts, qr, proto, src_ip, src_port, dst_ip, dst_port, qname, qtype, dns_id in zip(
            dns_packets["ts_ns"], dns_packets["qr"], dns_packets["proto"], dns_packets["src_ip"], dns_packets["src_port"],
            dns_packets["dst_ip"], dns_packets["dst_port"], dns_packets["qname"], dns_packets["qtype"], dns_packets["dns_id"]):
        client = (dst_ip, dst_port) if qr else (src_ip, src_port)
        index.setdefault((bool(qr), str(proto), str(client[0]), int(client[1]), str(qname), str(qtype)), []).append((int(ts), int(dns_id)))
    ids = rows["dns_id"].to_numpy().copy()
    for i in proxy:
        row = rows.iloc[i]
        client = (row["dst_ip"], row["dst_port"]) if row["qr"] else (row["src_ip"], row["src_port"])
        candidates = index.get((bool(row["qr"]), str(row["proto"]), str(client[0]), int(client[1]), str(row["qname"]),
                                str(row["qtype"])), [])
        near = [(abs(ts - int(row["ts_ns"])), dns_id) for ts, dns_id in candidates if abs(ts - int(row["ts_ns"])) <= ALIGN_WINDOW_NS]
        if near:
            ids[i] = min(near)[1]
            stats["ids_aligned"] += 1
        else:
            stats["ids_without_packet"] += 1
    # a pair is one lookup: when the capture saw only one side of it (the query, say), both take its id
    synthetic = rows["dns_id"].to_numpy()
    found = {pair: ids[i] for i in proxy if ids[i] != (pair := synthetic[i])}
    for i in proxy:
        if ids[i] == synthetic[i] and synthetic[i] in found:
            ids[i] = found[synthetic[i]]
            stats["ids_without_packet"] -= 1
            stats["ids_aligned_by_pair"] = stats.get("ids_aligned_by_pair", 0) + 1
    rows["dns_id"] = ids


SHOWN = ("streams", "lines", "flows", "rows", "l7_dns_requests", "l7_dns_responses", "l7_dns_pairs", "l3_l4_dns_port", "dropped",
         "ids_aligned", "ids_aligned_by_pair", "ids_without_packet", "outside_session", "requests_without_response",
         "responses_without_request", "events_lost", "unparsed_lines", "bad_flows", "stream_errors")


def stats_line(stats: dict) -> str:
    """One line for people: what Hubble sent in the session and how much of it joined the captured lookups
    (`hubble_*` in a session's stats); the first four always, the rest when not zero."""
    return "  ".join(f"hubble_{k}={stats.get(f'hubble_{k}', 0)}" for i, k in enumerate(SHOWN) if i < 4 or stats.get(f"hubble_{k}"))


def requests_unanswered(lines: list[str], ports: tuple[int, ...]) -> int:
    """How many of the DNS proxy's requests among `lines` have no response among them yet."""
    _, stats = read_hubble_lines(lines, "hubble", ports, require_flows=False)
    return int(stats.get("requests_without_response", 0))
