"""Crafted frames through the real kernel program (BPF_PROG_TEST_RUN): IPv4, IPv6 extension headers,
fragments, TCP, ICMP errors, malformed packets. Every packet is either an event or a counted skip.

Each test runs on both builds of the one source, bcc's (the local capture) and the CO-RE object libbpf loads
(the node agent), and one test compares their records byte for byte: that is how the two stay in step."""

import numpy as np
import pytest

from dnscorrelate.live import bpf
from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.sources.decode import Vantage, decode
from tests.frames import ICMP, ICMPV6, TCP, UDP, ether, ipv4, ipv6, query, response, tcp, udp

IPV6 = 0x86DD


@pytest.fixture(params=bpf.TRACERS)
def run(request, lab_ready, core_tracer_built):
    """run(frame, capture_id=1) -> (events table, counters that moved), on the tracer `run.tracer` (each build)."""
    tracer = bpf.tracer(request.param)
    tracer.set_ports([53])
    tracer.reset()
    sink: list[bytes] = []
    tracer.start(sink)

    def run_frames(*frames, capture_id=1):
        before = tracer.counters()
        for frame in frames:
            tracer.test_run(frame, capture_id)
        tracer.drain()
        moved = {k: v - before[k] for k, v in tracer.counters().items() if v != before[k]}
        vantages = {i: Vantage(i, f"ns{i}", "pod") for i in range(1, 4)}
        table, _ = decode(b"".join(sink), vantages, 0)
        sink.clear()
        return table, moved

    run_frames.tracer = tracer
    yield run_frames
    tracer.stop()


def test_ipv4_udp_query(run):
    table, moved = run(ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40000, 53, query(qid=0xBEEF)))))
    assert moved == {"events": 1}
    row = table.iloc[0]
    assert (row.src_ip, row.dst_ip, row.src_port, row.dst_port, row.dns_id, row.qname, row.qr) == (
        "10.244.0.4", "10.96.0.10", 40000, 53, 0xBEEF, "example.com.", False)


@pytest.mark.parametrize(
    "extensions",
    [(), ((0, b""),), ((0, b""), (60, b"\x01\x02")), ((43, b"\0" * 6), (60, b"")), ((44, b"\0\x01"),), ((51, b"\0" * 14),)],
    ids=["plain", "hop-by-hop", "hop-by-hop+dstopts", "routing+dstopts", "first-fragment", "ah"],
)
def test_ipv6_with_extension_headers(run, extensions):
    packet = ipv6("fd00::4", "fd00:10::a", UDP, udp(40000, 53, query("example.com.", "AAAA")), extensions)
    table, moved = run(ether(packet, IPV6))
    assert moved == {"events": 1}
    assert (table.family[0], table.src_ip[0], table.dst_ip[0], table.qname[0], table.qtype[0]) == (
        6, "fd00::4", "fd00:10::a", "example.com.", "AAAA")


def test_ipv6_later_fragment_has_no_dns_header(run):
    packet = ipv6("fd00::4", "fd00::5", UDP, b"\0" * 40, ((44, b"\x00\x08"),))  # offset 1 (8 bytes)
    table, moved = run(ether(packet, IPV6))
    assert len(table) == 0 and moved == {"non_dns": 1}


def test_ipv4_later_fragment_is_skipped(run):
    table, moved = run(ether(ipv4("10.0.0.1", "10.0.0.2", UDP, b"\0" * 40, frag=0x0010)))
    assert len(table) == 0 and moved == {"non_dns": 1}


def test_tcp_segment_with_length_prefix(run):
    wire = query("tcp.example.com.")
    table, moved = run(ether(ipv4("10.244.0.4", "10.96.0.10", TCP, tcp(40001, 53, len(wire).to_bytes(2, "big") + wire))))
    assert moved == {"events": 1}
    assert (table.proto[0], table.qname[0]) == ("tcp", "tcp.example.com.")


