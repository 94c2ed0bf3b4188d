"""The CLI's side of the node agent (`agent.py`): put the DaemonSet on a cluster, exec `dnscorrelate agent` in each
of its pods through the API server, read every node's stream (`live/agent_stream.py`) into one packet-event
table, and take everything away again.

    capture = AgentCapture(api, AgentOptions(image=...))   # what a Session captures with on such a cluster
    capture.start()     # apply (only what is missing), wait for one ready pod per node, exec, wait for each hello
    ...                 # capture.new_events(): every node's new packets, one table
    capture.stop()      # `stop` on each agent's stdin, its last counters, then delete what start() applied
    capture.events(), capture.stats          # stats["nodes"]: each node's loss and counters

Each session applies its own objects (`dnsc-agent-SESSION`, labelled `agent.SESSION_LABEL`), marked with the
annotation `agent.CREATED_BY` and a lease (`agent.LEASE_ANNOTATION`, an expiry time renewed every third of
its length while the session lives). Only what start() created is deleted by stop(); another session's
objects are taken for debris (a CLI killed with -9) and removed, by the next session or `agent cleanup`,
only once their lease has run out. A DaemonSet a user applied from `agent manifest` (`dnsc-agent`, not
marked) is used as it is and left in place.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pandas as pd

from dnscorrelate.cluster.kube.agent import (CREATED_BY, INSTALL_NAMESPACE, LEASE_ANNOTATION, NAME, NAMESPACE, REFRESH_S, SESSION_LABEL,
                                             manifest_objects, object_name, pod_map_line, pod_selector, pullable, test_clock_skews)
from dnscorrelate.errors import CaptureError, ClusterError, Uninterruptible
from dnscorrelate.live.agent_stream import MAX_NODE_RECORD_BYTES, NodeStream, drained_events, events_of, merged_stats, printable

READY_TIMEOUT_S = 120.0  # the image is on the nodes (or pulled), the container starts
HELLO_TIMEOUT_S = 90.0  # each agent loads its tracer (under a second; longer on a busy node) and attaches
STOP_TIMEOUT_S = 15.0  # each agent sends its last records and counters
GONE_TIMEOUT_S = 30.0  # the agent pods are gone after the DaemonSet is deleted
STDERR_KEPT = 4000
# Waiting reasons of a container that will not start by waiting longer.
FATAL_REASONS = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError", "CrashLoopBackOff", "StartError"}
AGENT_IMAGE_REPO = "dnscorrelate/agent"  # the runtime: the package comes from the node's /opt/dnscorrelate/src
STANDALONE_IMAGE_REPO = "dnscorrelate/agent-standalone"  # the runtime and the package
LEASE_ENV = "DNSCORRELATE_AGENT_LEASE_S"
DEFAULT_LEASE_S = 300.0  # a killed session's objects are debris this long after its last renewal


def lease_seconds() -> float:
    """The lease of a session's objects: $DNSCORRELATE_AGENT_LEASE_S (tests shorten it), else DEFAULT_LEASE_S."""
    text = os.environ.get(LEASE_ENV)
    if not text:
        return DEFAULT_LEASE_S
    try:
        value = float(text)
    except ValueError:
        raise ClusterError(f"${LEASE_ENV}={text!r}: not a number of seconds") from None
    if value < 3:
        raise ClusterError(f"${LEASE_ENV}={text!r}: a lease shorter than 3 s could expire between two renewals")
    return value


