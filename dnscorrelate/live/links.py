"""Which of a namespace's interfaces are one end of a veth pair whose other end is in another captured namespace.

A node's capture skips its copy of what it sends into such a veth (live/capture.py `skip_copies`): the namespace at
the other end records the packet as it arrives, a microsecond later, byte for byte.

One rtnetlink dump a namespace (RTM_GETLINK): each interface's index and, for a veth, its peer's index
(IFLA_LINK). Written against the kernel's ABI here rather than with pyroute2: it is one request and two
attributes, and the node agent's image carries no more dependencies than it needs."""

from __future__ import annotations

import socket
import struct

from dnscorrelate.live import nsenter

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_LINK, IFLA_LINKINFO, IFLA_INFO_KIND = 5, 18, 1
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
RTATTR = struct.Struct("=HH")  # length, type


def veth_peers(netns_path: str) -> dict[int, int]:
    """{ifindex: the ifindex of its peer, in the peer's namespace} of the veths in the namespace at `netns_path`."""
    with nsenter.entered_path(netns_path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    with sock:
        request = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        peers: dict[int, int] = {}
        while True:
            data = sock.recv(1 << 16)
            for kind, body in messages(data):
                if kind == NLMSG_DONE:
                    return peers
                if kind == NLMSG_ERROR:
                    raise OSError(-struct.unpack_from("=i", body)[0], "RTM_GETLINK failed")
                if kind == RTM_NEWLINK:
                    index, attributes = IFINFO.unpack_from(body)[2], dict(attributes_of(body[IFINFO.size:]))
                    if IFLA_LINK in attributes and kind_of(attributes.get(IFLA_LINKINFO, b"")) == "veth":
                        peers[index] = struct.unpack_from("=i", attributes[IFLA_LINK])[0]


def messages(data: bytes):
    """(type, body) of each netlink message in one read."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind = NLMSG_HEADER.unpack_from(data, offset)[:2]
        if length < NLMSG_HEADER.size:
            return
        yield kind, data[offset + NLMSG_HEADER.size: offset + length]
        offset += (length + 3) & ~3


def attributes_of(data: bytes):
    """(type, value) of each route attribute in `data`."""
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            return
        yield kind & 0x3FFF, data[offset + RTATTR.size: offset + length]  # without the nested and byte-order flags
        offset += (length + 3) & ~3


def kind_of(link_info: bytes) -> str:
    """IFLA_INFO_KIND inside IFLA_LINKINFO: veth, bridge, vxlan, …"""
    value = dict(attributes_of(link_info)).get(IFLA_INFO_KIND, b"")
    return value.rstrip(b"\0").decode(errors="replace")


def copies_into_captured(node: dict[int, int], captured: list[dict[int, int]]) -> set[int]:
    """The node's veths (`node`: veth_peers of its namespace) whose other end is in one of the `captured` namespaces:
    the pair matches both ways (the node's veth names the namespace's interface as its peer, and that one names it)."""
    return {index for index, peer in node.items() for other in captured if other.get(peer) == index}
