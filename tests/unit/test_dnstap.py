"""CoreDNS dnstap (Frame Streams) into packet events: a real CoreDNS's output, and crafted edge cases."""

from __future__ import annotations

import socket
from pathlib import Path

import dnstap_pb
import fstrm
import pytest

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.dnstap import read_dnstap
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


def test_other_types_and_messages_without_bytes_are_counted(tmp_path):
    path = tmp_path / "tap.fstrm"
    path.write_bytes(frame_stream([tap(Type.CLIENT_QUERY, p.query(), v6=True), tap(Type.AUTH_QUERY, p.query()),
                                   tap(Type.CLIENT_RESPONSE, None), b"\xff\xff not protobuf"]))
    frame, stats = read_dnstap(path)
    assert len(frame) == 1 and frame.iloc[0].src_ip == "fd00::5" and frame.iloc[0].family == 6
    assert frame.iloc[0].ts_ns == 1_700_000_000_000_000_005 and frame.iloc[0].vantage == "kube-system/coredns-1"
    assert (stats["type_auth_query"], stats["no_message"], stats["bad_frames"], stats["frames"]) == (1, 1, 1, 4)


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
