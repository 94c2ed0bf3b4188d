"""Packet events out to pcapng, for Wireshark and tshark: one interface per vantage point, named.

    stats = write_pcapng(frame, "capture.pcapng")

Each distinct (vantage, role, netns, ifindex, ifname) becomes an interface whose `if_name` is
the vantage and whose `if_description` is `dnscorrelate role=... netns=... ifindex=... ifname=...`,
so `sources/pcap/` reads the file back to the same vantage points. Every row becomes an
Ethernet frame with IPv4/IPv6 and UDP/TCP headers (checksums right) around a DNS message; the
direction (`pkt_type`) goes in each packet's epb_flags (inbound with its reception type, or
outbound), and a response's `latency_ns` (the capture's, matched in the kernel) in a packet
comment, which the reader takes back for files written here.

The events table does not keep the packets' bytes (the eBPF capture keeps at most 512 bytes
of payload, and decodes them to columns), so each DNS message is built again with dnspython
from the columns: id, opcode, flags, rcode (extended ones with EDNS), the question and the
answers the table lists (TTL 0, owned by the question's name). What the columns do not hold is
lost: authority and additional records, EDNS options, answer types the table does not list
(ancount then says more than the message holds), the owner names of a CNAME chain, TTLs and
the message's original size. A message the capture itself cut (answers counted, none decoded)
is written as a snap-truncated packet of its original size whose header keeps the answer count,
so it reads back as it was captured. TCP segments carry one message each with sequence numbers made
up per flow; SYN, SYN-ACK and RST rows become segments with those flags; ICMP errors quote the
packet's IP and transport headers and, when its id is known, the DNS header. Rows without an
address (dnstap's client leg, the oldest Inspektor Gadget) get 0.0.0.0 or ::, counted.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pandas as pd

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.pcap import LATENCY_COMMENT, WRITER_MARK, internet_checksum

LINK_ETHERNET = 1
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
INBOUND, OUTBOUND = 1, 2
RECEPTION = {"HOST": 1, "MULTICAST": 2, "BROADCAST": 3, "OTHERHOST": 4}  # epb_flags bits 2-4
TCP_FLAGS = {"tcp-syn": 0x02, "tcp-synack": 0x12, "tcp-rst": 0x14}
INTERFACE_KEY = ["vantage", "role", "netns", "ifindex", "ifname"]


def block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def section_header() -> bytes:
    return block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + option(4, b"dnscorrelate") + option(0, b""))


def interface_block(vantage: str, role: str, netns: int, ifindex: int, ifname: str) -> bytes:
    description = f"{WRITER_MARK}role={role} netns={netns} ifindex={ifindex} ifname={ifname}"
    options = option(2, vantage.encode()) + option(3, description.encode()) + option(9, b"\x09") + option(0, b"")
    return block(1, struct.pack("<HHI", LINK_ETHERNET, 0, 0) + options)


def packet_block(interface: int, ts_ns: int, frame: bytes, wire_len: int, flags: int, latency_ns: int = 0) -> bytes:
    """An enhanced packet block; a response's latency rides in a comment (the reader takes it back)."""
    header = struct.pack("<IIIII", interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(frame), wire_len)
    padded = frame + b"\0" * (-len(frame) % 4)
    comment = option(1, LATENCY_COMMENT + str(latency_ns).encode()) if latency_ns > 0 else b""
    return block(6, header + padded + option(2, struct.pack("<I", flags)) + comment + option(0, b""))


def direction_flags(pkt_type: str) -> int:
    if pkt_type == "OUTGOING":
        return OUTBOUND
    if pkt_type in RECEPTION:
        return INBOUND | RECEPTION[pkt_type] << 2
    return 0  # not known


def dns_message(row) -> bytes:
    """The DNS message the row describes, built again from its columns."""
    message = dns.message.Message(id=int(row.dns_id) & 0xFFFF)
    flags = (dns.flags.QR if row.qr else 0) | (dns.flags.AA if row.aa else 0) | (dns.flags.TC if row.tc else 0) \
        | (dns.flags.RD if row.rd else 0) | (dns.flags.RA if row.ra else 0)
    message.flags = flags | dns.opcode.to_flags(int(row.opcode))
    if row.rcode:
        message.set_rcode(dns.rcode.from_text(row.rcode))
    if row.qname:
        name = dns.name.from_text(row.qname)
        qtype = dns.rdatatype.from_text(row.qtype) if row.qtype else dns.rdatatype.A
        message.question.append(dns.rrset.RRset(name, dns.rdataclass.IN, qtype))
        for item in str(row.answers).split(", ") if row.answers else []:
            kind, _, value = item.partition(" ")
            message.answer.append(dns.rrset.from_text(name, 0, "IN", kind, value))
    return message.to_wire()


def address_bytes(text: str, family: int, stats: Counter) -> bytes:
    if not text:
        stats["rows_without_address"] += 1
        return bytes(4 if family == 4 else 16)
    return ipaddress.ip_address(text).packed


def checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), proto)
    return internet_checksum(pseudo + segment)


def ip_packet(src: bytes, dst: bytes, proto: int, segment: bytes) -> bytes:
    if len(src) == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, proto, 0, src, dst)
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        return header + segment
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), proto, 64, src, dst) + segment


