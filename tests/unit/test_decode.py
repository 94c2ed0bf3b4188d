"""From tracer records to the packet-event table: fields, IPv6, TCP reassembly, malformed payloads."""

import struct
from collections import Counter

import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscorrelate import events
from dnscorrelate.sources.decode import Vantage, decode, decode_message, decode_settled
from tests.frames import TCP, query, record, response

VANTAGES = {1: Vantage(4026531840, "demo/mypod", "pod", {2: "eth0"}), 2: Vantage(4026531841, "node-0", "node")}


def test_query_and_response_become_rows_in_time_order():
    raw = record(response(), ts=2_000, src="10.96.0.10", dst="10.244.0.4", sport=53, dport=40000, latency=900, pkt_type=0) + record(query(), ts=1_000)
    frame, stats = decode(raw, VANTAGES, boot_to_wall_ns=10**18)
    assert list(frame.columns) == list(events.COLUMNS)
    q, r = frame.iloc[0], frame.iloc[1]
    assert (q.ts_ns, q.vantage, q.role, q.ifname, q.pkt_type, q.qr, q.qname, q.qtype, q.rcode) == (
        10**18 + 1_000, "demo/mypod", "pod", "eth0", "OUTGOING", False, "example.com.", "A", "")
    assert (r.pkt_type, r.qr, r.rcode, r.answers, r.latency_ns, r.dns_id, r.rd, r.ancount) == (
        "HOST", True, "NOERROR", "A 192.0.2.10", 900, 0x1234, True, 1)
    assert (r.src_ip, r.src_port, r.dst_ip, r.dst_port) == ("10.96.0.10", 53, "10.244.0.4", 40000)
    assert stats["decode_errors"] == 0


def test_rcode_and_empty_answers():
    frame, _ = decode(record(response("nosuch.example.com.", None, rcode=3), sport=53, dport=1), VANTAGES, 0)
    assert (frame.rcode[0], frame.answers[0], frame.ancount[0]) == ("NXDOMAIN", "", 0)


def test_ipv6_addresses():
    raw = record(query("example.com.", "AAAA"), family=6, src="fd00::4", dst="fd00:10::a")
    frame, _ = decode(raw, VANTAGES, 0)
    assert (frame.family[0], frame.src_ip[0], frame.dst_ip[0], frame.qtype[0]) == (6, "fd00::4", "fd00:10::a", "AAAA")


def test_a_capture_cut_short_still_gives_the_question():
    big = dns.message.make_response(dns.message.make_query("big.example.com.", "TXT"))
    for i in range(30):
        big.answer.append(dns.rrset.from_text("big.example.com.", 30, "IN", "TXT", f'"{"x" * 40}{i}"'))
    wire = big.to_wire()
    assert len(wire) > 600
    frame, stats = decode(record(wire, sport=53, dport=40000), VANTAGES, 0)
    assert (frame.qname[0], frame.qtype[0], frame["size"][0], frame.decoded[0]) == ("big.example.com.", "TXT", len(wire), True)
    assert stats["decode_errors"] == 0


def test_garbage_is_kept_and_counted_not_fatal():
    frame, stats = decode(record(b"\xff" * 40), VANTAGES, 0)
    assert len(frame) == 1 and not frame.decoded[0] and frame.qname[0] == ""
    assert stats["decode_errors"] == 1


def test_records_from_unknown_namespaces_are_counted():
    frame, stats = decode(record(query(), capture_id=9), VANTAGES, 0)
    assert len(frame) == 0 and stats["unknown_namespace"] == 1


def framed(*wires):
    return b"".join(struct.pack("!H", len(w)) + w for w in wires)


def test_tcp_segment_with_two_messages_gives_two_rows():
    stream = framed(query("a.example.com.", qid=1), query("b.example.com.", qid=2))
    frame, _ = decode(record(stream, proto=TCP, seq=100), VANTAGES, 0)
    assert list(frame.qname) == ["a.example.com.", "b.example.com."] and list(frame.dns_id) == [1, 2]
    assert list(frame.proto) == ["tcp", "tcp"]


