"""The kind nodes' traffic guard and the upstream network's host table (cluster/kind/network.py): rendered,
then loaded into throwaway network namespaces standing in for a node and a pod, where packets to addresses
outside the allowed set must be dropped and counted, and the cluster's own must pass. No cluster needed;
the namespace tests need root, `ip` and `nft`, and send only between namespaces they create (veth pairs;
none is attached to this machine's own namespace)."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from dnscorrelate.cluster.kind.cluster import loopback_resolvers
from dnscorrelate.cluster.kind.network import (GUARD_COUNTERS, GUARD_TABLE, OLD_GUARD_TABLE, guard_rules, guard_script,
                                               upstream_host_rules)

NODES = ["172.18.0.2", "172.18.0.3", "fc00:f853:ccd:e793::2", "172.19.0.2"]
UPSTREAM = "172.19.0.9"
DOCKER_GATEWAY = "172.18.0.1"  # this machine, on kind's network: the old guard let pods reach it


def chain(rules: str, name: str) -> list[str]:
    body = rules.split(f"  chain {name} {{\n", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_the_guard_is_one_inet_table_on_output_and_forward_ending_in_counted_drops():
    rules = guard_rules(NODES, UPSTREAM)
    assert rules.startswith(f"table inet {GUARD_TABLE} {{")
    for hook in ("output", "forward"):
        lines = chain(rules, hook)
        assert lines[0] == f"type filter hook {hook} priority filter - 10; policy accept;"
        assert lines[-2:] == [f'meta nfproto ipv4 counter name "{hook}-ipv4" drop comment "off this machine"',
                              f'meta nfproto ipv6 counter name "{hook}-ipv6" drop comment "off this machine"']
    assert 'oifname "lo" accept' in chain(rules, "output") and 'oifname "lo" accept' not in chain(rules, "forward")
    # the API server's and kubelet's replies only, to connections made to them: kubectl on this machine
    assert "tcp sport { 6443, 10250 } ct state established accept" in chain(rules, "output")
    assert "masquerade" not in rules and "dnat" not in rules  # flanneld and kube-proxy translate; the guard only drops


def test_the_allowed_sets_hold_the_cluster_and_nodes_but_not_dockers_subnet():
    rules = guard_rules(NODES, UPSTREAM)
    allowed4 = rules.split("set allowed-ipv4 {", 1)[1].split("elements = { ", 1)[1].split(" }", 1)[0].split(", ")
    allowed6 = rules.split("set allowed-ipv6 {", 1)[1].split("elements = { ", 1)[1].split(" }", 1)[0].split(", ")
    assert allowed4 == ["10.244.0.0/16", "10.96.0.0/16", "127.0.0.0/8", UPSTREAM, "172.18.0.2", "172.18.0.3", "172.19.0.2"]
    assert allowed6 == ["::1", "fe80::/10", "ff02::/16", "fc00:f853:ccd:e793::2"]
    assert "172.18.0.0/16" not in rules and DOCKER_GATEWAY not in rules


def test_the_script_replaces_the_guard_and_removes_the_old_ipv4_table():
    script = guard_script(NODES, UPSTREAM)
    assert script.startswith("set -e\n")
    assert f"nft delete table ip {OLD_GUARD_TABLE} 2>/dev/null || true" in script
    # declaring the table, deleting it and loading it again is one transaction: no moment without a guard
    assert f"table inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\ntable inet {GUARD_TABLE} {{" in script


def test_the_host_table_closes_the_upstream_bridge_to_this_machine_and_beyond():
    rules = upstream_host_rules("dnsc-x-upstream", "br-0123456789ab")
    assert 'iifname "br-0123456789ab" counter name "input" drop' in rules
    assert 'iifname "br-0123456789ab" oifname != "br-0123456789ab" counter name "forward" drop' in rules
    assert 'iifname "br-0123456789ab" ct state established,related accept' in chain(rules, "input")


@pytest.mark.parametrize(("text", "systemd", "found"), [
    ("nameserver 10.255.255.53\n", False, []),
    ("nameserver 127.0.0.1\nnameserver 10.0.0.2\n", False, ["127.0.0.1"]),
    ("nameserver ::1\n", False, ["::1"]),
    ("nameserver 127.0.0.53\noptions edns0\n", True, []),  # Docker reads systemd-resolved's own list
    ("nameserver 127.0.0.53\n", False, ["127.0.0.53"]),
    ("# nameserver 127.0.0.1\nnameserver fe80::1%eth0\nnameserver bogus\n", False, []),
])
def test_loopback_resolvers_are_the_ones_docker_would_ask_from_this_machines_namespace(text, systemd, found):
    assert loopback_resolvers(text, systemd) == found


# --- the rules at work, in namespaces of our own -------------------------------------------------------

needs_netns = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"),
                                 reason="needs root, ip and nft (network namespaces)")


def sh(*argv: str, netns: str | None = None, input: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, *argv], capture_output=True, text=True, input=input, timeout=30)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


SEND = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
try:
    s.sendto(b"guard-probe", (sys.argv[1], int(sys.argv[2])))
    print("sent")
except PermissionError:
    print("dropped")
"""


