"""Hubble beside dnscorrelate on the same lookups: what each says of every lookup, from one session's evidence.

    rows = lookups_side_by_side(frame, logs, facts, stats)     # one dict per lookup either side saw
    summary = summarize(rows)                                  # counts and medians, for a table

A session with `--hubble` (or a scenario run on Cilium) holds both: the capture's packets and every agent's Hubble
flows (DNS proxy records, `dns-proxy`; L3/L4 flows, `flow` and `conn-drop`), Hubble's ids aligned to the client's
(live/hubble.py). Each side is analysed alone, as a user of that tool alone would see it: ours is the capture and
CoreDNS's logs; Hubble's is its flows (no CoreDNS log: Hubble has none). The two analyses' lookups are joined on
the client's address, port, DNS id and name.

Per lookup: seen by us / by Hubble; rcode and answers each reports; the latency each reports (ours: from the
query leaving the pod to the answer reaching it; Hubble's: the DNS proxy's `latency_ns`, its wait for the server);
timed out per each; dropped by a policy per each (a DROPPED flow for Hubble; for us, the finding that places the
loss); whether each shows the CoreDNS → upstream leg, and the Service VIP's translation (ours: the DNAT hop the
capture saw; Hubble's proxy records name the backend it sent to, never the VIP the pod asked).
"""

from __future__ import annotations

import pandas as pd

HUBBLE_KINDS = ("flow", "conn-drop")
DROP_CODES = {"dropped-by-policy", "dropped-in-datapath", "dropped-before-node", "dropped-at-node", "fqdn-policy-denied", "dns-proxy-refused"}


def hubble_rows(frame: pd.DataFrame) -> pd.Series:
    """Which rows are Hubble's: its DNS proxy records and its L3/L4 flows."""
    return (frame["ifname"].astype(str) == "dns-proxy") | frame["kind"].astype(str).isin(HUBBLE_KINDS)


def per_lookup(analysis) -> pd.DataFrame:
    """One row per workload lookup of an analysis: its key, what it reports, and the codes of the findings about it."""
    from dnscorrelate.diagnose.evidence import Evidence

    traces = Evidence(analysis.correlation, analysis.facts).lookups
    codes: dict[int, set] = {}
    for found in analysis.findings:
        for trace_id in found.covers:
            codes.setdefault(int(trace_id), set()).add(found.code)
    upstream = analysis.correlation.upstream
    with_upstream = set(upstream["trace_id"]) if len(upstream) else set()
    seen = analysis.correlation.sightings
    latency = seen[(seen["ifname"].astype(str) == "dns-proxy").to_numpy() & seen["qr"].to_numpy(dtype=bool)].groupby("trace_id")["latency_ns"].max() \
        if len(seen) else pd.Series(dtype="int64")
    return pd.DataFrame({
        "client_ip": traces["client_ip"].astype(str).to_numpy(), "client_port": traces["client_port"].astype(int).to_numpy(),
        "dns_id": traces["dns_id"].astype(int).to_numpy(), "qname": traces["qname"].astype(str).to_numpy(),
        "outcome": traces["outcome"].astype(str).to_numpy(), "rcode": traces["rcode"].astype(str).to_numpy(),
        "answers": traces["answers"].astype(str).to_numpy(),
        "total_ms": (traces["total_ns"].astype("Float64") / 1e6).to_numpy(),
        "proxy_ms": (latency.reindex(traces["trace_id"]).astype("Float64") / 1e6).to_numpy(),
        "dnat": traces["dnat_to"].astype(str).to_numpy() if "dnat_to" in traces else "",
        "upstream_leg": traces["trace_id"].isin(with_upstream).to_numpy(),
        "dropped": [bool(codes.get(int(t), set()) & DROP_CODES) or v == "DROPPED" for t, v in zip(traces["trace_id"], traces["verdict"])],
        "codes": [",".join(sorted(codes.get(int(t), set()))) for t in traces["trace_id"]],
    })


