"""The tracer's record: `struct event` of `bpf/dns_trace.c` as a numpy dtype, what the ring buffer and the node
agents' streams carry and `decode.py` turns into the packet-event table. Compiling and attaching the tracer
is the live capture's (`live/bpf.py`)."""

from __future__ import annotations

import numpy as np

PAYLOAD_MAX = 512  # bytes of each packet kept from its DNS message on (dns_trace.c is compiled with it)

# struct event of dns_trace.c, with C's alignment.
EVENT_DTYPE = np.dtype(
    [
        ("ts_ns", "<u8"), ("latency_ns", "<u8"), ("capture_id", "<u4"), ("ifindex", "<u4"), ("skb_len", "<u4"),
        ("tcp_seq", "<u4"), ("payload_len", "<u2"), ("captured", "<u2"), ("sport", "<u2"), ("dport", "<u2"),
        ("dns_id", "<u2"), ("dns_flags", "<u2"), ("qdcount", "<u2"), ("ancount", "<u2"), ("nscount", "<u2"),
        ("arcount", "<u2"), ("pkt_type", "u1"), ("family", "u1"), ("proto", "u1"), ("kind", "u1"),
        ("icmp_type", "u1"), ("icmp_code", "u1"), ("tcp_flags", "u1"), ("dns_at", "u1"),
        ("saddr", "u1", 16), ("daddr", "u1", 16), ("payload", "u1", PAYLOAD_MAX),
    ],
    align=True,
)
