"""pcap and pcapng files (tcpdump, tshark, dumpcap, dnscap...) into the packet-event table (dnscorrelate/events.py).

    frame, stats = read_pcap("node.pcap", vantage="node/kind-worker")

Link types: Ethernet (1, VLAN tags skipped), Linux cooked SLL (113) and SLL2
(276, `tcpdump -i any`), raw IP (101, 12, 14, 228, 229), BSD loopback NULL (0)
and LOOP (108). IPv4 and IPv6 (extension headers skipped, fragments reassembled:
big UDP answers arrive in pieces), UDP and TCP on the
DNS ports (53 unless `ports` says otherwise), TCP reassembled per flow and
direction (the 2-byte length prefix; several messages per segment, messages
across segments), TCP SYN/SYN-ACK/RST as `tcp-syn`/`tcp-synack`/`tcp-rst`
rows, ICMP errors quoting a DNS packet as `icmp-error` rows.

`pkt_type` comes from the link layer where it says (SLL/SLL2's packet type,
pcapng's epb_flags direction); elsewhere it is "" (not known). `netns` is 0,
`ifindex` is SLL2's interface index or 0.

Nothing is lost silently: every packet read lands in exactly one of the
`packets_*` counters of the stats, and snap-truncated packets, bad checksums
(kept: often checksum offload), undecodable payloads and TCP bytes that never
formed a message are counted too.

The file formats are walked here: dpkt's pcap reader gives float seconds and
drops the original length, its pcapng reader knows one interface only, and
its packet-block class took half of the reading time (the block is five fixed
fields). dpkt parses pcapng's section and interface blocks and IPv6 with its
extension headers, and computes checksums; IPv4, UDP and TCP headers are
fixed fields read with struct. DNS messages are decoded like the eBPF
capture's (decode.py).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.rcode
import dpkt
import dpkt.pcapng as ng
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.decode import decode_distinct, header_fields
from dnscorrelate.sources.naming import vantage_and_role

DEFAULT_PORTS = (53,)

LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_LOOP, LINK_SLL, LINK_SLL2 = 0, 1, 101, 108, 113, 276
LINK_RAW_ALIASES = {12, 14, 101}
LINK_IPV4, LINK_IPV6 = 228, 229
SUPPORTED_LINKS = {LINK_NULL, LINK_ETHERNET, LINK_LOOP, LINK_SLL, LINK_SLL2, LINK_IPV4, LINK_IPV6} | LINK_RAW_ALIASES

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = {0x8100, 0x88A8, 0x9100}
SLL_PKT_TYPES = {0: "HOST", 1: "BROADCAST", 2: "MULTICAST", 3: "OTHERHOST", 4: "OUTGOING"}
EPB_RECEPTION = {1: "HOST", 2: "MULTICAST", 3: "BROADCAST", 4: "OTHERHOST"}  # epb_flags bits 2-4, for inbound packets
EPB_FLAGS_OPTION = 2
IF_NAME_OPTION, IF_DESCRIPTION_OPTION, IF_TSRESOL_OPTION, IF_TSOFFSET_OPTION = 2, 3, 9, 14
WRITER_MARK = "dnscorrelate "  # if_description of interfaces written by pcapng_out
LATENCY_COMMENT = b"dnscorrelate latency_ns="  # epb comment pcapng_out writes on responses

PCAP_MAGICS = {  # magic as read little-endian -> (byte order, ns per fraction unit)
    0xA1B2C3D4: ("<", 1000), 0xD4C3B2A1: (">", 1000),
    0xA1B23C4D: ("<", 1), 0x4D3CB2A1: (">", 1),
}
PCAPNG_MAGIC = 0x0A0D0D0A
LITTLE_ENDIAN_BOM = 0x1A2B3C4D  # pcapng's byte-order magic, as read little-endian from a little-endian file

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 = 6, 17, 1, 58
ICMP_ERRORS = {4: {3, 11, 12}, 6: {1, 2, 3, 4}}  # unreachable, time exceeded, parameter problem (+ v6 too big)
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

PACKET_OUTCOMES = [
    "packets_dns_udp",        # a UDP datagram on a DNS port: one row
    "packets_dns_tcp",        # a TCP segment with payload on a DNS port: reassembled into messages
    "packets_tcp_control",    # SYN, SYN-ACK or RST on a DNS port: one row
    "packets_tcp_other",      # ACK, FIN... without payload on a DNS port
    "packets_icmp_error",     # an ICMP error quoting a packet on a DNS port: one row
    "packets_not_dns",        # IP, but not to or from a DNS port (or another protocol)
    "packets_non_ip",         # ARP, LLDP...
    "packets_ip_fragment",    # an IP fragment (the one that completes a datagram counts as what the datagram is)
    "packets_bad_header",     # link, IP or transport header cut short or malformed
    "packets_unsupported_link",  # on a pcapng interface whose link type is not read (USB, Bluetooth...)
]


@dataclass
class Interface:
    linktype: int
    name: str = ""
    description: str = ""
    units_per_second: int = 1_000_000  # pcapng if_tsresol
    offset_ns: int = 0


@dataclass(slots=True)
class RawPacket:
    ts_ns: int
    interface: int
    data: bytes
    wire_len: int
    pkt_type: str = ""  # from pcapng's epb_flags, when set
    latency_ns: int = -1  # from the comment pcapng_out writes on responses; -1: recompute


def open_error(path: Path, reason: str) -> EventsError:
    return EventsError(f"{path}: not a readable pcap or pcapng file: {reason}")


class CaptureFile:
    """The packets of a pcap or pcapng file, in file order, with their interfaces (one for pcap)."""

    def __init__(self, path: str | Path, stats: Counter):
        self.path = Path(path)
        self.stats = stats
        self.interfaces: list[Interface] = []
        try:
            self.data = self.path.read_bytes()
        except OSError as err:
            raise EventsError(f"{self.path}: cannot read: {err.strerror}") from None
        if len(self.data) < 4:
            raise open_error(self.path, f"{len(self.data)} bytes, too short for a file header")
        magic = struct.unpack_from("<I", self.data)[0]
        if magic in PCAP_MAGICS:
            self.packets = self.pcap_packets(*PCAP_MAGICS[magic])
        elif magic == PCAPNG_MAGIC:
            self.check_section_header()
            self.packets = self.pcapng_packets()
        else:
            raise open_error(self.path, f"unknown magic number {self.data[:4].hex()}")

    def check_section_header(self) -> None:
        """Fail now, before any packet is used, when pcapng's first block is not a whole section header."""
        if len(self.data) < 28:
            raise open_error(self.path, f"truncated section header ({len(self.data)} bytes)")
        bom = struct.unpack_from("<I", self.data, 8)[0]
        if bom not in (ng.BYTE_ORDER_MAGIC_LE, ng.BYTE_ORDER_MAGIC):
            raise open_error(self.path, "section header with an unknown byte-order magic")
        length = struct.unpack_from("<I" if bom == LITTLE_ENDIAN_BOM else ">I", self.data, 4)[0]
        if length < 28 or length > len(self.data):
            raise open_error(self.path, "truncated section header")

    def pcap_packets(self, order: str, ns_per_fraction: int) -> Iterator[RawPacket]:
        if len(self.data) < 24:
            raise open_error(self.path, f"truncated file header ({len(self.data)} of 24 bytes)")
        linktype = struct.unpack_from(order + "I", self.data, 20)[0] & 0x0FFFFFFF
        self.interfaces.append(self.checked_interface(Interface(linktype)))
        record = struct.Struct(order + "IIII")
        offset, end = 24, len(self.data)
        while offset < end:
            if end - offset < 16:
                self.stats["file_truncated_bytes"] += end - offset
                return
            seconds, fraction, caplen, wire_len = record.unpack_from(self.data, offset)
            offset += 16
            if caplen > end - offset:
                self.stats["file_truncated_bytes"] += end - offset + 16
                return
            yield RawPacket(seconds * 1_000_000_000 + fraction * ns_per_fraction, 0, self.data[offset : offset + caplen], wire_len)
            offset += caplen

    def checked_interface(self, interface: Interface) -> Interface:
        if interface.linktype not in SUPPORTED_LINKS:
            raise EventsError(
                f"{self.path}: link type {interface.linktype} is not supported "
                "(Ethernet 1, Linux cooked SLL 113 and SLL2 276, raw IP 101/12/14/228/229, loopback 0/108)"
            )
        return interface

    def pcapng_packets(self) -> Iterator[RawPacket]:
        data, offset, end = self.data, 0, len(self.data)
        order, section_base = "<", 0
        while offset < end:
            if end - offset < 12:
                self.stats["file_truncated_bytes"] += end - offset
                return
            block_type = struct.unpack_from("<I", data, offset)[0]
            if block_type == ng.PCAPNG_BT_SHB:
                bom = struct.unpack_from("<I", data, offset + 8)[0]
                if bom not in (ng.BYTE_ORDER_MAGIC_LE, ng.BYTE_ORDER_MAGIC):
                    raise open_error(self.path, "section header with an unknown byte-order magic")
                order = "<" if bom == LITTLE_ENDIAN_BOM else ">"
                section_base = len(self.interfaces)  # interface ids count from 0 again in a new section
            block_len = struct.unpack_from(order + "I", data, offset + 4)[0]
            if block_len < 12 or block_len % 4 or offset + block_len > end:
                self.stats["file_truncated_bytes"] += end - offset
                return
            block = data[offset : offset + block_len]
            offset += block_len
            little = order == "<"
            if block_type == ng.PCAPNG_BT_IDB:
                idb = ng.InterfaceDescriptionBlockLE(block) if little else ng.InterfaceDescriptionBlock(block)
                self.interfaces.append(interface_of(idb, order))  # an unsupported one's packets are counted, not fatal
            elif block_type in (ng.PCAPNG_BT_EPB, ng.PCAPNG_BT_PB):
                packet = self.pcapng_packet(block_type, block, little, section_base)
                if packet is not None:
                    yield packet
            elif block_type == 3:  # simple packet block: no interface id, no time
                self.stats["pcapng_simple_packets_skipped"] += 1
            elif block_type != ng.PCAPNG_BT_SHB:
                self.stats["pcapng_other_blocks"] += 1

    def pcapng_packet(self, block_type: int, block: bytes, little: bool, section_base: int) -> RawPacket | None:
        """An enhanced (or obsolete) packet block, parsed with struct: dpkt's block class took half the reading time."""
        order = "<" if little else ">"
        if block_type == ng.PCAPNG_BT_EPB:
            interface_id, ts_high, ts_low, caplen, wire_len = struct.unpack_from(order + "IIIII", block, 8)
        else:
            interface_id, _drops, ts_high, ts_low, caplen, wire_len = struct.unpack_from(order + "HHIIII", block, 8)
        index = section_base + interface_id
        if index >= len(self.interfaces):
            self.stats["pcapng_unknown_interface"] += 1
            return None
        interface = self.interfaces[index]
        options_at, options_end = 28 + caplen + (-caplen % 4), len(block) - 4
        pkt_type, latency = "", -1
        while options_at + 4 <= options_end:
            code, length = struct.unpack_from(order + "HH", block, options_at)
            if code == 0:
                break
            if code == EPB_FLAGS_OPTION and length >= 4:
                pkt_type = epb_pkt_type(struct.unpack_from(order + "I", block, options_at + 4)[0])
            elif code == 1 and block.startswith(LATENCY_COMMENT, options_at + 4):
                value = block[options_at + 4 + len(LATENCY_COMMENT) : options_at + 4 + length]
                latency = int(value) if value.isdigit() else -1
            options_at += 4 + length + (-length % 4)
        units = ts_high << 32 | ts_low
        return RawPacket(units * 1_000_000_000 // interface.units_per_second + interface.offset_ns, index, block[28 : 28 + caplen],
                         wire_len, pkt_type, latency)


