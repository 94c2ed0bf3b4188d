"""Issue 22 item 1: nodes' clocks estimated from the lookups that cross them, and every sighting put on one time
line before stitching (correlate/clocks.py).

The recorded labs run on one machine, one clock. A second node's clock is made here by a known skew: the CoreDNS
replicas and the upstream of a recording are given to `node-b` (the client pod and the node that routes it stay
on `node-a`), and node-b's sightings are read `SKEW` later or earlier, as a node whose clock is off would time
them. The skew is then recovered from the crossings alone, and the traces are those of the unskewed recording.
(The kind test, an agent's clock shifted by a test-only option, is tests/cluster/test_clocks.py.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dnscorrelate.correlate import correlate
from dnscorrelate.correlate.clocks import Clocks, cross_node_segments
from tests.fixtures import load_fixture

SEGMENTS = ["to_server_ns", "server_ns", "return_ns", "total_ns", "upstream_rtt_ns"]


def server_side(frame: pd.DataFrame) -> np.ndarray:
    vantage = frame["vantage"].astype(str)
    return (vantage.str.startswith("kube-system/coredns") | (vantage == "upstream")).to_numpy()


def skewed(frame: pd.DataFrame, skew_ns: int) -> pd.DataFrame:
    """The recording as two nodes would time it: node-b's clock `skew_ns` ahead of node-a's, each event naming its node."""
    far = server_side(frame)
    out = frame.assign(ts_ns=frame["ts_ns"].to_numpy() + np.where(far, skew_ns, 0),
                       node=pd.Categorical(np.where(far, "node-b", "node-a")))
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def path_of(correlation, trace_id: int) -> list[tuple[str, bool]]:
    seen = correlation.sightings
    mine = seen[(seen["trace_id"] == trace_id).to_numpy() & (seen["kind"].astype(str) == "dns").to_numpy()]
    return list(zip(mine["vantage"].astype(str), mine["qr"].astype(bool)))


@pytest.mark.parametrize("fixture", ["healthy", "nodelocal-imbalance", "slow-upstream"])
@pytest.mark.parametrize("skew_ns", [5_000_000, -3_000_000])
def test_a_skewed_node_is_recovered_within_its_bound_and_the_traces_are_the_recordings(fixture, skew_ns):
    frame, stats, logs, _ = load_fixture(fixture)
    truth = correlate(frame, logs, stats)
    fixed = correlate(skewed(frame, skew_ns), logs, stats)
    clocks = fixed.stats["clocks"]
    estimate, bound = clocks["nodes"]["node-b"]["offset_ms"] * 1e6, clocks["nodes"]["node-b"]["bound_ms"] * 1e6
    assert clocks["reference"] == "node-a" and clocks["nodes"]["node-b"]["crossings"] > 0
    assert abs(estimate - skew_ns) <= bound + 1e3 and bound < 1e6  # within its stated bound (± the 1 µs of rounding to ms)
    assert len(fixed.traces) == len(truth.traces)
    assert (fixed.traces["outcome"].to_numpy() == truth.traces["outcome"].to_numpy()).all()
    for trace_id in truth.traces["trace_id"]:
        assert path_of(fixed, trace_id) == path_of(truth, trace_id), f"trace {trace_id}: sightings out of order"
    allowed = fixed.traces["clock_bound_ns"].fillna(0).astype(float).to_numpy()
    for segment in SEGMENTS:
        got, true = fixed.traces[segment].astype("Float64"), truth.traces[segment].astype("Float64")
        shown = got.notna().to_numpy()
        assert (abs(got[shown] - true[shown]).to_numpy(dtype=float) <= allowed[shown] + 2e3).all(), segment
        assert (~shown <= (true.isna().to_numpy() | (true.abs().to_numpy(dtype=float, na_value=0) < allowed))).all(), \
            f"{segment} left out though longer than its bound"
    assert any(w.startswith("clocks: nodes put on node-a's time line") for w in fixed.warnings)


def test_without_knowing_the_nodes_the_same_skew_breaks_the_traces():
    """What the correction is for: merged by each node's own clock, a 5 ms skew cuts lookups in two."""
    frame, stats, logs, _ = load_fixture("healthy")
    truth = correlate(frame, logs, stats)
    merged = correlate(skewed(frame, 5_000_000).drop(columns="node"), logs, stats)
    assert len(merged.traces) != len(truth.traces) and "clocks" not in merged.stats


def test_the_nodes_can_come_from_the_facts_instead_of_the_events():
    frame, stats, logs, _ = load_fixture("healthy")
    events = skewed(frame, 5_000_000)
    nodes = dict(zip(events["vantage"].astype(str), events["node"].astype(str)))
    fixed = correlate(events.drop(columns="node"), logs, stats, nodes=nodes)
    assert abs(fixed.stats["clocks"]["nodes"]["node-b"]["offset_ms"] - 5.0) <= fixed.stats["clocks"]["nodes"]["node-b"]["bound_ms"] + 1e-3


