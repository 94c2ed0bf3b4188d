"""Cilium's own DNS failures diagnosed from evidence recorded on a real Cilium cluster with Hubble (tests/fixtures/
cilium, recorded by tests/fixtures/record_cilium.py from the shipped scenarios): the capture's packets, every
agent's Hubble flows, CoreDNS's logs and the cluster's objects as the API gave them. The faults are not in the
evidence; taking a piece of it away shows which piece each finding rests on."""

import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.cluster.cilium_policy import selector_matches, selects
from dnscorrelate.cluster.model import ClusterModel, FQDNSelector
from tests.fixtures import load_cilium_fixture


def findings_of(frame, stats, logs, facts):
    return analyze(frame, logs, facts, stats).findings


def without_cilium_policies(facts):
    facts.model = ClusterModel(**{**dict(facts.model), "cilium_policies": []})
    return facts


def test_a_dropped_connection_after_an_answered_lookup_names_the_toFQDNs_policy_and_the_name():
    frame, stats, logs, facts = load_cilium_fixture("fqdn-policy-denied")
    [denied] = [f for f in findings_of(frame, stats, logs, facts) if f.code == "fqdn-policy-denied"]
    assert denied.hop == "pod->node" and denied.severity == "error"
    assert "demo/mypod looked up example.com. and got 192.0.2.10" in denied.summary
    assert "CiliumNetworkPolicy demo/egress-example-org-only (toFQDNs matchPattern '*.example.org')" in denied.summary
    assert "POLICY_DENIED" in denied.summary and "matchName: example.com" in denied.summary
    assert denied.evidence["name"] == "example.com." and denied.evidence["addresses"] == ["192.0.2.10"]
    # the lookup itself was answered: nothing is said against DNS
    assert not {"dropped-by-policy", "dropped-in-datapath", "unanswered", "coredns-error"} & {f.code for f in findings_of(frame, stats, logs, facts)}


def test_without_hubbles_drop_there_is_no_fqdn_finding_and_without_the_policy_it_says_none_is_known():
    frame, stats, logs, facts = load_cilium_fixture("fqdn-policy-denied")
    assert "fqdn-policy-denied" not in {f.code for f in findings_of(frame[frame["kind"] != "conn-drop"], stats, logs, facts)}
    [denied] = [f for f in findings_of(frame, stats, logs, without_cilium_policies(facts)) if f.code == "fqdn-policy-denied"]
    assert "no Cilium policy with toFQDNs selects the pod" in denied.summary


def test_refused_by_the_dns_proxy_not_by_coredns_with_the_dns_rule_named():
    frame, stats, logs, facts = load_cilium_fixture("dns-rule-refused")
    found = findings_of(frame, stats, logs, facts)
    [refused] = [f for f in found if f.code == "dns-proxy-refused"]
    assert refused.hop == "dns-proxy" and refused.count == 2
    assert "example.com." in refused.summary and "REFUSED from 10.96.0.10" in refused.summary
    assert "no CoreDNS replica saw the query and no CoreDNS logged it" in refused.summary
    assert "recorded the request DROPPED" in refused.summary
    assert "CiliumNetworkPolicy demo/dns-example-org-only (matchName web.demo.svc.cluster.local, matchPattern '*.example.org')" in refused.summary
    # the proxy's record of the refused name is the same lookup (not a second one, dropped), and CoreDNS is not blamed
    assert not {"coredns-error", "server-error-seen", "dropped-in-datapath", "dropped-by-policy"} & {f.code for f in found}


def test_the_proxy_is_named_from_the_capture_and_the_facts_alone_and_not_without_either():
    frame, stats, logs, facts = load_cilium_fixture("dns-rule-refused")
    captured = frame[frame["ifname"] != "dns-proxy"]  # no Hubble L7 record
    [refused] = [f for f in findings_of(captured, stats, logs, facts) if f.code == "dns-proxy-refused"]
    assert "recorded the request DROPPED" not in refused.summary and "demo/dns-example-org-only" in refused.summary
    codes = {f.code for f in findings_of(captured, stats, logs, without_cilium_policies(facts))}
    assert "dns-proxy-refused" not in codes and codes & {"coredns-error", "server-error-seen"}


