"""Steps 1 and 2: legs (one lookup each, by the client key and the identity rule) and each leg's server."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dnscorrelate.correlate.columns import (
    codes_of,
    pair_strings,
    role_by_vantage,
    same_categories,
    strings_at,
    values_at,
)
from dnscorrelate.senders import is_loopback, vantage_names

SERVER_ROLES = ["coredns", "upstream"]  # vantages that are DNS servers
LEG_GAP_NS = 30 * 10**9  # a key not seen for this long starts a new leg


def add_client_key(dns: pd.DataFrame) -> pd.DataFrame:
    """Columns client_ip/client_port and a `key` integer shared by every sighting of one exchange, added
    in place (the caller owns `dns`). Built from category codes: no string per packet."""
    response = dns["qr"].to_numpy()
    ips, src, dst = same_categories(dns["src_ip"], dns["dst_ip"])
    client = np.where(response, dst, src).astype(np.int64)
    port = np.where(response, dns["dst_port"].to_numpy(), dns["src_port"].to_numpy()).astype(np.int64)
    tcp = (dns["proto"] == "tcp").to_numpy().astype(np.int64)
    dns["client_ip"] = pd.Categorical.from_codes(client, ips)
    dns["client_port"] = port
    dns["key"] = (client << 34) | (port << 18) | ((dns["dns_id"].to_numpy().astype(np.int64) & 0xFFFF) << 2) | tcp
    return dns


def assign_legs(dns: pd.DataFrame) -> pd.DataFrame:
    """`leg` numbers, one per lookup (the module docstring's identity rule); rows in time order.
    The column is added in place when `dns` already is in time order (the caller owns it)."""
    if not dns["ts_ns"].is_monotonic_increasing:
        dns = dns.sort_values("ts_ns", kind="stable")
    proxy = (dns["ifname"].astype(str) == "dns-proxy").to_numpy() if "ifname" in dns else None
    dns["leg"] = lookup_numbers(dns["key"].to_numpy(), dns["ts_ns"].to_numpy(), dns["qr"].to_numpy(), question_of(dns), proxy)
    return dns


def question_of(dns: pd.DataFrame) -> np.ndarray:
    """An integer per row, equal for rows asking the same (qname, qtype), and -1 where the name could not be
    decoded (a cut packet: it asks nothing we can compare). From category codes, no strings."""
    names, unnamed = codes_of(dns["qname"], np.array([""]))
    qtype = dns["qtype"].cat.codes.to_numpy().astype(np.int64) + 1
    question = names.astype(np.int64) * (len(dns["qtype"].cat.categories) + 1) + qtype
    return np.where((names < 0) | (names == unnamed[0]), -1, question)


def lookup_numbers(key: np.ndarray, ts: np.ndarray, response: np.ndarray, question: np.ndarray,
                   proxy: np.ndarray | None = None) -> np.ndarray:
    """A number per row, shared by the sightings of one lookup. Within one key's rows in time order (queries
    before responses at the same instant), a row starts a new lookup when it is a query that follows a
    response (the previous lookup was answered), a query asking another question, or any row more than
    LEG_GAP_NS after the key's previous one (the previous lookup timed out). A DNS proxy's record of a request
    (`proxy`: Hubble's L7 flow) is not a packet: it may come after the answer it led to (the proxy answers a
    name it refuses first, and records it after), so it follows a response without starting a lookup.
    O(rows log rows), no loop."""
    order = np.lexsort((response, ts, key))
    k, t, r, q = key[order], ts[order], response[order], question[order]
    new = np.ones(len(key), dtype=bool)
    query_after = ~r[1:] & (~proxy[order][1:] if proxy is not None else True)
    new[1:] = (
        (k[1:] != k[:-1])
        | (t[1:] - t[:-1] > LEG_GAP_NS)
        | (query_after & r[:-1])
        | (query_after & ~r[:-1] & (q[1:] != q[:-1]) & (q[1:] >= 0) & (q[:-1] >= 0))
    )
    number = np.empty(len(key), dtype=np.int64)
    number[order] = np.cumsum(new) - 1
    return number


class LegRows:
    """Packet rows grouped by leg, time order kept inside each leg: each leg's first or last row meeting a
    condition, in O(rows) numpy. Legs are numbered by `slot`, in order of their first packet."""

    def __init__(self, leg: np.ndarray) -> None:
        order = np.argsort(leg, kind="stable")  # rows are in time order, and stay so within a leg
        by_leg = leg[order]
        starts = np.ones(len(leg), dtype=bool)
        starts[1:] = by_leg[1:] != by_leg[:-1]
        first_row = order[starts]
        appearance = np.argsort(first_row, kind="stable")
        rank = np.empty(len(appearance), dtype=np.int64)
        rank[appearance] = np.arange(len(appearance))
        self.slot = np.empty(len(leg), dtype=np.int64)
        self.slot[order] = rank[np.cumsum(starts) - 1]
        self.order = order  # each leg's rows contiguous, in time order
        self.legs = by_leg[starts][appearance]
        self.count = len(self.legs)

    def first(self, mask: np.ndarray | None = None, last: bool = False) -> np.ndarray:
        """Per leg, the row index of its first (or last) row where `mask` holds; -1 where none does."""
        rows = self.order if mask is None else self.order[mask[self.order]]
        slots = self.slot[rows]
        edge = np.ones(len(rows), dtype=bool)
        if last:
            edge[:-1] = slots[1:] != slots[:-1]
        else:
            edge[1:] = slots[1:] != slots[:-1]
        found = np.full(self.count, -1, dtype=np.int64)
        found[slots[edge]] = rows[edge]
        return found

    def matches(self, codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Rows whose code equals their leg's entry in `wanted` (one code per leg)."""
        return codes == wanted[self.slot]