def lookups_side_by_side(frame: pd.DataFrame, logs, facts, stats: dict | None = None) -> pd.DataFrame:
    """Our analysis of the capture and logs beside Hubble's flows analysed alone, one row per lookup either saw."""
    from dnscorrelate.analysis import analyze
    from dnscorrelate.schema import ParsedLogs

    hubble = hubble_rows(frame).to_numpy()
    ours = per_lookup(analyze(frame[~hubble], logs, facts, stats))
    theirs = per_lookup(analyze(frame[hubble], ParsedLogs.none(), facts, stats))
    key = ["client_ip", "client_port", "dns_id", "qname"]
    theirs = with_ids_of_flows(theirs, ours)
    both = ours.merge(theirs, on=key, how="outer", suffixes=("_us", "_hubble"), indicator=True)
    both["seen"] = both["_merge"].map({"both": "both", "left_only": "us only", "right_only": "Hubble only"}).astype(str)
    return both.drop(columns="_merge")


def with_ids_of_flows(theirs: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Hubble's lookups known from a datapath flow alone (a query dropped before the DNS proxy: no DNS id, no name)
    take the id and name of our lookup from the same client socket, when exactly one of ours has it."""
    flows = theirs["dns_id"] < 0
    if not flows.any():
        return theirs
    sockets = ours.groupby(["client_ip", "client_port"])
    ours_by_socket = {socket: group.iloc[0] for socket, group in sockets if len(group) == 1}
    theirs = theirs.copy()
    for index in theirs.index[flows.to_numpy()]:
        found = ours_by_socket.get((theirs.at[index, "client_ip"], theirs.at[index, "client_port"]))
        if found is not None:
            theirs.at[index, "dns_id"], theirs.at[index, "qname"] = found["dns_id"], found["qname"]
    return theirs


def answered_by(rows: pd.DataFrame, side: str) -> pd.Series:
    return rows[f"outcome_{side}"] == "answered"


def summarize(rows: pd.DataFrame) -> dict:
    """Counts over the lookups: seen by each, rcode and answers agreement where both saw an answer, median latency
    each reports, timeouts, policy drops, the upstream leg and the VIP's translation as each shows them."""
    both = rows[rows["seen"] == "both"]
    answered = both[answered_by(both, "us") & answered_by(both, "hubble")]
    same_answers = answered["answers_us"].map(lambda a: sorted(str(a).split(", "))) == answered["answers_hubble"].map(
        lambda a: sorted(str(a).split(", ")))
    count = lambda column: int(rows[column].astype("boolean").fillna(False).sum())  # noqa: E731
    median = lambda column: None if rows[column].dropna().empty else round(float(rows[column].dropna().median()), 2)  # noqa: E731
    return {
        "lookups": len(rows), "seen_by_us": int((rows["seen"] != "Hubble only").sum()),
        "seen_by_hubble": int((rows["seen"] != "us only").sum()), "seen_by_both": len(both),
        "rcode_compared": len(answered), "rcode_agree": int((answered["rcode_us"] == answered["rcode_hubble"]).sum()),
        "answers_agree": int(same_answers.sum()),
        "latency_ms_us": median("total_ms_us"), "latency_ms_hubble": median("proxy_ms_hubble"),
        "timeouts_us": int((rows["outcome_us"] == "timed-out").sum()), "timeouts_hubble": int((rows["outcome_hubble"] == "timed-out").sum()),
        "drops_us": count("dropped_us"), "drops_hubble": count("dropped_hubble"),
        "upstream_leg_us": count("upstream_leg_us"), "upstream_leg_hubble": count("upstream_leg_hubble"),
        "vip_translation_us": int((rows["dnat_us"].fillna("") != "").sum()), "vip_translation_hubble": int((rows["dnat_hubble"].fillna("") != "").sum()),
    }
