"""Step 3: upstream legs linked to the leg they serve, followed to the root; the upstream table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnscorrelate.correlate.columns import nullable_int

SERVER_WAIT_NS = 10 * 10**9  # how long after a query arrives its upstream exchanges may start, when it got no answer


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
    may_parent = ((legs["server"] != legs["originator"]) | legs["received"]).to_numpy() & ~np.isnan(t_server_in)
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
