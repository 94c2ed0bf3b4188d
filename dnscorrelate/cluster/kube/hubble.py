"""Hubble's flows from every Cilium agent of a cluster, for `trace --hubble` (`live/hubble.py` follows them):
`hubble observe --follow -o json` run in each agent pod's `cilium-agent` container through the API server's
exec, on the agent's own unix socket, no relay. The `hubble` CLI must be in the agent's image (Cilium's
own image carries it; so does the one `make cluster` builds, `cluster up --cni cilium --hubble`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

from dnscorrelate.cluster import cilium
from dnscorrelate.errors import ClusterError

READ_TIMEOUT_S = 1  # how long one read waits, so close() is noticed


def observe_command(ports: tuple[int, ...], since_ns: int, drops: bool = False) -> list[str]:
    """`hubble observe` of the flows on the DNS ports (L3/L4 and the DNS proxy's L7 records alike) since
    `since_ns`, then following new ones; with `drops`, the DROPPED flows on every other port instead (a
    connection to an address a lookup returned, stopped by a policy). `hubble observe` ANDs its filters and has
    no OR, so the two are two commands."""
    since = datetime.fromtimestamp(since_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    command = ["hubble", "observe", "--server", cilium.HUBBLE_SERVER, "--since", since, "--follow", "-o", "json"]
    if drops:
        command += ["--verdict", "DROPPED"]
    for port in ports:
        command += ["--not", "--port", str(port)] if drops else ["--port", str(port)]
    return command


class AgentHubbleStream:
    """One agent's flows: its exec stream, read line by line until closed (a HubbleStream)."""

    def __init__(self, core, pod: str, node: str, ports: tuple[int, ...], drops: bool = False) -> None:
        self.core, self.pod, self.node, self.ports, self.drops = core, pod, node, ports, drops
        self.response = None
        self.closed = False

    def lines(self, since_ns: int) -> Iterator[str]:
        from kubernetes import client as k8s
        from kubernetes.stream import stream

        # its own API client: `stream` swaps the client's request function for a websocket one while it opens,
        # which would turn the session's other calls on a shared client (from other threads) into websocket calls
        core = k8s.CoreV1Api(k8s.ApiClient(configuration=self.core.api_client.configuration))
        self.response = stream(core.connect_get_namespaced_pod_exec, self.pod, cilium.NAMESPACE, container=cilium.AGENT_CONTAINER,
                               command=observe_command(self.ports, since_ns, self.drops), stderr=True, stdin=False, stdout=True, tty=False,
                               _preload_content=False)
        pending, errors = "", []
        while not self.closed and self.response.is_open():
            self.response.update(timeout=READ_TIMEOUT_S)
            if self.response.peek_stderr():
                errors.append(self.response.read_stderr())
            if self.response.peek_stdout():
                pending += self.response.read_stdout()
                *whole, pending = pending.split("\n")
                yield from whole
        if pending.strip():
            yield pending
        if not self.closed:
            said = " ".join(e.strip() for e in errors if e.strip())
            raise ClusterError(f"`hubble observe` in {cilium.NAMESPACE}/{self.pod} ended" + (f": {said}" if said else ""))

    def close(self) -> None:
        self.closed = True
        if self.response is not None:
            self.response.close()


def hubble_streams(core, ports: tuple[int, ...]) -> list[AgentHubbleStream]:
    """Two streams per Cilium agent pod (its DNS flows, its drops on other ports), after checking that each agent's Hubble answers; a ClusterError that
    says what to do when the cluster runs no Cilium, or an agent has no Hubble or no `hubble` CLI."""
    agents = cilium.agents(core)
    if not agents:
        raise ClusterError(f"--hubble: no Cilium agent in this cluster (no pod {cilium.AGENT_SELECTOR} in {cilium.NAMESPACE})")
    for pod in agents:
        said = cilium.hubble_answers(core, pod.metadata.name)
        if "Healthcheck" not in said:
            raise ClusterError(f"--hubble: Hubble does not answer in {cilium.NAMESPACE}/{pod.metadata.name} "
                               f"({said.strip()[:200] or 'no output'}): enable Hubble (`cluster up --cni cilium --hubble`, "
                               "or Cilium's hubble.enabled) and use an agent image with the hubble CLI")
    return [AgentHubbleStream(core, pod.metadata.name, pod.spec.node_name, ports, drops) for pod in agents for drops in (False, True)]