def test_tcp_connection_set_up_is_an_event_and_pure_acks_are_counted(run):
    syn = ether(ipv4("10.244.0.2", "192.168.49.1", TCP, tcp(40001, 53, b"", flags=0x02)))
    synack = ether(ipv4("192.168.49.1", "10.244.0.2", TCP, tcp(53, 40001, b"", flags=0x12)))
    rst = ether(ipv4("192.168.49.1", "10.244.0.2", TCP, tcp(53, 40001, b"", flags=0x14)))
    ack = ether(ipv4("10.244.0.2", "192.168.49.1", TCP, tcp(40001, 53, b"", flags=0x10)))
    table, moved = run(syn, synack, rst, ack)
    assert list(table["kind"]) == ["tcp-syn", "tcp-synack", "tcp-rst"] and moved == {"events": 3, "tcp_no_payload": 1}
    assert (table.src_ip[0], table.dst_port[0], table.decoded[0]) == ("10.244.0.2", 53, False)


def test_too_short_for_a_dns_header(run):
    table, moved = run(ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 53, b"\x01\x02\x03\x04\x05"))))
    assert len(table) == 0 and moved == {"truncated_header": 1}


def test_garbage_on_port_53_is_an_undecoded_event(run):
    table, moved = run(ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 53, b"\xff" * 40))))
    assert moved == {"events": 1} and not table.decoded[0]


def test_other_ports_and_non_ip_are_counted(run):
    table, moved = run(
        ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 80, query()))),
        ether(b"\0" * 28, 0x0806),  # ARP
        ether(b"\x4f" + b"\0" * 19),  # an IPv4 header claiming 60 bytes in a 20-byte packet
    )
    assert len(table) == 0 and moved == {"non_dns": 2, "non_ip": 1}


def test_the_port_list_is_configurable(run):
    run.tracer.set_ports([5353])
    try:
        table, moved = run(ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 5353, query()))),
                           ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 53, query()))))
    finally:
        run.tracer.set_ports([53])
    assert list(table.dst_port) == [5353] and moved == {"events": 1, "non_dns": 1}


def test_icmp_port_unreachable_quotes_the_query(run):
    quoted = ipv4("10.244.0.4", "10.244.0.3", UDP, udp(40000, 53, query(qid=77)))
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted
    table, moved = run(ether(ipv4("10.244.0.3", "10.244.0.4", ICMP, icmp)))
    assert moved == {"events": 1}
    row = table.iloc[0]
    assert (row.kind, row.icmp_type, row.icmp_code, row.src_ip, row.dst_ip, row.dst_port, row.dns_id, row.qname) == (
        "icmp-error", 3, 3, "10.244.0.4", "10.244.0.3", 53, 77, "example.com.")


def test_icmpv6_unreachable_quotes_the_query(run):
    quoted = ipv6("fd00::4", "fd00::3", UDP, udp(40000, 53, query(qid=78)))
    table, moved = run(ether(ipv6("fd00::3", "fd00::4", ICMPV6, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + quoted), IPV6))
    assert (table.kind[0], table.icmp_type[0], table.dns_id[0], table.src_ip[0]) == ("icmp-error", 1, 78, "fd00::4")


def test_responses_carry_the_latency_since_the_query_at_that_vantage(run):
    q = ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40000, 53, query(qid=9))))
    r = ether(ipv4("10.96.0.10", "10.244.0.4", UDP, udp(53, 40000, response(qid=9))))
    table, _ = run(q, q, r)  # the second sighting of the query (DNAT) keeps the first time
    assert table.latency_ns.iloc[2] > table.ts_ns.iloc[2] - table.ts_ns.iloc[1]
    assert table.latency_ns.iloc[2] == table.ts_ns.iloc[2] - table.ts_ns.iloc[0]
    other_vantage, _ = run(ether(ipv4("10.96.0.10", "10.244.0.4", UDP, udp(53, 40000, response(qid=9)))), capture_id=2)
    assert other_vantage.latency_ns[0] == 0


def test_a_reset_forgets_the_queries_seen_before_it(run):
    q = ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40001, 53, query(qid=10))))
    r = ether(ipv4("10.96.0.10", "10.244.0.4", UDP, udp(53, 40001, response(qid=10))))
    run(q)
    run.tracer.reset()  # what every capture start does: the same capture id now names another namespace
    after_reset, _ = run(r)
    assert after_reset.latency_ns[0] == 0
    run(q)
    answered, _ = run(r)
    assert answered.latency_ns[0] > 0


