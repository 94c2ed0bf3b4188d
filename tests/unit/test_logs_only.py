"""Logs-only diagnosis on excerpts in the shapes real CoreDNS releases write (tests/fixtures/real-formats/coredns-logs,
see its README): only what the log can show, the upstream named when an errors line gives it, CoreDNS's own queries
kept apart, every line accounted for."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnscorrelate.analysis import analyze, from_files
from dnscorrelate.cli import main
from dnscorrelate.correlate import correlate
from dnscorrelate.sources.coredns_log import log_source, parse_lines, read_logs
from tests.fixtures import load_fixture

FIXTURES = Path(__file__).parents[1] / "fixtures"

EXCERPTS = FIXTURES / "real-formats" / "coredns-logs"

EXPECTED = {
    # excerpt: [(code, words in its summary)], in order; nothing else may be found
    "startup-1.8.4.log": [("ok", ["4 lookups answered correctly", "CoreDNS's log"])],
    "forward-timeout-1.8.0.log": [("upstream-unreachable", ["8.8.8.8:53", "timeout", "9gag.com."])],
    "forward-timeout-1.9.3-timestamps.log": [("upstream-unreachable", ["192.168.1.1:53", "api.github.com."])],
    "errors-only-1.6.9.log": [("upstream-unreachable", ["119.29.29.29:53", "3 lookups"])],
    "kubectl-prefix-1.11.1.log": [("upstream-unreachable", ["172.18.0.1:53", "unreachable", "grafana.com."])],
    "nodelocaldns-1.15.16.log": [("upstream-unreachable", ["100.64.0.3:53", "no-route", "loop-plugin probes"])],
    "loop-probe-timeouts-1.6.7.log": [("upstream-unreachable", ["172.23.83.11:53", "ignores HINFO"]),
                                      ("upstream-unreachable", ["172.23.83.12:53"])],
    "startup-1.12.1-unsynced.log": [("upstream-unreachable", ["10.0.2.3:53", "loop-plugin probe"])],
    "legacy-1.2.6.log": [("upstream-unreachable", ["219.141.136.10:53", "api.weixin.qq.com."]),
                         ("upstream-unreachable", ["219.141.140.10:53", "loop-plugin probe"])],
    "reload-1.6.7.log": [("no-lookups", ["1 of the lookups were CoreDNS's own"])],
    "stern-1.10.1.log": [("nxdomain", ["payments", "prod"]), ("upstream-slow", ["db.corp.example.", "does not split"])],
    "healthcheck-kail-1.0.5.log": [("upstream-unreachable", ["192.168.1.1:53", "3 forward health checks"])],
    "compose-overflow-1.6.6.log": [("unanswered", ["coredns-1 logged 1 lookup", "overflowing header size"])],
    "api-unreachable-1.11.1.log": [("no-lookups", ["could not reach the Kubernetes API (2 lines"])],
    "loop-detected-1.6.2.log": [("forwarding-loop", ['zone .', "127.0.0.1:59610 -> :53", "resolv.conf"])],
    "stern-health-slow-1.11.3.log": [("slow-coredns", ["coredns-fdcd5b74b-p78xs", "health endpoint", "up to 1.23888291s"])],
}


def diagnosed(name: str):
    return from_files(None, [str(EXCERPTS / name)])


def test_every_excerpt_has_an_expectation():
    assert sorted(p.name for p in EXCERPTS.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logs_only_findings_are_what_the_log_shows(name):
    result = diagnosed(name)
    found = [(f.code, f.summary) for f in result.findings]
    assert [code for code, _ in found] == [code for code, _ in EXPECTED[name]], found
    for (_, summary), (_, words) in zip(found, EXPECTED[name]):
        for word in words:
            assert word in summary, summary
    stats = result.correlation.stats
    assert stats["log_lines"] == stats["log_records"] + stats["error_records"] + stats["log_other"] + stats["unparsed_lines"]
    assert stats["unparsed_lines"] == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logs_never_show_nodata_or_slowness_they_cannot_time(name):
    findings = diagnosed(name).findings
    assert "nodata" not in {f.code for f in findings}
    # slow-coredns from a log only where CoreDNS timed itself: its own /health check (or an authoritative answer)
    assert all("health endpoint" in f.summary for f in findings if f.code == "slow-coredns")


def test_a_forward_timeout_line_is_unanswered_not_noerror():
    logs = parse_lines(['[INFO] 127.0.0.1:63325 - 28625 "A IN 9gag.com. udp 49 false 4096" NOERROR - 0 6.010923182s'], "l", "coredns-0")
    trace = correlate(None, logs).traces.iloc[0]
    assert (trace.outcome, trace.rcode, trace.log_rcode) == ("timed-out", "", "NOERROR")
    assert str(trace.server_self_ns) == "<NA>"  # a forwarded query's time is not CoreDNS's own


def test_unanswered_without_an_errors_line_names_the_corefile_forward():
    logs = parse_lines(['[INFO] 10.244.0.9:1 - 2 "A IN example.com. udp 29 false 512" - - 0 5.0s'], "l", "coredns-0")
    corefile = ".:53 {\n    errors\n    forward . 10.0.0.2 10.0.0.3\n}\n"
    from dnscorrelate.cluster.facts import facts_from_files

    findings = analyze(None, logs, facts_from_files(corefile, [])).findings
    assert [f.code for f in findings] == ["upstream-unreachable"]
    assert "10.0.0.2, 10.0.0.3" in findings[0].summary and "unanswered after 5.0 s" in findings[0].summary


def test_a_short_unanswered_line_is_not_blamed_on_the_upstream():
    logs = parse_lines(['[INFO] 10.244.0.9:1 - 2 "A IN example.com. udp 29 false 512" - - 0 0.000120s'], "l", "coredns-0")
    findings = analyze(None, logs, None).findings
    assert [(f.code, f.hop) for f in findings] == [("unanswered", "coredns")]


def test_an_errors_line_just_after_its_servfail_line_is_joined():
    lines = ['2024-05-02T10:24:36.118930410Z [INFO] 10.244.0.9:40410 - 52311 "A IN grafana.com. udp 40 false 1232" SERVFAIL qr,rd 40 0.000091007s',
             "2024-05-02T10:24:36.119030912Z [ERROR] plugin/errors: 2 grafana.com. A: read udp 10.244.0.5:43289->8.8.8.8:53: i/o timeout"]
    correlation = correlate(None, parse_lines(lines, "l", "coredns-0"))
    assert list(correlation.errors.trace_id) == [0] and len(correlation.traces) == 1
    assert correlation.traces.iloc[0].error_upstream == "8.8.8.8:53"


def test_loop_probes_and_health_checks_are_coredns_own():
    lines = ['[INFO] 127.0.0.1:47278 - 55171 "HINFO IN 4940754309314083739.5160468069505858354. udp 57 false 512" NXDOMAIN qr,rd,ra 57 0.04s',
             '[INFO] 10.233.64.1:40001 - 7 "NS IN . udp 17 false 512" NOERROR qr,rd,ra 239 0.002s',
             '[INFO] 10.244.0.9:1 - 2 "HINFO IN host.example. udp 29 false 512" NOERROR qr,rd,ra 60 0.002s']
    traces = correlate(None, parse_lines(lines, "l", "coredns-0")).traces
    assert list(traces.purpose) == ["loop-probe", "health-check", "lookup"]


def test_failing_health_checks_in_packets_join_the_upstream_finding():
    frame, stats, logs, facts = load_fixture("bad-forward-server")
    findings = [f for f in analyze(frame, logs, facts, stats).findings if f.code == "upstream-unreachable"]
    assert len(findings) == 1 and "forward health checks (. IN NS) to it failed too" in findings[0].summary


def test_no_log_record_matching_a_packet_is_warned(tmp_path):
    frame, stats, _, facts = load_fixture("healthy")
    other = tmp_path / "coredns-9.log"
    other.write_text('[pod/coredns-9/coredns] 2020-01-01T00:00:00Z [INFO] 10.9.9.9:1 - 2 "A IN x. udp 1 false 512" NOERROR qr 1 0.1s\n')
    correlation = analyze(frame, read_logs([other]), facts, stats).correlation
    assert any("none of the 1 CoreDNS log records matched a packet" in w for w in correlation.warnings)


def test_a_renamed_file_still_joins_its_packets_and_is_warned_about(tmp_path):
    frame, stats, logs, facts = load_fixture("healthy")
    renamed = tmp_path / "dns.log"
    shutil.copy(FIXTURES / "healthy" / "coredns-0.log", renamed)
    correlation = analyze(frame, read_logs([renamed]), facts, stats).correlation
    assert correlation.stats["log_records"] and not (correlation.logs["trace_id"] < 0).all()
    assert any("taken from the file's name (dns)" in w for w in correlation.warnings)


def test_replica_named_on_the_command_line(tmp_path):
    log = tmp_path / "dns.log"
    log.write_text('[INFO] 10.244.0.9:1 - 2 "A IN web.demo.svc.cluster.local. udp 29 false 512" NOERROR qr,aa,rd 60 0.0002s\n')
    result = CliRunner().invoke(main, ["correlate", "--coredns-log", f"coredns-66bc5c9577-x2v9q={log}", "-o", "json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["traces"][0]["replica"] == "coredns-66bc5c9577-x2v9q" and record["warnings"] == []
    assert log_source(str(log)) == (None, str(log)) and log_source("a=b/c.log") == ("a", "b/c.log")


def test_log_format_on_the_command_line(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("[INFO] udp Request: example.org. A 4242 from 10.244.0.4 NXDOMAIN 0.0002s\n")
    plain = CliRunner().invoke(main, ["correlate", "--coredns-log", str(log), "-o", "json"])
    assert "--log-format" in " ".join(json.loads(plain.output)["warnings"])
    given = CliRunner().invoke(main, ["correlate", "--coredns-log", str(log), "-o", "json",
                                      "--log-format", "{proto} Request: {name} {type} {>id} from {remote} {rcode} {duration}"])
    record = json.loads(given.output)
    assert record["stats"]["unparsed_lines"] == 0 and record["traces"][0]["rcode"] == "NXDOMAIN"


def test_an_errors_line_written_just_before_its_query_line_is_joined_too():
    # Some releases run the errors plugin inside log: its line comes first, within the query's own short duration.
    lines = ["2024-05-02T10:24:36.118900000Z [ERROR] plugin/errors: 2 grafana.com. A: dial udp 172.18.0.1:53: connect: network is unreachable",
             '2024-05-02T10:24:36.118930410Z [INFO] 10.244.0.9:40410 - 52311 "A IN grafana.com. udp 40 false 1232" SERVFAIL qr,rd 40 0.000010007s',
             '2024-05-02T10:24:39.000000000Z [INFO] 10.244.0.9:40411 - 52312 "A IN grafana.com. udp 40 false 1232" SERVFAIL qr,rd 40 0.000010007s']
    correlation = correlate(None, parse_lines(lines, "l", "coredns-0"))
    assert list(correlation.errors.trace_id) == [0] and list(correlation.traces.error_count) == [1, 0]


def test_untimed_errors_lines_join_the_query_line_next_to_them():
    lines = ['[INFO] 127.0.0.1:63325 - 28625 "A IN 9gag.com. udp 49 false 4096" NOERROR - 0 6.010923182s',
             "[ERROR] plugin/errors: 2 9gag.com. A: read udp 10.244.0.5:43289->8.8.8.8:53: i/o timeout",
             '[INFO] 127.0.0.1:63326 - 28626 "A IN 9gag.com. udp 49 false 4096" NOERROR - 0 6.002131807s',
             "[ERROR] plugin/errors: 2 9gag.com. A: read udp 10.244.0.5:43290->8.8.4.4:53: i/o timeout"]
    correlation = correlate(None, parse_lines(lines, "l", "coredns-0"))
    assert list(correlation.errors.trace_id) == [0, 1]
    assert list(correlation.traces.error_upstream) == ["8.8.8.8:53", "8.8.4.4:53"]
