"""What the rules read, and what several of them share, computed once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.correlate import Correlation
from dnscorrelate.correlate.traces import OWN_PURPOSES
from dnscorrelate.correlate.vantage import VANTAGE
from dnscorrelate.diagnose.names import lower, split_search

NETWORK_REASONS = ["timeout", "refused", "unreachable", "no-route", "no-healthy-upstream", "blocked", "reset"]
DNS_SERVER_ROLES = ["coredns", "upstream", "node"]  # clients that are DNS servers (a node: NodeLocal DNS)
NOT_ERRORS = ["NOERROR", "NXDOMAIN", ""]  # every other response code is a failure, EDNS extended ones (BADVERS, …) too
STRAY = ["query-not-seen", "wrong-id"]  # outcomes of responses no query was seen of: not lookups
PROXY = "dns-proxy"  # the interface name of a DNS proxy's records (Hubble's L7 flows: sources/hubble.py)
DNSTAP = "dnstap"  # the interface name of dnstap rows (sources/dnstap.py, live/dnstap.py)


@dataclass(frozen=True)
class EvidenceWords:
    """What findings call the evidence at one vantage point, by its kind."""

    record: str  # "the capture", "its dnstap log"
    point: str  # "capture point": one {point} cannot tell
    began: str  # "before the capture began"
    gap: str  # where else a query the evidence lacks went
    copied: str  # how the evidence itself could show one response twice


CAPTURE_WORDS = EvidenceWords("the capture", "capture point", "before the capture began",
                              "lost in a gap of it (over TCP, a segment acknowledged but not captured)",
                              "the capture copied the packet (two interfaces, a mirror port)")
DNSTAP_WORDS = EvidenceWords("the dnstap log", "dnstap writer", "before the dnstap log began",
                             "not logged (a writer may log responses only, or drop messages when its queue is full)",
                             "the writer logged it twice")
HUBBLE_WORDS = EvidenceWords("Hubble's flows", "Hubble observer", "before Hubble's flows began",
                             "not recorded (Hubble keeps a ring buffer of flows and drops the oldest when it is full, and its "
                             "DNS proxy records only the pods a DNS rule selects)",
                             "Hubble recorded it twice")


def failed(rcode: pd.Series) -> pd.Series:
    """Response codes that say the server failed: SERVFAIL, REFUSED, NOTIMP, FORMERR, BADVERS, RCODE23, …"""
    return ~rcode.isin(NOT_ERRORS)


def rows(frame: pd.DataFrame, keep) -> pd.DataFrame:
    """`frame[keep]`, or the frame itself when that is every row: a filtered copy of a million traces is
    several hundred MB."""
    keep = np.asarray(keep, dtype=bool)
    return frame if keep.all() else frame[keep]


def client_traces(traces: pd.DataFrame) -> pd.DataFrame:
    """Requests from workloads: not the ones CoreDNS makes itself (its loop check, health probes, its upstream
    exchanges seen alone), nor messages of another opcode."""
    return rows(traces, ~server_clients(traces) & (traces["purpose"] == "lookup").to_numpy())


def server_clients(traces: pd.DataFrame) -> np.ndarray:
    """Traces whose client is a DNS server asking on its own behalf. A node is one (NodeLocal DNS) only where the
    evidence shows a path: a tcpdump labelled `node/NAME` sees the node's own lookups (dig, the kubelet) as a
    client's, and they are what the user captured."""
    role = traces["client_role"]
    node_at_one_place = (role == "node").to_numpy() & (traces["coverage"] == VANTAGE).to_numpy()
    return role.isin(DNS_SERVER_ROLES).to_numpy() & ~node_at_one_place


def logs_only(traces: pd.DataFrame) -> pd.Series:
    """Traces known from CoreDNS's log alone: no packet shows their client."""
    return (traces["client_vantage"] == "") & (traces["client_role"] == "")


NAME_COLUMNS = ["trace_id", "client_ip", "client_vantage", "qname", "qtype", "rcode", "answers", "ancount", "responses_seen", "tc", "aa",
                "served_from", "upstream_server", "log_ref", "error", "server", "coverage"]


