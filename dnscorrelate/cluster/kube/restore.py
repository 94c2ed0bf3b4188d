"""Putting a shared cluster back after a scenario: undo its journal (journal.py), newest change first, each
waited for, then prove the cluster is back to its `Baseline` (what the first scenario found)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from dnscorrelate.cluster.kube.faults import CUSTOM_MAP, DEPLOYMENT, DNS_SELECTOR, NS, RELOAD, ready, wait_for
from dnscorrelate.cluster.kube.journal import SCENARIO_LABEL, Journal, config_map_entry
from dnscorrelate.cluster.model import CILIUM_POLICY_KINDS
from dnscorrelate.errors import ClusterError


# --- putting it back --------------------------------------------------------------------


def restore(faults, journal: Journal, say=lambda message: None) -> list[str]:
    """Undo the journal's entries on the cluster behind `faults` (a KubeFaults), newest first, each waited for;
    returns what was done. The journal file is removed once everything is back."""
    done = []
    deployments = [e for e in journal.entries if e["action"] == "deployment"]
    for entry in reversed(journal.entries):
        action = entry["action"]
        what = f"{entry['kind']} {entry['namespace']}/{entry['name']}"
        if action == "created":
            say(f"removing {what}")
            if remove_object(faults, entry["kind"], entry["namespace"], entry["name"]):
                done.append(f"removed {what}")
        elif action == "deleted":
            say(f"creating {what} again")
            recreate(faults, entry)
            done.append(f"created {what} again")
        elif action == "config-map":
            say(f"restoring {what}")
            if restore_config_map(faults, entry, reload_coredns=not deployments):
                done.append(f"restored {what}")
    for entry in deployments:
        say(f"restoring Deployment {entry['namespace']}/{entry['name']}")
        if restore_deployment(faults, entry):
            done.append(f"restored Deployment {entry['namespace']}/{entry['name']} (replicas {entry['replicas']}, its template)")
    journal.close()
    return done


def remove_object(faults, kind: str, namespace: str, name: str) -> bool:
    """Delete an object a scenario created and wait until it is gone (a NetworkPolicy: until unenforced); False
    when it was not there (the kill came before its creation)."""
    reads = {"Service": faults.core.read_namespaced_service, "Pod": faults.core.read_namespaced_pod,
             "NetworkPolicy": faults.net.read_namespaced_network_policy, "ConfigMap": faults.core.read_namespaced_config_map,
             **{k: faults.cilium_policy_reader(k) for k in CILIUM_POLICY_KINDS}}
    if kind == "Namespace":
        if not faults.exists(lambda n, _: faults.core.read_namespace(n), name, ""):
            return False
        faults.core.delete_namespace(name)
        wait_for(lambda: not faults.exists(lambda n, _: faults.core.read_namespace(n), name, ""), f"namespace {name} to be gone", timeout_s=180)
        return True
    if kind not in reads:
        raise ClusterError(f"cannot remove a {kind} a scenario created ({namespace}/{name}): remove it by hand")
    if not faults.exists(reads[kind], name, namespace):
        return False
    if kind == "ConfigMap":
        faults.core.delete_namespaced_config_map(name, namespace)
    else:
        faults.delete_unjournaled(kind, namespace, name)
    return True


def recreate(faults, entry: dict) -> None:
    from kubernetes import utils

    kind = entry["kind"]
    if faults.exists({"Service": faults.core.read_namespaced_service, "NetworkPolicy": faults.net.read_namespaced_network_policy,
                      "Pod": faults.core.read_namespaced_pod, **{k: faults.cilium_policy_reader(k) for k in CILIUM_POLICY_KINDS}}[kind],
                     entry["name"], entry["namespace"]):
        return
    before = faults.policy_state() if kind in ("NetworkPolicy", *CILIUM_POLICY_KINDS) else None
    if kind in CILIUM_POLICY_KINDS:
        faults.create_cilium_policy(entry["body"])
        faults.wait_policies_enforced([], before)
        return
    utils.create_from_dict(faults.api, entry["body"])
    if kind == "NetworkPolicy":
        from dnscorrelate.cluster.model import NetworkPolicy

        faults.wait_policies_enforced([NetworkPolicy.model_validate(entry["body"])], before)


def restore_config_map(faults, entry: dict, reload_coredns: bool) -> bool:
    """The ConfigMap's data as recorded (or gone, if it did not exist); when it is CoreDNS's and no Deployment
    rollback follows, CoreDNS takes it up (reload, or a restart) before this returns. False when it was unchanged."""
    namespace, name = entry["namespace"], entry["name"]
    current = config_map_entry(faults.core, namespace, name)
    if (current["existed"], current["data"]) == (entry["existed"], entry["data"]):
        return False
    if not entry["existed"]:
        faults.core.delete_namespaced_config_map(name, namespace)
        return True
    pods = faults.core.list_namespaced_pod(NS, label_selector="k8s-app=kube-dns").items
    patched_at = datetime.now(timezone.utc)

    def replace() -> None:
        body = faults.core.read_namespaced_config_map(name, namespace)
        body.data = entry["data"]
        faults.core.replace_namespaced_config_map(name, namespace, body)

    on_conflict_again(replace)
    if reload_coredns and (namespace, name) == (NS, "coredns"):
        old, new = current["data"].get("Corefile", ""), entry["data"].get("Corefile", "")
        if RELOAD.search(old) and RELOAD.search(new) and pods:
            faults.wait_reloaded(pods, patched_at)
        else:
            faults.restart_coredns()
    return True


def on_conflict_again(replace, attempts: int = 3) -> None:
    """`replace()` (a read, then a replace of what was read), read and done again when the API server says the object
    changed in between (409 Conflict): a run killed mid-fault may have had a write of its own still in flight."""
    from kubernetes.client.rest import ApiException

    for attempt in range(attempts):
        try:
            return replace()
        except ApiException as err:
            if err.status != 409 or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def restore_deployment(faults, entry: dict) -> bool:
    """Replicas and pod template as recorded, then wait for the rollout (only pods of that template, all ready,
    behind kube-dns); False when it was unchanged."""
    deployment = faults.apps.read_namespaced_deployment(entry["name"], entry["namespace"])
    template = faults.api.sanitize_for_serialization(deployment.spec.template)
    if deployment.spec.replicas == entry["replicas"] and template == entry["template"]:
        return False

    def replace() -> None:
        body = faults.api.sanitize_for_serialization(faults.apps.read_namespaced_deployment(entry["name"], entry["namespace"]))
        body["spec"]["replicas"] = entry["replicas"]
        body["spec"]["template"] = entry["template"]
        body.pop("status", None)
        faults.apps.replace_namespaced_deployment(entry["name"], entry["namespace"], body)

    on_conflict_again(replace)
    wait_rolled_out(faults, entry["namespace"], entry["name"])
    return True


def wait_rolled_out(faults, namespace: str, name: str) -> None:
    def rolled_out() -> bool:
        d = faults.apps.read_namespaced_deployment(name, namespace)
        s = d.status
        wanted = d.spec.replicas
        return ((s.observed_generation or 0) >= d.metadata.generation and (s.updated_replicas or 0) == wanted
                and (s.ready_replicas or 0) == wanted and (s.replicas or 0) == wanted and coredns_settled(faults, wanted))

    wait_for(rolled_out, f"Deployment {namespace}/{name} to roll back to its recorded template", poll_s=0.5)


def coredns_settled(faults, wanted: int) -> bool:
    """As many CoreDNS pods as wanted, all ready, none terminating, and kube-dns's endpoints exactly theirs."""
    pods = faults.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items
    if len(pods) != wanted or any(p.metadata.deletion_timestamp or not ready(p) for p in pods):
        return False
    return faults.dns_endpoint_ips() == {p.status.pod_ip for p in pods}


