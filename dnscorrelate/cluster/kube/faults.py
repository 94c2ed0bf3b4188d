"""Scenario faults on a real cluster, made through the API server, each waiting for the change to
take effect and returning how long that took (the runner reports it as fault propagation).

- Corefile changes (`set_corefile`): the ConfigMap is patched and, when the running and the new
  Corefile both have the `reload` plugin, we wait for the real propagation: each CoreDNS pod gets an
  annotation, which makes its kubelet sync the pod and so its ConfigMap volume now rather than at its
  next periodic sync (up to a minute), then `reload` notices the new file at its next check (30 s
  +- 7.5 s by default) and restarts the server; we wait until every replica has logged the new
  configuration's "Running configuration SHA512" line (or its "reload failed" error, which is
  raised). Without `reload` on both sides, CoreDNS cannot pick the change up: the Deployment is
  restarted and we wait until only new replicas, started on the new ConfigMap, are behind kube-dns.
- coredns-custom (`set_custom_server_block`) always restarts: `reload` hashes the Corefile, not the
  files it imports, so a changed custom block is not noticed (AKS documents the same restart).
- coredns-custom (`set_custom_server_block`): kubeadm's CoreDNS does not read it. We give the
  Deployment what AKS's has: the optional `coredns-custom` ConfigMap mounted at
  /etc/coredns/custom and `import custom/*.server` in the Corefile.
- NetworkPolicies (`apply`, `delete`): we wait until the policy agent on every node hosting a
  selected pod logged that it applied the new set (one line per change, `policy_agent.py`). On a
  cluster that runs Cilium (pods k8s-app=cilium), we wait for Cilium's own signal instead: every
  agent's policy repository moved past the revision it had before the change (it imported the
  change), and every endpoint on its node realized that revision (`cilium-dbg policy wait`: its
  datapath regenerated with it).
- CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (`apply`, `delete`; Cilium clusters only, through the
  custom objects API): waited for as a NetworkPolicy on Cilium is.
- Services and Pods: created or deleted, waited for (deleted: until the API no longer has them).
- `stop_replica`: Kubernetes does not keep a dead replica behind its Service as the lab does (a
  stopped container's endpoint turns not-ready): the replica's pod is deleted and the Deployment
  scaled down by one (its pod-deletion-cost makes it the one removed), and we wait until its
  endpoint is gone. The lab's stale endpoint cannot be made through the API.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

from dnscorrelate.cluster import cilium
from dnscorrelate.cluster.kubeapi import MADE_HERE, MADE_HERE_NAMESPACE, logged_before
from dnscorrelate.cluster.model import CILIUM_POLICY_KINDS, Manifest, NetworkPolicy
from dnscorrelate.errors import ClusterError

NS = "kube-system"
DEPLOYMENT = "coredns"
DNS_SELECTOR = "k8s-app=kube-dns"
POLICY_AGENT_SELECTOR = "app=dnsc-policy"
CUSTOM_MAP = "coredns-custom"
CUSTOM_DIR = "/etc/coredns/custom"
IMPORT_LINE = "import custom/*.server"
RESTARTED = "dnscorrelate/restartedAt"
CONFIG_SYNC = "dnscorrelate/configSyncAt"
RELOAD = re.compile(r"^\s*reload\b", re.M)
API_VERSIONS = {"Namespace": "v1", "Pod": "v1", "Service": "v1", "NetworkPolicy": "networking.k8s.io/v1",
                "CiliumNetworkPolicy": "cilium.io/v2", "CiliumClusterwideNetworkPolicy": "cilium.io/v2"}
CILIUM_PLURALS = {"CiliumNetworkPolicy": "ciliumnetworkpolicies", "CiliumClusterwideNetworkPolicy": "ciliumclusterwidenetworkpolicies"}
TIMEOUT_S = 120


def wait_for(probe: Callable[[], object], what: str, timeout_s: float = TIMEOUT_S, poll_s: float = 0.25):
    """probe()'s first truthy result, polling; a ClusterError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def refuse_foreign_cluster(api) -> None:
    """A ClusterError unless the cluster carries the ConfigMap `cluster up` writes (kubeapi.MADE_HERE): a scenario
    rewrites CoreDNS's Corefile, restarts it and deletes replicas, which must never reach a user's cluster by a
    mistaken --context. The runner's path for a user's cluster bypasses this explicitly
    (`KubeFaults(..., allow_cluster_changes=True)`, its --allow-cluster-changes)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CoreV1Api(api).read_namespaced_config_map(MADE_HERE, MADE_HERE_NAMESPACE)
    except ApiException as err:
        host = api.configuration.host
        if err.status == 404:
            raise ClusterError(f"the cluster at {host} was not made by `dnscorrelate cluster up` (no ConfigMap "
                               f"{MADE_HERE_NAMESPACE}/{MADE_HERE}): scenario faults rewrite its CoreDNS and delete pods, "
                               "so they are refused there") from None
        raise ClusterError(f"cannot tell whether dnscorrelate made the cluster at {host} (reading ConfigMap "
                           f"{MADE_HERE_NAMESPACE}/{MADE_HERE}: {err.status} {err.reason}): faults refused") from None


class KubeFaults:
    """The `Faults` of a cluster behind an API client; each method returns the seconds it took to take effect.
    Only a cluster `cluster up` made (`refuse_foreign_cluster`), unless `allow_cluster_changes` says so."""

    def __init__(self, api, upstream: str | None = None, pod_image: str | None = None, journal=None,
                 allow_cluster_changes: bool = False) -> None:
        from kubernetes import client

        if not allow_cluster_changes:
            refuse_foreign_cluster(api)
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.net = client.NetworkingV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.upstream = upstream  # where `forward . /etc/resolv.conf` goes (kind: the upstream container)
        self.pod_image = pod_image  # what an applied Pod runs (kind: the client image)
        self.journal = journal  # a journal.Journal: each change recorded on disk before it is made (a shared cluster)

    def remember(self, entry: Callable[[], dict]) -> None:
        """Record the state an object has before a change, when journaling (journal.py)."""
        if self.journal is not None:
            self.journal.record(entry())

    def remember_config_map(self, name: str) -> None:
        from dnscorrelate.cluster.kube.journal import config_map_entry

        self.remember(lambda: config_map_entry(self.core, NS, name))

    def remember_deployment(self) -> None:
        from dnscorrelate.cluster.kube.journal import deployment_entry

        self.remember(lambda: deployment_entry(self.api, self.apps, NS, DEPLOYMENT))

    # --- Corefile --------------------------------------------------------------

    def corefile(self) -> str:
        return (self.core.read_namespaced_config_map("coredns", NS).data or {}).get("Corefile", "")

    def set_corefile(self, corefile: str) -> float:
        from dnscorrelate.cluster.workloads import cluster_corefile

        started = time.monotonic()
        if self.upstream:
            corefile = cluster_corefile(corefile, self.upstream)
        if IMPORT_LINE in self.corefile() and IMPORT_LINE not in corefile:
            corefile = f"{IMPORT_LINE}\n{corefile}"  # the coredns-custom blocks stay, as on AKS
        reloads = RELOAD.search(self.corefile()) is not None and RELOAD.search(corefile) is not None
        pods = self.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items
        patched_at = datetime.now(timezone.utc)
        self.remember_config_map("coredns")
        if not (reloads and pods):
            self.remember_deployment()
        self.core.patch_namespaced_config_map("coredns", NS, {"data": {"Corefile": corefile}})
        if reloads and pods:
            self.wait_reloaded(pods, patched_at)
        else:
            self.restart_coredns()
        return time.monotonic() - started

    def wait_reloaded(self, pods, since: datetime) -> None:
        """Nudge each pod's kubelet to sync its ConfigMap volume now, then wait until every replica's `reload`
        restarted it on the new Corefile."""
        marker = f"{time.time():.6f}"
        for pod in pods:
            self.core.patch_namespaced_pod(pod.metadata.name, NS, {"metadata": {"annotations": {CONFIG_SYNC: marker}}})
        names = [p.metadata.name for p in pods]
        wait_for(lambda: all(self.reloaded(name, since) for name in names),
                 f"CoreDNS ({', '.join(names)}) to reload the new Corefile", poll_s=1.0)

    def reloaded(self, pod: str, since: datetime) -> bool:
        """Whether the replica logged a new running configuration after `since`; a ClusterError if its reload failed."""
        seconds = max(1, int((datetime.now(timezone.utc) - since).total_seconds()) + 2)
        log = self.core.read_namespaced_pod_log(pod, NS, timestamps=True, since_seconds=seconds)
        for line in log.splitlines():
            if logged_before(line, since):
                continue
            text = line.partition(" ")[2]
            if "reload failed" in text:
                raise ClusterError(f"CoreDNS {NS}/{pod} did not take the new Corefile: {text.strip()}")
            if "Running configuration SHA512" in text:
                return True
        return False

    def set_custom_server_block(self, key: str, text: str) -> float:
        started = time.monotonic()
        self.remember_deployment()
        self.remember_config_map(CUSTOM_MAP)
        self.remember_config_map("coredns")
        self.mount_custom_map()
        try:
            self.core.patch_namespaced_config_map(CUSTOM_MAP, NS, {"data": {key: text}})
        except Exception as err:
            if getattr(err, "status", None) != 404:
                raise
            self.core.create_namespaced_config_map(NS, {"metadata": {"name": CUSTOM_MAP, "namespace": NS}, "data": {key: text}})
        corefile = self.corefile()
        if IMPORT_LINE not in corefile:
            self.core.patch_namespaced_config_map("coredns", NS, {"data": {"Corefile": f"{IMPORT_LINE}\n{corefile}"}})
        self.restart_coredns()
        return time.monotonic() - started

    def mount_custom_map(self) -> None:
        """The optional coredns-custom ConfigMap at /etc/coredns/custom in the CoreDNS pods (AKS's layout)."""
        deployment = self.apps.read_namespaced_deployment(DEPLOYMENT, NS)
        spec = deployment.spec.template.spec
        if any(v.name == "custom-config-volume" for v in spec.volumes or []):
            return
        container = spec.containers[0]
        mounts = [self.api.sanitize_for_serialization(m) for m in container.volume_mounts or []]
        volumes = [self.api.sanitize_for_serialization(v) for v in spec.volumes or []]
        patch = {"spec": {"template": {"spec": {
            "volumes": volumes + [{"name": "custom-config-volume", "configMap": {"name": CUSTOM_MAP, "optional": True}}],
            "containers": [{"name": container.name, "volumeMounts": mounts + [
                {"name": "custom-config-volume", "mountPath": CUSTOM_DIR, "readOnly": True}]}],
        }}}}
        self.apps.patch_namespaced_deployment(DEPLOYMENT, NS, patch)

    def restart_coredns(self) -> None:
        """Restart the CoreDNS Deployment (kubectl rollout restart) and wait until only new replicas serve kube-dns."""
        marker = f"{time.time():.6f}"
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED: marker}}}}}
        self.apps.patch_namespaced_deployment(DEPLOYMENT, NS, patch)
        wait_for(lambda: self.only_new_replicas(marker), "the restarted CoreDNS replicas to be ready and the old ones gone")

    def only_new_replicas(self, marker: str) -> bool:
        """Every CoreDNS pod carries `marker` and is ready, as many as the Deployment wants, and kube-dns's
        endpoints are exactly theirs."""
        wanted = self.apps.read_namespaced_deployment(DEPLOYMENT, NS).spec.replicas
        pods = self.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items
        if len(pods) != wanted or any((p.metadata.annotations or {}).get(RESTARTED) != marker or not ready(p) for p in pods):
            return False
        return self.dns_endpoint_ips() == {p.status.pod_ip for p in pods}

    def dns_endpoint_ips(self) -> set[str]:
        slices = self.discovery.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=kube-dns").items
        return {a for s in slices for e in s.endpoints or [] if e.conditions is None or e.conditions.ready is not False
                for a in e.addresses}

    # --- objects ---------------------------------------------------------------

    def apply(self, manifests: list[Manifest]) -> float:
        """Create the objects, each labelled as a scenario's (journal.SCENARIO_LABEL) and journaled first."""
        from kubernetes import utils

        from dnscorrelate.cluster.kube.journal import SCENARIO_LABEL, created_entry
        from dnscorrelate.cluster.workloads import runnable_pod_spec

        started = time.monotonic()
        before = self.policy_state()
        policies = []
        for manifest in manifests:
            # a Cilium policy goes as written: its model's defaults (empty rule lists) are not Cilium's absent fields
            cilium_policy = manifest.kind in CILIUM_POLICY_KINDS
            body = manifest.model_dump(by_alias=True, exclude_none=True, exclude_unset=cilium_policy)
            if cilium_policy:
                body["metadata"] = {**body.get("metadata", {}), "namespace": manifest.metadata.namespace}
            kind = body.setdefault("kind", type(manifest).__name__)
            body["apiVersion"] = API_VERSIONS[kind]
            if kind == "Pod":
                if not self.pod_image:
                    raise ClusterError(f"pod {manifest.metadata.namespace}/{manifest.metadata.name}: no image to run it with")
                body["spec"] = runnable_pod_spec(body.get("spec", {}), self.pod_image)
            if self.journal is not None:
                labels = body.setdefault("metadata", {}).setdefault("labels", {}) or {}
                body["metadata"]["labels"] = {**labels, SCENARIO_LABEL: self.journal.scenario or "scenario"}
            scoped = kind not in ("Namespace", "CiliumClusterwideNetworkPolicy")
            self.remember(lambda: created_entry(kind, manifest.metadata.namespace if scoped else "", manifest.metadata.name))
            if kind in CILIUM_POLICY_KINDS:
                self.create_cilium_policy(body)
            else:
                utils.create_from_dict(self.api, body)
            if kind in ("NetworkPolicy", *CILIUM_POLICY_KINDS):
                policies.append(manifest)
            elif kind == "Pod":
                ns, name = manifest.metadata.namespace, manifest.metadata.name
                wait_for(lambda: ready(self.core.read_namespaced_pod(name, ns)), f"pod {ns}/{name} to be ready")
        if policies:
            self.wait_policies_enforced(policies, before)
        return time.monotonic() - started

    # --- Cilium's policies: custom objects --------------------------------------

    def create_cilium_policy(self, body: dict) -> None:
        """Create a Cilium policy; a ClusterError when the cluster has no Cilium (its CRD unknown)."""
        from kubernetes.client.rest import ApiException

        kind, meta = body["kind"], body["metadata"]
        try:
            if kind == "CiliumClusterwideNetworkPolicy":
                meta.pop("namespace", None)
                self.custom.create_cluster_custom_object("cilium.io", "v2", CILIUM_PLURALS[kind], body)
            else:
                self.custom.create_namespaced_custom_object("cilium.io", "v2", meta["namespace"], CILIUM_PLURALS[kind], body)
        except ApiException as err:
            if err.status == 404:
                raise ClusterError(f"{kind} {meta['name']}: this cluster does not know Cilium's policies (no cilium.io/v2 "
                                   f"{CILIUM_PLURALS[kind]}): it needs Cilium as its pod network") from None
            raise

    def read_cilium_policy(self, kind: str, name: str, namespace: str) -> dict:
        if kind == "CiliumClusterwideNetworkPolicy":
            return self.custom.get_cluster_custom_object("cilium.io", "v2", CILIUM_PLURALS[kind], name)
        return self.custom.get_namespaced_custom_object("cilium.io", "v2", namespace, CILIUM_PLURALS[kind], name)

    def delete_cilium_policy(self, kind: str, name: str, namespace: str) -> None:
        if kind == "CiliumClusterwideNetworkPolicy":
            self.custom.delete_cluster_custom_object("cilium.io", "v2", CILIUM_PLURALS[kind], name)
        else:
            self.custom.delete_namespaced_custom_object("cilium.io", "v2", namespace, CILIUM_PLURALS[kind], name)

    def cilium_policy_reader(self, kind: str):
        """A `read(name, namespace)` for `exists` (it raises ApiException 404 when there is none)."""
        return lambda name, namespace: self.read_cilium_policy(kind, name, namespace)

    def labelled_cilium_policies(self, selector: str) -> list[str]:
        """Cilium policies carrying `selector`, as `Kind ns/name` (none on a cluster without Cilium)."""
        from kubernetes.client.rest import ApiException

        found = []
        for kind, plural in CILIUM_PLURALS.items():
            try:
                listing = (self.custom.list_cluster_custom_object("cilium.io", "v2", plural, label_selector=selector))
            except ApiException as err:
                if err.status == 404:
                    continue
                raise
            for item in listing.get("items", []):
                meta = item["metadata"]
                found.append(f"{kind} {meta.get('namespace', '')}/{meta['name']}")
        return found

    def delete(self, kind: str, namespace: str, name: str) -> float:
        """Delete an object (its body journaled first, to create it again) and wait until it is gone."""
        from dnscorrelate.cluster.kube.journal import deleted_entry

        reads = {"NetworkPolicy": self.net.read_namespaced_network_policy, "Service": self.core.read_namespaced_service,
                 "Pod": self.core.read_namespaced_pod, **{k: self.cilium_policy_reader(k) for k in CILIUM_POLICY_KINDS}}
        if self.journal is not None and kind in reads:
            body = {**self.api.sanitize_for_serialization(reads[kind](name, namespace)), "kind": kind}
            body.setdefault("apiVersion", API_VERSIONS[kind])
            self.remember(lambda: deleted_entry(kind, namespace, name, body))
        return self.delete_unjournaled(kind, namespace, name)

    def delete_unjournaled(self, kind: str, namespace: str, name: str) -> float:
        started = time.monotonic()
        if kind == "NetworkPolicy":
            before = self.policy_state()
            policy = NetworkPolicy.model_validate({**self.api.sanitize_for_serialization(
                self.net.read_namespaced_network_policy(name, namespace)), "kind": "NetworkPolicy"})
            self.net.delete_namespaced_network_policy(name, namespace)
            wait_for(lambda: not self.exists(self.net.read_namespaced_network_policy, name, namespace), f"{kind} {namespace}/{name} to be gone")
            self.wait_policies_enforced([policy], before)
        elif kind in CILIUM_POLICY_KINDS:
            before = self.policy_state()
            self.delete_cilium_policy(kind, name, namespace)
            wait_for(lambda: not self.exists(self.cilium_policy_reader(kind), name, namespace), f"{kind} {namespace}/{name} to be gone")
            self.wait_policies_enforced([], before)
        elif kind == "Service":
            self.core.delete_namespaced_service(name, namespace)
            wait_for(lambda: not self.exists(self.core.read_namespaced_service, name, namespace), f"{kind} {namespace}/{name} to be gone")
        elif kind == "Pod":
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            wait_for(lambda: not self.exists(self.core.read_namespaced_pod, name, namespace), f"{kind} {namespace}/{name} to be gone")
        else:
            raise ClusterError(f"cannot delete a {kind} in a scenario")
        return time.monotonic() - started

    @staticmethod
    def exists(read, name: str, namespace: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            read(name, namespace)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    # --- NetworkPolicy enforcement -------------------------------------------

    def policy_state(self) -> dict[str, int]:
        """What wait_policies_enforced compares against: Cilium's policy revision per agent pod on a Cilium
        cluster, else our policy agents' line counts per node."""
        return self.cilium_revisions() if self.cilium_agents() else self.policy_agent_lines()

    def cilium_agents(self) -> list:
        return cilium.agents(self.core)

    def cilium_revisions(self) -> dict[str, int]:
        """Agent pod -> the revision of its policy repository."""
        return cilium.policy_revisions(self.core)

    def wait_cilium_enforced(self, before: dict[str, int]) -> None:
        """Until every Cilium agent realized the change (`cluster.cilium.wait_enforced`), polled every 0.2 s
        rather than `cilium-dbg policy wait`'s 1 s."""
        cilium.wait_enforced(self.core, before, lambda probe, what: wait_for(probe, what, poll_s=0.2))

    def policy_agent_lines(self) -> dict[str, int]:
        """Node -> how many 'applied' lines its policy agent has printed so far."""
        counts = {}
        for pod in self.core.list_namespaced_pod(NS, label_selector=POLICY_AGENT_SELECTOR).items:
            log = self.core.read_namespaced_pod_log(pod.metadata.name, NS)
            counts[pod.spec.node_name] = sum(" applied " in line for line in log.splitlines())
        return counts

    def wait_policies_enforced(self, policies: list[Manifest], before: dict[str, int]) -> None:
        """Until the agent of every node hosting a pod one of `policies` selects printed a new 'applied' line
        (an agent whose node hosts none of them has nothing to change and prints nothing); on Cilium,
        wait_cilium_enforced."""
        if before and self.cilium_agents():
            self.wait_cilium_enforced(before)
            return
        if not before:
            raise ClusterError("no NetworkPolicy agent runs in this cluster (pods app=dnsc-policy): cannot tell when "
                               "a policy is enforced")
        nodes = set()
        for policy in policies:
            for pod in self.core.list_namespaced_pod(policy.metadata.namespace).items:
                if policy.spec.podSelector.matches(pod.metadata.labels or {}) and pod.spec.node_name:
                    nodes.add(pod.spec.node_name)
        pending = lambda: [n for n in nodes if self.policy_agent_lines().get(n, 0) <= before.get(n, 0)]  # noqa: E731
        wait_for(lambda: not pending(), f"the policy agents on {', '.join(sorted(nodes))} to apply the change", poll_s=0.5)

    # --- replicas -------------------------------------------------------------

    def stop_replica(self, replica: int) -> float:
        """Replica `replica` (CoreDNS pods by name) is removed: pod deleted, Deployment scaled down by one."""
        started = time.monotonic()
        pods = sorted(self.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items, key=lambda p: p.metadata.name)
        if replica >= len(pods):
            raise ClusterError(f"there is no CoreDNS replica {replica} (replicas: {len(pods)})")
        victim = pods[replica]
        self.remember_deployment()
        self.core.patch_namespaced_pod(victim.metadata.name, NS, {"metadata": {"annotations": {
            "controller.kubernetes.io/pod-deletion-cost": "-1000000"}}})
        self.apps.patch_namespaced_deployment_scale(DEPLOYMENT, NS, {"spec": {"replicas": len(pods) - 1}})
        wait_for(lambda: victim.status.pod_ip not in self.dns_endpoint_ips()
                 and not self.exists(self.core.read_namespaced_pod, victim.metadata.name, NS),
                 f"CoreDNS replica {victim.metadata.name} to be gone")
        return time.monotonic() - started


def ready(pod) -> bool:
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
