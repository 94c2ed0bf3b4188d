"""Issue 22 item 2: a node agent that sends only what one pod's trace needs (live/agent_filter.py) gives the traces
the full stream gives.

The recorded labs' packet events are turned back into the tracer's records (one message per row, as the kernel
would have handed them over), with a second client's lookups of other names laid over them, a fraction of a
millisecond later, through the same CoreDNS replicas and upstream. The filtered records, decoded and
correlated, must give (UDP: a TCP row is a stream's segment, not rebuilt here) the traced pod exactly the traces, hops and upstream exchanges the full records give,
and the second client's records must be counted, not sent."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import numpy as np
import pandas as pd
import pytest

from dnscorrelate import events as events_module
from dnscorrelate.correlate import correlate
from dnscorrelate.live.agent_filter import HOLD_NS, LookupFilter
from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.sources.decode import Vantage, decode
from tests.fixtures import load_fixture
from tests.frames import query, record, response

POD_IP, OTHER_IP = "10.244.0.4", "10.244.0.99"
COREDNS_IP, UPSTREAM_IP = "10.244.0.2", "172.18.0.9"  # a server and its upstream, for records made by hand
BOOT_TO_WALL = 1_700_000_000 * 10**9
TCP_FLAGS = {"tcp-syn": 0x02, "tcp-synack": 0x12, "tcp-rst": 0x04}


def wire(row) -> bytes:
    """The DNS message a row saw, rebuilt: its id, flags, question and rcode."""
    message = dns.message.make_query(str(row.qname), str(row.qtype))
    message.id = int(row.dns_id)
    message.flags = (dns.flags.QR if row.qr else 0) | (dns.flags.RD if row.rd else 0) | (dns.flags.RA if row.ra else 0) \
        | (dns.flags.AA if row.aa else 0)
    if row.qr and str(row.rcode):
        message.set_rcode(dns.rcode.from_text(str(row.rcode)))
    return message.to_wire()


def records_of(frame: pd.DataFrame, vantages: dict[str, int]) -> bytes:
    out = []
    for row in frame.itertuples():
        kind = str(row.kind)
        common = dict(capture_id=vantages[str(row.vantage)], ts=int(row.ts_ns) - BOOT_TO_WALL, src=str(row.src_ip),
                      dst=str(row.dst_ip), sport=int(row.src_port), dport=int(row.dst_port),
                      pkt_type=events_module.PKT_TYPES.index(str(row.pkt_type)), ifindex=int(row.ifindex))
        if kind in TCP_FLAGS:
            raw = bytearray(record(b"", proto=6, kind=2, **common))
            data = np.frombuffer(raw, EVENT_DTYPE).copy()
            data["tcp_flags"] = TCP_FLAGS[kind]
            out.append(data.tobytes())
        else:
            out.append(record(wire(row), **common))
    return b"".join(out)


def with_another_client(frame: pd.DataFrame) -> pd.DataFrame:
    """The recording and a second client's lookups of other names laid over it, 0.2 ms later: its own pod, port and
    ids, through the same servers (their forwards too)."""
    frame = frame.assign(**{c: frame[c].astype(str) for c in ("vantage", "qname", "src_ip", "dst_ip")})
    other = frame.copy()
    for column, old, new in (("src_ip", POD_IP, OTHER_IP), ("dst_ip", POD_IP, OTHER_IP)):
        other[column] = other[column].astype(str).replace(old, new)
    other["vantage"] = other["vantage"].astype(str).replace("demo/mypod", "demo/other")
    other["dns_id"] = other["dns_id"] ^ 0x5A5A
    named = other["qname"].astype(str) != "."
    other.loc[named, "qname"] = "noise-" + other.loc[named, "qname"].astype(str)
    other["ts_ns"] = other["ts_ns"] + 200_000
    both = pd.concat([frame, other])
    return both.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def traced(correlation) -> list[tuple]:
    """The pod's traces as the CLI shows them: question, outcome, server, path of sightings, upstream exchanges."""
    traces = correlation.traces[correlation.traces["client_ip"] == POD_IP]
    seen, upstream = correlation.sightings, correlation.upstream
    out = []
    for t in traces.itertuples():
        hops = seen[seen["trace_id"] == t.trace_id]
        path = list(zip(hops["vantage"].astype(str), hops["qr"].astype(bool), hops["src_ip"].astype(str), hops["dns_id"], hops["ts_ns"]))
        exchanges = upstream[upstream["trace_id"] == t.trace_id]
        out.append((t.qname, t.qtype, t.outcome, t.rcode, t.server, t.served_from, t.total_ns, tuple(path),
                    tuple(zip(exchanges["server"].astype(str), exchanges["rtt_ns"].astype(str)))))
    return sorted(out, key=lambda x: (x[7][0][4] if x[7] else 0, x[0]))


