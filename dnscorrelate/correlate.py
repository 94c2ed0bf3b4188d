"""Correlate: one Trace per client request, from packet events and CoreDNS's own log lines.

How (all vectorized with pandas/numpy; no Python loop per event):

1. **Legs.** A leg is one lookup: a client's query and its answer, or its
   timeout. Its packets share the client key (client ip, client port, DNS id,
   protocol; the client is the source of a query and the destination of a
   response) at every vantage point (DNAT rewrites only the server side).
   Clients, NodeLocal DNS's TCP connections and CoreDNS's pooled upstream
   sockets reuse keys, so, taking one key's packets in time order, a **new
   lookup starts** at a query that follows a response (the previous lookup
   was answered), at a query asking another question (qname, qtype), and at
   any packet more than LEG_GAP_NS after the key's previous one (the previous
   lookup timed out). A query repeated with the same question and no response
   in between (a retransmission) stays in its lookup. The rule is the same at
   every vantage and for upstream legs, which are legs like any other.
2. **Each leg's server** is the vantage that emitted its first response; for an
   unanswered leg, the deepest vantage its query reached.
3. **Upstream legs.** A leg whose originator is another leg's server, asking the
   same question inside that leg's window at the server, is that leg's upstream
   exchange (CoreDNS uses a new id and port upstream). Found with merge_asof; when
   the windows of several candidate parents overlap, the match is marked
   `ambiguous`, not guessed silently. Links are followed to the root, so NodeLocal
   DNS → CoreDNS → upstream chains end up in one trace.
4. **Logs.** A CoreDNS `log` record joins the leg with its client key at that
   replica, nearest in time; `errors` records join by replica and question,
   nearest the response (the log line) or else after the query. With logs
   only, each log record is a trace of its own, and so is each errors line
   that no log record explains. CoreDNS's own queries (its loop probe, forward
   health checks) are traces too, marked by `purpose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.schema import ParsedLogs

LEG_GAP_NS = 30 * 10**9  # a key not seen for this long starts a new leg
SERVER_WAIT_NS = 10 * 10**9  # how long after a query arrives its upstream exchanges may start, when it got no answer
LOG_MATCH_NS = 5 * 10**9  # a log line is written within this much of the response leaving the replica
ERROR_MATCH_NS = 15 * 10**9  # an errors line is written within this much after its query arrived
ERROR_NEAR_RESPONSE_NS = 10**9  # ... and within this much of the response (its log line), before or after


@dataclass
class Correlation:
    traces: pd.DataFrame  # one row per client request: schema.TRACES
    hops: pd.DataFrame  # packet events with trace_id, leg_id, depth; icmp errors included
    upstream: pd.DataFrame  # one row per upstream exchange: schema.UPSTREAM
    logs: pd.DataFrame  # schema.LOG_RECORDS, with the trace_id each joined (-1: none)
    errors: pd.DataFrame  # schema.LOG_ERRORS, with trace_id
    stats: dict = field(default_factory=dict)
    unparsed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # what the evidence could not settle, for the person reading
    log_alerts: list = field(default_factory=list)  # CoreDNS notices that tell something (ParsedLogs.alerts)

    def restricted_to(self, trace_ids: set[int]) -> Correlation:
        """The traces in `trace_ids`, their hops and upstream exchanges; logs, errors and counts stay whole."""
        return replace(self, traces=self.traces[self.traces["trace_id"].isin(trace_ids)],
                       hops=self.hops[self.hops["trace_id"].isin(trace_ids)],
                       upstream=self.upstream[self.upstream["trace_id"].isin(trace_ids)])


# --- legs --------------------------------------------------------------------


def same_categories(a: pd.Series, b: pd.Series) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """One category list for two categorical columns, and each column's codes in it."""
    categories = a.cat.categories.union(b.cat.categories)
    return (categories, categories.get_indexer(a.cat.categories)[a.cat.codes.to_numpy()],
            categories.get_indexer(b.cat.categories)[b.cat.codes.to_numpy()])


def add_client_key(dns: pd.DataFrame) -> pd.DataFrame:
    """Columns client_ip/client_port and a `key` integer shared by every sighting of one exchange, added
    in place (the caller owns `dns`). Built from category codes: no string per packet."""
    response = dns["qr"].to_numpy()
    ips, src, dst = same_categories(dns["src_ip"], dns["dst_ip"])
    client = np.where(response, dst, src).astype(np.int64)
    port = np.where(response, dns["dst_port"].to_numpy(), dns["src_port"].to_numpy()).astype(np.int64)
    tcp = (dns["proto"] == "tcp").to_numpy().astype(np.int64)
    dns["client_ip"] = pd.Categorical.from_codes(client, ips)
    dns["client_port"] = port
    dns["key"] = (client << 34) | (port << 18) | ((dns["dns_id"].to_numpy().astype(np.int64) & 0xFFFF) << 2) | tcp
    return dns


def assign_legs(dns: pd.DataFrame) -> pd.DataFrame:
    """`leg` numbers, one per lookup (the module docstring's identity rule); rows in time order.
    The column is added in place when `dns` already is in time order (the caller owns it)."""
    if not dns["ts_ns"].is_monotonic_increasing:
        dns = dns.sort_values("ts_ns", kind="stable")
    dns["leg"] = lookup_numbers(dns["key"].to_numpy(), dns["ts_ns"].to_numpy(), dns["qr"].to_numpy(), question_of(dns))
    return dns


def question_of(dns: pd.DataFrame) -> np.ndarray:
    """An integer per row, equal for rows asking the same (qname, qtype), and -1 where the name could not be
    decoded (a cut packet: it asks nothing we can compare). From category codes, no strings."""
    names, unnamed = codes_of(dns["qname"], np.array([""]))
    qtype = dns["qtype"].cat.codes.to_numpy().astype(np.int64) + 1
    question = names.astype(np.int64) * (len(dns["qtype"].cat.categories) + 1) + qtype
    return np.where((names < 0) | (names == unnamed[0]), -1, question)