def transport(proto: str, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, tcp_flags: int, seq: int) -> tuple[int, bytes]:
    """(IP protocol, segment with its checksum) for UDP or TCP."""
    if proto == "tcp":
        segment = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, tcp_flags, 65535, 0, 0) + payload
        value = checksum(src, dst, 6, segment)
        return 6, segment[:16] + struct.pack("!H", value) + segment[18:]
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    value = checksum(src, dst, 17, segment) or 0xFFFF
    return 17, segment[:6] + struct.pack("!H", value) + segment[8:]


def ethernet(packet: bytes) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", 0x0800 if packet[0] >> 4 == 4 else 0x86DD) + packet


class Encoder:
    """Frames for rows; DNS messages built once per distinct content, TCP sequence numbers per flow."""

    def __init__(self, stats: Counter):
        self.stats = stats
        self.messages: dict[tuple, bytes] = {}
        self.sequence: dict[tuple, int] = {}

    def message(self, row) -> bytes:
        key = (row.dns_id, row.qr, row.opcode, row.rcode, row.aa, row.tc, row.rd, row.ra, row.qname, row.qtype, row.answers)
        if key not in self.messages:
            try:
                self.messages[key] = dns_message(row)
            except (dns.exception.DNSException, ValueError) as err:
                self.stats["messages_not_rebuilt"] += 1
                self.stats.setdefault("first_rebuild_error", f"{row.qname} {row.answers}: {err}")
                self.messages[key] = dns.message.Message(id=int(row.dns_id) & 0xFFFF).to_wire()
        return self.messages[key]

    def frame(self, row) -> tuple[bytes, int]:
        """(the bytes written, the packet's length on the wire): shorter when the capture had cut the message."""
        family = int(row.family)
        src, dst = address_bytes(row.src_ip, family, self.stats), address_bytes(row.dst_ip, family, self.stats)
        kind = str(row.kind)
        if kind == "icmp-error":
            packet = ethernet(self.icmp_error(row, src, dst))
            return packet, len(packet)
        payload = self.message(row) if kind == "dns" else b""
        missing = 0
        if kind == "dns" and row.ancount > 0 and not row.answers and row.size > len(payload):
            # The capture kept only the start of this message (answers counted, none decoded): write it as
            # a snap-truncated packet of its real size whose header still counts the answers.
            payload = payload[:6] + struct.pack("!H", int(row.ancount)) + payload[8:]
            missing = int(row.size) - len(payload)
            payload += bytes(missing)
            self.stats["packets_cut_as_captured"] += 1
        flow = (row.vantage, row.src_ip, row.src_port, row.dst_ip, row.dst_port)
        seq = self.sequence.get(flow, 1000)
        if row.proto == "tcp" and payload:
            payload = struct.pack("!H", len(payload)) + payload
        self.sequence[flow] = (seq + len(payload) + (1 if kind in ("tcp-syn", "tcp-synack") else 0)) % 2**32
        proto, segment = transport(str(row.proto), src, dst, int(row.src_port), int(row.dst_port), payload, TCP_FLAGS.get(kind, 0x18), seq)
        packet = ethernet(ip_packet(src, dst, proto, segment))
        return packet[: len(packet) - missing], len(packet)

    def icmp_error(self, row, src: bytes, dst: bytes) -> bytes:
        """An ICMP error from the quoted packet's destination back to its source, quoting its headers."""
        dns_header = struct.pack("!HHHHHH", int(row.dns_id) & 0xFFFF, 0x0100, 1, 0, 0, 0) if row.dns_id >= 0 else b""
        proto, segment = transport(str(row.proto), src, dst, int(row.src_port), int(row.dst_port), dns_header, 0x18, 1000)
        quoted = ip_packet(src, dst, proto, segment)
        icmp_proto = 1 if len(src) == 4 else 58
        body = struct.pack("!BBHI", int(row.icmp_type), int(row.icmp_code), 0, 0) + quoted
        if icmp_proto == 1:
            body = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
        else:
            body = body[:2] + struct.pack("!H", checksum(dst, src, 58, body)) + body[4:]
        return ip_packet(dst, src, icmp_proto, body)


def write_pcapng(frame: pd.DataFrame, path: str | Path) -> dict:
    """Write the events as pcapng; returns counters (packets, interfaces, rows that lost something)."""
    frame = events.conform(frame).sort_values("ts_ns", kind="stable")
    stats: Counter = Counter()
    encoder = Encoder(stats)
    keys = frame[INTERFACE_KEY].astype({"vantage": str, "role": str, "ifname": str})
    interfaces: dict[tuple, int] = {}
    blocks = [section_header()]
    for key, row in zip(keys.itertuples(index=False, name=None), frame.itertuples(index=False)):
        if key not in interfaces:
            interfaces[key] = len(interfaces)
            blocks.append(interface_block(*key))
        latency = int(row.latency_ns) if row.qr else 0
        blocks.append(packet_block(interfaces[key], int(row.ts_ns), *encoder.frame(row), direction_flags(str(row.pkt_type)), latency))
    try:
        Path(path).write_bytes(b"".join(blocks))
    except OSError as err:
        raise EventsError(f"{path}: cannot write: {err.strerror}") from None
    stats["packets"] = len(frame)
    stats["interfaces"] = len(interfaces)
    return dict(stats)
