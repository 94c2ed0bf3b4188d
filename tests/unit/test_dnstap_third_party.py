"""dnstap written by BIND, kdig and dnsdist (../shared/data/third-party/dnstap): every frame a row at the
writer, agreeing with dnstap-ldns (Debian's dnstap-ldns, `-y` YAML) and with BIND's own text rendering."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from dnscorrelate.cli import main
from dnscorrelate.sources.dnstap import read_dnstap_detailed

THIRD_PARTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "third-party" / "dnstap"  # shared/ sits beside the repository
FILES = ["isc-projects-bind9-dnstap.saved", "isc-projects-bind9-large-answer.fstrm", "DNS-OARC-dnswire-test.dnstap",
         "dmachard-go-dnscollector-dnstap.fstrm"]
ABBREVIATION = {"AUTH": "A", "RESOLVER": "R", "CLIENT": "C", "FORWARDER": "F", "STUB": "S", "TOOL": "T", "UPDATE": "U"}


def third_party(name: str) -> Path:
    path = THIRD_PARTY / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data sits beside the repository)")
    return path


def own_rows(result):
    """The row each frame's own message became, by frame number (not the queries a response carried)."""
    own = [not t.endswith("/query") for t in result.message_types]
    frame = result.frame[own].assign(frame_number=result.frame_numbers[own], message_type=result.message_types[own])
    assert frame["frame_number"].is_unique
    return frame.set_index("frame_number")


