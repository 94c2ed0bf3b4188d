"""dnstap (a Frame Streams file of dnstap protobufs) from any DNS server or tool into the packet-event table.

    frame, stats = read_dnstap("coredns-0.fstrm")                 # the writer from dnstap's identity
    frame, stats = read_dnstap("tap.fstrm", vantage="coredns/coredns-0")

The writer of a dnstap message (a server, a resolver, a tool) is where it was seen: each message is one
row at the writer's vantage, as a packet captured there would be. dnstap.proto names the two ends of each
exchange the same way in every message type: `query_address:query_port` is the initiator (the one that
asked), `response_address:response_port` the responder. A *_QUERY travels initiator → responder and a
*_RESPONSE responder → initiator; which end the writer is follows from the type (dnstap.proto's diagram:
stub -SQ--CQ-> recursive -RQ--AQ-> authoritative, FQ/FR for forwarding, TQ/TR for tools, UQ/UR for
RFC 2136 updates received by an authoritative server):

| message              | writer is  | time          | src → dst                         | pkt_type |
| -------------------- | ---------- | ------------- | --------------------------------- | -------- |
| AUTH_QUERY           | responder  | query_time    | query_address → response_address  | HOST     |
| AUTH_RESPONSE        | responder  | response_time | response_address → query_address  | OUTGOING |
| CLIENT_QUERY         | responder  | query_time    | query_address → response_address  | HOST     |
| CLIENT_RESPONSE      | responder  | response_time | response_address → query_address  | OUTGOING |
| UPDATE_QUERY         | responder  | query_time    | query_address → response_address  | HOST     |
| UPDATE_RESPONSE      | responder  | response_time | response_address → query_address  | OUTGOING |
| RESOLVER_QUERY       | initiator  | query_time    | query_address → response_address  | OUTGOING |
| RESOLVER_RESPONSE    | initiator  | response_time | response_address → query_address  | HOST     |
| FORWARDER_QUERY      | initiator  | query_time    | query_address → response_address  | OUTGOING |
| FORWARDER_RESPONSE   | initiator  | response_time | response_address → query_address  | HOST     |
| STUB_QUERY           | initiator  | query_time    | query_address → response_address  | OUTGOING |
| STUB_RESPONSE        | initiator  | response_time | response_address → query_address  | HOST     |
| TOOL_QUERY           | initiator  | query_time    | query_address → response_address  | OUTGOING |
| TOOL_RESPONSE        | initiator  | response_time | response_address → query_address  | HOST     |

Writers often leave their own end empty (CoreDNS's address on the client leg, BIND's response_port on
AUTH_RESPONSE): that address is "" and that port 0, as the message says.

A *_RESPONSE may carry the query too (query_message and query_time: BIND's resolver, forwarder, stub and
tool responses, dnstap.proto's recommended fields). It becomes a query row of its own only when no
*_QUERY frame of the same writer, type pair, transport, addresses and ports carries the same query bytes:
then the writer logged only responses, and the embedded query is the one sighting of the question.
Otherwise it is a copy of a frame already read, and a second row would count the lookup twice
(a retransmission). Counted: `embedded_queries` (rows made), `embedded_queries_seen` (a QUERY frame had
it), `embedded_not_a_query` (the bytes have QR set: BIND's unit test stores the response there),
`embedded_without_time`.

The vantage: `VANTAGE=` when given (a bare name is a CoreDNS replica, `coredns/NAME`); else the message's
identity, a CoreDNS replica (`kube-system/NAME`, role coredns) when the identity or the version names
CoreDNS, otherwise the identity as it is (role `other`: dnsdist, BIND, kdig say nothing of Kubernetes);
without an identity the file's name stands for the writer. Rows' `ifname` is `dnstap` (as the live agent's
dnstap rows): what findings drawn from them call the writer's log, not a capture. `stats["writers"]` keeps each writer's identity,
version, vantage, role and message types.

Every frame is counted once: `frames` = `frames_mapped` (by type: `client_query`, `auth_response`, …) +
`no_message` (no DNS bytes: dnstap without `full`) + `not_messages` + `bad_frames` (not a dnstap
protobuf) + `bad_address` (an address neither 4 nor 16 bytes) + `type_unknown` (a message type dnstap.proto
does not define). Reading uses the `fstrm` (Frame Streams codec) and `dnstap-pb` (the dnstap protobuf)
packages; the DNS bytes are decoded like the eBPF capture's payloads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import fstrm
import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError

import dnstap_pb
from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.naming import vantage_and_role
from dnscorrelate.sources.pcap import IPPROTO_TCP, IPPROTO_UDP, Row, Transport, frame_of_rows

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
Type = dnstap_pb.Message.Type
RECEIVED_BY_RESPONDER = ("AUTH", "CLIENT", "UPDATE")  # the writer answers: it receives queries, sends responses
SENT_BY_INITIATOR = ("RESOLVER", "FORWARDER", "STUB", "TOOL")  # the writer asks: it sends queries, receives responses
DNSTAP_IFNAME = "dnstap"  # the ifname of every row: a dnstap log, not a capture (live/dnstap.py names its rows alike)
LEGS = {  # message type -> (is a response, pkt_type at the writer)
    Type.Value(f"{role}_{leg}"): (leg == "RESPONSE", ("HOST" if leg == "QUERY" else "OUTGOING") if role in RECEIVED_BY_RESPONDER
                                  else ("OUTGOING" if leg == "QUERY" else "HOST"))
    for role in RECEIVED_BY_RESPONDER + SENT_BY_INITIATOR for leg in ("QUERY", "RESPONSE")
}
QUERY_OF = {t: t - 1 for t, (response, _) in LEGS.items() if response}  # X_RESPONSE -> X_QUERY (dnstap.proto numbers them so)
TYPE_NAMES = [Type.Name(t) for t in sorted(LEGS)]
UDP_PROTOCOLS = {dnstap_pb.SocketProtocol.UDP, dnstap_pb.SocketProtocol.DNSCryptUDP, dnstap_pb.SocketProtocol.DOQ}
ADDRESS_LENGTHS = (0, 4, 16)  # IPv4, IPv6, or "" (an end the writer left out)


def frames(path: Path, data: bytes, stats: Counter):
    """Data frames of a Frame Streams file, after checking its START frame names dnstap."""
    codec = fstrm.FstrmCodec()
    view, position, started = memoryview(data), 0, False
    while position < len(data):
        need = codec.pending_nb_bytes()  # fed piece by piece: the codec copies its buffer on every frame
        chunk = bytes(view[position : position + need])
        position += len(chunk)
        if not codec.append_and_process(chunk):
            continue
        try:
            kind, content_types, payload = codec.decode()
        except Exception as err:  # the codec raises bare Exceptions on malformed control frames
            raise EventsError(f"{path}: bad Frame Streams control frame at byte {position}: {err}") from None
        if not started:
            if kind != fstrm.FSTRM_CONTROL_START:
                raise EventsError(f"{path}: not a Frame Streams file (it does not begin with a START frame)")
            if content_types and CONTENT_TYPE not in content_types:
                raise EventsError(f"{path}: Frame Streams of {content_types[0].decode(errors='replace')!r}, not dnstap")
            started = True
        elif kind == fstrm.FSTRM_DATA_FRAME:
            yield payload
        elif kind == fstrm.FSTRM_CONTROL_STOP:
            stats["streams"] += 1
            started = False  # files written by several writers, back to back
    if len(codec.buf) or codec.df_length:
        stats["truncated_bytes"] += len(codec.buf) + 4
    if not started and not stats["streams"] and not stats["frames"]:
        raise EventsError(f"{path}: not a Frame Streams file (empty, or no START frame)")


def is_coredns(identity: bytes, version: bytes) -> bool:
    return identity.lower().startswith(b"coredns") or version.lower().startswith(b"coredns")


def replica_vantage(given: str | None, identity: bytes, path: Path, version: bytes = b"") -> tuple[str, str]:
    """(vantage, role) of a dnstap writer; see the module's docstring."""
    if given:
        return vantage_and_role(given if "/" in given else f"coredns/{given}")
    name = identity.decode(errors="replace") if identity else path.stem
    if "/" not in name and is_coredns(identity, version):
        return vantage_and_role(f"coredns/{name}")
    return vantage_and_role(name)


