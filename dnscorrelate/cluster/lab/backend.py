"""The lab as a backend: capture in its namespaces, its DNS servers' log files, facts from its topology,
queries from its pods, and every fault of `cluster.backend.Faults`.

The lab's front door: the commands (`lab …`, `capture`, `trace`, `run`, the pytest plugin) import the lab
from here only. Its lifecycle for the `lab` commands (`Lab`, `preflight`, `teardown`, …) is re-exported."""

from __future__ import annotations

import shutil
from pathlib import Path

from dnscorrelate.cluster.backend import ClientResult, LogSource, Target, TargetWatcher
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.cluster.lab import faults as lab_faults
from dnscorrelate.cluster.lab.capture import lab_targets, lab_watcher
from dnscorrelate.cluster.lab.clients import run_queries
from dnscorrelate.cluster.lab.facts import facts_from_topology
from dnscorrelate.cluster.lab.logs import merged as merged_logs  # noqa: F401 (re-exported: `lab logs`)
from dnscorrelate.cluster.lab.runtime import (  # noqa: F401 (re-exported: the `lab` commands, the runner, the pytest plugin)
    Lab, preflight, resolve_lab_name, running_labs, sweep_orphans, teardown, teardown_all,
)
from dnscorrelate.cluster.model import Manifest, Pod
from dnscorrelate.cluster.spec import LabSpec
from dnscorrelate.errors import CaptureError

DNS_SERVER_ROLES = ("coredns-", "nodelocal-")


class LabBackend:
    """A running lab. Holds the `Lab` object itself, so facts follow the changes made through it."""

    name = "lab"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.propagation: list[tuple[str, float]] = []  # the lab's faults are in effect when their call returns

    @classmethod
    def up(cls, spec: LabSpec, name: str) -> LabBackend:
        """A new lab called `name` built from `spec`, owned by this process (`teardown(name)` removes it)."""
        return cls(Lab.up(spec, name))

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

    def remote_capture(self, ports: tuple[int, ...]) -> None:
        return None  # every namespace of the lab is on this machine

    def hubble_streams(self, ports: tuple[int, ...]) -> list:
        raise CaptureError("--hubble reads Cilium's Hubble: the lab runs no Cilium; trace on a Cilium cluster with --context "
                           "(`dnscorrelate cluster up --cni cilium --hubble`)")

    def log_sources(self) -> list[LogSource]:
        return [LogSource(p.role, p.log) for p in self.lab.processes if p.role.startswith(DNS_SERVER_ROLES)]

    def dnstap_sources(self) -> list[tuple[str, str]]:
        """(replica, file) of the dnstap the lab's sink receives from each replica, when the spec turns it on."""
        return [(replica, str(path)) for replica, path in self.lab.dnstap_files()]

    def facts(self) -> ClusterFacts:
        return facts_from_topology(self.lab.topology)

    def run_queries(self, pod: str, client: str, name: str, rdtype: str, proto: str, count: int, concurrency: int,
                    timeout: float) -> list[ClientResult]:
        """Queries from inside the pod's namespace (cluster/lab/clients.py)."""
        return run_queries(self.lab.pod(pod).netns, client, name, rdtype, proto, count, concurrency, timeout)

    def save_files(self, directory: Path) -> None:
        """Every lab process's log (the DNS servers', the upstream's) and the lab's topology."""
        for process in self.lab.processes:
            shutil.copy(process.log, directory / f"{process.role}.log")
        (directory / "lab.json").write_text(self.lab.topology.model_dump_json(indent=1))

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

    def set_upstream_corefile(self, corefile: str) -> None:
        lab_faults.set_upstream_corefile(self.lab, corefile)

    def set_link(self, source: str, target: str, loss: float, drop: bool) -> None:
        lab_faults.set_link(self.lab, source, target, loss, drop)

    def set_resolv_conf(self, pod: str, text: str) -> None:
        lab_faults.set_resolv_conf(self.lab, pod, text)
