"""The correlator on recorded and crafted evidence: hop order, DNAT, segments, partial inputs, ambiguity."""

import pandas as pd

from dnscorrelate.correlate import correlate
from dnscorrelate.sources.coredns_log import parse_lines
from dnscorrelate.sources.decode import Vantage, decode
from tests.fixtures import load_fixture
from tests.frames import query, record, response


def test_a_forwarded_lookup_is_one_trace_with_its_upstream_exchange():
    frame, stats, logs, _ = load_fixture("healthy")
    c = correlate(frame, logs, stats)
    t = c.traces[c.traces["qname"] == "example.com."].iloc[0]
    assert (t.client_vantage, t.outcome, t.rcode, t.served_from, t.upstream_count, t.upstream_answered) == (
        "demo/mypod", "answered", "NOERROR", "upstream", 1, 1)
    assert t.dnat_to.endswith(":53") and t.dnat_at == "node-0" and t.server.startswith("kube-system/coredns-")
    assert t.dst_ip == "10.96.0.10" and t.upstream_server == "192.168.49.1:53"
    assert 0 < t.to_server_ns < t.total_ns and 0 < t.upstream_rtt_ns < t.server_ns < t.total_ns and t.return_ns > 0
    assert t.to_server_ns + t.server_ns + t.return_ns == t.total_ns
    assert t.total_ns == t.client_latency_ns  # the kernel's own match at the pod agrees
    assert t.log_rcode == "NOERROR" and t.log_ref.split(":")[0].endswith(t.replica + ".log")
    sightings = c.sightings[c.sightings["trace_id"] == t.trace_id]
    assert sightings["ts_ns"].is_monotonic_increasing
    assert set(sightings["depth"]) == {0, 1} and set(sightings.loc[sightings["depth"] == 1, "vantage"]) >= {t.server, "node-0", "upstream"}
    up = c.upstream[c.upstream["trace_id"] == t.trace_id].iloc[0]
    assert up["from"] == t.server and up["server"] == "upstream" and up["dns_id"] != t.dns_id and not up["ambiguous"]


def test_cluster_names_are_answered_by_coredns_without_upstream():
    frame, stats, logs, _ = load_fixture("healthy")
    c = correlate(frame, logs, stats)
    web = c.traces[c.traces["qname"] == "web.demo.svc.cluster.local."]
    assert set(web["served_from"]) == {"authoritative"} and set(web["upstream_count"]) == {0}
    assert set(web["qtype"]) == {"A", "AAAA"}  # glibc asks both


def test_packets_only():
    frame, stats, logs, _ = load_fixture("healthy")
    with_logs = correlate(frame, logs, stats)
    c = correlate(frame, None, stats)
    assert len(c.traces) == len(with_logs.traces) and (c.traces["log_ref"] == "").all() and c.stats["log_lines"] == 0
    assert (c.traces["outcome"] == with_logs.traces["outcome"]).all()


def test_logs_only_gives_coredns_view():
    _, _, logs, _ = load_fixture("healthy")
    c = correlate(None, logs)
    from_pod = (logs.records["remote_ip"].astype(str) == "10.244.0.4").sum()
    client = c.traces[c.traces["client_ip"] == "10.244.0.4"]
    assert from_pod >= 5 and len(client) == from_pod and set(client["outcome"]) == {"answered"}
    assert client["server_ns"].notna().all() and (client["log_ref"] != "").all()
    assert c.stats["packets"] == 0 and c.stats["log_records"] == len(c.traces)


def test_icmp_errors_join_the_trace_they_quote():
    frame, stats, logs, _ = load_fixture("stale-endpoint")
    c = correlate(frame, logs, stats)
    refused = c.traces[c.traces["icmp"] != ""]
    assert len(refused) > 0 and set(refused["icmp_target"]) == {"10.244.0.3:53"}
    assert set(refused["outcome"]) == {"timed-out"} and c.stats["icmp_unmatched"] == 0


VANTAGES = {1: Vantage(1, "demo/a", "pod"), 2: Vantage(2, "demo/b", "pod"), 3: Vantage(3, "kube-system/coredns-0", "coredns"), 4: Vantage(4, "upstream", "upstream")}
DNS, UP, A, B = "10.244.0.2", "192.168.49.1", "10.244.0.4", "10.244.0.5"


def lookup(capture, client_ip, port, qid, t0, up_id, up_port, up_t):
    """A client's query reaching CoreDNS, CoreDNS's upstream exchange starting at up_t, and the answer."""
    raw = record(query(qid=qid), capture_id=capture, ts=t0, src=client_ip, dst=DNS, sport=port)
    raw += record(query(qid=qid), capture_id=3, ts=t0 + 10, src=client_ip, dst=DNS, sport=port, pkt_type=0)
    raw += record(query(qid=up_id), capture_id=3, ts=up_t, src=DNS, dst=UP, sport=up_port)
    raw += record(query(qid=up_id), capture_id=4, ts=up_t + 10, src=DNS, dst=UP, sport=up_port, pkt_type=0)
    raw += record(response(qid=up_id), capture_id=4, ts=up_t + 100, src=UP, dst=DNS, sport=53, dport=up_port)
    raw += record(response(qid=up_id), capture_id=3, ts=up_t + 110, src=UP, dst=DNS, sport=53, dport=up_port, pkt_type=0)
    raw += record(response(qid=qid), capture_id=3, ts=up_t + 200, src=DNS, dst=client_ip, sport=53, dport=port)
    raw += record(response(qid=qid), capture_id=capture, ts=up_t + 210, src=DNS, dst=client_ip, sport=53, dport=port, pkt_type=0)
    return raw


