"""The bulk path: headers of every packet parsed at once, with numpy over the memory-mapped file.

A capture's packets are mostly alike: Ethernet (maybe VLAN-tagged), SLL, SLL2, raw IP or loopback
around IPv4 or IPv6 without extension headers around UDP or TCP. For those, every field is gathered
from the file by position for all packets at once (numpy fancy indexing), checksums included
(`word_sums`). Python runs only to find where each pcap record starts (a loop reading its 16-byte
header; pcapng blocks are found at once, `EpbChain`), and, in dns.py, once per distinct DNS message
(payloads are Arrow views into the file, payloads.py). DNS datagrams, non-DNS UDP/TCP, non-IP frames, TCP control and
empty segments, and TCP streams whose every segment holds one whole message in sequence are settled
here. Every other packet (TCP needing reassembly, fragments, ICMP, IP options, extension headers,
PPPoE, anything cut short or odd) goes through the per-packet path (reader.py) in file order, so TCP
streams and fragments are put back together exactly as before: the rows and counts are those of the
per-packet path alone (tests/unit/test_pcap.py holds both to that).
"""
from __future__ import annotations

import struct
import sys
from array import array
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import dpkt.pcapng as ng
import numpy as np
import pandas as pd

from dnscorrelate.sources.pcap.dns import RowColumns
from dnscorrelate.sources.pcap.payloads import Payloads
from dnscorrelate.sources.pcap.files import (
    COMMENT_OPTION, EPB_FLAGS_OPTION, EPB_RECEPTION, LATENCY_COMMENT, LITTLE_ENDIAN_BOM, SIMPLE_PACKET_BLOCK, CaptureFile,
    RawPacket, interface_of, open_error,
)
from dnscorrelate.sources.pcap.link import (
    ETH_IPV4, ETH_IPV6, LINK_ETHERNET, LINK_LOOP, LINK_NULL, LINK_RAW_ALIASES, LINK_IPV4, LINK_IPV6, LINK_SLL, LINK_SLL2,
    ETH_PPPOE_SESSION, SLL_PKT_TYPES, SUPPORTED_LINKS, VLAN_TYPES,
)
from dnscorrelate.sources.pcap.transport import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN

# The bulk path's second thread. Work whose result is needed only later goes there, and the main thread goes on:
# pcapng's options walk (needed when the rows are made) while the headers are read, and the checksums (they
# count bad packets and change no row) while the rows are made and decoded. numpy's gathers and sums let go of
# the GIL, so the two run on two cores: about 0.3 s of a 1.6 s read of the benchmark's file (bench/README.md).
WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dnsc-pcap")


def done(value) -> Future:
    """A future that has its value already."""
    future = Future()
    future.set_result(value)
    return future


PKT_TYPES = ["", "HOST", "BROADCAST", "MULTICAST", "OTHERHOST", "OUTGOING"]  # codes of the pkt_type column here
PKT_TYPE_CODE = {name: code for code, name in enumerate(PKT_TYPES)}
SLL_CODES = np.array([PKT_TYPE_CODE[SLL_PKT_TYPES.get(i, "")] for i in range(256)], np.int8)
EPB_INBOUND_CODES = np.array([PKT_TYPE_CODE[EPB_RECEPTION.get(i, "HOST")] for i in range(8)], np.int8)
MAX_VLAN_TAGS = 3  # deeper stacks take the per-packet path

# what the bulk path decided for each packet, and the counter each is
SLOW, DNS_UDP, NOT_DNS, NON_IP, UNSUPPORTED, DNS_TCP, TCP_CONTROL, TCP_OTHER = range(8)
OUTCOMES = ["", "packets_dns_udp", "packets_not_dns", "packets_non_ip", "packets_unsupported_link", "packets_dns_tcp",
            "packets_tcp_control", "packets_tcp_other"]
KINDS = ["dns", "tcp-syn", "tcp-synack", "tcp-rst"]
KIND_DNS, KIND_SYN, KIND_SYNACK, KIND_RST = range(4)
# the row columns' text as categoricals (codes, not a str object per row)
PKT_TYPE_CATEGORIES, KIND_CATEGORIES = pd.Index(PKT_TYPES, dtype=object), pd.Index(KINDS, dtype=object)


@dataclass
class PacketIndex:
    """Where each packet's bytes are in the file, and what its record says."""

    data_at: np.ndarray  # file offset of the captured bytes
    caplen: np.ndarray
    wire_len: np.ndarray
    ts_ns: np.ndarray
    interface: np.ndarray
    options: Future  # of (pkt_type, latency_ns): pcapng's options, walked in the WORKER thread while the headers are read

    @property
    def pkt_type(self) -> np.ndarray:
        """PKT_TYPES codes, from pcapng's epb_flags."""
        return self.options.result()[0]

    @property
    def latency_ns(self) -> np.ndarray:
        """From pcapng_out's comment; -1 elsewhere."""
        return self.options.result()[1]


