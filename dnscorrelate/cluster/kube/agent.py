"""`dnscorrelate agent`: the node agent, for a cluster whose nodes do not run where the CLI runs.

It runs in a pod of the `dnsc-agent` DaemonSet (`manifest()`), one per node, and does on its node what
`trace --context` does on a host that runs the nodes (`discovery.py`): the node's own network namespace
(`/proc/1/ns/net`, hostPID) and every pod's (`/proc/PID/ns/net`, the pod UID in the process's cgroup,
this node's pods read from the API), vantages named `NS/NAME` and the node's name as a local capture
names them; pods that start mid-capture are attached within REFRESH_S. It streams the tracer's records
to stdout in `live/agent_stream.py`'s format, with its counters every STATS_INTERVAL_S and at the end.

    python3 -m dnscorrelate agent            # exec'd by the CLI in an agent pod; stops when stdin closes,
                                             # on a line `stop`, on SIGTERM or SIGINT, after --duration
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
from typing import BinaryIO

from dnscorrelate.cluster.backend import Target
from dnscorrelate.cluster.kube.discovery import PROC, PodRef, pod_refs_of, pod_targets
from dnscorrelate.errors import CaptureError, ClusterError
from dnscorrelate.live.agent_stream import FRAME_RECORDS, StreamWriter, bounded
from dnscorrelate.live.capture import DEFAULT_PORTS, Capture

NAME = "dnsc-agent"
NAMESPACE = "kube-system"  # the on-the-fly mode (`trace --agent` applies and removes it)
INSTALL_NAMESPACE = "dnscorrelate"  # `agent install`: once, by an admin, in a namespace of its own
USER_ROLE = "dnscorrelate-user"  # the Role there a user needs: find the agent pods and exec into them
LABELS = {"app.kubernetes.io/name": NAME}
RBAC_GRACE_S = 15.0  # each session's ClusterRoleBinding is new: the API server may refuse the first listing meanwhile
REFRESH_S = 2.0  # this node's pods are read from the API at most this often (a new pod: attached within it)
SEND_INTERVAL_S = 0.05  # records reach the stream at most this late
STATS_INTERVAL_S = 1.0
MAX_PENDING_BYTES = 64 << 20  # records waiting for a stream that fell behind; older ones beyond are dropped (counted)


class NodeDiscovery:
    """This node's namespaces: its own (the node's: /proc/1/ns/net with hostPID) and its pods', found in /proc."""

    def __init__(self, node: str, api=None, proc: Path = PROC) -> None:
        self.node = node
        self.proc = proc
        self.api = api
        self.errors = 0  # failed pod listings while capturing (the previous listing is kept)
        self._pods: dict[str, PodRef] = {}
        self._read = 0.0

    def read_pods(self) -> dict[str, PodRef]:
        from kubernetes import client

        from dnscorrelate.cluster.kubeapi import client_from_kubeconfig

        if self.api is None:
            self.api = client_from_kubeconfig()  # in the pod: its service account
        listing = client.CoreV1Api(self.api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}")
        return pod_refs_of(listing.items)

    def pods(self) -> dict[str, PodRef]:
        if time.monotonic() - self._read > REFRESH_S:
            self._pods = self.read_pods()
            self._read = time.monotonic()
        return self._pods

    def targets(self) -> list[Target]:
        """The namespaces now; an API failure here is the agent's error (it could name no pod)."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        deadline = time.monotonic() + RBAC_GRACE_S
        while True:
            try:
                pods = self.pods()
                break
            except ApiException as err:
                if err.status == 403 and time.monotonic() < deadline:  # its binding, made a moment ago, not yet in effect
                    time.sleep(0.5)
                    continue
                raise ClusterError(f"listing this node's pods failed: the API server said {err.status} {err.reason} "
                                   f"(the agent's service account needs list on pods)") from None
            except HTTPError as err:
                raise ClusterError(f"listing this node's pods failed: the API server is unreachable ({err})") from None
        return pod_targets(pods, {self.node: 1}, self.proc)

    def watcher(self) -> Callable[[], list[Target]]:
        def new_targets() -> list[Target]:
            try:
                pods = self.pods()
            except Exception:  # an API hiccup mid-capture: keep capturing what is known, count it
                self.errors += 1
                self._read = time.monotonic()
                pods = self._pods
            return pod_targets(pods, {self.node: 1}, self.proc)

        return new_targets


class Agent:
    """One capture on this node, forwarded to `out` until told to stop."""

    def __init__(self, out: BinaryIO, node: str, ports: tuple[int, ...] = DEFAULT_PORTS, discovery=None,
                 capture_factory: Callable[..., Capture] = Capture, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.writer = StreamWriter(out)
        self.node = node
        self.ports = ports
        self.discovery = discovery if discovery is not None else NodeDiscovery(node)
        self.capture_factory = capture_factory
        self.max_pending_bytes = max_pending_bytes
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
                "discovery_errors": getattr(self.discovery, "errors", 0),
                "seconds": round(time.monotonic() - self.started, 3)}

    def flush(self) -> None:
        """Everything read since the last flush: new vantages first (records never precede their vantage:
        the capture thread names a namespace before it polls records of it), then the records."""
        batches = self.capture.take_raw()
        self.send_vantages()
        raw, dropped = bounded(batches, self.max_pending_bytes)
        self.dropped += dropped
        step = FRAME_RECORDS * self.capture_record_size
        for start in range(0, len(raw), step):
            self.writer.records(raw[start:start + step])

    def send_vantages(self) -> None:
        for capture_id, vantage in list(self.capture.vantages.items()):
            if capture_id not in self.sent_vantages:
                self.writer.vantage(capture_id, vantage)
                self.sent_vantages.add(capture_id)

    @property
    def capture_record_size(self) -> int:
        from dnscorrelate.sources.bpf import EVENT_DTYPE

        return EVENT_DTYPE.itemsize

    def run(self, duration: float | None = None) -> int:
        """Capture and stream until stopped; 0 when the stream ended cleanly, 2 when this node cannot capture."""
        try:
            self.capture = self.capture_factory(self.discovery.targets(), ports=self.ports, watch=self.discovery.watcher())
            self.capture.start()
        except (CaptureError, ClusterError) as err:
            self.writer.error(on_a_node(str(err)))
            self.writer.end({})
            return 2
        from dnscorrelate import __version__

        self.send_vantages()  # before hello: a CLI that has the hello knows every namespace captured from the start
        self.writer.hello(node=self.node, version=__version__, kernel=os.uname().release,
                          boot_to_wall_ns=self.capture.boot_to_wall, compile_seconds=round(self.capture.compile_seconds, 3),
                          tracer=self.capture.tracer_kind,
                          attach_seconds=round(self.capture.attach_seconds, 4), namespaces=len(self.capture.vantages))
        try:
            next_stats = time.monotonic() + STATS_INTERVAL_S
            while not self.stop_event.wait(SEND_INTERVAL_S):
                self.flush()
                if time.monotonic() >= next_stats:
                    self.writer.stats(self.counters())
                    next_stats = time.monotonic() + STATS_INTERVAL_S
                if duration is not None and time.monotonic() - self.started >= duration:
                    break
            self.capture.stop()
            self.flush()
            self.writer.end(self.counters())
        except BrokenPipeError:  # the CLI is gone: nobody to tell
            self.capture.stop()
        return 0


def on_a_node(message: str) -> str:
    """A capture error's advice, for a node rather than the machine `make setup` prepares (bcc's advice: the agent
    uses bcc only when DNSCORRELATE_TRACER=bcc is set in its pod)."""
    return message.replace("run `make setup`", "the agent's own tracer needs no headers: leave DNSCORRELATE_TRACER "
                           "unset in its pod (it loads the CO-RE object its image carries)")


def watch_stdin(stdin: BinaryIO, stop: Callable[[], None]) -> threading.Thread:
    """Stop when stdin closes (the exec session ended) or says `stop`."""

    def read() -> None:
        try:
            for line in iter(stdin.readline, b""):
                if line.strip() == b"stop":
                    break
        except (OSError, ValueError):
            pass
        stop()

    thread = threading.Thread(target=read, name="dnscorrelate-agent-stdin", daemon=True)
    thread.start()
    return thread


def main(node: str | None, ports: tuple[int, ...], duration: float | None) -> int:
    """`dnscorrelate agent`: capture on this node, stream to stdout."""
    node = node or os.environ.get("NODE_NAME") or os.uname().nodename
    # The agent loads the CO-RE object (no compiler, no kernel headers on the node); bcc only when asked.
    os.environ.setdefault("DNSCORRELATE_TRACER", "core")
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by mistake must not corrupt the stream
    agent = Agent(out, node, ports)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    watch_stdin(sys.stdin.buffer, agent.stop)
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
apiVersion: v1
kind: ServiceAccount
metadata:
  name: dnsc-agent
  namespace: $namespace
---
# Read-only: the agent names a namespace by the pod whose UID is in its processes' cgroup, and asks
# for the pods of its own node only (a field selector; RBAC cannot narrow list by field).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: dnsc-agent
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: dnsc-agent
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: dnsc-agent
subjects:
  - kind: ServiceAccount
    name: dnsc-agent
    namespace: $namespace
---
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
      serviceAccountName: dnsc-agent
      # hostPID: every pod's processes are in /proc, and a pod's network namespace is
      # /proc/PID/ns/net of one of them; /proc/1/ns/net is the node's own.
      hostPID: true
      # hostNetwork: the agent adds no pod network namespace of its own (nothing extra to trace,
      # no pod IP taken); it reaches the API server as the node does.
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
            - name: NODE_NAME  # the vantage name of the node's namespace, and whose pods to list
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
    its pods run there), the manifest in it, and the Role USER_ROLE an admin binds users to: with it, and read
    access for the facts trace reads, `trace --agent` needs nothing in kube-system and nothing cluster-wide."""
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
    for body in objects[1:3]:  # cluster-wide names apart from the kube-system manifest's, which may be applied too
        body["metadata"]["name"] = INSTALL_NAMESPACE + "-agent"
    objects[2]["roleRef"]["name"] = INSTALL_NAMESPACE + "-agent"
    return [namespace, *objects, role]


def pullable(image: str) -> bool:
    """True for an image a node may pull: pinned by digest, or named with its registry (`host.tld/...`,
    `host:port/...`, `localhost/...`). A bare `dnscorrelate/agent:TAG` would be pulled from docker.io/dnscorrelate,
    a namespace this project does not own, so such a name is only run where the nodes already hold it."""
    if "@sha256:" in image:
        return True
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


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
        if body["kind"] == "ClusterRoleBinding":
            body["roleRef"]["name"] = name
            body["subjects"][0]["name"] = name
        if body["kind"] == "DaemonSet":
            body["spec"]["selector"]["matchLabels"] = dict(labels)
            pod = body["spec"]["template"]
            pod["metadata"]["labels"] = dict(labels)
            pod["spec"]["serviceAccountName"] = name
    return objects
