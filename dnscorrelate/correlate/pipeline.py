"""The steps in order (the package docstring): `correlate` and the `Correlation` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.correlate.clocks import cross_node_segments, logs_on_one_time_line, on_one_time_line, vantage_nodes
from dnscorrelate.correlate.legs import (
    LEG_GAP_NS,
    SERVER_ROLES,
    add_client_key,
    assign_legs,
    describe_legs,
)
from dnscorrelate.correlate.logs import (
    attach_log_columns,
    join_errors,
    join_logs,
    log_warnings,
    traces_from_errors,
    traces_from_logs,
)
from dnscorrelate.correlate.network import (
    attach_connects,
    attach_flows,
    attach_icmp,
    connection_attempts,
    drop_columns,
    lone_drops,
)
from dnscorrelate.correlate.traces import OWN_PURPOSES, build_traces, purpose_of
from dnscorrelate.correlate.upstream import (
    build_upstream,
    link_parents,
    roots_of,
    snat_continuations,
)
from dnscorrelate.correlate.vantage import LOGS, describe_what_was_seen
from dnscorrelate.schema import ParsedLogs
from dnscorrelate.senders import address_owners, sent_from


@dataclass
class Correlation:
    traces: pd.DataFrame  # one row per client request: schema.TRACES
    sightings: pd.DataFrame  # every packet seen at a vantage point, with trace_id, leg, depth; icmp errors included
    upstream: pd.DataFrame  # one row per upstream exchange: schema.UPSTREAM
    logs: pd.DataFrame  # schema.LOG_RECORDS, with the trace_id each joined (-1: none)
    errors: pd.DataFrame  # schema.LOG_ERRORS, with trace_id
    stats: dict = field(default_factory=dict)
    unparsed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # what the evidence could not settle, for the person reading
    log_alerts: list = field(default_factory=list)  # CoreDNS notices that tell something (ParsedLogs.alerts)
    # connections (not DNS) a flow says were DROPPED (Hubble's `conn-drop` rows): what a lookup's answer was used for
    connection_drops: pd.DataFrame = field(default_factory=lambda: schema.empty(schema.EVENTS))

    def restricted_to(self, trace_ids: set[int]) -> Correlation:
        """The traces in `trace_ids`, their sightings and upstream exchanges; logs, errors and counts stay whole."""
        return replace(self, traces=self.traces[self.traces["trace_id"].isin(trace_ids)],
                       sightings=self.sightings[self.sightings["trace_id"].isin(trace_ids)],
                       upstream=self.upstream[self.upstream["trace_id"].isin(trace_ids)])


def correlate(events: pd.DataFrame | None, logs: ParsedLogs | None = None, capture_stats: dict | None = None,
              servers: dict[str, tuple[str, str]] | None = None, nodes: dict[str, str] | None = None,
              on_time_line: bool = False, one_place: bool | None = None) -> Correlation:
    """Traces from packet events and/or CoreDNS logs; either may be empty or None. `servers` names DNS server
    addresses the caller knows ({ip: (name, role)}: the kube-dns VIP, CoreDNS pods), for lookups one vantage
    point saw (vantage.py). `nodes` says which node's clock timed each vantage ({vantage: node}; an event's own
    `node` comes first): nodes' clocks are estimated from the lookups that cross them and put on one time line
    (clocks.py). A caller that holds a part of the evidence (outofcore.py) says that it put the part on one time
    line itself (`on_time_line`: no clocks estimated here, and the cross-node segments are its to judge) and
    whether the whole evidence is `one_place`, which a part alone cannot tell."""
    events = events if events is not None else schema.empty(schema.EVENTS)
    if on_time_line:
        clocks, row_nodes = None, None
        logs = logs or ParsedLogs.none()
    else:
        events, clocks, row_nodes = on_one_time_line(events, nodes)
        logs = logs_on_one_time_line(logs or ParsedLogs.none(), clocks, {**(nodes or {}), **vantage_nodes(events, row_nodes)})
    capture_stats = capture_stats or {}
    kinds = events["kind"]
    is_dns = (kinds == "dns").to_numpy()
    flows = events[(kinds == "flow").to_numpy()]
    alone = lone_drops(flows, events[is_dns], LEG_GAP_NS) if len(flows) else flows.index
    if len(alone):  # a dropped query no DNS record accompanies is a lookup's only sighting: it joins the DNS rows
        is_dns = is_dns | events.index.isin(alone)
        flows = flows.drop(index=alone)
    # A frame of our own for the million-row work: a shallow copy when every event is DNS, so columns
    # can be added in place without copying the caller's data or touching its frame.
    dns = events.copy(deep=False) if is_dns.all() else events[is_dns].copy(deep=False)
    icmp = events[(kinds == "icmp-error").to_numpy()]
    connection_drops = events[(kinds == "conn-drop").to_numpy()]
    control = events[kinds.isin(["tcp-syn", "tcp-synack", "tcp-rst"]).to_numpy()]
    records = logs.records.copy()
    errors = logs.errors.copy()

    owners = address_owners(dns)  # the namespaces' addresses: what a node saw leave one, that one sent
    if len(dns):
        dns = assign_legs(add_client_key(dns))
        dns["sent_from"] = sent_from(dns, owners)
        legs = describe_legs(dns)
        merge_into = snat_continuations(legs, link_parents(legs, legs["origin_role"] == "node"))
        merged = merge_into[merge_into >= 0]
        if len(merged):
            dns["leg"] = merge_into.where(merge_into >= 0, merge_into.index).reindex(dns["leg"]).to_numpy()
            changed = dns["leg"].isin(set(merged.to_numpy())).to_numpy()  # only the legs that absorbed a continuation
            legs = pd.concat([legs.drop(index=[*merged.index, *set(merged.to_numpy())]), describe_legs(dns[changed])]).sort_index()
        del dns["sent_from"]  # the legs say who sent what; the sightings stay as they were seen
        links = link_parents(legs)
        legs["parent"], legs["ambiguous"] = links["parent"], links["ambiguous"]
        root, depth = roots_of(legs["parent"])
        legs["root"], legs["depth"] = root, depth
        order = legs.loc[legs["depth"] == 0, ["t_start", "client_ip", "client_port"]].sort_values(["t_start", "client_ip", "client_port"]).index
        trace_of_root = pd.Series(np.arange(len(order)), index=order)
        legs["trace_id"] = trace_of_root.reindex(legs["root"]).to_numpy()
        upstream = build_upstream(legs)
        traces = build_traces(legs, upstream)
        # One place and no CoreDNS log: unless that place is the server itself (dnstap or a capture on a CoreDNS
        # replica), the evidence shows what reached and left it, not the path.
        # Nor does a place with none between it and the server (pods' own captures, Hubble's DNS proxy at each pod):
        # no node and no server among the places that saw DNS.
        roles = dns.loc[(dns["kind"] == "dns").to_numpy(), "role"]
        one_place = one_place if one_place is not None else (not len(records) and not roles.isin(SERVER_ROLES).any()
                     and (dns["vantage"].nunique() == 1 or not (roles == "node").any()))
        traces = describe_what_was_seen(traces, legs, one_place, servers or {})
        sightings = dns  # ours (see above): columns are added in place rather than copying a million rows
        sightings["trace_id"] = legs["trace_id"].reindex(dns["leg"]).to_numpy()
        sightings["depth"] = legs["depth"].reindex(dns["leg"]).to_numpy()
        joined = join_logs(legs, records, set(logs.guessed_replicas)) if len(records) else []
        records["trace_id"] = legs["trace_id"].reindex(joined).fillna(-1).astype(int).to_numpy() if len(records) else []
    else:
        legs = pd.DataFrame()
        traces = traces_from_logs(records) if len(records) else traces_from_logs(records.iloc[0:0])
        upstream = schema.empty(schema.UPSTREAM)
        sightings = dns.assign(trace_id=pd.Series(dtype=int), depth=pd.Series(dtype=int), leg=pd.Series(dtype=int))
        records["trace_id"] = np.arange(len(records))
    if "trace_id" not in records:
        records["trace_id"] = pd.Series(dtype=int)
    errors["trace_id"] = join_errors(traces, errors, records if not len(dns) else None).to_numpy() if len(errors) else pd.Series(dtype=int)
    if not len(dns) and (errors["trace_id"] < 0).any():
        alone = errors["trace_id"] < 0
        traces = pd.concat([traces, traces_from_errors(errors[alone], len(traces))])
        errors.loc[alone, "trace_id"] = traces["trace_id"].iloc[-int(alone.sum()):].to_numpy()
    if not len(dns):
        traces["coverage"] = LOGS
    traces = attach_log_columns(traces, records, errors)
    traces, icmp_sightings = attach_icmp(traces, icmp, legs)
    flow_sightings = attach_flows(flows, legs, LEG_GAP_NS)
    if len(flows) or len(alone):
        traces = drop_columns(traces, [sightings, flow_sightings])
        stats_of_flows = {"flows": int(len(flows) + len(alone)), "flows_alone": int(len(alone)),
                          "flows_unmatched": int((flow_sightings["trace_id"] < 0).sum()) if len(flow_sightings) else 0}
    else:
        traces, stats_of_flows = drop_columns(traces, [sightings]), {}
    attempts = connection_attempts(control, owners)
    traces, connects_unmatched = attach_connects(traces, attempts)
    traces["purpose"] = purpose_of(traces)
    traces, clock_warnings = cross_node_segments(traces, clocks, vantage_nodes(events, row_nodes))
    traces = schema.conform(traces, schema.TRACES)
    upstream = schema.conform(upstream, schema.UPSTREAM)
    stats = {
        "packets": int(len(events)),
        "dns_packets": int(len(dns) - len(alone)),
        "icmp_errors": int(len(icmp)),
        "icmp_unmatched": int((icmp_sightings["trace_id"] < 0).sum()) if len(icmp_sightings) else 0,
        **stats_shared(logs, records, errors, traces, upstream, control, attempts, connects_unmatched),
        "log_records_unmatched": int((records["trace_id"] < 0).sum()) if len(dns) else 0,
        "lost_samples": int(capture_stats.get("lost_samples", 0)),
        "decode_errors": int(capture_stats.get("decode_errors", 0)) + int((~events["decoded"]).sum() if len(events) and "decode_errors" not in capture_stats else 0),
        **stats_of_flows,
        **({"connection_drops": int(len(connection_drops))} if len(connection_drops) else {}),
        **({"clocks": clocks.stats()} if clocks else {}),
    }
    extra = [frame for frame in (icmp_sightings, flow_sightings) if len(frame)]
    seen = pd.concat([sightings, *extra], ignore_index=True) if extra else sightings
    if not seen["ts_ns"].is_monotonic_increasing:
        seen = seen.sort_values("ts_ns", kind="stable")
    return Correlation(traces=traces, sightings=seen, upstream=upstream, logs=records, errors=errors, stats=stats,
                       unparsed=logs.unparsed, warnings=log_warnings(logs, len(records), bool((records["trace_id"] >= 0).any()), len(dns)) + clock_warnings, log_alerts=logs.alerts,
                       connection_drops=connection_drops)


def stats_shared(logs: ParsedLogs, records: pd.DataFrame, errors: pd.DataFrame, traces: pd.DataFrame, upstream: pd.DataFrame,
                 control: pd.DataFrame, attempts: pd.DataFrame, connects_unmatched: int) -> dict:
    """The counters of a correlation read off its finished tables, the same whether it was made in one piece or
    joined from parts (outofcore.py): TCP connects, log lines and records, traces and upstream exchanges."""
    return {
        "tcp_control_packets": int(len(control)),
        "tcp_connects": int(len(attempts)),
        "tcp_connects_unmatched": connects_unmatched,
        "log_lines": int(logs.log_lines),
        "log_lines_lost": int(logs.lines_lost),
        "log_records": int(len(records)),
        "error_records": int(len(errors)),
        "log_other": int(logs.other_lines),
        "unparsed_lines": len(logs.unparsed),
        "own_queries": int(traces["purpose"].isin(OWN_PURPOSES).sum()),
        "traces": int(len(traces)),
        "upstream_exchanges": int(len(upstream)),
        "ambiguous": int(upstream["ambiguous"].sum()) if len(upstream) else 0,
    }
