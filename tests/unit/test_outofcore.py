"""Issue 22, item 3: a capture directory (one Parquet file per node) correlated out of core (correlate/outofcore.py)
gives the in-memory path's traces, segments and findings; the per-node writer; bad directories said plainly.

Every recorded lab is made a two-node capture as test_clocks makes it (the CoreDNS replicas and the upstream
timed by node-b, 4 ms ahead; the client pod and its node by node-a), written per node with the writer
`capture --agent -o DIR/` uses, and correlated both ways: every file in one pandas frame (today's path), and
out of core in parts of a few events each, so that every lookup's sightings must be gathered from both
nodes' files into its part."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dnscorrelate import events
from dnscorrelate.analysis import analyze, analyze_files
from dnscorrelate.cli import main
from dnscorrelate.errors import EventsError
from tests.fixtures import HERE, load_fixture
from tests.unit.test_clocks import skewed

pytest.importorskip("duckdb", reason="duckdb is a dependency of the out-of-core path (pyproject.toml): pip install -e .")

FIXTURES = sorted(p.name for p in HERE.iterdir() if (p / "events.parquet").exists())
# ns since the epoch: today's path rounds a leg's response times to float64 (256 ns steps near 2026) when any leg
# in its frame is unanswered (correlate/columns.values_at); a part without one keeps them exact
TIME_COLUMNS = {"t_start", "t_server_in", "t_server_out", "t_client_in", "to_server_ns", "server_ns", "return_ns", "total_ns",
                "server_self_ns", "upstream_wait_ns", "upstream_rtt_ns", "client_latency_ns", "clock_bound_ns"}
ROUNDING_NS = 256
LOG_LINE = {"log_rcode", "log_duration_s", "log_ref"}
ASKED_ANOTHER_QUESTION = {"cname-without-a"}  # the one difference, and on purpose: see below
OUT_OF_CORE_STATS = ("parts", "largest_part", "parts_cut_by_time", "slice_edge_traces", "duckdb_retries")  # how it was cut, which memory has not


def capture_dir(tmp_path, fixture: str, skew_ns: int = 4_000_000):
    frame, stats, logs, facts = load_fixture(fixture)
    directory = tmp_path / fixture
    writer = events.NodeParquetDir(directory)
    two_nodes = skewed(frame, skew_ns)
    for start in range(0, len(two_nodes), 10):  # as it streams: a few rows at a time
        writer.write(two_nodes.iloc[start:start + 10])
    writer.close(stats)
    return directory, logs, facts


def both_ways(directory, logs, facts, part_rows: int):
    frame, stats = events.load_dir(directory)
    in_memory = analyze(frame, logs, facts, stats)
    out_of_core = analyze_files(events.capture_files(directory), logs, facts, events.capture_dir_stats(directory), part_rows=part_rows)
    return in_memory, out_of_core


def as_text(column: pd.Series) -> list[str]:
    return column.astype(object).where(column.notna(), None).astype(str).tolist()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_out_of_core_gives_the_in_memory_traces_segments_and_findings(tmp_path, fixture):
    directory, logs, facts = capture_dir(tmp_path, fixture)
    rows = sum(pq.read_metadata(p).num_rows for p in directory.glob("*.parquet"))
    part_rows = min(8, max(1, rows // 2))
    mem, ooc = both_ways(directory, logs, facts, part_rows)
    a, b = mem.correlation.traces.reset_index(drop=True), ooc.correlation.traces.reset_index(drop=True)
    assert ooc.correlation.stats["parts"] == -(-rows // part_rows) > 1  # really in parts
    assert len(a) == len(b) > 0
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        if column in TIME_COLUMNS:
            x, y = a[column].astype("Float64"), b[column].astype("Float64")
            assert (x.isna() == y.isna()).all(), column
            assert ((x - y).abs().fillna(0) <= ROUNDING_NS).all(), column
        elif column in LOG_LINE and fixture in ASKED_ANOTHER_QUESTION:
            continue  # below
        else:
            assert as_text(a[column]) == as_text(b[column]), column
    if fixture in ASKED_ANOTHER_QUESTION:
        # CoreDNS logs its own lookup of a CNAME's target with the client's address, port and id: in memory the
        # nearest such line joins the client's trace whatever it asked; in a part, only lines of its question can
        differs = [i for i in range(len(a)) if as_text(a["log_ref"])[i] != as_text(b["log_ref"])[i]]
        assert differs
        for i in differs:
            line = int(as_text(b["log_ref"])[i].rsplit(":", 1)[1])
            record = logs.records[logs.records["line_no"] == line].iloc[0]
            assert (str(record["qname"]), str(record["qtype"])) == (b["qname"][i], b["qtype"][i])
    exchange = ["trace_id", "depth", "from", "server", "server_addr", "dns_id", "proto", "rcode", "answered", "ambiguous"]
    upstream = [sorted(map(tuple, c.upstream[exchange].astype(str).to_numpy().tolist())) for c in (mem.correlation, ooc.correlation)]
    assert upstream[0] == upstream[1]  # the same exchanges for the same traces (leg ids are each part's own)
    def said(findings):  # each finding whole; where the log line differs (below), all but the log lines it cites
        return [(f.code, f.hop, f.count, f.severity, f.summary,
                 {k: v for k, v in f.evidence.items() if not (fixture in ASKED_ANOTHER_QUESTION and k == "log_lines")}) for f in findings]

    assert said(mem.findings) == said(ooc.findings)
    stats_b = {k: v for k, v in ooc.correlation.stats.items() if k not in OUT_OF_CORE_STATS}
    if fixture in ASKED_ANOTHER_QUESTION:  # the CNAME target's line, joined to the client's trace in memory only
        stats_b["log_records_unmatched"] -= 1
    assert mem.correlation.stats == stats_b  # the clocks' offsets and bounds included: estimated over every event in SQL
    own = [w for w in ooc.correlation.warnings if w.startswith("out of core:")]
    larger = [w for w in own if w.startswith("out of core: one part held")]  # a part larger than asked: said
    assert bool(larger) == (ooc.correlation.stats["largest_part"] > 2 * part_rows)
    edge = [w for w in own if "near the end of the slice" in w]  # unanswered lookups a cut part kept: said with their count
    assert bool(edge) == bool(ooc.correlation.stats.get("slice_edge_traces"))
    assert mem.correlation.warnings == [w for w in ooc.correlation.warnings if w not in own]
    if fixture not in ASKED_ANOTHER_QUESTION:
        assert as_text(mem.correlation.logs["trace_id"]) == as_text(ooc.correlation.logs["trace_id"])


def test_the_skew_is_recovered_by_the_first_pass(tmp_path):
    directory, logs, facts = capture_dir(tmp_path, "slow-upstream", skew_ns=-3_000_000)
    _, ooc = both_ways(directory, logs, facts, part_rows=10)
    node_b = ooc.correlation.stats["clocks"]["nodes"]["node-b"]
    assert abs(node_b["offset_ms"] + 3.0) <= node_b["bound_ms"] + 1e-3 and node_b["crossings"] > 0


def test_the_writer_makes_one_file_per_node_as_it_streams_with_a_manifest(tmp_path):
    frame, stats, _, _ = load_fixture("healthy")
    two_nodes = skewed(frame, 1_000_000)
    writer = events.NodeParquetDir(tmp_path / "cap")
    writer.write(two_nodes.iloc[:40])
    partial = sorted(p.name for p in (tmp_path / "cap").iterdir())
    assert partial == [".node-a.parquet.partial", ".node-b.parquet.partial"]  # written as it comes, no file without a footer shown
    writer.write(two_nodes.iloc[40:])
    writer.close({**stats, "nodes": {"node-a": {"lost_samples": 2}, "node-b": {"lost_samples": 0}}})
    names = sorted(p.name for p in (tmp_path / "cap").iterdir())
    assert names == ["manifest.json", "node-a.parquet", "node-b.parquet"]
    manifest = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert {f["node"]: f["rows"] for f in manifest["files"].values()} == dict(two_nodes["node"].astype(str).value_counts())
    assert manifest["files"]["node-a.parquet"]["row_groups"] == 2
    node_a, node_a_stats = events.load(tmp_path / "cap" / "node-a.parquet")
    assert set(node_a["node"].astype(str)) == {"node-a"} and node_a_stats == {"lost_samples": 2}
    whole, whole_stats = events.load_dir(tmp_path / "cap")
    assert len(whole) == len(frame) and whole["ts_ns"].is_monotonic_increasing and whole_stats["nodes"]["node-a"]["lost_samples"] == 2


def invoke(*argv):
    return CliRunner().invoke(main, list(argv))


def test_a_directory_without_parquet_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EventsError, match=f"{tmp_path}: no Parquet file"):
        events.capture_files(tmp_path)
    result = invoke("correlate", "--events", str(tmp_path))
    assert result.exit_code == 2 and "no Parquet file" in result.output and "Traceback" not in result.output


def test_a_file_with_a_wrong_field_is_named_with_the_field(tmp_path):
    directory, _, _ = capture_dir(tmp_path, "healthy")
    table = pq.read_table(directory / "node-b.parquet")
    table = table.set_column(table.schema.get_field_index("dns_id"), "dns_id", pa.array(np.array(["x"] * len(table), dtype=object)))
    pq.write_table(table, directory / "node-b.parquet")
    result = invoke("correlate", "--events", str(directory))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{directory / 'node-b.parquet'}: field `dns_id` is string, expected int32" in " ".join(result.output.split())


def test_a_file_missing_a_field_or_not_parquet_is_named(tmp_path):
    directory, _, _ = capture_dir(tmp_path, "healthy")
    table = pq.read_table(directory / "node-a.parquet").drop_columns(["qname"])
    pq.write_table(table, directory / "node-a.parquet")
    with pytest.raises(EventsError, match="node-a.parquet: field `qname` is missing"):
        events.capture_files(directory)
    (directory / "node-a.parquet").write_text("not parquet")
    with pytest.raises(EventsError, match="node-a.parquet: cannot read it as Parquet"):
        events.capture_files(directory)


def test_correlate_events_dir_prints_traces_and_findings(tmp_path):
    directory, _, _ = capture_dir(tmp_path, "healthy")
    result = invoke("correlate", "--events", str(directory), "-o", "json")
    assert result.exit_code == 0, result.output
    assert '"traces"' in result.output


def test_correlate_events_dir_past_a_window_prints_the_cited_traces_the_whole_counts_and_a_report(tmp_path, monkeypatch):
    from dnscorrelate.correlate import outofcore
    from tests.fixtures import repeated

    frame, stats, _, _ = load_fixture("slow-upstream")
    writer = events.NodeParquetDir(tmp_path / "fleet")
    writer.write(skewed(repeated(frame, 20), 4_000_000))
    writer.close(stats)
    monkeypatch.setattr(outofcore, "WINDOW_LOOKUPS", 25)
    report, written = tmp_path / "report.html", tmp_path / "traces.parquet"
    result = invoke("correlate", "--events", str(tmp_path / "fleet"), "-o", "json", "--report", str(report), "--traces-out", str(written))
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    assert said["stats"]["windows"] == -(-said["stats"]["traces"] // 25) > 1
    assert 0 < len(said["traces"]) < said["stats"]["traces"]  # the cited ones
    cited = {t for f in said["findings"] for t in f["evidence"]["traces"]}
    assert cited == {t["id"] for t in said["traces"]}
    assert [f["code"] for f in said["findings"]] == ["upstream-slow"] and "windows said this" in said["findings"][0]["summary"]
    assert any("lookups diagnosed in" in w for w in said["warnings"])
    assert "upstream-slow" in report.read_text()
    # every lookup's trace, as one diagnosis in memory makes them, in the file
    every = pd.read_parquet(written)
    assert said["stats"]["traces_written"] == len(every) == said["stats"]["traces"]
    whole, whole_stats = events.load_dir(tmp_path / "fleet")
    at_once = analyze(whole, None, None, whole_stats).correlation.traces
    columns = ["trace_id", "client_vantage", "qname", "qtype", "outcome", "server", "rcode"]
    assert every[columns].astype(str).values.tolist() == at_once[columns].astype(str).values.tolist()
    shown = pd.DataFrame(said["traces"]).set_index("id")
    assert (every.set_index("trace_id").loc[shown.index, "qname"] == shown["qname"]).all()


def test_traces_out_of_an_events_file_is_its_traces_and_a_missing_folder_is_named(tmp_path):
    frame, stats, _, _ = load_fixture("healthy")
    events.save(frame, tmp_path / "events.parquet", stats)
    written = tmp_path / "traces.parquet"
    result = invoke("correlate", "--events", str(tmp_path / "events.parquet"), "-o", "json", "--traces-out", str(written))
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    every = pd.read_parquet(written)
    assert every["trace_id"].tolist() == [t["id"] for t in said["traces"]] and len(every) > 0
    assert every["qname"].tolist() == [t["qname"] for t in said["traces"]]
    refused = invoke("correlate", "--events", str(tmp_path / "events.parquet"), "--traces-out", str(tmp_path / "no" / "t.parquet"))
    assert refused.exit_code != 0 and "--traces-out" in refused.output and "does not exist" in refused.output
    assert "Traceback" not in refused.output


class RecordedSession:
    """A stand-in for a live Session over the node agents: the recorded events handed out a few rows per drain."""

    def __init__(self, frame, stats):
        self.pieces = [frame.iloc[k:k + 25] for k in range(0, len(frame), 25)]
        self.stats = stats
        self.stopped = False

    def drain_events(self, last=False):
        assert not last or self.stopped
        if last:  # whatever the capture held at its end
            rest, self.pieces = self.pieces, []
            return events.concat(rest)
        return self.pieces.pop(0) if self.pieces else events.empty_events()

    def stop(self):
        self.stopped = True


def test_capture_to_a_directory_saves_each_node_and_the_facts_that_correlate_reads_back(tmp_path, monkeypatch):
    from dnscorrelate import cli

    frame, stats, _, facts = load_fixture("slow-upstream")
    two_nodes = skewed(frame, 2_000_000)
    session = RecordedSession(two_nodes, {**stats, "nodes": {"node-a": {"lost_samples": 0}, "node-b": {"lost_samples": 0}}})
    monkeypatch.setattr(cli, "STREAM_EVERY_S", 0.0)
    cli.capture_to_dir(session, type("Backend", (), {"facts": lambda self: facts})(), str(tmp_path / "cap") + "/", duration=0.05)
    names = sorted(p.name for p in (tmp_path / "cap").iterdir())
    assert names == ["Corefile", "cluster.yaml", "manifest.json", "node-a.parquet", "node-b.parquet"]
    from dnscorrelate.analysis import from_files

    saved = from_files(str(tmp_path / "cap"), [])  # no --manifests: the directory's own facts name the servers
    assert (saved.correlation.traces["server"].astype(str).str.startswith("kube-system/coredns")).any()
    assert "clocks" in saved.correlation.stats and saved.correlation.stats["traces"] == len(analyze(two_nodes, None, facts).correlation.traces)


def test_capture_refuses_a_directory_that_holds_events_already(tmp_path):
    directory, _, _ = capture_dir(tmp_path, "healthy")
    result = invoke("capture", "-o", str(directory) + "/")
    assert result.exit_code == 2 and "holds Parquet files already" in result.output and "Traceback" not in result.output


def test_a_dropped_connection_reaches_the_diagnosis_out_of_core_as_in_memory(tmp_path):
    """Hubble's drops on other ports (`conn-drop` rows, no question) land in some part; the join carries them to
    the diagnosis, so a toFQDNs drop is named out of core as in memory (they were lost when parts were joined)."""
    from tests.fixtures import load_cilium_fixture

    frame, stats, logs, facts = load_cilium_fixture("fqdn-policy-denied")
    assert (frame["kind"] == "conn-drop").any()
    writer = events.NodeParquetDir(tmp_path / "cilium")
    writer.write(frame)
    writer.close(stats)
    in_memory, out_of_core = both_ways(tmp_path / "cilium", logs, facts, part_rows=8)
    assert len(out_of_core.correlation.connection_drops) == len(in_memory.correlation.connection_drops) > 0
    assert out_of_core.correlation.stats["connection_drops"] == in_memory.correlation.stats["connection_drops"]
    codes = [f.code for f in out_of_core.findings]
    assert "fqdn-policy-denied" in codes and codes == [f.code for f in in_memory.findings]


def test_a_part_too_busy_to_hold_is_cut_by_time_and_gives_the_in_memory_traces(tmp_path):
    """Issue 22 item 3's memory bound: a capture that asks the same few questions all day puts them in one part
    whatever the hash; that part is cut again by time, each slice read with a margin, and each lookup kept by the
    slice it started in. Here the healthy recording is repeated 12 times, 40 s apart (its clients' keys start new
    lookups then, as in memory): the busiest part is cut, no slice holds more than a few repetitions, and the
    traces, findings and counts are the in-memory path's."""
    frame, stats, logs, facts = load_fixture("healthy")
    two_nodes = skewed(frame, 4_000_000)
    gap = 40 * 10**9
    copies = 12
    directory = tmp_path / "day"
    writer = events.NodeParquetDir(directory)
    for k in range(copies):
        writer.write(two_nodes.assign(ts_ns=two_nodes["ts_ns"] + k * gap))
    writer.close(stats)
    shifted = lambda table: pd.concat([table.assign(ts_ns=table["ts_ns"] + k * gap) for k in range(copies)], ignore_index=True)
    from dataclasses import replace

    logs = replace(logs, records=shifted(logs.records), errors=shifted(logs.errors))
    part_rows = 2 * len(frame)
    mem, ooc = both_ways(directory, logs, facts, part_rows)
    got = ooc.correlation.stats
    assert got["parts_cut_by_time"] >= 1 and got["slice_edge_traces"] == 0
    assert got["largest_part"] <= 3 * len(frame) < copies * len(frame) / 2  # a slice, not the busy part
    assert not [w for w in ooc.correlation.warnings if w.startswith("out of core:")]
    a, b = mem.correlation.traces.reset_index(drop=True), ooc.correlation.traces.reset_index(drop=True)
    assert len(a) == len(b) == copies * len(correlate_once(frame, logs, stats))
    for column in ("trace_id", "qname", "client_ip", "client_port", "outcome", "rcode", "server", "log_ref"):
        assert as_text(a[column]) == as_text(b[column]), column
    for column in ("t_start", "total_ns", "to_server_ns"):
        assert ((a[column].astype("Float64") - b[column].astype("Float64")).abs().fillna(0) <= ROUNDING_NS).all(), column
    assert [(f.code, f.hop, f.count) for f in mem.findings] == [(f.code, f.hop, f.count) for f in ooc.findings]
    assert mem.correlation.stats == {k: v for k, v in got.items() if k not in OUT_OF_CORE_STATS}