def lease_until(seconds: float, now: datetime | None = None) -> str:
    return ((now or datetime.now(timezone.utc)) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def lease_expired(annotations: dict | None, now: datetime | None = None) -> bool:
    """True when an object's lease has run out. Without a readable lease it is not ours to judge: False."""
    text = (annotations or {}).get(LEASE_ANNOTATION)
    if not text:
        return False
    try:
        until = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return (now or datetime.now(timezone.utc)) >= until


def new_session_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class AgentOptions:
    image: str | None = None  # None: an agent image every node already has, else `built`
    built: str | None = None  # the agent image made here (kind/build.py's `agent_image`), if any: the caller passes it
    source_from_host: bool = False  # kind clusters of `cluster up`: the package from the node's /opt/dnscorrelate/src
    ready_timeout: float = READY_TIMEOUT_S
    max_node_record_bytes: int = MAX_NODE_RECORD_BYTES  # records kept per node; beyond, dropped and counted
    clients: tuple[str, ...] = ()  # `trace`: each agent sends only these addresses' lookups (live/agent_filter.py); () all
    clock_skews: dict[str, int] = field(default_factory=test_clock_skews)  # tests only: node -> ns its clock is made ahead


@dataclass
class NodeAgent:
    node: str
    pod: str
    stream: NodeStream
    ws: object = None
    thread: threading.Thread | None = None
    stderr: bytearray = field(default_factory=bytearray)
    pod_map_sent: bytes = b""  # the last map of its node's pods written to its stdin


def image_on_every_node(nodes, preferred: str | None, repo: str = AGENT_IMAGE_REPO) -> str | None:
    """An image of `repo` every node already holds (`preferred` if so): a kind node's preloaded one, whatever build made it."""
    common = None
    for node in nodes:
        names = {n.split("/", 1)[1] if n.startswith("docker.io/") else n
                 for image in (node.status.images or []) for n in (image.names or [])}
        names = {n for n in names if n.split(":")[0] == repo}
        common = names if common is None else common & names
    if not common:
        return None
    return preferred if preferred in common else sorted(common)[-1]


def refused(what: str, err, needs: str) -> ClusterError:
    if err.status in (401, 403):
        return ClusterError(f"{what}: the API server refused ({err.status} {err.reason}): the credentials need {needs}")
    return ClusterError(f"{what}: the API server said {err.status} {err.reason}")


# kind -> (API class, create, read, delete, namespaced, list, patch). A session creates only the DaemonSet; the other
# kinds are what sessions of dnscorrelate before the pod map (an agent with a token and read access to pods) created,
# swept as any debris once their lease ran out (LEGACY_KINDS: a user who may not list them is not stopped by it).
CALLS = {
    "ServiceAccount": ("CoreV1Api", "create_namespaced_service_account", "read_namespaced_service_account",
                       "delete_namespaced_service_account", True, "list_namespaced_service_account",
                       "patch_namespaced_service_account"),
    "ClusterRole": ("RbacAuthorizationV1Api", "create_cluster_role", "read_cluster_role", "delete_cluster_role", False,
                    "list_cluster_role", "patch_cluster_role"),
    "ClusterRoleBinding": ("RbacAuthorizationV1Api", "create_cluster_role_binding", "read_cluster_role_binding",
                           "delete_cluster_role_binding", False, "list_cluster_role_binding", "patch_cluster_role_binding"),
    "DaemonSet": ("AppsV1Api", "create_namespaced_daemon_set", "read_namespaced_daemon_set",
                  "delete_namespaced_daemon_set", True, "list_namespaced_daemon_set", "patch_namespaced_daemon_set"),
}
LEGACY_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


INSTALL_CALLS = {  # kind -> (API class, create)
    "Namespace": ("CoreV1Api", "create_namespace"), "DaemonSet": ("AppsV1Api", "create_namespaced_daemon_set"),
    "Role": ("RbacAuthorizationV1Api", "create_namespaced_role"),
}


def install(api, image: str, source_from_host: bool = False) -> list[str]:
    """`agent install`: create what of `agent.install_objects` is missing (an admin, once); one line per object,
    created or already there (left as it is)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from dnscorrelate.cluster.kube.agent import install_objects

    done = []
    for body in install_objects(image, source_from_host):
        kind, meta = body["kind"], body["metadata"]
        group, create = INSTALL_CALLS[kind]
        what = f"{kind} {meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"
        if source_from_host and kind == "DaemonSet":
            body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
        try:
            getattr(getattr(client, group)(api), create)(*((meta["namespace"],) if "namespace" in meta else ()), body)
            done.append(f"created {what}")
        except ApiException as err:
            if err.status != 409:
                raise refused(f"creating {what}", err, f"create on {kind.lower()}s (agent install is an admin's, once)") from None
            done.append(f"{what} exists: left as it is")
    return done


def api_of(api, kind: str):
    from kubernetes import client

    return getattr(client, CALLS[kind][0])(api)


def delete_object(api, kind: str, name: str) -> str | None:
    """Delete one of the agent's objects; None when done (or already gone), else why not."""
    from kubernetes.client.rest import ApiException

    _, _, _, delete, namespaced, _, _ = CALLS[kind]
    try:
        getattr(api_of(api, kind), delete)(name, *((NAMESPACE,) if namespaced else ()), propagation_policy="Background")
    except ApiException as err:
        return None if err.status == 404 else f"{err.status} {err.reason}"
    except Exception as err:
        return err.__class__.__name__
    return None


@dataclass
class Swept:
    removed: list[str] = field(default_factory=list)  # "Kind name (session S, lease ran out at T)"
    leased: list[str] = field(default_factory=list)  # a live session's, left: "Kind name (session S, lease until T)"
    failed: list[str] = field(default_factory=list)  # expired, but could not be deleted: "Kind name (why)"


def remove_expired(api, now: datetime | None = None, keep_session: str | None = None) -> Swept:
    """Delete every session's agent objects whose lease has run out (a CLI killed before it could remove them);
    leave those of sessions still alive (and `keep_session`'s). `agent cleanup`, and each `trace --agent` at start."""
    from kubernetes.client.rest import ApiException

    swept = Swept()
    for kind in reversed(list(CALLS)):  # the DaemonSet first: its pods use the rest
        _, _, _, _, namespaced, listing, _ = CALLS[kind]
        try:
            items = getattr(api_of(api, kind), listing)(*((NAMESPACE,) if namespaced else ()),
                                                        label_selector=SESSION_LABEL).items
        except ApiException as err:
            if kind in LEGACY_KINDS and err.status in (401, 403):
                continue
            raise refused(f"listing the agents' {kind}s", err, f"list on {kind.lower()}s") from None
        for item in items:
            meta = item.metadata
            session = (meta.labels or {}).get(SESSION_LABEL, "?")
            until = (meta.annotations or {}).get(LEASE_ANNOTATION, "no lease")
            if session == keep_session or not (meta.annotations or {}).get(CREATED_BY) or not lease_expired(meta.annotations, now):
                swept.leased.append(f"{kind} {meta.name} (session {session}, lease until {until})")
                continue
            why = delete_object(api, kind, meta.name)
            if why is None:
                swept.removed.append(f"{kind} {meta.name} (session {session}, lease ran out at {until})")
            else:
                swept.failed.append(f"{kind} {meta.name} ({why})")
    return swept


class AgentCapture:
    """A Session's capture through the node agents: a `cluster.backend.Capture`, as a local one is."""

    def __init__(self, api, options: AgentOptions | None = None, ports: tuple[int, ...] = (53,), say=lambda _: None) -> None:
        self.api = api
        self.options = options or AgentOptions()
        self.ports = tuple(ports)
        self.say = say
        self.agents: list[NodeAgent] = []
        self.created: list[tuple[str, str]] = []  # (kind, name) applied by this capture, deleted by stop()
        self.session = new_session_id()
        self.lease_s = lease_seconds()
        self.daemonset = object_name(self.session)  # or NAME: a DaemonSet the user applied
        self.selector = pod_selector(self.session)
        self.daemonset_uid: str | None = None  # exec goes only into pods this DaemonSet owns
        self.swept = Swept()  # expired debris of other sessions removed at start
        self.not_owned: list[str] = []  # pods with the agent's labels that our DaemonSet does not own: never exec'd into
        self.namespace = NAMESPACE  # INSTALL_NAMESPACE when `agent install` put the agents there
        self._renewing = threading.Event()
        self._renewer: threading.Thread | None = None
        self._feeding = threading.Event()  # set: no more pod maps to the agents
        self._feeder: threading.Thread | None = None
        self.pod_map_failures = 0  # listings of the pods that failed mid-session (each agent keeps its last map)
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self.image = ""
        self.stats: dict = {}
        self._frame: pd.DataFrame | None = None
        self._stopped = False

    # --- Capture's interface ----------------------------------------------------

    @property
    def vantages(self) -> dict:
        return {f"{a.node}/{cid}": v for a in self.agents for cid, v in dict(a.stream.vantages).items()}

    @property
    def compile_seconds(self) -> float:
        return max((float(a.stream.hello.get("compile_seconds", 0)) for a in self.agents if a.stream.hello), default=0.0)

    @property
    def attach_seconds(self) -> float:
        return max((float(a.stream.hello.get("attach_seconds", 0)) for a in self.agents if a.stream.hello), default=0.0)

    @property
    def tracer_kind(self) -> str:
        return ",".join(sorted({a.stream.hello.get("tracer") or "?" for a in self.agents if a.stream.hello}))

    @property
    def remote_nodes(self) -> list[str]:
        return [agent.node for agent in self.agents]

    def __enter__(self) -> AgentCapture:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        try:
            started = time.monotonic()
            self.deploy()
            self.timings["deploy_seconds"] = round(time.monotonic() - started, 3)
            pods = self.wait_ready()
            self.timings["ready_seconds"] = round(time.monotonic() - started, 3)
            maps = self.pod_maps()
            for node, pod in sorted(pods.items()):
                agent = self.open(node, pod)
                self.agents.append(agent)
                self.send_pod_map(agent, maps.get(node, {}))
            self._feeder = threading.Thread(target=self.feed_pod_maps, name="dnscorrelate-agent-pods", daemon=True)
            self._feeder.start()
            self.wait_hello()
            self.timings["start_seconds"] = round(time.monotonic() - started, 3)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._feeding.set()
            if self._feeder is not None:
                self._feeder.join(10)
            for agent in self.agents:
                self.ask_to_stop(agent)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for agent in self.agents:
                if agent.thread is not None:
                    agent.thread.join(max(0.0, deadline - time.monotonic()))
            for agent in self.agents:
                try:
                    agent.ws.close()
                except Exception:
                    pass
                if agent.thread is not None:
                    agent.thread.join(2)
                agent.stream.close()
                if agent.stream.cut:
                    self.warnings.append(f"node {agent.node}: the agent's stream ended without its last counters "
                                         f"(the agent stopped or the connection broke){self.stderr_tail(agent)}: loss after "
                                         "its last counters is unknown")
            self.stats = merged_stats([a.stream for a in self.agents])
            self.stats.update(self.timings)
            if self.pod_map_failures:
                self.stats["pod_map_failures"] = self.pod_map_failures
        finally:
            self.remove()

    def new_events(self) -> pd.DataFrame:
        return events_of([a.stream for a in self.agents], new=True)

    def drain(self, last: bool = False) -> pd.DataFrame:
        """Each node's records so far, decoded and forgotten, each row naming its node (`capture --agent -o DIR/`
        writes them to a file per node as they come); `last` (after `stop`) completes `stats`."""
        streams = [a.stream for a in self.agents]
        frame = drained_events(streams, last)
        if last:
            self.stats = {**merged_stats(streams), **self.timings, "packets": sum(int(s.drained["packets"]) for s in streams)}
            self._frame = frame.iloc[0:0]  # all handed out: `events()` (Session.drain_events calls it) keeps these counters
        return frame

    def events(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = events_of([a.stream for a in self.agents])
            self.stats = {**merged_stats([a.stream for a in self.agents]), **self.timings, "packets": len(self._frame)}
        return self._frame

    # --- the DaemonSet ----------------------------------------------------------------

    def client(self, group: str):
        from kubernetes import client

        return getattr(client, group)(self.api)

    def call(self, what: str, fn, *args, needs: str = "", **kwargs):
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            raise refused(what, err, needs) from None
        except HTTPError as err:
            raise ClusterError(f"{what}: the API server is unreachable ({err.__class__.__name__}); check --context") from None

    def pick_image(self) -> str:
        if self.options.image:
            return self.options.image
        nodes = self.call("listing the nodes", self.client("CoreV1Api").list_node, needs="list on nodes").items
        from_host = self.options.source_from_host
        built = self.options.built
        image = image_on_every_node(nodes, built, AGENT_IMAGE_REPO if from_host else STANDALONE_IMAGE_REPO) or built
        if image is None:
            raise ClusterError("no agent image on the nodes and none built here: name one with --agent-image")
        return image

    def deploy(self) -> None:
        """A DaemonSet the user applied (`dnsc-agent`, not marked as ours) is used as it is; else this session's own
        objects are created, marked, leased and renewed. Other sessions' objects whose lease ran out go first."""
        installed = self.installed_daemonset()
        if installed is not None:  # `agent install`: nothing to apply, nothing to sweep (the user may only exec there)
            self.namespace, self.daemonset = INSTALL_NAMESPACE, NAME
            self.selector, self.daemonset_uid = dict(installed.spec.selector.match_labels or {}), installed.metadata.uid
            return
        self.swept = remove_expired(self.api, keep_session=self.session)
        if self.swept.removed:
            self.say("removed the debris of killed sessions: " + ", ".join(self.swept.removed))
        users = self.users_daemonset()
        if users is not None:
            self.daemonset, self.selector = NAME, dict(users.spec.selector.match_labels or {})
            self.daemonset_uid = users.metadata.uid
            return
        self.image = self.pick_image()
        for body in manifest_objects(self.image, self.options.source_from_host, self.session):
            kind, name = body["kind"], body["metadata"]["name"]
            group, create, _, _, namespaced, _, _ = CALLS[kind]
            ns_args = (NAMESPACE,) if namespaced else ()  # the on-the-fly mode: kube-system, as before
            if self.options.source_from_host and kind == "DaemonSet":  # a kind node of ours: never try a registry
                body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
            body["metadata"].setdefault("annotations", {}).update(
                {CREATED_BY: "dnscorrelate trace --agent", LEASE_ANNOTATION: lease_until(self.lease_s)})
            made = self.call(f"creating {kind} {name}", getattr(self.client(group), create), *ns_args, body,
                             needs=f"create on {kind.lower()}s (or have an admin apply `dnscorrelate agent manifest` once)")
            self.created.append((kind, name))
            if kind == "DaemonSet":
                self.daemonset_uid = made.metadata.uid
        self._renewer = threading.Thread(target=self.renew_leases, name="dnscorrelate-agent-lease", daemon=True)
        self._renewer.start()

    def installed_daemonset(self):
        """The DaemonSet `agent install` put in its own namespace, if there is one (a 403 there: not installed for us)."""
        from kubernetes.client.rest import ApiException

        try:
            return self.client("AppsV1Api").read_namespaced_daemon_set(NAME, INSTALL_NAMESPACE)
        except ApiException as err:
            if err.status in (403, 404):
                return None
            raise refused(f"reading DaemonSet {INSTALL_NAMESPACE}/{NAME}", err, "get on daemonsets") from None

    def users_daemonset(self):
        """The DaemonSet `dnsc-agent` a user applied from `agent manifest`, if there is one (an older dnscorrelate's
        marked one is neither used nor removed)."""
        from kubernetes.client.rest import ApiException

        try:
            existing = self.client("AppsV1Api").read_namespaced_daemon_set(NAME, NAMESPACE)
        except ApiException as err:
            if err.status == 404:
                return None
            raise refused(f"reading DaemonSet {NAME}", err, "get on daemonsets") from None
        if (existing.metadata.annotations or {}).get(CREATED_BY) or existing.metadata.deletion_timestamp is not None:
            return None
        return existing

    def renew_leases(self) -> None:
        """Push this session's lease forward every third of its length until stop(); a renewal that fails is a warning
        (another session may then take the objects for debris once the lease runs out)."""
        while not self._renewing.wait(self.lease_s / 3):
            until = lease_until(self.lease_s)
            for kind, name in list(self.created):
                _, _, _, _, namespaced, _, patch = CALLS[kind]
                try:
                    getattr(self.client(CALLS[kind][0]), patch)(name, *((NAMESPACE,) if namespaced else ()),
                                                                {"metadata": {"annotations": {LEASE_ANNOTATION: until}}})
                except Exception as err:
                    warning = (f"renewing the lease of {kind} {name} failed ({getattr(err, 'status', '')} "
                               f"{getattr(err, 'reason', err.__class__.__name__)}): the credentials need patch on "
                               f"{kind.lower()}s; after {until} another session may remove it")
                    if warning not in self.warnings:
                        self.warnings.append(warning)

    def agent_pods(self) -> list:
        """Our DaemonSet's pods: the label selects, the owner reference decides (a pod that only carries the labels
        is never exec'd into, and said)."""
        selector = ",".join(f"{k}={v}" for k, v in self.selector.items())
        pods = self.call("listing the agent pods", self.client("CoreV1Api").list_namespaced_pod, self.namespace,
                         label_selector=selector, needs=f"list on pods in {self.namespace}").items
        owned = [p for p in pods if owned_by(p, self.daemonset_uid)]
        for pod in pods:
            if pod not in owned and pod.metadata.name not in self.not_owned:
                self.not_owned.append(pod.metadata.name)
                self.warnings.append(f"pod {self.namespace}/{pod.metadata.name} carries the agent's labels but DaemonSet "
                                     f"{self.daemonset} does not own it: not exec'd into")
        return owned

    def wait_ready(self) -> dict[str, str]:
        """node -> its agent pod, once every node the DaemonSet runs on has a ready one; a clear error otherwise."""
        deadline = time.monotonic() + self.options.ready_timeout
        self.say("waiting for the agent pods")
        while True:
            ds = self.call("reading the agent DaemonSet", self.client("AppsV1Api").read_namespaced_daemon_set,
                           self.daemonset, self.namespace, needs=f"get on daemonsets in {self.namespace}")
            desired = (ds.status.desired_number_scheduled or 0) if ds.status else 0
            scheduled = (ds.status.current_number_scheduled or 0) if ds.status else 0
            pods = [p for p in self.agent_pods() if p.metadata.deletion_timestamp is None]
            ready = {p.spec.node_name: p.metadata.name for p in pods if pod_ready(p)}
            fatal = [f"{p.metadata.name} on node {p.spec.node_name}: {reason}" for p in pods
                     if (reason := fatal_reason(p)) is not None]
            # every pod the DaemonSet made, not only as many as its status counted so far: a status read while the
            # controller was still scheduling once let a session start with one node's agent while the other pulled
            if desired and len(ready) >= max(desired, scheduled) and len(ready) == len(pods):
                return ready
            if fatal:
                hint = ("" if not self.image or pullable(self.image) else f"; {self.image} is a bare name, never pulled "
                        "(it would resolve to a Docker Hub namespace we do not own): name its registry "
                        "(registry.example.com/...) or pin it by digest (...@sha256:...)")
                raise ClusterError(f"the agent pods cannot start (image {self.image}): " + "; ".join(fatal) + hint)
            if time.monotonic() > deadline:
                waiting = [f"{p.metadata.name} on node {p.spec.node_name}: {pod_state(p)}" for p in pods if not pod_ready(p)]
                raise ClusterError(f"the agent pods are not ready after {self.options.ready_timeout:.0f} s "
                                   f"({len(ready)} of {desired} nodes): " + ("; ".join(waiting) or "no pod was created "
                                   f"(kubectl -n {self.namespace} describe daemonset {self.daemonset})"))
            time.sleep(0.5)

    def remove(self) -> None:
        """Delete what this capture applied (the DaemonSet first), and wait for its pods to go. Ctrl-C, SIGTERM and
        SIGHUP meanwhile are held until it is done (then raised): a second Ctrl-C does not leave debris."""
        self._renewing.set()
        if not self.created:
            return
        with Uninterruptible(lambda name: self.say(f"{name}: removing the node agents first")):
            self.remove_created()

    def remove_created(self) -> None:
        left = []
        for kind, name in sorted(self.created, key=lambda c: list(CALLS).index(c[0]), reverse=True):
            why = delete_object(self.api, kind, name)
            if why is not None:
                left.append(f"{kind} {name} ({why})")
        removed_daemonset = ("DaemonSet", self.daemonset) in self.created
        self.created = []
        if left:
            self.warnings.append("could not remove " + ", ".join(left) + ": `dnscorrelate agent cleanup` removes them "
                                 f"once their lease has run out ({self.lease_s:.0f} s)")
            return
        if removed_daemonset:
            deadline = time.monotonic() + GONE_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    if not self.agent_pods():
                        return
                except ClusterError:
                    return
                time.sleep(0.5)

    # --- the pod maps: the agents have no API access; the CLI tells each its node's pods ------------------------

    def pod_maps(self) -> dict:
        """Every node's pods by UID (`discovery.pod_refs_of`: host-network pods are their node), from one listing of
        the cluster's pods (served from the API server's cache)."""
        from dnscorrelate.cluster.kube.discovery import pod_refs_of

        pods = self.call("listing the pods", self.client("CoreV1Api").list_pod_for_all_namespaces, resource_version="0",
                         needs="list on pods (the CLI tells each node agent its node's pods)").items
        by_node: dict[str, list] = {}
        for pod in pods:
            if pod.spec.node_name:
                by_node.setdefault(pod.spec.node_name, []).append(pod)
        return {node: pod_refs_of(items) for node, items in by_node.items()}

    @staticmethod
    def send_pod_map(agent: NodeAgent, pods: dict) -> None:
        """Its node's pods on the agent's stdin, when they changed since the last map it got."""
        line = pod_map_line(pods)
        if line == agent.pod_map_sent or agent.ws is None:
            return
        try:
            if agent.ws.is_open():
                agent.ws.write_stdin(line)
                agent.pod_map_sent = line
        except Exception:  # its session ended: its stream says how
            pass

    def feed_pod_maps(self) -> None:
        """Every REFRESH_S until stop(): the pods again, and each agent whose node's pods changed gets its new map (a pod
        started mid-capture is attached by its node's agent). A failed listing is counted and warned of once; the
        agents keep the map they have."""
        while not self._feeding.wait(REFRESH_S):
            try:
                maps = self.pod_maps()
            except ClusterError as err:
                self.pod_map_failures += 1
                warning = f"reading the pods for the node agents failed ({err}): pods started since are not traced"
                if warning not in self.warnings:
                    self.warnings.append(warning)
                continue
            for agent in self.agents:
                self.send_pod_map(agent, maps.get(agent.node, {}))

    # --- the streams -----------------------------------------------------------------

    def open(self, node: str, pod: str) -> NodeAgent:
        """Exec `dnscorrelate agent` in the node's agent pod; a thread feeds its stdout to the node's stream."""
        from kubernetes import client as k8s
        from kubernetes.stream import stream

        agent = NodeAgent(node, pod, NodeStream(node, max_record_bytes=self.options.max_node_record_bytes))
        command = ["python3", "-m", "dnscorrelate", "agent", *[a for p in self.ports for a in ("--port", str(p))]]
        command += [a for address in self.options.clients for a in ("--client", address)]
        if skew := self.options.clock_skews.get(node):
            command += ["--test-clock-skew-ns", str(skew)]
        # Each exec its own ApiClient: stream() swaps the client's request function for a websocket while it runs.
        exec_api = k8s.ApiClient(configuration=self.api.configuration)
        try:
            agent.ws = stream(k8s.CoreV1Api(exec_api).connect_get_namespaced_pod_exec, pod, self.namespace, command=command,
                              stdin=True, stdout=True, stderr=True, tty=False, binary=True, _preload_content=False)
        except Exception as err:  # the client wraps the websocket's handshake failure in an ApiException(status 0)
            text = str(getattr(err, "reason", "") or err)
            if "403" in text or "401" in text:
                raise ClusterError(f"exec into {self.namespace}/{pod} (the agent on node {node}) was refused: the credentials "
                                   f"need create on pods/exec in {self.namespace}") from None
            raise ClusterError(f"exec into {self.namespace}/{pod} (the agent on node {node}) failed: {text}") from None
        keep_nothing(agent.ws)
        agent.thread = threading.Thread(target=self.read, args=(agent,), name=f"dnscorrelate-agent-{node}", daemon=True)
        agent.thread.start()
        return agent

    @staticmethod
    def read(agent: NodeAgent) -> None:
        ws, stream = agent.ws, agent.stream
        try:
            while ws.is_open() and not stream.closed:
                ws.update(timeout=1)
                out = ws.read_channel(1)
                if out:
                    stream.feed(out)
                err = ws.read_channel(2)
                if err:
                    agent.stderr += err
                    del agent.stderr[:-STDERR_KEPT]
            out = ws.read_channel(1)  # what arrived with the close
            if out:
                stream.feed(out)
        except Exception as err:  # a broken connection: the stream is cut, and says so
            if stream.error is None and not stream.ended:
                agent.stderr += f"\n(the connection broke: {err.__class__.__name__}: {err})".encode()
        finally:
            stream.close()

    def wait_hello(self) -> None:
        """Until every agent said hello (it captures) or why it cannot; nodes that cannot are warnings, all of them an error."""
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        while any(a.stream.hello is None and not a.stream.closed and a.stream.error is None for a in self.agents):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        failed = []
        for agent in self.agents:
            s = agent.stream
            if s.hello is not None and s.error is None:
                continue
            if s.error is not None:
                why = s.error
            elif s.closed:
                why = f"the agent ended before capturing{self.stderr_tail(agent)}"
            else:
                why = f"no answer within {HELLO_TIMEOUT_S:.0f} s{self.stderr_tail(agent)}"
            failed.append(f"node {agent.node}: cannot capture: {why}")
        if failed and len(failed) == len(self.agents):
            raise CaptureError("no node agent could capture: " + "; ".join(failed))
        self.warnings += [f"{line} (its pods are not traced)" for line in failed]

    @staticmethod
    def stderr_tail(agent: NodeAgent) -> str:
        lines = printable(bytes(agent.stderr).decode("utf-8", "replace")).strip().splitlines()
        return f" ({' | '.join(lines[-3:])})" if lines else ""

    @staticmethod
    def ask_to_stop(agent: NodeAgent) -> None:
        """A line `stop` and stdin closed: the agent sends its last records and counters and ends."""
        try:
            if agent.ws is not None and agent.ws.is_open():
                agent.ws.write_stdin(b"stop\n")
                try:
                    agent.ws.close_channel(0)
                except Exception:  # the v4 protocol has no close; `stop` is enough
                    pass
        except Exception:
            pass


def keep_nothing(ws) -> None:
    """The websocket client keeps a copy of all stdout for read_all() unless made with capture_all=False, which
    stream() cannot pass through (kubernetes 37 validates the API method's arguments and rejects it): a whole
    session's stream would stay in memory twice. Swap in the client's own discarding buffer."""
    from kubernetes.stream import ws_client

    ignored = getattr(ws_client, "_IgnoredIO", None)
    if ignored is not None and hasattr(ws, "_all"):
        ws._all = ignored()


def owned_by(pod, daemonset_uid: str | None) -> bool:
    """True when `pod` is a pod of the DaemonSet with this UID (its controller owner reference)."""
    return daemonset_uid is not None and any(
        ref.kind == "DaemonSet" and ref.uid == daemonset_uid and ref.controller for ref in pod.metadata.owner_references or [])


def pod_ready(pod) -> bool:
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def fatal_reason(pod) -> str | None:
    for status in pod.status.container_statuses or []:
        state = status.state
        if state.waiting is not None and state.waiting.reason in FATAL_REASONS:
            last = status.last_state.terminated if status.last_state else None
            detail = (last.message or last.reason) if last is not None and (last.message or last.reason) else state.waiting.message
            return f"{state.waiting.reason}" + (f": {detail.strip()[:300]}" if detail else "")
    return None


def pod_state(pod) -> str:
    for status in pod.status.container_statuses or []:
        if status.state.waiting is not None:
            return status.state.waiting.reason or "waiting"
    conditions = [c for c in pod.status.conditions or [] if c.status != "True"]
    return (conditions[0].message or conditions[0].reason or conditions[0].type) if conditions else pod.status.phase or "pending"