def test_a_segment_shorter_than_the_clock_bound_is_left_out_not_a_false_number():
    traces = pd.DataFrame({"client_vantage": ["demo/a", "demo/a", "demo/a"], "server": ["kube-system/coredns-0", "kube-system/coredns-0", "demo/a"],
                           "to_server_ns": pd.array([20_000, 3_000_000, 15_000], dtype="Int64"),
                           "return_ns": pd.array([2_500_000, 10_000, 9_000], dtype="Int64")})
    clocks = Clocks("node-a", {"node-a": (0, 0), "node-b": (4_000_000, 1_000_000)}, {"node-a": 3, "node-b": 3})
    out, warnings = cross_node_segments(traces, clocks, {"demo/a": "node-a", "kube-system/coredns-0": "node-b"})
    assert out["to_server_ns"].tolist()[:2] == [pd.NA, 3_000_000] and out["return_ns"].tolist()[:2] == [2_500_000, pd.NA]
    assert out["to_server_ns"].iloc[2] == 15_000 and pd.isna(out["clock_bound_ns"].iloc[2])  # one node: nothing to doubt
    assert out["clock_bound_ns"].iloc[0] == 1_000_000
    assert any("2 lookups cross nodes whose clocks agree only to within ±1.000 ms" in w for w in warnings)
    assert any("node-b +4.000 ms ±1.000" in w for w in warnings)


def test_nodes_that_saw_queries_and_no_response_at_all_correlate_without_a_clock_estimate():
    """A policy dropping every query (deny-dns-ingress on kind): two nodes, queries only; no exchange bounds the
    clocks, and correlation goes on (it raised KeyError 'r' before)."""
    frame, stats, logs, _ = load_fixture("healthy")
    queries_only = skewed(frame, 5_000_000)
    queries_only = queries_only[~queries_only["qr"].astype(bool).to_numpy()].reset_index(drop=True)
    fixed = correlate(queries_only, logs, stats)
    assert len(fixed.traces) > 0 and (fixed.traces["outcome"].astype(str) != "answered").all()


def test_a_replicas_log_lines_are_shifted_by_the_offset_of_the_node_that_wrote_them():
    """CoreDNS's lines are timed by the clock of the node it runs on: put on the reference's time line with that
    node's sightings, they land where the unskewed recording has them (to within the bound), not `skew` away."""
    frame, stats, logs, _ = load_fixture("slow-upstream")
    skew = 7_000_000
    skewed_logs = replace(logs, records=logs.records.assign(ts_ns=logs.records["ts_ns"] + skew),
                          errors=logs.errors.assign(ts_ns=logs.errors["ts_ns"] + skew))
    truth = correlate(frame, logs, stats)
    fixed = correlate(skewed(frame, skew), skewed_logs, stats)
    bound = fixed.stats["clocks"]["nodes"]["node-b"]["bound_ms"] * 1e6
    assert len(truth.logs) > 0 and bound < skew / 2
    moved = (fixed.logs["ts_ns"] - truth.logs["ts_ns"]).astype(float).abs()
    assert (moved <= bound + 1e3).all(), moved.max()
    assert (fixed.logs["trace_id"] >= 0).sum() == (truth.logs["trace_id"] >= 0).sum()
    if len(truth.errors):
        assert ((fixed.errors["ts_ns"] - truth.errors["ts_ns"]).astype(float).abs() <= bound + 1e3).all()


def replicas_moved_to(facts, node: str):
    """The facts with the CoreDNS replicas on `node`: the recording's lookups then cross two nodes by the facts."""
    pods = [p.model_copy(update={"spec": p.spec.model_copy(update={"nodeName": node})}) if p.key.startswith("kube-system/coredns") else p
            for p in facts.model.pods]
    return replace(facts, model=facts.model.model_copy(update={"pods": pods}))


def test_a_capture_one_clock_timed_is_not_corrected_whatever_nodes_the_facts_name():
    """A capture on this machine times the namespaces of every node by one clock (`one_clock` in its stats):
    offsets estimated between the nodes its facts name would be noise within their bound, and shifting one node
    against a vantage on none (the upstream) reordered a masqueraded hop on kind. From files of several nodes
    (no such stat) the facts' nodes are corrected as before."""
    from dnscorrelate.analysis import analyze

    frame, stats, logs, facts = load_fixture("healthy")
    two_nodes = replicas_moved_to(facts, "node-1")
    truth = analyze(frame, logs, facts, stats).correlation
    assert "clocks" in analyze(frame, logs, two_nodes, stats).correlation.stats
    one_clock = analyze(frame, logs, two_nodes, {**stats, "one_clock": 1}).correlation
    assert "clocks" not in one_clock.stats
    for trace_id in truth.traces["trace_id"]:
        assert path_of(one_clock, trace_id) == path_of(truth, trace_id)
