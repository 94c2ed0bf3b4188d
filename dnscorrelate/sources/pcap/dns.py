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
from dnscorrelate.sources.decode import decode_distinct, header_fields
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