def correlate_once(frame, logs, stats):
    from dnscorrelate.correlate import correlate

    return correlate(frame, None, stats).traces


def test_a_busy_name_asked_by_many_clients_at_once_is_cut_along_its_lookups_not_by_a_fixed_margin(tmp_path):
    """The dense case, a busy name on a big cluster (millions of its events a second): any fixed margin of time
    around a slice would hold most of the part. Here the healthy recording (18 ms) is asked by 40 clients 5 ms
    apart, overlapping (each copy its own ports and DNS ids, its log lines likewise): the part is cut along the
    lookups' own legs, each slice holds about PART_ROWS events, and the traces are the in-memory path's."""
    from dataclasses import replace

    frame, stats, logs, facts = load_fixture("healthy")
    two_nodes = skewed(frame, 4_000_000)
    copies, spacing = 40, 5_000_000

    def copy(table: pd.DataFrame, k: int, port_columns: list[str], id_column: str) -> pd.DataFrame:
        out = table.assign(ts_ns=table["ts_ns"] + k * spacing)
        for column in port_columns:
            port = out[column].astype("int64")
            out[column] = port.where(port == 53, 1024 + (port - 1024 + 7 * k) % 64000).astype(table[column].dtype)
        ids = out[id_column].astype("int64")
        out[id_column] = ids.where(ids < 0, (ids + 997 * k) % 65536).astype(table[id_column].dtype)
        return out

    directory = tmp_path / "dense"
    writer = events.NodeParquetDir(directory)
    every = pd.concat([copy(two_nodes, k, ["src_port", "dst_port"], "dns_id") for k in range(copies)], ignore_index=True)
    writer.write(every.sort_values("ts_ns", kind="stable").reset_index(drop=True))
    writer.close(stats)
    records = pd.concat([copy(logs.records, k, ["remote_port"], "id") for k in range(copies)], ignore_index=True)
    logs = replace(logs, records=records, errors=pd.concat([logs.errors.assign(ts_ns=logs.errors["ts_ns"] + k * spacing)
                                                             for k in range(copies)], ignore_index=True))
    part_rows = 4 * len(frame)
    mem, ooc = both_ways(directory, logs, facts, part_rows)
    got = ooc.correlation.stats
    assert got["parts_cut_by_time"] >= 1
    assert got["largest_part"] <= 2 * part_rows < copies * len(frame) / 3  # a slice: the part is cut, not held whole
    a, b = mem.correlation.traces.reset_index(drop=True), ooc.correlation.traces.reset_index(drop=True)
    assert len(a) == len(b) == copies * len(correlate_once(frame, logs, stats))
    for column in ("trace_id", "qname", "client_ip", "client_port", "outcome", "rcode", "server", "log_ref", "upstream_rtt_ns"):
        assert as_text(a[column]) == as_text(b[column]), column
    assert [(f.code, f.hop, f.count) for f in mem.findings] == [(f.code, f.hop, f.count) for f in ooc.findings]
    assert mem.correlation.stats == {k: v for k, v in got.items() if k not in OUT_OF_CORE_STATS}


