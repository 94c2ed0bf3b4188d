"""The node agent's stream: what `dnscorrelate agent` writes to its stdout, and how the CLI reads it back
into the packet-event table (`schema.EVENTS`), with loss counted per node.

The agent forwards the tracer's own records (`bpf.EVENT_DTYPE`, the bytes the ring buffer holds), so the
CLI decodes them with the same `decode.decode` as a local capture: the same rows, the same columns.

    MAGIC                                   once, first: b"DNSC-AGENT/1\\n"
    frame := kind (1 byte) | length (u32, little-endian) | body
    kind  H  hello     JSON: node, version, record_size, boot_to_wall_ns, compile_seconds, attach_seconds
          V  vantage   JSON: id, netns, vantage, role, ifnames     (before any record that carries its id)
          R  records   zlib of whole records (the 512-byte payload area is mostly zeros: ~6x smaller)
          S  stats     JSON: counters so far (events, lost_samples, agent_dropped, records_sent, ...)
          E  error     JSON: message                               (the agent could not capture on its node)
          Z  end       JSON: the final counters; nothing follows

Timestamps stay the kernel's boot-time clock; each node's hello carries its own offset to wall time, so
nodes are put on one time line by their wall clocks, and each event names its node (`node`): the
correlator then estimates what the wall clocks still disagree by from the lookups that cross nodes
(correlate/clocks.py; kind's nodes share the host's clock).

Nothing is lost silently: events the ring buffer dropped (`lost_samples`, counted in the kernel), events
the agent dropped because the stream fell behind (`agent_dropped`), records of an unknown capture id or
a frame that would not decode (`bad_records`, `bad_frames`) and a stream that ended without its end frame
(`stream_cut`: counters after its last stats frame are unknown) are all counted per node.
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.live.records import RecordBuffer
from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.sources.decode import Vantage

MAGIC = b"DNSC-AGENT/1\n"
HEADER = struct.Struct("<cI")
HELLO, VANTAGE, RECORDS, STATS, ERROR, END = b"H", b"V", b"R", b"S", b"E", b"Z"
KINDS = {HELLO, VANTAGE, RECORDS, STATS, ERROR, END}
MAX_FRAME = 64 << 20  # a body longer than this is not a frame of ours: the stream is corrupt
# Counters the CLI adds up over nodes (each node's own are kept under `nodes`).
SUMMED = ("events", "lost_samples", "agent_dropped", "non_dns_packets", "non_ip_packets", "truncated_headers",
          "tcp_without_payload", "records_sent", "records_received", "bad_records", "bad_frames", "namespaces",
          "bytes_received")


def frame(kind: bytes, body: bytes) -> bytes:
    return HEADER.pack(kind, len(body)) + body


def json_frame(kind: bytes, value: dict) -> bytes:
    return frame(kind, json.dumps(value, separators=(",", ":")).encode())


def vantage_json(capture_id: int, vantage: Vantage) -> dict:
    return {"id": capture_id, "netns": vantage.netns, "vantage": vantage.vantage, "role": vantage.role,
            "ifnames": {str(k): v for k, v in vantage.ifnames.items()}}


class StreamWriter:
    """The agent's side: frames to a binary stream, one writer at a time. A write to a closed stream (the
    CLI went away) raises BrokenPipeError, which is the agent's cue to stop."""

    def __init__(self, out: BinaryIO, level: int = 1) -> None:
        self.out = out
        self.level = level  # zlib level 1: ~6x smaller for a few microseconds a record
        self.lock = threading.Lock()
        self.records_sent = 0
        self.bytes_sent = 0
        self.out.write(MAGIC)
        self.out.flush()

    def _write(self, data: bytes) -> None:
        with self.lock:
            self.out.write(data)
            self.out.flush()
            self.bytes_sent += len(data)

    def hello(self, **fields) -> None:
        self._write(json_frame(HELLO, {"record_size": EVENT_DTYPE.itemsize, **fields}))

    def vantage(self, capture_id: int, vantage: Vantage) -> None:
        self._write(json_frame(VANTAGE, vantage_json(capture_id, vantage)))

    def records(self, raw: bytes) -> None:
        if raw:
            self.records_sent += len(raw) // EVENT_DTYPE.itemsize
            self._write(frame(RECORDS, zlib.compress(raw, self.level)))

    def stats(self, counters: dict) -> None:
        self._write(json_frame(STATS, counters))

    def error(self, message: str) -> None:
        self._write(json_frame(ERROR, {"message": message}))

    def end(self, counters: dict) -> None:
        self._write(json_frame(END, counters))


