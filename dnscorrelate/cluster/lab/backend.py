"""The lab as a backend: capture in its namespaces, its DNS servers' log files, facts from its topology,
and the faults it can take (the `Faults` seam of `cluster.backend`)."""

from __future__ import annotations

from dnscorrelate.cluster.backend import LogSource, TargetWatcher
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.lab import faults as lab_faults
from dnscorrelate.cluster.lab.capture import lab_targets, lab_watcher
from dnscorrelate.cluster.lab.facts import facts_from_topology
from dnscorrelate.cluster.lab.runtime import Lab, resolve_lab_name
from dnscorrelate.cluster.model import Manifest, Pod
from dnscorrelate.sources.capture import Target

DNS_SERVER_ROLES = ("coredns-", "nodelocal-")


class LabBackend:
    """A running lab. Holds the `Lab` object itself, so facts follow the changes made through it."""

    name = "lab"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    @classmethod
    def find(cls, name: str | None = None) -> LabBackend:
        """The lab called `name`, or the only one up."""
        return cls(Lab.load(resolve_lab_name(name)))

    def pod(self, ref: str, namespace: str) -> Pod:
        placed = self.lab.pod(ref, namespace)
        return self.facts().model.pod(placed.namespace, placed.name)

    def capture_targets(self) -> list[Target]:
        return lab_targets(self.lab)

    def target_watcher(self) -> TargetWatcher | None:
        return lab_watcher(self.lab)

    def log_sources(self) -> list[LogSource]:
        return [LogSource(p.role, p.log) for p in self.lab.processes if p.role.startswith(DNS_SERVER_ROLES)]

    def dnstap_sources(self) -> list[tuple[str, str]]:
        """(replica, file) of the dnstap the lab's sink receives from each replica, when the spec turns it on."""
        return [(replica, str(path)) for replica, path in self.lab.dnstap_files()]

    def facts(self) -> ClusterFacts:
        return facts_from_topology(self.lab.topology)

    # --- Faults ------------------------------------------------------------

    def set_corefile(self, corefile: str) -> None:
        lab_faults.set_corefile(self.lab, corefile)

    def set_custom_server_block(self, key: str, text: str) -> None:
        lab_faults.set_custom_server_block(self.lab, key, text)

    def apply(self, manifests: list[Manifest]) -> None:
        self.lab.apply(manifests)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.lab.delete(kind, namespace, name)

    def stop_replica(self, replica: int) -> None:
        """Kill CoreDNS replica `replica`; its pod and endpoint stay (a stale endpoint)."""
        lab_faults.stop_replica(self.lab, replica)