class RunsOutOnce:
    """A DuckDB connection that runs out of memory the first time it is asked one statement, as a partitioned write
    on two threads sometimes does; it records the thread counts set."""

    def __init__(self, con, failing: str, times: int = 1):
        self.con, self.failing, self.times, self.threads_set = con, failing, times, []

    def execute(self, sql: str, *args):
        import duckdb

        if sql.startswith("SET threads"):
            self.threads_set.append(int(sql.split("=")[1]))
        if sql == self.failing and self.times:
            self.times -= 1
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        return self.con.execute(sql, *args)


def test_a_statement_past_duckdbs_limit_runs_again_on_one_thread_is_counted_and_gives_the_threads_back(tmp_path):
    from dnscorrelate.correlate.outofcore import Engine

    engine = Engine(tmp_path)
    statement = "SELECT 42"
    engine.con = RunsOutOnce(engine.con, statement)
    cleaned = []
    assert engine.bounded("the answer", statement, before_retry=lambda: cleaned.append(True)).fetchone() == (42,)
    assert engine.retried == ["the answer"] and cleaned == [True]
    assert engine.con.threads_set == [1]  # one thread for the retry
    assert engine.bounded("again", statement).fetchone() == (42,) and engine.retried == ["the answer"]
    assert engine.con.threads_set == [1, engine.threads]  # and back for the next


