"""The live dnstap sink and follower: the Frame Streams reader's handshake against a fake CoreDNS writer,
frames appended to the sink's file, and a follower that reads only what came after it started."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import fstrm
import pandas as pd
import pytest

from dnscorrelate.sources.dnstap import CONTENT_TYPE, frames, read_dnstap
from dnscorrelate import events
from dnscorrelate.live.dnstap import DnstapFollower, Sink, align_forwarder_ids

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats" / "coredns-dnstap.fstrm"


def fixture_payloads() -> list[bytes]:
    from collections import Counter

    return list(frames(FIXTURE, FIXTURE.read_bytes(), Counter()))


def read_frame(connection: socket.socket) -> tuple:
    codec = fstrm.FstrmCodec()
    while True:
        chunk = connection.recv(4096)
        assert chunk, "the reader closed the connection"
        if codec.append_and_process(chunk):
            return codec.decode()


def handshake(path: Path, content_type: bytes = CONTENT_TYPE) -> socket.socket:
    """Be CoreDNS: connect, READY, wait for ACCEPT, START."""
    codec = fstrm.FstrmCodec()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(str(path))
    client.sendall(codec.encode_ctrlready(content_type))
    kind, content_types, _ = read_frame(client)
    assert (kind, content_types) == (fstrm.FSTRM_CONTROL_ACCEPT, [CONTENT_TYPE])
    client.sendall(codec.encode_ctrlstart(content_type))
    return client


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def sink(tmp_path):
    running = Sink(tmp_path / "dnstap", ["coredns-0"]).start()
    yield running
    running.close()


def test_the_sink_does_the_readers_handshake_and_keeps_every_frame(sink):
    payloads = fixture_payloads()
    follower = DnstapFollower([("coredns-0", sink.file_path("coredns-0"))]).start(since_ns=0)
    client = handshake(sink.socket_path("coredns-0"))
    codec = fstrm.FstrmCodec()
    client.sendall(b"".join(codec.encode_data(p) for p in payloads))
    client.sendall(codec.encode(ctrl=fstrm.FSTRM_CONTROL_STOP))
    kind, _, _ = read_frame(client)
    assert kind == fstrm.FSTRM_CONTROL_FINISH
    client.close()
    wait_for(lambda: sink.stats["finished"] == 1)

    assert sink.stats["frames"] == len(payloads) == 16
    saved, counts = read_dnstap(sink.file_path("coredns-0"))  # the sink's file is a Frame Streams file
    assert counts["frames"] == 16 and len(saved) == 16
    live = follower.events()
    assert len(live) == 16 and set(live["vantage"]) == {"kube-system/coredns-0"} and set(live["ifname"]) == {"dnstap"}
    assert list(live["qname"]) == list(saved["qname"]) and list(live["latency_ns"]) == list(saved["latency_ns"])
    stats = follower.stats
    assert (stats["frames"], stats["client_query"], stats["forwarder_response"], stats["undecodable"]) == (16, 4, 4, 0)


def test_the_follower_reads_only_what_came_after_it_started_and_waits_for_whole_frames(sink):
    payloads = fixture_payloads()
    codec = fstrm.FstrmCodec()
    client = handshake(sink.socket_path("coredns-0"))
    client.sendall(b"".join(codec.encode_data(p) for p in payloads[:4]))
    wait_for(lambda: sink.stats["frames"] == 4)
    follower = DnstapFollower([("coredns-0", sink.file_path("coredns-0"))]).start(since_ns=0)
    assert len(follower.new_events()) == 0
    client.sendall(b"".join(codec.encode_data(p) for p in payloads[4:8]))
    wait_for(lambda: sink.stats["frames"] == 8)
    assert list(follower.new_events()["dns_id"]) == list(read_dnstap(FIXTURE)[0]["dns_id"][4:8])

    half = codec.encode_data(payloads[8])
    with open(sink.file_path("coredns-0"), "ab") as f:  # a frame still being written
        f.write(half[:10])
    assert len(follower.new_events()) == 0 and follower.stats["pending_bytes"] == 10
    with open(sink.file_path("coredns-0"), "ab") as f:
        f.write(half[10:])
    assert len(follower.new_events()) == 1 and follower.stats["pending_bytes"] == 0
    assert len(follower.events()) == 5
    client.close()


def test_messages_timed_before_the_session_started_are_counted_not_kept(sink):
    follower = DnstapFollower([("coredns-0", sink.file_path("coredns-0"))]).start()  # the fixture was recorded long before
    client = handshake(sink.socket_path("coredns-0"))
    client.sendall(b"".join(fstrm.FstrmCodec().encode_data(p) for p in fixture_payloads()))
    wait_for(lambda: sink.stats["frames"] == 16)
    follower.stop()
    assert len(follower.events()) == 0 and (follower.stats["frames"], follower.stats["outside_session"]) == (16, 16)
    client.close()


def test_a_writer_that_offers_another_content_type_is_refused(sink):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(str(sink.socket_path("coredns-0")))
    client.sendall(fstrm.FstrmCodec().encode_ctrlready(b"protobuf:other.Thing"))
    assert client.recv(100) == b""  # closed without ACCEPT
    wait_for(lambda: sink.stats["handshake_errors"] == 1)


def test_bad_frames_and_other_records_are_counted_not_dropped_silently(sink):
    follower = DnstapFollower([("coredns-0", sink.file_path("coredns-0"))]).start(since_ns=0)
    client = handshake(sink.socket_path("coredns-0"))
    codec = fstrm.FstrmCodec()
    client.sendall(codec.encode_data(b"\xff\xff\xff") + codec.encode_data(fixture_payloads()[0]))
    wait_for(lambda: sink.stats["frames"] == 2)
    assert len(follower.events()) == 1
    assert (follower.stats["frames"], follower.stats["bad_frames"]) == (2, 1)
    client.close()


def test_closing_the_sink_removes_its_sockets_and_keeps_its_files(tmp_path):
    sink = Sink(tmp_path, ["coredns-0", "coredns-1"]).start()
    assert sink.socket_path("coredns-1").is_socket()
    sink.close()
    assert not list(tmp_path.glob("*.sock")) and sorted(p.name for p in tmp_path.glob("*.fstrm")) == ["coredns-0.fstrm", "coredns-1.fstrm"]


def test_forwarder_rows_take_the_dns_id_their_packets_carried_upstream():
    tap, _ = read_dnstap(FIXTURE)
    tap["ifname"] = "dnstap"
    forwarder = (tap["qr"] == (tap["pkt_type"] == "HOST")).to_numpy()
    packets = tap[forwarder].copy()  # the same exchanges on the wire: a new id each, seen a little later
    packets["ifname"], packets["ts_ns"] = "eth0", packets["ts_ns"] + 30_000
    packets["dns_id"] = (packets["dns_id"] + 1000) % 65536
    packets.loc[packets.index[-1], "ts_ns"] += 5 * 10**9  # too far to be the same packet
    frame, counts = align_forwarder_ids(events.concat([events.conform(tap), events.conform(packets)]))

    aligned = frame[(frame["ifname"] == "dnstap").to_numpy() & (frame["qr"] == (frame["pkt_type"] == "HOST")).to_numpy()]
    assert counts == {"forwarder_ids_aligned": 7, "forwarder_ids_without_packet": 1}
    assert list(aligned["dns_id"])[:7] == list(packets["dns_id"])[:7] and list(aligned["dns_id"])[7] == tap[forwarder]["dns_id"].iloc[7]
    client_leg = frame[(frame["ifname"] == "dnstap").to_numpy() & ~(frame["qr"] == (frame["pkt_type"] == "HOST")).to_numpy()]
    assert list(client_leg["dns_id"]) == list(tap[~forwarder]["dns_id"])  # the client's leg keeps its id


def test_what_coredns_says_it_dropped_is_counted_from_the_session_start(tmp_path):
    log = tmp_path / "coredns-0.log"
    log.write_text(
        "2026-11-23T19:00:00.000000001Z [WARNING] plugin/dnstap: Dropped dnstap messages: 7\n"
        "2026-11-23T19:00:10.000000001Z [INFO] 10.244.0.4:53313 - 61990 \"A IN example.com. udp 52 false 1232\" NOERROR qr,rd,ra 96 0.0008s\n"
        "2026-11-23T19:00:20.000000001Z [WARNING] plugin/dnstap: Dropped dnstap messages: 12\n"
    )
    since = int(pd.Timestamp("2026-11-23T19:00:05Z").value)
    follower = DnstapFollower([("coredns-0", tmp_path / "coredns-0.fstrm")], [("coredns-0", log), ("coredns-1", tmp_path / "x")])
    follower.start(since_ns=since)
    assert follower.stats["dropped_by_coredns"] == 12
    assert DnstapFollower([("coredns-0", tmp_path / "coredns-0.fstrm")]).start().stats.get("dropped_by_coredns") is None
