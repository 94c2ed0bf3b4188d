"""The node agent's stream: what `dnscorrelate agent` writes to its stdout, and how the CLI reads it back
into the packet-event table (`schema.EVENTS`), with loss counted per node.

The agent forwards the tracer's own records (`bpf.EVENT_DTYPE`, the bytes the ring buffer holds), so the
CLI decodes them with the same `decode.decode` as a local capture: the same rows, the same columns.

    MAGIC                                   once, first: b"DNSC-AGENT/1\\n"
    frame := kind (1 byte) | length (u32, little-endian) | body
    kind  H  hello     JSON: node, version, record_size, boot_to_wall_ns, compile_seconds, attach_seconds, tracer
          V  vantage   JSON: id, netns, vantage, role, ifnames     (before any record that carries its id)
          R  records   zlib of whole records (the 512-byte payload area is mostly zeros: ~6x smaller)
          S  stats     JSON: counters so far (events, lost_samples, agent_dropped, records_sent, ...; an agent
                       that sends one pod's lookups also records_kept and filtered_queries/_responses/_other)
          E  error     JSON: message                               (the agent could not capture on its node)
          Z  end       JSON: the final counters; nothing follows

Timestamps stay the kernel's boot-time clock; each node's hello carries its own offset to wall time, so
nodes are put on one time line by their wall clocks, and each event names its node (`node`): the
correlator then estimates what the wall clocks still disagree by from the lookups that cross nodes
(correlate/clocks.py; kind's nodes share the host's clock).

What an agent sends is not trusted: a records frame is decompressed to at most MAX_RECORDS_BYTES (a zlib
bomb is a bad frame, not gigabytes of memory), every JSON frame is validated (`Hello`, `VantageFrame`,
`ErrorFrame`, `counters_of`: a frame of the wrong types is a bad frame, counted), the text it sends is printed
with control characters escaped (`printable`), and a node's records kept until the session ends are
bounded (`max_record_bytes`; beyond it records are dropped and counted as `cli_dropped`, part of
`lost_samples`).

Nothing is lost silently: events the ring buffer dropped (`lost_samples`, counted in the kernel), events
the agent dropped because the stream fell behind (`agent_dropped`), records of an unknown capture id or
a frame that would not decode (`bad_records`, `bad_frames`) and a stream that ended without its end frame
(`stream_cut`: counters after its last stats frame are unknown) are all counted per node.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, BinaryIO

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from dnscorrelate import events
from dnscorrelate.live.records import RecordBuffer
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX
from dnscorrelate.sources.decode import Vantage, decode_settled

MAGIC = b"DNSC-AGENT/1\n"
HEADER = struct.Struct("<cI")
HELLO, VANTAGE, RECORDS, STATS, ERROR, END = b"H", b"V", b"R", b"S", b"E", b"Z"
KINDS = {HELLO, VANTAGE, RECORDS, STATS, ERROR, END}
MAX_FRAME = 64 << 20  # a body longer than this is not a frame of ours: the stream is corrupt
FRAME_RECORDS = 2048  # records per frame the agent sends (about 1.3 MB before compression)
MAX_RECORDS_BYTES = 2 * FRAME_RECORDS * EVENT_DTYPE.itemsize  # a records frame decompresses to at most this
MAX_NODE_RECORD_BYTES = 1 << 30  # a node's records kept for the session (~1.7 million events); beyond: dropped, counted
# Counters the CLI adds up over nodes (each node's own are kept under `nodes`).
SUMMED = ("events", "lost_samples", "agent_dropped", "cli_dropped", "non_dns_packets", "non_ip_packets", "truncated_headers",
          "tcp_without_payload", "records_sent", "records_received", "bad_records", "bad_frames", "namespaces",
          "bytes_received", "records_filtered")
FILTERED = ("filtered_queries", "filtered_responses", "filtered_other")  # an agent of `trace`: records of other lookups, not sent


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Agent-sent text for a terminal: control characters (ESC sequences, carriage returns, ...) as \\xNN, so that
    a node cannot rewrite what the user sees. Newlines and tabs stay."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# The JSON frames, validated: an agent of another version or a hostile one gets a bad frame, not a KeyError.
Text = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]


class Frame(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class Hello(Frame):
    node: Text
    version: Text = "?"
    record_size: int
    boot_to_wall_ns: int
    compile_seconds: float = 0.0
    attach_seconds: float = 0.0
    tracer: Text = ""  # how the agent loaded its tracer: `core` (the CO-RE object) or `bcc`


class VantageFrame(Frame):
    id: int = Field(ge=0, lt=1 << 32)
    netns: int = Field(ge=0)
    vantage: Text
    role: Text
    ifnames: dict[int, Text] = {}


class ErrorFrame(Frame):
    message: str = Field(max_length=16384)


def counters_of(value) -> dict:
    """A stats or end frame's counters: names to numbers, nothing else."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, (int, float))
                                              and not isinstance(v, bool) for k, v in value.items()):
        raise ValueError("counters must map names to numbers")
    return value


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


