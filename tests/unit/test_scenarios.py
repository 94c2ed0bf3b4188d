"""Scenario files: the shipped ones load; mistakes are named by file, line, field and reason."""

import textwrap
from pathlib import Path

import pytest

from dnscorrelate.cluster.spec import SpecError
from dnscorrelate.scenarios import LinkFault, StopReplicaFault, load_scenario, scenario_paths

SHIPPED = scenario_paths([str(Path(__file__).resolve().parents[2] / "scenarios")])


CILIUM_SHIPPED = {"fqdn-policy-denied", "dns-rule-refused", "dns-proxy-hop"}  # Cilium's own policies: kind with --cni cilium only


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_load(path):
    scenario = load_scenario(path, *(("kind", "cilium") if path.stem in CILIUM_SHIPPED else ()))
    assert scenario.name == path.stem and scenario.queries and scenario.expect.findings


@pytest.mark.parametrize("name", sorted(CILIUM_SHIPPED))
def test_cilium_scenarios_are_refused_on_the_lab_and_on_flannel_with_file_line_and_field(name):
    path = Path(__file__).resolve().parents[2] / "scenarios" / f"{name}.yaml"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "kind: CiliumNetworkPolicy" in text)
    for backend, cni, why in (("lab", "flannel", "the lab enforces NetworkPolicy only"),
                              ("kind", "flannel", "the kind cluster's pod network is flannel")):
        with pytest.raises(SpecError) as err:
            load_scenario(path, backend, cni)
        assert str(err.value).startswith(f"{path}:{line}: faults[0].apply.kind: a CiliumNetworkPolicy needs Cilium: {why}"), str(err.value)
        hubble = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("hubble: true"))
        assert f"\n{path}:{hubble}: hubble: Hubble is part of Cilium" in str(err.value)
    assert load_scenario(path, "kind", None).name == name  # a user's cluster (--context): its API decides


def test_a_cilium_policy_in_the_lab_overlay_is_refused_where_it_cannot_be_made(tmp_path):
    path = write(tmp_path, """
        name: x
        lab:
          manifests:
            - {kind: CiliumClusterwideNetworkPolicy, metadata: {name: p}, spec: {endpointSelector: {}}}
        queries: [{from: demo/mypod, name: a.}]
        expect: {findings: [ok]}
    """)
    with pytest.raises(SpecError, match=r"s\.yaml:5: lab\.manifests\[0\]\.kind: a CiliumClusterwideNetworkPolicy needs Cilium"):
        load_scenario(path)
    assert load_scenario(path, "kind", "cilium").lab.manifests[0].kind == "CiliumClusterwideNetworkPolicy"


def write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_faults_are_picked_by_their_key(tmp_path):
    scenario = load_scenario(write(tmp_path, """
        name: x
        faults:
          - stopReplica: 1
          - link: {from: node-0, to: upstream, loss: 0.5}
        queries: [{from: demo/mypod, name: a.}]
        expect: {findings: [ok]}
    """))
    assert isinstance(scenario.faults[0], StopReplicaFault) and isinstance(scenario.faults[1], LinkFault)
    assert scenario.faults[1].link.loss == 0.5 and scenario.queries[0].client == "dnspython"


def test_every_mistake_is_located(tmp_path):
    path = write(tmp_path, """
        name: Bad Name
        faults:
          - link: {from: node-0, to: upstream}
          - nope: 1
        queries:
          - {from: mypod, name: a., count: lots}
        expect:
          findings: [upstream-unreachable, bogus]
          hop: sideways
    """)
    with pytest.raises(SpecError) as err:
        load_scenario(path)
    lines = str(err.value).splitlines()
    assert any(l.startswith(f"{path}:2: name:") for l in lines)
    assert any(l.startswith(f"{path}:4: faults[0].link:") and "give loss" in l for l in lines)
    assert any(l.startswith(f"{path}:5: faults[1]:") and "exactly one of" in l for l in lines)
    assert any("queries[0].from" in l and "namespace/name" in l for l in lines)
    assert any(l.startswith(f"{path}:7: queries[0].count:") for l in lines)
    assert any("expect.findings[1]" in l for l in lines) and any("expect.hop" in l for l in lines)


