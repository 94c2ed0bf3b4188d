"""Cilium's agents as the API server reaches them, shared by the backends that talk to a Cilium cluster:
the kube backend's faults (a policy change waited for until Cilium enforces it), `cluster up --hubble`
(its visibility policy, the same wait) and `trace --hubble` (each agent's Hubble)."""

from __future__ import annotations

import json
from collections.abc import Callable

NAMESPACE = "kube-system"
AGENT_SELECTOR = "k8s-app=cilium"
AGENT_CONTAINER = "cilium-agent"
HUBBLE_SERVER = "unix:///var/run/cilium/hubble.sock"  # the agent's Hubble, no relay

Wait = Callable[[Callable[[], object], str], object]  # (probe, what it waits for) -> the probe's first truthy result


def agents(core) -> list:
    """The Cilium agent pods (none on a cluster that runs another CNI)."""
    return core.list_namespaced_pod(NAMESPACE, label_selector=AGENT_SELECTOR).items


def agent_exec(core, pod: str, *command: str, stderr: bool = False) -> str:
    """The output of a command in an agent's container (through the API server's exec): stdout, and stderr too
    when asked."""
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    # its own ApiClient, as kube/clients.py's exec: stream() swaps the client's request function for a websocket
    # while it runs, and a session's capture thread listing pods on a shared client would go through it
    exec_core = k8s.CoreV1Api(k8s.ApiClient(configuration=core.api_client.configuration))
    return stream(exec_core.connect_get_namespaced_pod_exec, pod, NAMESPACE, container=AGENT_CONTAINER, command=list(command),
                  stderr=stderr, stdin=False, stdout=True, tty=False)


def policy_revisions(core) -> dict[str, int]:
    """Agent pod -> the revision of its policy repository."""
    return {pod.metadata.name: int(json.loads(agent_exec(core, pod.metadata.name, "cilium-dbg", "policy", "get", "-o", "json"))["revision"])
            for pod in agents(core)}


def wait_enforced(core, before: dict[str, int], wait: Wait) -> None:
    """Until every agent imported a policy change (its revision moved past `before`) and every endpoint on its
    node is ready with that revision realized (what `cilium-dbg policy wait` checks). Every agent holds every
    policy, so all are waited for."""
    for pod in before:
        revision = wait(lambda: (r := policy_revisions(core).get(pod, 0)) > before[pod] and r,
                        f"Cilium agent {pod} to import the policy change")

        def realized() -> bool:
            endpoints = json.loads(agent_exec(core, pod, "cilium-dbg", "endpoint", "list", "-o", "json"))
            return all(e["status"].get("state") == "ready" and
                       (e["status"].get("policy") or {}).get("realized", {}).get("policy-revision", 0) >= revision
                       for e in endpoints)

        wait(realized, f"the endpoints of Cilium agent {pod} to realize policy revision {revision}")


def hubble_answers(core, pod: str) -> str:
    """What `hubble status` says in an agent ("" when it says nothing); it holds "Healthcheck" when Hubble answers."""
    return agent_exec(core, pod, "sh", "-c", f"hubble status --server {HUBBLE_SERVER} 2>&1")


def hubble_everywhere(core) -> bool:
    """Whether the cluster runs Cilium and every agent's Hubble answers (a scenario's session then reads it)."""
    pods = agents(core)
    return bool(pods) and all("Healthcheck" in hubble_answers(core, pod.metadata.name) for pod in pods)
