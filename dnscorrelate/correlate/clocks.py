"""Each node's clock, estimated from the lookups that cross nodes, and every sighting put on one time line.

Every node times its sightings by its own clock (NTP keeps it within a millisecond on a good day, tens on a
bad one), and a hop between nodes takes 0.1-1 ms: merged as they are, a cross-node lookup's sightings can
come out of order. An exchange seen at two nodes bounds the offset between them, by NTP's arithmetic: a
packet cannot arrive before it was sent. For a query and its response seen at an outer node A (nearer the
client) and an inner node B (nearer the server), with each node's first sighting of each,

    query:     true(q_A) <= true(q_B)   so   off_B - off_A <= q_B - q_A
    response:  true(r_B) <= true(r_A)   so   off_B - off_A >= r_B - r_A

where `off_X` is how far X's clock reads ahead. Which node is outer needs no clock: the client waits longer
than the server (r_A - q_A >= r_B - q_B, whatever the offsets). First sightings keep the bounds valid with
retransmissions. A packet's sightings are told apart by the client's address, port, DNS id and protocol
(NAT keeps them towards the server) and by direction, within EXCHANGE_WINDOW_NS: not by the lookup's legs,
which a skew larger than a server's time would cut in two.

Every exchange is a pair of difference constraints; all of them together give, for each node, the interval
of offsets (from a reference node: the one with most sightings) consistent with every crossing, by shortest
paths over the constraint graph (Floyd-Warshall; a negative cycle: crossings contradict each other, and
nothing is corrected). The estimate is the interval's middle (NTP's, with symmetric delays); its bound the
half-width. Each node's sightings are shifted by its estimate before stitching, and so are the CoreDNS log
lines of the replicas that node runs (a log line is timed by the clock of the node that wrote it: the kubelet's
`--timestamps`, or CoreDNS's own).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from dnscorrelate.correlate.traces import replica_of
from dnscorrelate.schema import ParsedLogs

EXCHANGE_WINDOW_NS = 2 * 10**9  # sightings of one exchange's key closer than this are one exchange


@dataclass
class Clocks:
    """What the crossings said of each node's clock."""

    reference: str = ""
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # node -> (estimate, bound), ns; reference (0, 0)
    crossings: dict[str, int] = field(default_factory=dict)  # node -> exchanges seen at it and another node
    unplaced: list[str] = field(default_factory=list)  # nodes no crossing ties to the reference: not corrected
    contradiction: str = ""  # crossings that no set of offsets satisfies: nothing corrected

    def stats(self) -> dict:
        """The offsets as `stats` shows them: per node, the estimate and its bound in ms and the crossings behind it."""
        return {"reference": self.reference, "contradiction": self.contradiction, "unplaced": self.unplaced,
                "nodes": {node: {"offset_ms": round(est / 1e6, 3), "bound_ms": round(bound / 1e6, 3), "crossings": self.crossings.get(node, 0)}
                          for node, (est, bound) in sorted(self.offsets.items())}}

    def bound_between(self, a: str, b: str) -> int | None:
        """How wrong a time measured from node a to node b may be after correction, ns; None when either is unknown."""
        if a == b:
            return 0
        if a not in self.offsets or b not in self.offsets:
            return None
        return self.offsets[a][1] + self.offsets[b][1]


def named_nodes(events: pd.DataFrame) -> bool:
    """Whether the events name two nodes or more themselves (read from the categories: no string per row)."""
    if "node" not in events:
        return False
    column = events["node"]
    names = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column)
    return len({str(n) for n in names} - {"", "nan"}) >= 2


def node_per_row(events: pd.DataFrame, nodes: dict[str, str]) -> np.ndarray:
    """The node whose clock timed each row: the row's own `node` (the agent's stream), else what `nodes` says of
    its vantage; "" where neither knows."""
    by_vantage = pd.Series(events["vantage"].astype(str).map(lambda v: nodes.get(v, "")).to_numpy(dtype=object), index=events.index) \
        if nodes else pd.Series("", index=events.index, dtype=object)
    if "node" in events:
        own = events["node"].astype(str).to_numpy(dtype=object)
        return np.where(own != "", own, by_vantage.to_numpy(dtype=object))
    return by_vantage.to_numpy(dtype=object)