def bounded(batches: list[bytes], max_bytes: int) -> tuple[bytes, int]:
    """The newest whole records of `batches` that fit in `max_bytes`, and how many older records were dropped
    to fit: when the stream falls behind, the agent keeps what is current and counts the rest as lost."""
    raw = b"".join(batches)
    size = EVENT_DTYPE.itemsize
    keep = min(len(raw), max(0, max_bytes) // size * size)
    return raw[len(raw) - keep:], (len(raw) - keep) // size


@dataclass
class NodeStream:
    """The CLI's side, one per node: bytes in (as they arrive, in any pieces), events out."""

    node: str
    buffer: bytearray = field(default_factory=bytearray)
    magic_seen: bool = False
    hello: dict | None = None
    vantages: dict[int, Vantage] = field(default_factory=dict)
    records: RecordBuffer = field(default_factory=RecordBuffer)  # the node's records, and what live views decoded
    agent_stats: dict = field(default_factory=dict)  # the agent's last stats or end frame
    error: str | None = None
    ended: bool = False  # the end frame arrived
    closed: bool = False  # no more bytes will come
    counts: Counter = field(default_factory=Counter)  # the CLI's own: bad_frames, bad_records, bytes_received
    _frame: pd.DataFrame | None = None

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream; every whole frame in them is applied."""
        if self.closed or not data:
            return
        self.counts["bytes_received"] += len(data)
        self.buffer += data
        if not self.magic_seen:
            if len(self.buffer) < len(MAGIC):
                if not MAGIC.startswith(bytes(self.buffer)):
                    self._corrupt()
                return
            if not self.buffer.startswith(MAGIC):
                self._corrupt()
                return
            del self.buffer[: len(MAGIC)]
            self.magic_seen = True
        while len(self.buffer) >= HEADER.size and not self.closed:
            kind, length = HEADER.unpack_from(self.buffer)
            if kind not in KINDS or length > MAX_FRAME:
                self._corrupt()
                return
            if len(self.buffer) < HEADER.size + length:
                return
            body = bytes(self.buffer[HEADER.size: HEADER.size + length])
            del self.buffer[: HEADER.size + length]
            self._apply(kind, body)

    def _corrupt(self) -> None:
        """Bytes that are not our stream: an agent of another version, or something else printed on its stdout."""
        shown = bytes(self.buffer[:120]).decode("utf-8", "replace").strip()
        self.counts["bad_frames"] += 1
        if self.error is None:
            self.error = (f"the agent's output is not a dnscorrelate agent stream (an agent image of another version?): {shown!r}"
                          if not self.magic_seen else "the agent's stream is corrupt; what followed was dropped")
        self.buffer.clear()
        self.closed = True

    def _apply(self, kind: bytes, body: bytes) -> None:
        try:
            if kind == RECORDS:
                self._records(zlib.decompress(body))
                return
            value = json.loads(body)
        except (zlib.error, ValueError):
            self.counts["bad_frames"] += 1
            return
        if kind == HELLO:
            if value.get("record_size") != EVENT_DTYPE.itemsize:
                self.error = (f"the agent's records are {value.get('record_size')} bytes, this dnscorrelate's are "
                              f"{EVENT_DTYPE.itemsize}: run an agent image of the same version (agent {value.get('version')})")
                self.closed = True
                return
            self.hello = value
        elif kind == VANTAGE:
            self.vantages[int(value["id"])] = Vantage(int(value["netns"]), value["vantage"], value["role"],
                                                      {int(k): v for k, v in value.get("ifnames", {}).items()})
        elif kind == STATS:
            self.agent_stats = value
        elif kind == ERROR:
            self.error = value.get("message", "the agent failed without a message")
        elif kind == END:
            self.agent_stats = value or self.agent_stats
            self.ended = True
            self.closed = True

    def _records(self, raw: bytes) -> None:
        size = EVENT_DTYPE.itemsize
        if len(raw) % size:
            self.counts["bad_frames"] += 1
            return
        if self.hello is None:  # records before hello: not a stream of ours
            self.counts["bad_records"] += len(raw) // size
            return
        records = np.frombuffer(raw, EVENT_DTYPE)
        known = np.isin(records["capture_id"], np.fromiter(self.vantages, dtype=np.uint32, count=len(self.vantages)))
        if not known.all():
            self.counts["bad_records"] += int((~known).sum())
            raw = records[known].tobytes()
        if raw:
            self.records.append(raw)

    def close(self) -> None:
        """No more bytes: a stream that never sent its end frame was cut (the agent died, the connection broke)."""
        self.closed = True

    @property
    def cut(self) -> bool:
        return self.closed and not self.ended and self.error is None

    @property
    def boot_to_wall(self) -> int:
        return int(self.hello["boot_to_wall_ns"]) if self.hello else 0

    @property
    def decode_stats(self) -> Counter:
        return self.records.decode_stats

    def new_events(self) -> pd.DataFrame:
        """Events of the records that arrived since the last call."""
        return self.records.new_events(self.vantages, self.boot_to_wall)

    def events(self) -> pd.DataFrame:
        """Every event of the stream (decoded once, when the stream is closed)."""
        if self._frame is None or not self.closed:
            frame_ = self.records.decode_all(self.vantages, self.boot_to_wall)
            if not self.closed:
                return frame_
            self._frame = frame_
        return self._frame

    def stats(self) -> dict:
        """This node's counters: the agent's (kernel and its own drops) and the CLI's (what arrived, what was bad)."""
        received = self.records.records_received()
        out = {k: v for k, v in self.agent_stats.items() if isinstance(v, (int, float))}
        out.update({"records_received": received, "bad_records": int(self.counts["bad_records"]),
                    "bad_frames": int(self.counts["bad_frames"]), "bytes_received": int(self.counts["bytes_received"]),
                    "stream_cut": self.cut, "namespaces": len(self.vantages)})
        out["lost_samples"] = int(out.get("lost_samples", 0)) + int(out.get("agent_dropped", 0))
        if self.error:
            out["error"] = self.error
        return out


def merged_stats(streams: list[NodeStream]) -> dict:
    """The capture counters of every node's stream, added up, with each node's own under `nodes`. `lost_samples`
    counts every event that never reached the CLI: dropped by a node's ring buffer or by its agent."""
    nodes = {s.node: s.stats() for s in streams}
    total: dict = {key: sum(int(n.get(key, 0)) for n in nodes.values()) for key in SUMMED}
    decoded: Counter = Counter({"decode_errors": 0})
    for s in streams:
        decoded.update(s.decode_stats)
    total.update({key: int(value) for key, value in decoded.items()})
    total["nodes"] = nodes
    return total


def events_of(streams: list[NodeStream], new: bool = False) -> pd.DataFrame:
    """One packet-event table of every node's stream, in time order."""
    frames = [s.new_events() if new else s.events() for s in streams]
    return events.concat([f.assign(node=pd.Categorical([s.node] * len(f))) for f, s in zip(frames, streams)])
