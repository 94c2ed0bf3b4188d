"""From the tracer's raw records to the packet-event table (see dnscorrelate/events.py).

Header fields are taken from the kernel's parse, vectorized with numpy. Names,
types and answers are decoded with dnspython, once per distinct payload: the
same query seen at six vantage points is decoded once. TCP segments are
reassembled per stream (the 2-byte length prefix; several or partial messages
per segment, tcp_stream.py, shared with the pcap reader). Nothing is dropped silently: payloads that do not decode are
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
from pandas.api.types import union_categoricals

from dnscorrelate import events
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX
from dnscorrelate.sources.tcp_stream import TcpStream

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
    return decode_keyed([w[2:] for w in wires], complete)


def decode_keyed(keys: list[bytes], complete: np.ndarray) -> tuple[list[Decoded], np.ndarray]:
    """`decode_distinct` for payloads already cut after their DNS id (`wire[2:]`)."""
    if not keys:
        return [], np.array([], dtype=np.int64)
    column = np.empty(len(keys), dtype=object)
    column[:] = keys
    payload, payloads = pd.factorize(column)  # a hash table in C, no Python per row
    return decode_coded(payload, payloads, complete)


def decode_coded(payload: np.ndarray, payloads, complete: np.ndarray) -> tuple[list[Decoded], np.ndarray]:
    """`decode_keyed` for keys already told apart: a code per row into the distinct `payloads`."""
    if not len(payload):
        return [], np.array([], dtype=np.int64)
    rows, pairs = pd.factorize(payload.astype(np.int64) * 2 + complete.astype(np.int64))
    return [decode_message(b"\0\0" + payloads[p >> 1], bool(p & 1)) for p in pairs.tolist()], rows.astype(np.int64)


def categorical(codes: np.ndarray, table) -> pd.Categorical:
    """`table[codes]` as a categorical with the categories `astype("category")` of those strings would have
    (only the values used, sorted), built from the few distinct values: no string per row."""
    table = np.asarray(table, dtype=object)
    codes = np.asarray(codes, dtype=np.int64)
    used = np.flatnonzero(np.bincount(codes, minlength=len(table))) if len(codes) else np.array([], np.int64)
    categories, inverse = np.unique(table[used].astype(str), return_inverse=True) if len(used) else (np.array([], object), used)
    remap = np.zeros(len(table), dtype=np.int64)
    remap[used] = inverse.reshape(-1)
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(categories.astype(object), dtype=object))


def vantage_columns(ids: np.ndarray, ifindex: np.ndarray, vantages: dict[int, Vantage]) -> dict:
    """netns, vantage, role and ifname for every row, looked up once per distinct capture id (and interface)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    known = [vantages[int(c)] for c in unique]
    pairs, pair_of = np.unique(ids.astype(np.int64) << 32 | ifindex.astype(np.int64), return_inverse=True)
    ifnames = [vantages[int(p >> 32)].ifnames.get(int(p & 0xFFFFFFFF), "") for p in pairs]
    return {
        "netns": np.array([v.netns for v in known], dtype=np.uint64)[inverse],
        "vantage": categorical(inverse, [v.vantage for v in known]),
        "role": categorical(inverse, [v.role for v in known]),
        "ifname": categorical(pair_of, ifnames),
    }


IP_TEXT_CACHE_MAX = 1 << 16
_ip_text: dict[tuple[int, int, int], str] = {}  # (high, low, family) -> text, across calls: addresses repeat


def address_text(high: int, low: int, family: int) -> str:
    key = (high, low, family)
    text = _ip_text.get(key)
    if text is None:
        text = str(ipaddress.IPv4Address(high)) if family == 4 else str(ipaddress.IPv6Address(high << 64 | low))
        if len(_ip_text) >= IP_TEXT_CACHE_MAX:
            _ip_text.clear()
        _ip_text[key] = text
    return text


