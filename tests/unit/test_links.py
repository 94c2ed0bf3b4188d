"""A node skips its copy of what it sends into a veth only where the veth's other end is a captured namespace, and
the pair must name each other (live/links.py); the netlink messages are read as the kernel lays them out."""

import socket
import struct

from dnscorrelate.live.links import (
    IFINFO, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINKINFO, NLMSG_DONE, NLMSG_HEADER, RTM_NEWLINK, RTATTR, attributes_of, copies_into_captured,
    kind_of, messages,
)


def attribute(kind: int, value: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def link_message(index: int, peer: int | None, kind: str) -> bytes:
    body = IFINFO.pack(socket.AF_UNSPEC, 1, index, 0, 0)
    if peer is not None:
        body += attribute(IFLA_LINK, struct.pack("=i", peer))
    body += attribute(IFLA_LINKINFO | 0x8000, attribute(IFLA_INFO_KIND, kind.encode() + b"\0"))  # nested flag set
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_NEWLINK, 2, 1, 0) + body


def test_a_dump_is_read_message_by_message_with_each_links_kind_and_peer():
    data = link_message(7, 2, "veth") + link_message(3, None, "bridge") + NLMSG_HEADER.pack(NLMSG_HEADER.size, NLMSG_DONE, 2, 1, 0)
    read = list(messages(data))
    assert [kind for kind, _ in read] == [RTM_NEWLINK, RTM_NEWLINK, NLMSG_DONE]
    first = dict(attributes_of(read[0][1][IFINFO.size:]))
    assert struct.unpack("=i", first[IFLA_LINK])[0] == 2 and kind_of(first[IFLA_LINKINFO]) == "veth"
    assert kind_of(dict(attributes_of(read[1][1][IFINFO.size:]))[IFLA_LINKINFO]) == "bridge"


def test_only_veths_whose_other_end_is_captured_and_names_them_back_are_skipped():
    node = {11: 2, 12: 2, 13: 2, 14: 5}  # four veths on the node; the pods' ends are all ifindex 2 in their namespaces
    pod = {2: 11}  # captured, and its eth0's peer is the node's 11
    coredns = {2: 12}
    stranger_end = {2: 99}  # captured, but paired with another namespace's 99, not the node's 13
    assert copies_into_captured(node, [pod, coredns, stranger_end]) == {11, 12}
    assert copies_into_captured(node, []) == set()
