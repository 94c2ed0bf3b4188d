"""Where to capture on the host that runs a cluster's nodes (kind on this machine): every pod's and
node's network namespace, found in /proc.

A pod's processes sit in a cgroup whose path holds the pod's UID (`pod<uid>` with the cgroupfs
driver, `pod<uid_with_underscores>.slice` with systemd's); `/proc/PID/ns/net` is then the pod's
network namespace. A node is a container whose init process the container runtime reports; its
namespace is the node's. Pods on the host network share their node's namespace and are not
listed twice. Vantages are named as the lab names them (`NS/NAME` for pods, the node's name for
nodes), so traces and findings read the same on both backends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dnscorrelate.cluster.backend import Target

POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
PROC = Path("/proc")


@dataclass(frozen=True)
class PodRef:
    uid: str
    key: str  # namespace/name
    role: str  # coredns, pod


def pod_refs_of(pods) -> dict[str, PodRef]:
    """Pods by UID, from the API's pod objects; a pod on the host network shares its node's namespace and is left
    out (the node is captured as itself)."""
    return {p.metadata.uid: PodRef(p.metadata.uid, f"{p.metadata.namespace}/{p.metadata.name}",
                                   "coredns" if (p.metadata.labels or {}).get("k8s-app") == "kube-dns" else "pod")
            for p in pods if not p.spec.host_network}


def pod_uid_of(pid: int, proc: Path = PROC) -> str | None:
    """The UID of the pod whose cgroup `pid` is in, or None (not a pod, or gone)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    match = POD_UID.search(text)
    return match.group(1).replace("_", "-") if match else None


def netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids(proc: Path = PROC) -> Iterable[int]:
    return (int(p.name) for p in proc.iterdir() if p.name.isdigit())


def pod_targets(pods: dict[str, PodRef], node_pids: dict[str, int], proc: Path = PROC) -> list[Target]:
    """One target per node and per pod namespace found in /proc, first process of each wins."""
    targets, seen = [], set()
    for node, pid in sorted(node_pids.items()):
        path = str(proc / str(pid) / "ns" / "net")
        inode = netns_inode(path)
        if inode is not None and inode not in seen:
            seen.add(inode)
            targets.append(Target(path, node, "node"))
    for pid in sorted(pids(proc)):
        uid = pod_uid_of(pid, proc)
        pod = pods.get(uid) if uid else None
        if pod is None:
            continue
        path = str(proc / str(pid) / "ns" / "net")
        inode = netns_inode(path)
        if inode is None or inode in seen:
            continue
        seen.add(inode)
        targets.append(Target(path, pod.key, pod.role))
    return targets