def send(netns: str, address: str, port: int = 53) -> str:
    """'sent' or 'dropped' (netfilter refuses a locally sent datagram with EPERM)."""
    return sh(sys.executable, "-c", SEND, address, str(port), netns=netns).strip()


def counters(netns: str) -> dict[str, int]:
    listing = json.loads(sh("nft", "-j", "list", "counters", "table", "inet", GUARD_TABLE, netns=netns))
    return {c["counter"]["name"]: c["counter"]["packets"] for c in listing["nftables"] if "counter" in c}


def arrived(world: str) -> int:
    """UDP datagrams to port 53 that reached the 'world' namespace, whatever their address."""
    listing = json.loads(sh("nft", "-j", "list", "counter", "inet", "seen", "udp53", netns=world))
    return next(c["counter"]["packets"] for c in listing["nftables"] if "counter" in c)


@pytest.fixture
def node_and_pod():
    """A 'node' namespace whose kind network is a veth to a 'world' namespace (the Docker gateway 172.18.0.1,
    the other node 172.18.0.3, and the default route for IPv4 and IPv6, so whatever the guard let out would
    arrive there and be counted), and a 'pod' namespace behind a veth in the pod network; the guard loaded
    on the node."""
    tag = uuid.uuid4().hex[:6]
    node, pod, world = f"dnscg-{tag}-n", f"dnscg-{tag}-p", f"dnscg-{tag}-w"
    for netns in (node, pod, world):
        sh("ip", "netns", "add", netns)
    try:
        for line in [
            f"ip -n {node} link set lo up", f"ip -n {pod} link set lo up", f"ip -n {world} link set lo up",
            f"ip -n {node} link add out0 type veth peer name w0 netns {world}",
            f"ip -n {node} addr add 172.18.0.2/16 dev out0",
            f"ip -n {node} addr add fc00:f853:ccd:e793::2/64 dev out0 nodad",
            f"ip -n {node} link set out0 up",
            f"ip -n {world} addr add 172.18.0.1/16 dev w0",
            f"ip -n {world} addr add 172.18.0.3/16 dev w0",
            f"ip -n {world} addr add fc00:f853:ccd:e793::1/64 dev w0 nodad",
            f"ip -n {world} link set w0 up",
            f"ip -n {node} route add default via 172.18.0.1",
            f"ip -n {node} -6 route add default via fc00:f853:ccd:e793::1",
            f"ip -n {node} link add n0 type veth peer name p0 netns {pod}",
            f"ip -n {node} addr add 10.244.0.1/24 dev n0", f"ip -n {node} link set n0 up",
            f"ip -n {pod} addr add 10.244.0.5/24 dev p0", f"ip -n {pod} link set p0 up",
            f"ip -n {pod} route add default via 10.244.0.1",
            f"ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1",
        ]:
            sh(*line.split())
        sh("nft", "-f", "-", netns=world, input=(
            "table inet seen {\n  counter udp53 { }\n"
            "  chain in { type filter hook prerouting priority raw; udp dport 53 counter name \"udp53\"; }\n}\n"))
        sh("sh", "-c", guard_script(NODES, UPSTREAM), netns=node)
        yield node, pod, world
    finally:
        for netns in (pod, node, world):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@needs_netns
def test_a_nodes_own_packets_leave_only_for_the_cluster(node_and_pod):
    node, _, world = node_and_pod
    before = counters(node)
    assert set(before) == set(GUARD_COUNTERS)
    for allowed in ("172.18.0.3", UPSTREAM, "10.96.0.10"):
        assert send(node, allowed) == "sent", allowed
    assert wait_for(lambda: arrived(world) == 3)  # every one routed out, the world counts them
    assert counters(node) == before
    for outside in ("198.51.100.53", DOCKER_GATEWAY, "10.255.255.53", "2001:db8::53", "fc00:f853:ccd:e793::1"):
        assert send(node, outside) == "dropped", outside
    after = counters(node)
    assert after["output-ipv4"] - before["output-ipv4"] == 3
    assert after["output-ipv6"] - before["output-ipv6"] == 2
    assert after["forward-ipv4"] == before["forward-ipv4"]
    assert arrived(world) == 3


@needs_netns
def test_a_pods_packets_are_forwarded_only_to_the_cluster(node_and_pod):
    node, pod, world = node_and_pod
    assert send(pod, "172.18.0.3") == "sent"  # another node: forwarded onto kind's network
    assert wait_for(lambda: arrived(world) == 1)
    before = counters(node)
    for outside in ("198.51.100.53", DOCKER_GATEWAY):
        assert send(pod, outside) == "sent"  # the pod cannot tell: its node drops it
    assert wait_for(lambda: counters(node)["forward-ipv4"] - before["forward-ipv4"] == 2)
    assert arrived(world) == 1


@needs_netns
def test_loading_the_guard_again_keeps_one_table(node_and_pod):
    node = node_and_pod[0]
    sh("sh", "-c", guard_script(NODES, UPSTREAM), netns=node)
    tables = sh("nft", "list", "tables", netns=node).split("\n")
    assert tables.count(f"table inet {GUARD_TABLE}") == 1


def wait_for(check, timeout_s: float = 3.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
