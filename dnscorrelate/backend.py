"""Where live evidence comes from. The lab implements it today; a real-cluster backend
(kubectl for pods and logs, a node agent for capture) can implement the same interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dnscorrelate.cluster.facts import ClusterFacts


@dataclass(frozen=True)
class PodRef:
    key: str  # namespace/name
    ip: str


class ClusterBackend(Protocol):
    def pod(self, ref: str, namespace: str) -> PodRef: ...
    def capture_targets(self) -> list: ...
    def watch_targets(self): ...
    def dns_log_paths(self) -> list[str]: ...
    def corefile(self) -> str: ...
    def facts(self) -> ClusterFacts: ...
    def topology(self): ...


class LabBackend:
    """A running lab, found by name."""

    def __init__(self, name: str | None = None) -> None:
        from dnscorrelate.cluster.lab.runtime import Lab, resolve_lab_name

        self.lab = Lab.load(resolve_lab_name(name))

    def pod(self, ref: str, namespace: str) -> PodRef:
        pod = self.lab.pod(ref, namespace)
        return PodRef(pod.key, pod.ip)

    def capture_targets(self) -> list:
        from dnscorrelate.sources.capture import lab_targets

        return lab_targets(self.lab)

    def watch_targets(self):
        from dnscorrelate.sources.capture import lab_watcher

        return lab_watcher(self.lab)

    def dns_log_paths(self) -> list[str]:
        return [p.log for p in self.lab.processes if p.role.startswith(("coredns-", "nodelocal-"))]

    def corefile(self) -> str:
        return self.lab.topology.spec.corefile

    def facts(self) -> ClusterFacts:
        from dnscorrelate.cluster.lab.facts import facts_from_topology

        return facts_from_topology(self.lab.topology)

    def topology(self):
        return self.lab.topology
