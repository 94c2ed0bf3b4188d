"""CoreDNS log lines in every format real clusters produce; garbage is counted, never fatal.

Sample lines are the shapes shown in CoreDNS's log plugin README and in public
CoreDNS bug reports (issues 4513, 4724, 503, 2494, 5864)."""

import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscorrelate.sources import coredns_log
from dnscorrelate.sources.coredns_log import (
    COMBINED, LogFormatError, duration_seconds, format_regex, formats_from_corefile, parse_lines, read_logs,
)


def one(line, **kwargs):
    parsed = parse_lines([line], "t.log", "coredns-0", **kwargs)
    assert parsed.unparsed == [], parsed.unparsed
    return parsed


def test_common_format_from_the_readme():
    r = one('[INFO] [::1]:50759 - 29008 "A IN example.org. udp 41 false 4096" NOERROR qr,rd,ra,ad 68 0.037990251s').records.iloc[0]
    assert (r.remote_ip, r.remote_port, r.id, r.qtype, r.qclass, r.qname, r.proto, r["size"], r["do"], r.bufsize) == (
        "::1", 50759, 29008, "A", "IN", "example.org.", "udp", 41, False, 4096)
    assert (r.rcode, r.rflags, r.rsize, r.duration_s, r.replica, r.line_no) == ("NOERROR", "qr,rd,ra,ad", 68, 0.037990251, "coredns-0", 1)
    assert str(r.ts_ns) == "<NA>"  # no timestamp in the line: none is invented


def test_kubectl_timestamps_and_prefix():
    r = one('[pod/coredns-1/coredns] 2026-11-22T01:26:17.156121486Z [INFO] 10.244.0.4:55035 - 4143 '
            '"A IN web.demo.svc.cluster.local. udp 44 false 512" NOERROR qr,aa,rd 133 0.000334915s').records.iloc[0]
    assert r.replica == "coredns-1" and r.ts_ns == 1795310777156121486


def test_release_1_3_to_1_6_leading_timestamp():
    r = one('2021-03-11T07:03:56.565Z [INFO] 172.27.172.128:34346 - 7481 "A IN rwc.default.svc.cluster.local. tcp 50 false 65535" '
            'NOERROR qr,aa,rd 98 0.0002043s').records.iloc[0]
    assert (r.ts_ns, r.proto, r.bufsize, r.remote_ip) == (1615446236565000000, "tcp", 65535, "172.27.172.128")


def test_release_1_2_date_after_the_client_and_go_durations():
    r = one('10.244.0.4:46772 - [22/Nov/2018:01:26:17 +0000] 58151 "A IN example.com. udp 29 false 512" NOERROR qr,rd,ra 68 1.830937ms').records.iloc[0]
    assert (r.id, r.ts_ns, r.duration_s) == (58151, 1542849977000000000, pytest.approx(0.001830937))


def test_pre_1_0_without_port_or_id():
    r = one('10.2.6.75 - [06/Feb/2017:21:18:44 +0000] "A IN kubernetes.default.svc.cluster.local. udp 54 false 512" NOERROR 70 981.518µs').records.iloc[0]
    assert (r.remote_ip, str(r.remote_port), str(r.id), r.duration_s) == ("10.2.6.75", "<NA>", "<NA>", pytest.approx(981.518e-6))


def test_dashes_for_missing_response_fields():
    # CoreDNS 1.8.5+ logs `-` when no response was written (issue 4724: a forward timeout).
    r = one('[INFO] 127.0.0.1:63325 - 28625 "A IN 9gag.com. udp 49 false 4096" - - 0 6.010923182s').records.iloc[0]
    assert (r.rcode, r.rflags, r.rsize, r.duration_s) == ("", "", 0, 6.010923182)


def test_combined_format_has_the_opcode():
    r = one('[INFO] 10.244.0.4:1 - 2 "A IN x. udp 1 false 512" NOERROR qr 1 0.1s "QUERY"').records.iloc[0]
    assert r.opcode == "QUERY"


