"""Names as the workload meant them: each client's search list, and a name split into base and search domain."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts


def search_lists(traces: pd.DataFrame, facts: ClusterFacts) -> pd.DataFrame:
    """(client_ip, suffix) pairs: each client's search domains, from the facts, else the Kubernetes
    list for the namespace its names suggest (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`)."""
    d = facts.domain
    clients = pd.Series(traces["client_ip"].unique())
    known = clients[clients.isin(list(facts.search))]
    pairs = [(ip, s.rstrip(".").lower()) for ip in known for s in facts.search[ip]]
    unknown = traces[~traces["client_ip"].isin(set(known))]
    ns = unknown["qname"].str.lower().str.extract(rf"\.([a-z0-9-]+)\.svc\.{re.escape(d)}\.$")[0]
    guessed = (
        pd.DataFrame({"client_ip": unknown["client_ip"], "ns": ns}).dropna()
        .groupby(["client_ip", "ns"]).size().reset_index(name="n")
        .sort_values(["client_ip", "n"], ascending=[True, False]).drop_duplicates("client_ip")
    )
    pairs += [(ip, f"{n}.svc.{d}") for ip, n in zip(guessed["client_ip"], guessed["ns"])]
    pairs += [(ip, s) for ip in unknown["client_ip"].unique() for s in (f"svc.{d}", d)]
    return pd.DataFrame(pairs, columns=["client_ip", "suffix"])


def split_search(traces: pd.DataFrame, facts: ClusterFacts) -> pd.Series:
    """Each trace's base name where its qname is `base.<one of its client's search domains>.`, else ''."""
    if traces.empty:
        return pd.Series("", index=traces.index, dtype=object)
    asked = traces[["client_ip", "qname"]]
    distinct = asked.drop_duplicates()  # lookups repeat: split each distinct (client, name) once
    candidates = distinct.reset_index().merge(search_lists(traces, facts), on="client_ip")
    qname = candidates["qname"].str.lower()
    tail = "." + candidates["suffix"] + "."
    hit = candidates[[q.endswith(t) for q, t in zip(qname, tail)]].copy()
    hit["base"] = [q[: -len(t)] for q, t in zip(hit["qname"].str.lower(), "." + hit["suffix"] + ".")]
    longest = hit.assign(length=hit["suffix"].str.len()).sort_values("length", ascending=False).drop_duplicates("index")
    base = longest.set_index("index")["base"].reindex(distinct.index).fillna("")
    joined = asked.merge(distinct.assign(base=base.to_numpy()), on=["client_ip", "qname"], how="left")
    return pd.Series(joined["base"].to_numpy(), index=traces.index)


def lower(column: pd.Series) -> pd.Series:
    """`column.str.lower()`, each distinct name lowered once: rows share its string (a million rows of a few
    names are not a million new strings)."""
    codes, distinct = pd.factorize(column)
    lowered = np.append(distinct.str.lower().to_numpy(dtype=object), np.nan) if len(distinct) else np.array([np.nan], dtype=object)
    return pd.Series(lowered[codes], index=column.index, name=column.name)


def per_distinct(test, *columns: pd.Series) -> np.ndarray:
    """`test(*values)` for each row of `columns`, computed once per distinct combination of values."""
    combined = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes, distinct = pd.factorize(column)
        combined = combined * (len(distinct) + 1) + codes + 1
    _, first, rows = np.unique(combined, return_index=True, return_inverse=True)
    values = [column.to_numpy()[first] for column in columns]
    return np.array([test(*row) for row in zip(*values)], dtype=bool)[rows] if len(first) else np.zeros(len(combined), dtype=bool)
