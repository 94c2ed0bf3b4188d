"""What kind/build.sh produced: the kind CLI, kubectl and the images, read from its build.env."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnscorrelate.errors import ClusterError

CACHE = Path(os.environ.get("DNSCORRELATE_CACHE", "/var/cache/dnscorrelate")) / "kind"


@dataclass(frozen=True)
class Build:
    kind: str
    kubectl: str
    node_image: str
    client_image: str
    agent_image: str
    upstream_image: str
    flannel_image: str
    kube_version: str
    cap_shim: bool  # this machine lacks CAP_SYS_RESOURCE: containerd in the nodes runs runc through the shim
    agent_standalone_image: str = ""  # the agent image with the package baked in, for nodes without this checkout
    cilium_manifest: str = ""  # Cilium's chart rendered with our images (`cluster up --cni cilium`); empty in older builds
    cilium_hubble_manifest: str = ""  # the same with Hubble and the DNS proxy on (`cluster up --hubble`); empty in older builds
    registry_image: str = ""  # the local registry from the distribution module (`cluster up --registry`); empty in older builds
    tracer_dir: str = ""  # the CO-RE tracer objects bpf/build.sh compiled (mounted into the nodes for the agents)


def load_build(cache: Path = CACHE) -> Build:
    """The build's outputs, or a ClusterError saying how to make them."""
    env_file = cache / "build.env"
    if not env_file.exists():
        raise ClusterError(f"the cluster images are not built ({env_file} is missing): run `make cluster` "
                           "from the dnscorrelate checkout (offline; about 40 minutes the first time, seconds after)")
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    missing = [k for k in ("KIND", "KUBECTL", "NODE_IMAGE", "CLIENT_IMAGE", "AGENT_IMAGE", "UPSTREAM_IMAGE", "FLANNEL_IMAGE",
                           "KUBE_VERSION") if not values.get(k)]
    if missing:
        raise ClusterError(f"{env_file} is from an older build (no {', '.join(missing)}): run `make cluster` "
                           "from the dnscorrelate checkout (seconds to minutes: only what changed is rebuilt)")
    return Build(values["KIND"], values["KUBECTL"], values["NODE_IMAGE"], values["CLIENT_IMAGE"], values["AGENT_IMAGE"],
                 values["UPSTREAM_IMAGE"], values["FLANNEL_IMAGE"], values["KUBE_VERSION"], values.get("CAP_SHIM") == "1",
                 values.get("AGENT_STANDALONE_IMAGE", ""), values.get("CILIUM_MANIFEST", ""),
                 values.get("CILIUM_HUBBLE_MANIFEST", ""), values.get("REGISTRY_IMAGE", ""), values.get("TRACER_DIR", ""))


def agent_image(source_from_host: bool = True) -> str:
    """The agent image `make cluster` built here: for nodes that mount this checkout (kind clusters of `cluster
    up`) the runtime alone, for any other the one with the package baked in; or an error saying to name one."""
    try:
        build = load_build()
    except ClusterError:
        build = None
    image = (build.agent_image if source_from_host else build.agent_standalone_image) if build else ""
    if not image:
        raise ClusterError("no agent image was built here: name one with --agent-image (an image with Debian's "
                           "python3 and libbpf1, dnscorrelate, and its compiled tracer in /opt/dnscorrelate/tracer; "
                           "`make cluster` builds dnscorrelate/agent-standalone, which you can push to a registry your "
                           "nodes pull from; kind/README.md)")
    return image