def epb_pkt_type(flags: int) -> str:
    """pkt_type from pcapng's epb_flags: bits 0-1 inbound (1) or outbound (2), bits 2-4 the reception type."""
    if flags & 3 == 2:
        return "OUTGOING"
    if flags & 3 == 1:
        return EPB_RECEPTION.get(flags >> 2 & 7, "HOST")
    return ""


def interface_of(idb, order: str) -> Interface:
    """Link type, name, description and time resolution of a pcapng interface description block."""
    interface = Interface(idb.linktype)
    for option in idb.opts:
        if option.code == IF_NAME_OPTION:
            interface.name = option.data.split(b"\0")[0].decode("utf-8", "replace")
        elif option.code == IF_DESCRIPTION_OPTION:
            interface.description = option.data.split(b"\0")[0].decode("utf-8", "replace")
        elif option.code == IF_TSRESOL_OPTION and option.data:
            value = option.data[0]
            interface.units_per_second = 2 ** (value & 0x7F) if value & 0x80 else 10 ** (value & 0x7F)
        elif option.code == IF_TSOFFSET_OPTION and len(option.data) >= 8:
            interface.offset_ns = struct.unpack(order + "q", option.data[:8])[0] * 1_000_000_000
    return interface


# ---------------------------------------------------------------------------------------------
# Link and network layers


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


