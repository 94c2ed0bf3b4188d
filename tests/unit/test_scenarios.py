"""Scenario files: the shipped ones load; mistakes are named by file, line, field and reason."""

import textwrap
from pathlib import Path

import pytest

from dnscorrelate.cluster.lab.spec import SpecError
from dnscorrelate.scenarios import LinkFault, StopReplicaFault, load_scenario, scenario_paths

SHIPPED = scenario_paths([str(Path(__file__).resolve().parents[2] / "scenarios")])


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_load(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem and scenario.queries and scenario.expect.findings


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