def test_custom_format_from_the_corefile():
    corefile = '.:53 {\n    log . "{proto} Request: {name} {type} {>id} from {remote} {rcode} {duration} {/log/type}"\n}\n'
    formats = formats_from_corefile(corefile)
    assert formats == ["{proto} Request: {name} {type} {>id} from {remote} {rcode} {duration} {/log/type}"]
    r = one("[INFO] udp Request: example.org. A 4242 from 10.244.0.4 NXDOMAIN 0.0002s NXDOMAIN", formats=formats).records.iloc[0]
    assert (r.proto, r.qname, r.qtype, r.id, r.remote_ip, r.rcode) == ("udp", "example.org.", "A", 4242, "10.244.0.4", "NXDOMAIN")


def test_corefile_log_directives():
    assert formats_from_corefile(".:53 {\n    log . {combined} {\n        class denial error\n    }\n}") == [COMBINED]
    assert formats_from_corefile(".:53 {\n    log\n}") == []
    with pytest.raises(LogFormatError, match=r"\{nope\}"):
        format_regex("{nope} {name}")


def test_errors_plugin_lines():
    errors = one("[ERROR] plugin/errors: 2 example.com. A: read udp 10.244.0.2:45117->192.168.49.1:53: i/o timeout").errors.iloc[0]
    assert (errors.rcode, errors.qname, errors.qtype, errors.upstream_ip, errors.upstream_port, errors.reason) == (
        "SERVFAIL", "example.com.", "A", "192.168.49.1", 53, "timeout")
    refused = one("[ERROR] plugin/errors: 2 github.com. AAAA: dial tcp 192.168.49.99:53: connect: connection refused").errors.iloc[0]
    assert (refused.upstream_ip, refused.reason) == ("192.168.49.99", "refused")


def test_coredns_notices_are_known_not_unparsed():
    lines = [
        "maxprocs: Leaving GOMAXPROCS=2: CPU quota undefined", ".:53", "CoreDNS-1.14.7", "linux/amd64, go1.26.8, ",
        "[INFO] plugin/reload: Running configuration SHA512 = 671be70b", "[WARNING] No files matching import glob pattern: custom/*.override",
        "[INFO] Reloading complete", ".:53 on 169.254.20.10", "",
    ]
    parsed = parse_lines(lines, "t.log", "coredns-0")
    assert parsed.unparsed == [] and parsed.other_lines == len(lines) and parsed.log_lines == len(lines)


def test_unparsed_lines_are_kept_with_their_numbers():
    parsed = parse_lines(["ok?", '[INFO] 10.244.0.4:55035 - 4143 "A IN broken'], "t.log", "coredns-0")
    assert parsed.unparsed == [("t.log", 1, "ok?"), ("t.log", 2, '[INFO] 10.244.0.4:55035 - 4143 "A IN broken')]


@pytest.mark.parametrize("text, seconds", [("0.001034049s", 0.001034049), ("1.830937ms", 0.001830937), ("981.518µs", 981.518e-6),
                                           ("1m2.5s", 62.5), ("350ns", 3.5e-7), ("-", math.nan)])
def test_durations(text, seconds):
    value = duration_seconds(text)
    assert (math.isnan(value) and math.isnan(seconds)) or value == pytest.approx(seconds)


def test_files_name_their_replica(tmp_path):
    (tmp_path / "coredns-1.log").write_text('[INFO] 10.244.0.4:1 - 2 "A IN x. udp 1 false 512" NOERROR qr 1 0.1s\n')
    parsed = read_logs([tmp_path / "coredns-1.log"])
    assert list(parsed.records.replica) == ["coredns-1"] and list(parsed.records.source) == [str(tmp_path / "coredns-1.log")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
def test_garbage_never_raises_and_every_line_is_accounted_for(lines):
    lines = [l.replace("\n", " ").replace("\r", " ") for l in lines]
    parsed = parse_lines(lines, "g.log", "coredns-0")
    assert parsed.log_lines == len(lines)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet='[]INFOERROR0123456789.:-" ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/,', max_size=160))
def test_near_miss_lines_never_raise(line):
    parsed = parse_lines([line], "g.log", "coredns-0")
    assert parsed.log_lines == 1


# --- shapes from many CoreDNS releases (see tests/fixtures/real-formats/README.md, "CoreDNS logs") ---------


