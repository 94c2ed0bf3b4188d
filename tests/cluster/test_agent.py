"""The node agent as a real DaemonSet on the kind cluster: `trace --agent` (the CO-RE tracer, on nodes whose
/lib/modules and /usr/src are hidden) gets the same lookups, hops and vantages as a local capture (bcc, here); pods
started mid-capture are traced; what goes wrong (pods that never start, an agent that cannot load its tracer,
credentials without exec, a CLI killed mid-session) is said clearly and leaves nothing behind."""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.kube.agent import LABELS, NAME, NAMESPACE, SESSION_LABEL, manifest_objects
from dnscorrelate.cluster.kind.build import agent_image
from dnscorrelate.cluster.kube.agents import LEASE_ENV, AgentCapture, AgentOptions
from tests.subprocesses import ctrl_c_reaches_it

SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())


def core(cluster):
    return k8s.CoreV1Api(kind.api_client(cluster))


def dig(cluster, name, pod="mypod"):
    return stream(core(cluster).connect_get_namespaced_pod_exec, pod, "demo",
                  command=["dig", "+short", "+tries=1", "+timeout=2", name], stderr=True, stdin=False, stdout=True, tty=False)


def wait_for(probe, what, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def session_objects(cluster):
    """Every session's agent objects still on the cluster, as (kind, name)."""
    api = kind.api_client(cluster)
    found = []
    for kind_, items in (
            ("ServiceAccount", k8s.CoreV1Api(api).list_namespaced_service_account(NAMESPACE, label_selector=SESSION_LABEL)),
            ("ClusterRole", k8s.RbacAuthorizationV1Api(api).list_cluster_role(label_selector=SESSION_LABEL)),
            ("ClusterRoleBinding", k8s.RbacAuthorizationV1Api(api).list_cluster_role_binding(label_selector=SESSION_LABEL)),
            ("DaemonSet", k8s.AppsV1Api(api).list_namespaced_daemon_set(NAMESPACE, label_selector=SESSION_LABEL))):
        found += [(kind_, item.metadata.name) for item in items.items]
    return found


def nothing_left(cluster):
    """No agent DaemonSet or pod remains, and no service account or RBAC object of ours (the agent has none now; an
    older dnscorrelate made them), of any session or the plain manifest (the pods may take a moment to go)."""
    api = kind.api_client(cluster)
    wait_for(lambda: not core(cluster).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items, "agent pods to go")
    assert session_objects(cluster) == []
    for read in (lambda: k8s.AppsV1Api(api).read_namespaced_daemon_set(NAME, NAMESPACE),
                 lambda: k8s.CoreV1Api(api).read_namespaced_service_account(NAME, NAMESPACE),
                 lambda: k8s.RbacAuthorizationV1Api(api).read_cluster_role(NAME),
                 lambda: k8s.RbacAuthorizationV1Api(api).read_cluster_role_binding(NAME)):
        with pytest.raises(ApiException) as err:
            read()
        assert err.value.status == 404
    return True


class Trace:
    """`dnscorrelate trace pod/mypod -n demo -o json` on the cluster, in the background, until interrupted."""

    def __init__(self, cluster, tmp_path, *extra, kubeconfig=None, pod="mypod", env=None):
        self.out_path = tmp_path / f"trace-{uuid.uuid4().hex[:6]}.jsonl"
        self.stderr: list[str] = []
        self.started = threading.Event()
        with self.out_path.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dnscorrelate", "trace", f"pod/{pod}", "-n", "demo", "--context", cluster.context,
                 "--kubeconfig", str(kubeconfig or cluster.kubeconfig), "-o", "json", *extra],
                stdout=out, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, preexec_fn=ctrl_c_reaches_it)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("tracing "):
                self.started.set()
        self.started.set()  # it ended (an error): wait no longer

    def wait_started(self, timeout_s=180):
        assert self.started.wait(timeout_s) and self.proc.poll() is None, self.err

    def finish(self, timeout_s=180, interrupt=True):
        """Its exit code; with `interrupt`, after Ctrl-C (else it must end by itself: an error)."""
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout_s)
        time.sleep(0.2)  # the reader thread takes the last lines
        return self.proc.returncode

    @property
    def err(self):
        return "".join(self.stderr)

    def records(self):
        return {r["qname"]: r for r in map(json.loads, self.out_path.read_text().splitlines())}


