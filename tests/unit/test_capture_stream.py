"""`capture -o FILE.parquet`'s side of Capture, without a kernel: drain() decodes in bounded chunks to the rows
of one decode, and the reader stops taking records while the undecoded backlog is full."""

import contextlib
import struct
import threading
import time

import numpy as np

from dnscorrelate.live import capture as capture_module
from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.live.capture import EARLY_READ_FILL, Capture
from dnscorrelate.sources.decode import Vantage, decode
from tests.frames import TCP, query, record, response

VANTAGES = {1: Vantage(4026531840, "demo/mypod", "pod", {2: "eth0"}), 2: Vantage(4026531841, "node-0", "node", {3: "veth0"})}


def offline_capture(batches: list[bytes]) -> Capture:
    capture = Capture([])
    capture.vantages = dict(VANTAGES)
    capture.boot_to_wall = 0
    capture.raw.extend(batches)
    return capture


def mixed_records() -> list[bytes]:
    """UDP queries and answers at two vantages, IPv6, an address seen once, and a TCP stream whose messages
    straddle records."""
    stream = b"".join(struct.pack("!H", len(w)) + w for w in (query("t1.example.com.", qid=1), response("t2.example.com.", qid=2)))
    records = []
    for i in range(40):
        name = f"n{i % 7}.example.com."
        records.append(record(query(name, qid=i), ts=100 * i, capture_id=1 + i % 2, ifindex=2 + i % 2, src=f"10.244.0.{4 + i % 3}"))
        records.append(record(response(name, qid=i), ts=100 * i + 7, sport=53, dport=40000 + i, capture_id=1 + i % 2, src="10.96.0.10", dst="10.244.0.4"))
        if i % 10 == 3:
            records.append(record(query(name, "AAAA", qid=i), ts=100 * i + 9, family=6, src="fd00::4", dst=f"fd00:10::{i:x}"))
        if i in (11, 12, 13, 14):
            cut = [0, 9, 30, 41, len(stream)][i - 11 : i - 9]
            records.append(record(stream[cut[0] : cut[1]], proto=TCP, seq=500 + cut[0], ts=100 * i + 3, sport=53, dport=4000))
    return records


def test_drain_in_small_chunks_gives_the_rows_of_one_decode(monkeypatch):
    records = mixed_records()
    whole, whole_stats = decode(b"".join(records), VANTAGES, 0)
    key = ["ts_ns", "vantage", "dns_id"]
    for chunk_records in (1, 2, 5, 1000):
        monkeypatch.setattr(capture_module, "DECODE_CHUNK_BYTES", chunk_records * EVENT_DTYPE.itemsize)
        capture = offline_capture(records[:30])  # batches of one record each
        first = capture.drain()
        assert capture.raw == [] and capture.backlog_limit == capture_module.BACKLOG_MAX_BYTES
        capture.raw.extend(records[30:])
        last = capture.drain(last=True)
        assert capture._held == b"" and capture._drained["packets"] == len(whole) == len(first) + len(last)
        joined = capture_module.concat_parts([first, last])
        assert joined.sort_values(key).reset_index(drop=True).equals(whole.sort_values(key).reset_index(drop=True)), chunk_records
        for name in ("qname", "src_ip", "vantage", "rcode"):  # categories as one decode makes them
            assert list(last[name].cat.categories) == sorted(set(last[name].astype(str)))
        assert capture._drained["decode_errors"] == whole_stats["decode_errors"] == 0


class FakeTracer:
    """A ring buffer that always has another batch of records."""

    def __init__(self, sink: list[bytes]) -> None:
        self.sink = sink
        self.polls = 0
        self.ring = self
        self.filled = 0.0

    def wait(self, timeout_ms: int) -> None:
        time.sleep(0.001)

    def fill(self) -> float:
        return self.filled

    def drain(self) -> None:
        self.polls += 1
        self.sink.append(record(query()) * 2)

    @contextlib.contextmanager
    def in_place(self):
        yield np.frombuffer(record(query()) * 2, EVENT_DTYPE)


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_the_reader_stops_taking_records_while_the_backlog_is_full():
    capture = offline_capture([])
    capture.tracer = FakeTracer(capture.raw)
    capture.backlog_limit = 3 * 2 * EVENT_DTYPE.itemsize  # three batches
    reader = threading.Thread(target=capture._run)
    reader.start()
    try:
        assert wait_for(lambda: capture.backlog_full_seconds > 0)
        polls = capture.tracer.polls
        assert capture.backlog_bytes() == capture.backlog_limit and polls == 3  # no read past the limit
        assert wait_for(lambda: capture.backlog_full_seconds > 0.05)
        assert capture.tracer.polls == polls  # still waiting, not reading
        drained = capture.drain()  # decoding caught up: reading resumes
        assert len(drained) == 6
        assert wait_for(lambda: capture.tracer.polls > polls)
    finally:
        capture._stop.set()
        reader.join()


class AttachCountingTracer:
    def __init__(self) -> None:
        self.attached: list[str] = []

    def attach(self, path: str, capture_id: int, receive_only: bool = False):
        self.attached.append(path)
        return object()


