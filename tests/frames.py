"""Crafting packets and tracer records for tests: Ethernet/IPv4/IPv6 (with extension headers)/UDP/TCP/ICMP."""

import ipaddress
import struct

import dns.message
import numpy as np

from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX

UDP, TCP, ICMP, ICMPV6 = 17, 6, 1, 58


def query(name="example.com.", rdtype="A", qid=0x1234) -> bytes:
    message = dns.message.make_query(name, rdtype)
    message.id = qid
    return message.to_wire()


def response(name="example.com.", address="192.0.2.10", qid=0x1234, rcode=0) -> bytes:
    message = dns.message.make_response(dns.message.make_query(name, "A"))
    message.id = qid
    message.set_rcode(rcode)
    if address:
        message.answer.append(dns.rrset.from_text(name, 30, "IN", "A", address))
    return message.to_wire()


def udp(sport, dport, payload) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, payload, seq=1000, flags=0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def ipv4(src, dst, proto, l4, frag=0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, frag, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + l4


def ipv6(src, dst, proto, l4, extensions=()) -> bytes:
    """IPv6 with extension headers given as (type, body) pairs, body padded to 8-byte units."""
    chain = [*(t for t, _ in extensions), proto]
    headers = b""
    for i, (_, body) in enumerate(extensions):
        nxt = chain[i + 1]
        if chain[i] == 44:  # fragment header: fixed 8 bytes
            headers += struct.pack("!BB", nxt, 0) + body[:6].ljust(6, b"\0")
            continue
        padded = body.ljust(((len(body) + 2 + 7) // 8) * 8 - 2, b"\0")
        units = (len(padded) + 2) // 4 - 2 if chain[i] == 51 else (len(padded) + 2) // 8 - 1  # AH counts 4-byte units
        headers += struct.pack("!BB", nxt, units) + padded
    payload = headers + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), chain[0], 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def ether(l3, ethertype=0x0800) -> bytes:
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", ethertype) + l3


def record(payload: bytes, *, capture_id=1, ts=1_000, src="10.244.0.4", dst="10.96.0.10", sport=40000, dport=53,
           proto=UDP, family=4, seq=0, latency=0, kind=0, pkt_type=4, ifindex=2, payload_len=None, dns_at=None) -> bytes:
    """One tracer record, as dns_trace.c would emit it for `payload` (the L4 payload)."""
    r = np.zeros(1, dtype=EVENT_DTYPE)[0]
    at = (2 if proto == TCP and kind == 0 else 0) if dns_at is None else dns_at
    head = payload[at: at + 12]
    if len(head) == 12:
        qid, flags, qd, an, ns, ar = struct.unpack("!6H", head)
        r["dns_id"], r["dns_flags"], r["qdcount"], r["ancount"], r["nscount"], r["arcount"] = qid, flags, qd, an, ns, ar
    r["ts_ns"], r["latency_ns"], r["capture_id"], r["ifindex"] = ts, latency, capture_id, ifindex
    r["tcp_seq"], r["payload_len"] = seq, len(payload) if payload_len is None else payload_len
    r["captured"] = min(len(payload), PAYLOAD_MAX)
    r["sport"], r["dport"], r["pkt_type"], r["family"], r["proto"], r["kind"], r["dns_at"] = sport, dport, pkt_type, family, proto, kind, at
    r["saddr"][: 16 if family == 6 else 4] = np.frombuffer(ipaddress.ip_address(src).packed, np.uint8)
    r["daddr"][: 16 if family == 6 else 4] = np.frombuffer(ipaddress.ip_address(dst).packed, np.uint8)
    r["payload"][: r["captured"]] = np.frombuffer(payload[:PAYLOAD_MAX], np.uint8)
    return r.tobytes()
