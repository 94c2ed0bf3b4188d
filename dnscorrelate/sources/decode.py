"""From the tracer's raw records to the packet-event table (see dnscorrelate/events.py).

Header fields are taken from the kernel's parse, vectorized with numpy. Names,
types and answers are decoded with dnspython, once per distinct payload: the
same query seen at six vantage points is decoded once. TCP segments are
reassembled per stream (the 2-byte length prefix; several or partial messages
per segment). Nothing is dropped silently: payloads that do not decode are
kept as rows with `decoded=False` and counted, and so are TCP bytes that never
formed a whole message.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX

IPPROTO_TCP = 6
IPPROTO_UDP = 17
KIND_DNS = 0
KIND_ICMP_ERROR = 1
KIND_TCP_CONTROL = 2
ANSWER_TYPES = {"A", "AAAA", "CNAME", "PTR", "SRV", "TXT", "NS", "MX"}


@dataclass(frozen=True)
class Vantage:
    """What a capture id stands for: a namespace and who lives there."""

    netns: int
    vantage: str
    role: str
    ifnames: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    qname: str
    qtype: str
    rcode: str | None  # full (extended) rcode when the message parsed
    answers: str
    ok: bool


def decode_message(wire: bytes, complete: bool) -> Decoded:
    """Name, type, rcode and answers of one DNS message; `complete=False` when the capture cut it short."""
    try:
        if complete:
            message = dns.message.from_wire(wire, ignore_trailing=True, one_rr_per_rrset=True)
        else:
            message = dns.message.from_wire(wire, question_only=True)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
        if complete:
            return decode_message(wire, complete=False)
        return Decoded("", "", None, "", False)
    question = message.question[0] if message.question else None
    answers = []
    if complete:
        for rrset in message.answer:
            kind = dns.rdatatype.to_text(rrset.rdtype)
            if kind in ANSWER_TYPES:
                answers += [f"{kind} {rdata.to_text()}" for rdata in rrset]
    return Decoded(
        qname=question.name.to_text().lower() if question is not None else "",
        qtype=dns.rdatatype.to_text(question.rdtype) if question is not None else "",
        rcode=dns.rcode.to_text(message.rcode()) if complete else None,
        answers=", ".join(answers),
        ok=question is not None,
    )


def decode_distinct(wires: list[bytes], complete: np.ndarray) -> tuple[list[Decoded], np.ndarray]:
    """Each distinct (payload, completeness) decoded once, and for every row the index of its decoding.
    The only per-packet Python here is the dictionary lookup. Payloads are told apart without their first two
    bytes, the DNS id (read from the header elsewhere): what is decoded here does not depend on it, and a client
    asking one name again and again sends a new id each time, which made nearly every payload distinct."""
    index: dict[tuple[bytes, bool], int] = {}
    rows = np.fromiter((index.setdefault((w[2:], c), len(index)) for w, c in zip(wires, complete.tolist())), dtype=np.int64, count=len(wires))
    return [decode_message(b"\0\0" + w, c) for w, c in index], rows


def vantage_columns(ids: np.ndarray, ifindex: np.ndarray, vantages: dict[int, Vantage]) -> dict[str, np.ndarray]:
    """netns, vantage, role and ifname for every row, looked up once per distinct capture id (and interface)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    known = [vantages[int(c)] for c in unique]
    pairs, pair_of = np.unique(ids.astype(np.int64) << 32 | ifindex.astype(np.int64), return_inverse=True)
    ifnames = np.array([vantages[int(p >> 32)].ifnames.get(int(p & 0xFFFFFFFF), "") for p in pairs], dtype=object)
    return {
        "netns": np.array([v.netns for v in known], dtype=np.uint64)[inverse],
        "vantage": np.array([v.vantage for v in known], dtype=object)[inverse],
        "role": np.array([v.role for v in known], dtype=object)[inverse],
        "ifname": ifnames[pair_of],
    }