# --- the baseline -----------------------------------------------------------------------


@dataclass
class Baseline:
    """The cluster's DNS as it was before the first scenario: what every scenario must leave behind."""
    corefile_map: dict
    custom_map: dict | None  # None: there was no coredns-custom
    replicas: int
    running_sha512: str | None  # what each replica's `reload` logged for the Corefile it runs (None: no reload plugin)

    @classmethod
    def read(cls, faults) -> "Baseline":
        corefile = config_map_entry(faults.core, NS, "coredns")["data"]
        custom = config_map_entry(faults.core, NS, CUSTOM_MAP)
        replicas = faults.apps.read_namespaced_deployment(DEPLOYMENT, NS).spec.replicas
        # a rollout still under way (a test or a user's change just before) would give two Corefiles' SHA512s
        wait_for(lambda: coredns_settled(faults, replicas), "CoreDNS to settle (one ready generation) before its baseline is read",
                 poll_s=0.5)
        return cls(corefile, custom["data"] if custom["existed"] else None, replicas, running_sha512(faults))


def running_sha512(faults) -> str | None:
    """The one SHA512 every CoreDNS replica logged for the Corefile it runs; `reload` hashes its parsed server
    blocks (as JSON), not the file, so it is compared with what the replicas logged on the baseline, not
    computed. None without `reload`; a ClusterError when the replicas run different Corefiles."""
    pods = faults.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items
    found = {running_corefile_sha512(faults, p.metadata.name) for p in pods}
    if found == {None} or not found:
        return None
    if len(found) != 1:
        raise ClusterError(f"the CoreDNS replicas run different Corefiles (SHA512s {', '.join(str(f)[:12] for f in found)}): "
                           "no baseline to return to; wait until a rollout or reload finished")
    return found.pop()