def describe_legs(dns: pd.DataFrame) -> pd.DataFrame:
    """One row per leg, in order of the legs' first packets: who asked, what, who served it, and when each
    step happened. Rows of `dns` are in time order; its `sent_from` column, where there is one, is each
    packet's sender (`sent_from`'s codes)."""
    rows = LegRows(dns["leg"].to_numpy())
    qr = dns["qr"].to_numpy()
    query, response = ~qr, qr
    ts = dns["ts_ns"]
    vantage = dns["vantage"]
    role = dns["role"]

    first = rows.first()
    first_query = rows.first(query)
    deepest = rows.first(query, last=True)
    responder = rows.first(response)
    sent_by = dns["sent_from"].to_numpy() if "sent_from" in dns else vantage.cat.codes.to_numpy()
    sender_roles = role_by_vantage(vantage, role)
    legs = {
        "client_ip": strings_at(dns["client_ip"], first),
        "client_port": dns["client_port"].to_numpy()[first].astype("int32"),
        "dns_id": dns["dns_id"].to_numpy()[first],
        "proto": strings_at(dns["proto"], first),
        "originator": vantage_names(vantage, sent_by[first]),
        "origin_role": sender_roles[sent_by[first]],
        "t_start": ts.to_numpy()[first],
    }
    qname_codes, unnamed = codes_of(dns["qname"], np.array([""]))
    named = rows.first(qname_codes != unnamed[0])
    legs["qname"] = strings_at(dns["qname"], named)
    legs["qtype"] = strings_at(dns["qtype"], named)
    legs["dst_ip"] = strings_at(dns["dst_ip"], first_query)
    legs["dst_port"] = values_at(dns["dst_port"], first_query, missing=0).astype("int32")
    legs["reached"] = strings_at(vantage, deepest)
    legs["reached_role"] = strings_at(role, deepest)
    legs["responder"] = vantage_names(vantage, np.where(responder >= 0, sent_by[responder], -1))
    legs["t_server_out"] = values_at(ts, responder)
    legs["server_rcode"] = strings_at(dns["rcode"], responder)
    legs["server"] = np.where(legs["responder"] != "", legs["responder"], legs["reached"])
    vantage_codes, server_codes = codes_of(vantage, legs["server"])
    legs["server_role"] = sender_roles[server_codes]
    legs["t_server_in"] = values_at(ts, rows.first(query & rows.matches(vantage_codes, server_codes)))
    at_home = rows.matches(vantage_codes, codes_of(vantage, legs["originator"])[1])
    home = rows.first(response & at_home)
    legs["t_client_in"] = values_at(ts, home)
    legs["client_latency_ns"] = values_at(dns["latency_ns"], home)
    for column in ("rcode", "answers"):
        home_known = (home >= 0) & (dns[column].cat.codes.to_numpy()[home] >= 0)
        legs[column] = strings_at(dns[column], np.where(home_known, home, responder))
    final = np.where(home >= 0, home, responder)
    legs["ancount"] = values_at(dns["ancount"], final, missing=0).astype(int)
    for flag in ("tc", "aa"):
        legs[flag] = values_at(dns[flag], final, missing=False).astype(bool)
    legs["responses_seen"] = np.bincount(rows.slot[response], minlength=rows.count)
    legs.update(what_the_client_saw(dns, rows, at_home, first_query, responder))

    # Where a node rewrote the destination (Service DNAT) and, upstream, the source (masquerade).
    dst_codes, leg_dst_codes = codes_of(dns["dst_ip"], legs["dst_ip"])
    dnat = rows.first(query & ~rows.matches(dst_codes, leg_dst_codes))
    at_node = query & (role == "node").to_numpy()
    first_at_node = rows.first(at_node)
    # A node that skips its copy of what it sends into a captured namespace (live/capture.py) shows the query only as it
    # arrived: the rewrite is first seen where it was received, and the node before that made it.
    made_by_node = (dnat >= 0) & (first_at_node >= 0) & (first_at_node < dnat) & ~at_node[np.maximum(dnat, 0)]
    legs["dnat_to"] = pair_strings(dns["dst_ip"], dns["dst_port"], dnat)
    legs["dnat_at"] = strings_at(vantage, np.where(made_by_node, first_at_node, dnat))
    legs["seen_at_node"] = first_at_node >= 0
    # sent on by a node: its own copy of the query leaving, or the query arriving past it (the node skipped its copy)
    arrived_past = rows.first(query & ~at_node & (dns["pkt_type"] == "HOST").to_numpy())
    legs["forwarded_by_node"] = (rows.first(at_node & (dns["pkt_type"] == "OUTGOING").to_numpy()) >= 0) | (
        (first_at_node >= 0) & (arrived_past > first_at_node))
    # A leg first seen as a query arriving at a server (its dnstap, a capture on the replica alone) comes from a
    # client no vantage shows: it may be the server's parent leg, and at a CoreDNS replica its client is no longer
    # the replica itself (an upstream resolver's clients are CoreDNS's own exchanges, whoever sent them).
    legs["received"] = ((strings_at(dns["pkt_type"], first) == "HOST") & ~qr[first] & np.isin(legs["origin_role"], SERVER_ROLES)
                        & (sent_by[first] == vantage.cat.codes.to_numpy()[first]) & ~is_loopback(dns["src_ip"], first))
    legs["origin_role"] = np.where(legs["received"] & (legs["origin_role"] == "coredns"), "other", legs["origin_role"])
    if "src_name" in dns:  # where the evidence names that client (Hubble's flow dropped at a server's ingress), it is the client
        sender = strings_at(dns["src_name"], first)
        legs["originator"] = np.where(legs["received"] & (sender != ""), sender, legs["originator"])
    return pd.DataFrame(legs, index=pd.Index(rows.legs, name="leg"), copy=False)


