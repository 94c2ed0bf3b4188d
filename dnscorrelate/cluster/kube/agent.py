"""`dnscorrelate agent`: the node agent, for a cluster whose nodes do not run where the CLI runs.

It runs in a pod of the `dnsc-agent` DaemonSet (`manifest()`), one per node, and does on its node what
`trace --context` does on a host that runs the nodes (`discovery.py`): the node's own network namespace
(`/proc/1/ns/net`, hostPID) and every pod's (`/proc/PID/ns/net`, the pod UID in the process's cgroup,
named by the map of this node's pods the CLI sends on stdin: the agent has no service account token),
vantages named `NS/NAME` and the node's name as a local capture names them; pods that start mid-capture
are in the CLI's next map and attached within REFRESH_S or so. It streams the tracer's records
to stdout in `live/agent_stream.py`'s format, with its counters every STATS_INTERVAL_S and at the end.
With `--client IP` (`trace`), only the records of that address's lookups and of what they caused on this
node (`live/agent_filter.py`), the rest counted.

    python3 -m dnscorrelate agent            # exec'd by the CLI in an agent pod; reads pod maps on stdin
                                             # (`pod_map_line`); stops when stdin closes, on a line `stop`,
                                             # on SIGTERM or SIGINT, after --duration
    python3 -m dnscorrelate agent standby    # the DaemonSet's container: waits to be exec'd into
    dnscorrelate agent manifest [--image]    # the manifest, to read or to apply yourself

A node that cannot capture (no BPF, no kernel headers, missing capabilities) sends an error frame saying
why, not a traceback; the CLI names the node.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from dnscorrelate.cluster.backend import Target
from dnscorrelate.cluster.images import pullable
from dnscorrelate.cluster.kube.discovery import PROC, PodRef, netns_inode, pod_targets
from dnscorrelate.errors import CaptureError, ClusterError
from dnscorrelate.live.agent_filter import LookupFilter
from dnscorrelate.live.agent_stream import FRAME_RECORDS, StreamWriter, bounded, frames_of
from dnscorrelate.live.capture import DEFAULT_PORTS, Capture

NAME = "dnsc-agent"
NAMESPACE = "kube-system"  # the on-the-fly mode (`trace --agent` applies and removes it)
INSTALL_NAMESPACE = "dnscorrelate"  # `agent install`: once, by an admin, in a namespace of its own
USER_ROLE = "dnscorrelate-user"  # the Role there a user needs: find the agent pods and exec into them
LABELS = {"app.kubernetes.io/name": NAME}
REFRESH_S = 2.0  # the CLI reads the pods from the API and sends each node's map at most this often
RESCAN_S = 2.0  # /proc is scanned again this often while a mapped pod's namespace is not found
POD_MAP_TIMEOUT_S = 30.0  # the agent waits this long for the CLI's first pod map before it says it has none
MAX_STDIN_LINE = 8 << 20  # a pod map line longer than this is refused (about 80 bytes a pod)
MAX_MAP_PODS = 50_000  # pods in one node's map; Kubernetes' default is 110 a node
TEST_CLOCK_SKEW_ENV = "DNSCORRELATE_TEST_CLOCK_SKEW"  # tests only: NODE=NANOSECONDS[,...], a node's clock made that far ahead
SEND_INTERVAL_S = 0.05  # records reach the stream at most this late
FILTER_INTERVAL_S = 0.2  # ... when filtered for one pod (`trace`): fewer, larger batches, for a view refreshed every TICK_S
STATS_INTERVAL_S = 1.0
MAX_PENDING_BYTES = 64 << 20  # records waiting for a stream that fell behind; older ones beyond are dropped (counted)


class NodeDiscovery:
    """This node's namespaces: its own (the node's: /proc/1/ns/net with hostPID) and its pods', found in /proc.
    Which pod a UID in a process's cgroup belongs to comes from the CLI, as the pod map it sends on stdin
    (`pod_map_line`) when the session starts and whenever this node's pods change: the agent has no API
    credentials of its own (no service account token).

    /proc is scanned only while a mapped pod has no namespace found (a pod whose sandbox is not up yet, or was
    recreated): at once when a new map arrives, else every RESCAN_S. A scan reads every process's cgroup, about
    25 µs a process: on a node of 500 processes, rescanning at every watch round (0.2 s) would cost 6% of a core."""

    def __init__(self, node: str, proc: Path = PROC, first_map_timeout: float = POD_MAP_TIMEOUT_S) -> None:
        self.node = node
        self.proc = proc
        self.first_map_timeout = first_map_timeout
        self.errors = 0  # pod map lines refused (the previous map is kept)
        self.last_error = ""
        self.scans = 0
        self._pods: dict[str, PodRef] = {}
        self._received = threading.Event()
        self._found: dict[str, tuple[str, int]] = {}  # pod UID -> the namespace (path, inode) a scan found it at
        self._scanned: tuple[dict[str, PodRef], float] | None = None  # the map the last scan was for, and when

    def update(self, pods: dict[str, PodRef]) -> None:
        """The CLI's latest map of this node's pods; pods new in it are attached within REFRESH_S."""
        self._pods = pods
        self._received.set()

    def refuse(self, why: str) -> None:
        self.errors += 1
        self.last_error = why

    def targets(self) -> list[Target]:
        """The namespaces now, once the CLI's first pod map is here; without one, the agent's error."""
        if not self._received.wait(self.first_map_timeout):
            refused = f" (refused {self.errors}: {self.last_error})" if self.errors else ""
            raise ClusterError(f"no map of this node's pods arrived on stdin within {self.first_map_timeout:.0f} s{refused}: "
                               "the agent has no API access of its own; `dnscorrelate trace --agent` sends the map")
        return self.scan(self._pods)

    def watcher(self) -> Callable[[], list[Target]]:
        return self.new_targets

    def new_targets(self) -> list[Target]:
        """The namespaces of a scan, when one is due (a mapped pod is missing); else none (nothing new to attach)."""
        pods = self._pods
        self._found = {uid: (path, inode) for uid, (path, inode) in self._found.items()
                       if uid in pods and netns_inode(path) == inode}  # its process is still there
        if self._found.keys() == pods.keys() or self._scanned is None:
            return []
        scanned_map, scanned_at = self._scanned
        if scanned_map is pods and time.monotonic() - scanned_at < RESCAN_S:
            return []
        return self.scan(pods)

    def scan(self, pods: dict[str, PodRef]) -> list[Target]:
        targets = pod_targets(pods, {self.node: 1}, self.proc)
        self.scans += 1
        self._scanned = (pods, time.monotonic())
        uid_of = {ref.key: uid for uid, ref in pods.items()}
        self._found = {uid_of[t.vantage]: (t.path, netns_inode(t.path)) for t in targets if t.vantage in uid_of}
        return targets


# --- what the CLI writes on the agent's stdin: lines, each `stop` or one pod map ------------------------

class PodEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    key: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
    role: Literal["pod", "coredns"]


class PodMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pods: list[PodEntry] = Field(max_length=MAX_MAP_PODS)


def pod_map_line(pods: dict[str, PodRef]) -> bytes:
    """A node's pods (by UID, as `discovery.pod_refs_of` gives them) as one stdin line for its agent."""
    import json

    body = {"pods": [{"uid": ref.uid, "key": ref.key, "role": ref.role} for ref in sorted(pods.values(), key=lambda r: r.uid)]}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def parse_pod_map(line: bytes) -> dict[str, PodRef]:
    """A pod map line back into PodRefs by UID; a ValueError naming what is wrong for anything else."""
    try:
        message = PodMap.model_validate_json(line)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the line"
        raise ValueError(f"pod map: {where}: {first['msg']}") from None
    return {p.uid: PodRef(p.uid, p.key, p.role) for p in message.pods}


