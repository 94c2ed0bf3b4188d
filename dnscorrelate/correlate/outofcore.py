"""Correlation out of core: a capture directory (one Parquet file per node, `capture --agent -o DIR/`) stitched
without ever holding its events in one frame.

DuckDB does the work that needs every event at once, over the Parquet files, spilling to disk past its
memory limit; the stitching itself is the in-memory pipeline's (pipeline.py), run on one part at a time, so
a lookup is stitched by exactly the rules it would be in memory.

1. **Clocks** (first pass, an aggregate): each exchange's first query and first response per node
   (clocks.exchanges, in SQL), the tightest bound per pair of nodes (clocks.constraints), solved by
   clocks.solve as in memory; only the per-pair bounds come back to Python. Every exchange up to CLOCK_ROWS
   events (so the offsets are the in-memory path's); past it, the exchanges of 1 client socket in k, chosen by
   a hash so each is kept whole (`clock_sample` in the stats says k).
2. **Parts** (second pass): each event shifted onto the reference node's time line and written to the part
   of its question, `hash(qname, qtype) mod parts`: every leg of a lookup (the client's, DNAT's, CoreDNS's
   forward with its own id and port, NodeLocal DNS's, the upstream's, their ICMP errors) asks the same
   question, so every node's sightings of one lookup meet in one part, and a part holds about
   `PART_ROWS` events. TCP set-up rows ask no question: they are few (TCP on a DNS port) and are joined
   to the merged traces at the end, as the pipeline joins them.
3. **Each part** is correlated in memory (`correlate(..., on_time_line=True)`), with the evidence-wide
   facts a part cannot see for itself (whether the whole capture is one place), and its CoreDNS log
   records split by the same hash.
4. **Merged** (spilled.py): each part's tables are written to Parquet as soon as it is stitched; at the end
   DuckDB numbers the traces again in the pipeline's order (first query, client address, port) and sorts each
   table out of core, window by window (`WINDOW_LOOKUPS` lookups in order of their first query, and the
   unmatched rows of their time), and the tables are read back a window at a time: a caller that reads them so
   (`each_window`: the diagnosis, diagnose/windows.py) gets each window with the lookups around it as context
   (`window_tables`), and counts that add up; otherwise they are read back whole, once. The cross-node
   segments are judged against the whole capture's clocks, counts added up. The sightings kept are those the
   diagnosis reads (`kept_sightings`), not every packet: with a directory, the JSON and HTML outputs give the
   traces without their full sighting lists (and past one window, only the traces the findings cite).

Memory: one part's events while the parts are stitched, never the whole capture's events, nor the traces
found so far; then one window's merged tables and its context (about 2 kB a lookup as they are read), and
the traces the findings cite. A part holds every event of the
questions hashed to it, so a capture dominated by a few names (the same Service asked by every pod) makes
a part as large as those names' traffic. Such a part (past 2 x `PART_ROWS`) is cut again, by time but
along its legs (`leg_slices`): DuckDB numbers each row's leg by the pipeline's rule (a client socket's DNS
id; a new leg after a response or a 30 s silence), and every leg has a start and an end. The part is cut at
quantiles of the legs' starts into slices of about `PART_ROWS` events; a slice reads every leg in flight
during its span, and the legs that start before the last of its own legs ends. A lookup's legs are each
other's upstream exchanges, and an upstream exchange starts while the leg it serves waits: so a slice
holds each lookup that starts in it whole, and keeps those (one that started before it is its
neighbour's). The margin is the lookups' own length, milliseconds, not a guess of seconds: at the 4-5M
events a second of a busy name on a 100-node cluster, a fixed second of margin would be millions of events.
What it cannot hold: an exchange that starts after the query it serves was last seen (a server asking on
long after a client stopped waiting); unanswered lookups near a slice's end are counted
(`slice_edge_traces`). Memory then follows a slice (`largest_part` in the stats is the most events held at
once, with a warning past 2 x `PART_ROWS`). Time: two scans of the files, one hash-partitioned write (for each
cut part: one pass to split it by client socket into buckets of a quarter part, one over each bucket to number
its legs, one to write its slices), and the pipeline over each part or slice: every sort is of a part's size at
most, so the time is linear in the events. A partitioned write holds WRITE_FANOUT partitions open at most, in
levels of groups past it (`write_partitioned`: a level per factor of 32 in the parts). A statement that still
passes DuckDB's memory limit runs again on one thread, and is counted (`duckdb_retries`, with a warning); if it
runs out again, the error names the step. Differences from the in-memory path:
a client socket that asks one question, another, then the first again with the same DNS id and no
response between, makes two lookups in memory (the question changed) and one in its part (a
retransmission); Hubble's L3/L4 flows (no question) are joined to the lookups of one part only, and
said so.
"""

from __future__ import annotations

import bisect
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.correlate.clocks import EXCHANGE_WINDOW_NS, Clocks, Hidden, clock_warnings, solve, uncertain_segments_hidden
from dnscorrelate.correlate.legs import LEG_GAP_NS, SERVER_ROLES
from dnscorrelate.correlate.logs import log_warnings
from dnscorrelate.correlate.network import attach_connects, connection_attempts
from dnscorrelate.correlate.pipeline import Correlation, correlate, stats_shared
from dnscorrelate.correlate.spilled import TABLES, WINDOW, Spilled
from dnscorrelate.correlate.upstream import SERVER_WAIT_NS
from dnscorrelate.senders import address_owners

