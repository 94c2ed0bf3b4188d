"""What one vantage point can tell, and what real captures hold besides a query and its answer.

A capture is one vantage point. When every sighting of a lookup is at places that nothing names (a pcap
read without `VANTAGE=`: role `other`), or when the evidence holds only one place at all, no CoreDNS log,
and that place is not a server (a pod's or a node's capture, not a CoreDNS replica's dnstap), the trace's
`coverage` is `vantage`: its server is the address that answered (or was asked), its role
is what the caller's `servers` say of that address (the kube-dns VIP, a CoreDNS pod, from the cluster facts)
and nothing else (named by the facts, else by the evidence itself where it names the other end: Hubble's
`destination.pod_name`), and where it was served from (cache, upstream) is `unknown`. Otherwise `coverage` is
`path` (packets at places with roles), or `logs` (CoreDNS's log alone).

Inside any capture, roles of addresses come from the traffic: who sends the query is the client, who
answers is the server. Responses whose query no vantage saw are not lookups: a UDP one that arrives on a
socket whose query with another id is still unanswered is `wrong-id` (the classic sign of spoofing or of a
confused forwarder); any other is `query-not-seen` (its query fell before the capture or in a gap), unless
the place that saw it sent it: a server that answered logged its answer and not the query (a dnstap writer
logging responses only), and the lookup was answered there.
"""

from __future__ import annotations

import dns.opcode
import numpy as np
import pandas as pd

from dnscorrelate.correlate.columns import labels

PATH, VANTAGE, LOGS = "path", "vantage", "logs"


def opcode_names(codes: np.ndarray) -> np.ndarray:
    """QUERY, UPDATE, NOTIFY, … for each opcode number (`OPCODE7` for one DNS does not name)."""
    distinct, inverse = np.unique(codes, return_inverse=True)
    names = []
    for code in distinct.tolist():
        try:
            names.append(dns.opcode.to_text(int(code)))
        except (ValueError, dns.opcode.UnknownOpcode):
            names.append(f"OPCODE{code}")
    return np.array(names, dtype=object)[inverse] if len(codes) else np.array([], dtype=object)


def coverage_of(traces: pd.DataFrame, legs: pd.DataFrame, one_place: bool) -> np.ndarray:
    """`vantage` where the trace's every leg was seen only at places with no role (or the evidence is one
    place), `path` otherwise; `logs` for traces no packet shows."""
    unnamed = legs[["origin_role", "reached_role", "server_role"]].isin(["other", ""]).all(axis=1)
    only_unnamed = unnamed.groupby(legs["trace_id"]).all().reindex(traces["trace_id"], fill_value=False).to_numpy()
    seen = (traces["client_vantage"] != "").to_numpy()
    return labels(~seen, LOGS, labels(only_unnamed | one_place, VANTAGE, PATH))


def stray_outcomes(traces: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For responses no query was seen of: `wrong-id` (UDP, while a query with another id on the same socket
    awaited its answer) or `query-not-seen`; and the id of that awaited query (-1 where none)."""
    outcome = traces["outcome"].to_numpy(dtype=object).copy()
    raced = np.full(len(traces), -1, dtype=np.int64)
    stray = (~traces["query_seen"].to_numpy(dtype=bool) & (traces["responses_seen"].to_numpy() > 0)
             & ~traces["answered_here"].to_numpy(dtype=bool))
    if not stray.any():
        return outcome, raced
    socket = lambda f, server: f["client_ip"] + "|" + f["client_port"].astype(str) + "|" + server  # noqa: E731
    strays = traces[stray].assign(socket=lambda f: socket(f, f["responder_ip"]), t=lambda f: f["t_server_out"].astype("int64"),
                                  row=np.flatnonzero(stray))
    asked = traces[traces["query_seen"].to_numpy(dtype=bool) & (traces["proto"] == "udp").to_numpy()]
    asked = asked.assign(socket=socket(asked, asked["dst_ip"]), t_answered=asked["t_client_in"].astype("Float64"))
    pairs = strays[["socket", "t", "row", "dns_id", "proto"]].merge(asked[["socket", "t_start", "t_answered", "dns_id"]],
                                                                     on="socket", suffixes=("", "_asked"))
    racing = pairs[(pairs["proto"] == "udp") & (pairs["dns_id"] != pairs["dns_id_asked"]) & (pairs["t_start"] <= pairs["t"])
                   & (pairs["t_answered"].isna() | (pairs["t_answered"] >= pairs["t"])).to_numpy(dtype=bool)]
    racing = racing.drop_duplicates("row")
    outcome[stray] = "query-not-seen"
    outcome[racing["row"].to_numpy()] = "wrong-id"
    raced[racing["row"].to_numpy()] = racing["dns_id_asked"].to_numpy()
    return outcome, raced


def describe_what_was_seen(traces: pd.DataFrame, legs: pd.DataFrame, one_place: bool, servers: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """The traces with `coverage`, stray responses' outcomes, duplicate responses, how many addresses
    answered, the opcode as text; and, where one vantage is all there is, the server named by its address."""
    traces["coverage"] = coverage_of(traces, legs, one_place)
    traces["outcome"], traces["raced_dns_id"] = stray_outcomes(traces)
    traces["responders"] = traces["responders_at_client"].astype("int64")
    extra = traces["responses_at_client"] - np.maximum(traces["queries_at_client"], traces["responders_at_client"])
    traces["duplicate_responses"] = extra.clip(lower=0).astype("int64")
    traces["opcode"] = opcode_names(traces["opcode_number"].to_numpy())
    one = (traces["coverage"] == VANTAGE).to_numpy()
    if one.any():
        address = traces.loc[one, "responder_ip"].where(traces.loc[one, "responder_ip"] != "", traces.loc[one, "dst_ip"])
        given = traces.loc[one, "server_name"] if "server_name" in traces else pd.Series("", index=address.index)
        known = [servers.get(ip, (name or ip, "")) for ip, name in zip(address, given)]
        traces.loc[one, "server"] = [name for name, _ in known]
        traces.loc[one, "server_role"] = [role for _, role in known]
        traces.loc[one, "served_from"] = "unknown"
        traces.loc[one, "replica"] = ""
        for segment in ("to_server_ns", "server_ns", "server_self_ns", "return_ns"):  # one place shows the whole wait only
            traces.loc[one, segment] = pd.NA
    no_query = traces["outcome"].isin(["query-not-seen", "wrong-id"]).to_numpy() | ~traces["query_seen"].to_numpy(dtype=bool)
    traces.loc[no_query, "total_ns"] = pd.NA  # no query: no wait
    return traces
