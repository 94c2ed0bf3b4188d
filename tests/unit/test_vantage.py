"""Evidence from one vantage point: each third-party capture (../shared/data/third-party/pcap, from other projects'
test suites) gets the findings its one place supports, and nothing a Kubernetes path would need; its lookups
agree with tshark; the same packets gain roles from facts; and no finding ever contradicts the traces, on
every recorded fixture and third-party file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dnscorrelate.analysis import analyze, dns_servers, with_dns_servers
from dnscorrelate.cli import main
from dnscorrelate.cluster.facts import facts_from_files
from dnscorrelate.cluster.spec import load_manifests
from dnscorrelate.correlate.vantage import VANTAGE
from dnscorrelate.diagnose.evidence import DNS_SERVER_ROLES, failed
from dnscorrelate.sources.coredns_log import read_logs
from dnscorrelate.sources.evidence import read_evidence
from tests.fixtures import HERE as FIXTURES
from tests.fixtures import load_fixture
from tests.tshark import requires_tshark, tshark_messages

THIRD_PARTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "third-party"
PCAPS = THIRD_PARTY / "pcap"
needs_third_party = pytest.mark.skipif(not PCAPS.is_dir(), reason=f"no third-party captures in {PCAPS}")

# What a path through a cluster would have to be known for: never said of what one place saw.
TOPOLOGY_CODES = {"dropped-before-node", "dropped-at-node", "coredns-unreachable", "coredns-error", "upstream-unreachable",
                  "upstream-error", "upstream-slow", "slow-coredns", "response-lost", "coredns-imbalance", "unanswered"}

# file: (DNS ports to read, the finding codes its one vantage point supports)
EXPECTED = {
    "DNS-OARC-dnsjit-ip6-tcp-padd.pcap": ((53,), {"ok"}),
    "OISF-suricata-verify-dns-incomplete-input.pcap": ((5353,), {"no-response-seen", "query-not-seen", "nodata"}),
    "OISF-suricata-verify-dns-response-2x.pcap": ((53,), {"wrong-id-response", "slow-response-seen"}),
    "OISF-suricata-verify-dns-tcp-multirequest-buffer.pcap": ((53,), {"nxdomain", "slow-response-seen"}),
    "OISF-suricata-verify-dns-tcp-ts-gap-input.pcap": ((53,), {"ok", "query-not-seen"}),
    "OISF-suricata-verify-dns-udp-junkrequest-first-input.pcap": ((53,), {"server-error-seen", "slow-response-seen"}),
    "OISF-suricata-verify-llmnr-udp-input.pcap": ((53,), {"no-lookups"}),  # LLMNR on 5355 is not DNS on 53
    "dmachard-go-dnscollector-dnsdump_udp_truncated+tcp_fragmented.pcap": ((53,), {"truncated", "slow-response-seen"}),
    "gopacket-gopacket-test_dns.pcap": ((53,), {"no-response-seen"}),
    "ntop-nDPI-KakaoTalk_chat.pcap": ((53,), {"several-servers-answered", "slow-response-seen"}),
    "ntop-nDPI-bad-dns-traffic.pcap": ((53,), {"no-response-seen", "server-error-seen", "slow-response-seen"}),
    "ntop-nDPI-custom_rules_ipv6.pcapng": ((5333,), {"ok"}),
    "ntop-nDPI-dns_fragmented.pcap": ((53,), {"server-error-seen", "nodata", "slow-response-seen"}),
    "zeek-zeek-dns-two-responses.pcap": ((53,), {"ok", "duplicate-response"}),
    "zeek-zeek-dns_extended_rcode.pcap": ((53,), {"server-error-seen"}),
    "zeek-zeek-dynamic-update.pcap": ((53,), {"update-error", "not-a-lookup"}),
    "zeek-zeek-ipv6-fragmented-dns.pcap": ((53,), {"slow-response-seen"}),
    "zeek-zeek-pcapng-multi-interface.pcapng": ((53,), {"ok"}),
    "zeek-zeek-wikipedia-filtered-plus-udp.pcap": ((53,), {"nxdomain"}),
}
PORTS = {**{name: ports for name, (ports, _) in EXPECTED.items()}, "ntop-nDPI-dns.pcap": (53,)}


def analysis_of(name: str, facts=None):
    frame, stats = read_evidence([PCAPS / name], ports=PORTS[name])
    return analyze(frame, None, facts, stats)


@needs_third_party
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_capture_gets_what_its_one_vantage_supports(name):
    analysis = analysis_of(name)
    codes = {f.code for f in analysis.findings}
    assert codes == EXPECTED[name][1], [(f.code, f.summary) for f in analysis.findings]
    assert not codes & TOPOLOGY_CODES
    traces = analysis.correlation.traces
    assert (traces["coverage"] == VANTAGE).all() and (traces["served_from"] == "unknown").all()
    assert not traces["server"].isin([name.rsplit(".", 1)[0]]).any()  # never the file's name


@needs_third_party
def test_the_nDPI_dns_pcap_says_only_what_one_place_supports():
    """A lone response (query-not-seen), an answer without the type asked, and the A lookup inside QinQ and
    PPPoE answered: nothing about a path one capture cannot see."""
    codes = {f.code for f in analysis_of("ntop-nDPI-dns.pcap").findings}
    assert {"query-not-seen", "nodata"} <= codes and not codes & TOPOLOGY_CODES


def tshark_lookups(name: str) -> set[tuple]:
    """(client, id, name) of every query tshark decodes: a lookup, its retransmissions counted once."""
    return {(source, qid, qname) for _, source, qid, response, qname, _, _ in tshark_messages(PCAPS / name, PORTS[name]) if not response}


def our_lookups(name: str) -> set[tuple]:
    traces = analysis_of(name).correlation.traces
    asked = traces[traces["query_seen"]]
    return {(ip, int(qid), qname.rstrip(".").lower()) for ip, qid, qname in zip(asked["client_ip"], asked["dns_id"], asked["qname"])}


@needs_third_party
@requires_tshark
@pytest.mark.parametrize("name", [*sorted(EXPECTED), "ntop-nDPI-dns.pcap"])
def test_lookups_agree_with_tshark(name):
    assert our_lookups(name) == tshark_lookups(name)


@needs_third_party
def test_the_exact_things_one_capture_shows():
    """The responder's own address, what raced what, where the duplicate and the second server are."""
    bad = analysis_of("ntop-nDPI-bad-dns-traffic.pcap")
    failing = next(f for f in bad.findings if f.code == "server-error-seen")
    assert failing.hop == "server" and failing.count == 3 and failing.summary.startswith("4.2.2.4 answered SERVFAIL")
    silent = next(f for f in bad.findings if f.code == "no-response-seen")
    assert silent.count == 58 and silent.hop == "vantage->server" and silent.severity == "error"  # tshark: 58 never answered

    raced = analysis_of("OISF-suricata-verify-dns-response-2x.pcap")
    stray = raced.correlation.traces[raced.correlation.traces["outcome"] == "wrong-id"]
    assert list(stray["dns_id"]) == [0x9941] and list(stray["raced_dns_id"]) == [0x99AB]
    assert (raced.correlation.traces["outcome"] == "answered").sum() == 1

    gap = analysis_of("OISF-suricata-verify-dns-tcp-ts-gap-input.pcap").correlation.traces
    assert list(gap.loc[gap["outcome"] == "query-not-seen", "dns_id"]) == [1]

    kakao = analysis_of("ntop-nDPI-KakaoTalk_chat.pcap")
    two = next(f for f in kakao.findings if f.code == "several-servers-answered")
    assert "10.188.1.1, 10.188.191.1" in two.summary and "ICMP 3/3" in two.summary
    assert kakao.correlation.stats["icmp_unmatched"] == 0  # the port unreachable quoting the second answer joins its trace

    gopacket = next(f for f in analysis_of("gopacket-gopacket-test_dns.pcap").findings if f.code == "no-response-seen")
    assert gopacket.severity == "warning" and "too soon" in gopacket.summary  # a 20 ms capture cannot call them lost

    update = analysis_of("zeek-zeek-dynamic-update.pcap")
    assert set(update.correlation.traces["purpose"]) == {"update"}
    assert "lookup of" not in " ".join(f.summary for f in update.findings)