PART_ROWS = 1_000_000  # events per part: the pipeline holds about 1.2 kB per event while stitching a part (bench/README.md)
# lookups a window holds, for a caller that reads the merged traces a window at a time (the diagnosis: about 2 kB a
# lookup with its tables as they are read, bench/README.md): less than the stitching of a part takes
WINDOW_LOOKUPS = 200_000
OPEN_END_NS = 2**62  # "any time" at the outer ends of a part's first and last slices
CLOCK_ROWS = 20_000_000  # events past which the clocks' pass takes a sample of client sockets
DUCKDB_MEMORY = "1GB"  # DuckDB's own limit; past it, its sorts and hash tables spill to a temporary directory
WRITE_ROW_GROUP = 20_000  # rows a part's writer buffers per thread before it writes them out
WRITE_FANOUT = 32  # partitions one DuckDB write holds open at most (write_partitioned)
CONTROL = ("tcp-syn", "tcp-synack", "tcp-rst")
EVENT_DTYPES = schema.dtypes(schema.EVENTS)
CLIENT_IP = "CASE WHEN qr THEN CAST(dst_ip AS VARCHAR) ELSE CAST(src_ip AS VARCHAR) END"  # a DNS row's client socket, in SQL
CLIENT_PORT = "CASE WHEN qr THEN dst_port ELSE src_port END"
CATEGORIES = [name for name, dtype in EVENT_DTYPES.items() if dtype == "category"]


@dataclass
class Capture:
    """What the first pass learnt of the whole capture."""

    rows: int
    clocks: Clocks | None
    vantage_node: dict[str, str]  # {vantage: node} as the rows (or the facts) say
    one_place: bool
    has_node: bool  # some file has a `node` column


class OutOfMemory(Exception):
    """DuckDB ran out of its memory limit in a step even on one thread; the message names the step (the caller,
    which may name errors.py's, makes it an EventsError)."""


class Engine:
    """A DuckDB connection bounded in memory, spilling under `spill`, that says which statements it had to run again
    on one thread (`retried`). Anything else is the connection's own (`execute`, `register`...)."""

    def __init__(self, spill: Path):
        import duckdb

        self.con = duckdb.connect()
        self.threads = max(1, min(2, os.cpu_count() or 1))
        self.retried: list[str] = []
        self.on_one_thread = False
        self.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        self.con.execute(f"SET temp_directory = '{spill}'")
        self.con.execute(f"SET threads = {self.threads}")  # each thread's buffers count against the limit
        self.con.execute("SET preserve_insertion_order = false")

    def __getattr__(self, name: str):
        return getattr(self.con, name)

    def bounded(self, what: str, sql: str, before_retry=lambda: None):
        """`execute(sql)`, once more on one thread (after `before_retry`) if DuckDB ran out of its memory limit:
        each thread's buffers count against it, and with two threads a large partitioned write sometimes passes
        it (bench/README.md). The next bounded statement has its threads back (set before it, not after the
        retry, which would replace the retry's result): one thread for everything after a retry made the
        30M-event run's leg numbering several times slower."""
        import duckdb

        if self.on_one_thread:
            self.con.execute(f"SET threads = {self.threads}")
            self.on_one_thread = False
        try:
            return self.con.execute(sql)
        except duckdb.OutOfMemoryException:
            self.retried.append(what)
            self.con.execute("SET threads = 1")
            self.on_one_thread = True
            before_retry()
        try:
            return self.con.execute(sql)
        except duckdb.OutOfMemoryException as err:
            raise OutOfMemory(f"out of core: DuckDB ran out of its {DUCKDB_MEMORY} memory limit in the {what}, even on one thread "
                              f"({str(err).splitlines()[0]})") from None


