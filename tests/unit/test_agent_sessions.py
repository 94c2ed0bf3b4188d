"""Sessions of `trace --agent` that cannot harm each other (issue 23 item 2), without a cluster: each session's own
names and labels, leases and what counts as debris, `agent cleanup`'s sweep, the owner-reference check on exec
targets, kill and a closed terminal ending a command as Ctrl-C does, and removal that a second Ctrl-C cannot cut."""

import os
import signal
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from dnscorrelate.cluster.kube import agents
from dnscorrelate.cluster.kube.agent import (CREATED_BY, LEASE_ANNOTATION, NAME, SESSION_LABEL, manifest, manifest_objects,
                                             pullable)
from dnscorrelate.errors import ClusterError, Uninterruptible, interrupt_on_termination

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_each_session_names_and_labels_its_objects_and_selects_only_its_own_pods():
    a, b = (manifest_objects("registry.example.com/dnsc/agent:1", session=s) for s in ("aaaa1111", "bbbb2222"))
    assert {o["metadata"]["name"] for o in a} == {f"{NAME}-aaaa1111"} and {o["metadata"]["name"] for o in b} == {f"{NAME}-bbbb2222"}
    assert all(o["metadata"]["labels"][SESSION_LABEL] == "aaaa1111" for o in a)
    [daemonset] = a  # a session creates its DaemonSet alone: no service account, no RBAC
    pod = daemonset["spec"]["template"]
    assert daemonset["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][SESSION_LABEL] == "aaaa1111" and pod["spec"]["automountServiceAccountToken"] is False
    assert [o["metadata"]["name"] for o in manifest_objects("x.io/a:1")] == [NAME]  # the manifest a user applies
    assert agents.new_session_id() != agents.new_session_id()


def test_a_lease_runs_out_at_its_time_and_an_object_without_one_is_never_debris():
    until = agents.lease_until(60, NOW)
    assert until == "2026-12-06T12:01:00Z"
    assert not agents.lease_expired({LEASE_ANNOTATION: until}, NOW + timedelta(seconds=59))
    assert agents.lease_expired({LEASE_ANNOTATION: until}, NOW + timedelta(seconds=60))
    assert not agents.lease_expired({}, NOW + timedelta(days=9)) and not agents.lease_expired({LEASE_ANNOTATION: "soon"}, NOW)


def test_the_lease_length_comes_from_the_environment_and_a_bad_one_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(agents.LEASE_ENV, raising=False)
    assert agents.lease_seconds() == agents.DEFAULT_LEASE_S
    monkeypatch.setenv(agents.LEASE_ENV, "12")
    assert agents.lease_seconds() == 12
    for bad in ("soon", "1"):
        monkeypatch.setenv(agents.LEASE_ENV, bad)
        with pytest.raises(ClusterError, match=agents.LEASE_ENV):
            agents.lease_seconds()


class FakeCluster:
    """What remove_expired and AgentCapture.remove use of the API: list by label, delete by name."""

    def __init__(self, objects):
        self.objects = objects  # (kind, name) -> metadata
        self.deleted: list[tuple[str, str]] = []
        self.on_delete = lambda: None

    def api(self, kind):
        cluster = self
        _, _, _, delete, namespaced, listing, _ = agents.CALLS[kind]

        def list_(*args, label_selector):
            assert label_selector == SESSION_LABEL
            return SimpleNamespace(items=[SimpleNamespace(metadata=m) for (k, _), m in cluster.objects.items() if k == kind])

        def delete_(name, *args, **kwargs):
            cluster.on_delete()
            cluster.deleted.append((kind, name))
            del cluster.objects[(kind, name)]

        return SimpleNamespace(**{listing: list_, delete: delete_})


def meta(name, session, lease, ours=True):
    annotations = {LEASE_ANNOTATION: lease} if lease else {}
    if ours:
        annotations[CREATED_BY] = "dnscorrelate trace --agent"
    return SimpleNamespace(name=name, labels={SESSION_LABEL: session}, annotations=annotations)


def test_cleanup_removes_only_objects_whose_lease_ran_out_and_lists_them(monkeypatch):
    past, future = agents.lease_until(-5, NOW), agents.lease_until(300, NOW)
    cluster = FakeCluster({
        ("DaemonSet", "dnsc-agent-dead"): meta("dnsc-agent-dead", "dead", past),
        ("ClusterRole", "dnsc-agent-dead"): meta("dnsc-agent-dead", "dead", past),
        ("DaemonSet", "dnsc-agent-live"): meta("dnsc-agent-live", "live", future),
        ("DaemonSet", "dnsc-agent-mine"): meta("dnsc-agent-mine", "mine", past),
        ("DaemonSet", "users"): meta("users", "u", past, ours=False),  # labelled, but not marked as trace's
        ("ServiceAccount", "dnsc-agent-old"): meta("dnsc-agent-old", "old", None),  # no lease: not ours to judge
    })
    monkeypatch.setattr(agents, "api_of", lambda api, kind: cluster.api(kind))
    swept = agents.remove_expired(object(), now=NOW, keep_session="mine")
    assert cluster.deleted == [("DaemonSet", "dnsc-agent-dead"), ("ClusterRole", "dnsc-agent-dead")]  # DaemonSet first
    assert swept.removed == [f"DaemonSet dnsc-agent-dead (session dead, lease ran out at {past})",
                             f"ClusterRole dnsc-agent-dead (session dead, lease ran out at {past})"]
    assert len(swept.leased) == 4 and not swept.failed
    assert any("dnsc-agent-live" in line and future in line for line in swept.leased)


def test_a_user_who_may_not_list_rbac_still_sweeps_expired_daemonsets_and_a_daemonset_refusal_is_an_error(monkeypatch):
    """Sessions create no RBAC any more: an older version's ClusterRoles are swept when they may be listed, and
    a 403 on those kinds stops nothing; a 403 on DaemonSets, which sessions do create, is still said."""
    from kubernetes.client.rest import ApiException

    past = agents.lease_until(-5, NOW)
    cluster = FakeCluster({("DaemonSet", "dnsc-agent-dead"): meta("dnsc-agent-dead", "dead", past)})
    refused_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}

    def api_of(api, kind):
        if kind in refused_kinds:
            listing = agents.CALLS[kind][5]
            return SimpleNamespace(**{listing: lambda *a, **k: (_ for _ in ()).throw(ApiException(status=403, reason="Forbidden"))})
        return cluster.api(kind)

    monkeypatch.setattr(agents, "api_of", api_of)
    swept = agents.remove_expired(object(), now=NOW)
    assert cluster.deleted == [("DaemonSet", "dnsc-agent-dead")] and not swept.failed
    refused_kinds.add("DaemonSet")
    with pytest.raises(ClusterError, match="listing the agents' DaemonSets: the API server refused .403"):
        agents.remove_expired(object(), now=NOW)


