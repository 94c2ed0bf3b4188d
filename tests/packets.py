"""Crafted packets and capture files for the pcap reader's tests: real headers (checksums computed by
dpkt), DNS messages made by dnspython, wrapped in each link type and written as pcap or pcapng."""

from __future__ import annotations

import socket
import struct

import dns.message
import dpkt

from tests import frames

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD


def query(name: str = "web.demo.svc.cluster.local.", qtype: str = "A", qid: int = 4660) -> bytes:
    message = dns.message.make_query(name, qtype)
    message.id = qid
    return message.to_wire()


def response(name: str = "web.demo.svc.cluster.local.", address: str = "10.96.0.20", qid: int = 4660, rcode: int = 0) -> bytes:
    """frames.response with this module's defaults (a Service lookup answered by kube-dns)."""
    return frames.response(name, address, qid, rcode)


def ipv4(src: str, dst: str, proto: int, body: bytes) -> bytes:
    packet = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=body)
    packet.len = 20 + len(body)
    return bytes(packet)


def udp(sport: int, dport: int, payload: bytes, src: str = "10.244.1.5", dst: str = "10.96.0.10") -> bytes:
    """An IPv4 UDP packet with a correct checksum (or IPv6 when the addresses are)."""
    segment = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    segment.ulen = 8 + len(payload)
    if ":" in src:
        ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst), nxt=17, hlim=64, data=segment)
        ip6.plen = len(bytes(segment))
        return bytes(ip6)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, ttl=64, data=segment)
    ip.len = 20 + segment.ulen
    return bytes(ip)


def tcp(sport: int, dport: int, seq: int, payload: bytes = b"", flags: int = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
        src: str = "10.244.1.5", dst: str = "10.96.0.10") -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, data=segment)
    ip.len = 20 + len(bytes(segment))
    return bytes(ip)


def framed(message: bytes) -> bytes:
    """A DNS message as TCP carries it: with its 2-byte length."""
    return struct.pack("!H", len(message)) + message


def ethernet(ip_packet: bytes, vlan: int | None = None) -> bytes:
    ethertype = ETH_IPV6 if ip_packet[0] >> 4 == 6 else ETH_IPV4
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + tag + struct.pack("!H", ethertype) + ip_packet


def sll(ip_packet: bytes, pkt_type: int) -> bytes:
    ethertype = ETH_IPV6 if ip_packet[0] >> 4 == 6 else ETH_IPV4
    return struct.pack("!HHH8sH", pkt_type, 1, 6, b"\x02\0\0\0\0\x01\0\0", ethertype) + ip_packet


def sll2(ip_packet: bytes, pkt_type: int, ifindex: int) -> bytes:
    ethertype = ETH_IPV6 if ip_packet[0] >> 4 == 6 else ETH_IPV4
    return struct.pack("!HHIHBB8s", ethertype, 0, ifindex, 1, pkt_type, 6, b"\x02\0\0\0\0\x01\0\0") + ip_packet


def null_loopback(ip_packet: bytes, big_endian: bool = False) -> bytes:
    family = 2 if ip_packet[0] >> 4 == 4 else 30
    return struct.pack(">I" if big_endian else "<I", family) + ip_packet


def pcap_file(linktype: int, packets: list[tuple[int, bytes] | tuple[int, bytes, int]], nano: bool = True) -> bytes:
    """A pcap file: (ts_ns, frame) or (ts_ns, captured bytes, original length) per packet."""
    out = [struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for ts_ns, data, *wire in packets:
        fraction = ts_ns % 1_000_000_000 if nano else ts_ns % 1_000_000_000 // 1000
        out.append(struct.pack("<IIII", ts_ns // 1_000_000_000, fraction, len(data), wire[0] if wire else len(data)) + data)
    return b"".join(out)


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + pad4(value)


def block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def pcapng_file(interfaces: list[tuple[int, str]], packets: list[tuple[int, int, bytes, int | None]]) -> bytes:
    """A little-endian pcapng file: interfaces as (linktype, if_name), nanosecond resolution; packets as
    (interface, ts_ns, frame, epb_flags or None)."""
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, name in interfaces:
        options = option(2, name.encode()) + option(9, b"\x09") + option(0, b"")
        out.append(block(1, struct.pack("<HHI", linktype, 0, 65535) + options))
    for interface, ts_ns, data, flags in packets:
        options = (option(2, struct.pack("<I", flags)) + option(0, b"")) if flags is not None else b""
        out.append(block(6, struct.pack("<IIIII", interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), len(data)) + pad4(data) + options))
    return b"".join(out)


def tagged_ethernet(ip_packet: bytes, tags: list[tuple[int, int]] = (), pppoe_session: int | None = None) -> bytes:
    """An Ethernet frame with VLAN tags (TPID, VLAN id), outermost first, and optionally a PPPoE session
    header and PPP protocol before the IP packet (as DSL uplinks carry it)."""
    ip_version = ip_packet[0] >> 4
    if pppoe_session is not None:
        ppp = struct.pack("!H", 0x0057 if ip_version == 6 else 0x0021) + ip_packet
        inner, payload = 0x8864, struct.pack("!BBHH", 0x11, 0, pppoe_session, len(ppp)) + ppp
    else:
        inner, payload = (ETH_IPV6 if ip_version == 6 else ETH_IPV4), ip_packet
    types = [tpid for tpid, _ in tags] + [inner]  # each tag's TPID stands where the type would, then its id and the next type
    headers = struct.pack("!H", types[0]) + b"".join(struct.pack("!HH", vlan_id, following) for (_, vlan_id), following in zip(tags, types[1:]))
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + headers + payload