@dataclass(slots=True)
class Transport:
    """What a packet says at the transport layer."""

    family: int
    proto: int  # IPPROTO_*
    src: bytes
    dst: bytes
    sport: int = 0
    dport: int = 0
    payload: bytes = b""
    payload_len: int = 0  # what the headers say, even when the capture kept less
    tcp_seq: int = 0
    tcp_flags: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    fragment: bool = False  # an IP fragment: payload is its part of the datagram, at frag_offset
    frag_id: int = 0
    frag_offset: int = 0
    more_fragments: bool = False
    checksum_ok: bool | None = None  # None: not checked (cut short, or no checksum sent)


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
        if 44 in ip.extension_hdrs:
            header = ip.extension_hdrs[44]
            return fragment_of(t, header.id, header.frag_off * 8, bool(header.m_flag), body)
    else:
        raise dpkt.UnpackError(f"IP version {version}")
    transport(t, body, expected, verify)
    return t


def fragment_of(t: Transport, frag_id: int, offset: int, more: bool, data: bytes) -> Transport:
    t.fragment, t.frag_id, t.frag_offset, t.more_fragments, t.payload = True, frag_id, offset, more, data
    return t


def transport(t: Transport, body: bytes, expected: int, verify: bool) -> None:
    """Fill ports, payload, flags and checksum verdict of `t` from the transport bytes `body`."""
    if t.proto == IPPROTO_UDP:
        if len(body) < 8:
            raise dpkt.NeedData("udp header")
        t.sport, t.dport, length, checksum = struct.unpack_from("!HHHH", body)
        t.payload_len = max(length - 8, 0)
        t.payload = body[8:length]
        if verify and checksum and len(body) >= length == expected:
            t.checksum_ok = pseudo_checksum(t, body[:length]) == 0
    elif t.proto == IPPROTO_TCP:
        if len(body) < 20:
            raise dpkt.NeedData("tcp header")
        t.sport, t.dport, t.tcp_seq = struct.unpack_from("!HHI", body)
        offset = (body[12] >> 4) * 4
        t.tcp_flags = body[13]
        t.payload_len = max(expected - offset, 0)
        t.payload = body[offset:expected]
        if verify and len(body) >= expected:
            t.checksum_ok = pseudo_checksum(t, body[:expected]) == 0
    elif t.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if len(body) < 8:
            raise dpkt.NeedData("icmp header")
        t.icmp_type, t.icmp_code = body[0], body[1]
        t.payload = body[8:]  # the quoted packet, for errors


