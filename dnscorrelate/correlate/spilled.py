"""A capture directory's correlated parts, on disk: each part's tables are written out as soon as the part is
stitched (`Spilled.kept`), and merged by DuckDB at the end (`Spilled.merged`), which numbers the traces again
and sorts every table out of core. Memory holds one part's work at a time and, at the end, the merged tables
once, as they are read back, instead of every part's tables, their concatenation and their sort at once: at
100M events those were most of the 15.8 GB the out-of-core path took (bench/README.md).

Text is written as strings; the pandas dtypes that concatenating the parts' tables would make are given back when
the merged table is read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dnscorrelate.correlate.pipeline import Correlation

TABLES = ("traces", "upstream", "sightings", "logs", "errors")
WINDOW = "_window"  # the window of lookups a merged row belongs to (`Spilled.sort_into_windows`)
WINDOW_TIME = {"traces": "t_start", "upstream": "t_out", "sightings": "ts_ns", "logs": "ts_ns", "errors": "ts_ns"}  # an unmatched row's
WINDOW_ROW_GROUP = 65_536  # rows a merged file's row group holds: a window's rows are read by its groups' statistics
PIECE, POSITION = "_piece", "_pos"  # which part's table a row came from, and its place there: ties keep that order
NEW_ID = "CASE WHEN t.trace_id < 0 THEN t.trace_id ELSE coalesce(n.new_id, -1) END"  # -1: a trace the part did not keep
ORDER = {  # each merged table's order, as the in-memory path's; rows equal in it stay in the parts' order
    "traces": NEW_ID,
    "upstream": f"{NEW_ID}, t.leg_id",
    "sightings": "t.ts_ns",
    "logs": f"t._row, {NEW_ID} DESC",  # a record two slices of a part read: its joined copy first, kept (`merged_logs`)
    "errors": f"t._row, {NEW_ID} DESC",
}


class Spilled:
    """The tables of every part correlated so far, as Parquet files under `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.pieces = 0
        self.dtypes: dict[str, pd.Series] = {}  # each table's pandas dtypes, as concatenating the parts' would make them

    def kept(self, piece: Correlation) -> Correlation:
        """`piece` with its tables written out and emptied (their columns stay): its counts and warnings stay."""
        index, self.pieces = self.pieces, self.pieces + 1
        for name in TABLES:
            frame = getattr(piece, name)
            if len(frame):
                self.write(name, frame, index)
        return replace(piece, **{name: emptied(getattr(piece, name)) for name in TABLES},
                       connection_drops=compacted(piece.connection_drops))

    def write(self, name: str, frame: pd.DataFrame, index: int) -> None:
        known = self.dtypes.get(name)
        if known is not None and list(frame.columns) != list(known.index):
            raise ValueError(f"out of core: the parts' {name} tables have different columns")
        self.dtypes[name] = frame.dtypes if known is None else pd.Series(
            [concatenated(a, b) for a, b in zip(known, frame.dtypes)], index=known.index)
        frame = frame.assign(**{PIECE: index, POSITION: np.arange(len(frame))})
        try:
            columns = {c: as_arrow(frame[c]) for c in frame.columns}
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"out of core: a part's {name} table could not be written: {err}") from None
        (self.directory / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), self.directory / name / f"piece-{index:06d}.parquet")

    def files(self, name: str) -> list[Path]:
        return sorted((self.directory / name).glob("*.parquet"))

    def sort_into_windows(self, con, lookups_per_window: int | None) -> int:
        """Every part's tables merged (traces numbered again: `number_traces`), each into one Parquet file in ORDER's
        order, window by window: a window is `lookups_per_window` traces in order of their first query (one window:
        None) with their rows, and the unmatched rows of its time (from its first lookup's start to the next
        window's). A log or errors record two slices read is kept once, its joined copy. Returns the windows."""
        windows = self.number_traces(con, lookups_per_window)
        for name in TABLES:
            files = self.files(name)
            if not files:
                continue
            listed = ", ".join(f"'{f}'" for f in files)
            out = self.directory / f"{name}.parquet"
            once = (f"QUALIFY row_number() OVER (PARTITION BY t._row ORDER BY {NEW_ID} DESC) = 1"
                    if name in ("logs", "errors") and "_row" in self.dtypes[name] else "")
            con.bounded(f"merge of the parts' {name}", f"""
                COPY (SELECT t.* EXCLUDE ({PIECE}, {POSITION}) REPLACE ({NEW_ID} AS trace_id),
                             CASE WHEN {NEW_ID} >= 0 THEN ({NEW_ID}) // {lookups_per_window or 2**62} ELSE coalesce(w.win, 0) END AS {WINDOW}
                      FROM read_parquet([{listed}], union_by_name = true) t
                      LEFT JOIN new_ids n ON n.{PIECE} = t.{PIECE} AND n.old_id = t.trace_id
                      ASOF LEFT JOIN window_starts w ON CAST(t.{WINDOW_TIME[name]} AS BIGINT) >= w.t_from
                      {once}
                      ORDER BY {WINDOW}, {ORDER[name]}, t.{PIECE}, t.{POSITION})
                TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE {WINDOW_ROW_GROUP})""", before_retry=lambda: out.unlink(missing_ok=True))
            for f in files:
                f.unlink()  # the disk they took is given back before the next table is merged
        return windows

    def window(self, name: str, window: int, before: list | None = None, after: list | None = None) -> pd.DataFrame | None:
        """The rows of `name` in `window` (`sort_into_windows`) in ORDER's order, with the dtypes concatenating the
        parts' tables would give; None when no part had a row of it. With `before` or `after` (pyarrow filter terms),
        also the previous window's rows that meet `before` and the next one's that meet `after`, each row with its
        window."""
        path = self.directory / f"{name}.parquet"
        if not path.exists():
            return None
        filters = [[(WINDOW, "=", window)]]
        if before is not None and window > 0:
            filters.insert(0, [(WINDOW, "=", window - 1), *before])
        if after is not None:
            filters.append([(WINDOW, "=", window + 1), *after])
        table = pq.read_table(path, filters=filters)  # the row groups of these windows alone
        if before is None and after is None:
            table = table.drop_columns([WINDOW])
        frame = table.to_pandas(self_destruct=True)  # one column at a time: the Arrow copy goes as pandas' comes
        del table
        return with_dtypes(frame, self.dtypes[name])

    def capture_ends(self, con) -> pd.DataFrame | None:
        """The sightings every window's diagnosis reads whatever lookups it holds (`outofcore.kept_sightings`): each
        vantage's last (where its capture ended) and one of each of its roles, written to a file of their own by
        vantage (`ends_of` reads a window's: a fleet has a vantage a pod, hundreds of thousands); returned, one
        sighting of each role, which every window reads (whether a node was captured at all). None: no sightings."""
        path = self.directory / "sightings.parquet"
        if not path.exists():
            return None
        ends = self.directory / "ends.parquet"
        con.bounded("the vantages' last sightings", f"""
            COPY (SELECT * EXCLUDE (_last, _first) FROM (
                      SELECT *, row_number() OVER (PARTITION BY vantage ORDER BY ts_ns DESC) AS _last,
                                row_number() OVER (PARTITION BY vantage, role ORDER BY ts_ns) AS _first
                      FROM read_parquet('{path}'))
                  WHERE _last = 1 OR _first = 1 ORDER BY vantage)
            TO '{ends}' (FORMAT parquet, ROW_GROUP_SIZE {WINDOW_ROW_GROUP})""", before_retry=lambda: ends.unlink(missing_ok=True))
        frame = con.execute(f"SELECT * FROM read_parquet('{ends}') QUALIFY row_number() OVER (PARTITION BY role ORDER BY ts_ns) = 1").df()
        return self.with_window_dtypes(frame)

    def ends_of(self, vantages: list[str]) -> pd.DataFrame:
        """`capture_ends`' sightings of these vantages."""
        table = pq.read_table(self.directory / "ends.parquet", filters=[("vantage", "in", vantages)])
        return self.with_window_dtypes(table.to_pandas(self_destruct=True))

    def with_window_dtypes(self, frame: pd.DataFrame) -> pd.DataFrame:
        return with_dtypes(frame, pd.concat([self.dtypes["sightings"], pd.Series({WINDOW: np.dtype("int64")})]))

    def number_traces(self, con, lookups_per_window: int | None = None) -> int:
        """Table `new_ids`: each part's trace ids and their merged numbers, in order of each trace's first query,
        then the client's address and port (the pipeline's order), then the parts' own order; table
        `window_starts`: each window's first lookup's start. Returns how many windows (at least one)."""
        files = self.files("traces")
        if not files:
            con.execute(f"CREATE OR REPLACE TEMP TABLE new_ids ({PIECE} BIGINT, old_id BIGINT, new_id BIGINT, t_start BIGINT)")
            con.execute("CREATE OR REPLACE TEMP TABLE window_starts (win BIGINT, t_from BIGINT)")
            return 1
        listed = ", ".join(f"'{f}'" for f in files)
        con.bounded("numbering of the merged traces", f"""
            CREATE OR REPLACE TEMP TABLE new_ids AS
            SELECT {PIECE}, trace_id AS old_id,
                   row_number() OVER (ORDER BY t_start, client_ip, client_port, {PIECE}, {POSITION}) - 1 AS new_id,
                   CAST(t_start AS BIGINT) AS t_start
            FROM read_parquet([{listed}], union_by_name = true)""")
        per_window = lookups_per_window or 2**62
        con.execute(f"""CREATE OR REPLACE TEMP TABLE window_starts AS
                        SELECT new_id // {per_window} AS win, min(t_start) AS t_from FROM new_ids GROUP BY 1
                        HAVING min(t_start) IS NOT NULL""")
        traces = int(con.execute("SELECT count(*) FROM new_ids").fetchone()[0])
        return max(1, -(-traces // per_window))

    def window_starts(self, con) -> np.ndarray:
        """Each window's first lookup's start (ns), in window order."""
        return con.execute("SELECT t_from FROM window_starts ORDER BY win").fetchnumpy()["t_from"]


def emptied(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s columns with no rows and nothing of its data (`compacted`)."""
    return compacted(frame.iloc[:0])


def compacted(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s rows holding nothing else of the part: a copy (a slice is a view that would keep the whole table's
    arrays alive), and categoricals with only the categories its rows use (each part's distinct addresses, names
    and vantages: kept for every part until the merge, they grew with the capture)."""
    kept = frame.copy()
    for name in kept.columns:
        if isinstance(kept[name].dtype, pd.CategoricalDtype):
            kept[name] = kept[name].cat.remove_unused_categories()
    return kept


def concatenated(a, b):
    """The dtype pandas gives a column of dtype `a` concatenated with one of `b` (the in-memory merge's)."""
    return pd.concat([pd.Series([], dtype=a), pd.Series([], dtype=b)]).dtype


def as_arrow(column: pd.Series) -> pa.Array:
    """A table's column as Arrow writes it: text (categorical or not) as strings, a column of nothing but nulls too
    (another part's may hold text); numbers as they are: DuckDB widens a column some parts hold as integers and
    others as floats when it reads them together (`union_by_name`)."""
    array = pa.array(column, from_pandas=True)
    if pa.types.is_dictionary(array.type) or pa.types.is_null(array.type) or pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    return array


def with_dtypes(frame: pd.DataFrame, dtypes: pd.Series) -> pd.DataFrame:
    """`frame` with the pandas dtypes the parts' tables had: text columns (read as dictionaries) back as objects, nulls
    as None, a categorical one categorical (over every part's values), numbers with nulls (Int64) as they were."""
    for column, dtype in dtypes.items():
        if column not in frame or frame[column].dtype == dtype:
            continue
        read = frame[column]
        if isinstance(dtype, pd.CategoricalDtype):
            frame[column] = read.astype("category")
        elif isinstance(read.dtype, pd.CategoricalDtype) and dtype == object:  # text read as a dictionary: its rows share its strings
            frame[column] = read.astype(object).where(read.notna(), None)
        else:
            frame[column] = read.astype(dtype)
    return frame
