"""Issue 13: `correlate -o json` written column by column (records.write_analysis_json) is the text the dicts of
trace_records give through json.dumps(indent=1), whatever the values and however the parts are cut."""

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.diagnose import Analysis
from dnscorrelate.report import records
from tests.fixtures import load_fixture

FIXTURES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "fixtures").iterdir() if (p / "lab.json").exists())


def old_text(analysis: Analysis) -> str:
    """The document as it always was: every record as dicts, through json.dumps."""
    return json.dumps(records.analysis_record(analysis), indent=1) + "\n"


def fast_text(analysis: Analysis, **sizes) -> str:
    out = io.StringIO()
    records.write_analysis_json(analysis, out, **sizes)
    return out.getvalue()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fast_json_is_the_old_paths_text_for_every_fixture(fixture):
    frame, stats, logs, facts = load_fixture(fixture)
    for analysis in (analyze(frame, logs, facts, stats), analyze(None, logs, facts)):
        assert fast_text(analysis) == old_text(analysis)


@pytest.mark.parametrize("size,max_sightings", [(1, None), (3, 2), (1000, 5), (1000, 1)])
def test_fast_json_is_the_same_whatever_the_parts(size, max_sightings):
    frame, stats, logs, facts = load_fixture("nodelocal-imbalance")
    analysis = analyze(frame, logs, facts, stats)
    assert fast_text(analysis, size=size, max_sightings=max_sightings) == old_text(analysis)


def test_parts_are_bounded_by_sightings_and_keep_every_trace_once():
    frame, stats, logs, facts = load_fixture("nodelocal-imbalance")
    correlation = analyze(frame, logs, facts, stats).correlation
    parts = list(records.chunk_parts(correlation, size=1000, max_sightings=10))
    ids = np.concatenate([p.traces["trace_id"].to_numpy() for p in parts])
    assert (ids == correlation.traces["trace_id"].to_numpy()).all()
    sightings = [len(p.sightings) for p in parts]
    longest = correlation.sightings[correlation.sightings["trace_id"] >= 0].groupby("trace_id").size().max()
    assert len(parts) > 1 and max(sightings) < 10 + longest and sum(sightings) == int((correlation.sightings["trace_id"] >= 0).sum())


def test_fast_json_writes_odd_values_as_json_dumps_does():
    """Values the recorded labs never hold: missing text (NaN, None), quotes, control characters and
    non-ASCII, NA segments, a float depth with NaN, a sighting categorical with a missing value, floats to round."""
    frame, stats, logs, facts = load_fixture("nodelocal-imbalance")
    analysis = analyze(frame, logs, facts, stats)
    c = analysis.correlation
    assert len(c.traces) > 7 and len(c.upstream)
    upstream = c.upstream.copy()
    upstream.loc[upstream.index[0], "rcode"] = None
    upstream.loc[upstream.index[0], "rtt_ns"] = 999_500
    traces = c.traces.copy()
    traces["qname"] = traces["qname"].astype(object)
    traces.loc[traces.index[0], "qname"] = 'we"ird\\na\nme\x01.é.例.'
    traces.loc[traces.index[1], "answers"] = None
    traces.loc[traces.index[2], "answers"] = np.nan
    traces.loc[traces.index[0], "error"] = "i/o timeout \u2028"
    traces.loc[traces.index[1], "dnat_to"] = "10.0.0.1:53"
    traces.loc[traces.index[1], "icmp"] = "ICMP 3/3 at node-0 about 10.0.0.1:53"
    traces.loc[traces.index[0], "total_ns"] = pd.NA
    traces.loc[traces.index[1], "total_ns"] = 1_234_500  # 1.2345 ms: a tie to round
    traces.loc[traces.index[2], "log_duration_s"] = 0.0012345
    traces.loc[traces.index[3], "log_ref"] = "coredns-0.log:1"
    traces.loc[traces.index[3], "log_rcode"] = "SERVFAIL"
    traces.loc[traces.index[3], "ambiguous"] = True
    traces.loc[traces.index[4:7], "reached"] = pd.Series([1, True, 1.0], index=traces.index[4:7], dtype=object)  # equal keys, three texts
    sightings = c.sightings.copy()
    sightings["depth"] = sightings["depth"].astype(float)
    sightings.loc[sightings.index[1], "depth"] = np.nan
    sightings["vantage"] = sightings["vantage"].cat.add_categories(["unused"])
    sightings.loc[sightings.index[2], "vantage"] = np.nan
    sightings.loc[sightings.index[3], "latency_ns"] = 1_500_500
    odd = replace(analysis, correlation=replace(c, traces=traces, sightings=sightings, upstream=upstream))
    assert fast_text(odd, size=2, max_sightings=3) == old_text(odd)
    assert json.loads(fast_text(odd))["traces"][0]["qname"] == 'we"ird\\na\nme\x01.é.例.'


def test_fast_json_of_nothing():
    analysis = analyze(None, None, None)
    assert fast_text(analysis) == old_text(analysis)
