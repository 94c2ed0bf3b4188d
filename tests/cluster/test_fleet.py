"""Issue 22 on the kind cluster: nodes whose clocks disagree, and agents that send only what one pod's trace needs.

kind's nodes share the host's clock, so one node's is made 7 ms ahead by the agent's test-only option
($DNSCORRELATE_TEST_CLOCK_SKEW through `AgentOptions.clock_skews`: that node's agent times its packets, and the
CLI reads its CoreDNS pod's log lines, as such a clock would). mypod runs on the worker and CoreDNS has a
replica on each node, so about half of its lookups cross nodes. A capture on this machine, one clock for all,
runs beside the agents and is the truth the skewed traces are held to."""

import time
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.stream import stream

from dnscorrelate.analysis import analyze
from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.kind.build import agent_image
from dnscorrelate.cluster.kube.agents import AgentOptions
from dnscorrelate.cluster.kube.backend import KubeBackend
from dnscorrelate.live.session import Session
from dnscorrelate.trace import for_client

SKEW_NS = 7_000_000
SEGMENTS = ("to_server_ns", "server_ns", "return_ns", "total_ns")
TWO_CAPTURES_NS = 200_000  # two tracers time one packet apart by a few µs, and each converts boot time to wall time itself


def core(cluster):
    return k8s.CoreV1Api(kind.api_client(cluster))


def dig(cluster, name, pod="mypod"):
    return stream(core(cluster).connect_get_namespaced_pod_exec, pod, "demo",
                  command=["dig", "+short", "+tries=1", "+timeout=3", name], stderr=True, stdin=False, stdout=True, tty=False)


def backend(cluster, **agent):
    options = AgentOptions(built=agent_image(True), source_from_host=True, **agent) if agent else None
    return KubeBackend(str(cluster.kubeconfig), cluster.context, agent=options)


def pod_traces(session: Session, pod_ip: str):
    evidence = session.evidence()
    analysis = for_client(analyze(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats), pod_ip)
    return analysis.correlation


def hops(correlation, trace_id, skip_roles=("upstream",)):
    """The trace's sightings in time order: where, which way, from and to; a sighting repeated at once is one
    (a namespace the local capture attached twice, for a moment, saw the packet twice)."""
    seen = correlation.sightings
    mine = seen[(seen["trace_id"] == trace_id).to_numpy() & ~seen["role"].astype(str).isin(skip_roles).to_numpy()]
    rows = list(zip(mine["vantage"].astype(str), mine["qr"].astype(bool), mine["src_ip"].astype(str), mine["dst_ip"].astype(str)))
    return [row for i, row in enumerate(rows) if i == 0 or row != rows[i - 1]]


def by_name(correlation):
    return {t.qname: t for t in correlation.traces.itertuples()}


def lookups(cluster, count):
    names = [f"skew-{i}-{uuid.uuid4().hex[:6]}.example.org." for i in range(count)] + ["web.demo.svc.cluster.local."]
    for name in names:
        dig(cluster, name)
        time.sleep(0.2)
    return names


def test_a_node_clock_7ms_ahead_is_recovered_within_its_bound_and_hops_keep_their_order_and_segments(kind_cluster):
    pods = {p.metadata.name: p for p in core(kind_cluster).list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items}
    mypod = core(kind_cluster).read_namespaced_pod("mypod", "demo")
    other_nodes = {p.spec.node_name for p in pods.values()} - {mypod.spec.node_name}
    assert other_nodes, "a CoreDNS replica on another node than mypod's: the lookups must cross nodes"
    skewed_node = sorted(other_nodes)[0]
    local = Session(backend(kind_cluster))
    agents = Session(backend(kind_cluster, clients=(mypod.status.pod_ip,), clock_skews={skewed_node: SKEW_NS}))
    local.start()
    try:
        agents.start()
        try:
            names = lookups(kind_cluster, 12)
            time.sleep(1)
        finally:
            agents.stop()
    finally:
        local.stop()
    truth, fixed = pod_traces(local, mypod.status.pod_ip), pod_traces(agents, mypod.status.pod_ip)

    print(f"clocks: {fixed.stats['clocks']}")  # the figure, with -s
    clocks = fixed.stats["clocks"]["nodes"]
    other = mypod.spec.node_name
    recovered = (clocks[skewed_node]["offset_ms"] - clocks[other]["offset_ms"]) * 1e6
    bound = (clocks[skewed_node]["bound_ms"] + clocks[other]["bound_ms"]) * 1e6
    assert abs(recovered - SKEW_NS) <= bound + 2e3, (recovered, bound, fixed.stats["clocks"])
    assert bound < SKEW_NS / 2, fixed.stats["clocks"]  # a bound that says something

    here, there = by_name(truth), by_name(fixed)
    assert set(names) <= set(here) and set(names) <= set(there)
    crossed = 0
    for name in names:
        a, b = here[name], there[name]
        assert (a.outcome, a.rcode, a.server) == (b.outcome, b.rcode, b.server), name
        assert hops(truth, a.trace_id) == hops(fixed, b.trace_id), f"{name}: hops out of order:\n" + "\n".join(map(str, hops(truth, a.trace_id))) + "\n--\n" + "\n".join(map(str, hops(fixed, b.trace_id)))
        crossing = not is_na(b.clock_bound_ns)
        crossed += crossing
        allowed = (int(b.clock_bound_ns) if crossing else 0) + TWO_CAPTURES_NS
        for segment in SEGMENTS:
            got, true = getattr(b, segment), getattr(a, segment)
            if is_na(got):  # left out: only where the bound is wider than the segment itself
                assert crossing and (is_na(true) or abs(int(true)) < allowed), (name, segment, true)
                continue
            assert abs(int(got) - int(true)) <= allowed, (name, segment, got, true, allowed)
        assert joined(b.log_ref) == joined(a.log_ref), f"{name}: the CoreDNS log line joined one and not the other"
    assert crossed >= 2, "some lookups went to the replica on the skewed node"
    assert any(w.startswith("clocks: nodes put on") for w in fixed.warnings)
    # the skewed node's replica stamped its lines 7 ms ahead: they are put back with its packets, on the time line
    # of the reference node (the one with most sightings), which reads 7 ms ahead of the truth when it is the skewed one
    key = ["replica", "remote_port", "id"]
    lines = truth.logs[key + ["ts_ns"]].merge(fixed.logs[key + ["ts_ns"]], on=key, suffixes=("_true", "_fixed"))
    on_skewed = lines["replica"].astype(str).isin([n for n, p in pods.items() if p.spec.node_name == skewed_node])
    assert on_skewed.sum() >= 2, "lines of the skewed node's replica"
    time_line_ahead = SKEW_NS if fixed.stats["clocks"]["reference"] == skewed_node else 0
    moved = (lines["ts_ns_fixed"] - lines["ts_ns_true"] - time_line_ahead).astype(float).abs()
    assert (moved <= bound + TWO_CAPTURES_NS).all(), lines[moved > bound + TWO_CAPTURES_NS]