def lookup_numbers(key: np.ndarray, ts: np.ndarray, response: np.ndarray, question: np.ndarray) -> np.ndarray:
    """A number per row, shared by the sightings of one lookup. Within one key's rows in time order (queries
    before responses at the same instant), a row starts a new lookup when it is a query that follows a
    response (the previous lookup was answered), a query asking another question, or any row more than
    LEG_GAP_NS after the key's previous one (the previous lookup timed out). O(rows log rows), no loop."""
    order = np.lexsort((response, ts, key))
    k, t, r, q = key[order], ts[order], response[order], question[order]
    new = np.ones(len(key), dtype=bool)
    query_after = ~r[1:]
    new[1:] = (
        (k[1:] != k[:-1])
        | (t[1:] - t[:-1] > LEG_GAP_NS)
        | (query_after & r[:-1])
        | (query_after & ~r[:-1] & (q[1:] != q[:-1]) & (q[1:] >= 0) & (q[:-1] >= 0))
    )
    number = np.empty(len(key), dtype=np.int64)
    number[order] = np.cumsum(new) - 1
    return number


class LegRows:
    """Packet rows grouped by leg, time order kept inside each leg: each leg's first or last row meeting a
    condition, in O(rows) numpy. Legs are numbered by `slot`, in order of their first packet."""

    def __init__(self, leg: np.ndarray) -> None:
        order = np.argsort(leg, kind="stable")  # rows are in time order, and stay so within a leg
        by_leg = leg[order]
        starts = np.ones(len(leg), dtype=bool)
        starts[1:] = by_leg[1:] != by_leg[:-1]
        first_row = order[starts]
        appearance = np.argsort(first_row, kind="stable")
        rank = np.empty(len(appearance), dtype=np.int64)
        rank[appearance] = np.arange(len(appearance))
        self.slot = np.empty(len(leg), dtype=np.int64)
        self.slot[order] = rank[np.cumsum(starts) - 1]
        self.order = order  # each leg's rows contiguous, in time order
        self.legs = by_leg[starts][appearance]
        self.count = len(self.legs)

    def first(self, mask: np.ndarray | None = None, last: bool = False) -> np.ndarray:
        """Per leg, the row index of its first (or last) row where `mask` holds; -1 where none does."""
        rows = self.order if mask is None else self.order[mask[self.order]]
        slots = self.slot[rows]
        edge = np.ones(len(rows), dtype=bool)
        if last:
            edge[:-1] = slots[1:] != slots[:-1]
        else:
            edge[1:] = slots[1:] != slots[:-1]
        found = np.full(self.count, -1, dtype=np.int64)
        found[slots[edge]] = rows[edge]
        return found

    def matches(self, codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Rows whose code equals their leg's entry in `wanted` (one code per leg)."""
        return codes == wanted[self.slot]


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


def describe_legs(dns: pd.DataFrame) -> pd.DataFrame:
    """One row per leg, in order of the legs' first packets: who asked, what, who served it, and when each
    step happened. Rows of `dns` are in time order."""
    rows = LegRows(dns["leg"].to_numpy())
    qr = dns["qr"].to_numpy()
    query, response = ~qr, qr
    ts = dns["ts_ns"]
    vantage = dns["vantage"]
    role = dns["role"]

    first = rows.first()
    first_query = rows.first(query)
    deepest = rows.first(query, last=True)
    responder = rows.first(response)
    legs = {
        "client_ip": strings_at(dns["client_ip"], first),
        "client_port": dns["client_port"].to_numpy()[first].astype("int32"),
        "dns_id": dns["dns_id"].to_numpy()[first],
        "proto": strings_at(dns["proto"], first),
        "originator": strings_at(vantage, first),
        "origin_role": strings_at(role, first),
        "t_start": ts.to_numpy()[first],
    }
    qname_codes, unnamed = codes_of(dns["qname"], np.array([""]))
    named = rows.first(qname_codes != unnamed[0])
    legs["qname"] = strings_at(dns["qname"], named)
    legs["qtype"] = strings_at(dns["qtype"], named)
    legs["dst_ip"] = strings_at(dns["dst_ip"], first_query)
    legs["dst_port"] = values_at(dns["dst_port"], first_query, missing=0).astype("int32")
    legs["reached"] = strings_at(vantage, deepest)
    legs["reached_role"] = strings_at(role, deepest)
    legs["responder"] = strings_at(vantage, responder)
    legs["t_server_out"] = values_at(ts, responder)
    legs["server_rcode"] = strings_at(dns["rcode"], responder)
    legs["server"] = np.where(legs["responder"] != "", legs["responder"], legs["reached"])
    vantage_codes, server_codes = codes_of(vantage, legs["server"])
    legs["server_role"] = role_by_vantage(vantage, role)[server_codes]
    legs["t_server_in"] = values_at(ts, rows.first(query & rows.matches(vantage_codes, server_codes)))
    home = rows.first(response & rows.matches(vantage_codes, codes_of(vantage, legs["originator"])[1]))
    legs["t_client_in"] = values_at(ts, home)
    legs["client_latency_ns"] = values_at(dns["latency_ns"], home)
    for column in ("rcode", "answers"):
        home_known = (home >= 0) & (dns[column].cat.codes.to_numpy()[home] >= 0)
        legs[column] = strings_at(dns[column], np.where(home_known, home, responder))
    final = np.where(home >= 0, home, responder)
    legs["ancount"] = values_at(dns["ancount"], final, missing=0).astype(int)
    for flag in ("tc", "aa"):
        legs[flag] = values_at(dns[flag], final, missing=False).astype(bool)
    legs["responses_seen"] = np.bincount(rows.slot[response], minlength=rows.count)

    # Where a node rewrote the destination (Service DNAT) and, upstream, the source (masquerade).
    dst_codes, leg_dst_codes = codes_of(dns["dst_ip"], legs["dst_ip"])
    dnat = rows.first(query & ~rows.matches(dst_codes, leg_dst_codes))
    legs["dnat_to"] = pair_strings(dns["dst_ip"], dns["dst_port"], dnat)
    legs["dnat_at"] = strings_at(vantage, dnat)
    at_node = query & (role == "node").to_numpy()
    legs["seen_at_node"] = rows.first(at_node) >= 0
    legs["forwarded_by_node"] = rows.first(at_node & (dns["pkt_type"] == "OUTGOING").to_numpy()) >= 0
    return pd.DataFrame(legs, index=pd.Index(rows.legs, name="leg"), copy=False)


# --- linking upstream legs to their parents -----------------------------------


def question_codes(legs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of (server, qname, qtype), the question a leg asked its server, and of (originator,
    qname, qtype), the one it asks from where it started: equal codes are the same question at the same place."""
    places = pd.factorize(np.concatenate([legs["server"].to_numpy(), legs["originator"].to_numpy()]))[0].astype(np.int64)
    name = pd.factorize(legs["qname"])[0].astype(np.int64)
    qtype = pd.factorize(legs["qtype"])[0].astype(np.int64)
    asked = name * (qtype.max(initial=0) + 1) + qtype
    span = asked.max(initial=0) + 1
    return places[: len(legs)] * span + asked, places[len(legs):] * span + asked


def link_parents(legs: pd.DataFrame, candidates: pd.Series | None = None) -> pd.DataFrame:
    """For each leg, the leg it is an upstream exchange of (-1 if none), and whether the pick was ambiguous.
    `candidates` (a mask) limits which legs may be children. A child asks, from its originator, the question
    its parent was asked at that parent's server (names are lower-cased at decode), while the parent waits."""
    result = pd.DataFrame({"parent": -1, "ambiguous": False}, index=legs.index)
    at_server, from_origin = question_codes(legs)
    t_server_in = legs["t_server_in"].to_numpy(dtype=np.float64)
    may_parent = (legs["server"] != legs["originator"]).to_numpy() & ~np.isnan(t_server_in)
    may_child = np.ones(len(legs), dtype=bool) if candidates is None else candidates.to_numpy(dtype=bool)
    may_parent &= np.isin(at_server, from_origin[may_child])
    may_child &= np.isin(from_origin, at_server[may_parent])
    if not may_parent.any() or not may_child.any():
        return result

    window_end = legs["t_server_out"].to_numpy(dtype=np.float64)
    window_end = np.where(np.isnan(window_end), t_server_in + SERVER_WAIT_NS, window_end)
    right = pd.DataFrame({
        "question": at_server[may_parent], "t_server_in": t_server_in[may_parent].astype(np.int64),
        "t_window_end": window_end[may_parent], "parent": legs.index.to_numpy()[may_parent],
    }).sort_values("t_server_in", kind="stable")
    # An earlier candidate whose window is still open when a later one starts makes the later ambiguous.
    right["open_before"] = right.groupby("question")["t_window_end"].cummax().groupby(right["question"]).shift(1)
    left = pd.DataFrame({
        "question": from_origin[may_child], "t_start": legs["t_start"].to_numpy()[may_child], "child": legs.index.to_numpy()[may_child],
    }).sort_values("t_start", kind="stable")
    matched = pd.merge_asof(left, right, left_on="t_start", right_on="t_server_in", by="question", direction="backward")
    matched = matched[(matched["parent"].notna() & (matched["t_start"] <= matched["t_window_end"]) & (matched["parent"] != matched["child"])).to_numpy()]
    result.loc[matched["child"].to_numpy(), "parent"] = matched["parent"].astype(int).to_numpy()
    result.loc[matched["child"].to_numpy(), "ambiguous"] = (matched["open_before"] >= matched["t_start"]).to_numpy()
    return result


def snat_continuations(legs: pd.DataFrame, links: pd.DataFrame) -> pd.Series:
    """Legs that are their parent seen after source NAT (masquerade keeps the DNS id and the port):
    the leg to merge each into, or -1."""
    parent = links["parent"]
    linked = parent >= 0
    target = legs.reindex(parent.where(linked, legs.index[0]).to_numpy())
    same = (
        linked.to_numpy()
        & (legs["origin_role"].to_numpy() == "node")
        & (legs["dns_id"].to_numpy() == target["dns_id"].to_numpy())
        & (legs["client_port"].to_numpy() == target["client_port"].to_numpy())
    )
    return pd.Series(np.where(same, parent.to_numpy(), -1), index=legs.index)


def roots_of(parent: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The root leg of every leg and its depth (0 for roots), following parent links."""
    up = parent.index.get_indexer(parent.to_numpy())  # -1 where there is no parent
    root = np.arange(len(up))
    depth = np.zeros(len(up), dtype=int)
    for _ in range(8):  # pod -> nodelocal -> coredns -> upstream is three links
        step = up[root]
        moving = step >= 0
        if not moving.any():
            break
        root = np.where(moving, step, root)
        depth += moving
    return parent.index.to_numpy()[root], depth


# --- joining CoreDNS's account -------------------------------------------------


def replica_of(vantage: pd.Series) -> pd.Series:
    """`coredns-0` for `kube-system/coredns-0`; `nodelocal-node-0` for a node (NodeLocal DNS lives there)."""
    names = {v: v.split("/")[-1] if "/" in v else "nodelocal-" + v for v in pd.unique(vantage)}
    return vantage.map(names)


def join_logs(legs: pd.DataFrame, records: pd.DataFrame, guessed_sources: set[str] = frozenset()) -> pd.Series:
    """For each log record, the leg it describes (-1 if none): same client key and replica, nearest in time.
    Records from `guessed_sources` (a replica taken from a file's name) may join any replica's leg."""
    result = pd.Series(-1, index=records.index, dtype=int)
    if records.empty or legs.empty:
        return result
    logs = records.assign(
        key=records["remote_ip"].astype(str) + "|" + records["remote_port"].astype(str) + "|" + records["id"].astype(str) + "|" + records["proto"].astype(str),
    )
    candidates = legs.assign(
        key=legs["client_ip"] + "|" + legs["client_port"].astype(str) + "|" + legs["dns_id"].astype(str) + "|" + legs["proto"],
        replica=replica_of(legs["server"]),
        t=legs["t_server_out"].fillna(legs["t_server_in"]).fillna(legs["t_start"]).astype("int64"),
    ).reset_index()
    timed = logs["ts_ns"].notna()
    if timed.any():
        left = logs[timed].assign(t=logs.loc[timed, "ts_ns"].astype("int64")).reset_index().sort_values("t")
        right = candidates.sort_values("t")[["key", "t", "leg", "replica"]].rename(columns={"replica": "leg_replica"})
        matched = pd.merge_asof(left, right, on="t", by="key", direction="nearest", tolerance=LOG_MATCH_NS)
        same_replica = ((matched["replica"].astype(str) == "") | (matched["replica"].astype(str) == matched["leg_replica"])
                        | matched["source"].astype(str).isin(guessed_sources))
        matched = matched[matched["leg"].notna() & same_replica]
        result.loc[matched["index"].to_numpy()] = matched["leg"].astype(int).to_numpy()
    untimed = logs[~timed].reset_index()
    if len(untimed):
        unique = candidates.drop_duplicates("key", keep="first")[["key", "leg"]]
        matched = untimed.merge(unique, on="key", how="inner")
        result.loc[matched["index"].to_numpy()] = matched["leg"].astype(int).to_numpy()
    return result


def join_errors(traces: pd.DataFrame, errors: pd.DataFrame, records: pd.DataFrame | None = None) -> pd.Series:
    """For each errors record, the trace at that replica with the same question: the one whose response
    (for logs, its log line) is nearest, within ERROR_NEAR_RESPONSE_NS (CoreDNS writes the errors line
    next to the log line, before or after it); else the last one that started before it, within
    ERROR_MATCH_NS (a query never answered). An untimed line joins the log record of its question nearest
    to it in its file (`records`, with their trace ids), else the last trace with its question."""
    result = pd.Series(-1, index=errors.index, dtype=int)
    if errors.empty or traces.empty:
        return result
    right = traces.assign(
        question=traces["replica"] + "|" + traces["qname"].str.lower() + "|" + traces["qtype"],
        t=traces["t_start"].astype("int64"),
        t_out=traces["t_server_out"].astype("Int64"),
    ).reset_index()[["question", "t", "t_out", "trace_id"]].sort_values("t")
    left = errors.assign(question=errors["replica"].astype(str) + "|" + errors["qname"].astype(str) + "|" + errors["qtype"].astype(str)).reset_index()
    timed = left["ts_ns"].notna()
    if timed.any():
        l = left[timed].assign(t=left.loc[timed, "ts_ns"].astype("int64"))
        answered = right[right["t_out"].notna()].assign(t=lambda f: f["t_out"].astype("int64")).sort_values("t")
        near = pd.merge_asof(l.sort_values("t"), answered[["question", "t", "trace_id"]], on="t", by="question",
                             direction="nearest", tolerance=ERROR_NEAR_RESPONSE_NS)
        near = near[near["trace_id"].notna()]
        result.loc[near["index"].to_numpy()] = near["trace_id"].astype(int).to_numpy()
        rest = l[~l["index"].isin(near["index"])].sort_values("t")
        after = pd.merge_asof(rest, right[["question", "t", "trace_id"]], on="t", by="question", direction="backward", tolerance=ERROR_MATCH_NS)
        after = after[after["trace_id"].notna()]
        result.loc[after["index"].to_numpy()] = after["trace_id"].astype(int).to_numpy()
    untimed = left[~timed]
    if len(untimed) and records is not None and len(records):
        nearby = nearest_lines(untimed, records)
        result.loc[nearby.index] = nearby.to_numpy()
        untimed = untimed[~untimed["index"].isin(nearby.index)]
    if len(untimed):
        last = right.drop_duplicates("question", keep="last")
        matched = untimed.merge(last, on="question", how="inner")
        result.loc[matched["index"].to_numpy()] = matched["trace_id"].astype(int).to_numpy()
    return result


def nearest_lines(errors: pd.DataFrame, records: pd.DataFrame) -> pd.Series:
    """For untimed errors lines (with `index` and `question`), the trace id of the log record with the same
    question in the same file, nearest by line number (CoreDNS writes the two together), by errors index."""
    lines = records.assign(question=records["replica"].astype(str) + "|" + records["qname"].astype(str) + "|" + records["qtype"].astype(str),
                           source=records["source"].astype(str))[["source", "question", "line_no", "trace_id"]]
    lines = lines[lines["trace_id"] >= 0].sort_values("line_no")
    left = errors.assign(source=errors["source"].astype(str)).sort_values("line_no")[["index", "source", "question", "line_no"]]
    matched = pd.merge_asof(left, lines, on="line_no", by=["source", "question"], direction="nearest")
    matched = matched[matched["trace_id"].notna()]
    return pd.Series(matched["trace_id"].astype(int).to_numpy(), index=matched["index"].to_numpy())


# --- traces --------------------------------------------------------------------


def nullable_int(value: pd.Series) -> pd.Series:
    return value.astype("Int64")


def build_traces(legs: pd.DataFrame, upstream: pd.DataFrame) -> pd.DataFrame:
    root_rows = np.flatnonzero(legs["depth"].to_numpy() == 0)
    root_rows = root_rows[np.argsort(legs["trace_id"].to_numpy()[root_rows], kind="stable")]  # trace ids number roots in time order

    def roots(column: str) -> np.ndarray:  # one column at a time: no copy of the whole legs frame
        return legs[column].to_numpy()[root_rows]

    traces = pd.DataFrame(
        {
            "trace_id": roots("trace_id"),
            "client_ip": roots("client_ip"),
            "client_port": roots("client_port"),
            "dns_id": roots("dns_id"),
            "proto": roots("proto"),
            "qname": roots("qname"),
            "qtype": roots("qtype"),
            "client_vantage": roots("originator"),
            "client_role": roots("origin_role"),
            "server": roots("server"),
            "server_role": roots("server_role"),
            "reached": roots("reached"),
            "reached_role": roots("reached_role"),
            "dst_ip": roots("dst_ip"),
            "dnat_to": roots("dnat_to"),
            "dnat_at": roots("dnat_at"),
            "seen_at_node": roots("seen_at_node"),
            "forwarded_by_node": roots("forwarded_by_node"),
            "t_start": roots("t_start"),
            "t_server_in": nullable_int(pd.Series(roots("t_server_in"))).to_numpy(),
            "t_server_out": nullable_int(pd.Series(roots("t_server_out"))).to_numpy(),
            "t_client_in": nullable_int(pd.Series(roots("t_client_in"))).to_numpy(),
            "client_latency_ns": nullable_int(pd.Series(roots("client_latency_ns"))).to_numpy(),
            "rcode": roots("rcode"),
            "server_rcode": roots("server_rcode"),
            "answers": roots("answers"),
            "ancount": roots("ancount"),
            "tc": roots("tc"),
            "aa": roots("aa"),
            "responses_seen": roots("responses_seen"),
        }
    ).set_index("trace_id", drop=False)
    traces.index.name = None
    traces["to_server_ns"] = traces["t_server_in"] - traces["t_start"]
    traces["server_ns"] = traces["t_server_out"] - traces["t_server_in"]
    traces["return_ns"] = traces["t_client_in"] - traces["t_server_out"]
    traces["total_ns"] = traces["t_client_in"] - traces["t_start"]
    answered = traces["t_client_in"].notna()
    traces["outcome"] = np.where(answered, "answered", np.where(traces["responses_seen"] > 0, "partial", "timed-out"))
    traces.loc[(traces["client_role"] != "pod") & ~answered & (traces["responses_seen"] > 0), "outcome"] = "partial"

    ups = upstream.groupby("trace_id")
    traces["upstream_count"] = ups.size().reindex(traces.index, fill_value=0)
    traces["upstream_answered"] = ups["answered"].sum().reindex(traces.index, fill_value=0).astype(int)
    answered_up = upstream[upstream["answered"]].sort_values("t_out").drop_duplicates("trace_id", keep="last").set_index("trace_id")
    traces["upstream_rcode"] = answered_up["rcode"].reindex(traces.index).fillna("")
    traces["upstream_rtt_ns"] = nullable_int(answered_up["rtt_ns"].reindex(traces.index))
    direct = upstream[upstream["depth"] == 1].sort_values("t_out").drop_duplicates("trace_id", keep="last").set_index("trace_id")
    traces["upstream_server"] = direct["server_addr"].reindex(traces.index).fillna("")
    # Time the server spent waiting on upstreams: from its first query out to the last answer back
    # (or, for exchanges never answered, until the server itself answered).
    direct_legs = upstream[upstream["depth"] == 1]
    end = direct_legs["t_in"].fillna(direct_legs["trace_id"].map(traces["t_server_out"]))
    span = pd.DataFrame({"trace_id": direct_legs["trace_id"], "start": direct_legs["t_out"], "end": end})
    waits = span.groupby("trace_id").agg(start=("start", "min"), end=("end", "max"))
    traces["upstream_wait_ns"] = nullable_int((waits["end"] - waits["start"]).reindex(traces.index))
    traces["server_self_ns"] = (traces["server_ns"] - traces["upstream_wait_ns"].fillna(0)).clip(lower=0)
    traces["ambiguous"] = upstream.groupby("trace_id")["ambiguous"].any().reindex(traces.index, fill_value=False).astype(bool)
    traces["served_from"] = np.select(
        [traces["upstream_count"] > 0, traces["aa"] & answered, answered],
        ["upstream", "authoritative", "cache"],
        default="none",
    )
    traces["replica"] = replica_of(traces["server"].astype(str)).where(traces["server_role"].isin(["coredns", "node"]), "")
    return traces


def build_upstream(legs: pd.DataFrame) -> pd.DataFrame:
    up = legs[legs["depth"] > 0]
    frame = pd.DataFrame(
        {
            "trace_id": up["trace_id"].to_numpy(),
            "leg_id": up.index.to_numpy(),
            "depth": up["depth"].to_numpy(),
            "from": up["originator"].to_numpy(),
            "server": up["server"].to_numpy(),
            "server_addr": (up["dst_ip"] + ":" + up["dst_port"].astype(str)).to_numpy(),
            "dns_id": up["dns_id"].to_numpy(),
            "proto": up["proto"].to_numpy(),
            "qname": up["qname"].to_numpy(),
            "qtype": up["qtype"].to_numpy(),
            "t_out": up["t_start"].to_numpy(),
            "t_in": nullable_int(up["t_client_in"]).to_numpy(),
            "rcode": up["rcode"].to_numpy(),
            "answered": up["t_client_in"].notna().to_numpy(),
            "ambiguous": up["ambiguous"].to_numpy(),
        }
    )
    frame["rtt_ns"] = frame["t_in"] - frame["t_out"]
    return frame


def traces_from_logs(records: pd.DataFrame) -> pd.DataFrame:
    """With no packets, every CoreDNS log record is a trace of its own (CoreDNS's view only): what only
    packets show (the client's vantage, the path, the client's own times, upstream exchanges) stays empty.

    A line with no response flags and size 0 (`NOERROR - 0 6.01s` before CoreDNS 1.8.5, `- - 0 6.00s`
    since) is a query its plugins never answered: no rcode, outcome `timed-out`. Only an authoritative
    answer's duration is CoreDNS's own time (`server_self_ns`); any other may include upstream waits."""
    ts = records["ts_ns"].astype("Int64")
    duration = (records["duration_s"] * 1e9).round().astype("Int64")
    flags = records["rflags"].astype("category")  # each distinct set of flags looked at once, not each row's
    sets, codes = pd.Series(flags.cat.categories.astype(str)), flags.cat.codes.to_numpy()
    per_row = lambda per_set: np.append(per_set.to_numpy(dtype=bool), False)[codes]  # noqa: E731  (code -1, missing: no flags)
    has_flag = lambda flag: per_row(sets.str.contains(rf"\b{flag}\b"))  # noqa: E731
    no_flags = per_row(sets == "")
    written = ~(no_flags & (records["rsize"] == 0).fillna(False).to_numpy(dtype=bool))  # a format without them: assume written
    rcode = labels(written, texts(records["rcode"]), "")
    authoritative = has_flag("aa")
    traces = pd.DataFrame(
        {
            "trace_id": np.arange(len(records)),
            "client_ip": texts(records["remote_ip"]),
            "client_port": records["remote_port"].fillna(0).astype("int32").to_numpy(),
            "dns_id": records["id"].fillna(-1).astype("int32").to_numpy(),
            "proto": texts(records["proto"]),
            "qname": texts(records["qname"]),
            "qtype": texts(records["qtype"]),
            "server": texts(records["replica"].astype("category").cat.rename_categories(lambda r: f"kube-system/{r}")),
            "server_role": "coredns",
            "replica": texts(records["replica"]),
            "outcome": labels(~written, "timed-out", labels(rcode != "", "answered", "partial")),
            "rcode": rcode,
            "server_rcode": rcode,
            "tc": has_flag("tc"),
            "aa": authoritative,
            "served_from": labels(authoritative, "authoritative", "unknown"),
            "t_start": (ts - duration).fillna(0).astype("int64").to_numpy(),
            "t_server_in": (ts - duration).to_numpy(),
            "t_server_out": ts.to_numpy(),
            "server_ns": duration.to_numpy(),
            "server_self_ns": duration.where(authoritative).to_numpy(),
        }
    ).set_index("trace_id", drop=False)
    traces.index.name = None
    return schema.with_empty_columns(traces, schema.TRACES)


def traces_from_errors(errors: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """With no packets, an errors line no log record explains is a lookup of its own: CoreDNS failed it
    with the line's response code (2: SERVFAIL) for a client the line does not name."""
    ts = errors["ts_ns"].astype("Int64")
    rcode = errors["rcode"].astype(str).to_numpy()
    traces = pd.DataFrame(
        {
            "trace_id": np.arange(first_id, first_id + len(errors)),
            "qname": errors["qname"].astype(str).to_numpy(),
            "qtype": errors["qtype"].astype(str).to_numpy(),
            "server": ("kube-system/" + errors["replica"].astype(str)).to_numpy(),
            "server_role": "coredns",
            "replica": errors["replica"].astype(str).to_numpy(),
            "outcome": np.where(rcode != "", "answered", "timed-out"),
            "rcode": rcode,
            "server_rcode": rcode,
            "served_from": "unknown",
            "t_start": ts.fillna(0).astype("int64").to_numpy(),
            "t_server_out": ts.to_numpy(),
        }
    ).set_index("trace_id", drop=False)
    traces.index.name = None
    return schema.with_empty_columns(traces, schema.TRACES)


LOOP_PROBE_NAME = r"^\d+\.\d+\."  # the loop plugin asks HINFO <random>.<random>.<zone>


def purpose_of(traces: pd.DataFrame) -> np.ndarray:
    """`loop-probe` (the loop plugin's HINFO for a random name), `health-check` (the forward plugin's
    `. IN NS`), else `lookup`: CoreDNS's own queries are kept apart from the clients'."""
    qtype = traces["qtype"].astype(str)
    qname = traces["qname"].astype(str)
    probe = (qtype == "HINFO") & qname.str.match(LOOP_PROBE_NAME)
    health = (qtype == "NS") & (qname == ".")
    return labels(probe.to_numpy(), "loop-probe", labels(health.to_numpy(), "health-check", "lookup"))


def upstream_address(ip: pd.Series, port: pd.Series) -> pd.Series:
    """`ip:port`, IPv6 in brackets, as packets name servers."""
    host = ip.where(~ip.str.contains(":", regex=False), "[" + ip + "]")
    return host + ":" + port.astype("Int64").astype(str)


def attach_log_columns(traces: pd.DataFrame, logs: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    """CoreDNS's log line and errors lines for each trace. Only the columns read are taken from the log
    records (a million of them), and each row's strings are the categories' own, except `log_ref`."""
    joined = logs.loc[(logs["trace_id"] >= 0).to_numpy(), ["trace_id", "rcode", "duration_s", "source", "line_no"]]
    joined = joined.drop_duplicates("trace_id", keep="first").set_index("trace_id")
    traces["log_rcode"] = pd.Series(texts(joined["rcode"]), index=joined.index).reindex(traces.index).fillna("")
    traces["log_duration_s"] = joined["duration_s"].reindex(traces.index)
    refs = [f"{source}:{line}" for source, line in zip(texts(joined["source"]).tolist(), joined["line_no"].tolist())]
    traces["log_ref"] = pd.Series(refs, index=joined.index, dtype=object).reindex(traces.index).fillna("")
    del joined, refs
    err = errors[errors["trace_id"] >= 0].drop_duplicates("trace_id", keep="last").set_index("trace_id")
    traces["error"] = err["error"].astype(str).reindex(traces.index).fillna("")
    traces["error_reason"] = err["reason"].astype(str).reindex(traces.index).fillna("")
    upstream = err["upstream_ip"].astype(str).where(err["upstream_port"].isna() | (err["upstream_ip"].astype(str) == ""),
                                                    upstream_address(err["upstream_ip"].astype(str), err["upstream_port"]))
    traces["error_upstream"] = upstream.reindex(traces.index).fillna("")
    traces["error_count"] = errors[errors["trace_id"] >= 0].groupby("trace_id").size().reindex(traces.index, fill_value=0)
    return traces


def attach_icmp(traces: pd.DataFrame, icmp: pd.DataFrame, legs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ICMP errors quoting a trace's query: which kind, seen where, about which destination."""
    traces["icmp"] = ""
    traces["icmp_target"] = ""
    if icmp.empty or legs.empty:
        return traces, icmp.assign(trace_id=-1, leg=-1)
    icmp = icmp.assign(
        key=icmp["src_ip"].astype(str) + "|" + icmp["src_port"].astype(str) + "|" + icmp["dns_id"].astype(str) + "|" + icmp["proto"].astype(str)
    )
    keyed = legs.assign(
        key=legs["client_ip"] + "|" + legs["client_port"].astype(str) + "|" + legs["dns_id"].astype(str) + "|" + legs["proto"]
    ).reset_index()[["key", "t_start", "leg", "trace_id"]].sort_values("t_start")
    left = icmp.reset_index().sort_values("ts_ns")
    matched = pd.merge_asof(left, keyed, left_on="ts_ns", right_on="t_start", by="key", direction="backward")
    matched["trace_id"] = matched["trace_id"].fillna(-1).astype(int)
    matched["leg"] = matched["leg"].fillna(-1).astype(int)
    first = matched[matched["trace_id"] >= 0].drop_duplicates("trace_id", keep="first").set_index("trace_id")
    text = (
        "ICMP " + first["icmp_type"].astype(str) + "/" + first["icmp_code"].astype(str) + " at " + first["vantage"].astype(str)
        + " about " + first["dst_ip"].astype(str) + ":" + first["dst_port"].astype(str)
    )
    traces["icmp"] = text.reindex(traces.index).fillna("")
    traces["icmp_target"] = (first["dst_ip"].astype(str) + ":" + first["dst_port"].astype(str)).reindex(traces.index).fillna("")
    return traces, matched.drop(columns=["key", "t_start", "index"], errors="ignore")


def connection_attempts(control: pd.DataFrame) -> pd.DataFrame:
    """TCP connections someone tried on a DNS port: who (the vantage whose SYN was seen first), to where,
    when, and whether the other side accepted (SYN-ACK) or refused (RST) at that vantage."""
    syn = control[control["kind"].astype(str) == "tcp-syn"]
    if syn.empty:
        return pd.DataFrame(columns=["vantage", "ts_ns", "tuple", "target", "accepted", "refused"])
    tuple_of = lambda f, a, b, c, d: f[a].astype(str) + ":" + f[b].astype(str) + ">" + f[c].astype(str) + ":" + f[d].astype(str)
    syn = syn.assign(tuple=tuple_of(syn, "src_ip", "src_port", "dst_ip", "dst_port")).sort_values("ts_ns")
    attempts = syn.drop_duplicates("tuple", keep="first")[["vantage", "ts_ns", "tuple", "dst_ip", "dst_port"]].copy()
    attempts["target"] = attempts["dst_ip"].astype(str) + ":" + attempts["dst_port"].astype(str)
    replies = control[control["kind"].astype(str) != "tcp-syn"]
    reversed_tuple = tuple_of(replies, "dst_ip", "dst_port", "src_ip", "src_port")
    accepted = set(reversed_tuple[replies["kind"].astype(str) == "tcp-synack"])
    refused = set(reversed_tuple[replies["kind"].astype(str) == "tcp-rst"])
    attempts["accepted"] = attempts["tuple"].isin(accepted)
    attempts["refused"] = attempts["tuple"].isin(refused)
    return attempts[["vantage", "ts_ns", "tuple", "target", "accepted", "refused"]].astype({"vantage": str})


def attach_connects(traces: pd.DataFrame, attempts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Connection attempts a trace's server made while serving it (its upstream over TCP); returns
    the traces and how many attempts fit no trace."""
    for column, value in (("upstream_connects", 0), ("upstream_connects_refused", 0), ("upstream_connects_unanswered", 0), ("upstream_connect_target", "")):
        traces[column] = value
    if attempts.empty or traces.empty:
        return traces, len(attempts)
    windows = traces[traces["t_server_in"].notna()].assign(
        t_in=lambda f: f["t_server_in"].astype("int64"),
        t_end=lambda f: f["t_server_out"].fillna(f["t_server_in"] + SERVER_WAIT_NS).astype("int64"),
    )[["trace_id", "server", "t_in", "t_end"]].sort_values("t_in")
    left = attempts.rename(columns={"vantage": "server"}).sort_values("ts_ns")
    matched = pd.merge_asof(left, windows, left_on="ts_ns", right_on="t_in", by="server", direction="backward")
    matched = matched[matched["trace_id"].notna() & (matched["ts_ns"] <= matched["t_end"])]
    if matched.empty:
        return traces, len(attempts)
    matched = matched.assign(unanswered=~matched["accepted"] & ~matched["refused"])
    per_trace = matched.groupby("trace_id").agg(
        connects=("tuple", "size"), refused=("refused", "sum"), unanswered=("unanswered", "sum"), target=("target", "last"))
    ids = per_trace.index.astype(int)
    traces.loc[ids, "upstream_connects"] = per_trace["connects"].to_numpy()
    traces.loc[ids, "upstream_connects_refused"] = per_trace["refused"].astype(int).to_numpy()
    traces.loc[ids, "upstream_connects_unanswered"] = per_trace["unanswered"].astype(int).to_numpy()
    traces.loc[ids, "upstream_connect_target"] = per_trace["target"].to_numpy()
    return traces, int(len(attempts) - len(matched))


def correlate(events: pd.DataFrame | None, logs: ParsedLogs | None = None, capture_stats: dict | None = None) -> Correlation:
    """Traces from packet events and/or CoreDNS logs; either may be empty or None."""
    events = events if events is not None else schema.empty(schema.EVENTS)
    logs = logs or ParsedLogs.none()
    capture_stats = capture_stats or {}
    kinds = events["kind"]
    is_dns = (kinds == "dns").to_numpy()
    # A frame of our own for the million-row work: a shallow copy when every event is DNS, so columns
    # can be added in place without copying the caller's data or touching its frame.
    dns = events.copy(deep=False) if is_dns.all() else events[is_dns].copy(deep=False)
    icmp = events[(kinds == "icmp-error").to_numpy()]
    control = events[kinds.isin(["tcp-syn", "tcp-synack", "tcp-rst"]).to_numpy()]
    records = logs.records.copy()
    errors = logs.errors.copy()

    if len(dns):
        dns = assign_legs(add_client_key(dns))
        legs = describe_legs(dns)
        merge_into = snat_continuations(legs, link_parents(legs, legs["origin_role"] == "node"))
        merged = merge_into[merge_into >= 0]
        if len(merged):
            dns["leg"] = merge_into.where(merge_into >= 0, merge_into.index).reindex(dns["leg"]).to_numpy()
            changed = dns["leg"].isin(set(merged.to_numpy())).to_numpy()  # only the legs that absorbed a continuation
            legs = pd.concat([legs.drop(index=[*merged.index, *set(merged.to_numpy())]), describe_legs(dns[changed])]).sort_index()
        links = link_parents(legs)
        legs["parent"], legs["ambiguous"] = links["parent"], links["ambiguous"]
        root, depth = roots_of(legs["parent"])
        legs["root"], legs["depth"] = root, depth
        order = legs.loc[legs["depth"] == 0, ["t_start", "client_ip", "client_port"]].sort_values(["t_start", "client_ip", "client_port"]).index
        trace_of_root = pd.Series(np.arange(len(order)), index=order)
        legs["trace_id"] = trace_of_root.reindex(legs["root"]).to_numpy()
        upstream = build_upstream(legs)
        traces = build_traces(legs, upstream)
        hops = dns  # ours (see above): columns are added in place rather than copying a million rows
        hops["trace_id"] = legs["trace_id"].reindex(dns["leg"]).to_numpy()
        hops["depth"] = legs["depth"].reindex(dns["leg"]).to_numpy()
        joined = join_logs(legs, records, set(logs.guessed_replicas)) if len(records) else []
        records["trace_id"] = legs["trace_id"].reindex(joined).fillna(-1).astype(int).to_numpy() if len(records) else []
    else:
        legs = pd.DataFrame()
        traces = traces_from_logs(records) if len(records) else traces_from_logs(records.iloc[0:0])
        upstream = schema.empty(schema.UPSTREAM)
        hops = dns.assign(trace_id=pd.Series(dtype=int), depth=pd.Series(dtype=int), leg=pd.Series(dtype=int))
        records["trace_id"] = np.arange(len(records))
    if "trace_id" not in records:
        records["trace_id"] = pd.Series(dtype=int)
    errors["trace_id"] = join_errors(traces, errors, records if not len(dns) else None).to_numpy() if len(errors) else pd.Series(dtype=int)
    if not len(dns) and (errors["trace_id"] < 0).any():
        alone = errors["trace_id"] < 0
        traces = pd.concat([traces, traces_from_errors(errors[alone], len(traces))])
        errors.loc[alone, "trace_id"] = traces["trace_id"].iloc[-int(alone.sum()):].to_numpy()
    traces = attach_log_columns(traces, records, errors)
    traces, icmp_hops = attach_icmp(traces, icmp, legs)
    attempts = connection_attempts(control)
    traces, connects_unmatched = attach_connects(traces, attempts)
    traces["purpose"] = purpose_of(traces)
    traces = schema.conform(traces, schema.TRACES)
    upstream = schema.conform(upstream, schema.UPSTREAM)
    stats = {
        "packets": int(len(events)),
        "dns_packets": int(len(dns)),
        "icmp_errors": int(len(icmp)),
        "icmp_unmatched": int((icmp_hops["trace_id"] < 0).sum()) if len(icmp_hops) else 0,
        "tcp_control_packets": int(len(control)),
        "tcp_connects": int(len(attempts)),
        "tcp_connects_unmatched": connects_unmatched,
        "log_lines": int(logs.log_lines),
        "log_lines_lost": int(logs.lines_lost),
        "log_records": int(len(records)),
        "log_records_unmatched": int((records["trace_id"] < 0).sum()) if len(dns) else 0,
        "error_records": int(len(errors)),
        "log_other": int(logs.other_lines),
        "unparsed_lines": len(logs.unparsed),
        "own_queries": int((traces["purpose"] != "lookup").sum()),
        "traces": int(len(traces)),
        "upstream_exchanges": int(len(upstream)),
        "ambiguous": int(upstream["ambiguous"].sum()) if len(upstream) else 0,
        "lost_samples": int(capture_stats.get("lost_samples", 0)),
        "decode_errors": int(capture_stats.get("decode_errors", 0)) + int((~events["decoded"]).sum() if len(events) and "decode_errors" not in capture_stats else 0),
    }
    all_hops = pd.concat([hops, icmp_hops], ignore_index=True) if len(icmp_hops) else hops
    if not all_hops["ts_ns"].is_monotonic_increasing:
        all_hops = all_hops.sort_values("ts_ns", kind="stable")
    return Correlation(traces=traces, hops=all_hops, upstream=upstream, logs=records, errors=errors, stats=stats,
                       unparsed=logs.unparsed, warnings=log_warnings(logs, records, len(dns)), log_alerts=logs.alerts)


def log_warnings(logs: ParsedLogs, records: pd.DataFrame, dns_packets: int) -> list[str]:
    """The reader's warnings; with packets, that no log record matched one; a replica named only by a file's name."""
    warnings = list(logs.warnings)
    if dns_packets and len(records) and (records["trace_id"] < 0).all():
        warnings.append(f"none of the {len(records)} CoreDNS log records matched a packet: check that the logs and the "
                        "capture cover the same time and replicas (name each log REPLICA=FILE, or use kubectl logs --prefix)")
    for source, replica in logs.guessed_replicas.items():
        warnings.append(f"{source}: no pod prefix in its lines, so its replica is taken from the file's name ({replica}); "
                        "name it with REPLICA=FILE or read it with kubectl logs --prefix")
    return warnings
