"""HTML reports: self-contained, and every name from packets or logs is escaped."""

import re

import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.report.html import render_report, service_of
from tests.fixtures import HERE as FIXTURES, load_fixture


def report_of(name, **kwargs):
    frame, stats, logs, facts = load_fixture(name)
    return render_report(analyze(frame, logs, facts, stats), name, **kwargs)


def test_report_is_self_contained():
    html = report_of("stale-endpoint")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "<svg" in html and 'class="waterfall"' in html and "coredns-unreachable" in html


def test_names_from_packets_are_escaped():
    frame, stats, logs, facts = load_fixture("healthy")
    hostile = '<script>alert("x")</script>.example.com.'
    frame["qname"] = frame["qname"].cat.add_categories([hostile])
    frame.loc[frame["qname"] == "example.com.", "qname"] = hostile
    html = render_report(analyze(frame, logs, facts, stats), "t")
    assert hostile not in html and "&lt;script&gt;alert(" in html


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if (p / "events.parquet").exists()))
def test_every_recorded_fault_renders(name):
    html = report_of(name)
    assert html.count('class="waterfall"') >= 1 and "</html>" in html


def test_service_names():
    assert service_of("x.svc.cluster.local.") == "" and service_of("svc.cluster.local.") == ""
    assert service_of("web.demo.svc.cluster.local.") == "demo/web"
    assert service_of("web-0.web-headless.demo.svc.cluster.local.") == "demo/web-headless"
    assert service_of("example.com.") == ""


def test_wide_lines_indent_upstream_hops_even_beside_icmp_errors():
    """ICMP error rows make the hops' depth a float column; `trace -o wide` still indents by it."""
    from dnscorrelate.report.records import trace_records
    from dnscorrelate.report.text import hop_lines

    frame, stats, logs, facts = load_fixture("bad-forward-server")
    records = trace_records(analyze(frame, logs, facts, stats).correlation)
    upstream = next(r for r in records if any(h["depth"] == 1 for h in r["hops"]))
    lines = hop_lines(upstream)
    assert len(lines) == len(upstream["hops"])
    assert any(line.startswith(" " * 8 + "+") for line in lines) and any(line.startswith(" " * 6 + "+") for line in lines)


def test_trace_lines_read_only_the_fields_marked_wide():
    """`trace pod/NAME`'s line reads only TRACES fields marked wide, its -o wide hop lines only hop fields marked wide."""
    from collections import namedtuple

    from dnscorrelate import schema
    from dnscorrelate.report.records import trace_records
    from dnscorrelate.report.text import hop_lines, trace_line

    frame, stats, logs, facts = load_fixture("stale-endpoint")
    correlation = analyze(frame, logs, facts, stats).correlation
    wide = schema.names(schema.TRACES, schema.WIDE)
    Row = namedtuple("Row", wide)
    hop_fields = set(schema.names(schema.EVENTS + schema.HOP_FIELDS, schema.WIDE))
    for trace, record in zip(correlation.traces.itertuples(index=False), trace_records(correlation)):
        assert trace_line(Row(*(getattr(trace, name) for name in wide)), ["x"]) == trace_line(trace, ["x"])
        only_wide = {**record, "hops": [{k: v for k, v in h.items() if k in hop_fields} for h in record["hops"]]}
        assert hop_lines(only_wide) == hop_lines(record)
    assert any(h["kind"] == "icmp-error" for r in trace_records(correlation) for h in r["hops"])


def test_a_scenario_that_could_not_run_is_a_record_with_its_error_and_what_it_lacks():
    from dnscorrelate.report.records import scenario_record
    from dnscorrelate.runner import ScenarioResult
    from dnscorrelate.scenarios import load_scenario

    record = scenario_record(ScenarioResult(load_scenario("scenarios/healthy.yaml"), error="LabError: no root"))
    assert (record["name"], record["passed"], record["error"], record["missing"]) == ("healthy", False, "LabError: no root", ["ok"])
    assert record["traces"] == [] and record["stats"]["queries"] == 0 and record["backend"] == "lab"