def records_in(batch) -> int:
    """Records in a batch: bytes of whole records, or EVENT_DTYPE rows (read in place from the ring buffer)."""
    return len(batch) if isinstance(batch, np.ndarray) else len(batch) // EVENT_DTYPE.itemsize


def bounded(batches: list, max_bytes: int) -> tuple[list, int]:
    """The newest whole records of `batches` (bytes or EVENT_DTYPE rows) that fit in `max_bytes`, still as batches
    (never joined: at 10k qps a join is a copy of 50 MB a second), and how many older records were dropped to fit:
    when the stream falls behind, the agent keeps what is current and counts the rest as lost."""
    size = EVENT_DTYPE.itemsize
    room = max(0, max_bytes) // size
    kept = []
    for batch in reversed(batches):
        if room <= 0:
            break
        count = records_in(batch)
        if count > room:
            batch = batch[count - room:] if isinstance(batch, np.ndarray) else memoryview(batch)[(count - room) * size:]
        kept.append(batch)
        room -= records_in(batch)
    kept.reverse()
    return kept, sum(map(records_in, batches)) - sum(map(records_in, kept))


def frames_of(batch, records_per_frame: int) -> Iterator[bytes]:
    """A batch (bytes of whole records, or EVENT_DTYPE rows) cut into frames' worth of records, each as sent."""
    records = batch if isinstance(batch, np.ndarray) else np.frombuffer(batch, dtype=EVENT_DTYPE)
    for start in range(0, len(records), records_per_frame):
        yield as_sent(records[start:start + records_per_frame])