def address_codes(addresses: np.ndarray, family: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For an (N, 16) byte array (IPv4 in the first four bytes), each row's index into a list of distinct
    address texts. Rows are told apart by hashing their two 64-bit halves and family (pd.factorize of integers,
    no per-row Python and no sorting of byte rows); each distinct address is made text once, through a cache."""
    if len(addresses) == 0:
        return np.array([], dtype=np.int64), []
    halves = np.ascontiguousarray(addresses).view(">u8").reshape(-1, 2)
    v4 = family == 4
    high = np.where(v4, halves[:, 0] >> 32, halves[:, 0])  # IPv4 lives in the first four bytes
    low = np.where(v4, 0, halves[:, 1])
    fam = np.where(v4, 4, family.astype(np.int64))
    code_high, _ = pd.factorize(high)
    code_low, unique_low = pd.factorize(low)
    code_fam, unique_fam = pd.factorize(fam)
    combined = (code_high.astype(np.int64) * len(unique_low) + code_low) * len(unique_fam) + code_fam
    codes, uniques = pd.factorize(combined)
    first = np.empty(len(uniques), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # each distinct address's first row
    return codes, [address_text(h, l, f) for h, l, f in zip(high[first].tolist(), low[first].tolist(), fam[first].tolist())]


def ip_strings(addresses: np.ndarray, family: np.ndarray) -> pd.Categorical:
    """Text addresses for an (N, 16) byte array, IPv4 in the first four bytes, as a categorical."""
    codes, texts = address_codes(addresses, family)
    return categorical(codes, texts)


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


DECODE_TCP_COUNTERS = {  # the shared reassembler's counts, as the capture's stats have always named them
    "skipped_segments": "tcp_skipped_segments", "segments_cut": "tcp_segment_cut",
    "retransmissions": "tcp_retransmissions", "gap_bytes": "tcp_gap_bytes",
}


def reassemble_tcp(records: np.ndarray, stats: Counter, held: list[int] | None = None) -> Rows:
    """Whole DNS messages from TCP segments, per stream and vantage, in time order (tcp_stream.py). With
    `held`, a stream's segments after its last whole message (one not finished yet, or a cut one still being
    skipped) make no row and no count: their positions go to `held`, to be decoded again with the segments
    that follow."""
    rows = Rows()
    keys = [
        (int(r["capture_id"]), int(r["ifindex"]), bytes(r["saddr"]), int(r["sport"]), bytes(r["daddr"]), int(r["dport"]))
        for r in records
    ]
    streams: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        streams.setdefault(key, []).append(i)
    for positions in streams.values():
        stream = TcpStream()
        ordered = sorted(positions, key=lambda p: records[p]["ts_ns"])
        settled_rows, settled_at, counts = len(rows.index), 0, Counter()  # counts since the last message boundary
        for k, i in enumerate(ordered):
            if stream.between_messages:
                add_counts(stats, counts)
                counts.clear()
                settled_rows, settled_at = len(rows.index), k
            r = records[i]
            data = bytes(r["payload"][: r["captured"]])
            for message in stream.segment(int(r["tcp_seq"]), data, int(r["payload_len"]), counts, token=i):
                latency = int(records[message.started_by]["latency_ns"]) if message.started_by is not None else 0
                rows.add(i, message.wire, latency, message.complete, message.size)
        if held is not None and not stream.between_messages:
            rows.truncate(settled_rows)  # decoded again, whole, with the segments still to come
            held.extend(ordered[settled_at:])
            continue
        add_counts(stats, counts)
        if stream.buffer:
            stats["tcp_incomplete_bytes"] += len(stream.buffer)
    return rows


def add_counts(stats: Counter, counts: Counter) -> None:
    for name, count in counts.items():
        if name in DECODE_TCP_COUNTERS:
            stats[DECODE_TCP_COUNTERS[name]] += count


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
    in an earlier part reads as a new message).

    Records are 608 bytes, mostly payload: columns are gathered from them by position (never a copy of whole
    records, but for TCP's few), DNS bytes are sliced from `raw` itself, and text columns are built as
    categoricals from their few distinct values."""
    stats: Counter = Counter()
    if len(raw) % EVENT_DTYPE.itemsize:
        raise ValueError(f"raw records are {len(raw)} bytes, not a multiple of {EVENT_DTYPE.itemsize}")
    raw = raw if isinstance(raw, bytes) else bytes(raw)
    records = np.frombuffer(raw, dtype=EVENT_DTYPE)
    if len(records) == 0:
        return events.empty_events(), stats, b""
    known = np.isin(records["capture_id"], np.fromiter(vantages, dtype=np.uint32, count=len(vantages)))
    stats["unknown_namespace"] = int(len(records) - known.sum())
    kind, proto = records["kind"], records["proto"]
    is_tcp = known & (proto == IPPROTO_TCP) & (kind == KIND_DNS)
    is_control = known & (kind == KIND_TCP_CONTROL)
    dgram_at = np.flatnonzero(known & ~is_tcp & ~is_control)
    tcp_at = np.flatnonzero(is_tcp)
    tcp_records = records[tcp_at]
    held: list[int] | None = [] if hold_open else None
    tcp = reassemble_tcp(tcp_records, stats, held)
    rest = tcp_records[np.sort(np.array(held, dtype=np.int64))].tobytes() if held else b""
    at = np.concatenate([dgram_at, tcp_at[np.array(tcp.index, dtype=np.int64)]])  # the record of each row
    column = lambda name: records[name][at]

    captured, payload_len, dgram_kind = records["captured"][dgram_at], records["payload_len"][dgram_at], kind[dgram_at]
    complete = np.concatenate([(captured >= payload_len) & (dgram_kind == KIND_DNS), np.array(tcp.complete, bool)])
    keys = datagram_keys(raw, dgram_at, records["dns_at"][dgram_at], captured) + [w[2:] for w in tcp.wires]
    size = np.concatenate([payload_len.astype(np.int32), np.array(tcp.sizes, np.int32)])

    heads = header_fields(tcp.wires)
    dns_id = np.concatenate([records["dns_id"][dgram_at], heads["dns_id"]])
    flags = np.concatenate([records["dns_flags"][dgram_at], heads["dns_flags"]]).astype(np.int32)
    ancount = np.concatenate([records["ancount"][dgram_at], heads["ancount"]])
    latency = np.concatenate([records["latency_ns"][dgram_at].astype(np.int64), np.array(tcp.latency, np.int64)])

    distinct, row = decode_keyed(keys, complete)
    n_distinct = len(distinct)
    ok = np.array([d.ok for d in distinct], dtype=bool)[row]
    stats["decode_errors"] = int((~ok).sum())
    qr = (flags >> 15).astype(bool)
    # rcode: "" for queries; the full (extended) rcode when the message parsed, else the header's four bits
    has_rcode = np.array([d.rcode is not None for d in distinct], dtype=bool)[row]
    rcode_codes = np.where(~qr, n_distinct + 16, np.where(has_rcode, row, n_distinct + (flags & 0xF)))
    rcode_table = [d.rcode or "" for d in distinct] + [dns.rcode.to_text(i) for i in range(16)] + [""]

    row_kind = column("kind")
    frame = pd.DataFrame(
        {
            "ts_ns": column("ts_ns").astype(np.int64) + boot_to_wall_ns,
            **vantage_columns(column("capture_id"), column("ifindex"), vantages),
            "ifindex": column("ifindex").astype(np.int32),
            "pkt_type": categorical(np.minimum(column("pkt_type"), 7), events.PKT_TYPES),
            "kind": categorical((row_kind == KIND_ICMP_ERROR).astype(np.int64), ["dns", "icmp-error"]),
            "icmp_type": np.where(row_kind == KIND_ICMP_ERROR, column("icmp_type").astype(np.int16), -1).astype(np.int16),
            "icmp_code": np.where(row_kind == KIND_ICMP_ERROR, column("icmp_code").astype(np.int16), -1).astype(np.int16),
            "proto": categorical((column("proto") == IPPROTO_TCP).astype(np.int64), ["udp", "tcp"]),
            "family": column("family").astype(np.int8),
            "src_ip": ip_strings(column("saddr"), column("family")),
            "src_port": column("sport").astype(np.int32),
            "dst_ip": ip_strings(column("daddr"), column("family")),
            "dst_port": column("dport").astype(np.int32),
            "dns_id": dns_id.astype(np.int32),
            "qr": qr,
            "opcode": ((flags >> 11) & 0xF).astype(np.int8),
            "rcode": categorical(rcode_codes, rcode_table),
            "aa": ((flags >> 10) & 1).astype(bool),
            "tc": ((flags >> 9) & 1).astype(bool),
            "rd": ((flags >> 8) & 1).astype(bool),
            "ra": ((flags >> 7) & 1).astype(bool),
            "qname": categorical(row, [d.qname for d in distinct]),
            "qtype": categorical(row, [d.qtype for d in distinct]),
            "answers": categorical(row, [d.answers for d in distinct]),
            "ancount": ancount.astype(np.int16),
            "size": size,
            "latency_ns": np.where(qr, latency, 0),
            "decoded": ok,
        }
    )
    if is_control.any():
        control = control_rows(records[is_control], vantages, boot_to_wall_ns)
        # pandas' own rule, spelled out (its implicit form is deprecated): an empty part or an all-NA column
        # does not decide a column's dtype
        frame = pd.concat([frame, control.dropna(axis=1, how="all")], ignore_index=True) if len(frame) else control
    frame = frame.sort_values("ts_ns", kind="stable")
    return events.conform(frame), stats, rest


