"""Evidence recorded from real labs by running each shipped scenario (tests/fixtures/record.py), diagnosed from that evidence alone.

The fault is not in the fixture: only packets, CoreDNS logs and the lab's topology (cluster facts)."""

import pandas as pd
import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.diagnose import EVIDENCE_LIMIT
from tests.fixtures import load_cilium_fixture, load_fixture, repeated

EXPECTED = {
    # fixture: (code, hop, words the summary must contain)
    "healthy": ("ok", "", ["answered correctly"]),
    "bad-forward-server": ("upstream-unreachable", "coredns->upstream", ["192.168.49.99", "coredns-custom github-com.server"]),
    "deny-dns-egress": ("dropped-at-node", "node->coredns", ["NetworkPolicy demo/default-deny-egress", "demo/mypod", "Egress"]),
    "deny-dns-ingress": ("dropped-at-node", "node->coredns", ["NetworkPolicy kube-system/dns-only-monitoring", "Ingress"]),
    "missing-service": ("nxdomain", "coredns", ["No Service web2 in namespace demo", "Services in demo: web, web-headless"]),
    "cname-without-a": ("nodata", "coredns", ["CNAME to old.corp.test.", "no A record"]),
    "slow-upstream": ("upstream-slow", "upstream", ["192.168.49.1:53", "ms median"]),
    "upstream-refused": ("upstream-error", "upstream", ["REFUSED", "192.168.49.1:53"]),
    "stale-endpoint": ("coredns-unreachable", "coredns", ["kube-system/coredns-1", "10.244.0.3:53", "stale endpoint"]),
    "search-path": ("search-path-expansion", "pod", ["kubernetes.io", "trailing-dot"]),
    "response-lost": ("response-lost", "return", ["demo/mypod", "never reached the pod"]),
    "truncated": ("truncated", "upstream", ["big.test.", "retried over TCP"]),
    "slow-coredns": ("slow-coredns", "coredns", ["itself took"]),
    "nodelocal-imbalance": ("coredns-imbalance", "node->coredns", ["NodeLocal DNS", "100%"]),
    "coredns-acl": ("coredns-error", "coredns", ["answered REFUSED itself", "server block for . in the Corefile has an acl plugin"]),
    "zone-not-served": ("coredns-error", "coredns", ["no server block serves example.com.", "zones: cluster.local, in-addr.arpa"]),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def diagnosed(request):
    frame, stats, logs, facts = load_fixture(request.param)
    return request.param, analyze(frame, logs, facts, stats)


def test_the_fault_is_found_at_its_hop(diagnosed):
    name, analysis = diagnosed
    code, hop, words = EXPECTED[name]
    matching = [f for f in analysis.findings if f.code == code]
    assert matching, f"{name}: expected {code}, got {[(f.code, f.hop) for f in analysis.findings]}"
    assert matching[0].hop == hop
    for word in words:
        assert word in matching[0].summary, matching[0].summary
    assert matching[0].evidence["traces"], "a finding cites the traces it rests on"


def test_no_false_alarms(diagnosed):
    """Besides the expected finding, only the ones a person would expect from that fault's lookups."""
    name, analysis = diagnosed
    allowed = {EXPECTED[name][0], "ok"} | {"missing-service": set(), "nodelocal-imbalance": {"nxdomain"}, "search-path": set()}.get(name, set())
    assert {f.code for f in analysis.findings} <= allowed, [(f.code, f.summary) for f in analysis.findings]


def test_ok_only_when_nothing_is_wrong(diagnosed):
    name, analysis = diagnosed
    codes = [f.code for f in analysis.findings]
    if any(f.severity in ("error", "warning") for f in analysis.findings):
        assert "ok" not in codes


def test_stats_account_for_every_input(diagnosed):
    name, analysis = diagnosed
    stats = analysis.correlation.stats
    assert stats["packets"] == stats["dns_packets"] + stats["icmp_errors"] + stats["tcp_control_packets"]
    assert stats["unparsed_lines"] == 0 and stats["lost_samples"] == 0
    assert stats["traces"] == len(analysis.correlation.traces)
    sightings = analysis.correlation.sightings
    # every packet is in a trace, or a counted unmatched ICMP error, or TCP set-up summarised as connection attempts
    assert (sightings["trace_id"] >= 0).sum() + stats["icmp_unmatched"] + stats["tcp_control_packets"] == stats["packets"]


@pytest.mark.parametrize("keep", ["nothing", "upstream only"])
def test_no_lookups_is_a_warning_not_ok(keep):
    """Evidence without a single workload lookup (an idle pod, a capture that missed its namespace) is not `ok`."""
    frame, stats, logs, facts = load_fixture("healthy")
    frame = frame.iloc[:0] if keep == "nothing" else frame[frame["role"] == "upstream"]
    analysis = analyze(frame, None, facts, stats)
    assert keep == "nothing" or len(frame) > 0
    assert [(f.code, f.severity) for f in analysis.findings] == [("no-lookups", "warning")]
    assert f"{len(frame)} packet" in analysis.findings[0].summary


@pytest.mark.parametrize("name", ["deny-dns-egress", "stale-endpoint"])
def test_a_finding_explains_all_its_lookups_not_only_those_it_cites(name):
    frame, stats, _, facts = load_fixture(name)
    code = EXPECTED[name][0]
    once = [f for f in analyze(frame, None, facts, stats).findings if f.code == code][0]
    analysis = analyze(repeated(frame, 30), None, facts, stats)
    assert [f.code for f in analysis.findings] == [code]  # no `unanswered` for the lookups past the cited ones
    finding = analysis.findings[0]
    assert finding.count == 30 * once.count > EVIDENCE_LIMIT and len(finding.evidence["traces"]) == EVIDENCE_LIMIT
    assert "covers" not in finding.to_dict() and "_covered" not in finding.to_dict()["evidence"]


@pytest.mark.parametrize("errors_plugin", [True, False])
def test_a_servfail_coredns_gave_itself_is_never_ok(errors_plugin):
    """CoreDNS's own failure answers, without a failed upstream exchange, are reported with what its errors log has to say."""
    frame, stats, _, facts = load_fixture("coredns-acl")
    frame = frame.assign(rcode=frame["rcode"].astype(str).replace("REFUSED", "SERVFAIL").astype("category"))
    facts.corefile = ".:53 {\n" + ("    errors\n" if errors_plugin else "") + "    forward . /etc/resolv.conf\n}\n"
    findings = analyze(frame, None, facts, stats).findings
    assert [(f.code, f.hop) for f in findings] == [("coredns-error", "coredns")]
    assert "answered SERVFAIL itself" in findings[0].summary
    assert ("logged no reason" in findings[0].summary) and (("no errors plugin" in findings[0].summary) != errors_plugin)


def test_queries_the_node_never_saw_are_dropped_before_it_with_the_policy_named():
    """deny-dns-egress's evidence, the pod asking again 2 s later (another port and id) and the node, captured all
    along, not seeing that second query: it was stopped before the node, with the egress policy named from the
    facts; the first, which the node saw, was dropped at the node."""
    frame, stats, logs, facts = load_fixture("deny-dns-egress")
    pod = frame[(frame["role"] == "pod").to_numpy()]
    again = pod.assign(ts_ns=pod["ts_ns"] + 2_000_000_000, src_port=pod["src_port"] + 1, dns_id=pod["dns_id"] + 1)
    analysis = analyze(pd.concat([frame, again], ignore_index=True), logs, facts, stats)
    [lost] = [f for f in analysis.findings if f.code == "dropped-before-node"]
    assert lost.hop == "pod->node" and lost.count == 1
    assert "demo/mypod" in lost.summary and "NetworkPolicy demo/default-deny-egress" in lost.summary
    assert [f.count for f in analysis.findings if f.code == "dropped-at-node"] == [1]


def test_without_a_capture_at_the_node_a_query_is_not_said_dropped_before_it():
    """deny-dns-egress's evidence without the node's capture (the pod's and CoreDNS's log remain: more than one
    place): nothing was watching the node, so its not seeing the query says nothing. The lookup is said unanswered,
    last seen at the pod, not dropped before the node."""
    frame, stats, logs, facts = load_fixture("deny-dns-egress")
    analysis = analyze(frame[(frame["role"] != "node").to_numpy()], logs, facts, stats)
    codes = {f.code for f in analysis.findings}
    assert "dropped-before-node" not in codes and "dropped-at-node" not in codes
    [unanswered] = [f for f in analysis.findings if f.code == "unanswered"]
    assert unanswered.count == 1 and "last seen at demo/mypod" in unanswered.summary


SAME_IN_TRACES = ["client_vantage", "client_role", "client_ip", "client_port", "dns_id", "qname", "qtype", "proto", "server",
                  "server_role", "reached", "dnat_to", "outcome", "rcode", "replica", "upstream_count", "upstream_server", "log_ref"]


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"deny-dns-egress", "deny-dns-ingress"})  # CoreDNS sent nothing there
                         + ["cilium/dns-proxy-hop", "cilium/dns-rule-refused", "cilium/fqdn-policy-denied"])