def internet_checksum(data: bytes) -> int:
    """RFC 1071's checksum of `data`: 0 when `data` holds its own right checksum. The ones'-complement
    sum of 16-bit words is the number the bytes spell modulo 0xFFFF (2**16 = 1 mod 0xFFFF), which
    Python's integers compute in C: four times faster than dpkt.in_cksum's word loop."""
    remainder = int.from_bytes(data + b"\0" if len(data) % 2 else data, "big") % 0xFFFF
    return 0xFFFF - remainder if remainder else 0


def pseudo_checksum(t: Transport, segment: bytes) -> int:
    """The Internet checksum over pseudo-header and segment: 0 when the segment's checksum is right."""
    if t.family == 4:
        pseudo = t.src + t.dst + struct.pack("!BBH", 0, t.proto, len(segment))
    else:
        pseudo = t.src + t.dst + struct.pack("!IxxxB", len(segment), t.proto)
    return internet_checksum(pseudo + segment)


def quoted(t: Transport) -> Transport | None:
    """The packet an ICMP error quotes (its header and the start of its payload), when it parses."""
    try:
        inner = ip_layer(t.payload, verify=False)
    except (dpkt.UnpackError, IndexError, struct.error):
        return None
    return inner if inner.proto in (IPPROTO_UDP, IPPROTO_TCP) else None


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass(slots=True)
class Row:
    ts_ns: int
    vantage: int  # index into the reader's vantage list
    pkt_type: str
    ifindex: int
    kind: str
    t: Transport
    wire: bytes = b""  # the DNS message (or its start)
    complete: bool = True
    size: int = 0
    frame_number: int = 0  # 1-based position in the file, as tshark counts
    latency_ns: int = -1  # the source's own latency for this response; -1: matched here


