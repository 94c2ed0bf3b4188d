"""The node agent without a cluster: its stream (encoding, decoding in any pieces, several nodes on one time
line), loss accounting, the agent's loop over a stand-in capture, how it stops, and its manifest."""

import contextlib
import io
import os
import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from dnscorrelate.cluster.kube import agent as node_agent
from dnscorrelate.cluster.kube.agents import fatal_reason, image_on_every_node
from dnscorrelate.errors import CaptureError
from dnscorrelate.report.text import node_lines
from dnscorrelate.live.agent_stream import MAGIC, NodeStream, StreamWriter, bounded, events_of, merged_stats
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX
from dnscorrelate.sources.decode import Vantage, decode
from tests.frames import query, record, response

VANTAGES = {1: Vantage(4026531840, "demo/mypod", "pod", {2: "eth0"}), 2: Vantage(4026531841, "kind-worker", "node", {1: "lo"})}
SIZE = EVENT_DTYPE.itemsize


def lookup(name="a.example.org.", qid=0x1234, ts=1_000, node_id=2):
    """A query and its response at the pod, and the query at the node."""
    return (record(query(name, qid=qid), ts=ts) + record(query(name, qid=qid), ts=ts + 10, capture_id=node_id, pkt_type=0)
            + record(response(name, qid=qid), ts=ts + 500, src="10.96.0.10", dst="10.244.0.4", sport=53, dport=40000,
                     latency=500, pkt_type=0))