def hop_keys(record, skip_roles=()):
    return sorted((h["vantage"], h["pkt_type"], h["src_ip"], h["src_port"], h["dst_ip"], h["dst_port"], h["qr"])
                  for h in record["hops"] if h["role"] not in skip_roles)


HIDDEN = "dnsc-no-headers"  # the tmpfs laid over a node's /lib/modules and /usr/src


def node_exec(container, *command):
    done = subprocess.run(["docker", "exec", container, *command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{container}: {' '.join(command)}: {done.stderr}"
    return done.stdout


@contextlib.contextmanager
def nodes_without_kernel_headers(cluster):
    """Every node's /lib/modules (kind mounts the host's, and with it the `build` link to the headers) and /usr/src
    covered by an empty read-only tmpfs, as on a node that ships no headers; uncovered afterwards."""
    containers = [c.name for c in kind.node_containers(kind.docker(), cluster).values()]
    covered = []
    try:
        for container in containers:
            for path in ("/lib/modules", "/usr/src"):
                real = node_exec(container, "realpath", path).strip()  # /lib is a link to /usr/lib on Debian
                node_exec(container, "mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0555", HIDDEN, real)
                covered.append((container, real))
                assert node_exec(container, "ls", "-A", path) == "", (container, path)
        yield containers
    finally:
        for container, real in reversed(covered):
            if mounted_at(container, real) == HIDDEN:
                node_exec(container, "umount", real)
            assert mounted_at(container, real) != HIDDEN, (container, real)


def mounted_at(container, path):
    """The source of the topmost mount at `path` in the node (the last one findmnt lists), or "" where none is."""
    listed = subprocess.run(["docker", "exec", container, "findmnt", "-n", "-o", "SOURCE", "--mountpoint", path],
                            capture_output=True, text=True, timeout=30).stdout.split()
    return listed[-1] if listed else ""


def agent_pod_sees(cluster, path_expr):
    """What `python3 -c 'print(EXPR)'` prints in one of the running agent pods (os imported)."""
    pod = core(cluster).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items[0]
    return stream(core(cluster).connect_get_namespaced_pod_exec, pod.metadata.name, NAMESPACE,
                  command=["python3", "-c", f"import os; print({path_expr})"], stderr=True, stdin=False, stdout=True,
                  tty=False).strip()


def test_trace_through_the_agents_on_nodes_without_kernel_headers_gives_the_local_captures_lookups_hops_and_vantages(
        kind_cluster, tmp_path):
    """The agents load the CO-RE object on nodes with no /lib/modules or /usr/src content; the local capture beside
    them (this machine, bcc) traces the same lookups: the two builds of the tracer agree on real traffic."""
    with nodes_without_kernel_headers(kind_cluster):
        local = Trace(kind_cluster, tmp_path, env={"DNSCORRELATE_TRACER": "bcc"})
        agents = Trace(kind_cluster, tmp_path, "--agent")
        try:
            local.wait_started()
            agents.wait_started()
            seen_in_pod = agent_pod_sees(kind_cluster, "os.path.exists('/lib/modules/' + os.uname().release), "
                                                       "[p for p in os.listdir('/usr/src') if 'headers' in p]")
            names = [f"agent-{uuid.uuid4().hex[:8]}.example.org.", "nosuch.demo.svc.cluster.local.", "web.demo.svc.cluster.local."]
            for name in names:
                dig(kind_cluster, name)
        finally:
            codes = (local.finish(), agents.finish())
    assert seen_in_pod == "False []"  # the agent has no headers to compile against
    assert codes == (0, 0), local.err + agents.err
    assert "through the node agents" in agents.err and "Traceback" not in agents.err
    nodes = [line for line in agents.err.splitlines() if line.startswith("node ")]
    assert len(nodes) == 2 and all("(complete)" in line and "lost_samples=0" in line for line in nodes), agents.err
    assert all("tracer=core" in line for line in nodes) and "(tracer: core)" in agents.err, agents.err
    assert "(tracer: bcc)" in local.err  # the local capture compiled the same source with bcc
    here, there = local.records(), agents.records()
    assert set(names) <= set(here) and set(here) == set(there)
    for name in here:
        a, b = here[name], there[name]
        assert (a["rcode"], a["outcome"], a["served_from"], a["server"], a["dnat"], a["client"]) == \
               (b["rcode"], b["outcome"], b["served_from"], b["server"], b["dnat"], b["client"]), name
        assert a["findings"] == b["findings"], name
        # the upstream container is no pod and no node: only a local capture sees inside it
        assert hop_keys(a, skip_roles=("upstream",)) == hop_keys(b), name
        assert a["hops"][0]["vantage"] == b["hops"][0]["vantage"] == "demo/mypod"
        assert {h["role"] for h in b["hops"]} >= {"pod", "node", "coredns"}
    assert there[names[0]]["served_from"] == "upstream" and there[names[0]]["upstream"]
    assert there[names[1]]["rcode"] == "NXDOMAIN"
    assert nothing_left(kind_cluster)


def test_a_pod_started_mid_capture_is_traced_by_its_nodes_agent(kind_cluster):
    api = kind.api_client(kind_cluster)
    mypod = core(kind_cluster).read_namespaced_pod("mypod", "demo")
    late = f"dnsc-late-{uuid.uuid4().hex[:6]}"
    capture = AgentCapture(api, AgentOptions(built=agent_image(True), source_from_host=True))
    capture.start()
    try:
        before = {v.vantage for v in capture.vantages.values()}
        core(kind_cluster).create_namespaced_pod("demo", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": late, "labels": {"app": "dnsc-late"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "c", "image": mypod.spec.containers[0].image, "imagePullPolicy": "Never",
                "command": ["sleep", "infinity"]}]}})
        wait_for(lambda: core(kind_cluster).read_namespaced_pod(late, "demo").status.phase == "Running", "the late pod")
        name = f"late-{uuid.uuid4().hex[:8]}.example.org."
        wait_for(lambda: f"demo/{late}" in {v.vantage for v in capture.vantages.values()}, "its agent to attach", 30)
        dig(kind_cluster, name, pod=late)
    finally:
        capture.stop()
        core(kind_cluster).delete_namespaced_pod(late, "demo", grace_period_seconds=0)
    frame = capture.events()
    assert f"demo/{late}" not in before
    seen = frame[frame["qname"] == name]
    assert f"demo/{late}" in set(seen["vantage"]) and {"pod", "node", "coredns"} <= set(seen["role"])
    assert set(capture.stats["nodes"]) == {n.metadata.name for n in core(kind_cluster).list_node().items}
    assert capture.stats["lost_samples"] == 0 and capture.stats["records_received"] == capture.stats["events"]
    assert not capture.warnings and nothing_left(kind_cluster)


