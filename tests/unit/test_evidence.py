"""Any mix of pcap, Inspektor Gadget and dnstap inputs into one events table that accounts for everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.evidence import evidence_line, read_evidence
from tests import packets as p

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats"
T0 = 1_795_459_201_000_000_000


def test_mixed_inputs_make_one_sorted_table(tmp_path):
    pcap = tmp_path / "mypod.pcap"
    pcap.write_bytes(p.pcap_file(1, [(T0, p.ethernet(p.udp(40000, 53, p.query()))), (T0 + 9, p.ethernet(p.udp(40000, 123, b"ntp")))]))
    frame, stats = read_evidence(pcaps=[f"pod/demo/other={pcap}"], ig_json=[FIXTURES / "ig-trace_dns-image.jsonl"],
                                 dnstap=[("coredns/coredns-7", str(FIXTURES / "coredns-dnstap.fstrm"))])
    assert {c: str(t) for c, t in frame.dtypes.items()} == events.COLUMNS
    assert frame["ts_ns"].is_monotonic_increasing
    assert set(frame["vantage"]) == {"demo/other", "demo/mypod", "kube-system/coredns-5d78c9869d-x2x7q", "kind-worker", "kube-system/coredns-7"}
    assert len(frame) == stats["events"] == 1 + 5 + 16
    assert (stats["pcap_packets"], stats["pcap_packets_dns_udp"], stats["pcap_packets_not_dns"]) == (2, 1, 1)
    assert (stats["ig_dns_events"], stats["dnstap_frames"]) == (5, 16)
    assert stats["files"][str(pcap)]["vantage"] == "pod/demo/other"
    assert "pcap_packets=2" in evidence_line(stats) and "dnstap_client_query=4" in evidence_line(stats)


def test_nothing_given_is_an_empty_table():
    frame, stats = read_evidence()
    assert frame.empty and stats["events"] == 0


def test_a_bad_file_names_itself(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture")
    with pytest.raises(EventsError, match="notes.txt"):
        read_evidence(pcaps=[str(bad)])
