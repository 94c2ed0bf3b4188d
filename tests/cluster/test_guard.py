"""Nothing a kind cluster sends leaves this machine (issue 23): every route out, tried for real, is dropped
on the node (counted by the guard's counters) or has no route off the upstream's internal network, and
listeners standing where the packets would go see nothing.

Where a packet would go if a guard failed, something of ours listens, and nothing leads further:
- 198.51.100.53 and 2001:db8::53 (documentation ranges) are routed, on this machine and only while the
  tests run, into a network namespace the tests create ("world"), which counts what arrives;
- kind's Docker network gateway and the upstream network's gateway (this machine; the old guard let pods
  reach the first) get a UDP listener on port 5300 (not 53, which kind's nodes DNAT to Docker's DNS).
The routes through Docker's DNS (dnsPolicy Default, the node's own resolver) end at this machine's real
resolver; they are tried only after the node's output hook has been seen dropping (the `dropping` fixture),
and checked by the guard's counters and the nodes' conntrack tables (a dropped packet is never confirmed).
"""

import ipaddress
import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.stream import stream

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.kind.network import GUARD_COUNTERS, GUARD_TABLE, OLD_GUARD_TABLE

OUTSIDE4 = "198.51.100.53"
OUTSIDE6 = "2001:db8::53"
PROBE_PORT = 5300
NAMESPACE = "dnsc-guard-probe"
SEND = """
import errno, socket, sys
for target in sys.argv[1:]:
    address, port = target.rsplit(":", 1)
    address = address.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.socket(family, socket.SOCK_DGRAM).sendto(b"guard-probe", (address, int(port)))
        print(target, "sent")
    except PermissionError:
        print(target, "dropped")  # netfilter refused it on this host
    except OSError as err:
        print(target, "unreachable" if err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else err.strerror)
"""


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    assert done.returncode == 0 or not check, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


# --- where a packet would land ----------------------------------------------------------------------


class World:
    """A network namespace holding OUTSIDE4 and OUTSIDE6, routed to from this machine: what reaches it
    would otherwise have left by the default route. Counts every TCP and UDP packet that arrives."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.netns, self.host_end = f"dnscgw-{tag}", f"dgw{tag}"
        self.routes = [("-4", f"{OUTSIDE4}/32", "169.254.253.2"), ("-6", f"{OUTSIDE6}/128", "2001:db8:ffff::2")]

    def __enter__(self) -> "World":
        sh("ip", "netns", "add", self.netns)
        for line in [
            f"ip link add {self.host_end} type veth peer name w0 netns {self.netns}",
            f"ip addr add 169.254.253.1/30 dev {self.host_end}",
            f"ip addr add 2001:db8:ffff::1/64 dev {self.host_end} nodad",
            f"ip link set {self.host_end} up",
            f"ip -n {self.netns} link set lo up",
            f"ip -n {self.netns} addr add 169.254.253.2/30 dev w0",
            f"ip -n {self.netns} addr add {OUTSIDE4}/32 dev w0",
            f"ip -n {self.netns} addr add 2001:db8:ffff::2/64 dev w0 nodad",
            f"ip -n {self.netns} addr add {OUTSIDE6}/128 dev w0 nodad",
            f"ip -n {self.netns} link set w0 up",
            f"ip -n {self.netns} route add default via 169.254.253.1",
            f"ip -n {self.netns} -6 route add default via 2001:db8:ffff::1",
        ]:
            sh(*line.split())
        for family, prefix, via in self.routes:
            sh("ip", family, "route", "add", prefix, "via", via, "dev", self.host_end)
        sh("ip", "netns", "exec", self.netns, "nft", "-f", "-", input=(
            "table inet seen {\n  counter arrived { }\n"
            '  chain in { type filter hook prerouting priority raw; meta l4proto { tcp, udp } counter name "arrived"; }\n}\n'))
        return self

    def arrived(self) -> int:
        listing = json.loads(sh("ip", "netns", "exec", self.netns, "nft", "-j", "list", "counter", "inet", "seen", "arrived"))
        return next(c["counter"]["packets"] for c in listing["nftables"] if "counter" in c)

    def __exit__(self, *_) -> None:
        for family, prefix, via in self.routes:
            sh("ip", family, "route", "del", prefix, "via", via, "dev", self.host_end, check=False)
        sh("ip", "netns", "del", self.netns, check=False)  # takes the veth with it


class Listener:
    """A UDP socket on this machine at address:PROBE_PORT; counts what it received."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, PROBE_PORT))
        self.sock.setblocking(False)
        self.count = 0

    def received(self) -> int:
        while True:
            try:
                self.sock.recv(4096)
                self.count += 1
            except BlockingIOError:
                return self.count


@pytest.fixture(scope="module")
def docker_client(kind_cluster):
    return kind.docker()