def exchanges(dns: pd.DataFrame, node: np.ndarray) -> pd.DataFrame:
    """Per exchange (a client socket's DNS id, one burst) and node: its first query and first response sightings."""
    response = dns["qr"].to_numpy(dtype=bool)
    client_ip = np.where(response, dns["dst_ip"].astype(str).to_numpy(), dns["src_ip"].astype(str).to_numpy())
    client_port = np.where(response, dns["dst_port"].to_numpy(), dns["src_port"].to_numpy())
    rows = pd.DataFrame({"key": pd.Series(client_ip).astype(str) + "|" + pd.Series(client_port).astype(str) + "|"
                         + dns["dns_id"].astype(str).to_numpy() + "|" + dns["proto"].astype(str).to_numpy(),
                         "ts": dns["ts_ns"].to_numpy(), "qr": response, "node": node})
    rows = rows[rows["node"] != ""].sort_values(["key", "ts"], kind="stable")
    new = (rows["key"] != rows["key"].shift()) | (rows["ts"].diff() > EXCHANGE_WINDOW_NS)
    rows["exchange"] = new.cumsum()
    # both columns even when no response (or no query) was seen at all, as when a policy drops every query
    # Int64 (nullable) through the unstack: a float column would round ns since the epoch to 256 ns steps
    firsts = rows.groupby(["exchange", "node", "qr"])["ts"].min().astype("Int64").unstack("qr").reindex(columns=[False, True])
    return firsts.rename(columns={False: "q", True: "r"}).dropna().astype("int64").reset_index()


def constraints(firsts: pd.DataFrame) -> pd.DataFrame:
    """For each exchange seen, query and response, at two nodes or more: (outer, inner, lower, upper) bounds on
    off_inner - off_outer; the outer node is the one that waited longest."""
    firsts = firsts.assign(span=firsts["r"] - firsts["q"])
    several = firsts.groupby("exchange")["node"].transform("size") > 1
    firsts = firsts[several.to_numpy()]
    if firsts.empty:
        return pd.DataFrame(columns=["outer", "inner", "lower", "upper", "exchange"])
    outer = firsts.sort_values(["exchange", "span"], ascending=[True, False]).drop_duplicates("exchange").set_index("exchange")
    inner = firsts[firsts["node"].to_numpy() != outer["node"].reindex(firsts["exchange"]).to_numpy()]
    o = outer.reindex(inner["exchange"])
    return pd.DataFrame({"outer": o["node"].to_numpy(), "inner": inner["node"].to_numpy(),
                         "lower": inner["r"].to_numpy() - o["r"].to_numpy(), "upper": inner["q"].to_numpy() - o["q"].to_numpy(),
                         "exchange": inner["exchange"].to_numpy()})


def shortest_paths(weights: np.ndarray) -> np.ndarray:
    """All-pairs shortest paths (Floyd-Warshall) of a difference-constraint graph, negative weights allowed; a
    handful of nodes, so a few lines of numpy rather than a graph library for one call."""
    dist = weights.copy()
    for k in range(len(dist)):
        dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
    return dist


def estimate(events: pd.DataFrame, node: np.ndarray) -> Clocks:
    """Each node's offset from the reference and its bound, from the exchanges seen at two nodes."""
    names = sorted({n for n in node if n})
    if len(names) < 2:
        return Clocks(reference=names[0] if names else "", offsets={n: (0, 0) for n in names})
    dns = (events["kind"] == "dns").to_numpy()
    bounds = constraints(exchanges(events[dns], node[dns]))
    counts = pd.Series(node[node != ""]).value_counts()
    tight = bounds.groupby(["outer", "inner"]).agg(lower=("lower", "max"), upper=("upper", "min")) if len(bounds) else None
    crossings = {n: int(((bounds["outer"] == n) | (bounds["inner"] == n)).sum()) if len(bounds) else 0 for n in names}
    return solve({n: int(counts.get(n, 0)) for n in names}, tight, crossings)