def test_the_standalone_image_runs_the_agent_with_nothing_of_this_checkout_mounted(kind_cluster, kind_build):
    """What a remote cluster runs: the package from the image, not from the node's /opt/dnscorrelate/src. The image
    is put into the nodes' containerd as a registry pull would put it."""
    image = kind_build.agent_standalone_image
    assert image, "make cluster builds dnscorrelate/agent-standalone"
    for node in kind.node_containers(kind.docker(), kind_cluster).values():
        imported = subprocess.run(f"docker save {image} | docker exec -i {node.name} ctr -n k8s.io images import -",
                                  shell=True, capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
    capture = AgentCapture(kind.api_client(kind_cluster), AgentOptions(image=image, source_from_host=False))
    name = f"standalone-{uuid.uuid4().hex[:8]}.example.org."
    capture.start()
    try:
        daemonset = k8s.AppsV1Api(kind.api_client(kind_cluster)).read_namespaced_daemon_set(capture.daemonset, NAMESPACE)
        assert not daemonset.spec.template.spec.volumes  # nothing of the node's: no checkout, no headers
        dig(kind_cluster, name)
        time.sleep(1)
    finally:
        capture.stop()
    seen = capture.events()
    seen = seen[seen["qname"] == name]
    assert {"pod", "node", "coredns"} <= set(seen["role"])
    assert capture.stats["lost_samples"] == 0 and not capture.warnings and nothing_left(kind_cluster)


def test_agent_pods_that_cannot_start_are_named_with_the_reason_and_removed(kind_cluster, tmp_path):
    trace = Trace(kind_cluster, tmp_path, "--agent", "--agent-image", "dnscorrelate/agent:no-such-tag")
    assert trace.finish(interrupt=False) == 2
    assert "the agent pods cannot start" in trace.err and "ErrImageNeverPull" in trace.err, trace.err
    assert "Traceback" not in trace.err
    assert nothing_left(kind_cluster)


def apply_own_daemonset(cluster, change):
    """The manifest applied as a user would (not marked as trace's), after `change(pod_spec)`."""
    api = kind.api_client(cluster)
    image = core(cluster).read_namespaced_pod("mypod", "demo").spec.containers[0].image.replace("client", "agent")
    [daemonset] = manifest_objects(image, source_from_host=True)
    change(daemonset["spec"]["template"]["spec"])
    daemonset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    k8s.AppsV1Api(api).create_namespaced_daemon_set(NAMESPACE, daemonset)


def delete_own_daemonset(cluster):
    api = kind.api_client(cluster)
    try:
        k8s.AppsV1Api(api).delete_namespaced_daemon_set(NAME, NAMESPACE)
    except ApiException:
        pass
    nothing_left(cluster)


def test_agents_that_cannot_load_their_tracer_say_so_per_node_and_a_users_daemonset_is_left_in_place(kind_cluster, tmp_path):
    def bcc_asked_for(spec):  # the agent image carries no bcc: told to use it, every agent fails to load its tracer
        spec["containers"][0]["env"].append({"name": "DNSCORRELATE_TRACER", "value": "bcc"})

    apply_own_daemonset(kind_cluster, bcc_asked_for)
    try:
        trace = Trace(kind_cluster, tmp_path, "--agent")
        assert trace.finish(interrupt=False) == 2
        err = " ".join(trace.err.split())
        assert "no node agent could capture" in err and "Traceback" not in err, trace.err
        for node in core(kind_cluster).list_node().items:
            assert f"node {node.metadata.name}: cannot capture: bcc is not importable" in err
        assert "leave DNSCORRELATE_TRACER unset" in err
        assert k8s.AppsV1Api(kind.api_client(kind_cluster)).read_namespaced_daemon_set(NAME, NAMESPACE)  # the user's: kept
    finally:
        delete_own_daemonset(kind_cluster)


def kubeconfig_as(kind_cluster, user: str, namespace: str, path: Path) -> Path:
    """The cluster's kubeconfig with a short-lived token of service account `user` as every user's credential."""
    token = core(kind_cluster).create_namespaced_service_account_token(
        user, namespace, {"spec": {"expirationSeconds": 600}}).status.token
    config = yaml.safe_load(Path(kind_cluster.kubeconfig).read_text())
    config["users"] = [{"name": u["name"], "user": {"token": token}} for u in config["users"]]
    path.write_text(yaml.safe_dump(config))
    return path


def test_credentials_without_exec_get_a_message_naming_the_permission(kind_cluster, tmp_path):
    """A user who may read everything trace reads, but not exec into pods; the DaemonSet is already there."""
    api = kind.api_client(kind_cluster)
    rbac, user = k8s.RbacAuthorizationV1Api(api), "dnsc-test-noexec"
    apply_own_daemonset(kind_cluster, lambda spec: None)
    core(kind_cluster).create_namespaced_service_account(NAMESPACE, {"metadata": {"name": user}})
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": [
        {"apiGroups": ["", "discovery.k8s.io", "networking.k8s.io", "apps", "rbac.authorization.k8s.io"],
         "resources": ["pods", "pods/log", "nodes", "namespaces", "services", "configmaps", "endpointslices",
                       "networkpolicies", "daemonsets", "serviceaccounts", "clusterroles", "clusterrolebindings"],
         "verbs": ["get", "list", "watch"]}]})
    rbac.create_cluster_role_binding({"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": NAMESPACE}]})
    try:
        kubeconfig = kubeconfig_as(kind_cluster, user, NAMESPACE, tmp_path / "noexec.kubeconfig")
        wait_for(lambda: ready_agents(kind_cluster) == 2, "the agent pods")
        trace = Trace(kind_cluster, tmp_path, "--agent", kubeconfig=kubeconfig)
        assert trace.finish(interrupt=False) == 2
        err = " ".join(trace.err.split())
        assert "was refused: the credentials need create on pods/exec in kube-system" in err and "Traceback" not in err, err
    finally:
        rbac.delete_cluster_role_binding(user)
        rbac.delete_cluster_role(user)
        core(kind_cluster).delete_namespaced_service_account(user, NAMESPACE)
        delete_own_daemonset(kind_cluster)


