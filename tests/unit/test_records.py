"""live/records.py's RecordBuffer, the one buffer of a local capture and of each node's stream: live views decode
each record once, a take leaves them where they were, and every record that arrived is counted."""

from dnscorrelate.live.records import RecordBuffer
from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.sources.decode import Vantage, decode
from tests.frames import query, record, response

VANTAGES = {1: Vantage(4026531840, "demo/mypod", "pod", {2: "eth0"})}


BROKEN = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff"  # a header promising a question, then garbage


def lookup(name: str, qid: int, ts: int) -> bytes:
    """A query and its answer, and a message that does not decode (counted in `decode_errors`)."""
    return (record(query(name, qid=qid), ts=ts) + record(response(name, qid=qid), ts=ts + 5, sport=53, dport=40000,
                                                         src="10.96.0.10", dst="10.244.0.4") + record(BROKEN, ts=ts + 9))


def test_live_views_decode_each_batch_once_and_the_whole_table_is_one_decode():
    buffer = RecordBuffer()
    buffer.append(lookup("a.example.org.", 1, 1_000))
    first = buffer.new_events(VANTAGES, 0)
    buffer.append(lookup("b.example.org.", 2, 2_000))
    second = buffer.new_events(VANTAGES, 0)
    assert list(first["qname"][:2]) == ["a.example.org."] * 2 and list(second["qname"][:2]) == ["b.example.org."] * 2
    assert buffer.new_events(VANTAGES, 0).empty  # nothing new
    live_counts = decode(lookup("a.example.org.", 1, 1_000), VANTAGES, 0)[1] + decode(lookup("b.example.org.", 2, 2_000), VANTAGES, 0)[1]
    assert buffer.decode_stats["decode_errors"] == live_counts["decode_errors"] == 2  # the live views' counters add up
    whole = buffer.decode_all(VANTAGES, 0)
    expected, counts = decode(lookup("a.example.org.", 1, 1_000) + lookup("b.example.org.", 2, 2_000), VANTAGES, 0)
    assert list(whole["qname"]) == list(expected["qname"]) and buffer.decode_stats == counts


def test_a_take_keeps_the_live_cursor_on_what_was_not_decoded_and_counts_what_it_took():
    buffer = RecordBuffer()
    buffer.append(lookup("a.example.org.", 1, 1_000))
    buffer.new_events(VANTAGES, 0)  # a live view decoded the first batch
    buffer.append(lookup("b.example.org.", 2, 2_000))
    taken = buffer.take(1)  # the first batch leaves (forwarded by the node agent, written by drain)
    assert len(taken) == 1 and buffer.cursor == 0
    assert set(buffer.new_events(VANTAGES, 0)["qname"]) - {""} == {"b.example.org."}  # the second, once
    assert buffer.records_received() == 6 and buffer.pending_bytes() == 3 * EVENT_DTYPE.itemsize
    whole = buffer.decode_all(VANTAGES, 0, head=b"".join(taken))
    assert set(whole["qname"]) - {""} == {"a.example.org.", "b.example.org."} and buffer.decode_stats["decode_errors"] == 2
