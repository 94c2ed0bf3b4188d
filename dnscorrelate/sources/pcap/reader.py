"""One capture file into rows, packet by packet: link layer, IP, transport, TCP reassembly, ICMP errors;
then the rows into the events table (dns.py). Every packet read lands in exactly one `packets_*` counter."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.sources.naming import vantage_and_role
from dnscorrelate.sources.pcap import bulk
from dnscorrelate.sources.pcap.dns import Row, RowColumns, columns_of_rows, concat_columns, frame_of_columns
from dnscorrelate.sources.pcap.files import CaptureFile, Interface, RawPacket
from dnscorrelate.sources.pcap.ip import Fragments, ip_layer, quoted
from dnscorrelate.sources.pcap.memory import memory_reused
from dnscorrelate.sources.pcap.link import SUPPORTED_LINKS, network_layer
from dnscorrelate.sources.pcap.transport import (
    ICMP_ERRORS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN, Transport,
)
from dnscorrelate.sources.tcp_stream import TcpStream

DEFAULT_PORTS = (53,)
WRITER_MARK = "dnscorrelate "  # if_description of interfaces written by pcapng_out

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
PCAP_TCP_COUNTERS = {  # the shared reassembler's counts (tcp_stream.py), as this reader's stats name them
    "retransmissions": "tcp_retransmissions", "segments_cut": "tcp_segments_cut", "gaps": "tcp_gaps",
    "gap_bytes": "tcp_bytes_unreassembled", "skipped_bytes": "tcp_bytes_unreassembled", "cut_bytes": "tcp_bytes_unreassembled",
}


@dataclass
class PcapReader:
    """Turns one file's packets into rows; `vantages` lists (vantage, role, ifname, netns) per interface."""

    path: Path
    vantage: str | None
    ports: frozenset[int]
    verify_checksums: bool = True
    stats: Counter = field(default_factory=Counter)
    rows: list[Row] = field(default_factory=list)
    streams: dict[tuple, TcpStream] = field(default_factory=dict)
    vantages: list[tuple[str, str, str, int]] = field(default_factory=list)  # vantage, role, ifname, netns per interface
    ifindexes: list[int] = field(default_factory=list)  # per interface, when the file says (pcapng_out's files)
    all_dns: list[bool] = field(default_factory=list)  # per interface: written by pcapng_out, every packet is DNS
    fragments: Fragments | None = None

    def __post_init__(self) -> None:
        self.fragments = Fragments(self.verify_checksums, self.stats)

    def read(self) -> None:
        capture = CaptureFile(self.path, self.stats)
        for number, packet in enumerate(capture.packets, 1):
            self.name_new_interfaces(capture.interfaces)
            self.stats["packets"] += 1
            self.stats["packets_" + self.packet(capture.interfaces[packet.interface].linktype, packet, number)] += 1
        self.finish()

    def name_new_interfaces(self, interfaces: list[Interface]) -> None:
        for interface in interfaces[len(self.vantages) :]:
            *named, ifindex = self.name_interface(interface)
            self.vantages.append(tuple(named))
            self.ifindexes.append(ifindex)
            self.all_dns.append(interface.description.startswith(WRITER_MARK))

    def finish(self) -> None:
        """Count what is left half-built at the end of the file."""
        for stream in self.streams.values():
            if stream.buffer:
                self.stats["tcp_bytes_unreassembled"] += len(stream.buffer)
        self.stats["ip_fragments_unreassembled"] += self.fragments.unreassembled()

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
                t = self.fragments.add(packet.interface, t)
                if t is None:
                    return "ip_fragment"
        except (dpkt.UnpackError, IndexError, struct.error):
            return "bad_header"
        if t.checksum_ok is False:
            self.stats["bad_checksum"] += 1
        base = dict(ts_ns=packet.ts_ns, vantage=packet.interface, pkt_type=pkt_type or packet.pkt_type,
                    ifindex=ifindex or self.ifindexes[packet.interface], frame_number=number, latency_ns=packet.latency_ns)
        return self.transport_rows(t, base)

    def transport_rows(self, t: Transport, base: dict) -> str:
        """Add the rows of one packet parsed to its transport layer; returns its outcome."""
        if t.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            return self.icmp(t, base)
        on_dns_port = t.sport in self.ports or t.dport in self.ports or self.all_dns[base["vantage"]]
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
        """One direction of a TCP flow, reassembled: rows for every message this segment completes."""
        stream = self.streams.setdefault((base["vantage"], t.src, t.sport, t.dst, t.dport), TcpStream())
        counts = Counter()
        for message in stream.segment(t.tcp_seq, t.payload, t.payload_len, counts):
            self.rows.append(Row(kind="dns", t=t, wire=message.wire, complete=message.complete, size=message.size, **base))
        for name, count in counts.items():
            self.stats[PCAP_TCP_COUNTERS[name]] += count


