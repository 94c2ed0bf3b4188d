"""What is not DNS but tells about it: ICMP errors quoting a query, TCP connections tried on a DNS port."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.correlate.upstream import SERVER_WAIT_NS


def attach_icmp(traces: pd.DataFrame, icmp: pd.DataFrame, legs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ICMP errors quoting a trace's query, or its response: which kind, seen where, about which destination."""
    traces["icmp"] = ""
    traces["icmp_target"] = ""
    if icmp.empty or legs.empty:
        return traces, icmp.assign(trace_id=-1, leg=-1)
    quoted_response = icmp["qr"].to_numpy(dtype=bool)  # an ICMP error about a response (a client whose port had closed) quotes it
    client_ip = icmp["src_ip"].astype(str).where(~quoted_response, icmp["dst_ip"].astype(str))
    client_port = icmp["src_port"].where(~quoted_response, icmp["dst_port"])
    icmp = icmp.assign(key=client_ip + "|" + client_port.astype(str) + "|" + icmp["dns_id"].astype(str) + "|" + icmp["proto"].astype(str))
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
