"""The pcap/pcapng reader: agreement with tshark on third-party captures, every link type, TCP
reassembly, and every anomaly counted rather than crashing."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import dpkt
import pandas as pd
import pytest

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.pcap import PACKET_OUTCOMES, read_pcap, read_pcap_detailed
from tests import packets as p
from tests.tshark import our_messages, requires_tshark, tshark_messages

REAL_PCAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-pcaps"  # shared/ sits beside the repository
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats"
PORTS = (53, 8053, 15353, 15354)  # tcpdump-dns_tcp_8053.pcap serves DNS on 8053; our loopback fixtures on 15353/15354
T0 = 1_700_000_000_123_456_789


def capture_files() -> list[Path]:
    found = sorted(REAL_PCAPS.glob("*.pcap*")) + sorted(FIXTURES.glob("*.pcap*"))
    return found or [pytest.param(None, marks=pytest.mark.skip(reason=f"no captures in {REAL_PCAPS} or {FIXTURES}"))]


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def assert_accounted(stats: dict) -> None:
    assert stats["packets"] == sum(stats[k] for k in PACKET_OUTCOMES), stats


@requires_tshark
@pytest.mark.parametrize("path", capture_files(), ids=lambda p: getattr(p, "name", "none"))
def test_every_dns_message_agrees_with_tshark(path):
    result = read_pcap_detailed(path, ports=PORTS)
    ours = our_messages(result.frame, result.frame_numbers)
    theirs = tshark_messages(path, PORTS)
    assert theirs, f"tshark sees no DNS in {path.name}"
    assert ours == theirs, f"only tshark: {sorted(theirs - ours)[:5]}; only ours: {sorted(ours - theirs)[:5]}"
    assert_accounted(result.stats)


def test_real_tcp_connection_with_separate_length_prefixes():
    frame, stats = read_pcap(REAL_PCAPS / "dnscap-dnso1tcp.pcap") if REAL_PCAPS.exists() else pytest.skip("no real pcaps")
    assert stats["packets"] == 212
    dns_rows = frame[frame["kind"] == "dns"]
    assert len(dns_rows) == 82 and dns_rows["decoded"].all()
    assert (dns_rows["proto"] == "tcp").all()
    assert list(frame["kind"][:2]) == ["tcp-syn", "tcp-synack"]
    assert stats["tcp_bytes_unreassembled"] == 0
    responses = dns_rows[dns_rows["qr"]]
    assert (responses["latency_ns"] > 0).all()


def test_schema_and_vantage_naming(tmp_path):
    path = write(tmp_path, "mypod.pcap", p.pcap_file(1, [(T0, p.ethernet(p.udp(40000, 53, p.query()))),
                                                           (T0 + 2_000_000, p.ethernet(p.udp(53, 40000, p.response(), src="10.96.0.10", dst="10.244.1.5")))]))
    frame, _ = read_pcap(path, vantage="pod/demo/mypod")
    assert {c: str(t) for c, t in frame.dtypes.items()} == events.COLUMNS
    assert set(frame["vantage"]) == {"demo/mypod"} and set(frame["role"]) == {"pod"}
    assert list(frame["ts_ns"]) == [T0, T0 + 2_000_000]
    assert list(frame["latency_ns"]) == [0, 2_000_000]
    assert list(frame["answers"])[1] == "A 10.96.0.20"
    unnamed, _ = read_pcap(path)
    assert set(unnamed["vantage"]) == {"mypod"} and set(unnamed["role"]) == {"other"}
    node, _ = read_pcap(path, vantage="node/kind-worker")
    assert set(node["vantage"]) == {"kind-worker"} and set(node["role"]) == {"node"}
    replica, _ = read_pcap(path, vantage="coredns/coredns-5d78c9869d-abcde")
    assert set(replica["vantage"]) == {"kube-system/coredns-5d78c9869d-abcde"} and set(replica["role"]) == {"coredns"}


LINK_TYPES = {
    "ethernet": (1, lambda ip: p.ethernet(ip), ""),
    "ethernet-vlan": (1, lambda ip: p.ethernet(ip, vlan=7), ""),
    "sll-outgoing": (113, lambda ip: p.sll(ip, 4), "OUTGOING"),
    "sll2-host": (276, lambda ip: p.sll2(ip, 0, 3), "HOST"),
    "raw": (101, lambda ip: ip, ""),
    "raw-12": (12, lambda ip: ip, ""),
    "null": (0, lambda ip: p.null_loopback(ip), ""),
    "loop": (108, lambda ip: p.null_loopback(ip, big_endian=True), ""),
}


@pytest.mark.parametrize("link", LINK_TYPES)
@pytest.mark.parametrize("family", [4, 6])
def test_each_link_type(tmp_path, link, family):
    linktype, wrap, pkt_type = LINK_TYPES[link]
    addresses = {"src": "fd00::5", "dst": "fd00::a"} if family == 6 else {}
    path = write(tmp_path, "x.pcap", p.pcap_file(linktype, [(T0, wrap(p.udp(40000, 53, p.query(), **addresses)))]))
    frame, stats = read_pcap(path)
    assert len(frame) == 1, stats
    row = frame.iloc[0]
    assert (row.family, row.qname, row.dns_id, row.pkt_type) == (family, "web.demo.svc.cluster.local.", 4660, pkt_type)
    assert row.src_ip == ("fd00::5" if family == 6 else "10.244.1.5")
    assert row.ifindex == (3 if link == "sll2-host" else 0)
    assert stats["bad_checksum"] == 0
    assert_accounted(stats)


def test_ipv6_extension_headers_are_skipped(tmp_path):
    packet = bytearray(p.udp(40000, 53, p.query(), src="fd00::5", dst="fd00::a"))
    hop_by_hop = bytes([17, 0, 1, 4, 0, 0, 0, 0])  # next header UDP, 8 bytes, a PadN option
    packet[6] = 0  # the fixed header's next header: hop-by-hop
    packet[4:6] = (int.from_bytes(packet[4:6], "big") + 8).to_bytes(2, "big")
    path = write(tmp_path, "x.pcap", p.pcap_file(101, [(T0, bytes(packet[:40]) + hop_by_hop + bytes(packet[40:]))]))
    frame, stats = read_pcap(path)
    assert list(frame["qname"]) == ["web.demo.svc.cluster.local."] and stats["bad_checksum"] == 0


def test_tcp_reassembly_across_and_within_segments(tmp_path):
    first, second, third = p.framed(p.query(qid=1)), p.framed(p.query("a.example.", qid=2)), p.framed(p.query("b.example.", qid=3))
    stream = first + second + third
    split = len(first) + 5
    frames = [
        (T0, p.tcp(40000, 53, 100, flags=dpkt.tcp.TH_SYN)),
        (T0 + 1, p.tcp(53, 40000, 900, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, src="10.96.0.10", dst="10.244.1.5")),
        (T0 + 2, p.tcp(40000, 53, 101, stream[:split])),  # one whole message and the start of another
        (T0 + 3, p.tcp(40000, 53, 101, stream[:split])),  # retransmitted
        (T0 + 4, p.tcp(40000, 53, 101 + split, stream[split:])),  # the rest of it, and a third message
        (T0 + 5, p.tcp(40000, 53, 101 + len(stream), flags=dpkt.tcp.TH_RST)),
    ]
    frame, stats = read_pcap(write(tmp_path, "tcp.pcap", p.pcap_file(1, [(t, p.ethernet(f)) for t, f in frames])))
    assert list(frame["kind"]) == ["tcp-syn", "tcp-synack", "dns", "dns", "dns", "tcp-rst"]
    dns_rows = frame[frame["kind"] == "dns"]
    assert list(dns_rows["dns_id"]) == [1, 2, 3]
    assert list(dns_rows["ts_ns"]) == [T0 + 2, T0 + 4, T0 + 4]
    assert list(dns_rows["qname"]) == ["web.demo.svc.cluster.local.", "a.example.", "b.example."]
    assert stats["tcp_retransmissions"] == 1 and stats["tcp_bytes_unreassembled"] == 0
    assert stats["packets_tcp_control"] == 3
    assert_accounted(stats)


def test_tcp_bytes_that_never_form_a_message_are_counted(tmp_path):
    message = p.framed(p.query())
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(1, [(T0, p.ethernet(p.tcp(40000, 53, 1, message[:10])))])))
    assert frame.empty and stats["tcp_bytes_unreassembled"] == 10


def test_snap_truncated_response_keeps_its_question(tmp_path):
    whole = p.ethernet(p.udp(53, 40000, p.response(), src="10.96.0.10", dst="10.244.1.5"))
    cut = whole[: 14 + 28 + 12 + 32 + 6]  # the header, the question and 6 bytes of the answer
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(1, [(T0, cut, len(whole))])))
    assert stats["truncated"] == 1 and stats["bad_checksum"] == 0
    row = frame.iloc[0]
    assert (row.qr, row.qname, row.decoded, row.answers, row["size"]) == (True, "web.demo.svc.cluster.local.", True, "", len(p.response()))


def test_bad_checksum_is_counted_and_the_packet_kept(tmp_path):
    packet = bytearray(p.udp(40000, 53, p.query()))
    packet[26] ^= 0xFF  # the UDP checksum
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(101, [(T0, bytes(packet))])))
    assert stats["bad_checksum"] == 1 and len(frame) == 1


def test_non_dns_non_ip_and_undecodable_are_counted(tmp_path):
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    frames = [
        (T0, p.ethernet(p.udp(40000, 123, b"ntp"))),
        (T0 + 1, arp),
        (T0 + 2, p.ethernet(p.udp(40000, 53, b"\x12\x34garbage"))),
        (T0 + 3, p.ethernet(p.udp(40000, 53, p.query()))[:30]),  # cut inside the IP header
    ]
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(1, frames)))
    assert (stats["packets_not_dns"], stats["packets_non_ip"], stats["packets_dns_udp"], stats["packets_bad_header"]) == (1, 1, 1, 1)
    assert stats["undecodable"] == 1 and not frame.iloc[0].decoded
    assert_accounted(stats)


def test_dns_on_another_port(tmp_path):
    path = write(tmp_path, "x.pcap", p.pcap_file(1, [(T0, p.ethernet(p.udp(40000, 5353, p.query())))]))
    assert read_pcap(path)[0].empty
    assert len(read_pcap(path, ports=(5353,))[0]) == 1


def test_icmp_error_quoting_a_query(tmp_path):
    original = p.udp(40000, 53, p.query())
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + original[:28 + 12]
    packet = p.ipv4("10.96.0.10", "10.244.1.5", 1, icmp)
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(101, [(T0, packet)])))
    row = frame.iloc[0]
    assert (row.kind, row.icmp_type, row.icmp_code, row.src_ip, row.dst_port, row.dns_id) == ("icmp-error", 3, 3, "10.244.1.5", 53, 4660)
    assert stats["packets_icmp_error"] == 1


def test_pcapng_interfaces_direction_and_nanoseconds(tmp_path):
    content = p.pcapng_file(
        [(1, "eth0"), (113, "any")],
        [(0, T0, p.ethernet(p.udp(40000, 53, p.query())), 2), (1, T0 + 7, p.sll(p.udp(53, 40000, p.response(), src="10.96.0.10", dst="10.244.1.5"), 0), None)],
    )
    frame, stats = read_pcap(write(tmp_path, "node.pcapng", content), vantage="node/n1")
    assert list(frame["ts_ns"]) == [T0, T0 + 7]
    assert list(frame["ifname"]) == ["eth0", "any"]
    assert list(frame["pkt_type"]) == ["OUTGOING", "HOST"]
    assert set(frame["vantage"]) == {"n1"}
    assert_accounted(stats)


def test_pcapng_interface_of_another_link_type_is_counted_not_fatal(tmp_path):
    content = p.pcapng_file([(1, "eth0"), (189, "usbmon0")], [(0, T0, p.ethernet(p.udp(40000, 53, p.query())), None), (1, T0 + 1, b"usb", None)])
    frame, stats = read_pcap(write(tmp_path, "x.pcapng", content))
    assert len(frame) == 1 and stats["packets_unsupported_link"] == 1
    assert_accounted(stats)


@pytest.mark.parametrize("content, reason", [
    (b"hello world, not a capture", "unknown magic"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated file header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00", "truncated section header"),
    (p.pcap_file(105, []), "link type 105 is not supported"),
])
def test_bad_files_are_named_in_a_clear_error(tmp_path, content, reason):
    path = write(tmp_path, "bad.pcap", content)
    with pytest.raises(EventsError, match=reason) as caught:
        read_pcap(path)
    assert str(path) in str(caught.value)


def test_file_cut_mid_packet_keeps_what_came_before(tmp_path):
    content = p.pcap_file(1, [(T0, p.ethernet(p.udp(40000, 53, p.query()))), (T0 + 1, p.ethernet(p.udp(40001, 53, p.query())))])
    frame, stats = read_pcap(write(tmp_path, "x.pcap", content[:-10]))
    assert len(frame) == 1 and stats["file_truncated_bytes"] > 0


def test_checksum_matches_dpkts_word_loop():
    import random

    from dnscorrelate.sources.pcap import internet_checksum

    rng = random.Random(12)
    for size in list(range(1, 70)) + [1500, 3041]:
        data = bytes(rng.getrandbits(8) for _ in range(size))
        assert internet_checksum(data) == dpkt.in_cksum(data)
    assert internet_checksum(b"\xff\xff") == 0 and internet_checksum(b"\x00\x01") == 0xFFFE


def fragments_v4(packet: bytes, size: int = 1480) -> list[bytes]:
    """An IPv4 packet cut into fragments of `size` payload bytes (a multiple of 8), as a router would."""
    header, body = bytearray(packet[:20]), packet[20:]
    pieces = []
    for offset in range(0, len(body), size):
        part = body[offset : offset + size]
        h = bytearray(header)
        h[2:4] = (20 + len(part)).to_bytes(2, "big")
        h[6:8] = ((0x2000 if offset + size < len(body) else 0) | offset // 8).to_bytes(2, "big")
        h[10:12] = b"\0\0"
        h[10:12] = dpkt.in_cksum(bytes(h)).to_bytes(2, "big")
        pieces.append(bytes(h) + part)
    return pieces


def fragments_v6(packet: bytes, size: int = 1232) -> list[bytes]:
    fixed, body = bytearray(packet[:40]), packet[40:]
    pieces = []
    for offset in range(0, len(body), size):
        part = body[offset : offset + size]
        h = bytearray(fixed)
        h[6] = 44
        h[4:6] = (8 + len(part)).to_bytes(2, "big")
        more = 1 if offset + size < len(body) else 0
        fragment = bytes([17, 0]) + (offset | more).to_bytes(2, "big") + (0xBEEF).to_bytes(4, "big")
        pieces.append(bytes(h) + fragment + part)
    return pieces


def big_response(qid: int) -> bytes:
    import dns.message
    import dns.rrset

    message = dns.message.make_response(dns.message.make_query("big.example.", "TXT"))
    message.id = qid
    for i in range(12):
        message.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "TXT", f'"{chr(97 + i) * 250}"'))
    return message.to_wire()


def test_fragmented_responses_are_reassembled_as_tshark_does(tmp_path):
    v4 = fragments_v4(p.udp(53, 40000, big_response(7), src="10.96.0.10", dst="10.244.1.5"))
    v6 = fragments_v6(p.udp(53, 40000, big_response(8), src="fd00::a", dst="fd00::5"))
    frames = [(T0 + i, p.ethernet(f)) for i, f in enumerate([v4[1], v4[0], v6[0], v6[1], *v4[2:], *v6[2:]])]
    frames.append((T0 + 99, p.ethernet(fragments_v4(p.udp(53, 40001, big_response(9), src="10.96.0.10", dst="10.244.1.5"))[0])))  # never completed
    path = write(tmp_path, "frag.pcap", p.pcap_file(1, frames))
    result = read_pcap_detailed(path)
    frame, stats = result.frame, result.stats
    assert list(frame["dns_id"]) == [7, 8] and frame["decoded"].all()
    assert frame["answers"].str.count("TXT").tolist() == [12, 12] and list(frame["family"]) == [4, 6]
    assert stats["ip_datagrams_reassembled"] == 2 and stats["ip_fragments_unreassembled"] == 1 and stats["bad_checksum"] == 0
    assert_accounted(stats)
    if shutil.which("tshark"):
        assert our_messages(frame, result.frame_numbers) == tshark_messages(path)


QINQ = [(0x88A8, 421), (0x8100, 785)]


@pytest.mark.parametrize("tags, pppoe", [
    ([(0x8100, 10)], None),
    (QINQ, None),
    ([(0x9100, 7), (0x8100, 8)], None),  # the pre-standard QinQ TPID
    ([], 0x1234),
    (QINQ, 0x1234),  # nDPI's dns.pcap: eth:vlan:vlan:pppoes:ppp:ip:udp:dns
], ids=["802.1q", "qinq", "qinq-9100", "pppoe", "qinq-pppoe"])
def test_vlan_and_pppoe_layers(tmp_path, tags, pppoe):
    query6 = p.udp(40000, 53, p.query(qid=7, qtype="AAAA"), src="fd00::5", dst="fd00::53")
    frames = [(T0, p.tagged_ethernet(p.udp(40000, 53, p.query()), tags, pppoe)),
              (T0 + 5, p.tagged_ethernet(p.udp(53, 40000, p.response(), src="10.96.0.10", dst="10.244.1.5"), tags, pppoe)),
              (T0 + 9, p.tagged_ethernet(query6, tags, pppoe))]
    path = write(tmp_path, "x.pcap", p.pcap_file(1, frames))
    result = read_pcap_detailed(path)
    frame = result.frame
    assert list(frame["dns_id"]) == [4660, 4660, 7] and list(frame["family"]) == [4, 4, 6]
    assert frame["decoded"].all() and frame.iloc[1].latency_ns == 5
    assert result.stats["packets_dns_udp"] == 3
    assert_accounted(result.stats)
    if shutil.which("tshark"):
        assert our_messages(frame, result.frame_numbers) == tshark_messages(path)


def test_pppoe_frames_that_carry_no_ip_are_counted(tmp_path):
    ethernet_header = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    lcp = ethernet_header + struct.pack("!HBBHHH", 0x8864, 0x11, 0, 1, 6, 0xC021) + b"\x01\x01\x00\x04"
    discovery = ethernet_header + struct.pack("!HBBHH", 0x8863, 0x11, 0x09, 0, 0)  # PADI
    cut = ethernet_header + struct.pack("!HBB", 0x8864, 0x11, 0)  # a session header cut short
    padded_ip = p.udp(40000, 53, p.query())
    ppp = struct.pack("!H", 0x0021) + padded_ip
    padded = ethernet_header + struct.pack("!HBBHH", 0x8864, 0x11, 0, 1, len(ppp)) + ppp + b"\0" * 6  # Ethernet padding after
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(1, [(T0, lcp), (T0 + 1, discovery), (T0 + 2, cut), (T0 + 3, padded)])))
    assert (stats["packets_non_ip"], stats["packets_bad_header"], stats["packets_dns_udp"]) == (2, 1, 1)
    assert frame.iloc[0].decoded and stats["bad_checksum"] == 0
    assert_accounted(stats)


def test_icmp_error_quoting_dns_inside_qinq_and_pppoe(tmp_path):
    original = p.udp(40000, 53, p.query())
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + original[:28 + 12]
    packet = p.tagged_ethernet(p.ipv4("10.96.0.10", "10.244.1.5", 1, icmp), QINQ, 0x1234)
    frame, stats = read_pcap(write(tmp_path, "x.pcap", p.pcap_file(1, [(T0, packet)])))
    row = frame.iloc[0]
    assert (row.kind, row.icmp_type, row.src_ip, row.dst_port, row.dns_id) == ("icmp-error", 3, "10.244.1.5", 53, 4660)
    assert stats["packets_icmp_error"] == 1
    assert_accounted(stats)


@pytest.mark.parametrize("name, make", [
    ("looks-like.pcap", lambda frame: p.pcapng_file([(1, "eth0")], [(0, T0, frame, None)])),
    ("looks-like.pcapng", lambda frame: p.pcap_file(1, [(T0, frame)])),
    ("no-extension", lambda frame: p.pcapng_file([(1, "eth0")], [(0, T0, frame, None)])),
])
def test_the_format_comes_from_the_magic_number_not_the_name(tmp_path, name, make):
    frame, stats = read_pcap(write(tmp_path, name, make(p.ethernet(p.udp(40000, 53, p.query())))))
    assert list(frame["dns_id"]) == [4660] and list(frame["ts_ns"]) == [T0]


def third_party_files() -> list[Path]:
    return sorted((REAL_PCAPS.parent / "third-party" / "pcap").glob("*.pcap*"))


def assert_same_as_per_packet(path: Path, ports=PORTS) -> None:
    bulk = read_pcap_detailed(path, ports=ports)
    one_by_one = read_pcap_detailed(path, ports=ports, bulk=False)
    pd.testing.assert_frame_equal(bulk.frame, one_by_one.frame)
    assert bulk.stats == one_by_one.stats
    assert list(bulk.frame_numbers) == list(one_by_one.frame_numbers)


@pytest.mark.parametrize("path", (capture_files() + third_party_files()) or [None], ids=lambda p: getattr(p, "name", "none"))
def test_bulk_path_gives_what_the_per_packet_path_gives(path):
    if path is None:
        pytest.skip("no captures")
    assert_same_as_per_packet(path)


def mixed_capture() -> list[bytes]:
    """Frames that take either path: one-message TCP streams (read in bulk), a stream with a message split
    across segments and one with a retransmission (per packet), control segments, bad checksums, a
    snap-cut datagram, IPv6, VLAN, fragments, ICMP, ARP and frames cut inside their headers."""
    q, r = p.query(), p.response()
    bad_checksum = bytearray(p.udp(40001, 53, q))
    bad_checksum[-1] ^= 0xFF
    bad_ip_header = bytearray(p.udp(40002, 53, q))
    bad_ip_header[10] ^= 0xFF
    bad_ip_header[26:28] = b"\0\0"  # no UDP checksum: the IP header's verdict is the packet's
    split = p.framed(p.query(qid=9))
    fragments = dpkt.ip.IP(p.udp(40003, 53, q + b"\0" * 1200))
    first = bytes(fragments)[:20 + 600]
    first_ip = bytearray(first)
    struct.pack_into("!HHH", first_ip, 2, len(first_ip), 77, 0x2000)  # more fragments
    second_ip = bytearray(bytes(fragments)[:20] + bytes(fragments)[20 + 600 :])
    struct.pack_into("!HHH", second_ip, 2, len(second_ip), 77, 600 // 8)
    return [
        p.ethernet(p.tcp(40010, 53, 100, b"", flags=dpkt.tcp.TH_SYN)),
        p.ethernet(p.tcp(53, 40010, 500, b"", flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, src="10.96.0.10", dst="10.244.1.5")),
        p.ethernet(p.tcp(40010, 53, 101, p.framed(q))),
        p.ethernet(p.tcp(53, 40010, 501, p.framed(r), src="10.96.0.10", dst="10.244.1.5")),
        p.ethernet(p.tcp(40010, 53, 101 + len(p.framed(q)), p.framed(p.query(qid=5)))),
        p.ethernet(p.tcp(40010, 53, 101, p.framed(q))),  # a retransmission: this stream is read per packet
        p.ethernet(p.tcp(40011, 53, 1, split[:7])),
        p.ethernet(p.tcp(40011, 53, 8, split[7:])),
        p.ethernet(p.tcp(40012, 53, 1, b"", flags=dpkt.tcp.TH_ACK)),
        p.ethernet(p.tcp(40013, 443, 1, b"x" * 30)),
        p.ethernet(bytes(bad_checksum)),
        p.ethernet(bytes(bad_ip_header)),
        p.ethernet(p.udp(40004, 53, q), vlan=7),
        p.tagged_ethernet(p.udp(40005, 53, q), [(0x88A8, 1), (0x8100, 2)]),
        p.ethernet(p.udp(40006, 53, p.query(qtype="AAAA"), src="fd00::5", dst="fd00::53")),
        p.ethernet(p.udp(53, 40006, r, src="fd00::53", dst="fd00::5")),
        p.ethernet(bytes(first_ip)),
        p.ethernet(bytes(second_ip)),
        p.ethernet(p.ipv4("10.96.0.10", "10.244.1.5", 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + p.udp(40000, 53, q)[:40])),
        b"\xff" * 12 + b"\x08\x06" + b"\0" * 28,  # ARP
        p.ethernet(p.udp(40007, 53, q))[:30],  # cut inside the UDP header
        p.ethernet(p.udp(40008, 53, q))[:10],  # cut inside the Ethernet header
        p.ethernet(p.udp(40009, 53, q), vlan=3)[:16],  # cut inside the VLAN tag
        p.tagged_ethernet(p.udp(40014, 53, q), [], pppoe_session=1),
        p.ethernet(p.udp(40015, 5353, q)),
    ]


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_bulk_path_on_a_mixed_capture(tmp_path, container):
    frames = mixed_capture()
    snap = [(T0 + i, f) for i, f in enumerate(frames)] + [(T0 + 99, p.ethernet(p.udp(40020, 53, p.response()))[:60], 150)]
    if container == "pcap":
        content = p.pcap_file(1, snap)
    else:
        content = p.pcapng_file([(1, "eth0"), (113, "any")], [(i % 2 * 0, ts, f, 1 if i % 3 else None) for i, (ts, f, *_) in enumerate(snap)]
                                + [(1, T0 + 200, p.sll(p.udp(40030, 53, p.query()), 4), None)])
    path = write(tmp_path, "mixed." + container, content)
    assert_same_as_per_packet(path, ports=(53,))
    result = read_pcap_detailed(path)
    assert result.stats["bad_checksum"] >= 2 and result.stats["packets_dns_tcp"] >= 5 and result.stats["packets_tcp_control"] == 2
    assert_accounted(result.stats)


def test_bulk_checksum_sums_agree_with_the_internet_checksum():
    """word_sums adds many file ranges at once (aligned 32-bit words, then the edge bytes); every range's
    verdict must be the one RFC 1071's checksum of its bytes gives, whatever its alignment and length."""
    import numpy as np

    from dnscorrelate.sources.pcap.bulk import FileView, word_sums
    from dnscorrelate.sources.pcap.transport import internet_checksum

    generator = np.random.default_rng(7)
    data = generator.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    cuts = np.sort(generator.choice(np.arange(1, 4099), 600, replace=False))
    starts, ends = cuts[0::2], cuts[1::2]  # ranges in file order, not overlapping, of every length and alignment
    ends[::7] = starts[::7]  # and some empty
    ends[-1] = len(data)  # and one ending in the file's last, partial, 32-bit word
    sums = word_sums(FileView(data), starts, ends)
    for start, end, total in zip(starts.tolist(), ends.tolist(), sums.tolist()):
        assert (total % 0xFFFF == 0) == (internet_checksum(data[start:end]) == 0)
        assert total % 0xFFFF == int.from_bytes(data[start:end] + b"\0" * ((end - start) % 2), "big") % 0xFFFF


