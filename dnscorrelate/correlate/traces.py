"""One trace per root leg, with its upstream exchanges summed up; what CoreDNS's own queries are for."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnscorrelate.correlate.columns import labels, nullable_int

OWN_PURPOSES = ["loop-probe", "health-check"]  # CoreDNS's own queries, kept apart from the clients'
LOOP_PROBE_NAME = r"^\d+\.\d+\."  # the loop plugin asks HINFO <random>.<random>.<zone>


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
            "query_seen": roots("query_seen"),
            "answered_here": roots("answered_here"),
            "query_received": roots("query_received"),
            "responder_ip": roots("responder_ip"),
            "server_name": roots("server_name"),
            "opcode_number": roots("opcode"),
            "queries_at_client": roots("queries_at_client"),
            "responses_at_client": roots("responses_at_client"),
            "responders_at_client": roots("responders_at_client"),
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


def replica_of(vantage: pd.Series) -> pd.Series:
    """`coredns-0` for `kube-system/coredns-0`; `nodelocal-node-0` for a node (NodeLocal DNS lives there)."""
    names = {v: v.split("/")[-1] if "/" in v else "nodelocal-" + v for v in pd.unique(vantage)}
    return vantage.map(names)


def purpose_of(traces: pd.DataFrame) -> np.ndarray:
    """`loop-probe` (the loop plugin's HINFO for a random name), `health-check` (the forward plugin's
    `. IN NS`), else `lookup`: CoreDNS's own queries are kept apart from the clients'. A message of another
    opcode than QUERY is no lookup either: its purpose is its opcode (`update`, `notify`)."""
    qtype = traces["qtype"].astype(str)
    qname = traces["qname"].astype(str)
    by_coredns = traces["client_role"].isin(["coredns", "node", ""])  # a pod's `NS .` is its own business
    probe = (qtype == "HINFO") & qname.str.match(LOOP_PROBE_NAME) & by_coredns
    health = (qtype == "NS") & (qname == ".") & by_coredns
    opcode = traces["opcode"].astype(str)
    not_a_query = ((opcode != "QUERY") & (opcode != "")).to_numpy()
    own = labels(probe.to_numpy(), "loop-probe", labels(health.to_numpy(), "health-check", "lookup"))
    return labels(not_a_query, opcode.str.lower().to_numpy(dtype=object), own)