def ldns_documents(path: Path) -> list[dict]:
    if not shutil.which("dnstap-ldns"):
        pytest.skip("dnstap-ldns is not installed (apt-get install dnstap-ldns)")
    text = subprocess.run(["dnstap-ldns", "-y", "-r", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def ldns_message(text: str) -> tuple[int, str, str, str]:
    """(id, rcode, qname, qtype) from ldns's rendering of a DNS message."""
    header = re.search(r"rcode: (\w+), id: (\d+)", text)
    question = re.search(r";; QUESTION SECTION:\n;(\S+)\s+IN\s+(\S+)", text)
    return int(header[2]), header[1], question[1].lower(), question[2]


def ns_to_us(timestamp: dt.datetime) -> int:
    return int(timestamp.replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000 + timestamp.microsecond


@pytest.mark.parametrize("name", FILES)
def test_every_frame_agrees_with_dnstap_ldns(name):
    path = third_party(name)
    documents = ldns_documents(path)
    result = read_dnstap_detailed(path)
    rows, stats = own_rows(result), result.stats
    assert len(documents) == stats["frames"] == stats["frames_mapped"] == len(rows)
    for number, document in enumerate(documents, 1):
        row, message = rows.loc[number], document["message"]
        assert row.message_type == message["type"]
        response = message["type"].endswith("RESPONSE")
        when = message["response_time" if response else "query_time"]
        assert row.ts_ns // 1000 == ns_to_us(when)  # ldns prints microseconds
        asker = (message["query_address"], message["query_port"])
        answerer = (message["response_address"], message["response_port"])
        assert ((row.src_ip, row.src_port), (row.dst_ip, row.dst_port)) == ((answerer, asker) if response else (asker, answerer))
        assert row.proto == message["socket_protocol"].lower() and row.family == (6 if message["socket_family"] == "INET6" else 4)
        dns_id, rcode, qname, qtype = ldns_message(message["response_message" if response else "query_message"])
        assert (row.dns_id, row.qname, row.qtype, row.qr) == (dns_id, qname, qtype, response)
        assert row.rcode == (rcode if response else "")
        writer = stats["writers"][0]
        assert (writer["identity"], writer["version"]) == (document.get("identity", ""), document.get("version", ""))


BIND_LINE = re.compile(r"(?P<when>\S+ \S+) (?P<type>\w\w) (?P<querier>\S+):(?P<qport>\d+) (?P<arrow>->|<-) "
                       r"(?P<responder>\S+):(?P<rport>\d+) (?P<proto>UDP|TCP) (?P<size>\d+)b (?P<name>\S+)/IN/(?P<qtype>\S+)")


def test_bind_dnstap_saved_agrees_with_bind_own_rendering():
    """dnstap.text is BIND's `dnstap-read` of dnstap.saved, one line per frame, written with TZ=PDT8."""
    saved, text = third_party("isc-projects-bind9-dnstap.saved"), third_party("isc-projects-bind9-dnstap.text")
    result = read_dnstap_detailed(saved)
    rows = own_rows(result)
    lines = text.read_text().splitlines()
    assert len(lines) == 96 == len(rows) == result.stats["frames_mapped"]
    pdt8 = dt.timezone(dt.timedelta(hours=-8))
    for number, line in enumerate(lines, 1):
        fields, row = BIND_LINE.fullmatch(line), rows.loc[number]
        role, leg = row.message_type.split("_")
        assert fields["type"] == ABBREVIATION[role] + leg[0]
        assert dt.datetime.fromtimestamp(row.ts_ns / 1e9, pdt8).strftime("%d-%b-%Y %H:%M:%S.%f")[:-3] == fields["when"]
        ends = ((fields["querier"], int(fields["qport"])), (fields["responder"], int(fields["rport"])))
        assert ((row.src_ip, row.src_port), (row.dst_ip, row.dst_port)) == (ends if fields["arrow"] == "->" else ends[::-1])
        assert (row.qr, row.proto, row["size"]) == (fields["arrow"] == "<-", fields["proto"].lower(), int(fields["size"]))
        assert (row.qname, row.qtype) == (fields["name"] + ".", fields["qtype"])
    # BIND's test stores the response in query_message too: not a query, so no extra rows
    assert result.stats["embedded_not_a_query"] == 32 and len(result.frame) == 96


def test_what_each_file_becomes():
    """The issue's figures: none of these frames is lost, and each writer is named."""
    seen = {}
    for name in FILES:
        stats = read_dnstap_detailed(third_party(name)).stats
        seen[name] = (stats["frames"], stats["frames_mapped"], [(w["vantage"], w["role"], w["version"]) for w in stats["writers"]])
    assert seen == {
        "isc-projects-bind9-dnstap.saved": (96, 96, [("isc-projects-bind9-dnstap", "other", "")]),
        "isc-projects-bind9-large-answer.fstrm": (1, 1, [("isc-projects-bind9-large-answer", "other", "BIND 9.15.1")]),
        "DNS-OARC-dnswire-test.dnstap": (2, 2, [("DNS-OARC-dnswire-test", "other", "kdig 2.6.5")]),
        "dmachard-go-dnscollector-dnstap.fstrm": (2, 2, [("dnsdist", "other", "-")]),
    }


@pytest.mark.parametrize("name, client, outcome", [("DNS-OARC-dnswire-test.dnstap", ("0.0.0.0", 60417), "answered"),
                                                   ("dmachard-go-dnscollector-dnstap.fstrm", ("172.19.0.1", 46390), "answered"),
                                                   ("isc-projects-bind9-large-answer.fstrm", ("::1", 46075), "answered")])
def test_correlate_dnstap_makes_the_lookup_a_trace(name, client, outcome):
    """kdig's and dnsdist's query and response are one answered lookup; BIND's lone AUTH_RESPONSE is one too:
    BIND answered a query it did not log."""
    result = CliRunner().invoke(main, ["correlate", "--dnstap", str(third_party(name)), "-o", "json"])
    assert result.exit_code == 0, result.output
    traces = json.loads(result.stdout)["traces"]
    assert [(t["client"]["ip"], t["client"]["port"], t["outcome"], t["rcode"]) for t in traces] == [(*client, outcome, "NOERROR")]


def findings_of(name: str):
    from dnscorrelate.analysis import analyze
    from dnscorrelate.sources.evidence import read_evidence

    frame, stats = read_evidence(dnstap=[third_party(name)])
    return analyze(frame, None, None, stats)


@pytest.mark.parametrize("name", FILES)
def test_findings_say_only_what_the_writer_saw(name):
    """None of these writers is CoreDNS, and a writer sees its own messages only: findings sit at the writer's way to
    the server it talked to, or at that server, and never name CoreDNS or a Kubernetes hop."""
    analysis = findings_of(name)
    assert {f.hop for f in analysis.findings} <= {"", "vantage->server", "server"}, [(f.code, f.hop) for f in analysis.findings]
    assert not any("CoreDNS" in f.summary or "coredns" in f.summary for f in analysis.findings)
    assert set(analysis.correlation.traces["served_from"]) == {"unknown"}


def test_bind_synthetic_ids_are_said_as_what_bind_logged():
    """BIND's test writes every query with id 48904 (0xbf08) and every response (and AUTH_QUERY) with 36132 (0x8d24).
    What BIND logged: queries it sent that no response under their id answered, AUTH_QUERYs it received and never
    answered within the hour, responses racing another id, and responses to queries it did not log."""
    analysis = findings_of("isc-projects-bind9-dnstap.saved")
    lost = [f for f in analysis.findings if f.code == "no-response-seen"]
    received = [f for f in lost if "received" in f.summary]
    assert len(lost) == 2 and len(received) == 1 and received[0].count == 2  # the first hour's AUTH_QUERY, UDP and TCP
    assert "from 10.53.0.1" in received[0].summary and "did not answer them, or answered under another id" in received[0].summary
    traces = analysis.correlation.traces
    assert set(traces.loc[traces["query_received"], "dns_id"]) == {36132}
    race = next(f for f in analysis.findings if f.code == "wrong-id-response")
    assert "0x8d24" in race.summary and "0xbf08" in race.summary


def test_a_lone_auth_response_is_a_lookup_the_writer_answered_with_no_time():
    """BIND's AUTH_RESPONSE alone: BIND answered a query it did not log. An answered lookup at the writer, not a
    response whose query fell before the capture; how long it took is not known (no query time)."""
    analysis = findings_of("isc-projects-bind9-large-answer.fstrm")
    trace = analysis.correlation.traces.iloc[0]
    assert (trace.outcome, bool(trace.query_seen), trace.rcode) == ("answered", False, "NOERROR")
    assert pd.isna(trace.total_ns) and [f.code for f in analysis.findings] == ["ok"]


def test_findings_from_dnstap_name_the_dnstap_log_not_a_capture():
    """A dnstap file is the writer's own log of its messages, not a packet capture: findings drawn from it say
    what its log shows (no response logged, a response whose query was not logged), never "the capture"."""
    analysis = findings_of("isc-projects-bind9-dnstap.saved")
    for f in analysis.findings:
        assert "the capture" not in f.summary and "capture point" not in f.summary, (f.code, f.summary)
    drawn = {f.code: f.summary for f in analysis.findings if "received" not in f.summary}  # the queries BIND sent
    assert "the dnstap log went on after each" in drawn["no-response-seen"] and "one dnstap writer cannot tell" in drawn["no-response-seen"]
    assert "before the dnstap log began" in drawn["query-not-seen"] and "logged it twice" in drawn["duplicate-response"]
