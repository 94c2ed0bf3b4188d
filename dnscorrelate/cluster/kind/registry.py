"""A local registry beside a kind cluster (`cluster up --registry`), set up as kind's own local-registry guide
sets one up, and the push of the agent image to a registry (`agent image --push`).

- The container `dnsc-NAME-registry` (the image kind/build.sh builds from the `distribution` module), on the
  cluster's Docker network `dnsc-NAME`, its port 5000 published on 127.0.0.1 only, at a port Docker picks:
  `localhost:PORT` is the registry's name, on this machine (docker push) and in the cluster alike.
- Each node's containerd reads registry hosts from /etc/containerd/certs.d (`config_path`, set when kind creates
  the nodes: `kind_config_patch`); `localhost:PORT/hosts.toml` there sends pulls of `localhost:PORT/...` to
  `http://dnsc-NAME-registry:5000` on the cluster's network.
- The ConfigMap `local-registry-hosting` in kube-public (KEP-1755) says where it is, for tools that look.
- The nodes' guard lets them reach its addresses (`addresses`); nothing else changes.

Its label (`cluster.LABEL`, given by `cluster.up`: this module does not import cluster.py, which imports it) makes `cluster down` (and `down --all` after a crash) remove it with the cluster; it
stores what is pushed inside the container, so that goes too.
"""

from __future__ import annotations

import time

from dnscorrelate.errors import ClusterError

PORT = 5000  # the registry's port in its container (kind/registry/config.yml)
CERTS_D = "/etc/containerd/certs.d"
HOSTING_CONFIGMAP = "local-registry-hosting"
HOSTING_NAMESPACE = "kube-public"
READY_TIMEOUT_S = 30.0


def container_name(cluster) -> str:
    return f"{cluster.kind_name}-registry"


def kind_config_patch() -> list[str]:
    """kind config lines (items of `containerdConfigPatches`): containerd reads registry hosts from CERTS_D."""
    return ["  - |-", '    [plugins."io.containerd.grpc.v1.cri".registry]', f'      config_path = "{CERTS_D}"']


def hosts_toml(container: str) -> str:
    """containerd's hosts.toml for the registry's name `localhost:PORT`: pull from the container over plain HTTP
    on the cluster's network (`localhost` in the nodes is each node itself)."""
    return f'[host."http://{container}:{PORT}"]\n  capabilities = ["pull", "resolve"]\n'


def hosting_configmap(host: str) -> dict:
    """KEP-1755's ConfigMap: where the cluster's local registry is, as kind's guide publishes it."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": HOSTING_CONFIGMAP, "namespace": HOSTING_NAMESPACE},
            "data": {"localRegistryHosting.v1": f'host: "{host}"\nhelp: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'}}


def start(cluster, build, client, labels: dict) -> str:
    """The registry container on the cluster's network, answering on 127.0.0.1, with `labels` (the cluster's, so
    `cluster down` removes it); returns its name `localhost:PORT`."""
    if not build.registry_image:
        raise ClusterError("this build has no registry image (no REGISTRY_IMAGE in build.env): run `make cluster` from the "
                           "dnscorrelate checkout (it builds only what is missing)")
    client.containers.run(build.registry_image, name=container_name(cluster), detach=True, network=cluster.network,
                          ports={f"{PORT}/tcp": ("127.0.0.1", None)}, labels=labels)
    host = f"localhost:{host_port(cluster, client)}"
    wait_answering(host)
    return host


def host_port(cluster, client) -> int:
    """The port on 127.0.0.1 Docker published the registry's on."""
    container = client.containers.get(container_name(cluster))
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{PORT}/tcp") or []
    if not bindings:
        raise ClusterError(f"the registry container {container.name} has no published port (state {container.status})")
    return int(bindings[0]["HostPort"])


