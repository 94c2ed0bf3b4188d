"""Who sent a packet, from the evidence alone: a rule about the packet-event table (schema.EVENTS) that the
correlator (a leg's originator and responder, TCP set-ups) and live/dnstap.py (a forward's packet) share.

A captured namespace's addresses are the ones packets arrived at there; what a node saw arrive from one of
them, that namespace sent. It matters where a namespace is captured receive-only (live/capture.py): its
own packets are seen only by the node, at the other end of its veth."""

from __future__ import annotations

import numpy as np
import pandas as pd


def address_owners(frame: pd.DataFrame) -> dict[str, str]:
    """{address: vantage} of the captured namespaces that are not nodes, from the evidence: the addresses packets
    arrived at there (loopback aside); an address two namespaces claim is neither's."""
    arrived = frame[((frame["pkt_type"] == "HOST") & (frame["role"] != "node")).to_numpy()]
    pairs = arrived[["dst_ip", "vantage"]].drop_duplicates().dropna().astype(str)  # distinct pairs first: a string each, not a row
    pairs = pairs.rename(columns={"dst_ip": "ip"})
    pairs = pairs[~pairs["ip"].map(is_loopback_address).astype(bool) & (pairs["ip"] != "")]
    claimed = pairs.drop_duplicates("ip", keep=False)
    return dict(zip(claimed["ip"], claimed["vantage"]))


def sent_from(frame: pd.DataFrame, owners: dict[str, str]) -> np.ndarray:
    """Per row, the code (in `frame`'s vantage categories) of the vantage that sent the packet where a node saw it
    arrive from a captured namespace (a node's side of that namespace's veth, with one of its `owners` addresses as
    the source), else the row's own vantage's. A namespace captured receive-only (`PACKET_IGNORE_OUTGOING`,
    live/capture.py) records none of its own packets: their first sighting is the node's, a microsecond later,
    and it is the namespace that sent them. Where the namespace's own sighting was recorded it comes first, and
    this changes nothing. A node's own packets (OUTGOING there: a DNS proxy in the node's namespace sends with its
    client's address) stay its own."""
    vantage, src = frame["vantage"].astype("category"), frame["src_ip"].astype("category")
    codes = vantage.cat.codes.to_numpy().astype(np.int64)
    if not owners or not len(frame):
        return codes
    places = vantage.cat.categories
    owner_of_address = np.array([places.get_loc(owners[a]) if owners.get(a) in places else -1 for a in src.cat.categories.astype(str)]
                                + [-1], dtype=np.int64)  # by address code; the last slot: no address
    sender = owner_of_address[src.cat.codes.to_numpy()]
    received_at_node = ((frame["role"] == "node") & (frame["pkt_type"] != "OUTGOING")).to_numpy() & (sender >= 0)
    return np.where(received_at_node, sender, codes)


def is_loopback_address(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def is_loopback(ips: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Whether the categorical addresses at `rows` are loopback ones (False where the row is -1), one test per category."""
    flags = np.array([is_loopback_address(a) for a in ips.cat.categories.astype(str)] + [False], dtype=bool)
    return flags[np.where(rows >= 0, ips.cat.codes.to_numpy()[rows], -1)]


def vantage_names(vantage: pd.Series, codes: np.ndarray) -> np.ndarray:
    """Vantage names at category `codes` ("" for -1)."""
    names = np.append(vantage.cat.categories.to_numpy(dtype=object).astype(str), "")
    return names[codes]
