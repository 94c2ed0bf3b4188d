"""The packet-event table's files: Parquet (capture counters in its metadata) and JSON.

One row per DNS packet per vantage point, one schema for every source: its
columns are declared in `dnscorrelate/schema.py` (EVENTS). Sources (eBPF
capture today; pcap, dnstap, Inspektor Gadget later) produce it; the
correlator reads it and knows nothing of where it came from. Repeated strings
are pandas categoricals, so a million rows stay cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.errors import EventsError  # noqa: F401 (re-exported)

COLUMNS: dict[str, str] = schema.dtypes(schema.EVENTS)
CATEGORIES = [name for name, dtype in COLUMNS.items() if dtype == "category"]

PKT_TYPES = ["HOST", "BROADCAST", "MULTICAST", "OTHERHOST", "OUTGOING", "LOOPBACK", "USER", "KERNEL"]


def empty_events() -> pd.DataFrame:
    return conform(schema.empty(schema.EVENTS))


def conform(frame: pd.DataFrame, handed_over: bool = False) -> pd.DataFrame:
    """`frame` with exactly the schema's columns, in order, with the schema's dtypes; the columns only some
    sources fill (`schema.SOURCE_SPECIFIC`) are added empty when it lacks them. The caller's frame is never
    changed; `handed_over`: the caller will not use it again, so its columns are taken, not copied (a reader's
    fresh frame: a million rows' copy is a tenth of a second)."""
    absent = [c for c in schema.EVENTS if c.name in schema.SOURCE_SPECIFIC and c.name not in frame.columns]
    if absent:
        frame = schema.with_empty_columns(frame, absent)  # shares the frame's own columns: no copy
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise EventsError(f"events table lacks columns: {', '.join(missing)}")
    if handed_over:
        frame = pd.DataFrame({name: frame[name].array for name in COLUMNS}, copy=False)  # its columns, a fresh index
        if all(frame[name].dtype == dtype for name, dtype in COLUMNS.items()):
            return frame
    out = frame[list(COLUMNS)]  # a new frame: the caller's is never changed
    for name, dtype in COLUMNS.items():
        if dtype == "category":
            if not isinstance(out[name].dtype, pd.CategoricalDtype):
                out[name] = out[name].astype(object).where(out[name].notna(), "").astype(str).astype("category")
        elif out[name].dtype != np.dtype(dtype):
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of this schema as one, sorted by time; categoricals of different categories are unified
    (a plain pd.concat would turn them into object columns)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_events()
    plain = [f.astype({c: object for c in CATEGORIES}) for f in frames]
    return conform(pd.concat(plain, ignore_index=True).sort_values("ts_ns", kind="stable"))


STATS_KEY = b"dnscorrelate.stats"


def save(frame: pd.DataFrame, path: str | Path, stats: dict | None = None) -> None:
    """Write events as Parquet (categoricals kept), with the capture's counters in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(conform(frame), preserve_index=False)
    metadata = {**(table.schema.metadata or {}), STATS_KEY: json.dumps(stats or {}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


class ParquetStream:
    """Events written to a Parquet file as they come, one row group per `write`, so a long capture never holds
    them all; the counters go in the file's key-value metadata at `close` (Parquet writes it in the footer,
    after the row groups). A file not closed has no footer and reads as no Parquet file at all; `capture`
    writes to a temporary name and renames it once closed."""

    def __init__(self, path: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        empty = pa.Schema.from_pandas(empty_events(), preserve_index=False)
        # Every row group in one schema: a part's categoricals may need int8 or int16 codes; int32 fits all.
        self.schema = pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), pa.string())) if pa.types.is_dictionary(f.type) else f
                                 for f in empty], metadata=empty.metadata)
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows = 0
        self.row_groups = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        if not len(frame):
            return
        table = pa.Table.from_pandas(conform(frame), preserve_index=False).cast(self.schema)
        self.writer.write_table(table, row_group_size=len(table))
        self.rows += len(frame)
        self.row_groups += 1

    def close(self, stats: dict | None = None) -> None:
        self.writer.add_key_value_metadata({STATS_KEY: json.dumps(stats or {}).encode()})
        self.writer.close()


def to_json(frame: pd.DataFrame, stats: dict | None = None) -> str:
    """One JSON document: {"events": [...], "stats": {...}}."""
    records = json.loads(conform(frame).to_json(orient="records"))
    return json.dumps({"events": records, "stats": stats or {}})


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Events and capture counters from a file written by `save` (Parquet) or `capture -o json` (JSON)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            # `save` puts the counters in the schema's metadata, ParquetStream in the file's footer
            footer = pq.ParquetFile(path).metadata.metadata or {}
            stats = json.loads((table.schema.metadata or {}).get(STATS_KEY) or footer.get(STATS_KEY, b"{}"))
            return conform(table.to_pandas()), stats
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or not isinstance(document.get("events"), list):
            raise ValueError('expected a JSON object with an "events" list')
        return conform(pd.DataFrame.from_records(document["events"], columns=list(COLUMNS))), document.get("stats", {})
    except (OSError, ValueError) as err:
        raise EventsError(f"{path}: cannot read events: {err}") from None
    except EventsError as err:
        raise EventsError(f"{path}: {err}") from None


MANIFEST = "manifest.json"  # a capture directory's counters and what each file holds (NodeParquetDir)


def arrow_type_fits(field_type, dtype: str) -> bool:
    """Whether a Parquet column of `field_type` can be read as the schema's `dtype`."""
    import pyarrow as pa

    if pa.types.is_dictionary(field_type):
        field_type = field_type.value_type
    if dtype == "category":
        return pa.types.is_string(field_type) or pa.types.is_large_string(field_type)
    if dtype == "bool":
        return pa.types.is_boolean(field_type)
    if dtype.startswith(("int", "uint")):
        return pa.types.is_integer(field_type)
    return pa.types.is_floating(field_type) or pa.types.is_integer(field_type)


