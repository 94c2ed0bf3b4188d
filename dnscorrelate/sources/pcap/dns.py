"""Rows into the packet-event table (dnscorrelate/events.py): DNS fields decoded once per distinct message
(decode.py's `decode_distinct`), text columns made categoricals from their few distinct values, and each
response's latency matched to its query at the same vantage point. The dnstap reader builds its rows here too.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

import dns.rcode
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.sources.decode import decode_coded, decode_keyed, header_fields
from dnscorrelate.sources.pcap.payloads import Payloads
from dnscorrelate.sources.pcap.transport import IPPROTO_TCP, Transport


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


def ip_text(address: bytes) -> str:
    """Text form of a 4- or 16-byte address; "" when the source did not record one (dnstap may not)."""
    return str(ipaddress.ip_address(address)) if address else ""


def categorical(codes: np.ndarray, values) -> pd.Categorical:
    """`values[codes]` as a categorical, made from the few distinct values: no string per row."""
    inverse, uniques = pd.factorize(np.asarray(values, dtype=object))
    return pd.Categorical.from_codes(inverse[codes], categories=pd.Index(uniques, dtype=object))


@dataclass
class RowColumns:
    """Rows as columns: what the per-packet path's `Row`s hold, and what the bulk path gathers straight
    from the file. DNS bytes are kept as `keys` (the message after its id, as `decode_distinct` tells
    messages apart) with the header's fields beside them."""

    ts_ns: np.ndarray
    vantage: np.ndarray  # index into the reader's vantage list
    pkt_type: np.ndarray | pd.Categorical  # str objects, or a categorical of them (bulk path)
    ifindex: np.ndarray
    kind: np.ndarray | pd.Categorical  # str objects, or a categorical of them (bulk path)
    family: np.ndarray
    proto: np.ndarray
    src: np.ndarray  # (N, 16) bytes, IPv4 in the first four
    dst: np.ndarray
    address_len: np.ndarray  # (N, 2): 4, 16, or 0 where the source recorded no address
    sport: np.ndarray
    dport: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    keys: list | Payloads  # the DNS bytes after the id (wire[2:]): bytes objects, or views into the file (bulk path)
    wire_len: np.ndarray  # DNS bytes captured
    dns_id: np.ndarray
    dns_flags: np.ndarray
    ancount: np.ndarray
    complete: np.ndarray
    size: np.ndarray
    frame_number: np.ndarray
    latency_ns: np.ndarray  # the source's own latency for a response; -1: matched here

    def __len__(self) -> int:
        return len(self.ts_ns)

    def take(self, order: np.ndarray) -> RowColumns:
        taken = {name: value[order] for name, value in vars(self).items() if name != "keys"}
        keys = self.keys.take(order) if isinstance(self.keys, Payloads) else [self.keys[i] for i in order.tolist()]
        return RowColumns(keys=keys, **taken)


def padded_addresses(addresses: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16) bytes and each address's length, from 4-, 16- or 0-byte addresses."""
    joined = b"".join(a.ljust(16, b"\0")[:16] for a in addresses)
    return np.frombuffer(joined, np.uint8).reshape(-1, 16).copy(), np.fromiter(map(len, addresses), np.int8, len(addresses))


def columns_of_rows(rows: list[Row]) -> RowColumns:
    """The columns of rows made one at a time (the per-packet path, dnstap)."""
    n = len(rows)
    wires = [r.wire for r in rows]
    heads = header_fields(wires)
    src, src_len = padded_addresses([r.t.src for r in rows])
    dst, dst_len = padded_addresses([r.t.dst for r in rows])
    column = lambda attr, dtype: np.fromiter((getattr(r, attr) for r in rows), dtype=dtype, count=n)
    transport = lambda attr, dtype: np.fromiter((getattr(r.t, attr) for r in rows), dtype=dtype, count=n)
    return RowColumns(
        ts_ns=column("ts_ns", np.int64), vantage=column("vantage", np.int64),
        pkt_type=np.array([r.pkt_type for r in rows], dtype=object), ifindex=column("ifindex", np.int64),
        kind=np.array([r.kind for r in rows], dtype=object), family=transport("family", np.int8), proto=transport("proto", np.int16),
        src=src, dst=dst, address_len=np.stack([src_len, dst_len], axis=1).reshape(n, 2),
        sport=transport("sport", np.int32), dport=transport("dport", np.int32),
        icmp_type=transport("icmp_type", np.int16), icmp_code=transport("icmp_code", np.int16),
        keys=[w[2:] for w in wires], wire_len=np.fromiter(map(len, wires), np.int64, n),
        dns_id=heads["dns_id"], dns_flags=heads["dns_flags"], ancount=heads["ancount"],
        complete=column("complete", bool), size=column("size", np.int32), frame_number=column("frame_number", np.int64),
        latency_ns=column("latency_ns", np.int64),
    )