def events_view(con, files: list[Path], nodes: dict[str, str], has_node: bool) -> None:
    """View `ev`: every file's rows with `clock_node` (the node whose clock timed the row: its own `node`, else
    the facts' node of its vantage, else ''), `file_index` and `row_in_file` (the in-memory path's order for
    rows of one instant)."""
    con.execute("CREATE OR REPLACE TEMP TABLE files AS SELECT * FROM (VALUES " +
                ", ".join(f"({i}, ?)" for i in range(len(files))) + ") AS f(file_index, filename)", [str(f) for f in files])
    con.execute("CREATE OR REPLACE TEMP TABLE vantage_nodes (vantage VARCHAR, vnode VARCHAR)")
    if nodes:
        con.executemany("INSERT INTO vantage_nodes VALUES (?, ?)", list(nodes.items()))
    own = "nullif(CAST(e.node AS VARCHAR), '')" if has_node else "NULL"
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW ev AS
        SELECT e.*, coalesce({own}, v.vnode, '') AS clock_node, f.file_index, e.file_row_number AS row_in_file
        FROM read_parquet([{listed}], union_by_name = true, filename = true, file_row_number = true) e
        JOIN files f ON f.filename = e.filename
        LEFT JOIN vantage_nodes v ON v.vantage = CAST(e.vantage AS VARCHAR)""")


def estimate_clocks(con, rows: int = 0) -> tuple[Clocks | None, dict[str, str]]:
    """Each node's offset, from the exchanges seen at two nodes (clocks.py's arithmetic, in SQL), and the
    {vantage: node} the rows say. None when fewer than two nodes timed anything. Up to CLOCK_ROWS events,
    every exchange; past it, those of one client socket in `sample` (by a hash of the socket, so that each
    exchange kept is kept whole, at every node): the bounds come from fewer crossings, the same arithmetic."""
    sample = max(1, math.ceil(rows / CLOCK_ROWS))
    counts = dict(con.execute("SELECT clock_node, count(*) FROM ev WHERE clock_node <> '' GROUP BY 1").fetchall())
    pairs = con.execute("SELECT CAST(vantage AS VARCHAR), min(clock_node) FROM ev WHERE clock_node <> '' GROUP BY 1").fetchall()
    vantage_node = dict(pairs)
    if len(counts) < 2:
        return None, vantage_node
    tight = con.bounded("clocks", f"""
        WITH d AS (
            SELECT {CLIENT_IP} AS cip, {CLIENT_PORT} AS cport, dns_id, CAST(proto AS VARCHAR) AS proto,
                   ts_ns AS ts, qr, clock_node AS node
            FROM ev WHERE kind = 'dns' AND clock_node <> ''),
        sampled AS (
            SELECT * FROM d WHERE {sample} = 1 OR hash(cip, cport, dns_id, proto) % {sample} = 0),
        marked AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL OR ts - lag(ts) OVER w > {EXCHANGE_WINDOW_NS} THEN 1 ELSE 0 END AS fresh
            FROM sampled WINDOW w AS (PARTITION BY cip, cport, dns_id, proto ORDER BY ts)),
        numbered AS (
            SELECT *, sum(fresh) OVER (PARTITION BY cip, cport, dns_id, proto ORDER BY ts
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS burst
            FROM marked),
        firsts AS (
            SELECT cip, cport, dns_id, proto, burst, node,
                   min(ts) FILTER (WHERE NOT qr) AS q, min(ts) FILTER (WHERE qr) AS r
            FROM numbered GROUP BY ALL HAVING q IS NOT NULL AND r IS NOT NULL),
        ranked AS (
            SELECT *, count(*) OVER x AS seen_at,
                   row_number() OVER (PARTITION BY cip, cport, dns_id, proto, burst ORDER BY r - q DESC, node) AS rank
            FROM firsts WINDOW x AS (PARTITION BY cip, cport, dns_id, proto, burst)),
        bounds AS (
            SELECT o.node AS outer_node, i.node AS inner_node, i.r - o.r AS lower, i.q - o.q AS upper
            FROM ranked o JOIN ranked i USING (cip, cport, dns_id, proto, burst)
            WHERE o.rank = 1 AND i.rank > 1 AND o.seen_at > 1)
        SELECT outer_node AS outer, inner_node AS inner, max(lower) AS lower, min(upper) AS upper, count(*) AS n
        FROM bounds GROUP BY 1, 2""").df()
    crossings = {n: int(tight.loc[(tight["outer"] == n) | (tight["inner"] == n), "n"].sum()) for n in counts}
    return solve({n: int(c) for n, c in counts.items()}, tight.set_index(["outer", "inner"]) if len(tight) else None, crossings), vantage_node


def is_one_place(con, with_logs: bool) -> bool:
    """pipeline.correlate's test, over the whole capture: no log, no server among the DNS places, and one place
    or no node among them."""
    if with_logs:
        return False
    servers = "', '".join(SERVER_ROLES)
    places, server_rows, node_rows = con.execute(f"""
        SELECT count(DISTINCT vantage), count(*) FILTER (WHERE CAST(role AS VARCHAR) IN ('{servers}')),
               count(*) FILTER (WHERE CAST(role AS VARCHAR) = 'node')
        FROM ev WHERE kind = 'dns'""").fetchone()
    return not server_rows and (places == 1 or not node_rows)


def offsets_table(con, clocks: Clocks | None) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE offsets (node VARCHAR, shift BIGINT)")
    if clocks and clocks.offsets:
        con.executemany("INSERT INTO offsets VALUES (?, ?)", [(n, est) for n, (est, _) in clocks.offsets.items()])


def write_parts(con: Engine, directory: Path, parts: int) -> None:
    """Every event with a question, shifted onto one time line (`orig_ts` keeps the node's own time), into the
    part of its question."""
    write_partitioned(con, "partitioned write", f"""
        SELECT e.* EXCLUDE (ts_ns, filename, file_row_number), e.ts_ns AS orig_ts, e.ts_ns - coalesce(o.shift, 0) AS ts_ns,
               CAST(hash(CAST(e.qname AS VARCHAR), CAST(e.qtype AS VARCHAR)) % {parts} AS INTEGER) AS part
        FROM ev e LEFT JOIN offsets o ON o.node = e.clock_node
        WHERE e.kind NOT IN ({", ".join(f"'{k}'" for k in CONTROL)})""", "part", parts, directory)


def write_partitioned(con: Engine, what: str, select: str, key: str, count: int, directory: Path) -> None:
    """The rows of `select` written to `directory/KEY=N/*.parquet` by the value N of the integer column `key`
    (0 <= N < count). One write holds every partition's writer open at once, and each buffers a row group:
    at 100 parts that passed DuckDB's 1 GB limit even on one thread (bench/README.md). So past WRITE_FANOUT
    partitions the rows go first into groups of partitions (`key % groups`), and each group is then written
    out alone: every write holds WRITE_FANOUT writers at most, and each row is written once more per level."""
    if count <= WRITE_FANOUT:
        con.bounded(what, f"""
            COPY ({select}) TO '{directory}'
            (FORMAT parquet, PARTITION_BY ({key}), OVERWRITE_OR_IGNORE true, ROW_GROUP_SIZE {WRITE_ROW_GROUP})""",
                    before_retry=lambda: shutil.rmtree(directory, ignore_errors=True))  # no file of the failed write is read
        return
    groups, group_key = math.ceil(count / WRITE_FANOUT), f"{key}_group"
    staged = directory.with_name(directory.name + "-groups")
    write_partitioned(con, what, f"SELECT *, {key} % {groups} AS {group_key} FROM ({select})", group_key, groups, staged)
    directory.mkdir(parents=True, exist_ok=True)
    for i, group in enumerate(sorted(staged.glob(f"{group_key}=*"))):
        out = staged / f"out-{i}"  # a retry of this group's write removes its own partitions alone
        write_partitioned(con, what, f"SELECT * FROM read_parquet('{group}/*.parquet', hive_partitioning = false)", key,
                          math.ceil(count / groups), out)
        for partition in out.iterdir():
            partition.rename(directory / partition.name)  # each partition is in one group: no two meet
        shutil.rmtree(group)  # the disk a group took is given back as its partitions are written
    shutil.rmtree(staged)


def control_rows(con) -> pd.DataFrame:
    """TCP set-up rows (no question), shifted onto one time line: joined to the merged traces."""
    frame = con.execute(f"""
        SELECT e.* EXCLUDE (filename, file_row_number, ts_ns), e.ts_ns - coalesce(o.shift, 0) AS ts_ns
        FROM ev e LEFT JOIN offsets o ON o.node = e.clock_node
        WHERE e.kind IN ({", ".join(f"'{k}'" for k in CONTROL)})
        ORDER BY ts_ns, e.ts_ns, file_index, row_in_file""").df()
    return as_events(frame)


def owners_of(con) -> dict[str, str]:
    """senders.address_owners over the whole capture: the namespaces' addresses, for the TCP set-up rows."""
    return address_owners(con.execute("""
        SELECT DISTINCT CAST(dst_ip AS VARCHAR) AS dst_ip, CAST(vantage AS VARCHAR) AS vantage, 'HOST' AS pkt_type,
                        CAST(role AS VARCHAR) AS role
        FROM ev WHERE kind = 'dns' AND CAST(pkt_type AS VARCHAR) = 'HOST' AND CAST(role AS VARCHAR) <> 'node'""").df())


def as_events(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame of the events' schema (schema.EVENTS dtypes; repeated strings as categoricals), whatever DuckDB or
    Arrow made of the columns; the extra columns kept."""
    for name, dtype in EVENT_DTYPES.items():
        if name not in frame:
            frame[name] = pd.Series([""] * len(frame), dtype="category") if dtype == "category" else pd.Series(np.zeros(len(frame)), dtype=dtype)
        elif dtype == "category":
            if not isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].astype(object).where(frame[name].notna(), "").astype(str).astype("category")
        elif frame[name].dtype != np.dtype(dtype):
            frame[name] = frame[name].astype(dtype)
    return frame


def read_part(paths: list[Path]) -> pd.DataFrame:
    """One part's events (DuckDB may write a part in several files) in the in-memory path's order: by time on one
    time line, then the node's own time, then file and row (the order `events.concat` and a stable sort give)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p, read_dictionary=list(CATEGORIES)) for p in paths])
    frame = table.to_pandas()
    order = np.lexsort((frame["row_in_file"].to_numpy(), frame["file_index"].to_numpy(), frame["orig_ts"].to_numpy(), frame["ts_ns"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    return as_events(frame)[list(EVENT_DTYPES)]


def split_logs(con, logs: schema.ParsedLogs, parts: int) -> dict[int, schema.ParsedLogs]:
    """Each part's share of the CoreDNS log and errors records, by the same hash of their question; `_row` keeps
    each record's place."""
    def part_of(frame: pd.DataFrame) -> np.ndarray:
        if not len(frame):
            return np.zeros(0, dtype=int)
        keys = pd.DataFrame({"qname": frame["qname"].astype(str).to_numpy(), "qtype": frame["qtype"].astype(str).to_numpy()})
        con.register("log_keys", keys)
        out = con.execute(f"SELECT CAST(hash(qname, qtype) % {parts} AS INTEGER) FROM log_keys").fetchnumpy()
        con.unregister("log_keys")
        return next(iter(out.values()))

    records = logs.records.assign(_row=np.arange(len(logs.records)))
    errors = logs.errors.assign(_row=np.arange(len(logs.errors)))
    record_part, error_part = part_of(records), part_of(errors)
    return {p: replace(schema.ParsedLogs.none(), records=records[record_part == p].reset_index(drop=True),
                       errors=errors[error_part == p].reset_index(drop=True), guessed_replicas=logs.guessed_replicas)
            for p in range(parts)}


def kept_sightings(correlation: Correlation) -> pd.DataFrame:
    """The sightings the diagnosis reads (diagnose/): each vantage's last one (where its capture ended) and one for
    each of its roles, a DNS proxy's records, and every sighting of a lookup more than one server answered."""
    seen = correlation.sightings
    if seen.empty:
        return seen
    many = set(correlation.traces.loc[(correlation.traces["responders"] > 1).to_numpy(), "trace_id"])
    vantage = seen["vantage"].astype(str)
    keep = seen["trace_id"].isin(many).to_numpy() | (seen["ifname"].astype(str) == "dns-proxy").to_numpy()
    last = seen.groupby(vantage.to_numpy())["ts_ns"].idxmax()
    roles = seen.assign(_v=vantage.to_numpy(), _r=seen["role"].astype(str).to_numpy()).drop_duplicates(["_v", "_r"]).index
    keep[seen.index.get_indexer(last.to_numpy())] = True
    keep[seen.index.get_indexer(roles)] = True
    return seen[keep]


def correlate_files(files: list[Path], logs: schema.ParsedLogs | None = None, capture_stats: dict | None = None,
                    servers: dict[str, tuple[str, str]] | None = None, nodes: dict[str, str] | None = None,
                    part_rows: int = PART_ROWS, spill: Path | None = None, lookups_per_window: int = WINDOW_LOOKUPS,
                    each_window: Callable[[Correlation, set[int]], None] | None = None) -> Correlation:
    """`correlate()` of the events in `files` (Parquet, schema.EVENTS; validated by the caller), out of core. With
    `each_window`, more lookups than `lookups_per_window` are handed to it a window at a time (`merged`)."""
    logs = logs or schema.ParsedLogs.none()
    capture_stats = capture_stats or {}
    with tempfile.TemporaryDirectory(prefix="dnsc-outofcore-", dir=spill) as tmp:
        tmp = Path(tmp)
        con = Engine(tmp / "spill")
        has_node = bool(con.execute("SELECT count(*) FROM (SELECT * FROM parquet_schema(?) WHERE name = 'node')",
                                    [[str(f) for f in files]]).fetchone()[0])
        events_view(con, files, nodes or {}, has_node)
        rows = con.execute("SELECT count(*) FROM ev").fetchone()[0]
        clocks, vantage_node = estimate_clocks(con, rows)
        capture = Capture(rows, clocks, vantage_node, is_one_place(con, bool(len(logs.records))), has_node)
        parts = max(1, math.ceil(rows / part_rows))
        offsets_table(con, clocks if clocks and not clocks.contradiction else None)
        write_parts(con, tmp / "parts", parts)
        control = control_rows(con)
        logs_of = split_logs(con, logs, parts)
        pieces, sizes, cut, spilled = [], [], 0, Spilled(tmp / "merged")
        for part in range(parts):
            found = sorted((tmp / "parts" / f"part={part}").glob("*.parquet"))
            rows_in_part = sum(pq_rows(f) for f in found)
            if not found:  # no event asked these questions: their log records match nothing, as in memory
                pieces.append(spilled.kept(unmatched(logs_of[part])))
                continue
            if rows_in_part <= 2 * part_rows:
                sizes.append(rows_in_part)
                frame = read_part(found)
                pieces.append(spilled.kept(trimmed(correlate(frame, logs_of[part], {}, servers, on_time_line=True, one_place=capture.one_place))))
                del frame
                continue
            cut += 1
            for span, frame in leg_slices(con, found, rows_in_part, part_rows, tmp / f"slices-{part}"):
                sizes.append(len(frame))
                piece = correlate(frame, logs_near(logs_of[part], span), {}, servers, on_time_line=True, one_place=capture.one_place)
                pieces.append(spilled.kept(trimmed(own_lookups(piece, frame, span))))
                del frame, piece
        shutil.rmtree(tmp / "parts", ignore_errors=True)  # the disk they took, before the merge takes its own
        correlation = merged(pieces, spilled, con, capture, control, logs, capture_stats, lookups_per_window, each_window)
        con.close()
    correlation.stats.update({"parts": parts, "largest_part": max(sizes, default=0)})
    if con.retried:
        correlation.stats["duckdb_retries"] = len(con.retried)
        correlation.warnings.append(
            f"out of core: DuckDB ran past its {DUCKDB_MEMORY} memory limit on two threads {len(con.retried)} times "
            f"({', '.join(sorted(set(con.retried)))}) and ran each of those steps again on one thread: slower, the same result")
    if cut:
        edge = sum(int(p.stats.get("slice_edge_traces", 0)) for p in pieces)
        correlation.stats.update({"parts_cut_by_time": cut, "slice_edge_traces": edge})
        if edge:
            correlation.warnings.append(
                f"out of core: {edge} unanswered lookups were near the end of the slice that kept them (a busy question's part is cut "
                f"by time, along its legs): an upstream exchange their server began after the slice's last leg ended (the stitching "
                f"waits up to {SERVER_WAIT_NS // 10**9} s for one) may be a lookup of its own")
    if max(sizes, default=0) > 2 * part_rows:
        correlation.warnings.append(
            f"out of core: one part held {max(sizes)} events at once (parts are meant to hold about {part_rows}): "
            + ("a slice of a busy question still held more: the legs in flight across its edges (very long lookups, or "
               "very many at one instant)" if cut else
               "parts are cut by question, and a few questions asked very often land together"))
    return correlation


@dataclass(frozen=True)
class Span:
    """A slice of a busy part: the lookups starting in [start, end) are its own; it reads every leg that is in
    flight during that span or starts before `reach` (the last end of the legs starting in it)."""

    start: int
    end: int
    reach: int

    @property
    def read_from(self) -> int:
        return self.start

    @property
    def read_to(self) -> int:
        return max(self.end, self.reach)


def leg_slices(con: Engine, files: list[Path], rows: int, part_rows: int, directory: Path):
    """Yield (Span, events) for a part too large to hold: its rows cut, along their legs, into slices of about
    `part_rows` events (module docstring), written in one DuckDB pass (a leg to each slice it is read by) and
    read back one at a time, in the in-memory path's order."""
    count = math.ceil(rows / part_rows)
    # buckets a quarter of a part: a window holds every column of its rows, and a part's worth of them neared DuckDB's limit
    legs = numbered_legs(con, files, 4 * count, directory.with_name(directory.name + "-legs"))
    listed = f"'{legs}/*.parquet'"
    con.execute(f"CREATE OR REPLACE TEMP VIEW legged AS SELECT * FROM read_parquet({listed})")
    # approximate quantiles (a t-digest: bounded memory, where an exact one holds every start): a slice need only be about
    # `part_rows` events
    cuts, lowest = con.bounded("slice edges", f"""
        SELECT approx_quantile(_leg_start, {[k / count for k in range(1, count)]}), min(_leg_start) FROM legged""").fetchone()
    edges, lowest = sorted({int(c) for c in cuts}), int(lowest)
    cores = [(a, b) for a, b in zip([lowest, *edges], [*edges, OPEN_END_NS]) if b > a]
    cores[0] = (-OPEN_END_NS, cores[0][1])  # the outer slices reach out to any time: a log record before the first packet is theirs
    reach = dict(con.bounded("slice reach", f"""
        SELECT {slice_of("_leg_start", [lo for lo, _ in cores])}, max(_leg_end) FROM legged GROUP BY 1""").fetchall())
    spans = [Span(lo, hi, int(reach.get(i) or hi)) for i, (lo, hi) in enumerate(cores)]
    # each leg to every slice that reads it, listed row by row: a range join against the spans sorted the whole busy part
    write_partitioned(con, "slices", f"""
        SELECT * EXCLUDE (_leg_start, _leg_end, _slices), CAST(unnest(_slices) AS INTEGER) AS slice
        FROM (SELECT *, {slices_reading("_leg_start", "_leg_end", spans)} AS _slices FROM legged)""", "slice", len(spans), directory)
    con.execute("DROP VIEW legged")
    shutil.rmtree(legs.parent)
    for i, span in enumerate(spans):
        found = sorted((directory / f"slice={i}").glob("*.parquet"))
        if found:
            yield span, read_part(found)
            for f in found:
                f.unlink()  # the disk a slice took is given back as the next is read


def slices_reading(start: str, end: str, spans: list[Span]) -> str:
    """SQL for the list of the slices that read a leg from `start` to `end` (contiguous `spans`, in order): those from
    the one its start falls in to the one its end falls in, and earlier ones whose reach passes its start, at most
    `back` slices earlier. Testing every slice on every row made the pass rows x slices; at 100M events (56 slices)
    that was not yet what the pass's time was spent on (bench/README.md), the writes were."""
    starts = [s.start for s in spans]
    back = max(bisect.bisect_right(starts, s.reach) - 1 - i for i, s in enumerate(spans))
    reads_from, reads_to = [s.read_from for s in spans], [s.read_to for s in spans]
    return (f"list_filter(range(greatest({slice_of(start, starts)} - {back}, 0), {slice_of(end, starts)} + 1), "
            f"lambda i: {start} < {reads_to}[i + 1] AND {end} >= {reads_from}[i + 1])")


def slice_of(column: str, starts: list[int], low: int = 0, high: int | None = None) -> str:
    """SQL for the index of the last of the ascending `starts` at or before `column` (the first is before any): a
    binary search written out as nested CASEs, so that each row makes log2(slices) comparisons, not one a slice."""
    high = len(starts) - 1 if high is None else high
    if low >= high:
        return str(low)
    middle = (low + high + 1) // 2
    return (f"CASE WHEN {column} >= {starts[middle]} THEN {slice_of(column, starts, middle, high)} "
            f"ELSE {slice_of(column, starts, low, middle - 1)} END")


def numbered_legs(con: Engine, files: list[Path], buckets: int, directory: Path) -> Path:
    """A directory of the part's rows, each with its leg's start and end (`_leg_start`, `_leg_end`): a leg is a
    client socket's DNS id's rows, and a new one starts after a response or a silence of LEG_GAP_NS (the
    pipeline's rule). The rows are first split by a hash of the client socket and id into `buckets`, and each
    bucket's legs are numbered alone: a leg never spans two buckets, and DuckDB's windows
    then sort a bucket in memory. One window over the whole of a busy part (the earlier way) spilled far past
    DuckDB's limit and took most of the 30M-event run's time (bench/README.md)."""
    split, legs = directory / "buckets", directory / "legs"
    legs.mkdir(parents=True)
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    write_partitioned(con, "leg buckets", f"""
        SELECT *, CAST(hash({CLIENT_IP}, {CLIENT_PORT}, dns_id, proto) % {buckets} AS INTEGER) AS _bucket
        FROM read_parquet([{listed}], hive_partitioning = false)""", "_bucket", buckets, split)
    for i, bucket in enumerate(sorted(split.glob("_bucket=*"))):
        con.bounded("leg numbering", f"""
            COPY (
                WITH keyed AS (
                    SELECT *, {CLIENT_IP} AS _cip, {CLIENT_PORT} AS _cport,
                           coalesce(CAST(ifname AS VARCHAR) = 'dns-proxy', false) AS _proxy
                    FROM read_parquet('{bucket}/*.parquet', hive_partitioning = false)),
                marked AS (
                    SELECT *, CASE WHEN lag(ts_ns) OVER w IS NULL OR ts_ns - lag(ts_ns) OVER w > {LEG_GAP_NS}
                                        OR (NOT qr AND NOT _proxy AND lag(qr) OVER w) THEN 1 ELSE 0 END AS _fresh
                    FROM keyed WINDOW w AS (PARTITION BY _cip, _cport, dns_id, proto ORDER BY ts_ns, qr)),
                numbered AS (
                    SELECT *, sum(_fresh) OVER (PARTITION BY _cip, _cport, dns_id, proto ORDER BY ts_ns, qr
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _leg
                    FROM marked)
                SELECT * EXCLUDE (_fresh, _proxy, _cip, _cport, _leg),
                       min(ts_ns) OVER l AS _leg_start, max(ts_ns) OVER l AS _leg_end
                FROM numbered WINDOW l AS (PARTITION BY _cip, _cport, dns_id, proto, _leg))
            TO '{legs / f"bucket-{i}.parquet"}' (FORMAT parquet, ROW_GROUP_SIZE {WRITE_ROW_GROUP})""")
        shutil.rmtree(bucket)  # the disk a bucket took is given back as its legs are written
    split.rmdir()
    return legs


LOG_SLACK_NS = 10**9  # a CoreDNS log line is stamped when it is written, after its response left: a second's leeway either side


def logs_near(logs: schema.ParsedLogs, span: Span) -> schema.ParsedLogs:
    """The log and errors records a slice's lookups may join: those written within its read window (with
    LOG_SLACK_NS), and those with no time (any slice may join them; `merged` keeps one of each, by `_row`)."""
    def near(frame: pd.DataFrame) -> pd.DataFrame:
        ts = frame["ts_ns"]
        inside = ts.isna() | ((ts >= span.read_from - LOG_SLACK_NS) & (ts < span.read_to + LOG_SLACK_NS))
        return frame[inside.to_numpy(dtype=bool)].reset_index(drop=True)

    return replace(logs, records=near(logs.records), errors=near(logs.errors))


def own_lookups(piece: Correlation, frame: pd.DataFrame, span: Span) -> Correlation:
    """A slice's correlation cut to what is its own: the lookups that started in its span (with their sightings,
    upstream exchanges and log records), the unmatched rows of its span, and the counts of its span's events
    alone, so that the slices of a part add up to what the part would have said in one piece."""
    own = piece.traces["t_start"].ge(span.start).to_numpy() & piece.traces["t_start"].lt(span.end).to_numpy()
    kept = set(piece.traces.loc[own, "trace_id"].tolist())

    def in_span(ts: pd.Series) -> np.ndarray:  # a log record with no time: every slice reads it, `merged` keeps one
        return (ts.ge(span.start) & ts.lt(span.end)).fillna(True).to_numpy(dtype=bool)

    def mine(table: pd.DataFrame, unmatched_in_span: bool = True) -> pd.DataFrame:
        if not len(table):
            return table
        ids = table["trace_id"].to_numpy()
        keep = np.isin(ids, list(kept)) | ((ids < 0) & (in_span(table["ts_ns"]) if unmatched_in_span else True))
        return table[keep]

    seen = mine(piece.sightings)
    core = frame[in_span(frame["ts_ns"])]
    kinds = core["kind"].astype(str)
    seen_kinds = seen["kind"].astype(str)
    flows = int((kinds == "flow").sum())
    mine_traces = piece.traces[own]
    unanswered = (mine_traces["outcome"].astype(str) != "answered").to_numpy()
    near_edge = int((unanswered & (mine_traces["t_start"].to_numpy() + SERVER_WAIT_NS > span.read_to)).sum()) if span.end < OPEN_END_NS else 0
    stats = {
        **piece.stats,
        "dns_packets": int((kinds == "dns").sum()),
        "icmp_errors": int((kinds == "icmp-error").sum()),
        "icmp_unmatched": int(((seen_kinds == "icmp-error") & (seen["trace_id"] < 0)).sum()),
        "decode_errors": int((~core["decoded"].astype(bool)).sum()),
        "slice_edge_traces": near_edge,
    }
    if "flows" in piece.stats:
        stats.update({"flows": flows, "flows_unmatched": int(((seen_kinds == "flow") & (seen["trace_id"] < 0)).sum()),
                      "flows_alone": int(((seen_kinds == "flow") & seen["leg"].notna()).sum()) if "leg" in seen else 0})
    drops = piece.connection_drops
    return replace(piece, traces=piece.traces[own], sightings=seen, upstream=mine(piece.upstream, unmatched_in_span=False),
                   logs=mine(piece.logs), errors=mine(piece.errors), stats=stats,
                   connection_drops=drops[in_span(drops["ts_ns"])] if len(drops) else drops)


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def unmatched(logs: schema.ParsedLogs) -> Correlation:
    """A part with log records and no event: every record unmatched (a trace of logs alone is for evidence with no
    packets at all, and this capture has packets)."""
    empty = correlate(None, None, {}, on_time_line=True)
    return replace(empty, logs=logs.records.assign(trace_id=-1), errors=logs.errors.assign(trace_id=-1),
                   stats={**empty.stats, "log_records_unmatched": len(logs.records)})


def trimmed(piece: Correlation) -> Correlation:
    """A part's correlation with only the sightings the diagnosis reads."""
    return replace(piece, sightings=kept_sightings(piece))


def merged(pieces: list[Correlation], spilled: Spilled, con: Engine, capture: Capture, control: pd.DataFrame,
           logs: schema.ParsedLogs, capture_stats: dict, lookups_per_window: int | None = None,
           each_window: Callable[[Correlation, set[int]], None] | None = None) -> Correlation:
    """One Correlation of the parts' (their tables `spilled`, merged by DuckDB): traces numbered again, connection
    attempts and cross-node segments judged over the whole capture, counts added up as the pipeline counts them.
    With `each_window`, a capture of more than `lookups_per_window` lookups is handed to it window by window (each a
    whole Correlation of its lookups, their rows and the unmatched rows of its time, and the capture's counts), and
    the Correlation returned holds the counts and warnings alone: memory holds one window's tables at a time."""
    if not pieces:
        pieces = [correlate(None, None, {}, on_time_line=True)]
    windows = spilled.sort_into_windows(con, lookups_per_window if each_window else None)
    attempts = connection_attempts(control, owners_of(con)) if len(control) else connection_attempts(as_events(schema.empty(schema.EVENTS)))
    drops = [p.connection_drops for p in pieces if len(p.connection_drops)]  # rows of no question: in any part
    connection_drops = pd.concat(drops, ignore_index=True) if drops else pieces[0].connection_drops
    starts = spilled.window_starts(con) if windows > 1 else np.zeros(0, dtype=np.int64)
    ends = spilled.capture_ends(con) if windows > 1 else None
    con.execute("SET memory_limit = '64MB'")  # DuckDB is done: what its buffers hold goes before the windows are read
    added, hidden, matched_logs = Counter(), Hidden(), False
    for window in range(windows):
        tables = window_tables(spilled, window, starts, (lookups_per_window or 0) // CONTEXT_SHARE)
        own = {name: owned_rows(frame, window) for name, frame in tables.items()}  # without the context around the window
        traces = or_empty(tables["traces"], pieces[0].traces)
        upstream = or_empty(tables["upstream"], pieces[0].upstream)
        sightings = or_empty(tables["sightings"], pieces[0].sightings)
        if ends is not None:  # the window's vantages' ends and roles, and one sighting of each role, wherever they fell
            named = pd.unique(np.concatenate([traces[c].astype(str).to_numpy() for c in ("client_vantage", "server", "reached")]))
            theirs = pd.concat([ends, spilled.ends_of([v for v in named.tolist() if v])], ignore_index=True)
            extra = theirs[(theirs[WINDOW] != window).to_numpy()].drop(columns=WINDOW)
            if len(extra):
                sightings = pd.concat([sightings, extra], ignore_index=True)
        records = once_each(tables["logs"], logs.records)
        errors = once_each(tables["errors"], logs.errors)
        del tables
        mine = in_window(starts, window)  # a row of no lookup (a TCP connection attempt, a dropped connection): by its time
        traces.index = traces["trace_id"].to_numpy()
        window_attempts = attempts[mine(attempts["ts_ns"])] if windows > 1 and len(attempts) else attempts
        traces, connects_unmatched = attach_connects(traces, window_attempts)
        traces, window_hidden = uncertain_segments_hidden(traces, capture.clocks, capture.vantage_node, own["traces"])
        traces.index = pd.RangeIndex(len(traces))  # reset_index would copy the whole table: hundreds of MB at 10M events
        traces = schema.conform(traces, schema.TRACES)
        upstream = schema.conform(upstream, schema.UPSTREAM)
        counted = stats_shared(logs, rows_of(records, own["logs"]), rows_of(errors, own["errors"]), rows_of(traces, own["traces"]),
                               rows_of(upstream, own["upstream"]), control, attempts, connects_unmatched)
        added.update({k: counted[k] for k in ADDED_UP})
        added["log_records_unmatched"] += int((rows_of(records, own["logs"])["trace_id"] < 0).sum())
        hidden += window_hidden
        matched_logs |= bool((rows_of(records, own["logs"])["trace_id"] >= 0).any())
        window_drops = connection_drops[mine(connection_drops["ts_ns"])] if windows > 1 and len(connection_drops) else connection_drops
        correlation = Correlation(traces=traces, sightings=sightings, upstream=upstream, logs=records, errors=errors,
                                  log_alerts=logs.alerts if window == 0 else [], connection_drops=window_drops)
        if windows == 1:
            break
        correlation.stats = {"packets": capture.rows, **counted}  # the window's own counts (the capture's are known after the last)
        each_window(correlation, set(traces["trace_id"].to_numpy()[own["traces"]].tolist()))
        del correlation, traces, upstream, sightings, records, errors
    total = {k: sum(int(p.stats.get(k, 0)) for p in pieces) for k in ("packets", "dns_packets", "icmp_errors", "icmp_unmatched", "decode_errors",
                                                                   "flows", "flows_alone", "flows_unmatched")}
    flows = {k: total[k] for k in ("flows", "flows_alone", "flows_unmatched")} if total["flows"] else {}
    shared = stats_shared(logs, logs.records.iloc[:0], logs.errors.iloc[:0], pieces[0].traces.iloc[:0], pieces[0].upstream.iloc[:0],
                          control, attempts, 0)
    stats = {
        "packets": capture.rows,
        "dns_packets": total["dns_packets"],
        "icmp_errors": total["icmp_errors"],
        "icmp_unmatched": total["icmp_unmatched"],
        **shared, **{k: added[k] for k in ADDED_UP},
        "log_records_unmatched": added["log_records_unmatched"],  # after a record two slices read is kept once
        "lost_samples": int(capture_stats.get("lost_samples", 0)),
        "decode_errors": int(capture_stats["decode_errors"]) if "decode_errors" in capture_stats else total["decode_errors"],
        **flows,
        **({"connection_drops": int(len(connection_drops))} if len(connection_drops) else {}),
        **({"clocks": capture.clocks.stats()} if capture.clocks else {}),
        "parts": len(pieces),
        **({"clock_sample": math.ceil(capture.rows / CLOCK_ROWS)} if capture.rows > CLOCK_ROWS else {}),
        **({"windows": windows} if windows > 1 else {}),
    }
    warnings = log_warnings(logs, added["log_records"], matched_logs, total["dns_packets"])
    warnings += clock_warnings(capture.clocks, hidden) if added["traces"] else []
    if flows:
        warnings.append(f"{total['flows']} Hubble flows (no question) were joined to the lookups of their own part only: "
                        "correlate them in memory (--events FILE) to join them to every lookup")
    if windows > 1:
        return Correlation(traces=pieces[0].traces.iloc[:0], sightings=pieces[0].sightings.iloc[:0], upstream=pieces[0].upstream.iloc[:0],
                           logs=logs.records.iloc[:0], errors=logs.errors.iloc[:0], stats=stats, unparsed=logs.unparsed,
                           warnings=warnings, log_alerts=logs.alerts, connection_drops=connection_drops)
    return replace(correlation, stats=stats, unparsed=logs.unparsed, warnings=warnings)


ADDED_UP = ("log_records", "error_records", "own_queries", "traces", "upstream_exchanges", "ambiguous", "tcp_connects_unmatched")
# Each window is diagnosed with the lookups around it (CONTEXT_NS either side, at most a CONTEXT_SHARE-th of a window
# each side, with their rows but not the unmatched rows of their time): a pattern across its edge (a search list's
# queries, an A lookup and its AAAA, a retry) is judged whole, and the findings keep to the window's own lookups
# (diagnose/windows.py).
CONTEXT_NS = 5 * 10**9
CONTEXT_SHARE = 10


def window_tables(spilled: Spilled, window: int, starts: np.ndarray, most: int) -> dict[str, pd.DataFrame | None]:
    """Every table's rows of `window`, and with several windows, of the lookups around it: those that started up to
    CONTEXT_NS before or after it, at most `most` a side (the nearest), with their rows in the other tables (by their
    trace ids: a window's traces are a run of them); each row with its window then."""
    if len(starts) < 2:
        return {name: spilled.window(name, window) for name in TABLES}
    since = [("t_start", ">=", int(starts[window]) - CONTEXT_NS)] if window > 0 else None
    until = [("t_start", "<", int(starts[window + 1]) + CONTEXT_NS)] if window + 1 < len(starts) else None
    traces = spilled.window("traces", window, since, until)
    if traces is None:
        return {name: None for name in TABLES}
    side = traces[WINDOW].to_numpy()
    before, after = np.flatnonzero(side < window), np.flatnonzero(side > window)
    keep = np.ones(len(traces), dtype=bool)
    keep[before[:max(0, len(before) - most)]] = False  # the nearest `most` a side
    keep[after[most:]] = False
    traces = traces[keep].reset_index(drop=True)
    ids = traces["trace_id"].to_numpy()
    side = traces[WINDOW].to_numpy()
    first = [("trace_id", ">=", int(ids[side < window].min()))] if (side < window).any() else [("trace_id", "<", -1)]
    last = [("trace_id", ">=", 0), ("trace_id", "<=", int(ids[side > window].max()))] if (side > window).any() else [("trace_id", "<", -1)]
    others = {name: spilled.window(name, window, first, last) for name in TABLES if name != "traces"}
    return {"traces": traces, **others}


def owned_rows(frame: pd.DataFrame | None, window: int) -> np.ndarray | None:
    """Which rows are `window`'s own (not the context around it), the column that says so dropped; None: all."""
    if frame is None or WINDOW not in frame:
        return None
    own = (frame[WINDOW] == window).to_numpy()
    frame.drop(columns=WINDOW, inplace=True)
    return own


def rows_of(frame: pd.DataFrame, keep: np.ndarray | None) -> pd.DataFrame:
    return frame if keep is None else frame[keep]


def in_window(starts: np.ndarray, window: int) -> Callable[[pd.Series], np.ndarray]:
    """Whether times fall in `window`: from its first lookup's start to the next window's (the first and the last
    open-ended); with one window, every time."""
    low = starts[window] if 0 < window < len(starts) else -OPEN_END_NS
    high = starts[window + 1] if window + 1 < len(starts) else OPEN_END_NS
    return lambda ts: ((ts >= low) & (ts < high)).fillna(window == 0).to_numpy(dtype=bool)


def or_empty(frame: pd.DataFrame | None, empty: pd.DataFrame) -> pd.DataFrame:
    return empty if frame is None else frame


def once_each(frame: pd.DataFrame | None, whole: pd.DataFrame) -> pd.DataFrame:
    """The log or errors records of every part with their merged trace ids, in the order they were read. A record
    two time slices of one part read is kept once, joined to a lookup if either joined it (it comes first)."""
    if frame is None:
        return whole.assign(trace_id=pd.Series(dtype=int))
    if "_row" in frame:
        frame = frame.drop_duplicates("_row").drop(columns="_row")
    return frame.reset_index(drop=True)
