"""The bulk path: headers of every packet parsed at once, with numpy over the memory-mapped file.

A capture's packets are mostly alike: Ethernet (maybe VLAN-tagged), SLL, SLL2, raw IP or loopback
around IPv4 or IPv6 without extension headers around UDP. For those, every field is gathered from the
file by position for all packets at once (numpy fancy indexing), checksums included (`word_sums`).
Python runs only to find where each record starts (a loop reading 8 or 16 bytes a record: the
formats chain records by length) and once per distinct DNS message (dns.py). Every other packet
(TCP on a DNS port, fragments, ICMP, extension headers, PPPoE, anything cut short or odd) goes
through the per-packet path (reader.py) in file order, so TCP streams and fragments are put back
together exactly as before; the result is the same rows and counts as the per-packet path alone.
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from dataclasses import dataclass

import dpkt.pcapng as ng
import numpy as np

from dnscorrelate.sources.pcap.dns import RowColumns
from dnscorrelate.sources.pcap.files import (
    COMMENT_OPTION, EPB_FLAGS_OPTION, EPB_RECEPTION, LATENCY_COMMENT, LITTLE_ENDIAN_BOM, SIMPLE_PACKET_BLOCK, CaptureFile,
    RawPacket, interface_of, open_error,
)
from dnscorrelate.sources.pcap.link import (
    ETH_IPV4, ETH_IPV6, LINK_ETHERNET, LINK_LOOP, LINK_NULL, LINK_RAW_ALIASES, LINK_IPV4, LINK_IPV6, LINK_SLL, LINK_SLL2,
    SLL_PKT_TYPES, SUPPORTED_LINKS, VLAN_TYPES,
)
from dnscorrelate.sources.pcap.transport import IPPROTO_TCP, IPPROTO_UDP

PKT_TYPES = ["", "HOST", "BROADCAST", "MULTICAST", "OTHERHOST", "OUTGOING"]  # codes of the pkt_type column here
PKT_TYPE_CODE = {name: code for code, name in enumerate(PKT_TYPES)}
SLL_CODES = np.array([PKT_TYPE_CODE[SLL_PKT_TYPES.get(i, "")] for i in range(256)], np.int8)
EPB_INBOUND_CODES = np.array([PKT_TYPE_CODE[EPB_RECEPTION.get(i, "HOST")] for i in range(8)], np.int8)
MAX_VLAN_TAGS = 3  # deeper stacks take the per-packet path
CHECKSUM_CHUNK = 16 << 20  # bytes of the file summed at once (int64 prefix sums: 8 times that in memory)

# what the bulk path decided for each packet
SLOW, DNS_UDP, NOT_DNS, NON_IP, UNSUPPORTED = 0, 1, 2, 3, 4


@dataclass
class PacketIndex:
    """Where each packet's bytes are in the file, and what its record says."""

    data_at: np.ndarray  # file offset of the captured bytes
    caplen: np.ndarray
    wire_len: np.ndarray
    ts_ns: np.ndarray
    interface: np.ndarray
    pkt_type: np.ndarray  # PKT_TYPES codes, from pcapng's epb_flags
    latency_ns: np.ndarray  # from pcapng_out's comment; -1 elsewhere