@pytest.fixture(scope="module")
def gateways(kind_cluster, docker_client) -> dict[str, str]:
    """kind's network's and the upstream network's gateways: this machine's addresses on the two bridges."""
    found = {}
    for name in (kind_cluster.network, kind_cluster.upstream_network):
        configs = docker_client.networks.get(name).attrs["IPAM"]["Config"]
        found[name] = next(c["Gateway"] for c in configs if "." in c.get("Gateway", ""))
    return found


@pytest.fixture(scope="module")
def observers(kind_cluster, gateways):
    """The world namespace and a listener on each gateway; fails the test that saw anything arrive."""
    listeners = [Listener(address) for address in gateways.values()]
    with World() as world:
        yield world, listeners
    for listener in listeners:
        listener.sock.close()


def assert_nothing_arrived(observers) -> None:
    world, listeners = observers
    assert world.arrived() == 0, "a packet reached the world namespace: it would have left this machine"
    for listener in listeners:
        assert listener.received() == 0, f"a packet reached this machine at {listener.address}:{PROBE_PORT}"


# --- the guard's counters -----------------------------------------------------------------------------


def guard_counters(docker_client, cluster) -> dict[str, dict[str, int]]:
    """node -> counter -> packets, from each node's guard table."""
    found = {}
    for name, node in kind.node_containers(docker_client, cluster).items():
        code, out = node.exec_run(["nft", "-j", "list", "counters", "table", "inet", GUARD_TABLE])
        assert code == 0, f"{name}: {out.decode()}"
        found[name] = {c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(out)["nftables"] if "counter" in c}
    return found


def grown(before: dict, after: dict) -> dict[str, int]:
    """counter -> packets added, summed over the nodes."""
    return {name: sum(after[node][name] - before[node][name] for node in after) for name in GUARD_COUNTERS}


def host_table_counters(cluster) -> dict[str, int]:
    listing = json.loads(sh("nft", "-j", "list", "counters", "table", "inet", cluster.host_table))
    return {c["counter"]["name"]: c["counter"]["packets"] for c in listing["nftables"] if "counter" in c}


