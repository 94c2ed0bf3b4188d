"""trace's filters, in the spirit of trace_dns: FIELD OP VALUE, all must hold."""

import pytest

from dnscorrelate.correlate import correlate
from dnscorrelate.analysis import analyze
from dnscorrelate.diagnose import EVIDENCE_LIMIT
from dnscorrelate.trace import Filter, FilterError, apply_filters, codes_by_trace, for_client
from tests.fixtures import load_fixture, repeated


@pytest.fixture(scope="module")
def traces():
    frame, stats, logs, _ = load_fixture("search-path")
    return correlate(frame, logs, stats).traces


def names(frame):
    return sorted(set(frame["qname"]))


def test_rcode(traces):
    assert names(apply_filters(traces, [Filter.parse("rcode!=NOERROR")])) == [
        "kubernetes.io.cluster.local.", "kubernetes.io.demo.svc.cluster.local.", "kubernetes.io.svc.cluster.local."]
    assert names(apply_filters(traces, [Filter.parse("rcode==noerror")])) == ["kubernetes.io."]


def test_name_regex_and_type(traces):
    assert names(apply_filters(traces, [Filter.parse(r"name~^kubernetes\.io\.$"), Filter.parse("qtype==AAAA")])) == ["kubernetes.io."]
    assert len(apply_filters(traces, [Filter.parse("name!~svc")])) == 4


def test_latency_with_units(traces):
    slowest = traces["total_ns"].max()
    assert len(apply_filters(traces, [Filter.parse(f"latency>={slowest / 1e6}ms")])) == 1
    assert len(apply_filters(traces, [Filter.parse("latency>10s")])) == 0
    assert len(apply_filters(traces, [Filter.parse("latency<10s")])) == len(traces)


def test_nameserver_matches_the_vip_or_the_dnat_target(traces):
    assert len(apply_filters(traces, [Filter.parse("nameserver==10.96.0.10")])) == len(traces)
    target, server = traces[["dnat_to", "server"]].iloc[0]
    by_replica = apply_filters(traces, [Filter.parse(f"nameserver=={target.split(':')[0]}")])
    assert len(by_replica) >= 1 and set(by_replica["server"]) == {server}
    assert len(apply_filters(traces, [Filter.parse("nameserver==10.9.9.9")])) == 0


@pytest.mark.parametrize("text", ["rcode", "colour==red", "latency~5", "name~(", "latency>fast"])
def test_bad_filters_say_what_is_accepted(traces, text):
    with pytest.raises(FilterError):
        apply_filters(traces, [Filter.parse(text)])


def test_a_pods_view_keeps_every_finding_about_its_lookups_past_the_cited_ones():
    frame, stats, _, facts = load_fixture("deny-dns-egress")
    analysis = analyze(repeated(frame, 30), None, facts, stats)
    pod_ip = analysis.correlation.traces["client_ip"].iloc[0]
    everyone = codes_by_trace(analysis)
    assert len(everyone) == 30 and all(codes == ["dropped-at-node"] for codes in everyone.values())
    mine = for_client(analysis, pod_ip)
    assert [f.code for f in mine.findings] == ["dropped-at-node"]
    assert len(mine.findings[0].covers) == 30 and len(mine.findings[0].evidence["traces"]) == EVIDENCE_LIMIT
    assert for_client(analysis, "10.244.9.9").findings == []  # nobody's lookups there: nothing about them