def ip_strings(addresses: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Text addresses for an (N, 16) byte array, IPv4 in the first four bytes; one conversion per distinct
    address, found by hashing the two 64-bit halves (np.unique(axis=0) would sort byte rows, slowly)."""
    if len(addresses) == 0:
        return np.array([], dtype=object)
    halves = np.ascontiguousarray(addresses).view(">u8").reshape(-1, 2)
    v4 = family == 4
    high = np.where(v4, halves[:, 0] >> 32, halves[:, 0])  # IPv4 lives in the first four bytes
    low = np.where(v4, 0, halves[:, 1])
    codes, uniques = pd.MultiIndex.from_arrays([high, low, family]).factorize()
    text = np.array(
        [str(ipaddress.IPv4Address(int(h))) if f == 4 else str(ipaddress.IPv6Address(int(h) << 64 | int(l))) for h, l, f in uniques],
        dtype=object,
    )
    return text[codes]


def payload_wires(records: np.ndarray) -> list[bytes]:
    """Each record's DNS bytes (from its DNS header to what was captured), sliced from one contiguous blob."""
    blob = np.ascontiguousarray(records["payload"]).tobytes()
    starts = np.arange(len(records)) * PAYLOAD_MAX
    return [blob[o + a : o + b] for o, a, b in zip(starts.tolist(), records["dns_at"].tolist(), records["captured"].tolist())]


@dataclass
class Rows:
    """Column lists for rows built one message at a time (TCP)."""

    index: list[int] = field(default_factory=list)  # record each row came from
    wires: list[bytes] = field(default_factory=list)
    latency: list[int] = field(default_factory=list)
    complete: list[bool] = field(default_factory=list)  # False: only the start of the message was captured
    sizes: list[int] = field(default_factory=list)

    def truncate(self, length: int) -> None:
        """Forget every row from `length` on."""
        for column in (self.index, self.wires, self.latency, self.complete, self.sizes):
            del column[length:]

    def add(self, index: int, wire: bytes, latency: int, complete: bool, size: int) -> None:
        self.index.append(index)
        self.wires.append(wire)
        self.latency.append(latency)
        self.complete.append(complete)
        self.sizes.append(size)


def reassemble_tcp(records: np.ndarray, stats: Counter, held: list[int] | None = None) -> Rows:
    """Whole DNS messages from TCP segments, per stream and vantage, in sequence order. With `held`, a stream's
    segments after its last whole message (one not finished yet, or a cut one still being skipped) make no row
    and no count: their positions go to `held`, to be decoded again with the segments that follow."""
    rows = Rows()
    keys = [
        (int(r["capture_id"]), int(r["ifindex"]), bytes(r["saddr"]), int(r["sport"]), bytes(r["daddr"]), int(r["dport"]))
        for r in records
    ]
    streams: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        streams.setdefault(key, []).append(i)
    for positions in streams.values():
        buffer, expected, start_latency, skip_to = b"", None, 0, None
        ordered = sorted(positions, key=lambda p: records[p]["ts_ns"])
        settled_rows, settled_at, counts = len(rows.index), 0, Counter()  # counts since the last message boundary
        for k, i in enumerate(ordered):
            if not buffer and skip_to is None:  # between messages: what came before is settled
                stats.update(counts)
                counts.clear()
                settled_rows, settled_at = len(rows.index), k
            r = records[i]
            data = bytes(r["payload"][: r["captured"]])
            seq = int(r["tcp_seq"])
            if skip_to is not None:  # inside a message too long to capture: wait for the next one
                if (skip_to - seq) % 2**32 < 2**31 and seq != skip_to:
                    counts["tcp_skipped_segments"] += 1
                    continue
                skip_to = None
            if r["captured"] < r["payload_len"]:
                counts["tcp_segment_cut"] += 1
                if not buffer and len(data) >= 14:
                    # It starts a message longer than the capture keeps: its header and question
                    # are here; the rest is skipped up to where the next message begins.
                    length = struct.unpack_from("!H", data)[0]
                    rows.add(i, data[2:], int(r["latency_ns"]), False, length)
                    skip_to = (seq + 2 + length) % 2**32
                buffer, expected = b"", None
                continue
            if expected is not None and seq != expected:
                if (expected - seq) % 2**32 < 2**31:
                    counts["tcp_retransmissions"] += 1
                    continue
                counts["tcp_gap_bytes"] += len(buffer)
                buffer = b""
            if not buffer:
                start_latency = int(r["latency_ns"])
            buffer += data
            expected = (seq + len(data)) % 2**32
            while len(buffer) >= 2:
                length = struct.unpack_from("!H", buffer)[0]
                if len(buffer) < 2 + length:
                    break
                rows.add(i, buffer[2 : 2 + length], start_latency, True, length)
                buffer = buffer[2 + length :]
                start_latency = 0
        if held is not None and (buffer or skip_to is not None):
            rows.truncate(settled_rows)  # decoded again, whole, with the segments still to come
            held.extend(ordered[settled_at:])
            continue
        stats.update(counts)
        if buffer:
            stats["tcp_incomplete_bytes"] += len(buffer)
    return rows


def header_fields(wires: list[bytes]) -> dict[str, np.ndarray]:
    """id, flags and counts parsed from message bytes (for reassembled TCP messages)."""
    heads = [struct.unpack_from("!HHHH", w) if len(w) >= 12 else (0, 0, 0, 0) for w in wires]
    array = np.array(heads, dtype=np.uint16).reshape(-1, 4)
    return {"dns_id": array[:, 0], "dns_flags": array[:, 1], "ancount": array[:, 3]}


def decode(raw: bytes, vantages: dict[int, Vantage], boot_to_wall_ns: int) -> tuple[pd.DataFrame, Counter]:
    """The packet-event table for the concatenated records in `raw`, and decode counters."""
    frame, stats, _ = decode_settled(raw, vantages, boot_to_wall_ns, hold_open=False)
    return frame, stats


def decode_settled(raw: bytes, vantages: dict[int, Vantage], boot_to_wall_ns: int, hold_open: bool = True) -> tuple[pd.DataFrame, Counter, bytes]:
    """`decode` for a capture read in parts: also the records of TCP messages not whole yet (held back
    undecoded and uncounted), to put before the next part's records. Decoding part after part this way gives
    the rows decoding everything at once gives (one exception: a retransmitted segment of a message finished
    in an earlier part reads as a new message)."""
    stats: Counter = Counter()
    if len(raw) % EVENT_DTYPE.itemsize:
        raise ValueError(f"raw records are {len(raw)} bytes, not a multiple of {EVENT_DTYPE.itemsize}")
    records = np.frombuffer(raw, dtype=EVENT_DTYPE)
    if len(records) == 0:
        return events.empty_events(), stats, b""
    unknown = ~np.isin(records["capture_id"], np.fromiter(vantages, dtype=np.uint32, count=len(vantages)))
    stats["unknown_namespace"] = int(unknown.sum())
    records = records[~unknown]

    is_tcp = (records["proto"] == IPPROTO_TCP) & (records["kind"] == KIND_DNS)
    control = records[records["kind"] == KIND_TCP_CONTROL]
    datagrams = records[~is_tcp & (records["kind"] != KIND_TCP_CONTROL)]
    held: list[int] | None = [] if hold_open else None
    tcp = reassemble_tcp(records[is_tcp], stats, held)
    tcp_records = records[is_tcp][np.array(tcp.index, dtype=np.int64)]
    rest = records[is_tcp][np.sort(np.array(held, dtype=np.int64))].tobytes() if held else b""

    base = np.concatenate([datagrams, tcp_records])
    dgram_wires = payload_wires(datagrams)
    complete = np.concatenate([(datagrams["captured"] >= datagrams["payload_len"]) & (datagrams["kind"] == KIND_DNS), np.array(tcp.complete, bool)])
    wires = dgram_wires + tcp.wires
    size = np.concatenate([datagrams["payload_len"].astype(np.int32), np.array(tcp.sizes, np.int32)])

    heads = header_fields(tcp.wires)
    dns_id = np.concatenate([datagrams["dns_id"], heads["dns_id"]])
    flags = np.concatenate([datagrams["dns_flags"], heads["dns_flags"]]).astype(np.int32)
    ancount = np.concatenate([datagrams["ancount"], heads["ancount"]])
    latency = np.concatenate([datagrams["latency_ns"].astype(np.int64), np.array(tcp.latency, np.int64)])

    distinct, row = decode_distinct(wires, complete)
    field = lambda name, dtype=object: np.array([getattr(d, name) for d in distinct], dtype=dtype)[row] if len(row) else np.array([], dtype)
    ok = field("ok", bool)
    stats["decode_errors"] = int((~ok).sum())
    qr = (flags >> 15).astype(bool)
    header_rcodes = np.array([dns.rcode.to_text(i) for i in range(16)], dtype=object)[flags & 0xF]
    decoded_rcodes = field("rcode")
    rcode_text = np.where(pd.isna(decoded_rcodes), header_rcodes, decoded_rcodes) if len(row) else np.array([], object)
    rcode_text[~qr] = ""

    kind = np.where(base["kind"] == KIND_ICMP_ERROR, "icmp-error", "dns")
    frame = pd.DataFrame(
        {
            "ts_ns": base["ts_ns"].astype(np.int64) + boot_to_wall_ns,
            **vantage_columns(base["capture_id"], base["ifindex"], vantages),
            "ifindex": base["ifindex"].astype(np.int32),
            "pkt_type": np.array(events.PKT_TYPES, dtype=object)[np.minimum(base["pkt_type"], 7)],
            "kind": kind,
            "icmp_type": np.where(base["kind"] == KIND_ICMP_ERROR, base["icmp_type"].astype(np.int16), -1),
            "icmp_code": np.where(base["kind"] == KIND_ICMP_ERROR, base["icmp_code"].astype(np.int16), -1),
            "proto": np.where(base["proto"] == IPPROTO_TCP, "tcp", "udp"),
            "family": base["family"].astype(np.int8),
            "src_ip": ip_strings(base["saddr"], base["family"]),
            "src_port": base["sport"].astype(np.int32),
            "dst_ip": ip_strings(base["daddr"], base["family"]),
            "dst_port": base["dport"].astype(np.int32),
            "dns_id": dns_id.astype(np.int32),
            "qr": qr,
            "opcode": ((flags >> 11) & 0xF).astype(np.int8),
            "rcode": rcode_text,
            "aa": ((flags >> 10) & 1).astype(bool),
            "tc": ((flags >> 9) & 1).astype(bool),
            "rd": ((flags >> 8) & 1).astype(bool),
            "ra": ((flags >> 7) & 1).astype(bool),
            "qname": field("qname"),
            "qtype": field("qtype"),
            "answers": field("answers"),
            "ancount": ancount.astype(np.int16),
            "size": size,
            "latency_ns": np.where(qr, latency, 0),
            "decoded": ok,
        }
    )
    if len(control):
        frame = pd.concat([frame, control_rows(control, vantages, boot_to_wall_ns)], ignore_index=True)
    frame = frame.sort_values("ts_ns", kind="stable")
    return events.conform(frame), stats, rest


def control_kind(flags: np.ndarray) -> np.ndarray:
    """tcp-syn, tcp-synack or tcp-rst from TCP flags (SYN 0x02, RST 0x04, ACK 0x10)."""
    return np.where(flags & 0x04, "tcp-rst", np.where(flags & 0x10, "tcp-synack", "tcp-syn"))


def control_rows(control: np.ndarray, vantages: dict[int, Vantage], boot_to_wall_ns: int) -> pd.DataFrame:
    """Rows for TCP SYN, SYN-ACK and RST segments: a tuple and a time, no DNS message."""
    n = len(control)
    return pd.DataFrame({
        "ts_ns": control["ts_ns"].astype(np.int64) + boot_to_wall_ns,
        **vantage_columns(control["capture_id"], control["ifindex"], vantages),
        "ifindex": control["ifindex"].astype(np.int32),
        "pkt_type": np.array(events.PKT_TYPES, dtype=object)[np.minimum(control["pkt_type"], 7)],
        "kind": control_kind(control["tcp_flags"]), "icmp_type": np.full(n, -1, np.int16), "icmp_code": np.full(n, -1, np.int16),
        "proto": "tcp", "family": control["family"].astype(np.int8),
        "src_ip": ip_strings(control["saddr"], control["family"]), "src_port": control["sport"].astype(np.int32),
        "dst_ip": ip_strings(control["daddr"], control["family"]), "dst_port": control["dport"].astype(np.int32),
        "dns_id": np.full(n, -1, np.int32), "qr": np.zeros(n, bool), "opcode": np.zeros(n, np.int8), "rcode": "",
        "aa": False, "tc": False, "rd": False, "ra": False, "qname": "", "qtype": "", "answers": "",
        "ancount": np.zeros(n, np.int16), "size": np.zeros(n, np.int32), "latency_ns": np.zeros(n, np.int64), "decoded": False,
    })
