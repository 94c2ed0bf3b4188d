"""CoreDNS's `dnstap` output (a Frame Streams file of dnstap protobufs) into the packet-event table.

    frame, stats = read_dnstap("coredns-0.fstrm")                 # the replica from dnstap's identity
    frame, stats = read_dnstap("tap.fstrm", vantage="coredns/coredns-0")

CoreDNS writes four kinds of message (with `dnstap SOCKET full`, each carries the DNS message):
CLIENT_QUERY / CLIENT_RESPONSE, the client's leg, and FORWARDER_QUERY / FORWARDER_RESPONSE,
the leg to the upstream. Each becomes one row at the replica's vantage, as a packet there would:

| message            | time          | src → dst                              | pkt_type |
| ------------------ | ------------- | -------------------------------------- | -------- |
| CLIENT_QUERY       | query_time    | query_address → response_address       | HOST     |
| CLIENT_RESPONSE    | response_time | response_address → query_address       | OUTGOING |
| FORWARDER_QUERY    | query_time    | query_address → response_address       | OUTGOING |
| FORWARDER_RESPONSE | response_time | response_address → query_address       | HOST     |

CoreDNS (1.14) leaves response_address empty on the client leg, so the replica's own address
there is "" (port 0). Other message types are counted by name; messages without the DNS
message (dnstap without `full`) are counted as `no_message`. The replica is the message's
identity (CoreDNS's default is the host name, the pod's name in Kubernetes) unless a vantage
is given. The DNS bytes are decoded like the eBPF capture's payloads.

Reading uses the `fstrm` (Frame Streams codec) and `dnstap-pb` (the dnstap protobuf) packages.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import fstrm
import pandas as pd
from google.protobuf.message import DecodeError

import dnstap_pb
from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.naming import vantage_and_role
from dnscorrelate.sources.pcap import IPPROTO_TCP, IPPROTO_UDP, Row, Transport, frame_of_rows

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
Type = dnstap_pb.Message.Type
LEGS = {  # message type -> (is a response, pkt_type at the replica)
    Type.CLIENT_QUERY: (False, "HOST"),
    Type.CLIENT_RESPONSE: (True, "OUTGOING"),
    Type.FORWARDER_QUERY: (False, "OUTGOING"),
    Type.FORWARDER_RESPONSE: (True, "HOST"),
}
UDP_PROTOCOLS = {dnstap_pb.SocketProtocol.UDP, dnstap_pb.SocketProtocol.DNSCryptUDP, dnstap_pb.SocketProtocol.DOQ}


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


def replica_vantage(given: str | None, identity: bytes, path: Path) -> tuple[str, str]:
    name = given or (identity.decode(errors="replace") if identity else path.stem)
    vantage, role = vantage_and_role(name if "/" in name else f"coredns/{name}")
    return vantage, role


def message_row(message, vantage: int, stats: Counter) -> Row | None:
    """The row for one dnstap message, or None (counted) when it is not a client or forwarder message."""
    name = Type.Name(message.type) if message.type in Type.values() else str(message.type)
    if message.type not in LEGS:
        stats[f"type_{name.lower()}"] += 1
        return None
    response, pkt_type = LEGS[message.type]
    wire = message.response_message if response else message.query_message
    if not wire:
        stats["no_message"] += 1
        return None
    stats[name.lower()] += 1
    seconds, nanos = (message.response_time_sec, message.response_time_nsec) if response else (message.query_time_sec, message.query_time_nsec)
    family = 6 if message.socket_family == dnstap_pb.SocketFamily.INET6 else 4
    proto = IPPROTO_UDP if message.socket_protocol in UDP_PROTOCOLS else IPPROTO_TCP
    asker = (message.query_address, message.query_port)
    answerer = (message.response_address, message.response_port)
    (src, sport), (dst, dport) = (answerer, asker) if response else (asker, answerer)
    t = Transport(family, proto, bytes(src), bytes(dst), sport, dport, wire, len(wire))
    return Row(ts_ns=seconds * 1_000_000_000 + nanos, vantage=vantage, pkt_type=pkt_type, ifindex=0, kind="dns", t=t,
               wire=bytes(wire), complete=True, size=len(wire))


def read_dnstap(path: str | Path, vantage: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of one dnstap Frame Streams file, and what was counted reading it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EventsError(f"{path}: cannot read: {err.strerror}") from None
    stats: Counter = Counter()
    vantages: dict[bytes, int] = {}
    names: list[tuple[str, str, str]] = []
    rows = []
    for payload in frames(path, data, stats):
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
        key = b"" if vantage else tap.identity
        if key not in vantages:
            vantages[key] = len(names)
            names.append((*replica_vantage(vantage, tap.identity, path), ""))
        row = message_row(tap.message, vantages[key], stats)
        if row is not None:
            rows.append(row)
    frame = frame_of_rows(rows, names, stats) if rows else events.empty_events()
    frame = frame.sort_values("ts_ns", kind="stable") if rows else frame
    return events.conform(frame), dict(stats)
