"""Issue 13, bounded memory: what was trimmed from the tables (copies, the log line's text) changes no trace
and no finding, and the traces table keeps the schema's dtypes (object text, which diagnose's groupbys need)."""

from pathlib import Path

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.analysis import analyze
from dnscorrelate.correlate import correlate
from dnscorrelate.diagnose import diagnose
from dnscorrelate.sources.coredns_log import read_logs
from tests.fixtures import load_fixture

FIXTURES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "fixtures").iterdir() if (p / "lab.json").exists())


def test_no_finding_counts_nothing():
    """A finding is about lookups: none claims zero of them (a groupby over categories nobody used would
    make such groups). `no-lookups` is the one that says there were none."""
    for fixture in FIXTURES:
        frame, stats, logs, facts = load_fixture(fixture)
        for analysis in (analyze(frame, logs, facts, stats), analyze(None, logs, facts)):
            assert all(f.count > 0 for f in analysis.findings if f.code != "no-lookups"), fixture


def test_traces_text_columns_are_the_schemas_objects():
    """diagnose groups the traces table by its text columns; as categoricals, groupby would also yield the
    categories no row has (empty groups). The schema says object, and correlate's tables are what it says."""
    frame, stats, logs, facts = load_fixture("healthy")
    for correlation in (correlate(frame, logs, stats), correlate(None, logs)):
        assert dict(correlation.traces.dtypes.astype(str)) == schema.dtypes(schema.TRACES)
        assert dict(correlation.upstream.dtypes.astype(str)) == schema.dtypes(schema.UPSTREAM)


def test_conform_does_not_copy_columns_of_their_dtype():
    frame = pd.DataFrame({"b": np.arange(3, dtype=np.int64), "a": np.array(["x", "y", "z"], dtype=object), "c": [1, 2, 3]})
    table = [schema.f("a", "object", ""), schema.f("b", "int64", ""), schema.f("c", "int32", "")]
    out = schema.conform(frame, table)
    assert list(out.columns) == ["a", "b", "c"] and str(out["c"].dtype) == "int32" and str(frame["c"].dtype) == "int64"
    assert np.shares_memory(out["b"].to_numpy(), frame["b"].to_numpy())


def test_log_records_keep_no_text_and_traces_find_their_line(tmp_path):
    log = tmp_path / "coredns-0.log"
    log.write_text('[INFO] 10.244.0.4:34114 - 64329 "A IN web.demo.svc.cluster.local. udp 56 false 1232" NOERROR qr,aa,rd 106 0.000324s\n'
                   '[INFO] 10.244.0.4:34115 - 1 "A IN big.example. udp 56 false 1232" NOERROR qr,rd,tc 1232 0.2s\n'
                   '[INFO] 10.244.0.4:34116 - 2 "A IN gone.example. udp 56 false 1232" - - 0 6.00s\n')
    logs = read_logs([str(log)])
    assert "text" not in logs.records.columns and list(logs.records.columns) == schema.names(schema.LOG_RECORDS)
    traces = correlate(None, logs).traces
    assert traces["log_ref"].tolist() == [f"{log}:1", f"{log}:2", f"{log}:3"]
    assert traces["aa"].tolist() == [True, False, False] and traces["tc"].tolist() == [False, True, False]
    assert traces["outcome"].tolist() == ["answered", "answered", "timed-out"] and traces["rcode"].tolist() == ["NOERROR", "NOERROR", ""]
    assert traces["served_from"].tolist() == ["authoritative", "unknown", "unknown"]
    assert len(diagnose(correlate(None, logs))) >= 1