def gather(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """(N, width) bytes of the file at each offset (offsets past the end read zeros)."""
    if not len(at):
        return np.zeros((0, width), np.uint8)
    positions = at.astype(np.int64)[:, None] + np.arange(width)
    inside = positions < len(buf)
    return np.where(inside, buf[np.minimum(positions, len(buf) - 1)], 0).astype(np.uint8)


def be16(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    bytes_ = gather(buf, at, 2).astype(np.int64)
    return bytes_[:, 0] << 8 | bytes_[:, 1]


def be32(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    return be16(buf, at) << 16 | be16(buf, at + 2)


def u32(buf: np.ndarray, at: np.ndarray, big: np.ndarray | bool) -> np.ndarray:
    """32-bit fields in either byte order (pcapng sections each have their own)."""
    b = gather(buf, at, 4).astype(np.int64)
    little = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24
    return np.where(big, b[:, 0] << 24 | b[:, 1] << 16 | b[:, 2] << 8 | b[:, 3], little)


def pcap_index(capture: CaptureFile, buf: np.ndarray) -> PacketIndex:
    """Every record of a pcap file: a loop finds where each starts; its fields are then gathered at once."""
    data, stats = capture.data, capture.stats
    caplen_of = struct.Struct(capture.byte_order + "8xI").unpack_from
    offsets = array("q")
    at, end = 24, len(data)
    while at < end:
        if end - at < 16:
            stats["file_truncated_bytes"] += end - at
            break
        caplen = caplen_of(data, at)[0]
        if caplen > end - at - 16:
            stats["file_truncated_bytes"] += end - at
            break
        offsets.append(at)
        at += 16 + caplen
    records = np.frombuffer(offsets, np.int64)
    big = capture.byte_order == ">"
    seconds, fraction = u32(buf, records, big), u32(buf, records + 4, big)
    n = len(records)
    return PacketIndex(records + 16, u32(buf, records + 8, big), u32(buf, records + 12, big),
                       seconds * 1_000_000_000 + fraction * capture.ns_per_fraction, np.zeros(n, np.int64),
                       np.zeros(n, np.int8), np.full(n, -1, np.int64))


def pcapng_index(capture: CaptureFile, buf: np.ndarray) -> PacketIndex | None:
    """Every enhanced packet block of a pcapng file (None when it holds obsolete packet blocks: the
    per-packet path reads those). A loop walks the blocks; interface blocks are parsed as they come."""
    data, stats = capture.data, capture.stats
    offsets, bigs, bases = array("q"), array("b"), array("q")
    order, section_base, at, end = "<", 0, 0, len(data)
    header = {"<": struct.Struct("<II").unpack_from, ">": struct.Struct(">II").unpack_from}
    while at < end:
        if end - at < 12:
            stats["file_truncated_bytes"] += end - at
            break
        block_type = header["<"](data, at)[0]
        if block_type == ng.PCAPNG_BT_SHB:
            bom = header["<"](data, at + 8)[0]
            if bom not in (ng.BYTE_ORDER_MAGIC_LE, ng.BYTE_ORDER_MAGIC):
                raise open_error(capture.path, "section header with an unknown byte-order magic")
            order = "<" if bom == LITTLE_ENDIAN_BOM else ">"
            section_base = len(capture.interfaces)
        block_type, block_len = header[order](data, at)
        if block_len < 12 or block_len % 4 or at + block_len > end:
            stats["file_truncated_bytes"] += end - at
            break
        if block_type == ng.PCAPNG_BT_EPB:
            offsets.append(at)
            bigs.append(order == ">")
            bases.append(section_base)
        elif block_type == ng.PCAPNG_BT_IDB:
            block = data[at : at + block_len]
            idb = ng.InterfaceDescriptionBlockLE(block) if order == "<" else ng.InterfaceDescriptionBlock(block)
            capture.interfaces.append(interface_of(idb, order))
        elif block_type == ng.PCAPNG_BT_PB:
            return None
        elif block_type == SIMPLE_PACKET_BLOCK:
            stats["pcapng_simple_packets_skipped"] += 1
        elif block_type != ng.PCAPNG_BT_SHB:
            stats["pcapng_other_blocks"] += 1
        at += block_len
    if any(i.units_per_second > 10**9 for i in capture.interfaces):
        return None  # finer than nanoseconds: the per-packet path's integers do not overflow
    return epb_fields(capture, buf, np.frombuffer(offsets, np.int64), np.frombuffer(bigs, np.int8).astype(bool),
                      np.frombuffer(bases, np.int64))


def epb_fields(capture: CaptureFile, buf: np.ndarray, blocks: np.ndarray, big: np.ndarray, base: np.ndarray) -> PacketIndex | None:
    """The fields and options of enhanced packet blocks at `blocks`, gathered at once (None when a time
    does not fit 63 bits: the per-packet path reads such a file)."""
    if len(blocks) and (u32(buf, blocks + 12, big) >= 2**31).any():
        return None
    interface = base + u32(buf, blocks + 8, big)
    known = interface < len(capture.interfaces)
    capture.stats["pcapng_unknown_interface"] += int((~known).sum())
    if not known.all():
        blocks, big, interface = blocks[known], big[known], interface[known]
    block_len = u32(buf, blocks + 4, big)
    caplen = u32(buf, blocks + 20, big)
    units = u32(buf, blocks + 12, big) << 32 | u32(buf, blocks + 16, big)
    per_second = np.array([i.units_per_second for i in capture.interfaces], np.int64)[interface]
    offset_ns = np.array([i.offset_ns for i in capture.interfaces], np.int64)[interface]
    ts_ns = time_ns(units, per_second) + offset_ns
    pkt_type, latency = epb_options(buf, blocks + 28 + caplen + (-caplen % 4), blocks + block_len - 4, big)
    return PacketIndex(blocks + 28, caplen, u32(buf, blocks + 24, big), ts_ns, interface, pkt_type, latency)


def time_ns(units: np.ndarray, per_second: np.ndarray) -> np.ndarray:
    """units * 1e9 // per_second without overflowing 64 bits (units of a ns clock are already ~2**60)."""
    whole, part = np.divmod(units, per_second)
    return whole * 1_000_000_000 + part * 1_000_000_000 // per_second


def epb_options(buf: np.ndarray, at: np.ndarray, end: np.ndarray, big: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pkt_type codes (epb_flags) and pcapng_out's latency comments, walking every block's options in step."""
    n = len(at)
    pkt_type, latency = np.zeros(n, np.int8), np.full(n, -1, np.int64)
    active = np.flatnonzero(at + 4 <= end)
    at = at.copy()
    while len(active):
        codes = u16(buf, at[active], big[active])
        lengths = u16(buf, at[active] + 2, big[active])
        live = codes != 0
        active, codes, lengths = active[live], codes[live], lengths[live]
        flags = active[(codes == EPB_FLAGS_OPTION) & (lengths >= 4)]
        if len(flags):
            value = u32(buf, at[flags] + 4, big[flags])
            direction = value & 3
            pkt_type[flags] = np.where(direction == 2, PKT_TYPE_CODE["OUTGOING"],
                                       np.where(direction == 1, EPB_INBOUND_CODES[value >> 2 & 7], 0))
        comments = (codes == COMMENT_OPTION) & (lengths >= len(LATENCY_COMMENT))
        if comments.any():
            latency[active[comments]] = latency_comments(buf, at[active[comments]] + 4, lengths[comments], latency[active[comments]])
        at[active] += 4 + lengths + (-lengths % 4)
        active = active[at[active] + 4 <= end[active]]
    return pkt_type, latency


def u16(buf: np.ndarray, at: np.ndarray, big: np.ndarray) -> np.ndarray:
    b = gather(buf, at, 2).astype(np.int64)
    return np.where(big, b[:, 0] << 8 | b[:, 1], b[:, 0] | b[:, 1] << 8)


def latency_comments(buf: np.ndarray, at: np.ndarray, length: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The number in `dnscorrelate latency_ns=N` comments (the others keep `current`), read digit by digit at once."""
    prefix = np.frombuffer(LATENCY_COMMENT, np.uint8)
    marked = (gather(buf, at, len(prefix)) == prefix).all(axis=1)
    digits_at, count = at + len(prefix), length - len(prefix)
    width = int(count.max()) if len(count) else 0
    digits = gather(buf, digits_at, max(width, 1)).astype(np.int64) - ord("0")
    inside = np.arange(max(width, 1)) < count[:, None]
    numeric = ((digits >= 0) & (digits <= 9) | ~inside).all(axis=1) & (count > 0) & (count <= 18)
    value = np.zeros(len(at), np.int64)
    for column in range(width):
        take = inside[:, column]
        value = np.where(take, value * 10 + np.where(take, digits[:, column], 0), value)
    return np.where(marked, np.where(numeric, value, -1), current)


def word_sums(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The sum of the big-endian 16-bit words in each file range [start, end) (an odd last byte padded
    with zero), as RFC 1071's checksum adds them before folding. From prefix sums of the bytes at even
    and at odd offsets, a chunk of the file at a time; ranges are in file order."""
    sums = np.zeros(len(start), np.int64)
    i = 0
    while i < len(start):
        low = int(start[i])
        j = max(int(np.searchsorted(start, low + CHECKSUM_CHUNK, side="right")), i + 1)
        high = int(end[i:j].max())
        chunk = buf[low:high].astype(np.int64)
        even = (np.arange(low, high) % 2) == 0
        prefix_even = np.concatenate([[0], np.cumsum(np.where(even, chunk, 0))])
        prefix_odd = np.concatenate([[0], np.cumsum(np.where(even, 0, chunk))])
        s, e = start[i:j] - low, np.maximum(end[i:j], start[i:j]) - low
        at_even = prefix_even[e] - prefix_even[s]
        at_odd = prefix_odd[e] - prefix_odd[s]
        sums[i:j] = np.where(start[i:j] % 2 == 0, at_even * 256 + at_odd, at_odd * 256 + at_even)
        i = j
    return sums


def address_words(addresses: np.ndarray) -> np.ndarray:
    """The sum of an (N, 16) address array's 16-bit words (IPv4 in the first four bytes, zeros after)."""
    return (addresses[:, 0::2].astype(np.int64) << 8 | addresses[:, 1::2]).sum(axis=1)


@dataclass
class Classified:
    """What the bulk path made of the packets it could read, and which it leaves to the per-packet path."""

    outcome: np.ndarray  # SLOW, DNS_UDP, NOT_DNS, NON_IP, UNSUPPORTED per packet
    rows: RowColumns  # one per DNS_UDP packet, in file order
    bad_checksum: int
    truncated: int


def classify(index: PacketIndex, linktypes: np.ndarray, ifindexes: np.ndarray, all_dns: np.ndarray, dns_ports: frozenset[int],
             buf: np.ndarray, data, verify_checksums: bool) -> Classified:
    """Link, IP and UDP/TCP headers of every packet at once; see the module's docstring."""
    n = len(index.data_at)
    start, cap = index.data_at, index.caplen
    linktype = linktypes[index.interface] if n else np.zeros(0, np.int64)
    outcome = np.full(n, SLOW, np.int8)
    outcome[~np.isin(linktype, list(SUPPORTED_LINKS))] = UNSUPPORTED
    pkt_type = index.pkt_type.copy()
    ifindex = ifindexes[index.interface] if n else np.zeros(0, np.int64)

    # link layer: the offset of the IP header, and whether an Ethernet type says IP
    ip_off = np.full(n, -1, np.int64)
    ethertype = np.full(n, -1, np.int64)
    ether = linktype == LINK_ETHERNET
    ethertype[ether & (cap >= 14)] = be16(buf, start[ether & (cap >= 14)] + 12)
    ip_off[ether] = 14
    sll = (linktype == LINK_SLL) & (cap >= 16)
    ethertype[sll] = be16(buf, start[sll] + 14)
    ip_off[sll] = 16
    sll_type = SLL_CODES[np.minimum(be16(buf, start[sll]), 255)]
    pkt_type[sll] = np.where(sll_type != 0, sll_type, pkt_type[sll])
    sll2 = (linktype == LINK_SLL2) & (cap >= 20)
    ethertype[sll2] = be16(buf, start[sll2])
    ip_off[sll2] = 20
    sll2_ifindex = be32(buf, start[sll2] + 4)
    ifindex[sll2] = np.where(sll2_ifindex != 0, sll2_ifindex, ifindex[sll2])
    sll2_type = SLL_CODES[gather(buf, start[sll2] + 10, 1)[:, 0]]
    pkt_type[sll2] = np.where(sll2_type != 0, sll2_type, pkt_type[sll2])
    for _ in range(MAX_VLAN_TAGS):
        tagged = np.isin(ethertype, list(VLAN_TYPES)) & (cap >= ip_off + 4)
        ethertype[tagged] = be16(buf, start[tagged] + ip_off[tagged] + 2)
        ip_off[tagged] += 4
    has_ethertype = ethertype >= 0
    carries_ip = has_ethertype & np.isin(ethertype, [ETH_IPV4, ETH_IPV6])
    known_other = has_ethertype & ~carries_ip & ~np.isin(ethertype, [*VLAN_TYPES, 0x8864])
    outcome[known_other & (outcome == SLOW)] = NON_IP
    loop = np.isin(linktype, [LINK_NULL, LINK_LOOP]) & (cap >= 5)
    ip_off[loop] = 4
    raw = np.isin(linktype, [*LINK_RAW_ALIASES, LINK_IPV4, LINK_IPV6])
    ip_off[raw] = 0
    version_byte = np.zeros(n, np.int64)
    at_ip = carries_ip | loop | (raw & (cap >= 1))
    at_ip &= cap > ip_off
    version_byte[at_ip] = gather(buf, start[at_ip] + ip_off[at_ip], 1)[:, 0]
    version = version_byte >> 4
    outcome[(loop | raw) & (outcome == SLOW) & ~np.isin(version, [4, 6])] = NON_IP
    outcome[raw & (cap == 0) & (outcome == SLOW)] = NON_IP
    candidate = at_ip & np.isin(version, [4, 6]) & (outcome == SLOW)

    # network layer: IPv4 with a 20-byte header, not a fragment; IPv6 with UDP or TCP right behind
    ip = start + ip_off
    ip_cap = cap - ip_off
    v4 = candidate & (version == 4) & ((version_byte & 0xF) == 5) & (ip_cap >= 20)
    v6 = candidate & (version == 6) & (ip_cap >= 40)
    fields4 = gather(buf, ip[v4], 20).astype(np.int64)
    total = np.zeros(n, np.int64)
    total[v4] = fields4[:, 2] << 8 | fields4[:, 3]
    proto = np.full(n, -1, np.int64)
    proto[v4] = fields4[:, 9]
    fragment = np.zeros(n, bool)
    fragment[v4] = ((fields4[:, 6] << 8 | fields4[:, 7]) & 0x3FFF) != 0
    fields6 = gather(buf, ip[v6], 8).astype(np.int64)
    payload_length6 = np.zeros(n, np.int64)
    payload_length6[v6] = fields6[:, 4] << 8 | fields6[:, 5]
    proto[v6] = fields6[:, 6]
    header_len = np.where(v6, 40, 20)
    # the transport bytes as the per-packet path slices them, and the length the IP header gives them
    body_end = np.where(v4, np.where(total > 0, np.minimum(total, ip_cap), ip_cap),
                        np.where(payload_length6 > 0, np.minimum(40 + payload_length6, ip_cap), ip_cap))
    body_len = body_end - header_len
    expected = np.where(v4, np.where(total > 0, np.maximum(total - 20, 0), body_len),
                        np.where(payload_length6 > 0, payload_length6, ip_cap - 40))
    udp = (v4 | v6) & ~fragment & (proto == IPPROTO_UDP) & (body_len >= 8)
    tcp = (v4 | v6) & ~fragment & (proto == IPPROTO_TCP) & (body_len >= 20)
    parsed = udp | tcp
    body = ip + header_len
    ports = np.zeros((n, 2), np.int64)
    port_bytes = gather(buf, body[parsed], 8).astype(np.int64)
    ports[parsed, 0] = port_bytes[:, 0] << 8 | port_bytes[:, 1]
    ports[parsed, 1] = port_bytes[:, 2] << 8 | port_bytes[:, 3]
    port_list = sorted(dns_ports)
    on_dns_port = np.isin(ports[:, 0], port_list) | np.isin(ports[:, 1], port_list) | all_dns[index.interface]
    udp_length = np.zeros(n, np.int64)
    udp_checksum = np.zeros(n, np.int64)
    udp_length[parsed] = port_bytes[:, 4] << 8 | port_bytes[:, 5]
    udp_checksum[parsed] = port_bytes[:, 6] << 8 | port_bytes[:, 7]
    udp_length[~udp] = 0
    udp_checksum[~udp] = 0

    cut = cap < index.wire_len
    verify = verify_checksums & ~cut
    addresses = np.zeros((n, 2, 16), np.uint8)
    addresses[v4, 0, :4] = fields4[:, 12:16].astype(np.uint8)
    addresses[v4, 1, :4] = fields4[:, 16:20].astype(np.uint8)
    addresses[v6, 0] = gather(buf, ip[v6] + 8, 16)
    addresses[v6, 1] = gather(buf, ip[v6] + 24, 16)

    checksum_bad = np.zeros(n, bool)
    if verify_checksums:
        checksum_bad = checksums_bad(buf, v4 & parsed & verify, udp & verify & (udp_checksum != 0) & (body_len >= udp_length)
                                     & (udp_length == expected), tcp & verify & (body_len >= expected), ip, body, udp_length,
                                     expected, proto, addresses, v6)
    handled = parsed & (udp | ~on_dns_port)
    outcome[handled & on_dns_port] = DNS_UDP
    outcome[handled & ~on_dns_port] = NOT_DNS

    dns_at = np.flatnonzero(outcome == DNS_UDP)
    rows = udp_rows(index, dns_at, buf, data, body, body_len, udp_length, ports, proto, addresses, v6, pkt_type, ifindex)
    fast = outcome != SLOW
    supported = outcome != UNSUPPORTED
    return Classified(outcome, rows, int((checksum_bad & handled).sum()), int((cut & fast & supported).sum()))


def checksums_bad(buf, v4_header, udp_checked, tcp_checked, ip, body, udp_length, expected, proto, addresses, v6) -> np.ndarray:
    """Whether each packet's checksum is wrong, as the per-packet path tells: the transport checksum
    where it is checked, else the IPv4 header's."""
    n = len(ip)
    bad = np.zeros(n, bool)
    header = np.flatnonzero(v4_header)
    bad[header] = word_sums(buf, ip[header], ip[header] + 20) % 0xFFFF != 0
    checked = np.flatnonzero(udp_checked | tcp_checked)
    length = np.where(udp_checked, udp_length, expected)[checked]
    pseudo = address_words(addresses[checked, 0]) + address_words(addresses[checked, 1]) + proto[checked]
    pseudo += np.where(v6[checked], (length >> 16) + (length & 0xFFFF), length)
    segment = word_sums(buf, body[checked], body[checked] + length)
    bad[checked] = (pseudo + segment) % 0xFFFF != 0
    return bad


def udp_rows(index: PacketIndex, at: np.ndarray, buf, data, body, body_len, udp_length, ports, proto, addresses, v6, pkt_type,
             ifindex) -> RowColumns:
    """The rows of the DNS datagrams at `at`: one per packet, DNS header fields read from the file."""
    payload_at = body[at] + 8
    payload_len = np.maximum(udp_length[at] - 8, 0)
    captured = np.maximum(np.minimum(udp_length[at], body_len[at]) - 8, 0)
    head = gather(buf, payload_at, 12).astype(np.int64)
    whole_header = captured >= 12
    word = lambda i: np.where(whole_header, head[:, i] << 8 | head[:, i + 1], 0).astype(np.uint16)
    starts, ends = (payload_at + 2).tolist(), (payload_at + captured).tolist()
    m = len(at)
    address_len = np.where(v6[at], 16, 4).astype(np.int8)
    return RowColumns(
        ts_ns=index.ts_ns[at], vantage=index.interface[at], pkt_type=np.array(PKT_TYPES, dtype=object)[pkt_type[at]],
        ifindex=ifindex[at], kind=np.full(m, "dns", dtype=object), family=np.where(v6[at], 6, 4).astype(np.int8),
        proto=proto[at].astype(np.int16), src=addresses[at, 0], dst=addresses[at, 1],
        address_len=np.stack([address_len, address_len], axis=1).reshape(m, 2),
        sport=ports[at, 0].astype(np.int32), dport=ports[at, 1].astype(np.int32),
        icmp_type=np.full(m, -1, np.int16), icmp_code=np.full(m, -1, np.int16),
        keys=list(map(data.__getitem__, map(slice, starts, ends))), wire_len=captured,
        dns_id=word(0), dns_flags=word(2), ancount=word(6), complete=captured >= payload_len, size=payload_len.astype(np.int32),
        frame_number=at.astype(np.int64) + 1, latency_ns=index.latency_ns[at],
    )


def slow_packet(index: PacketIndex, i: int, data) -> RawPacket:
    """Packet `i` as the per-packet path takes it."""
    at, caplen = int(index.data_at[i]), int(index.caplen[i])
    return RawPacket(int(index.ts_ns[i]), int(index.interface[i]), data[at : at + caplen], int(index.wire_len[i]),
                     PKT_TYPES[index.pkt_type[i]], int(index.latency_ns[i]))


def count_outcomes(stats: Counter, classified: Classified) -> None:
    outcome = classified.outcome
    stats["packets_dns_udp"] += int((outcome == DNS_UDP).sum())
    stats["packets_not_dns"] += int((outcome == NOT_DNS).sum())
    stats["packets_non_ip"] += int((outcome == NON_IP).sum())
    stats["packets_unsupported_link"] += int((outcome == UNSUPPORTED).sum())
    stats["bad_checksum"] += classified.bad_checksum
    stats["truncated"] += classified.truncated