def concat_parts(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Event tables decoded from consecutive parts of a capture, as one sorted by time: categoricals joined
    with their categories (sorted, only those used, as one decode makes them), never through strings per row."""
    frames = [f for f in frames if len(f)]
    if len(frames) <= 1:
        return frames[0] if frames else events.empty_events()
    columns = {}
    for name in frames[0].columns:
        if isinstance(frames[0][name].dtype, pd.CategoricalDtype):
            columns[name] = union_categoricals([f[name] for f in frames], sort_categories=True)
        else:
            columns[name] = np.concatenate([f[name].to_numpy() for f in frames])
    return events.conform(pd.DataFrame(columns).sort_values("ts_ns", kind="stable"))


PAYLOAD_OFFSET = EVENT_DTYPE.fields["payload"][1]


def datagram_keys(raw: bytes, positions: np.ndarray, dns_at: np.ndarray, captured: np.ndarray) -> list[bytes]:
    """Each record's captured DNS bytes after the DNS id (`decode_keyed`'s keys), sliced straight from `raw`:
    one small bytes object per row, no copy of the payloads first."""
    base = positions.astype(np.int64) * EVENT_DTYPE.itemsize + PAYLOAD_OFFSET
    starts = base + dns_at + 2
    ends = base + captured  # before `starts` when under two bytes were captured: an empty key, as wire[2:] gives
    return list(map(raw.__getitem__, map(slice, starts.tolist(), ends.tolist())))


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