def what_the_client_saw(dns: pd.DataFrame, rows: LegRows, at_home: np.ndarray, first_query: np.ndarray, responder: np.ndarray) -> dict:
    """Per leg, what real captures hold besides one query and its answer: whether any query was seen at all,
    the address that answered, the opcode, and at the vantage the leg started from how many queries and
    responses it saw and from how many distinct addresses the responses came."""
    qr = dns["qr"].to_numpy()
    src = dns["src_ip"].cat.codes.to_numpy().astype(np.int64)
    # A DNS proxy's records at the client (Hubble's L7 flows) are its account of the exchange it relayed, from the
    # server's address, not a packet the client received: where the client's own packets were captured too, they
    # count (the proxy's copy from the VIP and CoreDNS's answer to the proxy are one lookup through one hop, not two
    # servers answering); where they are all there is, they stand for the client's.
    proxy = (dns["ifname"].astype(str) == "dns-proxy").to_numpy() if "ifname" in dns else np.zeros(len(dns), dtype=bool)
    if proxy.any():
        captured = np.bincount(rows.slot[at_home & ~proxy], minlength=rows.count) > 0
        at_home = at_home & ~(proxy & captured[rows.slot])
    home_responses = at_home & qr & (dns["pkt_type"] != "OUTGOING").to_numpy()  # received there; not one that place sent itself
    pairs = np.unique(rows.slot[home_responses] * (len(dns["src_ip"].cat.categories) + 1) + src[home_responses] + 1)
    return {
        "query_seen": first_query >= 0,
        # its first sighting is a response the vantage itself sent: that place answered a query it received unrecorded
        # (a server's dnstap that logs responses only, BIND's `dnstap { auth response; }`)
        "answered_here": (strings_at(dns["pkt_type"], rows.first()) == "OUTGOING") & qr[rows.first()],
        # its first query arrived at the place it was first seen: that place is the server it was for
        "query_received": strings_at(dns["pkt_type"], first_query) == "HOST",
        "responder_ip": strings_at(dns["src_ip"], responder),
        # the server as the evidence names it (Hubble names both ends of a flow): the responder, else whom the query was for
        "server_name": np.where(responder >= 0, strings_at(dns["src_name"], responder), strings_at(dns["dst_name"], first_query))
        if "src_name" in dns else np.full(rows.count, "", dtype=object),
        "opcode": dns["opcode"].to_numpy()[rows.first()].astype(np.int64),
        "queries_at_client": np.bincount(rows.slot[at_home & ~qr], minlength=rows.count),
        "responses_at_client": np.bincount(rows.slot[home_responses], minlength=rows.count),
        "responders_at_client": np.bincount(pairs // (len(dns["src_ip"].cat.categories) + 1), minlength=rows.count),
    }