class FileView:
    """The file as numpy arrays: bytes, and 16- and 32-bit words at every offset (one view per alignment),
    so a field of every packet is one fancy index, not one per byte."""

    def __init__(self, data):
        self.data = data
        self.bytes = np.frombuffer(data, np.uint8)
        self.size = len(self.bytes)
        self.words = {}

    def view(self, dtype: str, alignment: int) -> np.ndarray:
        key = (dtype, alignment)
        if key not in self.words:
            width = np.dtype(dtype).itemsize
            count = max((self.size - alignment) // width, 0)
            self.words[key] = np.frombuffer(self.data, dtype, count=count, offset=alignment) if count else np.zeros(0, dtype)
        return self.words[key]

    def epb_chain(self) -> EpbChain | None:
        """Where enhanced packet blocks could start and where each leads (None on a big-endian machine)."""
        if sys.byteorder != "little":
            return None
        if not hasattr(self, "_epb_chain"):
            self._epb_chain = EpbChain.of(self.view("<u4", 0))
        return self._epb_chain

    def unaligned(self, dtype: str) -> np.ndarray:
        """The `dtype` field starting at every byte offset: one view with a stride of one byte."""
        key = (dtype, None)
        if key not in self.words:
            width = np.dtype(dtype).itemsize
            count = max(self.size - width + 1, 0)
            self.words[key] = np.ndarray((count,), dtype, buffer=self.data, strides=(1,)) if count else np.zeros(0, dtype)
        return self.words[key]

    def field(self, at: np.ndarray, dtype: str) -> np.ndarray:
        """The unsigned `dtype` field (">u2", "<u4"...) at each offset, as int64; 0 where it would run past
        the end. One gather: offsets of one alignment through the aligned view of that alignment (faster),
        others through the byte-strided view."""
        width = np.dtype(dtype).itemsize
        at = np.asarray(at, np.int64)
        if not len(at):
            return np.zeros(0, np.int64)
        if int(at.max()) + width > self.size:
            past_end = at + width > self.size
            value = self.field(np.where(past_end, 0, at), dtype) if self.size >= width else np.zeros(len(at), np.int64)
            value[past_end] = 0
            return value
        if width == 1:
            return self.bytes[at].astype(np.int64)
        alignment = at & (width - 1)
        shift = int(alignment[0])
        if (alignment == shift).all():  # one alignment (pcapng's blocks are 4-aligned): the aligned view
            return self.view(dtype, shift)[(at - shift) >> (width.bit_length() - 1)].astype(np.int64)
        return self.unaligned(dtype)[at].astype(np.int64)

    def gather(self, at: np.ndarray, width: int) -> np.ndarray:
        """(N, width) bytes at each offset (zeros past the end)."""
        at = np.asarray(at, np.int64)
        if not len(at):
            return np.zeros((0, width), np.uint8)
        positions = at[:, None] + np.arange(width)
        if int(at.max()) + width <= self.size:
            return self.bytes[positions]
        return np.where(positions < self.size, self.bytes[np.minimum(positions, self.size - 1)], 0).astype(np.uint8)


def either_order(view: FileView, at: np.ndarray, big: np.ndarray | bool, width: int) -> np.ndarray:
    """Unsigned fields of `width` bytes in each one's byte order (pcapng sections each have their own)."""
    little = view.field(at, f"<u{width}")
    if not np.any(big):
        return little
    return np.where(big, view.field(at, f">u{width}"), little)


def pcap_index(capture: CaptureFile, view: FileView) -> PacketIndex:
    """Every record of a pcap file: a loop finds where each starts (reading only its length); the fields
    are then gathered at once."""
    data, stats = capture.data, capture.stats
    caplen_of = struct.Struct(capture.byte_order + "8xI").unpack_from
    offsets = array("q")
    append = offsets.append
    at, end = 24, len(data)
    while at + 16 <= end:
        append(at)
        at += 16 + caplen_of(data, at)[0]
    if at != end:  # the last record, or its header, runs past the end of the file
        if at > end:
            at = offsets.pop()
        stats["file_truncated_bytes"] += end - at
    records = np.frombuffer(offsets, np.int64)
    field = lambda at: view.field(at, capture.byte_order + "u4")
    n = len(records)
    return PacketIndex(records + 16, field(records + 8), field(records + 12),
                       field(records) * 1_000_000_000 + field(records + 4) * capture.ns_per_fraction, np.zeros(n, np.int64),
                       done((np.zeros(n, np.int8), np.full(n, -1, np.int64))))


def pcapng_index(capture: CaptureFile, view: FileView) -> PacketIndex | None:
    """Every enhanced packet block of a pcapng file (None when it holds obsolete packet blocks, or times
    finer than nanoseconds: the per-packet path reads those). A loop walks the blocks reading only type
    and length; interface blocks are parsed as they come."""
    data, stats = capture.data, capture.stats
    offsets = BlockOffsets()
    sections = [(0, False, 0)]  # (first packet, big-endian, first interface) of each section
    order, at, end = "<", 0, len(data)
    header = {"<": struct.Struct("<II").unpack_from, ">": struct.Struct(">II").unpack_from}
    little_header = header["<"]
    while at + 12 <= end:
        if order == "<":
            at = packet_blocks(view, at, offsets)
            if at + 12 > end:
                break
        block_type, block_len = little_header(data, at)
        if block_type == ng.PCAPNG_BT_SHB:
            bom = little_header(data, at + 8)[0]
            if bom not in (ng.BYTE_ORDER_MAGIC_LE, ng.BYTE_ORDER_MAGIC):
                raise open_error(capture.path, "section header with an unknown byte-order magic")
            order = "<" if bom == LITTLE_ENDIAN_BOM else ">"
            sections.append((len(offsets), order == ">", len(capture.interfaces)))  # interface ids count from 0 again
        block_type, block_len = header[order](data, at)
        if block_len < 12 or block_len % 4 or at + block_len > end:
            break
        if block_type == ng.PCAPNG_BT_EPB:
            offsets.append(at)
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
    if at > end:  # the last block (taken by packet_blocks) runs past the end of the file
        at = offsets.pop()
    if at < end:
        stats["file_truncated_bytes"] += end - at
    if any(i.units_per_second > 10**9 for i in capture.interfaces):
        return None  # finer than nanoseconds: the per-packet path's integers do not overflow
    firsts = np.array([first for first, _, _ in sections] + [len(offsets)], np.int64)
    counts = np.diff(firsts)
    big = np.repeat(np.array([b for _, b, _ in sections], bool), counts)
    base = np.repeat(np.array([i for _, _, i in sections], np.int64), counts)
    return epb_fields(capture, view, offsets.array(), big, base)


class BlockOffsets:
    """Block offsets in file order: runs found at once by the chain (numpy arrays, no Python int per
    block) and single ones from the block-by-block loop."""

    def __init__(self):
        self.runs: list[np.ndarray] = []
        self.singles = array("q")
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def append(self, at: int) -> None:
        self.singles.append(at)
        self.count += 1

    def extend(self, run: np.ndarray) -> None:
        self.flush()
        self.runs.append(run)
        self.count += len(run)

    def flush(self) -> None:
        if self.singles:
            self.runs.append(np.array(self.singles, np.int64))
            self.singles = array("q")

    def pop(self) -> int:
        self.count -= 1
        if self.singles:
            return self.singles.pop()
        last = int(self.runs[-1][-1])
        self.runs[-1] = self.runs[-1][:-1]
        return last

    def array(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.runs) if self.runs else np.zeros(0, np.int64)


def packet_blocks(view: FileView, at: int, offsets: BlockOffsets) -> int:
    """Walk consecutive enhanced packet blocks of a little-endian section from `at`, adding their offsets;
    returns where the walk stopped: another block, a length the per-block path must judge, or the end
    (a last block running past it is left in `offsets`, and dropped by the caller). The chain of blocks
    is found at once (`EpbChain`), so Python runs once per gap in it, not once per packet."""
    chain = view.epb_chain()
    if chain is None:
        return at
    k = int(np.searchsorted(chain.starts, at >> 2))
    if k == len(chain.starts) or chain.starts[k] != at >> 2:
        return at  # no packet block starts here
    while True:
        gap = int(chain.gaps[np.searchsorted(chain.gaps, k)])
        offsets.extend(chain.starts[k : gap + 1] << 2)
        if chain.successor[gap] < 0:
            return int(chain.jumps[gap]) << 2
        k = int(chain.successor[gap])


@dataclass
class EpbChain:
    """Every aligned word of a file that could start an enhanced packet block (the block type, then a
    length of at least 12 that is a multiple of 4, repeated at the block's end), each with where its
    length leads: the word loop `while words[i] == EPB: i += length >> 2` done at once. A candidate inside a packet's bytes is
    jumped over, because a walk only goes from a candidate to the candidate its length names."""

    starts: np.ndarray  # word index of each candidate, ascending
    jumps: np.ndarray  # word index its length leads to
    successor: np.ndarray  # the candidate at that index (its position in `starts`), or -1
    gaps: np.ndarray  # positions whose successor is not the next candidate; the last position is one

    @classmethod
    def of(cls, words: np.ndarray) -> EpbChain:
        count = max(len(words) - 2, 0)  # the loop read two words at i < len - 2
        starts = np.flatnonzero(words[:count] == ng.PCAPNG_BT_EPB)
        lengths = words[starts + 1].astype(np.int64)
        jumps = starts + (lengths >> 2)
        # a block ends with its length again: checking it leaves few candidates inside packets' bytes (a
        # block without it breaks the chain, and the caller's block-by-block loop reads it as before)
        trailer = words[np.clip(jumps - 1, 0, max(len(words) - 1, 0))] if len(words) else lengths
        valid = (lengths >= 12) & (lengths & 3 == 0) & (jumps <= len(words)) & (trailer == lengths)
        starts, jumps = starts[valid], jumps[valid]
        found = np.minimum(np.searchsorted(starts, jumps), max(len(starts) - 1, 0))
        successor = np.where(starts[found] == jumps, found, -1) if len(starts) else found
        gaps = np.flatnonzero(successor != np.arange(1, len(starts) + 1))
        return cls(starts, jumps, successor, gaps)


def epb_fields(capture: CaptureFile, view: FileView, blocks: np.ndarray, big: np.ndarray, base: np.ndarray) -> PacketIndex | None:
    """The fields and options of enhanced packet blocks at `blocks`, gathered at once (None when a time
    does not fit 63 bits: the per-packet path reads such a file)."""
    word = block_words(view, blocks, big)
    interface = base + word(2)
    known = interface < len(capture.interfaces)
    if not known.all():
        capture.stats["pcapng_unknown_interface"] += int((~known).sum())
        blocks, big, interface = blocks[known], big[known], interface[known]
        word = block_words(view, blocks, big)
    ts_high = word(3)
    if (ts_high >= 2**31).any():
        return None
    caplen = word(5)
    units = ts_high << 32 | word(4)
    per_second = np.array([i.units_per_second for i in capture.interfaces], np.int64)[interface]
    offset_ns = np.array([i.offset_ns for i in capture.interfaces], np.int64)[interface]
    options = WORKER.submit(epb_options, view, blocks + 28 + caplen + (-caplen % 4), blocks + word(1) - 4, big)
    return PacketIndex(blocks + 28, caplen, word(6), time_ns(units, per_second) + offset_ns, interface, options)


def block_words(view: FileView, blocks: np.ndarray, big: np.ndarray):
    """word(k): the k-th 32-bit word (k < 7) of each block at `blocks` (4-aligned), in its section's byte
    order, as int64 (0 past the end of the file). The seven header words of every block are gathered in
    one pass over the file (rows of a word view that overlap), not one pass per field."""
    words = view.view("<u4", 0)
    index = blocks >> 2
    if len(index) and int(index.max()) + 7 > len(words):
        return lambda k: either_order(view, blocks + 4 * k, big, 4)
    rows = np.lib.stride_tricks.as_strided(words, (max(len(words) - 6, 0), 7), (4, 4), writeable=False)
    header = rows[index]
    if big.any():
        header = np.where(big[:, None], header.byteswap(), header)
    return lambda k: header[:, k].astype(np.int64)


def time_ns(units: np.ndarray, per_second: np.ndarray) -> np.ndarray:
    """units * 1e9 // per_second without overflowing 64 bits (units of a ns clock are already ~2**60)."""
    if (per_second == 1_000_000_000).all():
        return units
    if (per_second == 1_000_000).all():
        return units * 1_000
    whole, part = np.divmod(units, per_second)
    return whole * 1_000_000_000 + part * 1_000_000_000 // per_second


def epb_options(view: FileView, at: np.ndarray, end: np.ndarray, big: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pkt_type codes (epb_flags) and pcapng_out's latency comments, walking every block's options in step.
    Offsets are 4-aligned (blocks are, and options are padded), and a word read lies before `end`, which
    is inside the file: options are read straight from the file's word view, and the walk keeps only
    the blocks it is still in (their word positions, compressed as blocks finish), not whole-file arrays."""
    n = len(at)
    pkt_type, latency = np.zeros(n, np.int8), np.full(n, -1, np.int64)
    words = view.view("<u4", 0)
    active = np.flatnonzero(at + 4 <= end)
    position, stop = at[active] >> 2, end[active] >> 2  # in words: a header is read while position < stop
    swap = big[active] if big.any() else None
    while len(active):
        header = words[position]  # code and length, read as one word
        if swap is None:
            codes, lengths = header & 0xFFFF, header >> 16
        else:
            header = np.where(swap, header.byteswap(), header)
            codes, lengths = np.where(swap, header >> 16, header & 0xFFFF), np.where(swap, header & 0xFFFF, header >> 16)
        live = codes != 0
        if not live.all():
            active, position, stop, codes, lengths = active[live], position[live], stop[live], codes[live], lengths[live]
            swap = None if swap is None else swap[live]
        is_flags = (codes == EPB_FLAGS_OPTION) & (lengths >= 4)
        if is_flags.any():
            value = words[position[is_flags] + 1]
            if swap is not None:
                value = np.where(swap[is_flags], value.byteswap(), value)
            direction = value & 3
            pkt_type[active[is_flags]] = np.where(direction == 2, PKT_TYPE_CODE["OUTGOING"],
                                                  np.where(direction == 1, EPB_INBOUND_CODES[value >> 2 & 7], 0))
        comments = (codes == COMMENT_OPTION) & (lengths >= len(LATENCY_COMMENT))
        if comments.any():
            chosen = active[comments]
            latency[chosen] = latency_comments(view, (position[comments] + 1) << 2, lengths[comments].astype(np.int64),
                                               latency[chosen])
        position += 1 + ((lengths.astype(np.int64) + 3) >> 2)
        inside = position < stop
        if not inside.all():
            active, position, stop = active[inside], position[inside], stop[inside]
            swap = None if swap is None else swap[inside]
    return pkt_type, latency


def latency_comments(view: FileView, at: np.ndarray, length: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The number in `dnscorrelate latency_ns=N` comments (the others keep `current`), read digit by digit at once.
    Each comment (`length` bytes at `at`, inside the file) is one gather: a row of bytes as wide as the
    prefix and the longest number (rows of a byte view that overlap; a row may run past its comment)."""
    prefix = np.frombuffer(LATENCY_COMMENT, np.uint8)
    count = length - len(prefix)
    width = len(prefix) + min(int(count.max(initial=0)), MAX_LATENCY_DIGITS + 1)
    near_end = at + width > view.size  # the file ends within the row: read one comment at a time below
    rows = np.lib.stride_tricks.as_strided(view.bytes, (max(view.size - width + 1, 0), width), (1, 1), writeable=False)
    row = rows[np.where(near_end, 0, at)] if view.size >= width else np.zeros((len(at), width), np.uint8)
    marked = (row[:, : len(prefix)] == prefix).all(axis=1) & ~near_end
    digits = row[:, len(prefix) :] - np.uint8(ord("0"))
    numeric = (count > 0) & (count <= MAX_LATENCY_DIGITS)
    value = np.zeros(len(at), np.int64)
    for column in range(width - len(prefix)):
        inside = column < count
        digit = digits[:, column]
        numeric &= ~inside | (digit <= 9)  # uint8: a byte below "0" wraps above 9
        value = np.where(inside, value * 10 + digit, value)
    result = np.where(marked, np.where(numeric, value, -1), current)
    for i in np.flatnonzero(near_end).tolist():
        comment = bytes(view.data[at[i] : at[i] + length[i]])
        if comment.startswith(LATENCY_COMMENT):
            number = comment[len(LATENCY_COMMENT) :]
            result[i] = int(number) if 0 < len(number) <= MAX_LATENCY_DIGITS and number.isdigit() else -1
    return result


MAX_LATENCY_DIGITS = 18  # fits int64


def aligned_words(view: FileView, at: np.ndarray) -> np.ndarray:
    """The little-endian 32-bit word at each 4-aligned offset; a word the file's end cuts is read from
    the bytes there are (zeros after)."""
    words = view.field(at, "<u4")
    cut = np.flatnonzero((at + 4 > view.size) & (at < view.size))
    for i in cut.tolist():
        words[i] = int.from_bytes(bytes(view.data[at[i] : view.size]), "little")
    return words


def word_sums(view: FileView, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For each file range [start, end) (in file order, not overlapping), a number congruent modulo
    0xFFFF to the sum of its big-endian 16-bit words (an odd last byte padded with zero): all RFC 1071's
    checksum needs. The range is read as the aligned little-endian 32-bit words that hold it, the bytes
    outside it masked off at both ends; those in between are added by one `np.add.reduceat` (fast on
    aligned memory). Modulo 0xFFFF such a word is its two 16-bit halves added (2**16 = 1), each weighing
    its bytes 1 and 256: as the range's own words do when the range starts at an odd offset, and 256
    times less when it starts at an even one (256 * 256 = 1)."""
    start = np.asarray(start, np.int64)
    end = np.maximum(np.asarray(end, np.int64), start)
    sums = np.zeros(len(start), np.int64)
    if not len(start) or not view.size:
        return sums
    first, last = start & ~3, end & ~3  # the aligned words holding the first byte and the end
    head = aligned_words(view, first)
    head = head >> (8 * (start - first)) << (8 * (start - first))  # bytes before the range off
    tail = aligned_words(view, last) & ((1 << (8 * (end - last))) - 1)  # bytes from the end on off
    one_word = first == last
    head = np.where(one_word, head & ((1 << (8 * (end - first))) - 1), head)
    sums += head + np.where(one_word, 0, tail)
    middle = np.flatnonzero(last > first + 4)
    if len(middle):
        quads = view.view("<u4", 0)
        bounds = np.empty(2 * len(middle), np.int64)
        bounds[0::2], bounds[1::2] = first[middle] // 4 + 1, last[middle] // 4
        at_end = bounds[-1] >= len(quads)  # reduceat takes no index at the end: the last range is summed alone
        found = np.zeros(len(middle), np.uint64)
        if at_end:
            found[-1] = int(quads[bounds[-2] : bounds[-1]].sum(dtype=np.uint64)) % 0xFFFF
            bounds = bounds[:-2]
        if len(bounds):
            found[: len(bounds) // 2] = ranges_summed(quads, bounds)[0::2] % 0xFFFF
        sums[middle] += found.astype(np.int64)
    sums %= 0xFFFF
    return np.where(start % 2 == 0, sums * 256, sums)


SUM_SPAN = 1 << 20  # words per reduceat: its uint64 copy of the input stays 8 MiB, reused, not the file's size


def ranges_summed(quads: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """`np.add.reduceat(quads, bounds, dtype=np.uint64)` over a span of the file at a time: reduceat
    widens its whole input first, and over the mapped file that is a copy twice the file's size whose
    page faults cost more system time than the sums (0.2-0.7 s on the 131 MiB benchmark file)."""
    sums = np.empty(len(bounds), np.uint64)
    i = 0
    while i < len(bounds):
        low = int(bounds[i])
        j = max(int(np.searchsorted(bounds, low + SUM_SPAN)), i + 1)
        high = int(bounds[j]) if j < len(bounds) else len(quads)
        sums[i:j] = np.add.reduceat(quads[low:high], bounds[i:j] - low, dtype=np.uint64)
        i = j
    return sums


@dataclass
class Classified:
    """What the bulk path made of the packets it could read, and which it leaves to the per-packet path."""

    outcome: np.ndarray  # an OUTCOMES code per packet; SLOW: the per-packet path's
    rows: RowColumns  # at most one per packet, in file order
    bad_checksum: Future  # of the count, summed in the WORKER thread
    truncated: int


@dataclass
class Headers:
    """IP and transport fields of every packet (zeros where a layer is not there)."""

    ip: np.ndarray  # file offset of the IP header
    v4: np.ndarray  # IPv4, 20-byte header, whole in the capture
    v6: np.ndarray  # IPv6 header whole in the capture
    proto: np.ndarray
    fragment: np.ndarray
    addresses: np.ndarray  # (N, 2, 16)
    body: np.ndarray  # file offset of the transport header
    body_len: np.ndarray  # transport bytes captured (as the per-packet path slices them)
    expected: np.ndarray  # transport bytes the IP header says


def link_layer(index: PacketIndex, linktypes: np.ndarray, ifindexes: np.ndarray, view: FileView):
    """(outcome so far, the link header's pkt_type (0 where it has none), ifindex, IP offset in the packet,
    whether an IP header is there, the first 8 bytes of the IP header as a big-endian number where one is: 0
    past the end of the file)."""
    n = len(index.data_at)
    start, cap = index.data_at, index.caplen
    linktype = linktypes[index.interface]
    outcome = np.where(np.isin(linktype, list(SUPPORTED_LINKS)), SLOW, UNSUPPORTED).astype(np.int8)
    pkt_type, ifindex = np.zeros(n, np.int8), ifindexes[index.interface]
    ip_off, ethertype = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    ether = (linktype == LINK_ETHERNET) & (cap >= 14)
    ethertype[ether], ip_off[ether] = view.field(start[ether] + 12, ">u2"), 14
    sll = (linktype == LINK_SLL) & (cap >= 16)
    ethertype[sll], ip_off[sll] = view.field(start[sll] + 14, ">u2"), 16
    sll_type = SLL_CODES[np.minimum(view.field(start[sll], ">u2"), 255)]
    pkt_type[sll] = sll_type
    sll2 = (linktype == LINK_SLL2) & (cap >= 20)
    ethertype[sll2], ip_off[sll2] = view.field(start[sll2], ">u2"), 20
    sll2_ifindex = view.field(start[sll2] + 4, ">u4")
    ifindex[sll2] = np.where(sll2_ifindex != 0, sll2_ifindex, ifindex[sll2])
    sll2_type = SLL_CODES[view.bytes[start[sll2] + 10]]
    pkt_type[sll2] = sll2_type
    for _ in range(MAX_VLAN_TAGS):
        tagged = np.flatnonzero(np.isin(ethertype, list(VLAN_TYPES)) & (cap >= ip_off + 4))
        if not len(tagged):
            break
        ethertype[tagged] = view.field(start[tagged] + ip_off[tagged] + 2, ">u2")
        ip_off[tagged] += 4
    carries_ip = np.isin(ethertype, [ETH_IPV4, ETH_IPV6])
    other = (ethertype >= 0) & ~carries_ip & ~np.isin(ethertype, [*VLAN_TYPES, ETH_PPPOE_SESSION])
    outcome[other & (outcome == SLOW)] = NON_IP
    loop = np.isin(linktype, [LINK_NULL, LINK_LOOP]) & (cap >= 5)
    ip_off[loop] = 4
    raw = np.isin(linktype, [*LINK_RAW_ALIASES, LINK_IPV4, LINK_IPV6])
    ip_off[raw] = 0
    at_ip = (carries_ip | loop | raw) & (cap > ip_off) & (ip_off >= 0)
    ip_head = np.zeros(n, np.int64)  # the IP header's first 8 bytes, read once for the network layer too
    ip_head[at_ip] = view.field(start[at_ip] + ip_off[at_ip], ">u8")
    version = ip_head >> 60 & 0xF
    near_end = np.flatnonzero(at_ip & (start + ip_off + 8 > view.size))  # 8 bytes would run past the file: its first byte alone
    version[near_end] = view.bytes[start[near_end] + ip_off[near_end]] >> 4
    not_ip = (loop | raw) & (outcome == SLOW) & ~np.isin(version, [4, 6])
    outcome[not_ip & (at_ip | raw)] = NON_IP  # a loopback or raw frame whose first byte is no IP version
    return outcome, pkt_type, ifindex, ip_off, at_ip & np.isin(version, [4, 6]), ip_head


def network_layer(index: PacketIndex, view: FileView, ip_off: np.ndarray, candidate: np.ndarray, ip_head: np.ndarray) -> Headers:
    """IPv4 with a 20-byte header and IPv6 without extension headers, with the transport bytes behind. The
    header's first 8 bytes (`ip_head`, one gather: each is a pass over the file's pages) hold IPv4's version,
    total length and fragment field, IPv6's version, payload length and next header."""
    n = len(ip_off)
    ip, ip_cap = index.data_at + ip_off, index.caplen - ip_off
    head = np.where(candidate, ip_head, 0)
    first = head >> 56 & 0xFF
    v4 = candidate & (first == 0x45) & (ip_cap >= 20)
    v6 = candidate & (first >> 4 == 6) & (ip_cap >= 40)
    rows4, rows6 = np.flatnonzero(v4), np.flatnonzero(v6)
    ip4, ip6 = ip[rows4], ip[rows6]
    total = np.where(v4, head >> 32 & 0xFFFF, 0)
    fragment = v4 & (head & 0x3FFF != 0)
    proto = np.where(v6, head >> 8 & 0xFF, -1)
    proto[rows4] = view.bytes[ip4 + 9]
    payload_length6 = np.where(v6, head >> 16 & 0xFFFF, 0)
    addresses = np.zeros((n, 2, 16), np.uint8)
    if sys.byteorder == "little":
        # both IPv4 addresses in one 8-byte read, each half written as a word of memory: on a little-endian
        # machine a word read little-endian keeps the file's byte order
        pair = view.field(ip4 + 12, "<u8")
        words = addresses.view(np.uint32)  # (n, 2, 4)
        words[rows4, 0, 0], words[rows4, 1, 0] = pair & 0xFFFFFFFF, pair >> 32
    else:
        addresses[rows4, 0, :4] = view.gather(ip4 + 12, 4)
        addresses[rows4, 1, :4] = view.gather(ip4 + 16, 4)
    addresses[rows6, 0] = view.gather(ip6 + 8, 16)
    addresses[rows6, 1] = view.gather(ip6 + 24, 16)
    header_len = np.where(v6, 40, 20)
    body_end = np.where(v4, np.where(total > 0, np.minimum(total, ip_cap), ip_cap),
                        np.where(payload_length6 > 0, np.minimum(40 + payload_length6, ip_cap), ip_cap))
    body_len = body_end - header_len
    expected = np.where(v4, np.where(total > 0, np.maximum(total - 20, 0), body_len),
                        np.where(payload_length6 > 0, payload_length6, ip_cap - 40))
    return Headers(ip, v4, v6, proto, fragment, addresses, ip + header_len, body_len, expected)


def classify(index: PacketIndex, linktypes: np.ndarray, ifindexes: np.ndarray, all_dns: np.ndarray, dns_ports: frozenset[int],
             view: FileView, verify_checksums: bool) -> Classified:
    """Link, IP and UDP/TCP headers of every packet at once; see the module's docstring."""
    n = len(index.data_at)
    outcome, link_pkt_type, ifindex, ip_off, candidate, ip_head = link_layer(index, linktypes, ifindexes, view)
    h = network_layer(index, view, ip_off, candidate & (outcome == SLOW), ip_head)
    ip_parsed = (h.v4 | h.v6) & ~h.fragment
    udp = ip_parsed & (h.proto == IPPROTO_UDP) & (h.body_len >= 8)
    tcp = ip_parsed & (h.proto == IPPROTO_TCP) & (h.body_len >= 20)
    parsed = udp | tcp
    # the transport header's first 8 bytes in one gather: the ports, then UDP's length and checksum or TCP's sequence number
    head = np.zeros(n, np.int64)
    head[parsed] = view.field(h.body[parsed], ">u8")
    ports = np.stack([head >> 48 & 0xFFFF, head >> 32 & 0xFFFF], axis=1)
    port_list = sorted(dns_ports)
    on_dns_port = parsed & (np.isin(ports[:, 0], port_list) | np.isin(ports[:, 1], port_list) | all_dns[index.interface])
    udp_length = np.where(udp, head >> 16 & 0xFFFF, 0)
    udp_checksum = np.where(udp, head & 0xFFFF, 0)

    outcome[udp & on_dns_port] = DNS_UDP
    outcome[parsed & ~on_dns_port] = NOT_DNS
    # TCP on a DNS port: only streams whose every segment holds exactly one whole message, in sequence
    might_be_tcp = (outcome == SLOW) & ~(ip_parsed & (h.proto != IPPROTO_TCP)) & ~(tcp & on_dns_port)
    tcp_rows, tcp_outcome = tcp_layer(index, view, h, np.flatnonzero(tcp & on_dns_port), ports, head & 0xFFFFFFFF, slow_tcp=might_be_tcp.any())
    outcome[tcp_outcome[0]] = tcp_outcome[1]

    cut = index.caplen < index.wire_len
    verify = verify_checksums & ~cut
    handled = outcome != SLOW
    if verify_checksums:
        bad = WORKER.submit(
            bad_checksums, view, h, handled, handled & (h.v4 | h.v6) & verify,
            udp & verify & (udp_checksum != 0) & (h.body_len >= udp_length) & (udp_length == h.expected),
            tcp & verify & (h.body_len >= h.expected), udp_length)
    else:
        bad = done(0)
    pkt_type = np.where(link_pkt_type != 0, link_pkt_type, index.pkt_type)  # SLL's own word wins over pcapng's flags
    rows = packet_rows(index, view, h, np.flatnonzero(outcome == DNS_UDP), tcp_rows, udp_length, ports, pkt_type, ifindex)
    supported = outcome != UNSUPPORTED
    return Classified(outcome, rows, bad, int((cut & handled & supported).sum()))


def bad_checksums(view: FileView, h: Headers, handled: np.ndarray, *checked) -> int:
    """How many of the packets the bulk path `handled` have a wrong checksum (`checksums_bad`)."""
    return int((checksums_bad(view, h, *checked) & handled).sum())


def tcp_layer(index: PacketIndex, view: FileView, h: Headers, at: np.ndarray, ports: np.ndarray, sequence: np.ndarray, slow_tcp: bool):
    """TCP segments on a DNS port: (the packets that make rows, with their kind; (packets, outcomes)).
    SYN/SYN-ACK/RST without payload and segments without payload need no stream. A stream is read here
    when each of its segments holds one whole message (its length prefix says the segment's length) and
    follows the last in sequence: the reassembler would make exactly those messages and count nothing.
    Any other stream, and every stream when some packet left to the per-packet path may be TCP (a
    fragment, IP options...), stays on the per-packet path."""
    seq = sequence[at]
    offset = (view.bytes[h.body[at] + 12].astype(np.int64) >> 4) * 4
    flags = view.bytes[h.body[at] + 13].astype(np.int64)
    payload_len = np.maximum(h.expected[at] - offset, 0)
    captured = np.maximum(np.minimum(h.expected[at], h.body_len[at]) - offset, 0)
    control = ((flags & (TCP_SYN | TCP_RST)) != 0) & (captured == 0)
    other = ~control & (payload_len == 0)
    segment = ~control & ~other
    kind = np.where(control, np.where(flags & TCP_RST, KIND_RST, np.where(flags & TCP_ACK, KIND_SYNACK, KIND_SYN)), KIND_DNS)
    outcome = np.where(control, TCP_CONTROL, np.where(other, TCP_OTHER, DNS_TCP)).astype(np.int8)
    seg = np.flatnonzero(segment)
    if slow_tcp:
        outcome[seg] = SLOW
        keep = ~segment
        return RowsAt(at[keep & control], kind[keep & control]), (at, outcome)
    payload_at = h.body[at[seg]] + offset[seg]
    prefix = view.field(payload_at, ">u2")
    whole = (captured[seg] == payload_len[seg]) & (payload_len[seg] >= 2) & (prefix + 2 == payload_len[seg])
    stream = stream_codes(index, h, at[seg], ports)
    order = np.lexsort((at[seg], stream))
    s_stream, s_seq, s_len = stream[order], seq[seg][order], payload_len[seg][order]
    first = np.ones(len(order), bool)
    first[1:] = s_stream[1:] != s_stream[:-1]
    follows = np.ones(len(order), bool)
    follows[1:] = s_seq[1:] == (s_seq[:-1] + s_len[:-1]) % 2**32
    fine = np.empty(len(order), bool)
    fine[order] = (first | follows) & whole[order]
    broken_streams = np.unique(stream[~fine])
    slow = np.isin(stream, broken_streams)
    outcome[seg[slow]] = SLOW
    makes_row = control.copy()
    makes_row[seg[~slow]] = True
    return RowsAt(at[makes_row], kind[makes_row]), (at, outcome)


@dataclass
class RowsAt:
    """Packets that make one row each, and the row's kind (KIND_*)."""

    packets: np.ndarray
    kinds: np.ndarray

    def __len__(self) -> int:
        return len(self.packets)


def stream_codes(index: PacketIndex, h: Headers, at: np.ndarray, ports: np.ndarray) -> np.ndarray:
    """One code per (interface, source, source port, destination, destination port)."""
    halves = np.ascontiguousarray(h.addresses[at]).reshape(len(at), 4, 8).view(np.uint64).reshape(len(at), 4)
    columns = [index.interface[at], ports[at, 0], ports[at, 1], *halves.T]
    code = np.zeros(len(at), np.int64)
    for column in columns:
        values, uniques = pd.factorize(column)
        code = pd.factorize(code * max(len(uniques), 1) + values)[0]
    return code


def checksums_bad(view: FileView, h: Headers, v4_header, udp_checked, tcp_checked, udp_length) -> np.ndarray:
    """Whether each packet's checksum is wrong, as the per-packet path tells: the transport checksum
    where it is checked, else the IPv4 header's."""
    n = len(h.ip)
    bad = np.zeros(n, bool)
    checked = udp_checked | tcp_checked
    header = np.flatnonzero(v4_header & h.v4 & ~checked)  # the transport's verdict overrides the header's
    bad[header] = word_sums(view, h.ip[header], h.ip[header] + 20) % 0xFFFF != 0
    checked = np.flatnonzero(checked)
    length = np.where(udp_checked, udp_length, h.expected)[checked]
    # the addresses lie right before the transport header (IPv4 at 12-20, IPv6 at 8-40), an even number of
    # bytes before it: one range holds the pseudo-header's addresses and the segment
    addresses_at = h.ip[checked] + np.where(h.v6[checked], 8, 12)
    pseudo = h.proto[checked] + np.where(h.v6[checked], (length >> 16) + (length & 0xFFFF), length)
    bad[checked] = (pseudo + word_sums(view, addresses_at, h.body[checked] + length)) % 0xFFFF != 0
    return bad


def message_columns(view: FileView, at: np.ndarray, captured: np.ndarray) -> dict:
    """keys, header fields and captured length of the DNS messages starting at file offsets `at`."""
    whole_header = captured >= 12
    head = view.field(at, ">u8")  # id, flags, question count, answer count: one gather
    word = lambda i: np.where(whole_header, head >> (48 - 8 * i), 0).astype(np.uint16)
    return dict(keys=Payloads.in_buffer(view.data, at + 2, np.maximum(captured - 2, 0)), wire_len=np.maximum(captured, 0),
                dns_id=word(0), dns_flags=word(2), ancount=word(6))


def packet_columns(index: PacketIndex, at: np.ndarray, h: Headers, ports: np.ndarray, pkt_type, ifindex, kinds) -> dict:
    m = len(at)
    address_len = np.where(h.v6[at], 16, 4).astype(np.int8)
    return dict(
        ts_ns=index.ts_ns[at], vantage=index.interface[at], pkt_type=pd.Categorical.from_codes(pkt_type[at], categories=PKT_TYPE_CATEGORIES),
        ifindex=ifindex[at], kind=pd.Categorical.from_codes(kinds, categories=KIND_CATEGORIES), family=np.where(h.v6[at], 6, 4).astype(np.int8),
        proto=h.proto[at].astype(np.int16), src=h.addresses[at, 0], dst=h.addresses[at, 1],
        address_len=np.stack([address_len, address_len], axis=1).reshape(m, 2),
        sport=ports[at, 0].astype(np.int32), dport=ports[at, 1].astype(np.int32),
        icmp_type=np.full(m, -1, np.int16), icmp_code=np.full(m, -1, np.int16),
        frame_number=at.astype(np.int64) + 1, latency_ns=index.latency_ns[at],
    )


def packet_rows(index: PacketIndex, view: FileView, h: Headers, udp: np.ndarray, tcp: RowsAt, udp_length, ports, pkt_type,
                ifindex) -> RowColumns:
    """One row per DNS datagram at `udp` and per TCP packet at `tcp` (a control segment, or a segment holding
    one whole message after its length prefix), in file order; DNS header fields read from the file."""
    n = len(index.data_at)
    makes_row, kind_of, udp_packet = np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, bool)
    makes_row[udp], udp_packet[udp] = True, True
    makes_row[tcp.packets], kind_of[tcp.packets] = True, tcp.kinds
    at = np.flatnonzero(makes_row)  # file order, without sorting
    kinds, is_udp = kind_of[at], udp_packet[at]
    offset = np.full(len(at), 8, np.int64)
    tcp_at = np.flatnonzero(~is_udp)  # TCP's data offset, read for its segments alone
    offset[tcp_at] = (view.bytes[h.body[at[tcp_at]] + 12].astype(np.int64) >> 4) * 4 + 2
    is_message = kinds == KIND_DNS
    size = np.where(is_udp, np.maximum(udp_length[at] - 8, 0), np.where(is_message, np.maximum(h.expected[at] - offset, 0), 0))
    captured = np.where(is_udp, np.maximum(np.minimum(udp_length[at], h.body_len[at]) - 8, 0), np.where(is_message, size, -2))
    return RowColumns(**packet_columns(index, at, h, ports, pkt_type, ifindex, kinds),
                      **message_columns(view, h.body[at] + offset, captured),
                      complete=(captured >= size) | ~is_message, size=size.astype(np.int32))


def slow_packet(index: PacketIndex, i: int, data) -> RawPacket:
    """Packet `i` as the per-packet path takes it."""
    at, caplen = int(index.data_at[i]), int(index.caplen[i])
    return RawPacket(int(index.ts_ns[i]), int(index.interface[i]), data[at : at + caplen], int(index.wire_len[i]),
                     PKT_TYPES[index.pkt_type[i]], int(index.latency_ns[i]))


def count_outcomes(stats: Counter, classified: Classified) -> None:
    """The bulk path's share of the `packets_*` counters and the counts beside them (bad checksums come later,
    `classified.bad_checksum`)."""
    counted = np.bincount(classified.outcome, minlength=len(OUTCOMES))
    for code, name in enumerate(OUTCOMES):
        if code != SLOW:
            stats[name] += int(counted[code])
    stats["truncated"] += classified.truncated