def solve(sightings: dict[str, int], tight: pd.DataFrame | None, crossings: dict[str, int]) -> Clocks:
    """The offsets the tightest bounds allow: `sightings` per node (the one with most is the reference), `tight`
    indexed by (outer, inner) with the largest `lower` and smallest `upper` of off_inner - off_outer, and the
    crossings behind each node. Shared with the out-of-core path (outofcore.py), which sums the same bounds up
    over Parquet files."""
    names = sorted(sightings)
    if len(names) < 2:
        return Clocks(reference=names[0] if names else "", offsets={n: (0, 0) for n in names})
    reference = sorted(names, key=lambda n: (-int(sightings[n]), n))[0]
    index = {n: i for i, n in enumerate(names)}
    weights = np.full((len(names), len(names)), np.inf)
    np.fill_diagonal(weights, 0.0)
    if tight is not None and len(tight):
        for (outer, inner), row in tight.iterrows():
            a, b = index[outer], index[inner]
            weights[a, b] = min(weights[a, b], float(row["upper"]))  # off_b - off_a <= upper
            weights[b, a] = min(weights[b, a], -float(row["lower"]))  # off_a - off_b <= -lower
    dist = shortest_paths(weights)
    if (np.diag(dist) < 0).any():
        worst = names[int(np.argmin(np.diag(dist)))]
        return Clocks(reference, {reference: (0, 0)}, crossings, [n for n in names if n != reference],
                      f"the crossings at {worst} contradict each other by {-np.diag(dist).min() / 1e6:.3f} ms (a clock stepped "
                      "during the capture, or sightings of different packets taken for one): no offset corrected")
    r = index[reference]
    offsets, unplaced = {}, []
    for n in names:
        high, low = dist[r, index[n]], -dist[index[n], r]
        if not (np.isfinite(high) and np.isfinite(low)):
            unplaced.append(n)
            continue
        offsets[n] = (int(round((high + low) / 2)), int(round((high - low) / 2)))
    return Clocks(reference, offsets, crossings, unplaced)


def on_one_time_line(events: pd.DataFrame, nodes: dict[str, str] | None) -> tuple[pd.DataFrame, Clocks | None, np.ndarray | None]:
    """The events with each node's sightings shifted by its estimated offset (a new frame; the caller's is not
    touched), the estimate, and each row's node. Events of one node, or of no known node: as they are, None."""
    if not len(events) or (not nodes and not named_nodes(events)):
        return events, None, None
    node = node_per_row(events, nodes or {})
    if len({n for n in node if n}) < 2:
        return events, None, None
    clocks = estimate(events, node)
    shift = np.array([clocks.offsets.get(n, (0, 0))[0] for n in node], dtype=np.int64) if clocks.offsets else np.zeros(len(events), np.int64)
    if not shift.any():
        return events, clocks, node
    shifted = events.assign(ts_ns=events["ts_ns"].to_numpy() - shift)
    order = np.argsort(shifted["ts_ns"].to_numpy(), kind="stable")
    return shifted.iloc[order].reset_index(drop=True), clocks, node[order]


def logs_on_one_time_line(logs: ParsedLogs, clocks: Clocks | None, vantage_node: dict[str, str]) -> ParsedLogs:
    """The logs with each replica's lines shifted by the estimated offset of the node that runs it (a replica is
    named as `traces.replica_of` names a server vantage; `vantage_node` says each vantage's node). Lines of a
    replica on no known node, or on an unplaced one, stay as they are."""
    if clocks is None or not clocks.offsets or not (len(logs.records) or len(logs.errors)):
        return logs
    replica_node = dict(zip(replica_of(pd.Series(list(vantage_node), dtype=object)), vantage_node.values()))
    offset = {replica: clocks.offsets[node][0] for replica, node in replica_node.items() if node in clocks.offsets}
    if not any(offset.values()):
        return logs
    return replace(logs, records=shifted_lines(logs.records, offset), errors=shifted_lines(logs.errors, offset))


def shifted_lines(lines: pd.DataFrame, offset: dict[str, int]) -> pd.DataFrame:
    """LOG_RECORDS or LOG_ERRORS rows with `ts_ns` less their replica's offset (a new frame; untimed lines stay NA)."""
    if not len(lines):
        return lines
    shift = lines["replica"].astype(str).map(offset).fillna(0).astype("int64").to_numpy()
    return lines.assign(ts_ns=lines["ts_ns"] - shift)