def test_lab_overlay_is_checked_like_a_lab_spec(tmp_path):
    with pytest.raises(SpecError, match=r"s.yaml:3: lab.corednsReplica: Extra inputs are not permitted"):
        load_scenario(write(tmp_path, "name: x\nlab:\n  corednsReplica: 3\nqueries: [{from: demo/mypod, name: a.}]\nexpect: {findings: [ok]}\n"))


def test_pods_replicas_hosts_and_objects_a_scenario_names_are_checked_against_its_lab(tmp_path):
    """Issue 13: found at validation, with file, line and field, not after the lab is up."""
    path = write(tmp_path, """
        name: x
        lab: {corednsReplicas: 2}
        faults:
          - stopReplica: 2
          - link: {from: node-0, to: demo/nosuchpod, drop: true}
          - resolvConf: {pod: demo/ghost, text: "nameserver 10.96.0.10"}
          - delete: {kind: Service, namespace: demo, name: nosvc}
        queries:
          - {from: demo/mypod, name: web.}
          - {from: demo/nobody, name: web.}
        expect: {findings: [ok]}
    """)
    with pytest.raises(SpecError) as err:
        load_scenario(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith(f"{path}:5: faults[0].stopReplica: replica 2 does not exist")
    assert lines[1].startswith(f"{path}:6: faults[1].link.to: host 'demo/nosuchpod' is not in the lab")
    assert lines[2].startswith(f"{path}:7: faults[2].resolvConf.pod: pod 'demo/ghost'")
    assert lines[3].startswith(f"{path}:8: faults[3].delete.name: Service demo/nosvc is not in the lab")
    assert lines[4].startswith(f"{path}:11: queries[1].from: pod 'demo/nobody' is not in the lab")


def test_a_pod_applied_by_an_earlier_fault_may_be_named_later(tmp_path):
    scenario = load_scenario(write(tmp_path, """
        name: x
        faults:
          - apply: {kind: Pod, metadata: {name: extra, namespace: demo}, spec: {containers: [{name: c}]}}
          - resolvConf: {pod: demo/extra, text: "nameserver 10.96.0.10"}
        queries: [{from: demo/extra, name: web.}]
        expect: {findings: [ok]}
    """))
    assert scenario.queries[0].from_ == "demo/extra"


def test_a_label_over_63_bytes_is_refused_at_validation(tmp_path):
    path = write(tmp_path, f"""
        name: x
        queries: [{{from: demo/mypod, name: {'a' * 300}.example.}}]
        expect: {{findings: [ok]}}
    """)
    with pytest.raises(SpecError, match=rf"{path}:3: queries\[0\].name: .*not a DNS name a client can send: .*label"):
        load_scenario(path)


def test_a_scenario_kind_cannot_make_fails_validation_there_with_file_line_and_field(tmp_path):
    path = write(tmp_path, """
        name: x
        lab:
          nodeLocalDNS: true
        faults:
          - stopReplica: 1
          - link: {from: node-0, to: upstream, drop: true}
          - upstreamCorefile: ".:53 {}"
        queries: [{from: demo/mypod, name: a.}]
        expect: {findings: [ok]}
    """)
    assert len(load_scenario(path).faults) == 3  # the lab makes all of it
    with pytest.raises(SpecError) as err:
        load_scenario(path, "kind")
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["lab.nodeLocalDNS", "faults[1].link", "faults[2].upstreamCorefile"]
    assert lines[0].startswith(f"{path}:4: ") and lines[1].startswith(f"{path}:7: ") and lines[2].startswith(f"{path}:8: ")
    assert all(line.endswith("(lab only)") for line in lines)


KIND_SHIPPED = {"healthy", "bad-forward-server", "deny-dns-egress", "deny-dns-ingress", "missing-service", "cname-without-a",
                "search-path", "truncated", "slow-coredns", "coredns-acl", "zone-not-served", "stale-endpoint"}


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem not in CILIUM_SHIPPED], ids=[p.stem for p in SHIPPED if p.stem not in CILIUM_SHIPPED])
def test_shipped_scenarios_kind_can_make_load_for_kind_and_the_others_say_why_not(path):
    if path.stem in KIND_SHIPPED:
        assert load_scenario(path, "kind").name == path.stem
    else:
        with pytest.raises(SpecError, match=r"\(lab only\)"):
            load_scenario(path, "kind")