class Agent:
    """One capture on this node, forwarded to `out` until told to stop."""

    def __init__(self, out: BinaryIO, node: str, ports: tuple[int, ...] = DEFAULT_PORTS, discovery=None,
                 capture_factory: Callable[..., Capture] = Capture, max_pending_bytes: int = MAX_PENDING_BYTES,
                 clock_skew_ns: int = 0, clients: tuple[str, ...] = ()) -> None:
        self.writer = StreamWriter(out)
        self.node = node
        self.ports = ports
        self.discovery = discovery if discovery is not None else NodeDiscovery(node)
        self.capture_factory = capture_factory
        self.max_pending_bytes = max_pending_bytes
        self.clock_skew_ns = clock_skew_ns  # tests only: this node's wall clock read as that far ahead
        self.filter = LookupFilter(clients) if clients else None  # `trace`: only these addresses' lookups are sent
        self.stop_event = threading.Event()
        self.dropped = 0
        self.sent_vantages: set[int] = set()
        self.capture: Capture | None = None
        self.started = time.monotonic()

    def stop(self, *_) -> None:
        self.stop_event.set()

    def counters(self) -> dict:
        kernel = self.capture.kernel_counters()
        return {"events": kernel["events"], "lost_samples": kernel["lost"], "non_dns_packets": kernel["non_dns"],
                "non_ip_packets": kernel["non_ip"], "truncated_headers": kernel["truncated_header"],
                "tcp_without_payload": kernel["tcp_no_payload"], "agent_dropped": self.dropped,
                "records_sent": self.writer.records_sent, "namespaces": len(self.capture.vantages),
                "discovery_errors": getattr(self.discovery, "errors", 0), **(self.filter.stats() if self.filter else {}),
                "seconds": round(time.monotonic() - self.started, 3)}

    def flush(self, final: bool = False) -> None:
        """Everything read since the last flush: new vantages first (records never precede their vantage: the
        capture names a namespace before any record of it can be taken), then the records (with a filter,
        those of the traced pod's lookups; `final`: what the filter holds is decided now)."""
        with self.capture.taking() as batches:  # the ring is read in place: done with it before writing, which may block
            kept, dropped = bounded(batches, self.max_pending_bytes)
            if self.filter is not None:
                kept = [self.filter.take(kept, final)]
            frames = [raw for batch in kept for raw in frames_of(batch, FRAME_RECORDS)]
        self.dropped += dropped
        self.send_vantages()
        for raw in frames:
            self.writer.records(raw)

    def send_vantages(self) -> None:
        for capture_id, vantage in list(self.capture.vantages.items()):
            if capture_id not in self.sent_vantages:
                self.writer.vantage(capture_id, vantage)
                self.sent_vantages.add(capture_id)

    @property
    def send_interval(self) -> float:
        """Seconds between two flushes; each reads the capture's ring buffer (`taking`), in one batch."""
        return SEND_INTERVAL_S if self.filter is None else FILTER_INTERVAL_S

    def run(self, duration: float | None = None) -> int:
        """Capture and stream until stopped; 0 when the stream ended cleanly, 2 when this node cannot capture."""
        try:
            self.capture = self.capture_factory(self.discovery.targets(), ports=self.ports, watch=self.discovery.watcher(),
                                                read_every_s=2 * self.send_interval)  # its takes read; a late one is helped
            self.capture.start()
        except (CaptureError, ClusterError) as err:
            self.writer.error(on_a_node(str(err)))
            self.writer.end({})
            return 2
        from dnscorrelate import __version__

        self.send_vantages()  # before hello: a CLI that has the hello knows every namespace captured from the start
        self.writer.hello(node=self.node, version=__version__, kernel=os.uname().release,
                          boot_to_wall_ns=self.capture.boot_to_wall + self.clock_skew_ns, compile_seconds=round(self.capture.compile_seconds, 3),
                          tracer=self.capture.tracer_kind,
                          attach_seconds=round(self.capture.attach_seconds, 4), namespaces=len(self.capture.vantages))
        try:
            next_stats = time.monotonic() + STATS_INTERVAL_S
            while not self.stop_event.wait(self.send_interval):
                self.flush()
                if time.monotonic() >= next_stats:
                    self.writer.stats(self.counters())
                    next_stats = time.monotonic() + STATS_INTERVAL_S
                if duration is not None and time.monotonic() - self.started >= duration:
                    break
            self.capture.stop()
            self.flush(final=True)
            self.writer.end(self.counters())
        except BrokenPipeError:  # the CLI is gone: nobody to tell
            self.capture.stop()
        return 0