def test_bulk_checksum_sums_agree_when_summed_span_by_span(monkeypatch):
    """The middle words are summed a span of the file at a time (ranges_summed); with spans of a few words
    the ranges meet span boundaries everywhere, and the sums must be those of the whole file at once."""
    import numpy as np

    from dnscorrelate.sources.pcap import bulk

    generator = np.random.default_rng(11)
    data = generator.integers(0, 256, 8191, dtype=np.uint8).tobytes()
    cuts = np.sort(generator.choice(np.arange(1, 8191), 900, replace=False))
    starts, ends = cuts[0::2], cuts[1::2]
    ends[-1] = len(data)
    whole = bulk.word_sums(bulk.FileView(data), starts, ends)
    for span in (1, 3, 16, 100):
        monkeypatch.setattr(bulk, "SUM_SPAN", span)
        assert bulk.word_sums(bulk.FileView(data), starts, ends).tolist() == whole.tolist()


def test_pcapng_block_chain_skips_look_alike_blocks_inside_packets(tmp_path):
    """The bulk path finds enhanced packet blocks by candidates (type word, length, trailer) chained by
    their lengths. Packets whose bytes hold a well-formed look-alike block, a block of another type, and a
    packet block whose trailer is wrong must still give exactly the file's blocks, as a walk would."""
    from collections import Counter

    from dnscorrelate.sources.pcap import bulk
    from dnscorrelate.sources.pcap.files import CaptureFile

    def epb(ts_ns: int, frame: bytes) -> bytes:
        return p.block(6, struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(frame), len(frame)) + p.pad4(frame))

    look_alike = p.block(6, b"\0" * 24)  # a whole enhanced packet block, as a packet's bytes
    frames = [look_alike + p.ethernet(p.udp(40000 + i, 53, p.query(qid=i))) for i in range(8)]
    bad_trailer = bytearray(epb(T0 + 4, frames[4]))
    bad_trailer[-4:] = struct.pack("<I", 0xFFFF)
    content = (p.pcapng_file([(1, "eth0")], []) + b"".join(epb(T0 + i, f) for i, f in enumerate(frames[:4]))
               + p.block(0x0BAD, b"\1\2\3\4") + bytes(bad_trailer) + b"".join(epb(T0 + 5 + i, f) for i, f in enumerate(frames[5:])))
    path = write(tmp_path, "look-alike.pcapng", content)

    expected, at = [], 0  # the walk, block by block
    while at + 12 <= len(content):
        block_type, length = struct.unpack_from("<II", content, at)
        if block_type == 6:
            expected.append(at)
        at += length
    capture = CaptureFile(path, Counter())
    index = bulk.pcapng_index(capture, bulk.FileView(capture.data))
    assert (index.data_at - 28).tolist() == expected and len(expected) == 8
    assert_same_as_per_packet(path, ports=(53,))