def type_name(message) -> str:
    """The message's type; `unknown` for a number dnstap.proto does not define (protobuf then keeps it aside
    and reports the enum's default, so `type` alone would read AUTH_QUERY)."""
    return Type.Name(message.type) if message.HasField("type") and message.type in Type.values() else "unknown"


def leg_row(message, vantage: int, response: bool, pkt_type: str, wire: bytes, seconds: int, nanos: int) -> Row:
    """One row: the message `wire` travelling responder → initiator (`response`) or the reverse."""
    family = 6 if len(message.query_address) == 16 or len(message.response_address) == 16 else 4
    proto = IPPROTO_UDP if message.socket_protocol in UDP_PROTOCOLS else IPPROTO_TCP
    asker = (bytes(message.query_address), message.query_port)
    answerer = (bytes(message.response_address), message.response_port)
    (src, sport), (dst, dport) = (answerer, asker) if response else (asker, answerer)
    t = Transport(family, proto, src, dst, sport, dport, wire, len(wire))
    return Row(ts_ns=seconds * 1_000_000_000 + nanos, vantage=vantage, pkt_type=pkt_type, ifindex=0, kind="dns", t=t,
               wire=bytes(wire), complete=True, size=len(wire))


def message_row(message, vantage: int, stats: Counter) -> Row | None:
    """The row of one dnstap message's own DNS message (the query of a *_QUERY, the response of a *_RESPONSE),
    or None, counted: a type dnstap.proto does not define, no DNS bytes, an address of the wrong length."""
    name = type_name(message)
    if name == "unknown" or message.type not in LEGS:
        stats[f"type_{name.lower()}"] += 1
        return None
    if len(message.query_address) not in ADDRESS_LENGTHS or len(message.response_address) not in ADDRESS_LENGTHS:
        stats["bad_address"] += 1
        return None
    response, pkt_type = LEGS[message.type]
    wire = message.response_message if response else message.query_message
    if not wire:
        stats["no_message"] += 1
        return None
    stats[name.lower()] += 1
    seconds, nanos = (message.response_time_sec, message.response_time_nsec) if response else (message.query_time_sec, message.query_time_nsec)
    return leg_row(message, vantage, response, pkt_type, wire, seconds, nanos)


