"""What is not DNS but tells about it: ICMP errors quoting a query, TCP connections tried on a DNS port, datapath flows (Hubble's L3/L4: their verdicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnscorrelate.senders import sent_from, vantage_names
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


def connection_attempts(control: pd.DataFrame, owners: dict[str, str] | None = None) -> pd.DataFrame:
    """TCP connections someone tried on a DNS port: who (the vantage whose SYN was seen first, or the namespace a
    node saw it leave: senders.sent_from, by the namespaces' `owners` addresses), to where, when, and whether the
    other side accepted (SYN-ACK) or refused (RST) at that vantage."""
    syn = control[control["kind"].astype(str) == "tcp-syn"]
    if syn.empty:
        return pd.DataFrame(columns=["vantage", "ts_ns", "tuple", "target", "accepted", "refused"])
    syn = syn.assign(vantage=vantage_names(syn["vantage"].astype("category"), sent_from(syn, owners or {})))
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


FLOW_LEAD_NS = 100_000_000  # a datapath flow is logged a moment before the DNS proxy's record of the same packet
DROPPED = "DROPPED"


def client_keys(frame: pd.DataFrame) -> pd.Series:
    """`ip|port|proto` of each row's client: the source of a query, the destination of a response."""
    response = frame["qr"].to_numpy(dtype=bool)
    ip = np.where(response, frame["dst_ip"].astype(str).to_numpy(), frame["src_ip"].astype(str).to_numpy())
    port = np.where(response, frame["dst_port"].to_numpy(), frame["src_port"].to_numpy())
    return pd.Series(ip, index=frame.index, dtype=object) + "|" + pd.Series(port, index=frame.index).astype(str) + "|" + frame["proto"].astype(str)


def lone_drops(flows: pd.DataFrame, dns: pd.DataFrame, gap_ns: int) -> pd.Index:
    """The dropped queries no DNS record of their client's socket accompanies (none within `gap_ns` before, or
    FLOW_LEAD_NS after): the common case of a deny policy, which drops the packet before any DNS proxy sees it.
    Each is a sighting of a lookup of its own (timed out where it was dropped); returned by index."""
    drops = flows[(flows["verdict"].astype(str) == DROPPED).to_numpy() & ~flows["qr"].to_numpy(dtype=bool)]
    if drops.empty:
        return drops.index
    ips = set(drops["src_ip"].astype(str))
    near = dns[(dns["src_ip"].isin(ips) | dns["dst_ip"].isin(ips)).to_numpy()]
    if near.empty:
        return drops.index
    left = drops.assign(key=client_keys(drops), t=drops["ts_ns"] + FLOW_LEAD_NS).sort_values("t")
    right = pd.DataFrame({"key": client_keys(near), "t_dns": near["ts_ns"]}).sort_values("t_dns")
    matched = pd.merge_asof(left[["key", "t"]].reset_index(), right, left_on="t", right_on="t_dns", by="key", direction="backward",
                            tolerance=gap_ns + FLOW_LEAD_NS)
    return pd.Index(matched.loc[matched["t_dns"].isna(), "index"])


def attach_flows(flows: pd.DataFrame, legs: pd.DataFrame, gap_ns: int) -> pd.DataFrame:
    """Datapath flows (Hubble's L3/L4) on the lookups they carried: same client address, port and protocol, a
    query's flow with the lookup that began nearest it, a response's with the one answered nearest it (a client
    asks A and AAAA from one socket within a millisecond, and L3/L4 flows have no DNS id), within `gap_ns`.
    The flows with `trace_id`, `leg` and `depth` (-1 where none fits)."""
    flows = flows.assign(trace_id=-1, leg=-1, depth=-1)
    if flows.empty or legs.empty:
        return flows
    keyed = pd.DataFrame({
        "key": legs["client_ip"].astype(str) + "|" + legs["client_port"].astype(str) + "|" + legs["proto"].astype(str),
        "t_start": legs["t_start"].astype("int64"),
        "t_answered": pd.Series(legs["t_client_in"], index=legs.index).fillna(pd.Series(legs["t_server_out"], index=legs.index)),
        "trace_id_leg": legs["trace_id"], "depth_leg": legs["depth"],
    }, index=legs.index).rename_axis("leg_of").reset_index()
    keys = client_keys(flows)
    response = flows["qr"].to_numpy(dtype=bool)
    for is_response, moment in ((False, "t_start"), (True, "t_answered")):
        mine = flows[response == is_response]
        right = keyed[keyed[moment].notna()].astype({moment: "int64"}).sort_values(moment)
        if mine.empty or right.empty:
            continue
        left = pd.DataFrame({"key": keys[mine.index], "t": mine["ts_ns"].astype("int64")}).rename_axis("row").reset_index().sort_values("t")
        matched = pd.merge_asof(left, right, left_on="t", right_on=moment, by="key", direction="nearest", tolerance=gap_ns)
        matched = matched[matched["trace_id_leg"].notna()]
        flows.loc[matched["row"].to_numpy(), ["trace_id", "leg", "depth"]] = (
            matched[["trace_id_leg", "leg_of", "depth_leg"]].astype(int).to_numpy())
    return flows


def has_verdicts(column: pd.Series) -> bool:
    """Whether any row has a verdict; for a categorical, read from its categories (a million rows, no string each)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return any(str(c) != "" for c in column.cat.categories) and bool((column != "").any())
    return bool((column.astype(str) != "").any())


def drop_columns(traces: pd.DataFrame, seen: list[pd.DataFrame]) -> pd.DataFrame:
    """Each trace's `verdict` (DROPPED when any of its sightings was dropped, else the last verdict given),
    `drop_reason` (the source's own words) and `dropped_at` (the vantage, and egress or ingress)."""
    for column in ("verdict", "drop_reason", "dropped_at"):
        traces[column] = ""
    given = [f[(f["verdict"] != "").to_numpy() & f["verdict"].notna().to_numpy() & (f["trace_id"] >= 0).to_numpy()]
             for f in seen if "verdict" in f and len(f) and has_verdicts(f["verdict"])]
    given = [f for f in given if len(f)]
    if not given:
        return traces
    given = pd.concat([f.astype({"verdict": str, "drop_reason": str, "vantage": str, "pkt_type": str}) for f in given]).sort_values("ts_ns", kind="stable")
    verdict = given["verdict"].astype(str)
    last = given.groupby("trace_id")["verdict"].last().astype(str)
    drops = given[(verdict == DROPPED).to_numpy()].drop_duplicates("trace_id").set_index("trace_id")
    direction = drops["pkt_type"].astype(str).map({"OUTGOING": " egress", "HOST": " ingress"}).fillna("")
    traces["verdict"] = last.reindex(traces["trace_id"]).fillna("").to_numpy()
    traces.loc[traces["trace_id"].isin(drops.index).to_numpy(), "verdict"] = DROPPED
    traces["drop_reason"] = drops["drop_reason"].astype(str).reindex(traces["trace_id"]).fillna("").to_numpy()
    traces["dropped_at"] = (drops["vantage"].astype(str) + direction).reindex(traces["trace_id"]).fillna("").to_numpy()
    return traces
