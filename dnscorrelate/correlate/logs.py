"""Step 4: CoreDNS's log and errors records joined to legs and traces; with logs only, traces made of them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.correlate.columns import labels, texts
from dnscorrelate.correlate.traces import replica_of
from dnscorrelate.schema import ParsedLogs

LOG_MATCH_NS = 5 * 10**9  # a log line is written within this much of the response leaving the replica
ERROR_MATCH_NS = 15 * 10**9  # an errors line is written within this much after its query arrived
ERROR_NEAR_RESPONSE_NS = 10**9  # ... and within this much of the response (its log line), before or after


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


def log_warnings(logs: ParsedLogs, records: int, any_matched: bool, dns_packets: int) -> list[str]:
    """The reader's warnings; with packets, that none of the `records` log records matched one (`any_matched`); a
    replica named only by a file's name."""
    warnings = list(logs.warnings)
    if dns_packets and records and not any_matched:
        warnings.append(f"none of the {records} CoreDNS log records matched a packet: check that the logs and the "
                        "capture cover the same time and replicas (name each log REPLICA=FILE, or use kubectl logs --prefix)")
    for source, replica in logs.guessed_replicas.items():
        warnings.append(f"{source}: no pod prefix in its lines, so its replica is taken from the file's name ({replica}); "
                        "name it with REPLICA=FILE or read it with kubectl logs --prefix")
    return warnings
