"""The link layer: from a captured frame to the IP packet it carries.

Link types: Ethernet (1, 802.1Q/802.1ad VLAN tags skipped, stacked too), Linux cooked SLL (113) and SLL2
(276, `tcpdump -i any`), raw IP (101, 12, 14, 228, 229), BSD loopback NULL (0) and LOOP (108).
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


def network_layer(linktype: int, data: bytes) -> tuple[bytes | None, str, int]:
    """(the IP packet, pkt_type, ifindex) of a link-layer frame; None when it carries no IP."""
    if linktype == LINK_ETHERNET:
        if len(data) < 14:
            raise dpkt.NeedData("ethernet header")
        ethertype, at = struct.unpack_from("!H", data, 12)[0], 14
        while ethertype in VLAN_TYPES:
            if len(data) < at + 4:
                raise dpkt.NeedData("vlan tag")
            ethertype, at = struct.unpack_from("!H", data, at + 2)[0], at + 4
        return (data[at:] if ethertype in (ETH_IPV4, ETH_IPV6) else None), "", 0
    if linktype == LINK_SLL:
        if len(data) < 16:
            raise dpkt.NeedData("sll header")
        pkt_type, ethertype = struct.unpack_from("!H", data)[0], struct.unpack_from("!H", data, 14)[0]
        return (data[16:] if ethertype in (ETH_IPV4, ETH_IPV6) else None), SLL_PKT_TYPES.get(pkt_type, ""), 0
    if linktype == LINK_SLL2:
        if len(data) < 20:
            raise dpkt.NeedData("sll2 header")
        ethertype, ifindex = struct.unpack_from("!H", data)[0], struct.unpack_from("!I", data, 4)[0]
        pkt_type = data[10]
        return (data[20:] if ethertype in (ETH_IPV4, ETH_IPV6) else None), SLL_PKT_TYPES.get(pkt_type, ""), ifindex
    if linktype in (LINK_NULL, LINK_LOOP):
        if len(data) < 5:
            raise dpkt.NeedData("loopback header")
        return (data[4:] if data[4] >> 4 in (4, 6) else None), "", 0  # the family's value differs by OS and byte order
    if data and data[0] >> 4 in (4, 6):  # raw IP
        return data, "", 0
    return None, "", 0