def wait_answering(host: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until the registry answers its API's base (`GET /v2/`, 200), or a ClusterError."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{host.replace('localhost', '127.0.0.1')}/v2/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"the local registry at {host} did not answer GET /v2/ within {timeout_s:.0f} s")
        time.sleep(0.3)


def addresses(cluster, client) -> list[str]:
    """The registry container's addresses on the cluster's network (IPv4 and IPv6): the nodes' guard allows them."""
    container = client.containers.get(container_name(cluster))
    settings = container.attrs["NetworkSettings"]["Networks"].get(cluster.network) or {}
    return [a for a in (settings.get("IPAddress"), settings.get("GlobalIPv6Address")) if a]


def configure_nodes(cluster, nodes: dict, host: str) -> None:
    """Each node's containerd (`nodes`: node containers by name) sends pulls of `host/...` to the registry container
    (hosts.toml, read at each pull)."""
    directory = f"{CERTS_D}/{host}"
    for name, node in nodes.items():
        code, output = node.exec_run(["sh", "-c", f"mkdir -p '{directory}' && printf '%s' \"$HOSTS\" > '{directory}/hosts.toml'"],
                                     environment={"HOSTS": hosts_toml(container_name(cluster))})
        if code != 0:
            raise ClusterError(f"writing {directory}/hosts.toml on node {name} failed: {output.decode(errors='replace').strip()}")


def publish(api, host: str) -> None:
    """The ConfigMap local-registry-hosting in kube-public."""
    from kubernetes import client as k8s

    k8s.CoreV1Api(api).create_namespaced_config_map(HOSTING_NAMESPACE, hosting_configmap(host))


def registry_of(cluster, client) -> str | None:
    """`localhost:PORT` of the cluster's registry, or None when it has none."""
    import docker.errors

    try:
        return f"localhost:{host_port(cluster, client)}"
    except (docker.errors.NotFound, ClusterError):
        return None


def platform(image) -> str:
    """An image's OS/architecture, as its config says (docker import stamps the daemon's own)."""
    attrs = image.attrs
    return "/".join(p for p in (attrs.get("Os"), attrs.get("Architecture"), attrs.get("Variant")) if p)


# --- agent image --push --------------------------------------------------------------------------------------

def split_reference(reference: str) -> tuple[str, str | None]:
    """REGISTRY/NAME[:TAG] as (REGISTRY/NAME, TAG or None); a UsageError-worthy ValueError for a name without its
    registry (it would be pushed to Docker Hub) or with a digest (a push makes the digest)."""
    from docker.utils import parse_repository_tag

    from dnscorrelate.cluster.images import pullable

    if "@" in reference:
        raise ValueError(f"{reference}: name a tag, not a digest (the push prints the digest)")
    repository, tag = parse_repository_tag(reference)
    if not pullable(repository):
        raise ValueError(f"{reference}: name the registry first (localhost:5001/dnscorrelate/agent, "
                         "registry.example.com/team/dnscorrelate-agent): a bare name would go to Docker Hub")
    return repository, tag


def push_image(client, source: str, reference: str, say=lambda _: None) -> str:
    """Tag the local image `source` as `reference` (REGISTRY/NAME[:TAG], the source's tag when none) and push it with
    the Docker `client`; returns the pushed image pinned by its digest, REGISTRY/NAME@sha256:..."""
    import docker.errors

    repository, tag = split_reference(reference)
    tag = tag or source.rpartition(":")[2]
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound:
        raise ClusterError(f"the agent image {source} is not in this machine's Docker: run `make cluster`") from None
    image.tag(repository, tag)
    digest = None
    say(f"pushing {repository}:{tag} ({platform(image)} only: the build makes images for the machine it runs on)")
    for line in client.images.push(repository, tag, stream=True, decode=True):
        if "error" in line:
            raise ClusterError(f"pushing {repository}:{tag} failed: {line.get('error')}")
        digest = (line.get("aux") or {}).get("Digest") or digest
    if not digest:
        raise ClusterError(f"pushing {repository}:{tag}: the registry reported no digest")
    return f"{repository}@{digest}"
