"""The lab spec as a real cluster's objects: its Namespaces, Pods, Services and NetworkPolicies (pods made
runnable on an image), and the Corefile forwarding to an upstream's address. The kind cluster creates them
at `cluster up`; the kube backend applies a scenario's with them."""

from __future__ import annotations

import re

API_VERSIONS = {"Namespace": "v1", "Pod": "v1", "Service": "v1", "NetworkPolicy": "networking.k8s.io/v1"}
BUILT_IN_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
FORWARD_TO_RESOLV_CONF = re.compile(r"(\bforward\s+\S+\s+)/etc/resolv\.conf\b")


def manifest_objects(spec, client_image: str) -> list[dict]:
    """The spec's manifests as API objects, in creation order; pods run the client image."""
    objects = []
    for manifest in spec.manifests:
        body = manifest.model_dump(by_alias=True, exclude_none=True)
        kind = body.setdefault("kind", type(manifest).__name__)
        body["apiVersion"] = API_VERSIONS[kind]
        if kind == "Namespace" and body["metadata"]["name"] in BUILT_IN_NAMESPACES:
            continue
        if kind == "Pod":
            body["spec"] = runnable_pod_spec(body.get("spec", {}), client_image)
        objects.append(body)
    order = list(API_VERSIONS)
    return sorted(objects, key=lambda o: order.index(o["kind"]))


def runnable_pod_spec(spec: dict, image: str) -> dict:
    """A lab pod spec made runnable: every container gets the client image; one that declares a port
    serves HTTP on it, the others sleep. Fields the lab knows (hostname, subdomain, dnsConfig) stay."""
    containers = spec.get("containers") or [{"name": "main"}]
    runnable = []
    for container in containers:
        ports = container.get("ports") or []
        command = ["python3", "-m", "http.server", str(ports[0]["containerPort"])] if ports else ["sleep", "infinity"]
        runnable.append({**container, "image": image, "imagePullPolicy": "Never", "command": command})
    return {**spec, "containers": runnable, "terminationGracePeriodSeconds": 1}


def cluster_corefile(corefile: str, upstream_ip: str) -> str:
    """The spec's Corefile with `forward . /etc/resolv.conf` pointed at the upstream container:
    the nodes' resolv.conf leads to Docker's DNS and off this machine."""
    return FORWARD_TO_RESOLV_CONF.sub(rf"\g<1>{upstream_ip}", corefile)
