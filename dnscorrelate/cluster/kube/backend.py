"""Any Kubernetes cluster as a backend, reached as kubectl reaches it (--kubeconfig, --context).

Facts and CoreDNS logs come from the API server. Capture runs on the host that runs the nodes
(kind here): pods' and nodes' network namespaces are found in /proc (`discovery.py`). On a cluster
whose nodes are elsewhere, capture runs in the node agents (`agent.py`, `agents.py`) when asked
(`agent`, `trace --agent`); without it `capture_targets` says so instead of capturing nothing.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from dnscorrelate.cluster.backend import LogSource, Target, TargetWatcher
from dnscorrelate.cluster.corefile import corefile_from_config_maps
from dnscorrelate.cluster.facts import ClusterFacts, pod_search_list
from dnscorrelate.cluster.kube.agents import AgentOptions, Swept, install, remove_expired
from dnscorrelate.cluster.kubeapi import client_from_kubeconfig, logged_before, read_model, stamped_later
from dnscorrelate.cluster.kube.discovery import PodRef, pod_refs_of, pod_targets
from dnscorrelate.cluster.model import ClusterModel, ConfigMap, Pod
from dnscorrelate.cluster.owners import owned_scratch_dir
from dnscorrelate.errors import CaptureError, ClusterError, FaultNotSupported

DNS_SELECTOR = "k8s-app=kube-dns"
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
UPSTREAM_LABEL = "io.dnscorrelate.cluster"
REFRESH_S = 2.0


def install_agents(image: str, source_from_host: bool, kubeconfig: str | None = None, context: str | None = None) -> list[str]:
    """`dnscorrelate agent install`: the agents in their own namespace, once (kube/agents.py's `install`)."""
    return install(client_from_kubeconfig(kubeconfig, context), image, source_from_host)


def remove_expired_agents(kubeconfig: str | None = None, context: str | None = None) -> Swept:
    """`dnscorrelate agent cleanup`: the agent objects of killed `trace --agent` sessions whose lease ran out, removed."""
    return remove_expired(client_from_kubeconfig(kubeconfig, context))


class KubeBackend:
    """A cluster behind a kubeconfig context."""

    name = "kube"

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, upstream: str | None = None,
                 pod_image: str | None = None, agent: AgentOptions | None = None, allow_cluster_changes: bool = False) -> None:
        self.api = client_from_kubeconfig(kubeconfig, context)
        self.allow_cluster_changes = allow_cluster_changes  # faults on a cluster `cluster up` did not make (run --context)
        self.agent = agent  # capture through the node agents (kube/agents.py) instead of in /proc here
        self.context = context
        self.upstream = upstream  # where a scenario's `forward . /etc/resolv.conf` goes (kind: the upstream container)
        self.pod_image = pod_image  # what a scenario's Pods run (kind: the client image)
        self.propagation: list[tuple[str, float]] = []  # (fault, seconds until it took effect), in order
        self.started = datetime.now(timezone.utc)
        self._log_dir = owned_scratch_dir("dnsc-kube-logs-")  # removed with the backend, or by the next one if this dies
        self.log_dir = Path(self._log_dir.name)
        self._pods: dict[str, PodRef] = {}
        self._pods_read = 0.0
        self.journal = None  # a kube/journal.Journal while a scenario runs on a cluster that outlives it

    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def call(self, what: str, fn, *args, **kwargs):
        """An API call whose failure becomes a ClusterError saying what was asked and what to check."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            if err.status == 404:
                raise ClusterError(f"{what}: not found") from None
            raise ClusterError(f"{what}: the API server said {err.status} {err.reason}"
                               + (" (the credentials lack permission)" if err.status in (401, 403) else "")) from None
        except HTTPError as err:
            raise ClusterError(f"{what}: the API server is unreachable ({err.__class__.__name__}); check --context "
                               "and that the cluster is up") from None

    # --- Backend -----------------------------------------------------------

    def pod(self, ref: str, namespace: str) -> Pod:
        name = ref.split("/", 1)[1] if ref.startswith("pod/") else ref
        if "/" in name:
            namespace, name = name.split("/", 1)
        raw = self.call(f"pod {namespace}/{name}", self.core().read_namespaced_pod, name, namespace)
        pod = Pod.model_validate({**self.api.sanitize_for_serialization(raw), "kind": "Pod"})
        if not pod.ip:
            raise ClusterError(f"pod {namespace}/{name} has no IP yet (phase {raw.status.phase})")
        return pod

    def remote_capture(self, ports: tuple[int, ...]):
        """With `agent`, the capture of the node agents; else None (capture here, in /proc)."""
        if self.agent is None:
            return None
        from dnscorrelate.cluster.kube.agents import AgentCapture

        return AgentCapture(self.api, self.agent, ports)

    def hubble_streams(self, ports: tuple[int, ...]) -> list:
        """Each Cilium agent's `hubble observe --follow` (cluster/kube/hubble.py)."""
        from dnscorrelate.cluster.kube.hubble import hubble_streams

        return hubble_streams(self.core(), tuple(ports))

    def capture_targets(self) -> list[Target]:
        node_pids = self.node_pids()
        if not node_pids:
            raise CaptureError("this cluster's nodes do not run on this machine: add --agent to capture through "
                               "dnscorrelate's node agent (a DaemonSet dnsc-agent in kube-system, applied for the "
                               "session and removed after it; `dnscorrelate agent manifest` shows it)")
        return pod_targets(self.pod_refs(), node_pids) + self.upstream_targets()

    def target_watcher(self) -> TargetWatcher | None:
        nodes = self.node_pids()  # nodes stay for a capture; asking the API and Docker every 0.2 s would not

        def new_targets() -> list[Target]:
            if time.monotonic() - self._pods_read > REFRESH_S:
                self._pods = {}
            return pod_targets(self.pod_refs(), nodes)

        return new_targets

    def log_sources(self) -> list[LogSource]:
        """Each CoreDNS replica's log since the backend was made, with timestamps, in a file named by its pod."""
        sources = []
        core = self.core()
        pods = self.call("CoreDNS pods", core.list_namespaced_pod, "kube-system", label_selector=DNS_SELECTOR).items
        since = max(1, int((datetime.now(timezone.utc) - self.started).total_seconds()) + 1)
        skews = self.agent.clock_skews if self.agent else {}  # tests only: a node's lines as its skewed clock would stamp them
        for pod in pods:
            text = self.call(f"logs of kube-system/{pod.metadata.name}", core.read_namespaced_pod_log,
                             pod.metadata.name, "kube-system", timestamps=True, since_seconds=since)
            path = self.log_dir / f"{pod.metadata.name}.log"
            lines = [line for line in text.splitlines(keepends=True) if not logged_before(line, self.started)]
            if skew := skews.get(pod.spec.node_name or ""):
                lines = [stamped_later(line, skew) for line in lines]
            path.write_text("".join(lines))
            sources.append(LogSource(pod.metadata.name, str(path)))
        return sources

    def dnstap_sources(self) -> list[tuple[str, str]]:
        return []  # CoreDNS on a cluster sends no dnstap to us

    def save_files(self, directory: Path) -> None:
        """Each CoreDNS replica's log, named by its pod."""
        for source in self.log_sources():
            shutil.copy(source.path, directory / f"{source.replica}.log")

    def facts(self) -> ClusterFacts:
        model = self.call("cluster objects", read_model, self.api)
        maps = self.call("CoreDNS ConfigMaps", self.core().list_namespaced_config_map, "kube-system")
        config_maps = [ConfigMap.model_validate({**m, "kind": "ConfigMap"})
                       for m in self.api.sanitize_for_serialization(maps)["items"]
                       if m["metadata"]["name"] in ("coredns", "coredns-custom")]
        corefile, custom = corefile_from_config_maps(config_maps)
        return facts_from_model(model, corefile, custom, cluster=self.context or self.api.configuration.host)

    # --- Faults: through the API, each waited for (kube/faults.py) ----------

    def faults(self):
        from dnscorrelate.cluster.kube.faults import KubeFaults

        # a new one each time, with the journal of the moment; each checks the cluster is one dnscorrelate made,
        # unless allowed otherwise (one GET)
        return KubeFaults(self.api, self.upstream, self.pod_image, self.journal, self.allow_cluster_changes)

    # --- a cluster shared by scenarios: their changes journaled and undone (kube/journal.py) ---

    def start_journal(self, path: Path, scenario: str) -> None:
        """From now on every change a fault makes is recorded at `path` before it is made."""
        from dnscorrelate.cluster.kube.journal import Journal

        self.journal = Journal.start(path, scenario)

    def restore_journal(self, path: Path, say=lambda message: None) -> tuple[str, list[str]] | None:
        """Undo what the journal at `path` records (this run's, or one a killed run left); (its scenario, what was
        done), or None when there is no journal. Journaling stops."""
        from dnscorrelate.cluster.kube.journal import Journal
        from dnscorrelate.cluster.kube.restore import restore

        self.journal = None
        journal = Journal.load(path)
        if journal is None:
            return None
        return journal.scenario, self.call(f"restoring what scenario {journal.scenario} changed", restore, self.faults(), journal, say)

    def baseline(self):
        """The cluster's DNS as it is now (kube/journal.Baseline): what each scenario must leave behind."""
        from dnscorrelate.cluster.kube.restore import Baseline

        return self.call("reading CoreDNS's baseline", Baseline.read, self.faults())

    def wait_baseline(self, baseline, timeout_s: float = 120) -> None:
        """Until the cluster is back to `baseline`: ConfigMaps, CoreDNS replicas ready on the old Corefile, no
        scenario objects; a ClusterError naming what still differs."""
        from dnscorrelate.cluster.kube.restore import wait_baseline

        self.call("checking the baseline", wait_baseline, self.faults(), baseline, timeout_s)

    def set_corefile(self, corefile: str) -> None:
        self.propagation.append(("corefile", self.call("patching the coredns ConfigMap", self.faults().set_corefile, corefile)))

    def set_custom_server_block(self, key: str, text: str) -> None:
        self.propagation.append((f"coredns-custom {key}", self.call("patching coredns-custom", self.faults().set_custom_server_block, key, text)))

    def apply(self, manifests) -> None:
        what = ", ".join(f"{m.kind} {m.metadata.namespace}/{m.metadata.name}" for m in manifests)
        self.propagation.append((f"apply {what}", self.call(f"creating {what}", self.faults().apply, manifests)))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        what = f"{kind} {namespace}/{name}"
        self.propagation.append((f"delete {what}", self.call(f"deleting {what}", self.faults().delete, kind, namespace, name)))

    def stop_replica(self, replica: int) -> None:
        self.propagation.append((f"stop replica {replica}", self.call("stopping a CoreDNS replica", self.faults().stop_replica, replica)))

    def set_upstream_corefile(self, corefile: str) -> None:
        raise FaultNotSupported("upstreamCorefile", self.name, "the upstream resolver is not the cluster's to change "
                                "mid-run; on kind, give it in lab.upstreamCorefile (the upstream container starts with it)")

    def set_link(self, source: str, target: str, loss: float, drop: bool) -> None:
        raise FaultNotSupported("link", self.name, "a cluster's links cannot be made to drop or lose packets from here; "
                                "links are the lab's veth pairs")

    def set_resolv_conf(self, pod: str, text: str) -> None:
        raise FaultNotSupported("resolvConf", self.name, "a running pod's resolv.conf is written by the kubelet; give the "
                                "pod a dnsConfig instead")

    def run_queries(self, pod_key: str, client: str, name: str, rdtype: str, proto: str, count: int, concurrency: int,
                    timeout: float) -> list:
        """ClientResults of `count` queries from the pod, run in it through exec (kube/clients.py)."""
        from dnscorrelate.cluster.kube.clients import exec_queries

        return exec_queries(self.api, pod_key, client, name, rdtype, proto, count, concurrency, timeout)

    # --- where the nodes run -------------------------------------------------

    def pod_refs(self) -> dict[str, PodRef]:
        """Pods by UID, read again at most every REFRESH_S."""
        if not self._pods:
            listing = self.call("pods", self.core().list_pod_for_all_namespaces).items
            self._pods = pod_refs_of(listing)
            self._pods_read = time.monotonic()
        return self._pods

    def node_pids(self) -> dict[str, int]:
        """Node name -> a process in that node's network namespace, for nodes that are containers here."""
        nodes = {n.metadata.name for n in self.call("nodes", self.core().list_node).items}
        found = {}
        for container in self.docker_containers(KIND_CLUSTER_LABEL):
            if container.name in nodes:
                found[container.name] = container.attrs["State"]["Pid"]
        return found

    def upstream_targets(self) -> list[Target]:
        return [Target(f"/proc/{c.attrs['State']['Pid']}/ns/net", "upstream", "upstream")
                for c in self.docker_containers(UPSTREAM_LABEL) if c.name.endswith("-upstream")]

    @staticmethod
    def docker_containers(label: str) -> list:
        try:
            import docker

            return docker.from_env().containers.list(filters={"label": label})
        except Exception:  # no Docker here: nodes are not local containers
            return []


def facts_from_model(model: ClusterModel, corefile: str, custom: dict[str, str], cluster: str = "") -> ClusterFacts:
    """Facts as the API shows them: the DNS Service's address, the DNS server pods, each pod's search list;
    `cluster` names it (the context, else the API server's address)."""
    dns = next((s for s in model.services if s.metadata.namespace == "kube-system" and s.metadata.name == "kube-dns"), None)
    facts = ClusterFacts(cluster=cluster, corefile=corefile, custom_server_blocks=custom,
                         cluster_dns_ip=dns.spec.clusterIP if dns else "", model=model)
    for pod in model.pods:
        if not pod.ip:
            continue
        if pod.metadata.labels.get("k8s-app") == "kube-dns":
            facts.coredns_pods[pod.ip] = pod.key
        facts.search[pod.ip] = pod_search_list(pod, facts.domain)
    return facts