def baseline_problems(faults, baseline: Baseline) -> list[str]:
    """What differs from the baseline now: ConfigMaps, CoreDNS's replicas and readiness, the Corefile each
    replica runs (the SHA512 its `reload` plugin logs), objects labelled as a scenario's. Empty: back to baseline."""
    problems = []
    if config_map_entry(faults.core, NS, "coredns")["data"] != baseline.corefile_map:
        problems.append("the coredns ConfigMap differs from the baseline")
    custom = config_map_entry(faults.core, NS, CUSTOM_MAP)
    if (custom["data"] if custom["existed"] else None) != baseline.custom_map:
        problems.append("the coredns-custom ConfigMap differs from the baseline")
    wanted = faults.apps.read_namespaced_deployment(DEPLOYMENT, NS).spec.replicas
    if wanted != baseline.replicas:
        problems.append(f"CoreDNS wants {wanted} replicas, the baseline {baseline.replicas}")
    if not coredns_settled(faults, wanted):
        problems.append("CoreDNS is not settled (replicas not all ready, or terminating, or kube-dns's endpoints differ)")
    if baseline.running_sha512:
        for pod in faults.core.list_namespaced_pod(NS, label_selector=DNS_SELECTOR).items:
            running = running_corefile_sha512(faults, pod.metadata.name)
            if running != baseline.running_sha512:
                problems.append(f"CoreDNS {pod.metadata.name} runs another Corefile (SHA512 {str(running)[:12]}..., "
                                f"the baseline's {baseline.running_sha512[:12]}...)")
    problems += [f"{what} is left from a scenario" for what in labelled_objects(faults)]
    return problems


def running_corefile_sha512(faults, pod: str) -> str | None:
    """The SHA512 of the Corefile the replica last loaded, from its `reload` plugin's log line."""
    log = faults.core.read_namespaced_pod_log(pod, NS)
    found = None
    for line in log.splitlines():
        if "Running configuration SHA512 = " in line:
            found = line.rsplit("= ", 1)[1].strip()
    return found


def labelled_objects(faults) -> list[str]:
    """Objects anywhere carrying the scenario label, as `Kind ns/name`."""
    selector = SCENARIO_LABEL
    found = [f"Namespace {n.metadata.name}" for n in faults.core.list_namespace(label_selector=selector).items]
    for kind, listing in (("Pod", faults.core.list_pod_for_all_namespaces), ("Service", faults.core.list_service_for_all_namespaces),
                          ("NetworkPolicy", faults.net.list_network_policy_for_all_namespaces),
                          ("ConfigMap", faults.core.list_config_map_for_all_namespaces)):
        found += [f"{kind} {o.metadata.namespace}/{o.metadata.name}" for o in listing(label_selector=selector).items
                  if not o.metadata.deletion_timestamp or kind != "Pod"]
    return found + faults.labelled_cilium_policies(selector)


def wait_baseline(faults, baseline: Baseline, timeout_s: float = 120) -> None:
    """Until the cluster is back to `baseline` (a ClusterError listing what still differs at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = baseline_problems(faults, baseline)
        if not problems:
            return
        if time.monotonic() > deadline:
            raise ClusterError("the cluster is not back to its baseline: " + "; ".join(problems))
        time.sleep(0.5)