@pytest.mark.parametrize("line, kind", [
    (".:53", "banner"), ("cluster.local.:53 on 169.254.25.10", "banner"), ("CoreDNS-1.8.4", "banner"),
    ("linux/amd64, go1.16.4, 053c4d5", "banner"), ("linux/amd64, go1.13.15, ", "banner"),
    ("maxprocs: Leaving GOMAXPROCS=16: CPU quota undefined", "banner"),
    ("[WARNING] No files matching import glob pattern: /etc/coredns/custom/*.override", "banner"),
    ("[INFO] plugin/reload: Running configuration SHA512 = 591cf328cccc12bc4904", "reload"),
    ("[INFO] plugin/reload: Running configuration MD5 = 4e235fcc3696966e76816bcd9034ebc7", "reload"),
    ("[INFO] Reloading", "reload"), ("[INFO] Reloading complete", "reload"),
    ("[INFO] SIGTERM: Shutting down servers then terminating", "shutdown"),
    ("[INFO] plugin/health: Going into lameduck mode for 5s", "shutdown"),
    ('[INFO] plugin/ready: Still waiting on: "kubernetes"', "health"),
    ('[WARNING] plugin/health: Local health request to "http://:8080/health" took more than 1s: 1.236s', "health"),
    ("[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API", "kubernetes"),
    ("[INFO] plugin/kubernetes: waiting for Kubernetes API before starting server", "kubernetes"),
    ('E1207 03:34:20.049977       1 reflector.go:205] github.com/coredns/coredns/plugin/kubernetes/controller.go:318: '
     'Failed to list *v1.Namespace: Get https://10.233.0.1:443/api/v1/namespaces: dial tcp 10.233.0.1:443: i/o timeout', "kubernetes"),
    ('[FATAL] plugin/loop: Loop (127.0.0.1:34536 -> :53) detected for zone ".", see https://coredns.io/plugins/loop#troubleshooting. '
     'Query: "HINFO 4547991504243258144.3688648895315093531."', "loop-detected"),
    ("[ERROR] plugin/errors: 42 errors like '^read udp .* i/o timeout$' occurred in last 30s", "errors-summary"),
    ("2020/10/28 17:17:10 [INFO] Starting node-cache image: 1.15.16-8-g4c606a1", "node-cache"),
    ("2020/10/28 17:17:10 [ERROR] Failed to read node-cache coreFile /etc/coredns/Corefile.base - open: no such file", "node-cache"),
    ("2020/10/28 17:17:10 [INFO] Added interface - nodelocaldns", "node-cache"),
    ("[pod/coredns-66bc5c9577-x2v9q/coredns] 2024-05-02T10:20:11.504061152Z CoreDNS-1.11.1", "banner"),
    ("coredns-565d847f94-8zs2m coredns [INFO] plugin/reload: Running configuration SHA512 = 59", "reload"),
    ("  [INFO] plugin/reload: Running configuration MD5 = f65c4821c8a9b7b5", "reload"),
    ("Listen: listen tcp :53: bind: permission denied", "startup-error"),
    ("/etc/coredns/Corefile:12 - Error during parsing: Unknown directive 'proxy'", "startup-error"),
    ('Defaulted container "coredns" out of: coredns, config-reloader', "kubectl"),
    ("[DEBUG] plugin/finalize: Finalizing CNAME for request", "plugin"),
])
def test_non_query_lines_are_counted_by_kind(line, kind):
    parsed = parse_lines([line], "t.log", "coredns-0")
    assert (parsed.unparsed, len(parsed.records), len(parsed.errors), parsed.other_lines) == ([], 0, 0, 1)
    assert parsed.notices == {kind: 1}


def test_errors_lines_of_coredns_1_2_have_no_plugin_name():
    parsed = parse_lines(["2018/12/07 03:35:02 [ERROR] 2 api.weixin.qq.com. A: unreachable backend: read udp "
                          "10.233.102.132:51822->219.141.136.10:53: i/o timeout",
                          " [ERROR] plugin/errors: 2 1832739969549183765.325799172751613093. HINFO: unreachable backend: "
                          "read udp 10.233.102.132:46972->219.141.140.10:53: i/o timeout"], "t.log", "coredns-0")
    e = parsed.errors
    assert list(e.qname) == ["api.weixin.qq.com.", "1832739969549183765.325799172751613093."]
    assert list(e.upstream_ip) == ["219.141.136.10", "219.141.140.10"] and list(e.reason) == ["timeout", "timeout"]
    assert e.ts_ns.iloc[0] == 1544153702000000000  # Go's log date, read as UTC