def test_a_coredns_namespace_captured_receive_only_gives_the_same_traces_and_findings(name):
    """What a capture with CoreDNS's namespaces receive-only records (live/capture.py RECEIVE_ONLY_ROLES): the same
    packets less every one CoreDNS sent, which the node records on the other end of its veth. The correlator names
    CoreDNS as their sender: the same lookups, servers, replicas, upstream exchanges and findings, and CoreDNS's
    own time read from the node's sighting of its answer, a few microseconds later, never earlier."""
    frame, stats, logs, facts = load_cilium_fixture(name.split("/")[1]) if name.startswith("cilium/") else load_fixture(name)
    sent_by_coredns = ((frame["role"] == "coredns") & (frame["pkt_type"] == "OUTGOING")).to_numpy()
    assert sent_by_coredns.any()
    full = analyze(frame, logs, facts, stats)
    receive_only = analyze(frame[~sent_by_coredns].reset_index(drop=True), logs, facts, stats)

    def traces(analysis):
        return analysis.correlation.traces.sort_values(["t_start", "client_port", "dns_id"]).reset_index(drop=True)

    before, after = traces(full), traces(receive_only)
    pd.testing.assert_frame_equal(before[SAME_IN_TRACES], after[SAME_IN_TRACES], check_dtype=False, check_categorical=False)
    # CoreDNS's answers read at the node's end of its veth, on the node's clock: later, by under a millisecond (other
    # servers' times may move by the clock estimate's change: CoreDNS's sent packets were some of its evidence)
    by_coredns = (before["server_role"] == "coredns").to_numpy()
    later = (after["t_server_out"] - before["t_server_out"])[by_coredns].dropna()
    assert (later >= 0).all() and (later < 1_000_000).all()
    assert len(receive_only.correlation.upstream) == len(full.correlation.upstream)
    assert [(f.code, f.hop, f.count) for f in receive_only.findings] == [(f.code, f.hop, f.count) for f in full.findings]


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"deny-dns-egress", "deny-dns-ingress"}))  # the node sent nothing on there
def test_a_node_that_skips_its_copy_of_what_enters_a_captured_namespace_gives_the_same_traces_and_findings(name):
    """What the lab's capture records with the node skipping what it sends into a veth whose other end is a captured
    namespace (live/capture.py `skip_copies`; the lab captures every namespace on its node, so every node veth's):
    that namespace records the packet a microsecond later, as it arrives. With CoreDNS's namespaces receive-only
    too, the same lookups, servers, replicas, DNAT, upstream exchanges and findings, and no hop read earlier."""
    frame, stats, logs, facts = load_fixture(name)
    sent_by_coredns = ((frame["role"] == "coredns") & (frame["pkt_type"] == "OUTGOING")).to_numpy()
    into_a_namespace = ((frame["role"] == "node") & (frame["pkt_type"] == "OUTGOING")
                        & frame["ifname"].astype(str).str.startswith("veth")).to_numpy()
    assert into_a_namespace.any()
    full = analyze(frame[~sent_by_coredns].reset_index(drop=True), logs, facts, stats)
    skipped = analyze(frame[~sent_by_coredns & ~into_a_namespace].reset_index(drop=True), logs, facts, stats)

    def traces(analysis):
        return analysis.correlation.traces.sort_values(["t_start", "client_port", "dns_id"]).reset_index(drop=True)

    before, after = traces(full), traces(skipped)
    same = SAME_IN_TRACES + ["dnat_at", "seen_at_node", "forwarded_by_node", "served_from", "purpose"]
    pd.testing.assert_frame_equal(before[same], after[same], check_dtype=False, check_categorical=False)
    for column in ("t_server_in", "t_server_out", "t_client_in"):
        moved = (after[column] - before[column]).dropna()
        assert (moved >= 0).all() and (moved < 1_000_000).all(), column
    assert len(skipped.correlation.upstream) == len(full.correlation.upstream)
    assert [(f.code, f.hop, f.count) for f in skipped.findings] == [(f.code, f.hop, f.count) for f in full.findings]