@dataclass
class PcapResult:
    frame: pd.DataFrame
    stats: dict
    frame_numbers: np.ndarray  # for each row, the packet (1-based, in file order) it came from


def read_pcap_detailed(path: str | Path, vantage: str | None = None, ports: tuple[int, ...] = DEFAULT_PORTS,
                       verify_checksums: bool = True, bulk: bool = True) -> PcapResult:
    """The events of one capture file, its stats, and which packet each row came from. `bulk=False` reads
    every packet on the per-packet path (the reference the bulk path is tested against)."""
    with memory_reused():
        reader = PcapReader(Path(path), vantage, frozenset(ports or DEFAULT_PORTS), verify_checksums)
        classified = read_in_bulk(reader) if bulk else None
        if classified is None:
            reader = PcapReader(Path(path), vantage, frozenset(ports or DEFAULT_PORTS), verify_checksums)
            reader.read()
            rows = columns_of_rows(reader.rows)
        else:
            rows = classified.rows
        frame = frame_of_columns(rows, reader.vantages, reader.stats)
        if classified is not None:
            reader.stats["bad_checksum"] += classified.bad_checksum.result()  # summed in a second thread meanwhile
        return result_of(frame, rows.frame_number, reader.stats)


def read_in_bulk(reader: PcapReader) -> bulk.Classified | None:
    """The file's packets classified, with its rows in file order: common packets parsed at once (bulk.py),
    the rest one by one on the per-packet path, in file order. None for a file the bulk path leaves to the
    per-packet path whole."""
    capture = CaptureFile(reader.path, reader.stats)
    view = bulk.FileView(capture.data)
    index = bulk.pcap_index(capture, view) if capture.format == "pcap" else bulk.pcapng_index(capture, view)
    if index is None:
        return None
    reader.name_new_interfaces(capture.interfaces)
    linktypes = np.array([i.linktype for i in capture.interfaces], np.int64)
    classified = bulk.classify(index, linktypes, np.array(reader.ifindexes, np.int64), np.array(reader.all_dns, bool), reader.ports,
                               view, reader.verify_checksums)
    reader.stats["packets"] += len(index.data_at)
    bulk.count_outcomes(reader.stats, classified)
    for i in np.flatnonzero(classified.outcome == bulk.SLOW).tolist():
        packet = bulk.slow_packet(index, i, capture.data)
        reader.stats["packets_" + reader.packet(int(linktypes[packet.interface]), packet, i + 1)] += 1
    reader.finish()
    if not reader.rows:
        return classified  # its rows are in file order already
    parts = concat_columns([classified.rows, columns_of_rows(reader.rows)])
    return replace(classified, rows=parts.take(np.argsort(parts.frame_number, kind="stable")))


def result_of(frame: pd.DataFrame, numbers: np.ndarray, counted: Counter) -> PcapResult:
    """Rows in time order (stable: file order among equal times), the stats with every outcome present."""
    ts = frame["ts_ns"].to_numpy()
    in_order = len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())
    order = np.arange(len(ts)) if in_order else np.argsort(ts, kind="stable")
    stats = {k: counted.get(k, 0) for k in ["packets", *PACKET_OUTCOMES, "dns_messages", "truncated", "bad_checksum",
                                             "undecodable", "tcp_bytes_unreassembled", "tcp_retransmissions"]}
    stats.update(counted)
    return PcapResult(events.conform(frame if in_order else frame.iloc[order], handed_over=True), dict(stats), numbers[order])


def read_pcap(path: str | Path, vantage: str | None = None, ports: tuple[int, ...] = DEFAULT_PORTS) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of a pcap or pcapng file and what was counted reading it."""
    result = read_pcap_detailed(path, vantage, ports)
    return result.frame, result.stats