@pytest.mark.parametrize("fixture", ["healthy", "slow-upstream", "nodelocal-imbalance", "search-path", "upstream-refused"])
@pytest.mark.parametrize("pieces, batches, in_place, receive_only", [(1, 1, False, False), (7, 1, False, False), (2, 5, False, False),
                                                                    (3, 2, True, False), (2, 5, False, True), (2, 5, False, "and-skip")])
def test_the_filtered_stream_gives_the_pod_the_traces_of_the_full_stream(fixture, pieces, batches, in_place, receive_only):
    """`pieces` takes, each given its records as `batches` buffers (as the ring buffer's reads come); `in_place`: as
    rows of the ring buffer, overwritten once the take returns (as the kernel's next records would); `receive_only`:
    without CoreDNS's own sightings of what it sent, as a node agent captures its namespace (live/capture.py), and
    "and-skip": without the node's copies of what it sent into a captured namespace's veth either (the lab's are all)."""
    frame, stats, logs, _ = load_fixture(fixture)
    frame = frame[(frame["proto"].astype(str) == "udp").to_numpy()]  # one record a row: no TCP stream to rebuild here
    if receive_only:
        frame = frame[~((frame["role"] == "coredns") & (frame["pkt_type"] == "OUTGOING")).to_numpy()]
    if receive_only == "and-skip":
        frame = frame[~((frame["role"] == "node") & (frame["pkt_type"] == "OUTGOING") & frame["ifname"].astype(str).str.startswith("veth")).to_numpy()]
    both = with_another_client(frame)
    names = sorted(both["vantage"].unique())
    roles = dict(zip(both["vantage"], both["role"].astype(str)))
    vantages = {name: i + 1 for i, name in enumerate(names)}
    decoded = {i: Vantage(i, name, roles[name]) for name, i in vantages.items()}
    raw = records_of(both, vantages)
    size = EVENT_DTYPE.itemsize
    chunks = np.array_split(np.arange(len(raw) // size), pieces)
    def filtered(in_place: bool, hold_ns: int = HOLD_NS) -> tuple[bytes, LookupFilter]:
        pod_filter = LookupFilter([POD_IP], hold_ns=hold_ns)
        sent = b""
        for c in chunks:
            given = [raw[b[0] * size:(b[-1] + 1) * size] for b in np.array_split(c, batches) if len(b)]
            if in_place:
                given = [np.frombuffer(bytearray(batch), EVENT_DTYPE) for batch in given]  # writable, byte for byte
            sent += pod_filter.take(given)
            for batch in given if in_place else []:
                kept = [pod_filter.pending, *pod_filter.held.values()]
                assert not any(np.shares_memory(batch, mine) for mine in kept)  # nothing held points into the ring
                batch.view(np.uint8)[:] = 0xA5
        return sent + pod_filter.take(b"", final=True), pod_filter

    sent, pod_filter = filtered(in_place)
    if in_place:  # the same records sent, even those held across takes (all of them, with a hold that long)
        assert filtered(True, hold_ns=10**12)[0] == filtered(False, hold_ns=10**12)[0]

    full_events, _ = decode(raw, decoded, BOOT_TO_WALL)
    sent_events, _ = decode(sent, decoded, BOOT_TO_WALL)
    full, filtered = correlate(full_events, logs, stats), correlate(sent_events, logs, stats)
    assert len(traced(full)) == (full.traces["client_ip"] == POD_IP).sum() > 0
    assert traced(filtered) == traced(full)
    assert not (sent_events["qname"].astype(str).str.startswith("noise-")).any()
    counts = pod_filter.stats()
    assert counts["records_kept"] == len(sent) // size
    dropped = counts["filtered_queries"] + counts["filtered_responses"] + counts["filtered_other"]
    assert counts["records_kept"] + dropped == len(raw) // size
    assert counts["filtered_queries"] >= (both["vantage"] == "demo/other").sum() // 2  # at least the other pod's own queries


def test_a_forward_is_followed_only_when_the_pods_query_is_the_latest_of_its_question_at_the_server():
    """Two clients ask one name a moment apart; CoreDNS forwards once, after the second query arrived: the forward is
    the second client's (as `link_parents` would link it), and the pod's filter does not send it. The pod's own forward
is sent, with its copies after a masquerade that changed its address and port."""
    coredns, upstream = COREDNS_IP, UPSTREAM_IP
    raw = b"".join([
        record(query("shared.example.", qid=1), capture_id=1, ts=1_000, src=POD_IP, dst=coredns, sport=40001),
        record(query("shared.example.", qid=2), capture_id=1, ts=2_000, src=OTHER_IP, dst=coredns, sport=40002),
        record(query("shared.example.", qid=3), capture_id=1, ts=3_000, src=coredns, dst=upstream, sport=50000),
        record(query("own.example.", qid=4), capture_id=1, ts=4_000, src=POD_IP, dst=coredns, sport=40003),
        record(query("own.example.", qid=5), capture_id=1, ts=5_000, src=coredns, dst=upstream, sport=50001),
        # the same forward leaving the node, masqueraded to its address and another port (kind's nodes do that)
        record(query("own.example.", qid=5), capture_id=2, ts=5_100, src="172.18.0.3", dst=upstream, sport=7359),
        record(response("own.example.", qid=5), capture_id=2, ts=9_000, src=upstream, dst="172.18.0.3", sport=53, dport=7359),
        # the other client's forward, masqueraded likewise: not the pod's
        record(query("shared.example.", qid=3), capture_id=2, ts=3_100, src="172.18.0.3", dst=upstream, sport=7360),
    ])
    pod_filter = LookupFilter([POD_IP])
    sent = np.frombuffer(pod_filter.take(raw, final=True), EVENT_DTYPE)
    assert sorted(sent["dns_id"].tolist()) == [1, 4, 5, 5, 5]
    assert pod_filter.stats()["filtered_queries"] == 3


def test_questions_that_begin_alike_or_differ_only_in_case_are_told_apart_and_matched_as_the_whole_question_says():
    """The filter hashes a record's whole question only when its first bytes could match a followed one: a name
    that begins as the pod's is still another question, and one that differs in case is the same."""
    coredns, upstream = COREDNS_IP, UPSTREAM_IP
    raw = b"".join([
        record(query("shared.example.", qid=1), capture_id=1, ts=1_000, src=POD_IP, dst=coredns, sport=40001),
        record(query("shared.exotic.", qid=2), capture_id=1, ts=1_500, src=OTHER_IP, dst=coredns, sport=40002),
        record(query("SHARED.Example.", qid=3), capture_id=1, ts=2_000, src=coredns, dst=upstream, sport=50000),
        record(query("shared.exotic.", qid=4), capture_id=1, ts=2_100, src=coredns, dst=upstream, sport=50001),
        record(response("SHARED.Example.", qid=3), capture_id=1, ts=3_000, src=upstream, dst=coredns, sport=53, dport=50000),
        record(response("shared.exotic.", qid=4), capture_id=1, ts=3_100, src=upstream, dst=coredns, sport=53, dport=50001),
        record(response("shared.example.", qid=1), capture_id=1, ts=3_200, src=coredns, dst=POD_IP, sport=53, dport=40001),
        record(response("shared.exotic.", qid=2), capture_id=1, ts=3_300, src=coredns, dst=OTHER_IP, sport=53, dport=40002),
    ])
    pod_filter = LookupFilter([POD_IP])
    sent = np.frombuffer(pod_filter.take(raw, final=True), EVENT_DTYPE)
    assert sent["dns_id"].tolist() == [1, 3, 3, 1]
    assert pod_filter.stats()["filtered_queries"] == 2 and pod_filter.stats()["filtered_responses"] == 2


def test_the_command_line_refuses_a_client_that_is_no_address_and_a_full_stream_without_agents():
    from click.testing import CliRunner

    from dnscorrelate.cli import main

    agent = CliRunner().invoke(main, ["agent", "--client", "mypod"])
    assert agent.exit_code == 2 and "'mypod' is not an IP address" in agent.output
    trace = CliRunner().invoke(main, ["trace", "pod/mypod", "--lab", "lab", "--full-stream"])
    assert trace.exit_code == 2 and "--full-stream goes with --agent" in trace.output
