"""Inspektor Gadget trace_dns JSON, both generations of field names, into packet events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.ig import duration_ns, qname_text, read_ig_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats"


def test_image_based_trace_dns():
    frame, stats = read_ig_json(FIXTURES / "ig-trace_dns-image.jsonl")
    assert {c: str(t) for c, t in frame.dtypes.items()} == events.COLUMNS
    assert stats["dns_events"] == 5 and stats["records"] == 5
    pod = frame[frame["vantage"] == "demo/mypod"]
    assert list(pod["pkt_type"]) == ["OUTGOING", "HOST"] and set(pod["role"]) == {"pod"}
    assert list(pod["ts_ns"]) == [1795459201123456789, 1795459201124722000]  # nanoseconds kept from the RFC 3339 text
    response = pod.iloc[1]
    assert (response.qr, response.rcode, response.dns_id, response.src_ip, response.src_port, response.latency_ns) == (
        True, "NXDOMAIN", 0x1A2B, "10.96.0.10", 53, 1265211)
    assert set(frame[frame["vantage"].str.startswith("kube-system/")]["role"]) == {"coredns"}
    host = frame[frame["role"] == "node"].iloc[0]
    assert (host.vantage, host.netns, host.qtype, host.rd) == ("kind-worker", 4026531840, "AAAA", True)


def test_old_trace_dns_v025_with_unparsed_lines_counted():
    frame, stats = read_ig_json(FIXTURES / "ig-trace-dns-v0.25.jsonl")
    assert len(frame) == 2
    assert (stats["non_event_records"], stats["unparsed_lines"], stats["unparsed_line_numbers"]) == (1, 1, [4])
    response = frame.iloc[1]
    assert (response.rcode, response.answers, response.ancount, response.netns, response.latency_ns) == ("NOERROR", "A 10.96.88.7", 1, 4026532890, 1265211)
    assert (response.dst_ip, response.dst_port, response.proto) == ("10.244.1.5", 41234, "udp")


def test_oldest_trace_dns_names_only_the_nameserver():
    frame, _ = read_ig_json(FIXTURES / "ig-trace-dns-v0.14.jsonl")
    query, response = frame.iloc[0], frame.iloc[1]
    assert (query.vantage, query.dst_ip, query.dst_port, query.src_ip) == ("demo/mypod", "10.96.0.10", 53, "")
    assert (response.src_ip, response.rcode) == ("10.96.0.10", "NXDOMAIN")


def test_a_json_array_and_pretty_printed_objects(tmp_path):
    lines = (FIXTURES / "ig-trace-dns-v0.14.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records))
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n".join(json.dumps(r, indent=2) for r in records))
    assert len(read_ig_json(array)[0]) == 2
    assert len(read_ig_json(pretty)[0]) == 2


def test_nothing_usable_is_a_clear_error(tmp_path):
    path = tmp_path / "capture.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1 not json\nstill not\n")
    with pytest.raises(EventsError, match=r"capture.pcap: no Inspektor Gadget DNS event found .*lines that are not JSON: 1, 2"):
        read_ig_json(path)


def test_field_helpers():
    assert duration_ns("1.265211ms") == 1265211 and duration_ns("2m3s") == 123_000_000_000 and duration_ns(7) == 7
    assert qname_text("\u0010inspektor-gadget\u0002io") == "inspektor-gadget.io."
    assert qname_text("Web.Demo") == "web.demo."
