"""A cluster's objects read from the API server into `cluster.model`, with the official client."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

from dnscorrelate.cluster.model import ClusterModel, KubeModel
from dnscorrelate.errors import ClusterError

# kind -> (API group class, its list call); each list is one request.
LISTS = {
    "Namespace": ("CoreV1Api", "list_namespace"),
    "Node": ("CoreV1Api", "list_node"),
    "Pod": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "Service": ("CoreV1Api", "list_service_for_all_namespaces"),
    "EndpointSlice": ("DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces"),
    "NetworkPolicy": ("NetworkingV1Api", "list_network_policy_for_all_namespaces"),
}
# Cilium's policies (custom objects, cilium.io/v2): kind -> plural; a cluster without Cilium has none
CILIUM_LISTS = {"CiliumNetworkPolicy": "ciliumnetworkpolicies", "CiliumClusterwideNetworkPolicy": "ciliumclusterwidenetworkpolicies"}
MODEL_KINDS = (*LISTS, *CILIUM_LISTS)


# A ConfigMap `cluster up` (and the runner's clusters) create in kube-system: the scenario faults change only a cluster
# that carries it (kube/faults.py's `refuse_foreign_cluster`).
MADE_HERE = "dnscorrelate-made-here"
MADE_HERE_NAMESPACE = "kube-system"


def client_from_kubeconfig(kubeconfig: str | None = None, context: str | None = None):
    """An API client as kubectl would make it: --kubeconfig, else $KUBECONFIG, else ~/.kube/config; in a pod, the
    service account."""
    from kubernetes import config

    try:
        if kubeconfig is None and context is None and config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
            config.load_incluster_config()
            from kubernetes import client

            return client.ApiClient()
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, FileNotFoundError) as err:
        raise ClusterError(f"cannot load a kubeconfig{f' context {context!r}' if context else ''}: {err}") from None


def read_cilium_policies(api, kind: str) -> list[KubeModel]:
    """Every Cilium policy of `kind`; none when the API does not know the kind (no Cilium) or may not list it
    (the diagnosis then names no Cilium policy, and says nothing wrong)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from dnscorrelate.cluster import model

    try:
        listing = client.CustomObjectsApi(api).list_cluster_custom_object("cilium.io", "v2", CILIUM_LISTS[kind])
    except ApiException as err:
        if err.status in (403, 404):
            return []
        raise ClusterError(f"the API server refused to list {kind}s ({err.status} {err.reason})") from None
    return [getattr(model, kind).model_validate({**item, "kind": kind}) for item in listing.get("items", [])]


def read_objects(api, kinds: tuple[str, ...] = MODEL_KINDS) -> list[KubeModel]:
    """Every object of `kinds`, as model objects."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from dnscorrelate.cluster import model

    objects = []
    for kind in kinds:
        if kind in CILIUM_LISTS:
            objects += read_cilium_policies(api, kind)
            continue
        group, call = LISTS[kind]
        try:
            listing = getattr(getattr(client, group)(api), call)()
        except ApiException as err:
            raise ClusterError(f"the API server refused to list {kind}s ({err.status} {err.reason}): "
                               "the credentials need get/list on them") from None
        cls = getattr(model, kind)
        for item in api.sanitize_for_serialization(listing)["items"]:
            objects.append(cls.model_validate({**item, "kind": kind}))
    return objects


def read_model(api, kinds: tuple[str, ...] = MODEL_KINDS) -> ClusterModel:
    return ClusterModel.from_objects(read_objects(api, kinds))


KUBELET_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z ")


def stamped_later(line: str, skew_ns: int) -> str:
    """A `--timestamps` log line as a node clock `skew_ns` ahead would have stamped it, to the nanosecond (tests
    only: `agent.test_clock_skews`); a line without a stamp stays as it is."""
    match = KUBELET_STAMP.match(line)
    if not match:
        return line
    seconds = int(datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp())
    ns = seconds * 10**9 + int((match.group(2) or "0")[:9].ljust(9, "0")) + skew_ns
    stamp = datetime.fromtimestamp(ns // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns % 10**9:09d}Z " + line[match.end():]


def logged_before(line: str, moment: datetime) -> bool:
    """Whether a `--timestamps` log line was written before `moment` (since_seconds counts whole seconds: the
    lines of the second before it, from an earlier scenario on the same cluster, are dropped here)."""
    match = KUBELET_STAMP.match(line)
    if not match:
        return False
    stamp = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    return stamp.replace(microsecond=int(fraction)) < moment