KUBE_DNS_AT_4_2_2_4 = """
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 4.2.2.4, ports: [{port: 53, protocol: UDP}]}
"""


@needs_third_party
def test_facts_give_the_same_packets_their_roles(tmp_path):
    """With a manifest that makes 4.2.2.4 the kube-dns Service, the capture's server is kube-dns, a CoreDNS
    role; what one place can say stays what it was."""
    manifest = tmp_path / "kube-dns.yaml"
    manifest.write_text(KUBE_DNS_AT_4_2_2_4)
    facts = with_dns_servers(facts_from_files("", load_manifests(str(manifest))))
    assert dns_servers(facts) == {"4.2.2.4": ("kube-dns (4.2.2.4)", "coredns")}
    bare, named = analysis_of("ntop-nDPI-bad-dns-traffic.pcap"), analysis_of("ntop-nDPI-bad-dns-traffic.pcap", facts)
    traces = named.correlation.traces
    assert set(traces["server"]) == {"kube-dns (4.2.2.4)"} and set(traces["server_role"]) == {"coredns"}
    assert [f.code for f in named.findings] == [f.code for f in bare.findings]
    assert next(f for f in named.findings if f.code == "server-error-seen").summary.startswith("kube-dns (4.2.2.4) answered SERVFAIL")


