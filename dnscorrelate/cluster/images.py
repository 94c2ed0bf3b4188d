"""Image names: which ones a node may pull. Shared by the agent's manifest (`kube/agent.py`) and the push to a
registry (`kind/registry.py`)."""

from __future__ import annotations


def pullable(image: str) -> bool:
    """True for an image a node may pull: pinned by digest, or named with its registry (`host.tld/...`,
    `host:port/...`, `localhost/...`). A bare `dnscorrelate/agent:TAG` would be pulled from docker.io/dnscorrelate,
    a namespace this project does not own, so such a name is only run where the nodes already hold it."""
    if "@sha256:" in image:
        return True
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")
