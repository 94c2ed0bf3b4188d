"""Array helpers the steps share: categorical columns read at row indices, labels as shared strings, all
without a Python string per row."""

from __future__ import annotations

import numpy as np
import pandas as pd


def same_categories(a: pd.Series, b: pd.Series) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """One category list for two categorical columns, and each column's codes in it."""
    categories = a.cat.categories.union(b.cat.categories)
    return (categories, categories.get_indexer(a.cat.categories)[a.cat.codes.to_numpy()],
            categories.get_indexer(b.cat.categories)[b.cat.codes.to_numpy()])


def strings_at(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """A categorical column's values at `rows` as strings; "" where the row is -1 or the value is missing."""
    categories = np.append(column.cat.categories.to_numpy(dtype=object).astype(str), "")
    return categories[np.where(rows >= 0, column.cat.codes.to_numpy()[rows], -1)]


def texts(column: pd.Series) -> np.ndarray:
    """The column's values as an object array of strings. A categorical's rows share its categories' string
    objects: `astype(str)` makes a new Python string per row (about 60 bytes each, 60 MB a column at 1M rows)."""
    if isinstance(column.dtype, pd.CategoricalDtype) and column.cat.categories.dtype == object and not column.isna().any():
        return column.to_numpy(dtype=object)
    return column.astype(str).to_numpy()


def labels(condition: np.ndarray, yes, no) -> np.ndarray:
    """np.where for string labels, as an object array whose rows share one string per label (np.where on str
    makes a fixed-width unicode array, which pandas stores as a new Python string per row)."""
    yes, no = (value if isinstance(value, np.ndarray) else np.array(value, dtype=object) for value in (yes, no))
    return np.where(condition, yes, no)


def values_at(column: pd.Series, rows: np.ndarray, missing=np.nan) -> np.ndarray:
    """The column's values at `rows`; `missing` where the row is -1 (floats when that is NaN and any row is)."""
    values = column.to_numpy()[rows]
    absent = rows < 0
    if not absent.any():
        return values
    if missing is np.nan:
        values = values.astype(np.float64)
    values[absent] = missing
    return values


def codes_of(column: pd.Series, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A categorical column's codes, and the codes of the `wanted` strings in its categories (-1: absent)."""
    return column.cat.codes.to_numpy(), column.cat.categories.get_indexer(wanted)


def role_by_vantage(vantage: pd.Series, role: pd.Series) -> np.ndarray:
    """For each vantage category, its role as first seen ("" if never seen), with "" appended for code -1."""
    roles = len(role.cat.categories) + 1
    pairs = pd.unique(vantage.cat.codes.to_numpy().astype(np.int64) * roles + role.cat.codes.to_numpy() + 1)
    role_names = np.append("", role.cat.categories.to_numpy(dtype=object).astype(str))
    result = np.full(len(vantage.cat.categories) + 1, "", dtype=object)
    seen = np.zeros(len(result), dtype=bool)
    for pair in pairs:  # one per distinct (vantage, role): a handful
        v, r = divmod(int(pair), roles)
        if not seen[v]:
            result[v], seen[v] = role_names[r], True
    return result


def pair_strings(ips: pd.Series, ports: pd.Series, rows: np.ndarray) -> np.ndarray:
    """"ip:port" at each row ("" where the row is -1), built once per distinct pair."""
    found = rows >= 0
    pairs = ips.cat.codes.to_numpy()[rows[found]].astype(np.int64) << 17 | ports.to_numpy()[rows[found]]
    distinct, inverse = np.unique(pairs, return_inverse=True)
    names = ips.cat.categories.to_numpy(dtype=object).astype(str)
    labels = np.array([f"{names[p >> 17]}:{p & 0x1FFFF}" for p in distinct.tolist()], dtype=object)
    result = np.full(len(rows), "", dtype=object)
    result[found] = labels[inverse]
    return result


def nullable_int(value: pd.Series) -> pd.Series:
    return value.astype("Int64")