def test_tcp_message_split_over_segments_is_reassembled_once():
    stream = framed(response(qid=7))
    first, second = stream[:10], stream[10:]
    raw = record(first, proto=TCP, seq=500, ts=1, sport=53, dport=4000) + record(second, proto=TCP, seq=510, ts=2, sport=53, dport=4000)
    raw += record(second, proto=TCP, seq=510, ts=3, sport=53, dport=4000)  # a retransmission
    frame, stats = decode(raw, VANTAGES, 0)
    assert len(frame) == 1
    assert (frame.dns_id[0], frame.qr[0], frame.answers[0], frame.ts_ns[0]) == (7, True, "A 192.0.2.10", 2)
    assert stats["tcp_retransmissions"] == 1


def test_tcp_bytes_that_never_form_a_message_are_counted():
    stream = framed(query())
    frame, stats = decode(record(stream[:9], proto=TCP, seq=1), VANTAGES, 0)
    assert len(frame) == 0 and stats["tcp_incomplete_bytes"] == 9


def test_a_capture_decoded_part_after_part_gives_the_rows_of_one_decode():
    """`capture -o FILE.parquet` decodes as it goes: a TCP message whose segments fall in two parts is held back
    whole to the next part, not cut in two (nor counted as incomplete bytes)."""
    stream = framed(query("a.example.com.", qid=1), response("b.example.com.", qid=2), query("c.example.com.", qid=3))
    cuts = [0, 7, 20, len(stream) - 30, len(stream)]
    records = [record(query("u.example.com.", qid=9), ts=0)]
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        records.append(record(stream[a:b], proto=TCP, seq=100 + a, ts=10 + 10 * k, sport=53, dport=4000))
        records.append(record(query(f"u{k}.example.com.", qid=10 + k), ts=11 + 10 * k))
    whole, whole_stats = decode(b"".join(records), VANTAGES, 0)
    assert len(whole) == 3 + len(records) - 4 and whole_stats["tcp_incomplete_bytes"] == 0
    for size in range(1, len(records) + 1):  # parts of every size
        frames, held, stats = [], b"", Counter()
        for start in range(0, len(records), size):
            frame, counts, held = decode_settled(held + b"".join(records[start:start + size]), VANTAGES, 0)
            frames.append(frame)
            stats.update(counts)
        assert held == b""
        parts = events.concat(frames)
        assert parts.sort_values(["ts_ns", "dns_id"]).reset_index(drop=True).equals(whole.sort_values(["ts_ns", "dns_id"]).reset_index(drop=True))
        assert stats["tcp_incomplete_bytes"] == 0 and stats["decode_errors"] == 0


def test_a_tcp_message_never_finished_is_held_then_counted_at_the_end():
    stream = framed(query())
    frame, stats, held = decode_settled(record(stream[:9], proto=TCP, seq=1), VANTAGES, 0)
    assert len(frame) == 0 and held and "tcp_incomplete_bytes" not in stats
    frame, stats = decode(held, VANTAGES, 0)  # the capture's end decodes what is left, as before
    assert len(frame) == 0 and stats["tcp_incomplete_bytes"] == 9


def test_icmp_error_rows_keep_the_quoted_tuple():
    frame, _ = decode(record(query(), kind=1, pkt_type=0), VANTAGES, 0)
    assert (frame.kind[0], frame.qname[0], frame.dst_port[0]) == ("icmp-error", "example.com.", 53)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_any_payload_decodes_without_raising(payload):
    result = decode_message(payload, complete=True)
    assert result.ok in (True, False)
    frame, stats = decode(record(payload, sport=53), VANTAGES, 0)
    assert len(frame) == 1 and stats["decode_errors"] == int(not frame.decoded[0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), max_size=6))
def test_any_tcp_segments_decode_without_raising(segments):
    raw, seq = b"", 1
    for i, data in enumerate(segments):
        raw += record(data, proto=TCP, seq=seq, ts=i)
        seq += len(data)
    frame, _ = decode(raw, VANTAGES, 0)
    assert len(frame) <= sum(len(s) for s in segments) // 2 + 1


def test_events_round_trip_through_parquet_and_json(tmp_path):
    frame, _ = decode(record(query()) + record(response(), sport=53, dport=40000, ts=5), VANTAGES, 0)
    events.save(frame, tmp_path / "e.parquet", {"lost_samples": 0})
    again, stats = events.load(tmp_path / "e.parquet")
    assert again.equals(frame) and stats == {"lost_samples": 0}
    (tmp_path / "e.json").write_text(events.to_json(frame, {"lost_samples": 3}))
    again, stats = events.load(tmp_path / "e.json")
    assert list(again.qname) == list(frame.qname) and stats == {"lost_samples": 3}
