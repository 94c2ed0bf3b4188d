"""A table of `schema.py` written to Parquet a batch at a time: `correlate --traces-out FILE.parquet` writes every
lookup's trace there as each window of a capture directory is diagnosed (only the traces the findings cite stay in
memory and in the other outputs). Its columns and types are the field list's, whatever a batch made of them: every
batch, even an empty one, has the same schema, so the file reads back as one table (pandas, DuckDB, Polars)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dnscorrelate import schema

ARROW_TYPES = {"object": "string", "category": "string", "int64": "int64", "Int64": "int64", "int32": "int32",
               "Int32": "int32", "bool": "bool", "boolean": "bool", "float64": "float64"}


def arrow_schema(table: list[schema.Field]):
    """The Arrow schema of a `schema.py` table: text as strings, nullable integers as integers with nulls."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, pa.type_for_alias(ARROW_TYPES[c.dtype])) for c in table])


class TableFile:
    """`write` frames of `table`'s columns as they come, one row group each; `close` once the last is in (a file not
    closed has no footer: callers write to a temporary name, outputs.written_whole)."""

    def __init__(self, path: str | Path, table: list[schema.Field]) -> None:
        import pyarrow.parquet as pq

        self.table = table
        self.schema = arrow_schema(table)
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        frame = schema.conform(frame, self.table)
        text = [c.name for c in self.table if c.dtype in ("object", "category")]
        frame = frame.assign(**{name: frame[name].astype(str) for name in text})  # a categorical's codes are not the text
        self.writer.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))
        self.rows += len(frame)

    def close(self) -> None:
        self.writer.close()