class Evidence:
    """A correlation as the rules see it: the workloads' traces, the upstream exchanges, the cluster facts; what
    the causes explain (`explained`, for the fallbacks) and the findings so far (which a fallback may amend)."""

    def __init__(self, correlation: Correlation, facts: ClusterFacts) -> None:
        self.correlation = correlation
        self.facts = facts
        everything = client_traces(correlation.traces)
        lookups = rows(everything, ~everything["outcome"].isin(STRAY).to_numpy())
        self.lookups = lookups  # every lookup, whatever the evidence covers of it
        self.traces = rows(lookups, (lookups["coverage"] != VANTAGE).to_numpy())  # lookups whose path the evidence places
        self.seen = rows(lookups, (lookups["coverage"] == VANTAGE).to_numpy()) if (lookups["coverage"] == VANTAGE).any() else lookups.iloc[0:0]
        self.strays = rows(everything, everything["outcome"].isin(STRAY).to_numpy()) if len(lookups) < len(everything) else everything.iloc[0:0]
        others = correlation.traces["purpose"].isin(["lookup", *OWN_PURPOSES])
        self.not_lookups = correlation.traces[~others.to_numpy()]  # UPDATE, NOTIFY, …
        self.upstream = correlation.upstream
        self.explained: set[int] = set()
        self.findings: list = []

    @cached_property
    def alerts(self) -> pd.DataFrame:
        """What CoreDNS said about itself (ParsedLogs.alerts): loop detected, health slow, API unreachable, …"""
        return pd.DataFrame(self.correlation.log_alerts, columns=["kind", "source", "line_no", "replica", "ts_ns", "text"])

    @cached_property
    def proxy_timed(self) -> set[int]:
        """Traces whose client-side sightings are a DNS proxy's records (Hubble's L7 flows, `ifname` dns-proxy):
        their time is the proxy's own, from the query reaching it to the answer leaving it."""
        seen = self.correlation.sightings
        if "ifname" not in seen or not (seen["ifname"].astype(str) == PROXY).any():
            return set()
        return set(seen.loc[(seen["ifname"].astype(str) == PROXY).to_numpy(), "trace_id"].astype(int))

    @cached_property
    def dnstap_vantages(self) -> set[str]:
        """Vantages whose every sighting is a dnstap log's (ifname `dnstap`: the writer's own record of its
        messages), not a packet capture's."""
        seen = self.correlation.sightings
        if "ifname" not in seen or not len(seen):
            return set()
        tap = (seen["ifname"].astype(str) == DNSTAP).to_numpy()
        vantages = seen["vantage"].astype(str)
        return set(vantages[tap]) - set(vantages[~tap])

    @cached_property
    def node_captured(self) -> bool:
        """Whether the evidence holds a capture at a node (sightings at a place with role `node`): only then does a
        query's absence there say it did not reach the node."""
        seen = self.correlation.sightings
        return bool(len(seen)) and bool((seen["role"].astype(str) == "node").any())

    @cached_property
    def hubble_vantages(self) -> set[str]:
        """Vantages whose every sighting is one of Hubble's records (its DNS proxy's L7 flows, its L3/L4 flows and
        drops: sources/hubble.py), not a packet capture's."""
        seen = self.correlation.sightings
        if "ifname" not in seen or not len(seen):
            return set()
        hubble = ((seen["ifname"].astype(str) == PROXY) | seen["kind"].astype(str).isin(["flow", "conn-drop"])).to_numpy()
        vantages = seen["vantage"].astype(str)
        return set(vantages[hubble]) - set(vantages[~hubble])

    def evidence_at(self, vantage: str) -> EvidenceWords:
        """How findings name the evidence at `vantage`: a dnstap log, Hubble's flows, or a capture."""
        if vantage in self.dnstap_vantages:
            return DNSTAP_WORDS
        return HUBBLE_WORDS if vantage in self.hubble_vantages else CAPTURE_WORDS

    def timing_caveat(self, trace_ids) -> str:
        """What a time reported for these traces is, when a DNS proxy took it; "" otherwise."""
        return " (the DNS proxy's time: its own wait for the server, not the pod's)" if self.proxy_timed & set(trace_ids) else ""

    @cached_property
    def proxy_refused(self) -> pd.DataFrame:
        """Lookups whose error answer came from Cilium's DNS proxy, not from a DNS server: answered with an error
        (REFUSED by default; NXDOMAIN too when the proxy's record says it denied the name), seen at no CoreDNS replica
        nor anything behind it and logged by no CoreDNS, and either the proxy's own record (Hubble's L7 flow at the
        pod) says DROPPED, or the evidence watched CoreDNS (its sightings or its log hold other lookups) and a
        Cilium policy's DNS rules select the client and cover not the name (`proxy_rules`); with `denied_by_proxy`
        and `rules` (the policies and what their DNS rules say) per lookup, and `server_watched` (whether the
        evidence could have seen the query at CoreDNS at all)."""
        from dnscorrelate.cluster.cilium_policy import dns_selectors, rules_text, verdict_on_name

        traces = self.lookups
        bad = traces[((traces["outcome"] == "answered") & (failed(traces["rcode"]) | (traces["rcode"] == "NXDOMAIN"))
                      & (traces["log_ref"] == "") & (traces["client_vantage"] != "")).to_numpy()]
        if bad.empty:
            return bad.assign(denied_by_proxy=pd.Series(dtype=bool), rules=pd.Series(dtype=str), server_watched=pd.Series(dtype=bool))
        seen = self.correlation.sightings
        mine = seen[seen["trace_id"].isin(set(bad["trace_id"])).to_numpy()]
        ifname, role = mine["ifname"].astype(str), mine["role"].astype(str)
        at_server = set(mine.loc[(role.isin(["coredns", "upstream"]) & (ifname != PROXY)).to_numpy(), "trace_id"])
        denied = set(mine.loc[((ifname == PROXY) & (mine["verdict"].astype(str) == "DROPPED")).to_numpy(), "trace_id"])
        watched = bool((seen["role"].astype(str) == "coredns").any()) or len(self.correlation.logs) > 0
        policies = self.facts.model.cilium_policies
        rules, keep = [], []
        for trace_id, client_ip, qname, rcode in zip(bad["trace_id"], bad["client_ip"], bad["qname"], bad["rcode"]):
            _, refusing = verdict_on_name(policies, self.facts.pods.get(client_ip), qname, dns_selectors)
            said = "; ".join(f"{p.ref} ({rules_text(p, dns_selectors)})" for p in refusing)
            proxy = trace_id in denied or (watched and bool(refusing) and rcode != "NXDOMAIN")
            keep.append(trace_id not in at_server and proxy)
            rules.append(said)
        kept = bad.assign(denied_by_proxy=bad["trace_id"].isin(denied).to_numpy(), rules=rules, server_watched=watched)
        return kept[np.array(keep, dtype=bool)]

    @cached_property
    def lost_before_coredns(self) -> pd.DataFrame:
        """Queries seen leaving a client, never at CoreDNS (nor anything behind it), no ICMP error, no answer."""
        traces = self.traces
        lost = traces[(traces["outcome"] == "timed-out") & (traces["icmp"] == "") & (traces["client_vantage"] != "")
                      & (traces["verdict"] != "DROPPED")]  # a dropped flow says where and why itself
        return lost[~lost["reached_role"].isin(["coredns", "upstream"]) & ~lost["server_role"].isin(["coredns"])]

    @cached_property
    def answered(self) -> tuple[pd.DataFrame, pd.Series]:
        """The answered traces (the columns name rules read) with `base` (the name before a search domain) and
        `multi_label_base` for NXDOMAIN answers, and their lower-case names."""
        traces = self.lookups
        columns = [c for c in NAME_COLUMNS if c in traces.columns]  # copy only what the rules and evidence read
        answered = traces.loc[(traces["outcome"] == "answered").to_numpy(), columns]
        # Only NXDOMAIN answers can be search-list noise or a missing Service: split just those.
        denied = answered["rcode"] == "NXDOMAIN"
        answered["base"] = ""
        answered.loc[denied, "base"] = split_search(answered[denied], self.facts).to_numpy()
        answered["multi_label_base"] = False
        answered.loc[denied, "multi_label_base"] = answered.loc[denied, "base"].str.contains(".", regex=False).to_numpy(dtype=bool)
        return answered, lower(answered["qname"])

    @cached_property
    def search_noise(self) -> pd.DataFrame:
        """NXDOMAIN expansions of a dotted name the same client then asked as itself."""
        answered, qnames = self.answered
        noise = answered[(answered["rcode"] == "NXDOMAIN") & answered["multi_label_base"]]
        asked_plain = set(zip(answered["client_ip"], qnames))
        return noise[np.array([(c, b + ".") in asked_plain for c, b in zip(noise["client_ip"], noise["base"])], dtype=bool)]