def test_clock_skews() -> dict[str, int]:
    """{node: ns} of $DNSCORRELATE_TEST_CLOCK_SKEW (`node-a=7000000,node-b=-2000000`): for tests on kind, whose nodes
    share one clock, each named node's agent times its events, and the CLI reads its CoreDNS pods' log lines, as a
    node whose wall clock is that far ahead would. Empty when unset."""
    text = os.environ.get(TEST_CLOCK_SKEW_ENV, "").strip()
    skews = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, equals, value = item.partition("=")
        try:
            skews[node.strip()] = int(value)
        except ValueError:
            raise ClusterError(f"${TEST_CLOCK_SKEW_ENV}: {item!r} is not NODE=NANOSECONDS") from None
        if not equals or not node.strip():
            raise ClusterError(f"${TEST_CLOCK_SKEW_ENV}: {item!r} is not NODE=NANOSECONDS")
    return skews


def on_a_node(message: str) -> str:
    """A capture error's advice, for a node rather than the machine `make setup` prepares (bcc's advice: the agent
    uses bcc only when DNSCORRELATE_TRACER=bcc is set in its pod)."""
    return message.replace("run `make setup`", "the agent's own tracer needs no headers: leave DNSCORRELATE_TRACER "
                           "unset in its pod (it loads the CO-RE object its image carries)")