def test_exec_targets_are_only_pods_our_daemonset_owns():
    def pod(uid, kind="DaemonSet", controller=True):
        return SimpleNamespace(metadata=SimpleNamespace(owner_references=[SimpleNamespace(kind=kind, uid=uid, controller=controller)]))

    assert agents.owned_by(pod("u1"), "u1")
    assert not agents.owned_by(pod("u2"), "u1") and not agents.owned_by(pod("u1", kind="ReplicaSet"), "u1")
    assert not agents.owned_by(pod("u1", controller=False), "u1") and not agents.owned_by(pod("u1"), None)
    assert not agents.owned_by(SimpleNamespace(metadata=SimpleNamespace(owner_references=None)), "u1")


def test_the_session_starts_only_once_every_pod_its_daemonset_made_is_ready(monkeypatch):
    """A DaemonSet status that counts fewer nodes than it has pods (read while the controller still schedules) does
    not start a session on one node's agent while the other's pod is still pulling its image."""
    def pod(node, ready):
        conditions = [SimpleNamespace(type="Ready", status="True" if ready else "False")]
        return SimpleNamespace(metadata=SimpleNamespace(name=f"agent-{node}", deletion_timestamp=None),
                               spec=SimpleNamespace(node_name=node),
                               status=SimpleNamespace(phase="Running" if ready else "Pending", conditions=conditions,
                                                      container_statuses=[]))

    reads = []
    rounds = [([pod("cp", True), pod("w", False)], 1), ([pod("cp", True), pod("w", False)], 2),
              ([pod("cp", True), pod("w", True)], 2)]

    class Apps:
        def read_namespaced_daemon_set(self, *args):
            reads.append(args)
            counted = rounds[min(len(reads), len(rounds)) - 1][1]
            return SimpleNamespace(status=SimpleNamespace(desired_number_scheduled=counted, current_number_scheduled=counted))

    capture = agents.AgentCapture(api=None)
    capture.client = lambda group: Apps()
    capture.agent_pods = lambda: rounds[min(len(reads), len(rounds)) - 1][0]
    monkeypatch.setattr(agents.time, "sleep", lambda s: None)
    assert capture.wait_ready() == {"cp": "agent-cp", "w": "agent-w"} and len(reads) == 3


