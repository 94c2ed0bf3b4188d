"""Other projects' test captures (shared/data/third-party/pcap, see its PROVENANCE.md): every DNS message
tshark decodes, we decode alike, every packet is accounted for, and the files' known oddities come out
as what they are (QinQ + PPPoE, a pcapng named .pcap, an EDNS extended rcode, DNS UPDATE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnscorrelate.sources.pcap import PACKET_OUTCOMES, read_pcap_detailed
from tests.tshark import our_messages, requires_tshark, tshark_messages

THIRD_PARTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "third-party" / "pcap"  # shared/ sits beside the repository
EXTRA_PORTS = {  # files whose DNS is not on port 53; tshark decodes them as DNS by its own rules
    "OISF-suricata-verify-dns-incomplete-input.pcap": (5353,),  # DNS over TCP on 5353, not mDNS
    "ntop-nDPI-custom_rules_ipv6.pcapng": (5333,),
}


def third_party(name: str | None = None):
    if not THIRD_PARTY.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no third-party captures in {THIRD_PARTY}"))] if name is None else None
    return sorted(f for f in THIRD_PARTY.iterdir() if f.suffix in (".pcap", ".pcapng", ".cap")) if name is None else THIRD_PARTY / name


def read(name: str):
    path = third_party(name)
    if path is None or not path.exists():
        pytest.skip(f"{THIRD_PARTY / name} is not there")
    return read_pcap_detailed(path)


@requires_tshark
@pytest.mark.parametrize("path", third_party(), ids=lambda p: getattr(p, "name", "none"))
def test_every_dns_message_agrees_with_tshark(path):
    ports = (53, *EXTRA_PORTS.get(path.name, ()))
    result = read_pcap_detailed(path, ports=ports)
    ours, theirs = our_messages(result.frame, result.frame_numbers), tshark_messages(path, ports)
    assert ours == theirs, f"only tshark: {sorted(theirs - ours)[:5]}; only ours: {sorted(ours - theirs)[:5]}"
    assert result.stats["packets"] == sum(result.stats[k] for k in PACKET_OUTCOMES), result.stats


def test_ndpi_dns_pcap_is_pcapng_with_a_lookup_inside_qinq_and_pppoe():
    result = read("ntop-nDPI-dns.pcap")  # pcapng despite its name
    frame, stats = result.frame, result.stats
    assert (stats["packets"], stats["packets_dns_udp"]) == (5, 5)
    answered = frame[frame["qr"] & (frame["latency_ns"] > 0)]
    assert sorted(zip(answered["qname"], answered["qtype"])) == [("e7.whatsapp.net.", "A"), ("www.example.com.", "AAAA")]
    lone = frame[frame["qr"] & (frame["latency_ns"] == 0)]  # a response whose query is not in the file
    assert list(zip(lone["qname"], lone["qtype"])) == [("www.l.google.com.", "AAAA")]


def test_edns_extended_rcode_is_the_full_rcode():
    frame = read("zeek-zeek-dns_extended_rcode.pcap").frame
    response = frame[frame["qr"]].iloc[0]
    assert response.rcode == "BADVERS"  # header rcode 0, OPT's extended bits 0x01: 16 (tshark's dns.flags.rcode shows 0)


def test_update_keeps_its_opcode_and_zone():
    frame = read("zeek-zeek-dynamic-update.pcap").frame
    assert list(frame["opcode"]) == [5, 5, 5, 5]  # UPDATE
    assert set(frame["qname"]) == {"stratolab.org."} and set(frame["qtype"]) == {"SOA"}  # the zone section
    assert list(frame[frame["qr"]]["rcode"]) == ["REFUSED", "NOERROR"]
