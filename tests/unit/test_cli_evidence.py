"""`dnscorrelate correlate --pcap/--ig-json/--dnstap` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dnscorrelate.cli import main
from tests import packets as p

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats"
T0 = 1_795_459_201_000_000_000


def two_lookups(path: Path) -> Path:
    """A pod's capture: one answered lookup, one NXDOMAIN."""
    back = {"src": "10.96.0.10", "dst": "10.244.1.5"}
    path.write_bytes(p.pcap_file(1, [
        (T0, p.ethernet(p.udp(40000, 53, p.query(qid=1)))),
        (T0 + 1_000_000, p.ethernet(p.udp(53, 40000, p.response(qid=1), **back))),
        (T0 + 2_000_000, p.ethernet(p.udp(40001, 53, p.query("nope.demo.svc.cluster.local.", qid=2)))),
        (T0 + 3_000_000, p.ethernet(p.udp(53, 40001, p.response("nope.demo.svc.cluster.local.", "", qid=2, rcode=3), **back))),
    ]))
    return path


def test_correlate_a_pcap_to_traces(tmp_path):
    pcap = two_lookups(tmp_path / "capture.pcap")
    result = CliRunner().invoke(main, ["correlate", "--pcap", f"pod/demo/mypod={pcap}", "-o", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    traces = document["traces"]
    assert len(traces) == 2
    assert {t["rcode"] for t in traces} == {"NOERROR", "NXDOMAIN"}
    assert {t["client"]["vantage"] for t in traces} == {"demo/mypod"}
    assert "pcap_packets=4" in result.stderr


def test_correlate_mixes_pcap_gadget_and_dnstap(tmp_path):
    pcap = two_lookups(tmp_path / "capture.pcap")
    result = CliRunner().invoke(main, ["correlate", "--pcap", str(pcap), "--ig-json", str(FIXTURES / "ig-trace_dns-image.jsonl"),
                                       "--dnstap", str(FIXTURES / "coredns-dnstap.fstrm"), "--port", "53", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert "ig_dns_events=5" in result.stderr and "dnstap_frames=16" in result.stderr
    assert json.loads(result.stdout)["traces"]


def test_a_file_that_is_not_a_capture_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.pcap"
    bad.write_text("these are notes, not packets")
    result = CliRunner().invoke(main, ["correlate", "--pcap", str(bad)])
    assert result.exit_code == 2
    assert "notes.pcap" in result.stderr and "not a readable pcap" in result.stderr
    assert "Traceback" not in result.output