@dataclass
class Stream:
    """One direction of one TCP connection at one vantage, being reassembled."""

    buffer: bytes = b""
    expected: int | None = None  # next sequence number
    skip_to: int | None = None  # inside a message whose bytes the capture cut


def seq_before(a: int, b: int) -> bool:
    return a != b and (b - a) % 2**32 < 2**31


@dataclass
class PcapReader:
    """Turns one file's packets into rows; `vantages` lists (vantage, role, ifname) per interface."""

    path: Path
    vantage: str | None
    ports: frozenset[int]
    verify_checksums: bool = True
    stats: Counter = field(default_factory=Counter)
    rows: list[Row] = field(default_factory=list)
    streams: dict[tuple, Stream] = field(default_factory=dict)
    vantages: list[tuple[str, str, str, int]] = field(default_factory=list)  # vantage, role, ifname, netns per interface
    ifindexes: list[int] = field(default_factory=list)  # per interface, when the file says (pcapng_out's files)
    all_dns: list[bool] = field(default_factory=list)  # per interface: written by pcapng_out, every packet is DNS
    fragments: dict[tuple, dict[int, bytes]] = field(default_factory=dict)  # datagram -> {offset: data}; -1: its end

    def read(self) -> None:
        capture = CaptureFile(self.path, self.stats)
        number = 0
        for number, packet in enumerate(capture.packets, 1):
            for interface in capture.interfaces[len(self.vantages) :]:
                *named, ifindex = self.name_interface(interface)
                self.vantages.append(tuple(named))
                self.ifindexes.append(ifindex)
                self.all_dns.append(interface.description.startswith(WRITER_MARK))
            self.stats["packets"] += 1
            self.stats["packets_" + self.packet(capture.interfaces[packet.interface].linktype, packet, number)] += 1
        for stream in self.streams.values():
            if stream.buffer:
                self.stats["tcp_bytes_unreassembled"] += len(stream.buffer)
        self.stats["ip_fragments_unreassembled"] += sum(len([o for o in pieces if o >= 0]) for pieces in self.fragments.values())

    def name_interface(self, interface: Interface) -> tuple[str, str, str, int, int]:
        """(vantage, role, ifname, netns, ifindex): files written by pcapng_out name each interface after
        its vantage and describe the rest; otherwise the vantage given, or the file's name, names them all."""
        if interface.description.startswith(WRITER_MARK) and not self.vantage:
            described = dict(part.split("=", 1) for part in interface.description[len(WRITER_MARK) :].split() if "=" in part)
            number = lambda key: int(described[key]) if described.get(key, "").isdigit() else 0
            return interface.name, described.get("role", "other"), described.get("ifname", ""), number("netns"), number("ifindex")
        vantage, role = vantage_and_role(self.vantage or self.path.stem)
        return vantage, role, interface.name, 0, 0

    def packet(self, linktype: int, packet: RawPacket, number: int) -> str:
        """Add the rows of one packet; returns the outcome it is counted under (see PACKET_OUTCOMES)."""
        if linktype not in SUPPORTED_LINKS:
            return "unsupported_link"
        cut = len(packet.data) < packet.wire_len
        if cut:
            self.stats["truncated"] += 1
        try:
            ip_packet, pkt_type, ifindex = network_layer(linktype, packet.data)
            if ip_packet is None:
                return "non_ip"
            t = ip_layer(ip_packet, self.verify_checksums and not cut)
            if t.fragment:
                if cut:  # a datagram with a piece missing cannot be put together
                    self.stats["ip_fragments_cut"] += 1
                    return "ip_fragment"
                t = self.reassemble(packet.interface, t)
                if t is None:
                    return "ip_fragment"
        except (dpkt.UnpackError, IndexError, struct.error):
            return "bad_header"
        if t.checksum_ok is False:
            self.stats["bad_checksum"] += 1
        base = dict(ts_ns=packet.ts_ns, vantage=packet.interface, pkt_type=pkt_type or packet.pkt_type,
                    ifindex=ifindex or self.ifindexes[packet.interface], frame_number=number, latency_ns=packet.latency_ns)
        if t.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            return self.icmp(t, base)
        on_dns_port = t.sport in self.ports or t.dport in self.ports or self.all_dns[packet.interface]
        if t.proto not in (IPPROTO_UDP, IPPROTO_TCP) or not on_dns_port:
            return "not_dns"
        if t.proto == IPPROTO_UDP:
            self.rows.append(Row(kind="dns", t=t, wire=t.payload, complete=len(t.payload) >= t.payload_len, size=t.payload_len, **base))
            return "dns_udp"
        if t.tcp_flags & (TCP_SYN | TCP_RST) and not t.payload:
            kind = "tcp-rst" if t.tcp_flags & TCP_RST else "tcp-synack" if t.tcp_flags & TCP_ACK else "tcp-syn"
            self.rows.append(Row(kind=kind, t=t, **base))
            return "tcp_control"
        if not t.payload_len:
            return "tcp_other"
        self.tcp_segment(t, base)
        return "dns_tcp"

    def reassemble(self, interface: int, t: Transport) -> Transport | None:
        """The datagram this fragment completes, parsed to its transport layer; None while pieces are missing.
        Its row is at the last piece's packet, as tshark shows it."""
        key = (interface, t.family, t.src, t.dst, t.proto, t.frag_id)
        pieces = self.fragments.setdefault(key, {})
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
        del self.fragments[key]
        self.stats["ip_datagrams_reassembled"] += 1
        whole = Transport(t.family, t.proto, t.src, t.dst)
        body = b"".join(parts)
        transport(whole, body, len(body), self.verify_checksums)
        return whole

    def icmp(self, t: Transport, base: dict) -> str:
        if t.icmp_type not in ICMP_ERRORS[t.family]:
            return "not_dns"
        inner = quoted(t)
        if inner is None or not (inner.sport in self.ports or inner.dport in self.ports):
            return "not_dns"
        inner.icmp_type, inner.icmp_code = t.icmp_type, t.icmp_code
        wire = inner.payload[2:] if inner.proto == IPPROTO_TCP else inner.payload
        self.rows.append(Row(kind="icmp-error", t=inner, wire=wire, complete=False, size=inner.payload_len, **base))
        return "icmp_error"

    def tcp_segment(self, t: Transport, base: dict) -> None:
        """Reassemble one direction of a TCP flow: rows for every message this segment completes."""
        key = (base["vantage"], t.src, t.sport, t.dst, t.dport)
        stream = self.streams.setdefault(key, Stream())
        data, seq = t.payload, t.tcp_seq
        if stream.skip_to is not None:
            if seq_before(seq, stream.skip_to):
                self.stats["tcp_bytes_unreassembled"] += len(data)
                return
            stream.skip_to, stream.expected = None, seq
        if len(data) < t.payload_len:  # the capture cut this segment
            self.stats["tcp_segments_cut"] += 1
            if not stream.buffer and len(data) >= 14:  # it starts a message: keep its header and question
                length = struct.unpack_from("!H", data)[0]
                self.rows.append(Row(kind="dns", t=t, wire=data[2:], complete=False, size=length, **base))
                stream.skip_to = (seq + 2 + length) % 2**32
            else:
                self.stats["tcp_bytes_unreassembled"] += len(stream.buffer) + len(data)
            stream.buffer, stream.expected = b"", None
            return
        if stream.expected is not None and seq != stream.expected:
            if seq_before(seq, stream.expected):  # retransmitted, maybe with new bytes at its end
                overlap = (stream.expected - seq) % 2**32
                if overlap >= len(data):
                    self.stats["tcp_retransmissions"] += 1
                    return
                data, seq = data[overlap:], stream.expected
            else:
                self.stats["tcp_bytes_unreassembled"] += len(stream.buffer)
                self.stats["tcp_gaps"] += 1
                stream.buffer = b""
        stream.buffer += data
        stream.expected = (seq + len(data)) % 2**32
        while len(stream.buffer) >= 2:
            length = struct.unpack_from("!H", stream.buffer)[0]
            if len(stream.buffer) < 2 + length:
                break
            self.rows.append(Row(kind="dns", t=t, wire=stream.buffer[2 : 2 + length], complete=True, size=length, **base))
            stream.buffer = stream.buffer[2 + length :]