def capture_files(directory: str | Path) -> list[Path]:
    """The Parquet files of a capture directory (`capture --agent -o DIR/`: one per node), each checked against
    the events' schema without reading its rows; an EventsError names the file and the field."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    files = sorted(p for p in directory.glob("*.parquet") if p.is_file())
    if not files:
        raise EventsError(f"{directory}: no Parquet file (*.parquet) in this directory: give the directory "
                          "`capture --agent -o DIR/` wrote, or one events file")
    for path in files:
        try:
            arrow = pq.read_schema(path)
        except (OSError, ValueError) as err:
            raise EventsError(f"{path}: cannot read it as Parquet: {err}") from None
        for name, dtype in COLUMNS.items():
            if name not in arrow.names:
                if name in schema.SOURCE_SPECIFIC:
                    continue
                raise EventsError(f"{path}: field `{name}` is missing (an events file of `capture` has every column of "
                                  "schema.EVENTS: dnscorrelate/README.md, \"Packet events\")")
            found = arrow.field(name).type
            if not arrow_type_fits(found, dtype):
                raise EventsError(f"{path}: field `{name}` is {found}, expected {dtype}")
    return files


def load_dir(directory: str | Path) -> tuple[pd.DataFrame, dict]:
    """Every file of a capture directory as one table in time order (the in-memory path), and its counters."""
    files = capture_files(directory)
    loaded = [load(path) for path in files]
    frame = concat([f for f, _ in loaded])
    return frame, capture_dir_stats(directory, [s for _, s in loaded])


def capture_dir_stats(directory: str | Path, per_file: list[dict] | None = None) -> dict:
    """A capture directory's counters: its manifest's when it has one, else each file's added up."""
    manifest = Path(directory) / MANIFEST
    if manifest.exists():
        try:
            return json.loads(manifest.read_text()).get("stats", {})
        except (OSError, ValueError) as err:
            raise EventsError(f"{manifest}: cannot read it: {err}") from None
    if per_file is None:
        per_file = [file_stats(p) for p in capture_files(directory)]
    summed: dict = {}
    for stats in per_file:
        for key, value in stats.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                summed[key] = summed.get(key, 0) + value
    return summed


def file_stats(path: Path) -> dict:
    """The counters a Parquet events file carries (schema or footer metadata)."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    found = (metadata.metadata or {}).get(STATS_KEY) or (pq.read_schema(path).metadata or {}).get(STATS_KEY, b"{}")
    return json.loads(found)


class NodeParquetDir:
    """A capture written per node as it streams (`capture --agent -o DIR/`): `DIR/NODE.parquet` for each node, a
    ParquetStream each (a row group per write, the node's counters in its footer), and `manifest.json` with the
    capture's counters and what each file holds. Files are written as `.NODE.parquet.partial` and renamed
    when closed, so the directory never shows a file without its footer."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.streams: dict[str, ParquetStream] = {}

    def path_of(self, node: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node) or "local"  # a capture on this machine: its rows name no node
        return self.directory / f"{safe}.parquet"

    def partial_of(self, node: str) -> Path:
        return self.directory / f".{self.path_of(node).name}.partial"

    def write(self, frame: pd.DataFrame) -> None:
        """Rows of any nodes (their `node` column says which), each into its node's file."""
        if not len(frame):
            return
        nodes = frame["node"].astype(str) if "node" in frame else pd.Series("", index=frame.index)
        for node, rows in frame.groupby(nodes.to_numpy(), sort=True):
            if node not in self.streams:
                self.streams[node] = ParquetStream(self.partial_of(node))
            self.streams[node].write(rows)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.streams.values())

    def close(self, stats: dict | None = None) -> None:
        """Each file closed with its node's counters (`stats["nodes"][NODE]`) and renamed; the manifest written."""
        stats = stats or {}
        per_node = stats.get("nodes", {}) if isinstance(stats.get("nodes"), dict) else {}
        files = {}
        for node, stream in self.streams.items():
            stream.close(per_node.get(node, {}))
            self.partial_of(node).replace(self.path_of(node))
            files[self.path_of(node).name] = {"node": node, "rows": stream.rows, "row_groups": stream.row_groups}
        manifest = {"format": "dnscorrelate capture directory", "version": 1, "files": files, "stats": stats}
        (self.directory / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