def test_overlapping_identical_questions_are_marked_ambiguous_not_guessed():
    # Two pods ask CoreDNS the same name at once; two upstream exchanges follow. Which is whose?
    raw = lookup(1, A, 40000, 1, 1_000, 901, 50000, 1_050) + lookup(2, B, 40001, 2, 1_020, 902, 50001, 1_060)
    frame, _ = decode(raw, VANTAGES, 0)
    c = correlate(frame)
    assert len(c.traces) == 2 and c.stats["ambiguous"] >= 1
    assert c.traces["ambiguous"].any()


def test_separate_identical_questions_are_not_ambiguous():
    raw = lookup(1, A, 40000, 1, 1_000, 901, 50000, 1_050) + lookup(2, B, 40001, 2, 9_000, 902, 50001, 9_050)
    frame, _ = decode(raw, VANTAGES, 0)
    c = correlate(frame)
    assert c.stats["ambiguous"] == 0
    assert sorted(c.upstream["trace_id"]) == [0, 1] and c.upstream.set_index("trace_id").loc[1, "dns_id"] == 902


def test_a_reused_port_and_id_much_later_is_a_new_trace():
    raw = lookup(1, A, 40000, 7, 1_000, 901, 50000, 1_050) + lookup(1, A, 40000, 7, 60 * 10**9, 902, 50001, 60 * 10**9 + 50)
    frame, _ = decode(raw, VANTAGES, 0)
    assert len(correlate(frame).traces) == 2


def test_unparsed_log_lines_are_counted():
    logs = parse_lines(["garbage", '[INFO] 10.244.0.4:1 - 2 "A IN x. udp 1 false 512" NOERROR qr 1 0.1s'], "l.log", "coredns-0")
    c = correlate(None, logs)
    assert c.stats["unparsed_lines"] == 1 and c.unparsed == [("l.log", 1, "garbage")] and len(c.traces) == 1


def test_correlating_leaves_the_callers_events_unchanged():
    """The correlator adds its columns in place on a frame of its own; the caller's must not see them."""
    frame, stats, logs, _ = load_fixture("healthy")
    before = frame.copy()
    correlate(frame, logs, stats)
    pd.testing.assert_frame_equal(frame, before)


def test_connection_attempts_that_fit_no_trace_are_counted_not_fatal():
    """At the upstream alone, CoreDNS's TCP connection is seen but no trace's server window holds it."""
    frame, stats, _, _ = load_fixture("healthy")
    c = correlate(frame[frame["role"] == "upstream"], None, stats)
    assert c.stats["tcp_connects"] == c.stats["tcp_connects_unmatched"] == 1
    assert (c.traces["upstream_connects"] == 0).all()


def test_one_socket_cycling_ids_gives_one_trace_per_lookup():
    """Issue 13: 3,000 lookups from one socket, ids 0-99, each answered; CoreDNS's one pooled upstream
    socket cycles its ids too. Every lookup is its own trace, with its own upstream exchange."""
    raw = b"".join(lookup(1, A, 40000, i % 100, 1_000 + i * 1_000, 900 + i % 100, 50000, 1_050 + i * 1_000) for i in range(3000))
    frame, _ = decode(raw, VANTAGES, 0)
    c = correlate(frame)
    assert len(frame) == 24_000
    assert len(c.traces) == 3000 and set(c.traces["outcome"]) == {"answered"}
    assert (c.traces["upstream_count"] == 1).all() and len(c.upstream) == 3000 and c.stats["ambiguous"] == 0
    assert c.sightings.groupby("trace_id").size().eq(8).all()


def test_a_retransmitted_query_stays_in_its_lookup_and_another_question_starts_one():
    retry = [record(query(qid=5), capture_id=1, ts=t, src=A, dst=DNS, sport=40000) for t in (1_000, 2_000)]
    answer = record(response(qid=5), capture_id=1, ts=3_000, src=DNS, dst=A, sport=53, dport=40000, pkt_type=0)
    other = record(query("other.example.", qid=5), capture_id=1, ts=4_000, src=A, dst=DNS, sport=40000)
    frame, _ = decode(b"".join(retry) + answer + other, VANTAGES, 0)
    c = correlate(frame)
    assert list(c.traces["qname"]) == ["example.com.", "other.example."]
    assert list(c.traces["outcome"]) == ["answered", "timed-out"]
