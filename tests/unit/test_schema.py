"""Every table conforms to its one declaration in dnscorrelate/schema.py, whatever the inputs."""

from pathlib import Path

import pytest

from dnscorrelate import schema
from dnscorrelate.correlate import correlate
from tests.fixtures import load_fixture

ROOT = Path(__file__).resolve().parents[2]


def described(frame):
    return [(name, str(dtype)) for name, dtype in frame.dtypes.items()]


def declared(table):
    return [(c.name, str(schema.empty([c])[c.name].dtype)) for c in table]


@pytest.mark.parametrize("fixture", ["healthy", "stale-endpoint", "truncated", "bad-forward-server"])
@pytest.mark.parametrize("inputs", ["packets and logs", "packets only", "logs only", "nothing"])
def test_traces_and_upstream_have_exactly_the_declared_columns(fixture, inputs):
    frame, _, logs, _ = load_fixture(fixture)
    packets = frame if inputs in ("packets and logs", "packets only") else None
    log_tables = logs if inputs in ("packets and logs", "logs only") else None
    correlation = correlate(packets, log_tables)
    assert inputs == "nothing" or len(correlation.traces) > 0
    assert described(correlation.traces) == declared(schema.TRACES)
    assert described(correlation.upstream) == declared(schema.UPSTREAM)


def test_log_tables_have_the_declared_columns():
    _, _, logs, _ = load_fixture("bad-forward-server")
    assert len(logs.records) and len(logs.errors)
    assert described(logs.records) == declared(schema.LOG_RECORDS)
    assert described(logs.errors) == declared(schema.LOG_ERRORS)


def test_events_keep_their_columns():
    frame, _, _, _ = load_fixture("healthy")
    assert described(frame) == declared(schema.EVENTS)


def test_every_column_is_declared_once_and_explained():
    for name, table in schema.TABLES.items():
        names = [c.name for c in table]
        assert len(names) == len(set(names)), name
        assert all(c.doc for c in table), name
        assert all(c.outputs <= {schema.TABLE, schema.WIDE, schema.JSON, schema.HTML} for c in table), name


@pytest.mark.parametrize("table", ["TRACES", "UPSTREAM", "EVENTS"])
def test_the_docs_tables_are_the_schema(table):
    """dnscorrelate/README.md carries the tables `python -m dnscorrelate.schema` prints, unchanged."""
    assert schema.markdown(schema.TABLES[table]) in (ROOT / "dnscorrelate" / "README.md").read_text(), \
        f"regenerate the {table} table in dnscorrelate/README.md with: python -m dnscorrelate.schema"


def changed(column):
    """Every value of `column` visibly different from before (numbers by 1 ms in ns), keeping its dtype."""
    if column.dtype == bool:
        return ~column
    if column.dtype == object:
        return column.astype(str) + "-changed"
    return column.fillna(0) + 1_000_000


def test_a_traces_json_shows_exactly_the_fields_marked_json():
    from dataclasses import replace

    from dnscorrelate.report.records import trace_records

    frame, _, logs, _ = load_fixture("stale-endpoint")
    correlation = correlate(frame, logs)
    marked = schema.names(schema.TRACES, schema.JSON)
    only_marked = replace(correlation, traces=correlation.traces[marked])
    before = trace_records(only_marked, with_sightings=False)  # reads no unmarked column: KeyError otherwise
    assert before == trace_records(correlation, with_sightings=False)
    for name in marked:
        traces = only_marked.traces.assign(**{name: changed(only_marked.traces[name])})
        assert trace_records(replace(only_marked, traces=traces), with_sightings=False) != before, f"{name} is marked json but not shown"


def test_findings_carry_the_declared_fields():
    from dataclasses import fields

    from dnscorrelate.diagnose import Finding

    assert sorted(f.name for f in fields(Finding) if f.init) == sorted(schema.names(schema.FINDINGS))