def ip_text(address: bytes) -> str:
    """Text form of a 4- or 16-byte address; "" when the source did not record one (dnstap may not)."""
    return str(ipaddress.ip_address(address)) if address else ""


def categorical(codes: np.ndarray, values) -> pd.Categorical:
    """`values[codes]` as a categorical, made from the few distinct values: no string per row."""
    inverse, uniques = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(inverse[codes], categories=pd.Index(uniques, dtype=object))


def address_codes(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Codes of source and destination addresses into one list of address texts (so they compare)."""
    seen: dict[bytes, int] = {}
    src = np.fromiter((seen.setdefault(r.t.src, len(seen)) for r in rows), dtype=np.int64, count=len(rows))
    dst = np.fromiter((seen.setdefault(r.t.dst, len(seen)) for r in rows), dtype=np.int64, count=len(rows))
    return src, dst, [ip_text(a) for a in seen]


def frame_of_rows(rows: list[Row], vantages: list[tuple], stats: Counter) -> pd.DataFrame:
    """The packet-event table for `rows` (in file order), DNS fields decoded once per distinct message;
    `vantages` holds (vantage, role, ifname[, netns]) for each value of Row.vantage."""
    if not rows:
        return events.empty_events()
    n = len(rows)
    kind = np.array([r.kind for r in rows], dtype=object)
    is_dns = kind == "dns"
    has_message = is_dns | ((kind == "icmp-error") & np.fromiter((len(r.wire) >= 12 for r in rows), dtype=bool, count=n))
    wires = [r.wire for r in rows]
    heads = header_fields(wires)
    flags = heads["dns_flags"].astype(np.int32)
    distinct, index = decode_distinct(wires, np.fromiter((r.complete for r in rows), dtype=bool, count=n))
    none = len(distinct)  # the code of "" in the decoded columns below
    message_index = np.where(has_message, index, none)
    decoded = lambda name: categorical(message_index, [getattr(d, name) for d in distinct] + [""])
    ok = np.array([d.ok for d in distinct], dtype=bool)[index] & is_dns
    stats["undecodable"] += int((is_dns & ~ok).sum())
    stats["dns_messages"] += int(is_dns.sum())
    qr = (flags >> 15).astype(bool) & has_message
    full_rcode = np.array([d.rcode is not None for d in distinct] + [False], dtype=bool)[message_index]
    rcode_codes = np.where(~qr, none + 16, np.where(full_rcode, message_index, none + (flags & 0xF)))
    rcode_values = [d.rcode for d in distinct] + [dns.rcode.to_text(i) for i in range(16)] + [""]
    vantage_index = np.fromiter((r.vantage for r in rows), dtype=np.int64, count=n)
    src_codes, dst_codes, addresses = address_codes(rows)
    address_categories = pd.Index(addresses, dtype=object)
    message = lambda values, empty: np.where(has_message, values, empty)
    column = lambda attr, dtype: np.fromiter((getattr(r, attr) for r in rows), dtype=dtype, count=n)
    transport = lambda attr, dtype: np.fromiter((getattr(r.t, attr) for r in rows), dtype=dtype, count=n)
    frame = pd.DataFrame(
        {
            "ts_ns": column("ts_ns", np.int64),
            "netns": np.array([v[3] if len(v) > 3 else 0 for v in vantages], dtype=np.uint64)[vantage_index],
            "vantage": categorical(vantage_index, [v[0] for v in vantages]),
            "role": categorical(vantage_index, [v[1] for v in vantages]),
            "ifindex": column("ifindex", np.int32),
            "ifname": categorical(vantage_index, [v[2] for v in vantages]),
            "pkt_type": pd.Categorical([r.pkt_type for r in rows]),
            "kind": pd.Categorical(kind),
            "icmp_type": transport("icmp_type", np.int16),
            "icmp_code": transport("icmp_code", np.int16),
            "proto": categorical((transport("proto", np.int16) == IPPROTO_TCP).astype(np.int64), ["udp", "tcp"]),
            "family": transport("family", np.int8),
            "src_ip": pd.Categorical.from_codes(src_codes, categories=address_categories),
            "src_port": transport("sport", np.int32),
            "dst_ip": pd.Categorical.from_codes(dst_codes, categories=address_categories),
            "dst_port": transport("dport", np.int32),
            "dns_id": message(heads["dns_id"].astype(np.int32), -1),
            "qr": qr,
            "opcode": message((flags >> 11) & 0xF, 0).astype(np.int8),
            "rcode": categorical(rcode_codes, rcode_values),
            "aa": message((flags >> 10) & 1, 0).astype(bool),
            "tc": message((flags >> 9) & 1, 0).astype(bool),
            "rd": message((flags >> 8) & 1, 0).astype(bool),
            "ra": message((flags >> 7) & 1, 0).astype(bool),
            "qname": decoded("qname"),
            "qtype": decoded("qtype"),
            "answers": decoded("answers"),
            "ancount": message(heads["ancount"].astype(np.int32), 0).astype(np.int16),
            "size": column("size", np.int32),
            "latency_ns": np.zeros(n, np.int64),
            "decoded": ok,
        }
    )
    frame["latency_ns"] = response_latency(frame["ts_ns"].to_numpy(), is_dns, qr, vantage_index, frame["proto"].cat.codes.to_numpy(),
                                           src_codes, frame["src_port"].to_numpy(), dst_codes, frame["dst_port"].to_numpy(),
                                           frame["dns_id"].to_numpy())
    given = column("latency_ns", np.int64)  # a source's own figure (pcapng_out's comment) wins
    frame["latency_ns"] = np.where((given >= 0) & qr, given, frame["latency_ns"].to_numpy())
    return frame


def response_latency(ts, is_dns, qr, vantage, proto, src, sport, dst, dport, dns_id) -> np.ndarray:
    """For each response, the time since the same vantage first saw its query (same tuple reversed, id,
    transport); 0 for queries and for responses whose query this vantage did not see. Keys are integer
    codes (addresses share one code list), so the join is numeric."""
    key = ["vantage", "proto", "client", "client_port", "server", "server_port", "dns_id"]
    queries, responses = is_dns & ~qr, is_dns & qr
    latency = np.zeros(len(ts), np.int64)
    if not queries.any() or not responses.any():
        return latency
    asked = pd.DataFrame({"vantage": vantage[queries], "proto": proto[queries], "client": src[queries], "client_port": sport[queries],
                          "server": dst[queries], "server_port": dport[queries], "dns_id": dns_id[queries], "query_ns": ts[queries]})
    first = asked.groupby(key, sort=False)["query_ns"].min()
    answered = pd.DataFrame({"vantage": vantage[responses], "proto": proto[responses], "client": dst[responses],
                             "client_port": dport[responses], "server": src[responses], "server_port": sport[responses],
                             "dns_id": dns_id[responses]})
    query_ns = answered.join(first, on=key)["query_ns"].to_numpy()
    found = ~np.isnan(query_ns)
    positions = np.flatnonzero(responses)[found]
    latency[positions] = np.maximum(ts[positions] - query_ns[found].astype(np.int64), 0)
    return latency


@dataclass
class PcapResult:
    frame: pd.DataFrame
    stats: dict
    frame_numbers: np.ndarray  # for each row, the packet (1-based, in file order) it came from


def read_pcap_detailed(path: str | Path, vantage: str | None = None, ports: tuple[int, ...] = DEFAULT_PORTS,
                       verify_checksums: bool = True) -> PcapResult:
    """The events of one capture file, its stats, and which packet each row came from."""
    reader = PcapReader(Path(path), vantage, frozenset(ports or DEFAULT_PORTS), verify_checksums)
    reader.read()
    frame = frame_of_rows(reader.rows, reader.vantages, reader.stats)
    numbers = np.array([r.frame_number for r in reader.rows], dtype=np.int64)
    order = np.argsort(frame["ts_ns"].to_numpy(), kind="stable")
    stats = {k: reader.stats.get(k, 0) for k in ["packets", *PACKET_OUTCOMES, "dns_messages", "truncated", "bad_checksum",
                                                   "undecodable", "tcp_bytes_unreassembled", "tcp_retransmissions"]}
    stats.update(reader.stats)
    return PcapResult(events.conform(frame.iloc[order]), dict(stats), numbers[order])


def read_pcap(path: str | Path, vantage: str | None = None, ports: tuple[int, ...] = DEFAULT_PORTS) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of a pcap or pcapng file and what was counted reading it."""
    result = read_pcap_detailed(path, vantage, ports)
    return result.frame, result.stats
