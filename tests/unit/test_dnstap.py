"""dnstap (Frame Streams) into packet events: a real CoreDNS's output, and every message type and edge case crafted."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
import dns.rcode
import dns.update
import dnstap_pb
import fstrm
import pytest

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.dnstap import read_dnstap, read_dnstap_detailed
from tests import packets as p

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats" / "coredns-dnstap.fstrm"
Type = dnstap_pb.Message.Type


def test_real_coredns_output_four_legs_per_lookup():
    frame, stats = read_dnstap(FIXTURE)
    assert {c: str(t) for c, t in frame.dtypes.items()} == events.COLUMNS
    assert (stats["client_query"], stats["client_response"], stats["forwarder_query"], stats["forwarder_response"]) == (4, 4, 4, 4)
    assert set(frame["vantage"]) == {"kube-system/coredns-0"} and set(frame["role"]) == {"coredns"}
    first = frame.iloc[:4]
    assert list(first["pkt_type"]) == ["HOST", "OUTGOING", "HOST", "OUTGOING"]
    assert list(first["qr"]) == [False, False, True, True]
    assert list(first["dst_ip"])[:2] == ["", "127.0.0.54"]  # CoreDNS does not record its own address on the client leg
    assert first.iloc[3].answers == "A 10.96.88.7" and first.iloc[3].src_port == 0 and first.iloc[3].dst_ip == "127.0.0.1"
    assert (first["latency_ns"].iloc[3] > first["latency_ns"].iloc[2] > 0)
    assert list(frame["rcode"][frame["qr"]]) == ["NOERROR", "NOERROR", "SERVFAIL", "SERVFAIL", "SERVFAIL", "SERVFAIL", "NOERROR", "NOERROR"]
    assert set(frame["proto"].iloc[12:]) == {"tcp"}
    assert frame["ts_ns"].is_monotonic_increasing


def test_vantage_given_overrides_the_identity():
    frame, _ = read_dnstap(FIXTURE, vantage="coredns/kube-system/coredns-5d78c9869d-abcde")
    assert set(frame["vantage"]) == {"kube-system/coredns-5d78c9869d-abcde"}


def tap(kind: int, wire: bytes | None, v6: bool = False) -> bytes:
    message = dnstap_pb.Message(type=kind, socket_family=2 if v6 else 1, socket_protocol=1, query_port=40000,
                                query_address=socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, "fd00::5" if v6 else "10.244.1.5"),
                                query_time_sec=1_700_000_000, query_time_nsec=5, response_time_sec=1_700_000_000, response_time_nsec=900)
    if wire is not None:
        if kind % 2:
            message.query_message = wire
        else:
            message.response_message = wire
    return dnstap_pb.Dnstap(identity=b"coredns-1", type=dnstap_pb.Dnstap.Type.MESSAGE, message=message).SerializeToString()


def frame_stream(payloads: list[bytes], content_type: bytes = b"protobuf:dnstap.Dnstap", stop: bool = True) -> bytes:
    codec = fstrm.FstrmCodec()
    data = codec.encode_ctrlstart(content_type) + b"".join(codec.encode_data(x) for x in payloads)
    return data + (codec.encode(ctrl=fstrm.FSTRM_CONTROL_STOP) if stop else b"")


def accounted(stats: dict) -> int:
    """Frames the reader accounts for: mapped, or counted for why not."""
    return stats["frames_mapped"] + sum(stats.get(k, 0) for k in ("no_message", "not_messages", "bad_frames", "bad_address", "type_unknown"))


def with_unknown_type(payload: bytes) -> bytes:
    """A dnstap frame whose message type is 15, a number dnstap.proto does not define (type is its first field)."""
    return payload.replace(b"\x08" + bytes([Type.CLIENT_QUERY]), b"\x08\x0f", 1)


def test_unknown_types_bad_addresses_and_messages_without_bytes_are_counted(tmp_path):
    path = tmp_path / "tap.fstrm"
    bad_address = dnstap_pb.Dnstap(type=dnstap_pb.Dnstap.Type.MESSAGE, message=dnstap_pb.Message(
        type=Type.AUTH_QUERY, query_address=b"\x0a\x00\x00", query_message=p.query())).SerializeToString()
    path.write_bytes(frame_stream([tap(Type.CLIENT_QUERY, p.query(), v6=True), tap(Type.AUTH_QUERY, p.query()),
                                   tap(Type.CLIENT_RESPONSE, None), b"\xff\xff not protobuf",
                                   with_unknown_type(tap(Type.CLIENT_QUERY, p.query())), bad_address]))
    frame, stats = read_dnstap(path)
    assert len(frame) == 2 and frame.iloc[0].src_ip == "fd00::5" and frame.iloc[0].family == 6
    assert frame.iloc[0].ts_ns == 1_700_000_000_000_000_005 and frame.iloc[0].vantage == "kube-system/coredns-1"
    assert (stats["auth_query"], stats["no_message"], stats["bad_frames"], stats["type_unknown"], stats["bad_address"]) == (1, 1, 1, 1, 1)
    assert stats["frames"] == 6 == accounted(stats)


QUERIER = ("10.0.0.1", 40000)
RESPONDER = ("10.0.0.2", 53)


def exchange(kind: int, query: bytes | None = None, response: bytes | None = None, identity: bytes = b"", query_ns: int = 100,
             response_ns: int = 900) -> bytes:
    """A dnstap message between QUERIER (query_address) and RESPONDER (response_address), as dnstap.proto has them."""
    message = dnstap_pb.Message(type=kind, socket_family=1, socket_protocol=1, query_address=socket.inet_aton(QUERIER[0]),
                                query_port=QUERIER[1], response_address=socket.inet_aton(RESPONDER[0]), response_port=RESPONDER[1])
    if query is not None:
        message.query_message, message.query_time_sec, message.query_time_nsec = query, 1_700_000_000, query_ns
    if response is not None:
        message.response_message, message.response_time_sec, message.response_time_nsec = response, 1_700_000_000, response_ns
    return dnstap_pb.Dnstap(identity=identity, version=b"test 1.0", type=dnstap_pb.Dnstap.Type.MESSAGE, message=message).SerializeToString()


# dnstap.proto: the writer of AUTH/CLIENT/UPDATE messages answers (receives queries), of the others asks (sends them)
WRITER_ANSWERS = ["AUTH", "CLIENT", "UPDATE"]
WRITER_ASKS = ["RESOLVER", "FORWARDER", "STUB", "TOOL"]


@pytest.mark.parametrize("role", WRITER_ANSWERS + WRITER_ASKS)
def test_every_message_type_is_a_row_in_its_direction_at_the_writer(tmp_path, role):
    path = tmp_path / "bind.fstrm"
    path.write_bytes(frame_stream([exchange(Type.Value(f"{role}_QUERY"), query=p.query(qid=7)),
                                   exchange(Type.Value(f"{role}_RESPONSE"), response=p.response(qid=7))]))
    result = read_dnstap_detailed(path)
    frame, stats = result.frame, result.stats
    query, response = frame.iloc[0], frame.iloc[1]
    assert list(result.message_types) == [f"{role}_QUERY", f"{role}_RESPONSE"]
    assert (query.src_ip, query.src_port, query.dst_ip, query.dst_port, query.qr) == (*QUERIER, *RESPONDER, False)
    assert (response.src_ip, response.src_port, response.dst_ip, response.dst_port, response.qr) == (*RESPONDER, *QUERIER, True)
    received, sent = ("HOST", "OUTGOING") if role in WRITER_ANSWERS else ("OUTGOING", "HOST")
    assert (query.pkt_type, response.pkt_type) == (received, sent)
    assert (query.ts_ns, response.ts_ns) == (1_700_000_000_000_000_100, 1_700_000_000_000_000_900)
    assert response.latency_ns == 800 and response.rcode == "NOERROR" and response.dns_id == 7
    assert set(frame["vantage"]) == {"bind"} and set(frame["role"]) == {"other"}  # no identity: the file names the writer
    assert stats[f"{role.lower()}_query"] == stats[f"{role.lower()}_response"] == 1 and stats["frames"] == 2 == accounted(stats)
    assert stats["writers"] == [{"vantage": "bind", "role": "other", "identity": "", "version": "test 1.0",
                                 "types": {f"{role}_QUERY": 1, f"{role}_RESPONSE": 1}}]


def test_a_response_that_carries_its_query_adds_the_query_only_when_no_query_frame_has_it(tmp_path):
    only_responses = tmp_path / "resolver.fstrm"
    only_responses.write_bytes(frame_stream([exchange(Type.RESOLVER_RESPONSE, query=p.query(qid=9), response=p.response(qid=9))]))
    result = read_dnstap_detailed(only_responses)
    assert list(result.message_types) == ["RESOLVER_RESPONSE/query", "RESOLVER_RESPONSE"]
    assert list(result.frame["qr"]) == [False, True] and list(result.frame["pkt_type"]) == ["OUTGOING", "HOST"]
    assert result.frame.iloc[1].latency_ns == 800 and result.stats["embedded_queries"] == 1
    both = tmp_path / "both.fstrm"
    both.write_bytes(frame_stream([exchange(Type.RESOLVER_QUERY, query=p.query(qid=9)),
                                   exchange(Type.RESOLVER_RESPONSE, query=p.query(qid=9), response=p.response(qid=9))]))
    result = read_dnstap_detailed(both)
    assert list(result.message_types) == ["RESOLVER_QUERY", "RESOLVER_RESPONSE"]  # the query once, not twice
    assert result.stats["embedded_queries_seen"] == 1 and "embedded_queries" not in result.stats


def test_identity_names_the_writer_and_coredns_is_known_by_its_version(tmp_path):
    path = tmp_path / "tap.fstrm"
    path.write_bytes(frame_stream([exchange(Type.CLIENT_QUERY, query=p.query(), identity=b"dnsdist"),
                                   exchange(Type.CLIENT_QUERY, query=p.query(), identity=b"coredns-7d8f")]))
    frame, stats = read_dnstap(path)
    assert dict(zip(frame["vantage"], frame["role"])) == {"dnsdist": "other", "kube-system/coredns-7d8f": "coredns"}
    assert [w["identity"] for w in stats["writers"]] == ["dnsdist", "coredns-7d8f"]


def test_a_file_cut_short_keeps_the_whole_frames(tmp_path):
    path = tmp_path / "tap.fstrm"
    path.write_bytes(frame_stream([tap(Type.CLIENT_QUERY, p.query()), tap(Type.CLIENT_RESPONSE, p.response())], stop=False)[:-7])
    frame, stats = read_dnstap(path)
    assert len(frame) == 1 and stats["truncated_bytes"] > 0


@pytest.mark.parametrize("content, reason", [
    (b"", "not a Frame Streams file"),
    (fstrm.FstrmCodec().encode_data(b"x" * 8), "does not begin with a START frame"),
    (frame_stream([], content_type=b"protobuf:other"), "not dnstap"),
])
def test_bad_files_are_clear_errors(tmp_path, content, reason):
    path = tmp_path / "tap.fstrm"
    path.write_bytes(content)
    with pytest.raises(EventsError, match=reason) as caught:
        read_dnstap(path)
    assert str(path) in str(caught.value)


def test_an_update_refused_keeps_its_opcode_zone_and_rcode(tmp_path):
    update = dns.update.UpdateMessage("stratolab.org.", id=77)
    update.add("www", 300, "A", "10.0.0.1")
    refused = dns.message.make_response(update)
    refused.set_rcode(dns.rcode.REFUSED)
    path = tmp_path / "auth.fstrm"
    path.write_bytes(frame_stream([exchange(Type.UPDATE_QUERY, query=update.to_wire()), exchange(Type.UPDATE_RESPONSE, response=refused.to_wire())]))
    frame, stats = read_dnstap(path)
    assert list(frame["opcode"]) == [5, 5] and list(frame["pkt_type"]) == ["HOST", "OUTGOING"]  # the server received it, answered
    assert list(frame["qname"]) == ["stratolab.org."] * 2 and list(frame["qtype"]) == ["SOA"] * 2
    assert list(frame["rcode"]) == ["", "REFUSED"] and (stats["update_query"], stats["update_response"]) == (1, 1)