@pytest.mark.parametrize("window", [None, (64, 128)], ids=["one-window", "small-windows"])
def test_payload_views_tell_apart_what_bytes_objects_do(monkeypatch, window):
    """The bulk path's payloads are Arrow binary views into the file (inline up to 12 bytes, else a
    prefix, window and offset): their codes must be what factorizing the bytes objects gives, also after
    take and concat with bytes from the per-packet path, and with the file seen through several windows."""
    import numpy as np

    from dnscorrelate.sources.pcap import payloads as pl

    if window:
        monkeypatch.setattr(pl, "WINDOW_STEP", window[0])
        monkeypatch.setattr(pl, "WINDOW_SIZE", window[1])
    generator = np.random.default_rng(3)
    data = generator.integers(0, 4, 600, dtype=np.uint8).tobytes()  # few symbols: many equal strings
    at = generator.integers(0, 560, 400)
    length = np.minimum(generator.integers(0, 40, 400), len(data) - at)  # shorter than a window's step
    extra = [b"", b"\1\2", bytes(range(20)), data[5:30]]
    keys = pl.Payloads.concat([pl.Payloads.in_buffer(data, at, length), pl.Payloads.of_bytes(extra)])
    strings = [data[a : a + n] for a, n in zip(at.tolist(), length.tolist())] + extra
    order = generator.permutation(len(strings))
    for payloads, expected in [(keys, strings), (keys.take(order), [strings[i] for i in order])]:
        codes, distinct = payloads.factorized()
        assert [distinct[c] for c in codes.tolist()] == expected
        assert codes.tolist() == pd.factorize(pd.Series(expected, dtype=object))[0].tolist()


