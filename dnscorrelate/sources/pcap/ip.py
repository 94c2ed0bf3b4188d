"""The network layer: IPv4 and IPv6 (extension headers skipped), fragments put back together, and the
packet an ICMP error quotes."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

import dpkt

from dnscorrelate.sources.pcap.transport import IPPROTO_TCP, IPPROTO_UDP, Transport, internet_checksum, transport

IPV6_FRAGMENT_HEADER = 44


def ip_layer(packet: bytes, verify: bool) -> Transport:
    """IPv4 or IPv6 (extension headers skipped) and the UDP/TCP/ICMP header behind it."""
    version = packet[0] >> 4
    if version == 4:  # by hand: dpkt.ip.IP would also parse the transport header, which costs a third of the time
        if len(packet) < 20:
            raise dpkt.NeedData("ipv4 header")
        header_len = (packet[0] & 0xF) * 4
        total, fragment, proto = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!H", packet, 6)[0], packet[9]
        if header_len < 20 or len(packet) < header_len:
            raise dpkt.UnpackError("ipv4 header length")
        t = Transport(4, proto, packet[12:16], packet[16:20])
        body = packet[header_len:total] if total else packet[header_len:]  # 0: segmentation offload
        if fragment & 0x3FFF:  # more fragments, or an offset
            return fragment_of(t, struct.unpack_from("!H", packet, 4)[0], (fragment & 0x1FFF) * 8, bool(fragment & 0x2000), body)
        expected = max(total - header_len, 0) if total else len(body)
        if verify and internet_checksum(packet[:header_len]) != 0:
            t.checksum_ok = False
    elif version == 6:
        ip = dpkt.ip6.IP6(packet)
        t = Transport(6, ip.p, ip.src, ip.dst)
        start = 40 + sum(h.length for h in ip.all_extension_headers)
        end = 40 + ip.plen if ip.plen else len(packet)
        body, expected = packet[start:end], end - start
        if IPV6_FRAGMENT_HEADER in ip.extension_hdrs:
            header = ip.extension_hdrs[IPV6_FRAGMENT_HEADER]
            return fragment_of(t, header.id, header.frag_off * 8, bool(header.m_flag), body)
    else:
        raise dpkt.UnpackError(f"IP version {version}")
    transport(t, body, expected, verify)
    return t


def fragment_of(t: Transport, frag_id: int, offset: int, more: bool, data: bytes) -> Transport:
    t.fragment, t.frag_id, t.frag_offset, t.more_fragments, t.payload = True, frag_id, offset, more, data
    return t


def quoted(t: Transport) -> Transport | None:
    """The packet an ICMP error quotes (its header and the start of its payload), when it parses."""
    try:
        inner = ip_layer(t.payload, verify=False)
    except (dpkt.UnpackError, IndexError, struct.error):
        return None
    return inner if inner.proto in (IPPROTO_UDP, IPPROTO_TCP) else None


@dataclass
class Fragments:
    """IP datagrams being put back together from their fragments, per interface."""

    verify_checksums: bool
    stats: Counter
    pending: dict[tuple, dict[int, bytes]] = field(default_factory=dict)  # datagram -> {offset: data}; -1: its end

    def add(self, interface: int, t: Transport) -> Transport | None:
        """The datagram this fragment completes, parsed to its transport layer; None while pieces are missing.
        Its row is at the last piece's packet, as tshark shows it."""
        key = (interface, t.family, t.src, t.dst, t.proto, t.frag_id)
        pieces = self.pending.setdefault(key, {})
        pieces[t.frag_offset] = t.payload
        if not t.more_fragments:
            pieces[-1] = t.frag_offset + len(t.payload)
        end, position, parts = pieces.get(-1), 0, []
        if end is None:
            return None
        while position < end:
            part = pieces.get(position)
            if not part:
                return None
            parts.append(part)
            position += len(part)
        del self.pending[key]
        self.stats["ip_datagrams_reassembled"] += 1
        whole = Transport(t.family, t.proto, t.src, t.dst)
        body = b"".join(parts)
        transport(whole, body, len(body), self.verify_checksums)
        return whole

    def unreassembled(self) -> int:
        """Pieces of datagrams never completed."""
        return sum(len([o for o in pieces if o >= 0]) for pieces in self.pending.values())
