"""A live Session on the lab backend: capture in every namespace (and new ones), the CoreDNS logs, and facts
read again after a fault, handed back as one Evidence."""

import time

from dnscorrelate.analysis import analyze
from dnscorrelate.live.session import Session
from dnscorrelate.cluster.lab import netns
from dnscorrelate.cluster.lab.backend import LabBackend
from dnscorrelate.cluster.spec import load_manifests

from .conftest import in_pod
from .test_policies import EXAMPLES


def test_a_session_hands_back_packets_logs_and_facts_after_the_fault(fresh_lab):
    lab = fresh_lab()
    backend = LabBackend(lab)
    assert backend.pod("pod/mypod", "demo").ip == lab.pod("mypod", "demo").ip
    with Session(backend) as session:
        assert session.facts.policies == []
        in_pod(lab, "mypod", "getent", "ahosts", "web")
        backend.apply(load_manifests(EXAMPLES / "deny-egress.yaml"))
        in_pod(lab, "mypod", "dig", "+tries=1", "+timeout=1", "example.com")
        time.sleep(0.2)
    evidence = session.evidence()

    vantages = set(evidence.events["vantage"].astype(str))
    assert {"demo/mypod", "node-0"} <= vantages and vantages & {"kube-system/coredns-0", "kube-system/coredns-1"}
    assert evidence.capture_stats["lost_samples"] == 0 and evidence.capture_stats["packets"] == len(evidence.events)
    assert set(evidence.logs.records["replica"].astype(str)) <= {"coredns-0", "coredns-1"} and len(evidence.logs.records)
    assert [p.metadata.name for p in evidence.facts.policies] == ["deny-egress"]

    findings = analyze(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats).findings
    dropped = [f for f in findings if f.code == "dropped-at-node"]
    assert dropped and "demo/deny-egress" in dropped[0].summary


def test_a_session_captures_in_namespaces_that_appear_while_it_runs(fresh_lab):
    lab = fresh_lab()
    late = f"{lab.topology.prefix}late"
    with Session(LabBackend(lab)) as session:
        before = len(session.vantages)
        netns.add_netns([late])
        time.sleep(0.5)  # the watcher looks every 0.2 s
        assert late in [v.vantage for v in session.vantages.values()]
    assert len(session.vantages) == before + 1