def stream_bytes(raw, vantages=VANTAGES, boot_to_wall=10**18, end=True, stats=None):
    out = io.BytesIO()
    writer = StreamWriter(out)
    writer.hello(node="kind-worker", version="test", boot_to_wall_ns=boot_to_wall)
    for cid, v in vantages.items():
        writer.vantage(cid, v)
    writer.records(raw)
    if stats is not None:
        writer.stats(stats)
    if end:
        writer.end(stats or {"events": len(raw) // SIZE, "lost_samples": 0})
    return out.getvalue(), writer


def fed(data, node="kind-worker", piece=None):
    stream = NodeStream(node)
    for start in range(0, len(data), piece or len(data) or 1):
        stream.feed(data[start:start + (piece or len(data))])
    stream.close()
    return stream


@pytest.mark.parametrize("piece", [None, 1, 7, 4096])
def test_a_streamed_capture_decodes_to_the_frame_a_local_capture_gives(piece):
    raw = lookup() + lookup("b.example.org.", qid=7, ts=5_000)
    data, writer = stream_bytes(raw)
    stream = fed(data, piece=piece)
    local, _ = decode(raw, VANTAGES, 10**18)
    pd.testing.assert_frame_equal(stream.events(), local)
    assert stream.ended and not stream.cut and stream.error is None
    assert writer.records_sent == 6 and stream.stats()["records_received"] == 6
    assert len(data) < len(raw) / 3  # records travel compressed: the payload area is mostly zeros


def test_nodes_join_one_time_line_each_by_its_own_clock():
    worker = {3: Vantage(11, "kube-system/coredns-0", "coredns")}
    a = fed(stream_bytes(record(query(), ts=1_000), boot_to_wall=10**18)[0], "cp")
    b = fed(stream_bytes(record(query(), ts=1_000, capture_id=3), vantages=worker, boot_to_wall=10**18 - 600)[0], "worker")
    frame = events_of([a, b])
    assert list(frame["vantage"]) == ["kube-system/coredns-0", "demo/mypod"]  # the worker's clock is 600 ns behind
    assert list(frame["ts_ns"]) == [10**18 + 400, 10**18 + 1_000]


def test_new_events_hands_out_each_packet_once_while_the_stream_runs():
    first, _ = stream_bytes(lookup(), end=False)
    stream = NodeStream("n")
    stream.feed(first)
    assert len(stream.new_events()) == 3 and len(stream.new_events()) == 0
    more = io.BytesIO()
    writer = StreamWriter(more)
    writer.records(lookup("c.example.org.", qid=9, ts=9_000))
    stream.feed(more.getvalue()[len(MAGIC):])
    assert list(stream.new_events()["qname"].unique()) == ["c.example.org."]


def test_loss_is_counted_per_node_ring_buffer_and_agent_together_and_a_cut_stream_says_so():
    whole = fed(stream_bytes(lookup(), stats={"events": 10, "lost_samples": 3, "agent_dropped": 2})[0], "cp")
    cut = fed(stream_bytes(lookup(), end=False, stats={"events": 4, "lost_samples": 1})[0], "worker")
    stats = merged_stats([whole, cut])
    assert stats["nodes"]["cp"]["lost_samples"] == 5 and stats["nodes"]["cp"]["agent_dropped"] == 2
    assert stats["nodes"]["worker"]["stream_cut"] and not stats["nodes"]["cp"]["stream_cut"]
    assert (stats["lost_samples"], stats["events"], stats["records_received"]) == (6, 14, 6)
    lines = node_lines(stats["nodes"])
    assert "lost_samples=5" in lines[0] and "(complete)" in lines[0]
    assert "stream cut short" in lines[1]


def test_bounded_keeps_the_newest_whole_records_and_counts_the_rest():
    batches = [b"a" * SIZE, b"b" * SIZE * 2, b"c" * SIZE]
    kept, dropped = bounded(batches, SIZE * 2 + SIZE // 2)
    assert [bytes(batch) for batch in kept] == [b"b" * SIZE, b"c" * SIZE] and dropped == 2
    assert bounded(batches, 10 * SIZE) == (batches, 0)
    assert bounded(batches, SIZE // 2) == ([], 4)
    rows = np.frombuffer(b"".join(batches), EVENT_DTYPE)  # rows read in place from the ring: cut by rows
    kept, dropped = bounded([rows[:1], rows[1:]], SIZE * 2 + SIZE // 2)
    assert [bytes(batch) for batch in kept] == [b"b" * SIZE + b"c" * SIZE] and dropped == 2


def test_output_that_is_not_a_stream_is_a_clear_error_not_a_crash():
    stream = fed(b"Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'dnscorrelate'\n")
    assert "not a dnscorrelate agent stream" in stream.error and "ModuleNotFoundError" in stream.error
    assert stream.stats()["bad_frames"] == 1 and len(stream.events()) == 0


def test_an_agent_of_another_record_layout_is_refused():
    out = io.BytesIO()
    StreamWriter(out).hello(node="n", version="0.0.1", record_size=SIZE + 8)
    stream = fed(out.getvalue())
    assert "records are" in stream.error and "same version" in stream.error


def test_records_of_a_namespace_never_announced_are_counted_and_left_out():
    raw = lookup() + record(query("x.example.org."), capture_id=9)
    stream = fed(stream_bytes(raw)[0])
    assert stream.stats()["bad_records"] == 1 and "x.example.org." not in set(stream.events()["qname"])


class StandInCapture:
    """What the agent uses of `live.capture.Capture`, fed by the test instead of the kernel."""

    def __init__(self, targets, ports, watch, read_every_s=None):
        self.targets, self.ports, self.watch = targets, ports, watch
        self.read_every_s = read_every_s
        self.vantages, self.raw = {}, []
        self.boot_to_wall, self.compile_seconds, self.attach_seconds = 10**18, 0.5, 0.001
        self.tracer_kind = "core"
        self.lost = 0
        self.stopped = threading.Event()

    def start(self):
        self.vantages.update(VANTAGES)

    def stop(self):
        self.stopped.set()

    @contextlib.contextmanager
    def taking(self):
        taken, self.raw = self.raw, []
        yield taken

    def kernel_counters(self):
        return {"events": 6 + self.lost, "lost": self.lost, "non_dns": 0, "non_ip": 0, "truncated_header": 0,
                "tcp_no_payload": 0}


class StandInDiscovery:
    errors = 0

    def targets(self):
        return []

    def watcher(self):
        return lambda: []


def run_agent(feed, max_pending_bytes=node_agent.MAX_PENDING_BYTES):
    """The agent's loop over a stand-in capture: `feed(capture)` runs while it captures; then stdin closes."""
    out = io.BytesIO()
    made = []

    def factory(*args, **kwargs):
        made.append(StandInCapture(*args, **kwargs))
        return made[0]

    agent = node_agent.Agent(out, "kind-worker", discovery=StandInDiscovery(), capture_factory=factory,
                             max_pending_bytes=max_pending_bytes)
    read_end, write_end = os.pipe()
    thread = threading.Thread(target=lambda: agent.run())
    thread.start()
    while not made or not made[0].vantages:
        threading.Event().wait(0.01)
    feed(made[0])
    node_agent.watch_stdin(os.fdopen(read_end, "rb"), agent.stop)
    os.close(write_end)  # the exec session ends: stdin closes
    thread.join(10)
    assert not thread.is_alive() and made[0].stopped.is_set()
    return fed(out.getvalue())


def test_the_agent_streams_what_it_captures_and_its_counters_and_stops_when_stdin_closes():
    def feed(capture):
        capture.raw.append(lookup())
        capture.lost = 2

    stream = run_agent(feed)
    assert stream.ended and stream.hello["node"] == "kind-worker"
    assert set(stream.events()["vantage"]) == {"demo/mypod", "kind-worker"}
    assert stream.stats()["lost_samples"] == 2 and stream.stats()["records_sent"] == 3
    assert stream.hello["tracer"] == stream.stats()["tracer"] == "core"  # which build the node loaded, on its line
    assert node_lines({"kind-worker": stream.stats()})[0].startswith("node kind-worker: tracer=core  ")


def test_the_agent_sends_only_the_bytes_the_tracer_wrote_not_an_older_packets_left_in_the_ring_slot():
    records = np.frombuffer(lookup(), EVENT_DTYPE).copy()
    stale = np.frombuffer(b"older.lookup.of.another.pod" * 40, np.uint8)[:EVENT_DTYPE.itemsize]
    dirty = records.view(np.uint8).reshape(len(records), -1).copy()
    for row, captured in zip(dirty, records["captured"]):
        start = EVENT_DTYPE.fields["payload"][1] + int(captured)
        row[start:] = stale[start:]  # the slot's tail: what the ring held before
    stream = run_agent(lambda capture: capture.raw.append(dirty.tobytes()))
    sent = np.frombuffer(b"".join(stream.records.batches), EVENT_DTYPE)
    expected = records.view(np.uint8).reshape(len(records), -1).copy()
    expected[:, EVENT_DTYPE.fields["payload"][1] + PAYLOAD_MAX:] = 0  # the padding after the payload
    assert sent.tobytes() == expected.tobytes()  # the tails and the padding are zero, the rest as captured
    assert b"another" not in b"".join(stream.records.batches)


def test_an_agent_that_falls_behind_drops_the_oldest_records_and_counts_them():
    def feed(capture):
        capture.raw += [lookup("old.example.org.", qid=1), lookup("new.example.org.", qid=2, ts=9_000)]

    stream = run_agent(feed, max_pending_bytes=3 * SIZE)
    assert set(stream.events()["qname"]) == {"new.example.org."}
    assert stream.stats()["agent_dropped"] == 3 and stream.stats()["lost_samples"] == 3


def test_a_node_that_cannot_capture_says_why_in_the_stream():
    def failing(*args, **kwargs):  # an agent told to use bcc (DNSCORRELATE_TRACER=bcc) on a node without headers
        raise CaptureError("bcc needs kernel headers at /lib/modules/6.1.0/build: run `make setup`")

    out = io.BytesIO()
    code = node_agent.Agent(out, "n", discovery=StandInDiscovery(), capture_factory=failing).run()
    stream = fed(out.getvalue())
    assert code == 2 and stream.ended and stream.hello is None
    assert "kernel headers" in stream.error and "make setup" not in stream.error
    assert "leave DNSCORRELATE_TRACER unset" in stream.error


def test_the_agent_loads_the_core_object_unless_told_otherwise(monkeypatch):
    """`dnscorrelate agent` on a node: DNSCORRELATE_TRACER defaults to `core` there (bcc stays the local default)."""
    from dnscorrelate.live import bpf

    monkeypatch.delenv(bpf.TRACER_ENV, raising=False)
    assert bpf.tracer_choice() == "bcc"
    monkeypatch.setattr(node_agent.Agent, "run", lambda self, duration=None: 0)
    monkeypatch.setattr(node_agent, "watch_stdin", lambda stdin, stop, discovery=None: None)
    monkeypatch.setattr(node_agent.signal, "signal", lambda *args: None)
    streams = [io.TextIOWrapper(io.BytesIO()) for _ in range(3)]  # kept: main() drops sys.stdout, which would close it
    monkeypatch.setattr(node_agent.sys, "stdin", streams[0])
    monkeypatch.setattr(node_agent.sys, "stdout", streams[1])
    assert node_agent.main("n", (53,), None) == 0
    assert bpf.tracer_choice() == "core"
    monkeypatch.setenv(bpf.TRACER_ENV, "bcc")
    monkeypatch.setattr(node_agent.sys, "stdout", streams[2])
    node_agent.main("n", (53,), None)
    assert bpf.tracer_choice() == "bcc"
    monkeypatch.setenv(bpf.TRACER_ENV, "clang")
    with pytest.raises(CaptureError, match="DNSCORRELATE_TRACER='clang': choose one of bcc, core"):
        bpf.tracer_choice()


def test_stdin_saying_stop_stops_the_agent():
    stopped = threading.Event()
    node_agent.watch_stdin(io.BytesIO(b"\nstop\nignored\n"), stopped.set).join(5)
    assert stopped.is_set()


UID_A, UID_B = "0f2c5b6e-1111-4a2b-8c3d-000000000001", "0f2c5b6e-2222-4a2b-8c3d-000000000002"


def api_pod(uid, namespace, name, node, host_network=False, labels=None):
    return SimpleNamespace(metadata=SimpleNamespace(uid=uid, namespace=namespace, name=name, labels=labels or {}),
                           spec=SimpleNamespace(node_name=node, host_network=host_network))


def test_the_pod_map_the_cli_sends_reaches_the_agents_discovery_and_bad_lines_are_refused_and_counted():
    from dnscorrelate.cluster.kube.discovery import PodRef

    pods = {UID_A: PodRef(UID_A, "demo/mypod", "pod"), UID_B: PodRef(UID_B, "kube-system/coredns-1", "coredns")}
    later = {UID_A: pods[UID_A]}
    discovery = node_agent.NodeDiscovery("kind-worker", first_map_timeout=5)
    lines = [node_agent.pod_map_line(pods), b"not json\n",
             b'{"pods":[{"uid":"../../etc","key":"demo/x","role":"pod"}]}\n',
             b'{"pods":[{"uid":"%s","key":"demo/x","role":"root"}]}\n' % UID_A.encode(),
             b"x" * (node_agent.MAX_STDIN_LINE + 10) + b"\n", node_agent.pod_map_line(later), b"stop\n",
             node_agent.pod_map_line(pods)]  # after stop: never read
    stopped = threading.Event()
    node_agent.watch_stdin(io.BytesIO(b"".join(lines)), stopped.set, discovery).join(5)
    assert stopped.is_set()
    assert discovery._pods == later and discovery.errors == 4
    assert "longer than" in discovery.last_error
    assert node_agent.parse_pod_map(node_agent.pod_map_line(pods)) == pods
    with pytest.raises(ValueError, match="pods.0.role"):
        node_agent.parse_pod_map(lines[3])


def test_an_agent_without_a_pod_map_says_so_instead_of_guessing(tmp_path):
    from dnscorrelate.errors import ClusterError

    discovery = node_agent.NodeDiscovery("kind-worker", proc=tmp_path, first_map_timeout=0.1)
    discovery.refuse("pod map: pods.0.uid: String should match pattern")
    with pytest.raises(ClusterError, match="no map of this node's pods arrived on stdin within 0 s .refused 1: pod map"):
        discovery.targets()
    out = io.BytesIO()
    assert node_agent.Agent(out, "kind-worker", discovery=discovery, capture_factory=StandInCapture).run() == 2
    assert "trace --agent` sends the map" in fed(out.getvalue()).error


class StdinSocket:
    def __init__(self):
        self.written = []

    def is_open(self):
        return True

    def write_stdin(self, data):
        self.written.append(data)


def test_the_cli_sends_each_agent_its_own_nodes_pods_and_only_when_they_change():
    from dnscorrelate.cluster.kube.agents import AgentCapture, NodeAgent

    listings = [[api_pod(UID_A, "demo", "mypod", "kind-worker"), api_pod(UID_B, "demo", "web-0", "kind-control-plane"),
                 api_pod("0f2c5b6e-3333-4a2b-8c3d-000000000003", "kube-system", "kube-proxy-x", "kind-worker", host_network=True),
                 api_pod("0f2c5b6e-4444-4a2b-8c3d-000000000004", "demo", "pending", None)]]
    listings.append(listings[0] + [api_pod("0f2c5b6e-5555-4a2b-8c3d-000000000005", "demo", "late", "kind-worker")])
    listings.append(listings[1])
    calls = []

    class Core:
        def list_pod_for_all_namespaces(self, **kwargs):
            calls.append(kwargs)
            return SimpleNamespace(items=listings[min(len(calls), len(listings)) - 1])

    capture = AgentCapture(api=None)
    capture.client = lambda group: Core()
    worker, control = (NodeAgent(n, f"agent-{n}", NodeStream(n), ws=StdinSocket())
                       for n in ("kind-worker", "kind-control-plane"))
    capture.agents = [worker, control]
    for _ in listings:
        maps = capture.pod_maps()
        for agent in capture.agents:
            capture.send_pod_map(agent, maps.get(agent.node, {}))
    sent = [[{r.key for r in node_agent.parse_pod_map(line).values()} for line in a.ws.written] for a in (worker, control)]
    assert sent[0] == [{"demo/mypod"}, {"demo/mypod", "demo/late"}]  # host network: the node itself; the late pod once
    assert sent[1] == [{"demo/web-0"}]
    assert calls[0] == {"resource_version": "0"}


def test_the_manifest_takes_only_the_privileges_it_explains():
    text = node_agent.manifest("example/agent:1")
    objects = [o for o in yaml.safe_load_all(text) if o]
    assert [o["kind"] for o in objects] == ["DaemonSet"]  # no service account, no RBAC: the CLI hands it the pods
    assert objects[0]["metadata"]["name"].startswith("dnsc-")
    pod = objects[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    container = pod["containers"][0]
    security = container["securityContext"]
    assert pod["hostPID"] and pod["hostNetwork"] and container["image"] == "example/agent:1"
    assert container["resources"]["limits"]["memory"] == "1Gi"  # a node-root process cannot take the node's memory
    assert not security["privileged"] and security["capabilities"]["drop"] == ["ALL"]
    assert sorted(security["capabilities"]["add"]) == ["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    lines = text.splitlines()
    for cap in security["capabilities"]["add"]:  # each one explained, on its line or just above
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {cap}" or line.strip().startswith(f"- {cap} "))
        assert "#" in lines[at] or lines[at - 1].strip().startswith("#"), cap
    assert "volumes" not in pod and "volumeMounts" not in container  # no kernel headers: the tracer is compiled
    kind = node_agent.manifest_objects("example/agent:1", source_from_host=True)[0]["spec"]["template"]["spec"]
    assert {v["hostPath"]["path"] for v in kind["volumes"]} == {"/opt/dnscorrelate/src", "/opt/dnscorrelate/tracer"}
    assert {m["mountPath"] for m in kind["containers"][0]["volumeMounts"]} == {"/opt/dnscorrelate/src", "/opt/dnscorrelate/tracer"}


def test_a_container_that_will_not_start_is_named_with_its_reason():
    def pod(waiting, message=None, last=None):
        state = SimpleNamespace(waiting=SimpleNamespace(reason=waiting, message=message) if waiting else None)
        last_state = SimpleNamespace(terminated=SimpleNamespace(message=last, reason="StartError") if last else None)
        return SimpleNamespace(status=SimpleNamespace(container_statuses=[SimpleNamespace(state=state, last_state=last_state)]))

    assert fatal_reason(pod("ErrImageNeverPull", 'image "x" is not present')) == 'ErrImageNeverPull: image "x" is not present'
    assert fatal_reason(pod("CrashLoopBackOff", last="unable to apply caps")) == "CrashLoopBackOff: unable to apply caps"
    assert fatal_reason(pod("ContainerCreating")) is None and fatal_reason(pod(None)) is None


def test_the_agent_image_is_one_every_node_holds():
    def node(*names):
        return SimpleNamespace(status=SimpleNamespace(images=[SimpleNamespace(names=list(names))]))

    nodes = [node("docker.io/dnscorrelate/agent:a", "docker.io/dnscorrelate/agent:b"), node("docker.io/dnscorrelate/agent:b")]
    assert image_on_every_node(nodes, "dnscorrelate/agent:zzz") == "dnscorrelate/agent:b"
    assert image_on_every_node(nodes[:1], "dnscorrelate/agent:a") == "dnscorrelate/agent:a"
    assert image_on_every_node([node("docker.io/library/other:1")], None) is None


def test_nodes_that_cannot_capture_are_warnings_naming_them_and_all_of_them_an_error():
    from dnscorrelate.cluster.kube.agents import AgentCapture, NodeAgent

    def agent_of(node, data):
        return NodeAgent(node, f"dnsc-agent-{node}", fed(data, node))

    failing = io.BytesIO()
    writer = StreamWriter(failing)
    writer.error("compiling dns_trace.c failed: Operation not permitted")
    writer.end({})
    capture = AgentCapture(api=None)
    capture.agents = [agent_of("cp", failing.getvalue()), agent_of("worker", stream_bytes(lookup())[0])]
    capture.wait_hello()
    assert capture.warnings == ["node cp: cannot capture: compiling dns_trace.c failed: Operation not permitted "
                                "(its pods are not traced)"]
    capture.agents = capture.agents[:1] + [agent_of("w2", b"")]
    with pytest.raises(CaptureError, match=r"no node agent could capture: node cp: .*Operation not permitted; "
                                           r"node w2: cannot capture: the agent ended before capturing"):
        capture.wait_hello()


def test_a_remote_clusters_agent_image_has_the_package_baked_in(tmp_path, monkeypatch):
    from dnscorrelate.cluster.kind import build as kind_build
    from dnscorrelate.errors import ClusterError

    values = {"KIND": "k", "KUBECTL": "c", "NODE_IMAGE": "n", "CLIENT_IMAGE": "cl", "AGENT_IMAGE": "dnscorrelate/agent:1",
              "UPSTREAM_IMAGE": "u", "FLANNEL_IMAGE": "f", "KUBE_VERSION": "v1.34.4"}
    (tmp_path / "build.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    read = kind_build.load_build
    monkeypatch.setattr(kind_build, "load_build", lambda: read(tmp_path))
    assert kind_build.agent_image(source_from_host=True) == "dnscorrelate/agent:1"
    with pytest.raises(ClusterError, match="agent-standalone"):  # the runtime alone would not run on a remote node
        kind_build.agent_image(source_from_host=False)
    (tmp_path / "build.env").write_text((tmp_path / "build.env").read_text() + "AGENT_STANDALONE_IMAGE=dnscorrelate/agent-standalone:2\n")
    assert kind_build.agent_image(source_from_host=False) == "dnscorrelate/agent-standalone:2"


# --- what an agent sends is not trusted (issue 23 item 4) ---------------------------------------------------

def raw_stream(*frames_):
    from dnscorrelate.live.agent_stream import frame

    return MAGIC + b"".join(frame(kind, body) for kind, body in frames_)


def hello_frame():
    import json

    return b"H", json.dumps({"node": "n", "version": "t", "record_size": SIZE, "boot_to_wall_ns": 1}).encode()


def test_a_zlib_bomb_is_a_bad_frame_and_never_inflates_past_the_cap(monkeypatch):
    """1 GiB of zeros compresses to about 1 MB; decompressed whole it would take a gigabyte. The cap is per frame."""
    import tracemalloc
    import zlib

    from dnscorrelate.live.agent_stream import MAX_RECORDS_BYTES

    compressor = zlib.compressobj(9)
    chunk = bytes(16 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    stream = fed(raw_stream(hello_frame(), (b"R", bomb)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MAX_RECORDS_BYTES + 8 * len(bomb)  # the cap and the frame itself, never the gigabyte
    stats = stream.stats()
    assert stats["bad_frames"] == 1 and stats["records_received"] == 0
    assert "decompresses to more than" in stats["bad_frame_reasons"][0]
    # a frame just under the cap is taken whole
    assert fed(raw_stream(hello_frame(), (b"V", b'{"id":1,"netns":1,"vantage":"v","role":"pod"}'),
                          (b"R", zlib.compress(lookup(node_id=1) * 10)))).stats()["records_received"] == 30


@pytest.mark.parametrize("kind, body, where", [
    (b"V", b'{"id":"one","netns":1,"vantage":"v","role":"pod"}', "id"),
    (b"V", b'{"id":1,"netns":1,"vantage":"demo/\\u001b[2Jx","role":"pod"}', "vantage"),
    (b"V", b'{"id":1,"netns":1,"role":"pod"}', "vantage"),
    (b"S", b'{"events":"many"}', "counters"),
    (b"S", b'[1,2]', "counters"),
    (b"E", b'{"message":{"nested":1}}', "message"),
])
def test_frames_of_the_wrong_types_are_counted_as_bad_frames_naming_the_field(kind, body, where):
    stream = fed(raw_stream(hello_frame(), (kind, body)))
    stats = stream.stats()
    assert stats["bad_frames"] == 1 and where in stats["bad_frame_reasons"][0]
    assert stream.vantages == {} and "events" not in stream.agent_stats
    assert any("bad frame" in line and where in line for line in node_lines({"n": stats}))


def test_text_an_agent_sends_reaches_the_terminal_with_its_control_characters_escaped():
    import json

    stream = fed(raw_stream(hello_frame(), (b"E", json.dumps({"message": "boom\x1b]0;owned\x07\r\x9b2J"}).encode())))
    assert stream.error == "boom\\x1b]0;owned\\x07\\x0d\\x9b2J"
    assert "\x1b" not in " ".join(node_lines({"n": stream.stats()}))


def test_records_kept_per_node_are_bounded_and_what_is_dropped_is_counted_as_lost():
    raw = lookup() * 4  # 12 records
    stream = NodeStream("n", max_record_bytes=5 * SIZE)
    data, _ = stream_bytes(raw, stats={"events": 12, "lost_samples": 0})
    stream.feed(data)
    stats = stream.stats()
    assert stats["records_received"] == 5 and stats["cli_dropped"] == 7 and stats["lost_samples"] == 7
    assert len(stream.events()) == 5
    assert "cli_dropped=7" in node_lines({"n": stats})[0]


def test_drained_node_streams_written_per_node_read_back_as_the_whole_stream(tmp_path):
    """`capture --agent -o DIR/`: each node's records decoded and forgotten as they come, into that node's file;
    the files hold what decoding each stream whole gives, and the records held stay what arrived since the last
    drain."""
    from dnscorrelate import events
    from dnscorrelate.live.agent_stream import drained_events

    worker_vantages = {3: Vantage(11, "kube-system/coredns-0", "coredns")}
    batches = {"cp": [lookup(), lookup("b.example.org.", qid=7, ts=5_000)],
               "worker": [record(query(), ts=1_000, capture_id=3), record(query("b.example.org.", qid=7), ts=5_010, capture_id=3)]}
    streams = {"cp": NodeStream("cp"), "worker": NodeStream("worker")}
    heads = {"cp": stream_bytes(b"", end=False)[0], "worker": stream_bytes(b"", vantages=worker_vantages, end=False)[0]}
    for node, stream in streams.items():
        stream.feed(heads[node])
    writer = events.NodeParquetDir(tmp_path / "cap")
    for step in range(2):
        for node, stream in streams.items():
            more = io.BytesIO()
            StreamWriter(more).records(batches[node][step])
            stream.feed(more.getvalue()[len(MAGIC):])
        writer.write(drained_events(list(streams.values())))
        assert all(s.records.pending_bytes() == 0 and s.kept_bytes == 0 for s in streams.values())  # nothing kept
    for stream in streams.values():
        stream.close()
    writer.write(drained_events(list(streams.values()), last=True))
    writer.close(merged_stats(list(streams.values())))
    for node, stream in streams.items():
        whole, _ = decode(b"".join(batches[node]), VANTAGES if node == "cp" else worker_vantages, 10**18)
        written, stats = events.load(tmp_path / "cap" / f"{node}.parquet")
        assert list(written["ts_ns"]) == list(whole["ts_ns"]) and list(written["qname"]) == list(whole["qname"])
        assert set(written["node"].astype(str)) == {node}
        assert stats["records_received"] == len(whole) and stream.decode_stats["decode_errors"] == 0


def test_the_agents_capture_drained_to_the_end_keeps_its_counters_for_the_session():
    """Session.drain_events(last=True) asks the capture for `events()` after its last drain: the counters of
    what was drained (packets, each node's) must survive it."""
    from dnscorrelate.cluster.kube.agents import AgentCapture

    stream = fed(stream_bytes(lookup() + lookup("b.example.org.", qid=7, ts=5_000))[0], "cp")
    capture = AgentCapture.__new__(AgentCapture)
    capture.agents, capture.timings, capture.stats, capture._frame = [SimpleNamespace(node="cp", stream=stream)], {}, {}, None
    first = capture.drain()
    rest = capture.drain(last=True)
    assert len(first) == 6 and len(rest) == 0 and set(first["node"].astype(str)) == {"cp"}
    assert len(capture.events()) == 0
    assert capture.stats["packets"] == 6 and capture.stats["nodes"]["cp"]["records_received"] == 6


def test_the_agent_scans_proc_only_while_a_mapped_pod_is_missing(tmp_path, monkeypatch):
    """A scan reads every process's cgroup: the agent scans when a map names a pod it has not found, or a found pod's
    process is gone, and otherwise not at all."""
    from dnscorrelate.cluster.kube.discovery import PodRef

    def process(pid: int, uid: str | None) -> None:
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        (tmp_path / str(pid) / "ns" / "net").write_text(str(pid))  # each its own file: its own inode
        (tmp_path / str(pid) / "cgroup").write_text(f"0::/kubepods/pod{uid}/abc\n" if uid else "0::/\n")

    process(1, None)
    process(100, UID_A)
    pods = {UID_A: PodRef(UID_A, "demo/mypod", "pod"), UID_B: PodRef(UID_B, "demo/other", "pod")}
    discovery = node_agent.NodeDiscovery("kind-worker", proc=tmp_path, first_map_timeout=1)
    discovery.update(pods)
    assert [t.vantage for t in discovery.targets()] == ["kind-worker", "demo/mypod"] and discovery.scans == 1
    assert discovery.new_targets() == [] and discovery.scans == 1  # demo/other is missing, but it was just looked for
    discovery.update(dict(pods))  # a new map: looked for at once
    process(200, UID_B)
    assert [t.vantage for t in discovery.new_targets()][-1] == "demo/other" and discovery.scans == 2
    for _ in range(3):
        assert discovery.new_targets() == []  # every mapped pod found: no scan
    assert discovery.scans == 2
    (tmp_path / "100" / "ns" / "net").unlink()  # its process is gone (the sandbox was recreated)
    process(300, UID_A)
    monkeypatch.setattr(node_agent, "RESCAN_S", 0.0)  # the same map: looked for again once RESCAN_S has passed
    assert "demo/mypod" in [t.vantage for t in discovery.new_targets()] and discovery.scans == 3