def test_parts_past_the_writers_fanout_are_written_in_groups_and_give_the_same_traces(tmp_path, monkeypatch):
    from dnscorrelate.correlate import outofcore

    directory, logs, facts = capture_dir(tmp_path, "bad-forward-server")
    rows = sum(pq.read_metadata(p).num_rows for p in directory.glob("*.parquet"))
    part_rows = 2
    writes = []
    write = outofcore.write_partitioned
    monkeypatch.setattr(outofcore, "write_partitioned", lambda *args: writes.append(args[4]) or write(*args))
    monkeypatch.setattr(outofcore, "WRITE_FANOUT", 10**6)
    at_once = analyze_files(events.capture_files(directory), logs, facts, events.capture_dir_stats(directory), part_rows=part_rows)
    parts = at_once.correlation.stats["parts"]
    assert writes[0] == parts  # the parts' write, whole
    monkeypatch.setattr(outofcore, "WRITE_FANOUT", 3)  # parts / 3 groups, then each group's parts: more than 3**2 parts, so 3 levels
    assert -(-rows // part_rows) > 3**2
    writes.clear()
    grouped = analyze_files(events.capture_files(directory), logs, facts, events.capture_dir_stats(directory), part_rows=part_rows)
    assert writes[:2] == [parts, -(-parts // 3)]  # the parts' write goes first into groups of parts
    assert grouped.correlation.stats["parts"] == at_once.correlation.stats["parts"] > 9
    a, b = at_once.correlation.traces, grouped.correlation.traces
    assert len(a) == len(b) > 0
    for column in ("trace_id", "qname", "client_ip", "client_port", "outcome", "rcode", "server", "t_start"):
        assert as_text(a[column]) == as_text(b[column]), column
    assert [(f.code, f.hop, f.count) for f in at_once.findings] == [(f.code, f.hop, f.count) for f in grouped.findings]


def test_a_statement_past_duckdbs_limit_on_one_thread_too_is_an_error_naming_the_step(tmp_path):
    from dnscorrelate.correlate.outofcore import Engine, OutOfMemory

    engine = Engine(tmp_path)
    engine.con = RunsOutOnce(engine.con, "SELECT 42", times=2)
    with pytest.raises(OutOfMemory, match="in the leg numbering, even on one thread .Out of Memory Error: could not allocate block"):
        engine.bounded("leg numbering", "SELECT 42")


def test_correlate_says_which_step_ran_out_of_duckdbs_memory_without_a_traceback(tmp_path, monkeypatch):
    from dnscorrelate.correlate import outofcore

    directory, _, _ = capture_dir(tmp_path, "healthy")
    statement = []
    execute = outofcore.Engine.bounded

    def clocks_run_out(engine, what, sql, before_retry=lambda: None):
        if what == "clocks":
            engine.con = RunsOutOnce(engine.con, sql, times=2)
            statement.append(sql)
        return execute(engine, what, sql, before_retry)

    monkeypatch.setattr(outofcore.Engine, "bounded", clocks_run_out)
    result = invoke("correlate", "--events", str(directory))
    assert statement and result.exit_code == 2 and "Traceback" not in result.output
    assert "out of core: DuckDB ran out of its 1GB memory limit in the clocks, even on one thread" in " ".join(result.output.split())


def test_each_parts_tables_go_to_disk_as_it_is_stitched_and_come_back_as_concatenating_them_would_make_them(tmp_path):
    from dataclasses import replace

    from dnscorrelate.correlate import correlate
    from dnscorrelate.correlate.outofcore import Engine
    from dnscorrelate.correlate.spilled import Spilled

    empty = correlate(None, None, {}, on_time_line=True)
    def piece(traces):  # and no dropped connection, its table selected from a part's events as the pipeline selects it
        events = pd.DataFrame({"kind": pd.Categorical(["dns", "dns"]), "vantage": pd.Categorical(["pod-a", "pod-b"])})
        return replace(empty, traces=traces, connection_drops=events[(events["kind"] == "conn-drop").to_numpy()])
    parts = [  # a column held as integers by one part and with nulls (floats) by another; categories that differ;
               # text in one part and nothing but nulls in the other; the merged order is t_start, client, then part
        pd.DataFrame({"trace_id": [0, 1], "t_start": [30, 10], "client_ip": ["10.0.0.2", "10.0.0.1"], "client_port": [5, 5],
                      "count": [1, 2], "place": pd.Categorical(["a", "b"]), "said": ["x", None]}),
        pd.DataFrame({"trace_id": [0, 1], "t_start": [10, 20], "client_ip": ["10.0.0.1", "10.0.0.1"], "client_port": [5, 6],
                      "count": [3.0, np.nan], "place": pd.Categorical(["c", "c"]), "said": [None, None]}),
    ]
    spilled = Spilled(tmp_path / "merged")
    kept = [spilled.kept(piece(p)) for p in parts]
    assert all(len(k.traces) == 0 and list(k.traces.columns) == list(p.columns) for k, p in zip(kept, parts))  # held on disk only
    assert len(spilled.files("traces")) == 2
    # an emptied table holds none of the part's arrays (an empty slice of one would keep all of it alive)
    assert all(held_bytes(k.traces[c].to_numpy()) == 0 for k in kept for c in k.traces.columns if k.traces[c].dtype != "category")
    assert all(len(k.traces[c].cat.categories) == 0 for k in kept for c in k.traces.columns if k.traces[c].dtype == "category")
    assert all(len(k.connection_drops["vantage"].cat.categories) == 0 for k in kept)  # each part's vantages, kept until the merge
    engine = Engine(tmp_path / "spill")
    assert spilled.sort_into_windows(engine, None) == 1
    merged = spilled.window("traces", 0)
    concatenated = pd.concat(parts, ignore_index=True)
    assert dict(merged.dtypes) == dict(concatenated.dtypes)
    # (t_start, client_ip, client_port): part 0's 10/.1/5 and part 1's 10/.1/5 tie: part 0 first
    assert merged["trace_id"].tolist() == [0, 1, 2, 3]
    assert merged["count"].fillna(-1).tolist() == [2.0, 3.0, -1.0, 1.0]
    assert merged["place"].astype(str).tolist() == ["b", "c", "c", "a"]
    assert merged["said"].tolist() == [None, None, None, "x"]
    assert spilled.files("traces") == []  # the parts' files are gone once merged
    engine.close()


def test_merged_tables_are_read_a_window_of_lookups_at_a_time_with_the_unmatched_rows_of_its_time(tmp_path):
    from dataclasses import replace

    from dnscorrelate.correlate import correlate
    from dnscorrelate.correlate.outofcore import Engine
    from dnscorrelate.correlate.spilled import Spilled

    empty = correlate(None, None, {}, on_time_line=True)
    traces = pd.DataFrame({"trace_id": [0, 1, 2], "t_start": [10, 20, 30], "client_ip": ["10.0.0.1"] * 3, "client_port": [5, 6, 7]})
    seen = pd.DataFrame({"trace_id": [0, -1, -1, 1, -1, -1], "ts_ns": [11, 15, 31, 21, 25, 5], "vantage": ["a"] * 6})
    spilled = Spilled(tmp_path / "merged")
    spilled.kept(replace(empty, traces=traces.iloc[:2], sightings=seen.iloc[:3]))
    spilled.kept(replace(empty, traces=traces.iloc[2:].assign(trace_id=[0]), sightings=seen.iloc[3:].assign(trace_id=[0, -1, -1])))
    engine = Engine(tmp_path / "spill")
    assert spilled.sort_into_windows(engine, 2) == 2  # 3 lookups, 2 a window
    first, second = (spilled.window("traces", w) for w in (0, 1))
    assert first["t_start"].tolist() == [10, 20] and second["t_start"].tolist() == [30]
    assert first["trace_id"].tolist() == [0, 1] and second["trace_id"].tolist() == [2]
    sightings = [spilled.window("sightings", w) for w in (0, 1)]
    # the lookups' own rows, and each unmatched one in the window its time falls in (before the first: the first)
    assert sightings[0]["ts_ns"].tolist() == [5, 11, 15, 25] and sightings[1]["ts_ns"].tolist() == [21, 31]
    assert sightings[1]["trace_id"].tolist() == [2, -1]  # part 1's trace 0 is the merged trace 2
    assert list(spilled.window_starts(engine)) == [10, 30]
    engine.close()


def held_bytes(array: np.ndarray) -> int:
    """The bytes of the array `array` is a view of, at the end of its chain of bases (its own if it is none)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.nbytes


def test_parts_tables_with_different_columns_are_refused_by_name(tmp_path):
    from dataclasses import replace

    from dnscorrelate.correlate import correlate
    from dnscorrelate.correlate.spilled import Spilled

    empty = correlate(None, None, {}, on_time_line=True)
    spilled = Spilled(tmp_path)
    spilled.kept(replace(empty, upstream=pd.DataFrame({"trace_id": [0], "leg_id": [1]})))
    with pytest.raises(ValueError, match="the parts' upstream tables have different columns"):
        spilled.kept(replace(empty, upstream=pd.DataFrame({"trace_id": [0], "depth": [1]})))


@pytest.mark.parametrize("fixture", ["slow-upstream", "deny-dns-egress", "healthy", "missing-service"])
def test_a_capture_past_a_window_is_diagnosed_window_by_window_with_the_counts_of_one_diagnosis(tmp_path, fixture):
    """The recorded lookups 30 times over, diagnosed a window of 25 lookups at a time: the same counts and the same
    findings, each adding up its windows' counts and saying so, and the traces shown those the findings cite. (Not
    a pattern that needs more lookups than a window holds: upstream-refused's 30 to one replica are each window's 10,
    too few to call an imbalance.)"""
    from dnscorrelate.diagnose.windows import FIGURE
    from tests.fixtures import repeated

    frame, stats, logs, facts = load_fixture(fixture)
    logs = None  # the log records are the recording's once: repeated lookups would find none of their own
    directory = tmp_path / fixture
    writer = events.NodeParquetDir(directory)
    writer.write(skewed(repeated(frame, 30), 4_000_000))
    writer.close(stats)
    files, capture_stats = events.capture_files(directory), events.capture_dir_stats(directory)
    whole = analyze_files(files, logs, facts, capture_stats, part_rows=50)
    windowed = analyze_files(files, logs, facts, capture_stats, part_rows=50, lookups_per_window=25)
    lookups = whole.correlation.stats["traces"]
    assert windowed.correlation.stats.pop("windows") == -(-lookups // 25) > 1 and "windows" not in whole.correlation.stats
    how_cut = lambda stats: {k: v for k, v in stats.items() if k not in OUT_OF_CORE_STATS}  # approximate quantiles: not every run's
    assert how_cut(windowed.correlation.stats) == how_cut(whole.correlation.stats)
    assert [(f.code, f.hop, f.count, f.severity) for f in windowed.findings] == [(f.code, f.hop, f.count, f.severity) for f in whole.findings]
    for mine, theirs in zip(windowed.findings, whole.findings):
        assert "windows said this" in mine.summary and FIGURE.sub("#", mine.summary).startswith(FIGURE.sub("#", theirs.summary))
        assert set(mine.evidence["traces"]) <= set(windowed.correlation.traces["trace_id"])
    assert len(windowed.correlation.traces) < lookups  # the cited ones, not every lookup
    assert any(w.startswith(f"out of core: {lookups:,} lookups diagnosed in") for w in windowed.correlation.warnings)


def test_the_windows_findings_are_one_where_they_say_the_same_of_the_same_place():
    from dnscorrelate.diagnose.finding import finding
    from dnscorrelate.diagnose.windows import Window, merged_findings

    def slow(server: str, lookups: int, ms: int, traces: list[int]):
        return finding("upstream-slow", f"upstream {server}:53 answered {lookups} lookups in {ms} ms median", {"traces": traces}, lookups)

    windows = [
        Window(100, 0, 1, [slow("192.168.49.1", 12, 250, [1, 2]), finding("ok", "88 lookups answered correctly", {"traces": [3]}, 88)]),
        Window(100, 2, 3, [slow("192.168.49.1", 7, 300, [101]), slow("192.168.49.2", 3, 900, [150])]),
        Window(1, 4, 4, [finding("no-lookups", "no lookup: 3 packets were read", {}, 0)]),
    ]
    merged = merged_findings(windows)
    assert [(f.code, f.count) for f in merged] == [("upstream-slow", 19), ("upstream-slow", 3)]  # ok: something is wrong
    one = merged[0]
    assert one.summary.startswith("upstream 192.168.49.1:53 answered 12 lookups in 250 ms median [2 of 3 windows said this: 19 in all")
    assert one.evidence["traces"] == [1, 2, 101] and one.covers == {1, 2, 101}
    assert merged[1].summary == "upstream 192.168.49.2:53 answered 3 lookups in 900 ms median"


def test_the_slices_that_read_a_leg_are_those_its_span_and_their_reach_say():
    """`slices_reading` finds a leg's slices by a binary search and a window of `back` earlier slices (a busy part's
    pass was rows x slices): the same slices as testing every one, for legs across many slices and reaches."""
    import duckdb

    from dnscorrelate.correlate.outofcore import OPEN_END_NS, Span, slices_reading

    rng = np.random.default_rng(7)
    edges = np.unique(rng.integers(1_000, 1_000_000, 40))
    starts = [-OPEN_END_NS, *edges.tolist()]
    ends = [*edges.tolist(), OPEN_END_NS]
    reaches = [min(hi + int(rng.integers(0, 60_000)), OPEN_END_NS) for hi in ends]  # some reach several slices on
    spans = [Span(lo, hi, reach) for lo, hi, reach in zip(starts, ends, reaches)]
    leg_start = rng.integers(0, 1_100_000, 5_000)
    leg_end = leg_start + rng.integers(0, 80_000, 5_000)
    legs = pd.DataFrame({"a": leg_start, "b": leg_end})
    got = duckdb.sql(f"SELECT {slices_reading('a', 'b', spans)} AS s FROM legs").df()["s"]
    for a, b, found in zip(leg_start, leg_end, got):
        every = [i for i, s in enumerate(spans) if a < s.read_to and b >= s.read_from]
        assert list(found) == every, (a, b)
