"""pcap and pcapng files (tcpdump, tshark, dumpcap, dnscap...) into the packet-event table (dnscorrelate/events.py).

    frame, stats = read_pcap("node.pcap", vantage="node/kind-worker")

One module per layer, each a step of the path a packet takes (see README.md in this folder):
`files` (pcap/pcapng container) → `link` → `ip` → `transport` (TCP reassembled by sources/tcp_stream.py,
shared with the eBPF decoder) → `dns` (rows into the events table), driven by `reader`.

`pkt_type` comes from the link layer where it says (SLL/SLL2's packet type, pcapng's epb_flags
direction); elsewhere it is "" (not known). `netns` is 0, `ifindex` is SLL2's interface index or 0.
Nothing is lost silently: every packet read lands in exactly one of the `packets_*` counters of the
stats, and snap-truncated packets, bad checksums (kept: often checksum offload), undecodable payloads
and TCP bytes that never formed a message are counted too.
"""

# Every name the single module pcap.py had, where it lives now (other modules and tests import them from here).
from dnscorrelate.sources.pcap.dns import Row, address_codes, categorical, frame_of_rows, ip_text, response_latency
from dnscorrelate.sources.pcap.files import (
    EPB_FLAGS_OPTION, EPB_RECEPTION, IF_DESCRIPTION_OPTION, IF_NAME_OPTION, IF_TSOFFSET_OPTION, IF_TSRESOL_OPTION,
    LATENCY_COMMENT, LITTLE_ENDIAN_BOM, PCAP_MAGICS, PCAPNG_MAGIC, CaptureFile, Interface, RawPacket, epb_pkt_type,
    interface_of, open_error,
)
from dnscorrelate.sources.pcap.ip import fragment_of, ip_layer, quoted
from dnscorrelate.sources.pcap.link import (
    ETH_IPV4, ETH_IPV6, LINK_ETHERNET, LINK_IPV4, LINK_IPV6, LINK_LOOP, LINK_NULL, LINK_RAW, LINK_RAW_ALIASES, LINK_SLL,
    LINK_SLL2, SLL_PKT_TYPES, SUPPORTED_LINKS, VLAN_TYPES, network_layer,
)
from dnscorrelate.sources.pcap.reader import (
    DEFAULT_PORTS, PACKET_OUTCOMES, WRITER_MARK, PcapReader, PcapResult, read_pcap, read_pcap_detailed,
)
from dnscorrelate.sources.pcap.transport import (
    ICMP_ERRORS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Transport,
    internet_checksum, pseudo_checksum, transport,
)
from dnscorrelate.sources.tcp_stream import TcpStream as Stream, seq_before  # noqa: F401