def test_a_number_in_an_info_line_is_not_an_errors_line():
    parsed = parse_lines(["[INFO] 2 things A: happened"], "t.log", "coredns-0")
    assert len(parsed.errors) == 0 and parsed.other_lines == 1


def test_stern_prefix_names_the_replica():
    r = one('coredns-565d847f94-qwk7d coredns [INFO] 10.244.1.12:58831 - 40112 "A IN db.corp.example. udp 33 false 512" '
            'NOERROR qr,rd,ra 49 0.412775191s').records.iloc[0]
    assert (r.replica, r.qname) == ("coredns-565d847f94-qwk7d", "db.corp.example.")


@pytest.mark.parametrize("prefix, replica", [
    ("coredns-secondary    | ", "coredns-secondary"),  # docker compose
    ("kube-system/coredns-7d575fbd9-kbmzn[coredns]: ", "coredns-7d575fbd9-kbmzn"),  # kail
])
def test_other_log_collectors_prefixes_name_the_replica(prefix, replica):
    r = one(prefix + '172.16.238.1 - [07/Jun/2017:12:52:12 +0000] "A IN www.google.com. udp 44 false 4096" NOERROR 60 9.656563ms').records.iloc[0]
    assert (r.replica, r.qname, r.rsize) == (replica, "www.google.com.", 60)


def test_a_failed_forward_health_check_is_an_errors_record_about_dot_ns():
    e = one("2018/02/07 18:39:51 [INFO] healtheck of 192.168.1.1:53 failed with read udp 10.244.1.67:45004->192.168.1.1:53: "
            "i/o timeout").errors.iloc[0]
    assert (e.qname, e.qtype, e.rcode, e.upstream_ip, e.upstream_port, e.reason) == (".", "NS", "", "192.168.1.1", 53, "timeout")


def test_node_cache_query_lines_after_its_container_name():
    r = one('node-cache [INFO] 10.233.64.12:36413 - 2341 "A IN web.demo.svc.cluster.local. udp 55 false 512" '
            'NOERROR qr,aa,rd 106 0.000451008s').records.iloc[0]
    assert (r.qname, r.rcode) == ("web.demo.svc.cluster.local.", "NOERROR")


def test_a_custom_format_without_its_format_is_unparsed_with_a_hint():
    line = "[INFO] udp Request: example.org. A 4242 from 10.244.0.4 NXDOMAIN 0.0002s"
    custom = "[INFO] 10.244.0.4 asked A IN example.org. got NXDOMAIN"
    parsed = parse_lines([line, custom], "t.log", "coredns-0")
    assert [n for _, n, _ in parsed.unparsed] == [1, 2]
    assert len(parsed.warnings) == 1 and "--log-format" in parsed.warnings[0] and "2 unparsed line(s)" in parsed.warnings[0]


def test_replicas_named_guessed_or_from_the_prefix(tmp_path):
    line = '[INFO] 10.244.0.4:1 - 2 "A IN x. udp 1 false 512" NOERROR qr 1 0.1s\n'
    (tmp_path / "a.log").write_text(line)
    (tmp_path / "b.log").write_text("[pod/coredns-7db6d8ff4d-4xk9n/coredns] " + line)
    parsed = read_logs([("coredns-66bc5c9577-x2v9q", tmp_path / "a.log"), tmp_path / "a.log", tmp_path / "b.log"])
    assert list(parsed.records.replica) == ["coredns-66bc5c9577-x2v9q", "a", "coredns-7db6d8ff4d-4xk9n"]
    assert parsed.guessed_replicas == {str(tmp_path / "a.log"): "a"}  # only the file named by nothing but its name