def test_time_in_the_proxy_against_time_in_coredns():
    frame, stats, logs, facts = load_cilium_fixture("dns-proxy-hop")
    found = findings_of(frame, stats, logs, facts)
    assert "slow-coredns" in {f.code for f in found}
    timed = [f for f in found if f.code == "dns-proxy-time"]
    assert timed and all(f.hop == "dns-proxy" and "the server took longer" in f.summary for f in timed)
    assert all(f.evidence["proxy_hop_ms"] < 50 < 240 < f.evidence["server_ms"] for f in timed)
    assert "Hubble's record of the proxy gives" in timed[0].summary


@pytest.mark.parametrize("name", ["fqdn-policy-denied", "dns-rule-refused", "dns-proxy-hop"])
def test_a_lookup_through_the_proxy_is_answered_by_one_server_not_two(name):
    """The proxy forwards from the pod's own address and port with the pod's DNS id (transparent mode): CoreDNS's
    answer goes to the proxy, the pod gets the proxy's copy from the VIP. Hubble's record of CoreDNS's answer at the
    pod is not a second server answering."""
    frame, stats, logs, facts = load_cilium_fixture(name)
    analysis = analyze(frame, logs, facts, stats)
    assert "several-servers-answered" not in {f.code for f in analysis.findings}
    proxied = analysis.correlation.sightings
    proxied = set(proxied.loc[(proxied["ifname"] == "dns-proxy").to_numpy(), "trace_id"])
    traces = analysis.correlation.traces
    assert proxied and (traces.loc[traces["trace_id"].isin(proxied), "responders"] <= 1).all()


@pytest.mark.parametrize("pattern, name, covered", [
    ("*", "example.com.", True), ("*.example.org", "a.example.org", True), ("*.example.org", "a.b.example.org", False),
    ("*.example.org", "example.org.", False), ("**.example.org", "a.b.example.org.", True), ("api.*.com", "api.x.com", True),
    ("EXAMPLE.com", "example.com", True), ("example.com", "example.com.evil.", False)])
def test_match_patterns_as_cilium_reads_them(pattern, name, covered):
    assert selector_matches(FQDNSelector(matchPattern=pattern), name) is covered


def test_a_namespaced_policy_selects_in_its_namespace_and_a_clusterwide_one_by_namespace_label():
    from dnscorrelate.cluster.model import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, Pod

    pod = Pod.model_validate({"kind": "Pod", "metadata": {"name": "p", "namespace": "demo", "labels": {"app": "client"}}})
    namespaced = CiliumNetworkPolicy.model_validate({"metadata": {"name": "n", "namespace": "demo"},
                                                     "spec": {"endpointSelector": {"matchLabels": {"k8s:app": "client"}}}})
    elsewhere = CiliumNetworkPolicy.model_validate({"metadata": {"name": "n", "namespace": "other"}, "spec": {}})
    clusterwide = CiliumClusterwideNetworkPolicy.model_validate({"metadata": {"name": "c"}, "spec": {
        "endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "demo"}}}})
    assert selects(namespaced, pod) and not selects(elsewhere, pod) and selects(clusterwide, pod)


def test_from_hubble_and_the_pods_capture_alone_the_proxy_refusal_does_not_claim_coredns_was_watched():
    """Without CoreDNS's sightings or logs the evidence cannot say CoreDNS never saw the query: the proxy's own
    DROPPED record carries the finding, and the summary says what was not watched."""
    from dnscorrelate.schema import ParsedLogs

    frame, stats, logs, facts = load_cilium_fixture("dns-rule-refused")
    unwatched = frame[(frame["role"].astype(str) != "coredns").to_numpy()]
    [refused] = [f for f in findings_of(unwatched, stats, ParsedLogs.none(), facts) if f.code == "dns-proxy-refused"]
    assert "recorded the request DROPPED" in refused.summary
    assert "no CoreDNS replica saw the query" not in refused.summary and "CoreDNS was not watched" in refused.summary