def query_key(message, vantage: int, query_type: int) -> tuple:
    """What tells a query apart at one writer: type, transport, both ends and the query's bytes."""
    return (vantage, query_type, message.socket_protocol, bytes(message.query_address), message.query_port,
            bytes(message.response_address), message.response_port, bytes(message.query_message))


def embedded_query_row(message, vantage: int, queries_seen: set, stats: Counter) -> Row | None:
    """The query a *_RESPONSE carries, as a row, when no *_QUERY frame has it already (counted either way)."""
    wire = bytes(message.query_message)
    if len(wire) >= 3 and wire[2] & 0x80:
        stats["embedded_not_a_query"] += 1
        return None
    query_type = QUERY_OF[message.type]
    if query_key(message, vantage, query_type) in queries_seen:
        stats["embedded_queries_seen"] += 1
        return None
    if not message.HasField("query_time_sec"):
        stats["embedded_without_time"] += 1
        return None
    stats["embedded_queries"] += 1
    return leg_row(message, vantage, False, LEGS[query_type][1], wire, message.query_time_sec, message.query_time_nsec)


@dataclass
class DnstapResult:
    frame: pd.DataFrame
    stats: dict
    frame_numbers: np.ndarray  # for each row, the data frame (1-based, in file order) it came from
    message_types: np.ndarray  # for each row, its message's type; `X_RESPONSE/query` for a query a response carried


@dataclass
class Writer:
    vantage: str
    role: str
    identity: str
    version: str
    types: Counter


def read_dnstap_detailed(path: str | Path, vantage: str | None = None) -> DnstapResult:
    """The events of one dnstap Frame Streams file, its stats, and each row's frame and message type."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EventsError(f"{path}: cannot read: {err.strerror}") from None
    stats: Counter = Counter()
    writers: dict[tuple[bytes, bytes], int] = {}
    described: list[Writer] = []
    rows: list[Row] = []
    numbers: list[int] = []
    types: list[str] = []
    responses_with_query: list[tuple[int, object, int]] = []
    queries_seen: set = set()
    for number, payload in enumerate(frames(path, data, stats), 1):
        stats["frames"] += 1
        tap = dnstap_pb.Dnstap()
        try:
            tap.ParseFromString(payload)
        except DecodeError:
            stats["bad_frames"] += 1
            continue
        if tap.type != dnstap_pb.Dnstap.Type.MESSAGE or not tap.HasField("message"):
            stats["not_messages"] += 1
            continue
        key = (b"", b"") if vantage else (tap.identity, tap.version)
        if key not in writers:
            writers[key] = len(described)
            described.append(Writer(*replica_vantage(vantage, tap.identity, path, tap.version), tap.identity.decode(errors="replace"),
                                    tap.version.decode(errors="replace"), Counter()))
        index, message = writers[key], tap.message
        described[index].types[type_name(message)] += 1
        row = message_row(message, index, stats)
        if row is None:
            continue
        rows.append(row)
        numbers.append(number)
        types.append(type_name(message))
        response = LEGS[message.type][0]
        if response and message.query_message:
            responses_with_query.append((number, message, index))
        elif not response:
            queries_seen.add(query_key(message, index, message.type))
    for number, message, index in responses_with_query:
        row = embedded_query_row(message, index, queries_seen, stats)
        if row is not None:
            rows.append(row)
            numbers.append(number)
            types.append(f"{type_name(message)}/query")
    stats["frames_mapped"] = sum(stats[name.lower()] for name in TYPE_NAMES)
    names = [(writer.vantage, writer.role, DNSTAP_IFNAME) for writer in described]  # writers named alike share a vantage
    frame = frame_of_rows(rows, names, stats) if rows else events.empty_events()
    order = np.argsort(frame["ts_ns"].to_numpy(), kind="stable") if rows else np.array([], dtype=np.int64)
    result = dict(stats)
    result["writers"] = [{"vantage": w.vantage, "role": w.role, "identity": w.identity, "version": w.version, "types": dict(w.types)}
                         for w in described]
    return DnstapResult(events.conform(frame.iloc[order]) if rows else frame, result,
                        np.array(numbers, dtype=np.int64)[order], np.array(types, dtype=object)[order])


def read_dnstap(path: str | Path, vantage: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of one dnstap Frame Streams file, and what was counted reading it."""
    result = read_dnstap_detailed(path, vantage)
    return result.frame, result.stats