def watch_stdin(stdin: BinaryIO, stop: Callable[[], None], discovery: NodeDiscovery | None = None) -> threading.Thread:
    """Stop when stdin closes (the exec session ended) or says `stop`; a pod map line goes to `discovery`
    (a line that is not one, or longer than MAX_STDIN_LINE, is refused and counted, the previous map kept)."""

    def read() -> None:
        try:
            while line := stdin.readline(MAX_STDIN_LINE + 1):
                if len(line) > MAX_STDIN_LINE:  # too long: drop it to its end, whatever it held
                    while line and not line.endswith(b"\n"):
                        line = stdin.readline(MAX_STDIN_LINE + 1)
                    if discovery is not None:
                        discovery.refuse(f"a line longer than {MAX_STDIN_LINE} bytes")
                    continue
                if line.strip() == b"stop":
                    break
                if discovery is not None and line.strip():
                    try:
                        discovery.update(parse_pod_map(line))
                    except ValueError as err:
                        discovery.refuse(str(err))
        except (OSError, ValueError):
            pass
        stop()

    thread = threading.Thread(target=read, name="dnscorrelate-agent-stdin", daemon=True)
    thread.start()
    return thread


def main(node: str | None, ports: tuple[int, ...], duration: float | None, clock_skew_ns: int = 0,
         clients: tuple[str, ...] = ()) -> int:
    """`dnscorrelate agent`: capture on this node, stream to stdout; with `clients`, only the records of their
    lookups (live/agent_filter.py). `clock_skew_ns` (tests only) times this node's events as a wall clock that far
    ahead would."""
    node = node or os.environ.get("NODE_NAME") or os.uname().nodename
    # The agent loads the CO-RE object (no compiler, no kernel headers on the node); bcc only when asked.
    os.environ.setdefault("DNSCORRELATE_TRACER", "core")
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by mistake must not corrupt the stream
    discovery = NodeDiscovery(node)
    agent = Agent(out, node, ports, discovery=discovery, clock_skew_ns=clock_skew_ns, clients=clients)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    watch_stdin(sys.stdin.buffer, agent.stop, discovery)
    return agent.run(duration)