def ready_agents(cluster):
    pods = core(cluster).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
    return sum(1 for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []))


def agent_processes(cluster):
    """PIDs of exec'd `dnscorrelate agent` captures in this cluster's nodes (kind's nodes are containers on this host,
    and other clusters here may run agents of their own: a process counts when its cgroup is one of our nodes')."""
    nodes = [c.id for c in kind.node_containers(kind.docker(), cluster).values()]
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cgroup = (entry / "cgroup").read_text() if b"dnscorrelate" in argv else ""
        except OSError:
            continue
        if b"agent" in argv and b"--port" in argv and any(node in cgroup for node in nodes):
            found.append(int(entry.name))
    return found


def cleanup(cluster):
    done = subprocess.run([sys.executable, "-m", "dnscorrelate", "agent", "cleanup", "--context", cluster.context,
                           "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def daemonsets_of_sessions(cluster):
    return {d.metadata.name: d for d in k8s.AppsV1Api(kind.api_client(cluster)).list_namespaced_daemon_set(
        NAMESPACE, label_selector=SESSION_LABEL).items}


def test_two_concurrent_sessions_each_see_their_own_lookups_and_neither_removes_the_others_agents(kind_cluster, tmp_path):
    first = Trace(kind_cluster, tmp_path, "--agent")
    second = Trace(kind_cluster, tmp_path, "--agent", pod="web-0")
    try:
        first.wait_started()
        second.wait_started()
        sessions = daemonsets_of_sessions(kind_cluster)
        assert len(sessions) == 2, sessions  # each its own DaemonSet
        mine, theirs = f"first-{uuid.uuid4().hex[:8]}.example.org.", f"second-{uuid.uuid4().hex[:8]}.example.org."
        dig(kind_cluster, mine)
        dig(kind_cluster, theirs, pod="web-0")
        assert first.finish() == 0, first.err
        left = daemonsets_of_sessions(kind_cluster)
        assert len(left) == 1 and set(left) < set(sessions)  # the first removed its own only
        pods = core(kind_cluster).list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
        assert pods and all(p.metadata.deletion_timestamp is None for p in pods)  # the second's agents run on
        after = f"after-{uuid.uuid4().hex[:8]}.example.org."
        dig(kind_cluster, after, pod="web-0")  # traced by the second session after the first ended
    finally:
        codes = (first.finish(), second.finish())
    assert codes == (0, 0), first.err + second.err
    one, two = first.records(), second.records()
    assert mine in one and theirs not in one and after not in one, first.err
    assert {theirs, after} <= set(two) and mine not in two, second.err
    nodes = [line for line in second.err.splitlines() if line.startswith("node ")]
    assert len(nodes) == 2 and all("(complete)" in line and "lost_samples=0" in line for line in nodes), second.err
    assert nothing_left(kind_cluster)


def test_a_cli_killed_with_9_stops_its_agents_and_agent_cleanup_removes_them_once_the_lease_ran_out(kind_cluster, tmp_path):
    from datetime import datetime, timezone

    from dnscorrelate.cluster.kube.agent import LEASE_ANNOTATION

    assert not agent_processes(kind_cluster)
    killed = Trace(kind_cluster, tmp_path, "--agent", env={LEASE_ENV: "20"})
    try:
        killed.wait_started()
        assert len(agent_processes(kind_cluster)) == 2  # one capture per node
    finally:  # killed either way: a failed check must not leave a session running into the next test
        killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(30)
    wait_for(lambda: not agent_processes(kind_cluster), "the agents to stop once their exec sessions ended", 60)
    debris = session_objects(kind_cluster)
    assert [k for k, _ in debris] == ["DaemonSet"]  # no service account, no RBAC: the agents hold no token
    lines = cleanup(kind_cluster)  # within the lease: a session may still hold it
    if not any(line.startswith("removed ") for line in lines):  # (on a loaded machine the lease may already be out)
        assert sum(line.startswith("left ") for line in lines) == 1 and session_objects(kind_cluster) == debris, lines
        until = next(iter(daemonsets_of_sessions(kind_cluster).values())).metadata.annotations[LEASE_ANNOTATION]
        expiry = datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        wait_for(lambda: datetime.now(timezone.utc) > expiry, "the lease to run out", 60)
        lines = cleanup(kind_cluster)
    removed = sorted(line.split()[1:3] for line in lines if line.startswith("removed "))
    assert removed == sorted([k, n] for k, n in debris), lines
    assert nothing_left(kind_cluster)


def test_sigterm_ends_a_session_as_ctrl_c_does_and_removes_its_agents(kind_cluster, tmp_path):
    trace = Trace(kind_cluster, tmp_path, "--agent")
    trace.wait_started()
    name = f"term-{uuid.uuid4().hex[:8]}.example.org."
    dig(kind_cluster, name)
    trace.proc.send_signal(signal.SIGTERM)
    assert trace.finish(interrupt=False) == 0, trace.err
    assert name in trace.records() and "Traceback" not in trace.err
    assert nothing_left(kind_cluster)


def test_agent_install_lets_a_user_with_only_the_namespaced_role_trace_through_the_agents(kind_cluster, tmp_path):
    """An admin runs `agent install` once; a user who may read the cluster's facts and holds only the Role
    dnscorrelate-user in namespace dnscorrelate (no rights in kube-system, none on RBAC or DaemonSets elsewhere)
    traces with --agent, and the session applies nothing."""
    from dnscorrelate.cluster.kube.agent import INSTALL_NAMESPACE, USER_ROLE

    api = kind.api_client(kind_cluster)
    rbac, user = k8s.RbacAuthorizationV1Api(api), "dnsc-test-installed"
    installed = subprocess.run([sys.executable, "-m", "dnscorrelate", "agent", "install", "--source-from-host", "--context",
                                kind_cluster.context, "--kubeconfig", str(kind_cluster.kubeconfig)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert "created DaemonSet dnscorrelate/dnsc-agent" in installed.stdout and "created Namespace dnscorrelate" in installed.stdout
    namespace = core(kind_cluster).read_namespace(INSTALL_NAMESPACE)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "privileged"
    core(kind_cluster).create_namespaced_service_account(INSTALL_NAMESPACE, {"metadata": {"name": user}})
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": [  # the facts trace reads, read-only
        {"apiGroups": ["", "discovery.k8s.io", "networking.k8s.io"],
         "resources": ["pods", "pods/log", "nodes", "namespaces", "services", "configmaps", "endpointslices",
                       "networkpolicies"], "verbs": ["get", "list", "watch"]}]})
    subject = [{"kind": "ServiceAccount", "name": user, "namespace": INSTALL_NAMESPACE}]
    rbac.create_cluster_role_binding({"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user}, "subjects": subject})
    rbac.create_namespaced_role_binding(INSTALL_NAMESPACE, {"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER_ROLE}, "subjects": subject})
    try:
        kubeconfig = kubeconfig_as(kind_cluster, user, INSTALL_NAMESPACE, tmp_path / "installed.kubeconfig")
        trace = Trace(kind_cluster, tmp_path, "--agent", kubeconfig=kubeconfig)
        trace.wait_started()
        assert session_objects(kind_cluster) == []  # nothing applied by the session
        name = f"installed-{uuid.uuid4().hex[:8]}.example.org."
        dig(kind_cluster, name)
        assert trace.finish() == 0, trace.err
        assert name in trace.records() and "Traceback" not in trace.err
        nodes = [line for line in trace.err.splitlines() if line.startswith("node ")]
        assert len(nodes) == 2 and all("(complete)" in line for line in nodes), trace.err
        assert k8s.AppsV1Api(api).read_namespaced_daemon_set(NAME, INSTALL_NAMESPACE)  # installed: stays
    finally:
        rbac.delete_cluster_role_binding(user)
        rbac.delete_cluster_role(user)
        core(kind_cluster).delete_namespace(INSTALL_NAMESPACE)
        wait_for(lambda: INSTALL_NAMESPACE not in {n.metadata.name for n in core(kind_cluster).list_namespace().items},
                 "the namespace to go", 120)