def test_a_bare_image_name_is_never_pulled():
    """`dnscorrelate/agent:1` would come from docker.io/dnscorrelate, a namespace this project does not own."""
    assert not pullable("dnscorrelate/agent:1") and not pullable("agent:1")
    assert pullable("registry.example.com/dnscorrelate/agent:1") and pullable("localhost:5000/agent:1")
    assert pullable("localhost/dnscorrelate/agent:1") and pullable("dnscorrelate/agent@sha256:" + "0" * 64)
    assert "imagePullPolicy: Never" in manifest("dnscorrelate/agent:1")
    assert "imagePullPolicy: IfNotPresent" in manifest("ghcr.io/example/agent:1")


def test_sigterm_and_sighup_end_a_command_as_ctrl_c_does():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        interrupt_on_termination()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)  # the handler runs in this thread before the next bytecode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_removal_goes_on_through_a_second_ctrl_c_and_the_interrupt_comes_after(monkeypatch):
    cluster = FakeCluster({(kind, f"{NAME}-s") : meta(f"{NAME}-s", "s", None) for kind in agents.CALLS})
    monkeypatch.setattr(agents, "api_of", lambda api, kind: cluster.api(kind))
    capture = agents.AgentCapture(api=object())
    capture.created = [(kind, f"{NAME}-s") for kind in agents.CALLS]
    capture.daemonset = "not-created"  # no pods to wait for
    said = []
    capture.say = said.append
    cluster.on_delete = lambda: os.kill(os.getpid(), signal.SIGINT) if not cluster.deleted else None
    before = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN when the suite was started in the background
    with pytest.raises(KeyboardInterrupt):
        capture.remove()
    assert sorted(cluster.deleted) == sorted((k, f"{NAME}-s") for k in agents.CALLS)
    assert said == ["SIGINT: removing the node agents first"] and cluster.objects == {}
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_uninterruptible_without_a_signal_raises_nothing():
    with Uninterruptible() as held:
        pass
    assert held.signals == []


def test_agent_install_puts_the_agents_in_their_own_privileged_namespace_with_a_namespaced_user_role():
    from dnscorrelate.cluster.kube.agent import INSTALL_NAMESPACE, USER_ROLE, install_objects

    objects = install_objects("registry.example.com/dnsc/agent:1")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["Namespace", "DaemonSet", "Role"]  # nothing cluster-wide: the agents hold no token
    namespace, daemonset, user = objects
    assert namespace["metadata"]["name"] == INSTALL_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert daemonset["metadata"]["namespace"] == INSTALL_NAMESPACE
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert user["metadata"] == {"name": USER_ROLE, "namespace": INSTALL_NAMESPACE}
    verbs = {(r["resources"][0], v) for r in user["rules"] for v in r["verbs"]}
    assert verbs == {("daemonsets", "get"), ("pods", "get"), ("pods", "list"), ("pods/exec", "create"), ("pods/exec", "get")}
    container = pod["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1Gi"


def test_a_live_session_pushes_its_lease_forward_until_it_stops(monkeypatch):
    import threading
    import time

    patched = []
    renewed = threading.Event()

    class Api:
        def __getattr__(self, name):
            def patch(name_, *args):
                patched.append((name_, args[-1]["metadata"]["annotations"][LEASE_ANNOTATION]))
                if len(patched) >= 4:
                    renewed.set()
            return patch

    capture = agents.AgentCapture(api=None)
    capture.client = lambda group: Api()
    capture.lease_s = 3.0  # renewed every second
    capture.created = [("DaemonSet", f"{NAME}-s"), ("ServiceAccount", f"{NAME}-s")]
    thread = threading.Thread(target=capture.renew_leases, daemon=True)
    started = datetime.now(timezone.utc)
    thread.start()
    assert renewed.wait(10)
    capture._renewing.set()
    thread.join(5)
    assert not thread.is_alive() and not capture.warnings
    assert {name for name, _ in patched} == {f"{NAME}-s"}
    until = datetime.strptime(patched[-1][1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert until >= started + timedelta(seconds=2)  # always a lease ahead of now
    count = len(patched)
    time.sleep(1.2)
    assert len(patched) == count  # stopped: no renewal after stop