def joined(value) -> bool:
    return not is_na(value) and value != ""


def is_na(value) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and value != value) or bool(pd.isna(value))


NOISE = """
import time, dns.message, dns.query
names = ["web.demo.svc.cluster.local.", "nosuch.demo.svc.cluster.local.", "kubernetes.default.svc.cluster.local."]
end, i = time.time() + {seconds}, 0
while time.time() < end:
    try:
        dns.query.udp(dns.message.make_query(names[i % 3], "A"), "10.96.0.10", timeout=1)
    except Exception:
        pass
    i += 1
    time.sleep(0.005)
print(i)
"""


def noise_pod(cluster, name):
    """A second client, on whichever node: what the filtered agents must count and not send."""
    mypod = core(cluster).read_namespaced_pod("mypod", "demo")
    core(cluster).create_namespaced_pod("demo", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "dnsc-noise"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "c", "image": mypod.spec.containers[0].image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}]}})
    deadline = time.monotonic() + 90
    while core(cluster).read_namespaced_pod(name, "demo").status.phase != "Running":
        assert time.monotonic() < deadline, "the noise pod did not start"
        time.sleep(0.5)


def test_filtered_agents_give_the_pod_the_traces_of_the_full_stream_and_count_the_rest(kind_cluster):
    import threading

    mypod = core(kind_cluster).read_namespaced_pod("mypod", "demo")
    noise = f"dnsc-noise-{uuid.uuid4().hex[:6]}"
    noise_pod(kind_cluster, noise)
    full = Session(backend(kind_cluster, clients=()))  # the full stream, as --full-stream: every record
    filtered = Session(backend(kind_cluster, clients=(mypod.status.pod_ip,)))
    try:
        full.start()
        try:
            filtered.start()
            try:
                sent = []
                loop = threading.Thread(target=lambda: sent.append(stream(
                    core(kind_cluster).connect_get_namespaced_pod_exec, noise, "demo", command=["python3", "-c", NOISE.format(seconds=8)],
                    stderr=True, stdin=False, stdout=True, tty=False)))
                loop.start()
                names = lookups(kind_cluster, 8)
                loop.join(60)
                time.sleep(1)
            finally:
                filtered.stop()
        finally:
            full.stop()
    finally:
        core(kind_cluster).delete_namespaced_pod(noise, "demo", grace_period_seconds=0)
    whole, only = pod_traces(full, mypod.status.pod_ip), pod_traces(filtered, mypod.status.pod_ip)
    here, there = by_name(whole), by_name(only)
    assert set(names) <= set(here) and set(here) == set(there)
    for name, a in here.items():
        b = there[name]
        assert (a.outcome, a.rcode, a.server, a.served_from, a.dnat_to) == (b.outcome, b.rcode, b.server, b.served_from, b.dnat_to), name
        assert hops(whole, a.trace_id, ()) == hops(only, b.trace_id, ()), name
        assert len(whole.upstream[whole.upstream["trace_id"] == a.trace_id]) == len(only.upstream[only.upstream["trace_id"] == b.trace_id]), name
    assert int(sent[0].strip()) > 300, "the other pod's lookups ran"
    s_full, s_only = full.stats, filtered.stats
    print(f"full: {s_full['records_received']} records, {s_full['bytes_received']} bytes; filtered: {s_only['records_received']} "
          f"records, {s_only['bytes_received']} bytes, {s_only['records_filtered']} records of other lookups counted")
    assert s_only["records_filtered"] > 0 and s_only["lost_samples"] == 0
    assert s_only["records_received"] < s_full["records_received"] / 3
