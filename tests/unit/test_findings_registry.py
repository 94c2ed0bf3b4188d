"""The finding vocabulary is declared once, in dnscorrelate/findings.py, and everything else agrees with it:
the rules emit only declared codes at declared hops, every declared code has a rule, the scenario format accepts
exactly the declared codes and hops, the schema and the README describe them as declared."""

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from dnscorrelate import findings as registry
from dnscorrelate import schema
from dnscorrelate.diagnose import Finding
from dnscorrelate.diagnose.rules import module_name, rules
from dnscorrelate.scenarios import Expect

ROOT = Path(__file__).resolve().parents[2]
DIAGNOSE = ROOT / "dnscorrelate" / "diagnose"


def codes_in_source() -> set[str]:
    """The codes the diagnoser's source passes to finding(...) or Finding(...) as a literal."""
    found = set()
    for path in DIAGNOSE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("finding", "Finding") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_the_rules_emit_exactly_the_declared_codes():
    assert codes_in_source() == set(registry.CODE_NAMES)


def test_every_hop_has_its_rules_module_and_every_module_a_hop():
    modules = {p.stem for p in (DIAGNOSE / "rules").glob("*.py") if p.stem != "__init__"}
    assert modules == {module_name(hop) for hop in registry.HOP_NAMES}
    assert list(rules("CAUSES")) and list(rules("FALLBACKS")) and list(rules("ALERTS")) and list(rules("OWN_QUERIES"))


def test_every_entry_is_whole():
    assert len(set(registry.CODE_NAMES)) == len(registry.CODES)
    for entry in registry.CODES:
        assert entry.meaning and entry.severity in registry.SEVERITIES, entry.code
        assert set(entry.hops) <= set(registry.HOP_NAMES), entry.code


def test_a_finding_refuses_what_the_registry_does_not_declare():
    with pytest.raises(KeyError, match="not declared"):
        Finding("made-up", "pod", "x")
    with pytest.raises(ValueError, match="allows"):
        Finding("dropped-at-node", "upstream", "x")  # its hop is node->coredns
    with pytest.raises(ValueError, match="severity"):
        Finding("nxdomain", "coredns", "x", severity="fatal")
    assert Finding("nxdomain", "upstream", "x").hop == "upstream"  # one of its declared hops


@pytest.mark.parametrize("code", registry.CODE_NAMES)
def test_a_scenario_may_expect_every_code_the_diagnoser_can_emit(code):
    assert Expect(findings=[code]).findings == [code]


def test_a_scenario_may_name_every_hop_and_nothing_else():
    for hop in registry.HOP_NAMES:
        assert Expect(findings=["ok"], hop=hop).hop == hop
    with pytest.raises(ValidationError):
        Expect(findings=["ok"], hop="kernel")
    with pytest.raises(ValidationError):
        Expect(findings=["made-up"])


def test_the_schema_describes_the_declared_hops_and_severities():
    fields = {f.name: f for f in schema.FINDINGS}
    assert all(hop in fields["hop"].doc for hop in registry.HOP_NAMES)
    assert all(s in fields["severity"].doc for s in registry.SEVERITIES)


def test_the_readme_tables_are_the_registry():
    """dnscorrelate/README.md carries the tables `python -m dnscorrelate.findings` prints, unchanged."""
    readme = (ROOT / "dnscorrelate" / "README.md").read_text()
    for table in (registry.hops_markdown(), registry.markdown()):
        assert table in readme, "regenerate the findings tables in dnscorrelate/README.md with: python -m dnscorrelate.findings"


def test_the_diagnoser_orders_findings_as_the_registry_does():
    """Four recorded faults an hour apart in one capture: their findings come in the registry's order."""
    from dnscorrelate import events
    from dnscorrelate.analysis import analyze
    from tests.fixtures import load_fixture

    hour = 3600 * 10**9
    frames = [load_fixture(name)[0] for name in ("truncated", "search-path", "stale-endpoint", "slow-coredns")]
    frame = events.concat([f.assign(ts_ns=f["ts_ns"] + k * hour) for k, f in enumerate(frames)])
    codes = [f.code for f in analyze(frame, None, None).findings]
    assert {"truncated", "search-path-expansion", "coredns-unreachable", "slow-coredns"} <= set(codes), codes
    assert codes == sorted(codes, key=registry.ORDER.__getitem__)