def standby() -> None:
    """The DaemonSet container's process: says where it runs and waits, to be exec'd into, until SIGTERM."""
    node = os.environ.get("NODE_NAME", os.uname().nodename)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"dnscorrelate agent on node {node}: standing by (the CLI runs `python3 -m dnscorrelate agent` here "
          "through exec)", flush=True)
    while not done.wait(3600):
        pass


# --- the manifest -------------------------------------------------------------

CREATED_BY = "dnscorrelate.io/created-by"  # set on what `trace --agent` applies: it removes only those
SESSION_LABEL = "dnscorrelate.io/session"  # each session's objects: their own names (NAME-SESSION) and this label
LEASE_ANNOTATION = "dnscorrelate.io/lease-expires"  # renewed while the session lives; debris only once it has passed

MANIFEST = """\
# dnscorrelate's node agent: one pod per node that `dnscorrelate trace --agent` execs
# `python3 -m dnscorrelate agent` in, through the API server; it captures DNS packets in the node's and
# its pods' network namespaces with eBPF socket filters and streams them back on stdout. It listens on
# nothing and changes nothing on the node. `trace --agent` applies this and removes it afterwards
# (what you apply yourself it uses and leaves in place).
# No service account token, no RBAC: the CLI sends each agent the map of its node's pods on stdin (which
# pod a network namespace's cgroup belongs to), so the agent never talks to the API server.
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: dnsc-agent
  namespace: $namespace
  labels:
    app.kubernetes.io/name: dnsc-agent
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: dnsc-agent
  template:
    metadata:
      labels:
        app.kubernetes.io/name: dnsc-agent
    spec:
      # No API credentials in a node-root pod: the CLI hands the agent its node's pods on stdin.
      automountServiceAccountToken: false
      # hostPID: every pod's processes are in /proc, and a pod's network namespace is
      # /proc/PID/ns/net of one of them; /proc/1/ns/net is the node's own.
      hostPID: true
      # hostNetwork: the agent adds no pod network namespace of its own (nothing extra to trace,
      # no pod IP taken). It opens no connection: its stream goes back through the exec session.
      hostNetwork: true
      # Every node, control plane included: CoreDNS and clients may run on any of them.
      tolerations:
        - operator: Exists
      terminationGracePeriodSeconds: 5
      containers:
        - name: agent
          image: $image
          # IfNotPresent only for an image named with its registry or pinned by digest; a bare name (as
          # `make cluster` builds) is never pulled: it would resolve to a Docker Hub namespace we do not own.
          imagePullPolicy: $pull
          # Idles until exec'd into; exits on SIGTERM.
          command: ["python3", "-m", "dnscorrelate", "agent", "standby"]
          env:
            - name: NODE_NAME  # the vantage name of the node's namespace, and its hello
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
          securityContext:
            # Not privileged: only the capabilities below, every other one dropped.
            privileged: false
            allowPrivilegeEscalation: false
            runAsUser: 0  # other pods' /proc/PID/ns/net and the node's /proc/1 belong to root
            readOnlyRootFilesystem: true  # it writes nothing: the tracer is compiled already, in the image
            capabilities:
              drop: ["ALL"]
              add:
                # setns(2) into each pod's network namespace, to open the capture socket there; the kernel
                # also accepts it for bpf(2) (loading the tracer and its maps), so BPF and PERFMON, which
                # would cover that alone, add nothing, and older runtimes (Docker 20.10, under kind's
                # nodes) cannot grant them.
                - SYS_ADMIN
                - NET_RAW     # an AF_PACKET socket per namespace, which the socket filter is attached to
                - SYS_PTRACE  # open /proc/PID/ns/net of processes with more capabilities than ours (ptrace read access)
            # The runtime's default seccomp profile allows bpf(2) and setns(2) to a process holding
            # SYS_ADMIN: no need for Unconfined.
            seccompProfile:
              type: RuntimeDefault
          resources:
            requests:
              cpu: 50m
              memory: 200Mi  # Python with pandas
            limits:
              # pandas, and at most 64 MB of records waiting for a slow stream: a node-root process must not be
              # able to take the node's memory.
              memory: 1Gi
          # Nothing of the node's is mounted: no kernel headers (/lib/modules, /usr/src). The tracer is a CO-RE
          # object compiled when the image was built, which libbpf loads into the node's kernel.
$source_mount
$source_volume
"""