def wait_until(probe, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


# --- pods of our own ------------------------------------------------------------------------------------


def core(cluster):
    return k8s.CoreV1Api(kind.api_client(cluster))


def pod_exec(cluster, namespace: str, pod: str, command: list[str]) -> str:
    return stream(core(cluster).connect_get_namespaced_pod_exec, pod, namespace, command=command,
                  stderr=True, stdin=False, stdout=True, tty=False)


@pytest.fixture(scope="module")
def probe_pods(kind_cluster, kind_build):
    """A hostNetwork pod and a dnsPolicy Default pod, in a namespace of ours removed afterwards."""
    api = core(kind_cluster)
    api.create_namespace({"metadata": {"name": NAMESPACE}})
    base = {"image": kind_build.client_image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}
    pods = {"host": {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, "default-dns": {"dnsPolicy": "Default"}}
    try:
        for name, spec in pods.items():
            api.create_namespaced_pod(NAMESPACE, {"metadata": {"name": name}, "spec": {
                **spec, "terminationGracePeriodSeconds": 1, "containers": [{"name": "main", **base}]}})
        assert wait_until(lambda: all(api.read_namespaced_pod(n, NAMESPACE).status.phase == "Running" for n in pods), 90)
        yield pods
    finally:
        api.delete_namespace(NAMESPACE)


def send_from_pod(cluster, pod: str, *targets: str) -> dict[str, str]:
    out = pod_exec(cluster, NAMESPACE, pod, ["python3", "-c", SEND, *targets])
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


@pytest.fixture(scope="module")
def dropping(kind_cluster, docker_client, probe_pods, gateways, observers):
    """The output hook seen dropping on a node (a hostNetwork pod's datagrams to the world, to both gateways and
    over IPv6), before any test sends along a route that would end at this machine's real resolver."""
    before = guard_counters(docker_client, kind_cluster)
    targets = [f"{OUTSIDE4}:53", *(f"{gw}:{PROBE_PORT}" for gw in gateways.values()), f"[{OUTSIDE6}]:53"]
    results = send_from_pod(kind_cluster, "host", *targets)
    time.sleep(1)
    added = grown(before, guard_counters(docker_client, kind_cluster))
    print(f"\nhostNetwork pod: {results}; guard counters grew by {added}")
    assert_nothing_arrived(observers)
    assert all(results[t] == "dropped" for t in targets[:3]), results
    assert added["output-ipv4"] >= 3
    return results, added


def test_the_guard_is_on_every_node_and_the_upstream_alone_on_an_internal_network(kind_cluster, docker_client, gateways):
    nodes = kind.node_containers(docker_client, kind_cluster)
    assert len(nodes) == 2
    for name, node in nodes.items():
        code, out = node.exec_run(["nft", "list", "tables"])
        tables = out.decode().splitlines()
        assert f"table inet {GUARD_TABLE}" in tables and f"table ip {OLD_GUARD_TABLE}" not in tables, (name, tables)
        assert set(node.attrs["NetworkSettings"]["Networks"]) == {kind_cluster.network, kind_cluster.upstream_network}
    network = docker_client.networks.get(kind_cluster.upstream_network)
    assert network.attrs["Internal"] is True
    upstream = docker_client.containers.get(kind_cluster.upstream_container)
    assert set(upstream.attrs["NetworkSettings"]["Networks"]) == {kind_cluster.upstream_network}
    # Docker 20.10 routes an internal network's containers to its bridge's gateway, this machine, which
    # forwards nothing off that bridge (Docker's isolation rules, and the host table before them)
    assert default_gateways(upstream.attrs["State"]["Pid"]) in ([], [gateways[kind_cluster.upstream_network]])
    assert set(host_table_counters(kind_cluster)) == {"input", "forward"}


def default_gateways(pid: int) -> list[str]:
    """The IPv4 default routes' gateways of a process's network namespace, read from /proc."""
    rows = [line.split() for line in Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]]
    return [str(ipaddress.IPv4Address(int(row[2], 16).to_bytes(4, "little"))) for row in rows if row[1] == "00000000"]


def test_a_hostnetwork_pod_and_ipv6_are_dropped_on_the_node(dropping, kind_cluster, docker_client):
    results, added = dropping
    v6 = results[f"[{OUTSIDE6}]:53"]
    if v6 == "dropped":  # the nodes have IPv6 (kind's network does when Docker allows it): the guard's
        assert added["output-ipv6"] >= 1
    else:  # no IPv6 route on the node: nothing was sent at all
        assert v6 == "unreachable", results
        for name, node in kind.node_containers(docker_client, kind_cluster).items():
            assert "default" not in node.exec_run(["ip", "-6", "route", "show", "default"]).output.decode(), name


def test_a_corefile_forwarding_off_the_machine_sends_nothing_out(kind_cluster, docker_client, gateways, observers):
    from dnscorrelate.cluster.kube.faults import KubeFaults

    faults = KubeFaults(kind.api_client(kind_cluster))
    original = faults.corefile()
    blocks = [f"outside.guard-probe.test:53 {{\n    forward . {OUTSIDE4}\n}}",
              *(f"gw{i}.guard-probe.test:53 {{\n    forward . {gw}:{PROBE_PORT}\n}}" for i, gw in enumerate(gateways.values()))]
    faults.set_corefile(original.rstrip("\n") + "\n" + "\n".join(blocks) + "\n")
    try:
        before = guard_counters(docker_client, kind_cluster)
        for name in ["outside", "gw0", "gw1"]:
            out = pod_exec(kind_cluster, "demo", "mypod", ["dig", "+tries=1", "+timeout=3", f"{name}.guard-probe.test."])
            assert "status: NOERROR" not in out, out
        added = wait_until(lambda: (g := grown(before, guard_counters(docker_client, kind_cluster)))["forward-ipv4"] >= 3 and g)
        print(f"\nCorefile forwarding to {OUTSIDE4} and the gateways: guard counters grew by {added}")
        assert added and added["forward-ipv4"] >= 3
        assert_nothing_arrived(observers)
    finally:
        faults.set_corefile(original)


def test_the_upstreams_own_corefile_reaches_nothing_beyond_its_network(kind_cluster, kind_build, docker_client, gateways,
                                                                      observers, tmp_path):
    """Whatever Corefile the upstream runs (lab.upstreamCorefile on kind): a container like it, on its network,
    forwarding to the world, to either gateway or to Docker's DNS (one container per target, so each count is
    its own), gets nothing out. Its default route leads to this machine, whose host table counts and drops
    what it would forward (the world; this machine's resolver, which Docker's DNS asks from the container's
    namespace) and what would reach this machine's own sockets (both gateways)."""
    kind_gw, internal_gw = gateways[kind_cluster.network], gateways[kind_cluster.upstream_network]
    targets = [("outside", OUTSIDE4, "forward"), ("kindgw", f"{kind_gw}:{PROBE_PORT}", "input"),
               ("internalgw", f"{internal_gw}:{PROBE_PORT}", "input"), ("resolver", "/etc/resolv.conf", "forward")]
    added = {}
    for zone, target, hook in targets:  # the world first: its drop is seen before anything heads for the resolver
        before = host_table_counters(kind_cluster)
        rcode = upstream_like_lookup(kind_cluster, kind_build, docker_client, tmp_path / zone, zone, target)
        now = host_table_counters(kind_cluster)
        added[zone] = {k: now[k] - before[k] for k in now}
        print(f"\nupstream-like container forwarding to {target}: {rcode}; host table grew by {added[zone]}")
        assert rcode != "NOERROR"
        assert added[zone][hook] >= 1, added
        assert_nothing_arrived(observers)


def upstream_like_lookup(cluster, build, docker_client, directory: Path, zone: str, target: str) -> str:
    """The rcode (or 'timeout') of a lookup, sent from this machine, to a container of the upstream's image
    on its network, forwarding `zone` to `target`; the container is removed before this returns."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    directory.mkdir()
    (directory / "Corefile").write_text(f"{zone}.guard-probe.test:53 {{\n    errors\n    forward . {target}\n}}\n")
    probe = docker_client.containers.run(
        build.upstream_image, ["-conf", "/probe/Corefile"], name=f"{cluster.kind_name}-guardprobe", detach=True,
        network=cluster.upstream_network, volumes={str(directory): {"bind": "/probe", "mode": "ro"}},
        labels={kind.LABEL: cluster.name})
    try:
        probe.reload()
        address = probe.attrs["NetworkSettings"]["Networks"][cluster.upstream_network]["IPAddress"]
        assert wait_until(lambda: b"CoreDNS-" in probe.logs()), probe.logs()  # its banner: it listens
        try:
            return dns.rcode.to_text(dns.query.udp(dns.message.make_query(f"{zone}.guard-probe.test.", "A"), address,
                                                   timeout=8).rcode())
        except dns.exception.Timeout:
            return "timeout"
    finally:
        probe.remove(force=True)


def test_a_default_dns_policy_pod_and_the_nodes_own_resolver_reach_no_outside_resolver(
        dropping, kind_cluster, docker_client, gateways, observers):
    kind_gw = gateways[kind_cluster.network]
    resolv = pod_exec(kind_cluster, NAMESPACE, "default-dns", ["cat", "/etc/resolv.conf"])
    assert [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")] == [kind_gw], resolv
    nodes = kind.node_containers(docker_client, kind_cluster)
    outside_resolvers = docker_dns_upstreams()

    before = guard_counters(docker_client, kind_cluster)
    out = pod_exec(kind_cluster, NAMESPACE, "default-dns", ["dig", "+tries=1", "+timeout=6", "pod.guard-probe.example."])
    assert "status: NOERROR" not in out, out
    pod_added = wait_until(lambda: (g := grown(before, guard_counters(docker_client, kind_cluster)))["output-ipv4"] >= 1 and g)

    before = guard_counters(docker_client, kind_cluster)
    for name, node in nodes.items():
        assert node.exec_run(["getent", "hosts", "node.guard-probe.example."]).exit_code != 0, name
        # what kind needs of the node's resolver still works: Docker's DNS answers container names itself
        assert node.exec_run(["getent", "hosts", f"{kind_cluster.kind_name}-control-plane"]).exit_code == 0, name
    node_added = wait_until(lambda: (g := grown(before, guard_counters(docker_client, kind_cluster)))["output-ipv4"] >= 2 and g)
    print(f"\ndnsPolicy Default pod: guard counters grew by {pod_added}; the nodes' own lookups: {node_added}; "
          f"Docker's DNS forwards to {outside_resolvers}")
    assert pod_added and pod_added["output-ipv4"] >= 1
    assert node_added and node_added["output-ipv4"] >= 2
    for name, node in nodes.items():  # a dropped packet is never confirmed into conntrack
        for resolver in outside_resolvers:
            code, out = node.exec_run(["conntrack", "-L", "-d", resolver])
            assert code == 0 and resolver not in out.decode(), (name, out.decode())
    assert_nothing_arrived(observers)


def docker_dns_upstreams() -> list[str]:
    """Where Docker's embedded DNS forwards what it cannot answer: this machine's IPv4 resolvers."""
    found = []
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                if ipaddress.ip_address(fields[1]).version == 4:
                    found.append(fields[1])
            except ValueError:
                pass
    return found


def test_down_removes_the_upstream_network_and_the_host_table(kind_build):
    """Without a cluster (no nodes to attach): what create_upstream_network makes, `down` removes."""
    client = kind.docker()
    made = kind.KindCluster(f"g{uuid.uuid4().hex[:8]}")
    try:
        network = kind.create_upstream_network(client, made)
        assert network.attrs["Internal"] is True
        assert f"table inet {made.host_table}" in sh("nft", "list", "tables").splitlines()
    finally:
        removed = kind.down(made.name)
    assert f"network {made.upstream_network}" in removed and f"nftables table inet {made.host_table}" in removed
    assert not client.networks.list(names=[made.upstream_network])
    assert f"table inet {made.host_table}" not in sh("nft", "list", "tables").splitlines()
