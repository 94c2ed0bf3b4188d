"""Issue 13: `correlate -o json` is written trace by trace, and is the same text as the whole document."""

import io
import json

import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.report import records
from tests.fixtures import load_fixture


@pytest.mark.parametrize("fixture", ["healthy", "nodelocal-imbalance", "stale-endpoint"])
@pytest.mark.parametrize("chunk", [1, 7, records.TRACES_PER_CHUNK])
def test_streamed_json_is_the_whole_documents_text(monkeypatch, fixture, chunk):
    frame, stats, logs, facts = load_fixture(fixture)
    monkeypatch.setattr(records.trace_record_chunks, "__defaults__", (True, chunk))
    for analysis in (analyze(frame, logs, facts, stats), analyze(None, logs, facts), analyze(frame.iloc[0:0], None, None)):
        out = io.StringIO()
        records.write_analysis_json(analysis, out)
        assert out.getvalue() == json.dumps(records.analysis_record(analysis), indent=1) + "\n"


def test_chunks_never_hold_more_than_their_traces(monkeypatch):
    frame, stats, logs, facts = load_fixture("nodelocal-imbalance")
    analysis = analyze(frame, logs, facts, stats)
    sizes = [len(chunk) for chunk in records.trace_record_chunks(analysis.correlation, size=5)]
    assert max(sizes) == 5 and sum(sizes) == len(analysis.correlation.traces)