def concat_columns(parts: list[RowColumns]) -> RowColumns:
    names = [name for name in vars(parts[0]) if name != "keys"]
    joined = {name: np.concatenate([getattr(part, name) for part in parts]) for name in names}
    if any(isinstance(part.keys, Payloads) for part in parts):
        keys = Payloads.concat([part.keys if isinstance(part.keys, Payloads) else Payloads.of_bytes(part.keys) for part in parts])
    else:
        keys = [key for part in parts for key in part.keys]
    return RowColumns(keys=keys, **joined)


def address_codes(columns: RowColumns) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Codes of source and destination addresses into one list of address texts (so they compare), in
    order of first appearance, sources first; each distinct address made text once."""
    n = len(columns)
    both = np.concatenate([columns.src, columns.dst])
    lengths = np.concatenate([columns.address_len[:, 0], columns.address_len[:, 1]]).astype(np.int64)
    codes, first = distinct_addresses(np.ascontiguousarray(both).view(">u8").reshape(-1, 2).astype(np.uint64), lengths)
    texts = [ip_text(bytes(both[i, :length])) for i, length in zip(first.tolist(), lengths[first].tolist())]
    return codes[:n], codes[n:], texts


def distinct_addresses(halves: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A code per address (its two 64-bit halves and its length), in order of first appearance, and the
    first row of each code. IPv4 (and no address) fill only the first half's upper 32 bits, so a capture
    without IPv6 is one hash of one number; otherwise each half is coded first."""
    high, low = halves[:, 0], halves[:, 1]
    if not (low.any() or (high & 0xFFFFFFFF).any()):
        codes, uniques = pd.factorize(high | lengths.astype(np.uint64))
    else:
        code_high, _ = pd.factorize(high)
        code_low, unique_low = pd.factorize(low)
        code_length, unique_length = pd.factorize(lengths)
        codes, uniques = pd.factorize((code_high.astype(np.int64) * len(unique_low) + code_low) * len(unique_length) + code_length)
    first = np.empty(len(uniques), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return codes.astype(np.int64), first


def frame_of_rows(rows: list[Row], vantages: list[tuple], stats: Counter) -> pd.DataFrame:
    """The packet-event table for `rows` (in file order), DNS fields decoded once per distinct message;
    `vantages` holds (vantage, role, ifname[, netns]) for each value of Row.vantage."""
    if not rows:
        return events.empty_events()
    return frame_of_columns(columns_of_rows(rows), vantages, stats)


def frame_of_columns(rows: RowColumns, vantages: list[tuple], stats: Counter) -> pd.DataFrame:
    """`frame_of_rows` for rows already in columns."""
    n = len(rows)
    if not n:
        return events.empty_events()
    kind = rows.kind
    is_dns = kind == "dns"
    has_message = is_dns | ((kind == "icmp-error") & (rows.wire_len >= 12))
    flags = rows.dns_flags.astype(np.int32)
    if isinstance(rows.keys, Payloads):
        distinct, index = decode_coded(*rows.keys.factorized(), rows.complete)
    else:
        distinct, index = decode_keyed(rows.keys, rows.complete)
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
    vantage_index = rows.vantage
    src_codes, dst_codes, addresses = address_codes(rows)
    address_categories = pd.Index(addresses, dtype=object)
    message = lambda values, empty: np.where(has_message, values, empty)
    matched = response_latency(rows.ts_ns.astype(np.int64), is_dns, qr, vantage_index, (rows.proto == IPPROTO_TCP).astype(np.int64),
                               src_codes, rows.sport, dst_codes, rows.dport, rows.dns_id)
    frame = pd.DataFrame(
        {
            "ts_ns": rows.ts_ns.astype(np.int64),
            "netns": np.array([v[3] if len(v) > 3 else 0 for v in vantages], dtype=np.uint64)[vantage_index],
            "vantage": categorical(vantage_index, [v[0] for v in vantages]),
            "role": categorical(vantage_index, [v[1] for v in vantages]),
            "ifindex": rows.ifindex.astype(np.int32),
            "ifname": categorical(vantage_index, [v[2] for v in vantages]),
            "pkt_type": sorted_categorical(rows.pkt_type),
            "kind": sorted_categorical(kind),
            "icmp_type": rows.icmp_type.astype(np.int16),
            "icmp_code": rows.icmp_code.astype(np.int16),
            "proto": categorical((rows.proto == IPPROTO_TCP).astype(np.int64), ["udp", "tcp"]),
            "family": rows.family.astype(np.int8),
            "src_ip": pd.Categorical.from_codes(src_codes, categories=address_categories),
            "src_port": rows.sport.astype(np.int32),
            "dst_ip": pd.Categorical.from_codes(dst_codes, categories=address_categories),
            "dst_port": rows.dport.astype(np.int32),
            "dns_id": message(rows.dns_id.astype(np.int32), -1),
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
            "ancount": message(rows.ancount.astype(np.int32), 0).astype(np.int16),
            "size": rows.size.astype(np.int32),
            "latency_ns": np.where((rows.latency_ns >= 0) & qr, rows.latency_ns, matched),  # a source's own figure wins
            "decoded": ok,
        },
        copy=False,  # fresh arrays: taken, not copied into blocks
    )
    return frame


def sorted_categorical(values: np.ndarray) -> pd.Categorical:
    """A categorical of a few distinct strings, categories sorted (as `pd.Categorical(values)`), hashed once."""
    if isinstance(values, pd.Categorical):
        codes, uniques = values.codes.astype(np.int64), np.asarray(values.categories, dtype=object)
        used = np.flatnonzero(np.bincount(codes, minlength=len(uniques)))  # codes are never -1 here: no missing values
        renumber = np.zeros(len(uniques), np.int64)
        renumber[used] = np.arange(len(used))
        codes, uniques = renumber[codes], uniques[used]
    else:
        codes, uniques = pd.factorize(values)
    order = np.argsort(np.asarray(uniques, dtype=str), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[codes], categories=pd.Index(np.asarray(uniques, dtype=object)[order], dtype=object))


def response_latency(ts, is_dns, qr, vantage, proto, src, sport, dst, dport, dns_id) -> np.ndarray:
    """For each response, the time since the same vantage first saw its query (same tuple reversed, id,
    transport); 0 for queries and for responses whose query this vantage did not see. Keys are integer
    codes (addresses share one code list), made one code per (vantage, proto, client, client port, server,
    server port, id) by hashing, and the first query of each found with numpy: no table join."""
    queries, responses = np.flatnonzero(is_dns & ~qr), np.flatnonzero(is_dns & qr)
    latency = np.zeros(len(ts), np.int64)
    if not len(queries) or not len(responses):
        return latency
    # the query's own tuple, and the response's reversed: client first
    client = np.concatenate([src[queries], dst[responses]]).astype(np.int64)
    server = np.concatenate([dst[queries], src[responses]]).astype(np.int64)
    client_port = np.concatenate([sport[queries], dport[responses]]).astype(np.int64)
    server_port = np.concatenate([dport[queries], sport[responses]]).astype(np.int64)
    rows = np.concatenate([queries, responses])
    # 17 bits each: a port or id of -1 (a source that recorded none) stays apart from 65535
    numbers, distinct_numbers = pd.factorize(proto[rows].astype(np.int64) << 51 | (client_port + 1) << 34 | (server_port + 1) << 17
                                             | (dns_id[rows].astype(np.int64) + 1))
    addresses = int(max(client.max(), server.max())) + 1  # codes into one short list
    vantages = int(vantage.max()) + 1
    if len(distinct_numbers) * addresses * addresses * vantages < 2**62:  # the whole key in one number: one hash
        where = (client * addresses + server) * vantages + vantage[rows]
    else:
        where = pd.factorize(pd.factorize(client << 32 | server)[0].astype(np.int64) * vantages + vantage[rows])[0].astype(np.int64)
    key = pd.factorize(where * len(distinct_numbers) + numbers)[0]
    first = np.full(int(key.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, key[: len(queries)], ts[queries])
    query_ns = first[key[len(queries):]]
    found = query_ns != np.iinfo(np.int64).max
    positions = responses[found]
    latency[positions] = np.maximum(ts[positions] - query_ns[found], 0)
    return latency