@needs_third_party
def test_correlate_report_writes_the_html_report(tmp_path):
    pcap = str(PCAPS / "zeek-zeek-dns-two-responses.pcap")
    bare, with_facts = tmp_path / "bare.html", tmp_path / "facts.html"
    manifest = tmp_path / "kube-dns.yaml"
    manifest.write_text(KUBE_DNS_AT_4_2_2_4)
    for report, extra in ((bare, []), (with_facts, ["--manifests", str(manifest)])):
        result = CliRunner().invoke(main, ["correlate", "--pcap", pcap, "--report", str(report), "-o", "json", *extra])
        assert result.exit_code == 0, result.output
    page = bare.read_text()
    assert "duplicate-response" in page and "www.cmu.edu." in page and 'id="cluster"' not in page
    assert 'id="cluster"' in with_facts.read_text()
    refused = CliRunner().invoke(main, ["correlate", "--pcap", pcap, "--report", str(tmp_path / "missing" / "r.html")])
    assert refused.exit_code == 2 and "--report" in refused.output and "does not exist" in refused.output


# --- findings never contradict the traces -------------------------------------------------------------


def every_analysis():
    """(name, analysis) of every recorded fixture (packets and logs, packets, logs) and every file of
    real-formats and third-party, read as `correlate` reads them."""
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "events.parquet").exists()):
        frame, stats, logs, facts = load_fixture(folder.name)
        yield f"{folder.name}", analyze(frame, logs, facts, stats)
        yield f"{folder.name}.packets", analyze(frame, None, None, stats)
        yield f"{folder.name}.logs", analyze(None, logs, facts)
    real = FIXTURES / "real-formats"
    for path in sorted(real.glob("*.pcapng")):
        yield path.name, analyze(*evidence(pcaps=[path], ports=(53, 15353, 15354)))
    for path in sorted(real.glob("*.jsonl")):
        yield path.name, analyze(*evidence(ig_json=[path]))
    for path in sorted(real.glob("*.fstrm")):
        yield path.name, analyze(*evidence(dnstap=[path]))
    for path in sorted((real / "coredns-logs").glob("*.log")):
        yield path.name, analyze(None, read_logs([path]), None)
    for path in sorted((THIRD_PARTY / "pcap").glob("*")) if PCAPS.is_dir() else []:
        yield path.name, analyze(*evidence(pcaps=[path], ports=PORTS.get(path.name, (53,))))
    for path in sorted((THIRD_PARTY / "dnstap").glob("*")) if (THIRD_PARTY / "dnstap").is_dir() else []:
        if path.suffix != ".text":
            yield path.name, analyze(*evidence(dnstap=[path]))
    for path in sorted((THIRD_PARTY / "hubble").glob("*.json")) if (THIRD_PARTY / "hubble").is_dir() else []:
        yield path.name, analyze(*evidence(hubble_json=[path]))