def as_sent(records: np.ndarray) -> bytes:
    """Records with only what the tracer wrote in them: each payload cut after its `captured` bytes, the padding zero.
    The rest of a ring buffer slot holds an older packet's bytes, often another pod's lookup: a filtered stream must
    not carry them, and zlib packs zeros far better (at 10k qps the ring is rewritten every few seconds)."""
    out = np.zeros(len(records), dtype=EVENT_DTYPE)
    fixed = [name for name in EVENT_DTYPE.names if name != "payload"]
    out[fixed] = records[fixed]  # field by field: the padding stays zero
    captured = np.minimum(records["captured"], PAYLOAD_MAX).astype(np.intp)
    width = int(captured.max(initial=0))
    if width:
        payload = records["payload"][:, :width].copy()
        payload[np.arange(width)[None, :] >= captured[:, None]] = 0
        out["payload"][:, :width] = payload
    return out.tobytes()


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
    counts: Counter = field(default_factory=Counter)  # the CLI's own: bad_frames, bad_records, bytes_received, cli_dropped
    max_record_bytes: int = MAX_NODE_RECORD_BYTES
    bad_frame_reasons: list[str] = field(default_factory=list)  # the first few, to say what was wrong
    kept_bytes: int = 0
    held: bytes = b""  # records of TCP messages `drain` saw unfinished: decoded with what follows
    drained: Counter = field(default_factory=Counter)  # decode counters and packets of what `drain` handed out
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

    def _bad_frame(self, kind: bytes, why: str) -> None:
        self.counts["bad_frames"] += 1
        if len(self.bad_frame_reasons) < 5:
            self.bad_frame_reasons.append(printable(f"{kind.decode()}: {why}"[:300]))

    def _apply(self, kind: bytes, body: bytes) -> None:
        try:
            if kind == RECORDS:
                self._records(inflate(body, MAX_RECORDS_BYTES))
                return
            value = json.loads(body)
            if kind == HELLO:
                self._hello(value)
            elif kind == VANTAGE:
                v = VantageFrame.model_validate(value)
                self.vantages[v.id] = Vantage(v.netns, v.vantage, v.role, dict(v.ifnames))
            elif kind == STATS:
                self.agent_stats = counters_of(value)
            elif kind == ERROR:
                self.error = printable(ErrorFrame.model_validate(value).message) or "the agent failed without a message"
            elif kind == END:
                self.agent_stats = counters_of(value) or self.agent_stats
                self.ended = True
                self.closed = True
        except ValidationError as err:
            first = err.errors()[0]
            self._bad_frame(kind, f"{'.'.join(map(str, first['loc'])) or 'frame'}: {first['msg']}")
        except (zlib.error, ValueError) as err:
            self._bad_frame(kind, str(err))

    def _hello(self, value) -> None:
        """The layout is checked before the rest: another version's agent is said as such, whatever its fields."""
        size = value.get("record_size") if isinstance(value, dict) else None
        if size != EVENT_DTYPE.itemsize:
            self.error = printable(f"the agent's records are {size} bytes, this dnscorrelate's are {EVENT_DTYPE.itemsize}: "
                                   f"run an agent image of the same version (agent {str(value.get('version'))[:40]})")
            self.closed = True
            return
        self.hello = Hello.model_validate(value).model_dump()

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
        room = max(0, self.max_record_bytes - self.kept_bytes) // size * size
        if len(raw) > room:  # the session's end decodes what is kept; newer records beyond the bound are counted lost
            self.counts["cli_dropped"] += (len(raw) - room) // size
            raw = raw[:room]
        if raw:
            self.records.append(raw)
            self.kept_bytes += len(raw)

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
        return self.records.decode_stats + Counter({k: v for k, v in self.drained.items() if k != "packets"})

    def drain(self, last: bool = False) -> pd.DataFrame:
        """Events of the records so far, decoded and forgotten, for a consumer that writes them as they come
        (`capture --agent -o DIR/`, a file per node): the records held are then what arrives between two calls, and
        the bound on them (`max_record_bytes`) applies to that, not to the whole capture. TCP messages not whole
        yet wait for the next call, unless it is the `last` (the stream closed)."""
        raw = self.held + b"".join(self.records.take(len(self.records.batches)))
        frame, counts, self.held = decode_settled(raw, self.vantages, self.boot_to_wall, hold_open=not last)
        self.kept_bytes = len(self.held) + self.records.pending_bytes()
        self.drained.update(counts)
        self.drained["packets"] += len(frame)
        return frame

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
                    "cli_dropped": int(self.counts["cli_dropped"]), "stream_cut": self.cut, "namespaces": len(self.vantages)})
        out["lost_samples"] = int(out.get("lost_samples", 0)) + int(out.get("agent_dropped", 0)) + out["cli_dropped"]
        out["records_filtered"] = sum(int(out.get(key, 0)) for key in FILTERED)  # not lost: not asked for
        if self.hello and self.hello.get("tracer"):
            out["tracer"] = self.hello["tracer"]  # how the agent loaded its tracer: `core` or `bcc`
        if self.bad_frame_reasons:
            out["bad_frame_reasons"] = list(self.bad_frame_reasons)
        if self.error:
            out["error"] = self.error
        return out


def inflate(body: bytes, limit: int) -> bytes:
    """A records frame's body decompressed, refused (zlib.error) when it would exceed `limit` bytes or is not one
    whole zlib stream: no frame can make the CLI allocate more than `limit`."""
    inflater = zlib.decompressobj()
    raw = inflater.decompress(body, limit)
    if inflater.unconsumed_tail or (not inflater.eof and inflater.decompress(b"", 1)):
        raise zlib.error(f"decompresses to more than {limit} bytes (at most {limit // EVENT_DTYPE.itemsize} records a frame)")
    if not inflater.eof:
        raise zlib.error("incomplete zlib stream")
    return raw


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


def drained_events(streams: list[NodeStream], last: bool = False) -> pd.DataFrame:
    """Every node's records so far, decoded and forgotten (NodeStream.drain), as one table naming each row's node."""
    frames = [s.drain(last) for s in streams]
    return events.concat([f.assign(node=pd.Categorical([s.node] * len(f))) for f, s in zip(frames, streams)])


def events_of(streams: list[NodeStream], new: bool = False) -> pd.DataFrame:
    """One packet-event table of every node's stream, in time order."""
    frames = [s.new_events() if new else s.events() for s in streams]
    return events.concat([f.assign(node=pd.Categorical([s.node] * len(f))) for f, s in zip(frames, streams)])
