"""trace's filters, in the spirit of trace_dns: FIELD OP VALUE, all must hold."""

import pytest

from dnscorrelate.correlate import correlate
from dnscorrelate.trace import Filter, FilterError, apply_filters
from tests.fixtures import load_fixture


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