def evidence(**inputs):
    frame, stats = read_evidence(**inputs)
    return frame, None, None, stats


def contradictions(analysis) -> list[str]:
    traces = analysis.correlation.traces
    lookups = traces[(traces["purpose"] == "lookup") & ~traces["client_role"].isin(DNS_SERVER_ROLES)
                     & traces["outcome"].isin(["answered", "timed-out", "partial"])]
    codes = {f.code for f in analysis.findings}
    said = []
    if "no-lookups" in codes and len(lookups):
        said.append(f"no-lookups beside {len(lookups)} lookups")
    for ok in (f for f in analysis.findings if f.code == "ok"):
        good = lookups[(lookups["outcome"] == "answered") & (lookups["rcode"] == "NOERROR")]
        if ok.count == 0 or ok.count != len(good):
            said.append(f"ok for {ok.count} lookups, {len(good)} answered NOERROR")
    covered = set().union(*(f.covers for f in analysis.findings if f.severity in ("error", "warning")))
    errors = lookups[(lookups["outcome"] == "answered") & failed(lookups["rcode"])]
    if not set(errors["trace_id"]) <= covered:
        said.append(f"error responses no finding covers: traces {sorted(set(errors['trace_id']) - covered)[:5]}")
    one_place = set(traces.loc[traces["coverage"] == VANTAGE, "trace_id"])
    for f in analysis.findings:
        if f.code in TOPOLOGY_CODES and f.covers & one_place:
            said.append(f"{f.code} about lookups one vantage point saw")
        if not f.covers <= set(traces["trace_id"]):
            said.append(f"{f.code} cites traces that do not exist")
    return said


def test_findings_never_contradict_the_traces():
    checked, wrong = 0, {}
    for name, analysis in every_analysis():
        checked += 1
        if said := contradictions(analysis):
            wrong[name] = said
    assert checked > 60 and not wrong, wrong


@needs_third_party
def test_a_label_names_the_vantage_but_draws_no_path():
    """`--pcap pod/NS/NAME=FILE` says where the capture was taken; one place is still one place: its unanswered
    queries are not 'dropped before the node', which only a capture at the node could tell."""
    frame, stats = read_evidence([("pod/demo/mypod", PCAPS / "gopacket-gopacket-test_dns.pcap")])
    analysis = analyze(frame, None, None, stats)
    traces = analysis.correlation.traces
    assert set(traces["client_vantage"]) == {"demo/mypod"} and set(traces["client_role"]) == {"pod"}
    assert (traces["coverage"] == VANTAGE).all()
    assert {f.code for f in analysis.findings} == {"no-response-seen"}


def test_an_icmp_error_instead_of_an_answer_is_said_as_such(tmp_path):
    """A query to 10.96.0.10:53 answered by ICMP port unreachable, the capture going on 5 s: not 'no response
    seen' but what the ICMP error says, about that address."""
    from tests import packets as p

    t0 = 1_700_000_000_000_000_000
    query = p.udp(40000, 53, p.query())
    unreachable = p.ipv4("10.96.0.10", "10.244.1.5", 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + query[:28 + 12])
    later = p.udp(40001, 53, p.query("other.example.", qid=7))
    answer = p.udp(53, 40001, p.response("other.example.", qid=7), src="10.96.0.10", dst="10.244.1.5")
    path = tmp_path / "client.pcap"
    path.write_bytes(p.pcap_file(101, [(t0, query), (t0 + 10**6, unreachable), (t0 + 5 * 10**9, later), (t0 + 5 * 10**9 + 10**6, answer)]))
    frame, stats = read_evidence([path])
    analysis = analyze(frame, None, None, stats)
    refused = [f for f in analysis.findings if f.code == "icmp-error-seen"]
    assert len(refused) == 1 and refused[0].count == 1 and refused[0].evidence["target"] == "10.96.0.10:53"
    assert "nothing listens on that port" in refused[0].summary
    assert "no-response-seen" not in {f.code for f in analysis.findings}