SOURCE_MOUNT = """\
          volumeMounts:
            # kind clusters made by `dnscorrelate cluster up`: the checkout, mounted into the nodes, so the
            # agent runs the code you have (the image's PYTHONPATH points here), and the tracer `make cluster`
            # compiled from it (live/bpf.py finds the object of the very source it runs).
            - name: src
              mountPath: /opt/dnscorrelate/src
              readOnly: true
            - name: tracer
              mountPath: /opt/dnscorrelate/tracer
              readOnly: true"""
SOURCE_VOLUME = """\
      volumes:
        - name: src
          hostPath:
            path: /opt/dnscorrelate/src
            type: Directory
        - name: tracer
          hostPath:
            path: /opt/dnscorrelate/tracer
            type: Directory"""


def manifest(image: str, source_from_host: bool = False, namespace: str = NAMESPACE) -> str:
    """The agent's manifest as YAML, with a comment on every privilege it takes. `source_from_host`: the package
    comes from the node's /opt/dnscorrelate/src (a kind cluster of `cluster up`), not from the image."""
    from string import Template

    return Template(MANIFEST).substitute(image=image, namespace=namespace, pull="IfNotPresent" if pullable(image) else "Never",
                                         source_mount=SOURCE_MOUNT if source_from_host else "",
                                         source_volume=SOURCE_VOLUME if source_from_host else "").replace("\n\n", "\n")


def install_objects(image: str, source_from_host: bool = False) -> list[dict]:
    """`agent install`: the namespace `dnscorrelate` (Pod Security "privileged": the agent is node-root, and only
    its pods run there), the manifest (the DaemonSet, no token, no RBAC) in it, and the Role USER_ROLE an admin binds
    users to: with it, and read access for the facts trace reads (the pods among them: the CLI sends each agent its
    node's pods), `trace --agent` needs nothing in kube-system and nothing cluster-wide."""
    import yaml

    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INSTALL_NAMESPACE, "labels": {
        "pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "privileged",
        "pod-security.kubernetes.io/audit": "privileged"}}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": USER_ROLE, "namespace": INSTALL_NAMESPACE}, "rules": [
                {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                # exec over a websocket is a GET, authorized as `get`; kubectl's SPDY exec a POST, `create`
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}]}
    objects = [o for o in yaml.safe_load_all(manifest(image, source_from_host, INSTALL_NAMESPACE)) if o]
    return [namespace, *objects, role]


def object_name(session: str | None) -> str:
    """The name of a session's agent objects (each session its own); the plain name is the manifest a user applies."""
    return NAME if session is None else f"{NAME}-{session}"


def pod_selector(session: str | None) -> dict[str, str]:
    return LABELS if session is None else {**LABELS, SESSION_LABEL: session}


def manifest_objects(image: str, source_from_host: bool = False, session: str | None = None) -> list[dict]:
    """The manifest's objects; with `session`, named and labelled for that session alone (`trace --agent`)."""
    import yaml

    objects = [o for o in yaml.safe_load_all(manifest(image, source_from_host)) if o]
    if session is None:
        return objects
    name, labels = object_name(session), pod_selector(session)
    for body in objects:
        body["metadata"]["name"] = name
        body["metadata"]["labels"] = {**body["metadata"].get("labels", {}), **labels}
        if body["kind"] == "DaemonSet":
            body["spec"]["selector"]["matchLabels"] = dict(labels)
            body["spec"]["template"]["metadata"]["labels"] = dict(labels)
    return objects