def test_ring_reader_keeps_every_event_in_order_across_the_ring_wrapping(run):
    """More events than the 32 MiB ring holds, drained in batches: the reader must follow the
    consumer position around the end of the ring (read through the kernel's double mapping) and
    lose or repeat nothing."""
    per_batch, batches = 8_000, 8  # 64,000 records of 616 bytes: about 1.2 laps of the ring
    received = []
    for batch in range(batches):
        frames = [ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40000 + batch, 53, query(qid=i)))) for i in range(per_batch)]
        table, moved = run(*frames)
        assert moved == {"events": per_batch}
        received += list(zip(table.src_port, table.dns_id))
    assert received == [(40000 + b, i) for b in range(batches) for i in range(per_batch)]


SAME_FRAMES = [
    ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40100, 53, query(qid=0x0B0B)))),
    ether(ipv4("10.244.0.4", "10.96.0.10", UDP, udp(40100, 53, query(qid=0x0B0B)))),  # after DNAT: keeps the first time
    ether(ipv4("10.96.0.10", "10.244.0.4", UDP, udp(53, 40100, response(qid=0x0B0B)))),
    ether(ipv6("fd00::4", "fd00:10::a", UDP, udp(40101, 53, query("example.com.", "AAAA")), ((0, b""), (60, b"\x01\x02"))), IPV6),
    ether(ipv4("10.244.0.4", "10.96.0.10", TCP, tcp(40102, 53, b"", flags=0x02))),  # SYN
    ether(ipv4("10.244.0.4", "10.96.0.10", TCP, tcp(40102, 53, len(query()).to_bytes(2, "big") + query(), seq=7))),
    ether(ipv4("10.244.0.3", "10.244.0.4", ICMP, bytes([3, 3, 0, 0, 0, 0, 0, 0])
               + ipv4("10.244.0.4", "10.244.0.3", UDP, udp(40103, 53, query(qid=77))))),
    ether(ipv4("10.0.0.1", "10.0.0.2", UDP, udp(1234, 80, query()))),  # not DNS: counted, no record
]


def records_of(tracer, frames, capture_id=3):
    """The raw records `tracer` emits for `frames`, and the counters that moved."""
    tracer.set_ports([53])
    tracer.reset()
    sink: list[bytes] = []
    tracer.start(sink)
    before = tracer.counters()
    try:
        for frame in frames:
            tracer.test_run(frame, capture_id)
        tracer.drain()
    finally:
        tracer.stop()
    moved = {k: v - before[k] for k, v in tracer.counters().items() if v != before[k]}
    return np.frombuffer(b"".join(sink), EVENT_DTYPE).copy(), moved


def test_bcc_and_the_core_object_emit_the_same_records_for_the_same_frames(lab_ready, core_tracer_built):
    """The local capture (bcc) and the agent (CO-RE) compile one source in two ways; their records, byte for byte
    but for the clock, are the same, and so are the counters."""
    (from_bcc, bcc_moved), (from_core, core_moved) = (records_of(bpf.tracer(how), SAME_FRAMES) for how in bpf.TRACERS)
    assert bpf.tracer("core").loaded.source.endswith(".bpf.o") and bpf.tracer("bcc").loaded.source.endswith(".c")
    assert bcc_moved == core_moved == {"events": 7, "non_dns": 1}
    assert len(from_bcc) == len(from_core) == 7
    for field in ("ts_ns", "latency_ns"):  # the clock differs; that a response has a latency must not
        assert ((from_bcc[field] > 0) == (from_core[field] > 0)).all(), field
        from_bcc[field] = from_core[field] = 0
    payload_at = EVENT_DTYPE.fields["payload"][1]
    for records in (from_bcc, from_core):  # past `captured` (and the struct's tail padding), a ring slot holds what
        raw = records.view(np.uint8).reshape(len(records), EVENT_DTYPE.itemsize)  # an earlier lap left there
        for row, captured in zip(raw, records["captured"]):
            row[payload_at + captured:] = 0
    assert list(from_bcc["kind"]) == [0, 0, 0, 0, 2, 0, 1] and (from_bcc["captured"] > 0).sum() == 6
    assert from_bcc.tobytes() == from_core.tobytes()