def test_log_formats_given_directly(tmp_path):
    (tmp_path / "c.log").write_text("[INFO] udp Request: example.org. A 4242 from 10.244.0.4 NXDOMAIN 0.0002s\n")
    parsed = read_logs([tmp_path / "c.log"], log_formats=["{proto} Request: {name} {type} {>id} from {remote} {rcode} {duration}"])
    assert list(parsed.records.rcode) == ["NXDOMAIN"] and parsed.unparsed == [] and parsed.warnings == []


REAL_FORMATS = sorted((Path(__file__).parents[1] / "fixtures" / "real-formats" / "coredns-logs").glob("*.log"))


@pytest.mark.parametrize("path", REAL_FORMATS, ids=lambda p: p.name)
def test_every_line_of_the_real_format_excerpts_is_read(path):
    parsed = read_logs([path])
    assert parsed.unparsed == []
    assert parsed.log_lines == len(path.read_text().splitlines()) == len(parsed.records) + len(parsed.errors) + parsed.other_lines


@pytest.mark.parametrize("error, reason, upstream", [
    ("write udp 10.244.0.5:43289->8.8.8.8:53: write: operation not permitted", "blocked", "8.8.8.8"),
    ("read tcp 10.244.0.5:43289->[2001:4860:4860::8888]:53: read: connection reset by peer", "reset", "2001:4860:4860::8888"),
    ("unreachable backend: no upstream host", "no-healthy-upstream", ""),
    ("no healthy proxies", "no-healthy-upstream", ""),
])
def test_errors_reasons(error, reason, upstream):
    e = one(f"[ERROR] plugin/errors: 2 example.com. A: {error}").errors.iloc[0]
    assert (e.reason, e.upstream_ip) == (reason, upstream)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def whole_file(path, replica):
    """What the reader gave before it read in chunks: every line of the file at once."""
    return parse_lines(path.read_text(errors="replace").splitlines(), str(path), replica, replica_is_guess=True)


def assert_same_parse(chunked, whole):
    pd.testing.assert_frame_equal(chunked.records, whole.records)
    pd.testing.assert_frame_equal(chunked.errors, whole.errors)
    assert (chunked.other_lines, chunked.unparsed, chunked.notices) == (whole.other_lines, whole.unparsed, whole.notices)
    assert (chunked.warnings, chunked.alerts, chunked.guessed_replicas) == (whole.warnings, whole.alerts, whole.guessed_replicas)


def test_a_log_read_in_chunks_parses_as_one(tmp_path, monkeypatch):
    """Every real log shape in one file, read 7 lines and 50 characters at a time: line numbers, categories,
    counts, unparsed lines, alerts and the custom-format hint are those of one parse of the whole file."""
    logs = sorted((FIXTURES / "real-formats" / "coredns-logs").glob("*.log")) + [FIXTURES / "healthy" / "coredns-0.log"]
    mixed = tmp_path / "coredns-0.log"
    mixed.write_bytes(b"".join(p.read_bytes() for p in logs) + b'x "A IN custom.example. udp" 10.0.0.1 NOERROR\n')
    whole = whole_file(mixed, "coredns-0")
    assert len(whole.records) > 20 and whole.errors.size and whole.unparsed and whole.alerts and whole.warnings
    monkeypatch.setattr(coredns_log, "CHUNK_LINES", 7)
    monkeypatch.setattr(coredns_log, "BLOCK_CHARS", 50)
    assert_same_parse(read_logs([mixed]), whole)


def test_chunked_reading_cuts_lines_as_splitlines_does(tmp_path, monkeypatch):
    """CR LF, a lone CR, vertical tab, Unicode line separators, a UTF-8 character and an undecodable byte on a
    block's edge, blank lines and no final newline."""
    path = tmp_path / "odd.log"
    path.write_bytes(b"a\r\nb\rc\x0bd\xe2\x80\xa8e\xc3\xa9f\xffg\n\n\nh\x1ci\r\n\rlast")
    expected = path.read_text(errors="replace").splitlines()
    for block in (1, 2, 3, 5, 64):
        monkeypatch.setattr(coredns_log, "BLOCK_CHARS", block)
        for size in (1, 2, 100):
            assert [line for chunk in coredns_log.line_chunks(path, size) for line in chunk] == expected, (block, size)
            assert all(len(chunk) <= size for chunk in coredns_log.line_chunks(path, size))