def test_a_namespace_found_again_through_another_process_is_not_attached_twice(monkeypatch):
    """A watch round can name a pod's namespace by another of its processes (/proc/OTHER/ns/net): one socket per
    namespace, or every packet there would be reported twice (a duplicate-response that never happened)."""
    from dnscorrelate.cluster.backend import Target

    monkeypatch.setattr(capture_module, "interface_names", lambda path: {2: "eth0"})
    capture = Capture([])
    capture.tracer = AttachCountingTracer()
    same_namespace = [Target("/proc/self/ns/net", "demo/mypod", "pod"), Target("/proc/thread-self/ns/net", "demo/mypod", "pod")]
    for target in same_namespace:
        capture._attach(target)
    assert capture.tracer.attached == ["/proc/self/ns/net"] and len(capture.vantages) == 1


def test_a_server_namespace_is_captured_receive_only_only_where_a_node_namespace_is_captured_too():
    """The node's side of CoreDNS's veth is what records CoreDNS's own packets then: without a node vantage, a
    receive-only CoreDNS namespace would lose every answer it sent."""
    from dnscorrelate.cluster.backend import Target

    node, coredns, pod = Target("/n", "node-0", "node"), Target("/c", "kube-system/coredns-0", "coredns"), Target("/p", "demo/mypod", "pod")
    assert Capture([pod, coredns, node]).receives_only(coredns)
    assert not Capture([pod, coredns, node]).receives_only(pod)
    assert not Capture([pod, coredns]).receives_only(coredns)
    assert not Capture([coredns, node], receive_only_servers=False).receives_only(coredns)
    watched = Capture([])  # a node agent's: the node's namespace is found by its first watch round, before the pods'
    watched.vantages[1] = Vantage(1, "node-0", "node")
    assert watched.receives_only(coredns)


def test_a_consumer_that_takes_at_its_own_pace_gets_what_gathered_as_one_read_unless_the_ring_fills():
    capture = offline_capture([])
    capture.tracer = FakeTracer(capture.raw)
    capture.read_every_s = 60.0  # the node agent's flush interval, made long
    capture._last_read = time.monotonic()
    capture._thread = threading.Thread(target=capture._run)
    capture._thread.start()
    try:
        time.sleep(0.1)
        assert capture.tracer.polls == 0  # records gather in the ring
        with capture.taking() as batches:  # the take reads them where they lie, in one batch
            assert [len(batch) for batch in batches] == [2] and capture.tracer.polls == 0
        capture.tracer.filled = EARLY_READ_FILL
        assert wait_for(lambda: capture.tracer.polls > 0)  # a ring a quarter full is read without waiting for the take
    finally:
        capture._stop.set()
        capture._thread.join()


def test_a_node_skips_its_copies_into_captured_namespaces_unless_it_answers_dns_itself(monkeypatch):
    """The node's dispatcher gets the veths whose other end is a captured namespace, as namespaces come; a node that
    answers pods' DNS from its own namespace (Cilium's DNS proxy, host-network NodeLocal DNS) keeps every copy: its
    answer's one sighting is its copy."""
    from dnscorrelate.cluster.backend import Target
    from dnscorrelate.live import capture as capture_module

    peers = {"/n": {11: 2, 12: 2, 13: 2}, "/p": {2: 11}, "/c": {2: 12}}
    monkeypatch.setattr(capture_module.links, "veth_peers", lambda path: peers[path])

    class SkipRecordingTracer:
        def __init__(self):
            self.skipped = []

        def skip_outgoing(self, sock, capture_id, interfaces):
            self.skipped.append((capture_id, interfaces))

    for node_interfaces, skipped in (({1: "eth0", 11: "veth1"}, (11, 12)), ({1: "eth0", 5: "cilium_host"}, None)):
        capture = Capture([])
        capture.tracer = SkipRecordingTracer()
        for capture_id, target in enumerate([Target("/p", "demo/mypod", "pod"), Target("/n", "node-0", "node", skip_copies=True),
                                             Target("/c", "kube-system/coredns-0", "coredns")], start=1):
            capture.vantages[capture_id] = Vantage(capture_id, target.vantage, target.role, node_interfaces if target.role == "node" else {})
            capture._skip_copies_into(capture_id, target, sock=None)
        assert capture.tracer.skipped == ([] if skipped is None else [(2, (11,)), (2, skipped)])  # swapped as namespaces came
        assert capture.skipped_on == ({} if skipped is None else {"node-0": list(skipped)})


def test_a_node_its_backend_did_not_mark_keeps_every_copy(monkeypatch):
    """Only a backend that captures every namespace on a node marks it (the lab); a cluster's nodes keep their copies,
    and no namespace's links are read for nothing."""
    from dnscorrelate.cluster.backend import Target
    from dnscorrelate.live import capture as capture_module

    read = []
    monkeypatch.setattr(capture_module.links, "veth_peers", lambda path: read.append(path) or {"/n": {11: 2}, "/p": {2: 11}}[path])
    capture = Capture([])
    capture.tracer = None  # a call to skip_outgoing would fail
    for capture_id, target in enumerate([Target("/n", "node-0", "node"), Target("/p", "demo/mypod", "pod")], start=1):
        capture.vantages[capture_id] = Vantage(capture_id, target.vantage, target.role, {})
        capture._skip_copies_into(capture_id, target, sock=None)
    assert capture.skipped_on == {} and read == []