def test_latency_comments_of_any_width_and_at_the_file_end():
    """pcapng_out's latency comments are read for all blocks at once, a row of bytes per comment as wide as
    the longest: a short comment at the very end of the file (its row would run past it), a non-digit, an
    empty number and 18 digits are each read as the per-packet path reads them (the number, or -1); another
    comment leaves the value as it was."""
    import numpy as np

    from dnscorrelate.sources.pcap import bulk
    from dnscorrelate.sources.pcap.files import LATENCY_COMMENT

    body, at, length = b"", [], []
    for comment in [LATENCY_COMMENT + b"123456789012345678", LATENCY_COMMENT + b"5", b"an operator's comment, not ours",
                    LATENCY_COMMENT + b"12a", LATENCY_COMMENT, LATENCY_COMMENT + b"42"]:
        at.append(len(body))
        length.append(len(comment))
        body += comment + b"\0" * (-len(comment) % 4)
    found = bulk.latency_comments(bulk.FileView(body), np.array(at), np.array(length), np.full(len(at), -7))
    assert found.tolist() == [123456789012345678, 5, -7, -1, -1, 42]  # -7: not a latency comment, kept


def test_a_read_puts_numpy_huge_page_advice_back_even_when_it_fails(tmp_path):
    """memory.py turns numpy's huge-page advice off for a read only: after it, and after a read that fails on a file
    that is no capture, the caller's setting is what it was."""
    import numpy as np

    switch = np._core.multiarray._set_madvise_hugepage
    capture = next(iter(sorted(FIXTURES.glob("*.pcap*"))), None)
    if capture is None:
        pytest.skip(f"no captures in {FIXTURES}")
    not_a_capture = tmp_path / "notes.pcap"
    not_a_capture.write_bytes(b"not a capture at all, just text\n" * 4)
    for setting in (True, False):
        switch(setting)
        read_pcap(capture)
        with pytest.raises(EventsError):
            read_pcap(not_a_capture)
        assert switch(True) is setting