def vantage_nodes(events: pd.DataFrame, node: np.ndarray | None) -> dict[str, str]:
    """{vantage: node} as the rows said it."""
    if node is None:
        return {}
    pairs = pd.DataFrame({"vantage": events["vantage"].astype(str).to_numpy(), "node": node}).drop_duplicates("vantage")
    return dict(zip(pairs["vantage"], pairs["node"]))


CROSSING_SEGMENTS = ("to_server_ns", "return_ns")  # the segments timed by two nodes' clocks when client and server are on two


def cross_node_segments(traces: pd.DataFrame, clocks: Clocks | None, nodes: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Traces with `clock_bound_ns` (how wrong their cross-node segments may be after correction; NA on one node)
    and, where a segment is shorter than that bound (or its nodes' clocks could not be placed), the segment left
    out rather than a false number; and warnings that say so and give each node's offset."""
    traces, hidden = uncertain_segments_hidden(traces, clocks, nodes)
    return traces, clock_warnings(clocks, hidden) if len(traces) else []


@dataclass
class Hidden:
    """Lookups whose cross-node segments were left out, and the widest bound among them (ns; None: unknown)."""

    lookups: int = 0
    widest: float | None = None

    def __add__(self, other: Hidden) -> Hidden:
        bounds = [b for b in (self.widest, other.widest) if b is not None]
        return Hidden(self.lookups + other.lookups, max(bounds) if bounds else None)


def uncertain_segments_hidden(traces: pd.DataFrame, clocks: Clocks | None, nodes: dict[str, str],
                              counted: np.ndarray | None = None) -> tuple[pd.DataFrame, Hidden]:
    """`cross_node_segments`' traces, and what it left out of those `counted` (all by default), for its warnings: a
    caller that judges the traces in windows adds each window's own up."""
    traces["clock_bound_ns"] = pd.array([pd.NA] * len(traces), dtype="Int64")
    if clocks is None or traces.empty:
        return traces, Hidden()
    client_node = traces["client_vantage"].astype(str).map(nodes).fillna("")
    server_node = traces["server"].astype(str).map(nodes).fillna("")
    crossing = ((client_node != "") & (server_node != "") & (client_node != server_node)).to_numpy()
    bound = pd.array([clocks.bound_between(a, b) if c else None for a, b, c in zip(client_node, server_node, crossing)], dtype="Int64")
    traces["clock_bound_ns"] = bound
    hidden = np.zeros(len(traces), dtype=bool)
    for segment in CROSSING_SEGMENTS:
        value = traces[segment].astype("Float64").abs()
        unsure = crossing & (pd.isna(bound) | (value < pd.Series(bound, index=traces.index).astype("Float64"))).fillna(True).to_numpy(dtype=bool)
        unsure &= traces[segment].notna().to_numpy()
        traces.loc[unsure, segment] = pd.NA
        hidden |= unsure
    if counted is not None:
        hidden &= counted
    widest = pd.Series(bound[hidden]).dropna()
    return traces, Hidden(int(hidden.sum()), float(widest.max()) if len(widest) else None)


def clock_warnings(clocks: Clocks | None, hidden: Hidden) -> list[str]:
    """Each node's offset, what could not be placed, and the lookups whose segments between nodes were left out."""
    if clocks is None:
        return []
    warnings = [f"clocks: {clocks.contradiction}"] if clocks.contradiction else []
    shifted = [f"{n} {est / 1e6:+.3f} ms ±{bound / 1e6:.3f}" for n, (est, bound) in sorted(clocks.offsets.items()) if n != clocks.reference]
    if shifted:
        warnings.append(f"clocks: nodes put on {clocks.reference}'s time line from the lookups that cross them: " + ", ".join(shifted))
    if clocks.unplaced:
        warnings.append(f"clocks: no lookup crosses from {', '.join(clocks.unplaced)} to the others: their times are their own clocks'")
    if hidden.lookups:
        warnings.append(f"clocks: {hidden.lookups} lookups cross nodes whose clocks agree only to within "
                        + (f"±{hidden.widest / 1e6:.3f} ms" if hidden.widest is not None else "an unknown bound")
                        + ": their segments between the nodes shorter than that are not shown (uncertain, not measured)")
    return warnings
