"""The link layer: from a captured frame to the IP packet it carries.

Link types: Ethernet (1), Linux cooked SLL (113) and SLL2 (276, `tcpdump -i any`), raw IP (101, 12, 14,
228, 229), BSD loopback NULL (0) and LOOP (108). Behind an Ethernet type, 802.1Q and 802.1ad VLAN tags
(0x8100, 0x88A8, 0x9100; stacked, as QinQ does) are skipped, and so is a PPPoE session header (0x8864)
with the PPP protocol behind it (0x0021 IPv4, 0x0057 IPv6; RFC 2516, RFC 1661), as DSL uplinks carry them.
"""

from __future__ import annotations

import struct

import dpkt

LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_LOOP, LINK_SLL, LINK_SLL2 = 0, 1, 101, 108, 113, 276
LINK_RAW_ALIASES = {12, 14, 101}
LINK_IPV4, LINK_IPV6 = 228, 229
SUPPORTED_LINKS = {LINK_NULL, LINK_ETHERNET, LINK_LOOP, LINK_SLL, LINK_SLL2, LINK_IPV4, LINK_IPV6} | LINK_RAW_ALIASES

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = {0x8100, 0x88A8, 0x9100}
SLL_PKT_TYPES = {0: "HOST", 1: "BROADCAST", 2: "MULTICAST", 3: "OTHERHOST", 4: "OUTGOING"}


ETH_PPPOE_SESSION = 0x8864
PPPOE_HEADER = 6  # version/type, code, session id, length
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057


def network_layer(linktype: int, data: bytes) -> tuple[bytes | None, str, int]:
    """(the IP packet, pkt_type, ifindex) of a link-layer frame; None when it carries no IP."""
    if linktype == LINK_ETHERNET:
        if len(data) < 14:
            raise dpkt.NeedData("ethernet header")
        return behind_ethertype(data, struct.unpack_from("!H", data, 12)[0], 14), "", 0
    if linktype == LINK_SLL:
        if len(data) < 16:
            raise dpkt.NeedData("sll header")
        pkt_type, ethertype = struct.unpack_from("!H", data)[0], struct.unpack_from("!H", data, 14)[0]
        return behind_ethertype(data, ethertype, 16), SLL_PKT_TYPES.get(pkt_type, ""), 0
    if linktype == LINK_SLL2:
        if len(data) < 20:
            raise dpkt.NeedData("sll2 header")
        ethertype, ifindex = struct.unpack_from("!H", data)[0], struct.unpack_from("!I", data, 4)[0]
        pkt_type = data[10]
        return behind_ethertype(data, ethertype, 20), SLL_PKT_TYPES.get(pkt_type, ""), ifindex
    if linktype in (LINK_NULL, LINK_LOOP):
        if len(data) < 5:
            raise dpkt.NeedData("loopback header")
        return (data[4:] if data[4] >> 4 in (4, 6) else None), "", 0  # the family's value differs by OS and byte order
    if data and data[0] >> 4 in (4, 6):  # raw IP
        return data, "", 0
    return None, "", 0


def behind_ethertype(data: bytes, ethertype: int, at: int) -> bytes | None:
    """The IP packet at `at`, behind any VLAN tags and a PPPoE session header; None when it carries no IP."""
    while ethertype in VLAN_TYPES:
        if len(data) < at + 4:
            raise dpkt.NeedData("vlan tag")
        ethertype, at = struct.unpack_from("!H", data, at + 2)[0], at + 4
    if ethertype == ETH_PPPOE_SESSION:
        return behind_pppoe(data, at)
    return data[at:] if ethertype in (ETH_IPV4, ETH_IPV6) else None


def behind_pppoe(data: bytes, at: int) -> bytes | None:
    """The IP packet of a PPPoE session frame: its PPP protocol is IPv4 or IPv6 (1 byte when compressed)."""
    if len(data) < at + PPPOE_HEADER + 1:
        raise dpkt.NeedData("pppoe header")
    length = struct.unpack_from("!H", data, at + 4)[0]
    at += PPPOE_HEADER
    ppp = data[at : at + length] if length else data[at:]  # what follows the session's length is Ethernet padding
    if ppp and ppp[0] & 1:  # protocol-field compression (RFC 1661 6.5): one byte
        protocol, body = ppp[0], ppp[1:]
    elif len(ppp) >= 2:
        protocol, body = struct.unpack_from("!H", ppp)[0], ppp[2:]
    else:
        raise dpkt.NeedData("ppp protocol")
    return body if protocol in (PPP_IPV4, PPP_IPV6) else None
