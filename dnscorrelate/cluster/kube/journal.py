"""What a scenario changes on a shared cluster, written to disk before it is changed, and put back after.

A scenario on a cluster that outlives it (`run --backend kind` on one cluster, `run --context`) changes
shared objects through `KubeFaults`, which records each object's state here first:

- a ConfigMap: whether it existed and its data;
- a Deployment: its replicas and pod template;
- an object the scenario creates: its kind, namespace and name (it also carries the label
  `dnscorrelate.io/scenario`, so that a listing finds any that escaped the journal);
- an object the scenario deletes: its body, to create it again.

Each entry is on disk (written whole, then renamed, then fsynced) before the API call that changes the
object, so after a `kill -9` of `run` the next `run` or `cluster down` finds the journal and restores
it first. restore.py puts it all back.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from dnscorrelate.errors import ClusterError

SCENARIO_LABEL = "dnscorrelate.io/scenario"
JOURNAL_FILE = "journal.json"


class Journal:
    """The on-disk record of one scenario's changes (`path`), appended to before each change."""

    def __init__(self, path: Path, scenario: str = "") -> None:
        self.path = Path(path)
        self.scenario = scenario
        self.entries: list[dict] = []

    @classmethod
    def start(cls, path: Path, scenario: str) -> "Journal":
        """A new, empty journal for `scenario`, on disk at once (a kill before the first change leaves an empty one)."""
        journal = cls(path, scenario)
        journal.write()
        return journal

    @classmethod
    def load(cls, path: Path) -> "Journal | None":
        """The journal left at `path` (by a run that did not finish), or None when there is none."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            journal = cls(path, data.get("scenario", ""))
            journal.entries = list(data["entries"])
        except (ValueError, KeyError, TypeError) as err:
            raise ClusterError(f"{path}: not a journal dnscorrelate can read ({err}); restore the cluster by hand or "
                               "remove the cluster, then delete this file") from None
        return journal

    def write(self) -> None:
        """Written whole to a temporary file, synced, then renamed over the journal: a kill leaves the old or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as out:
            json.dump({"scenario": self.scenario, "pid": os.getpid(), "written": datetime.now(timezone.utc).isoformat(),
                       "entries": self.entries}, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def has(self, kind: str, namespace: str, name: str) -> bool:
        return any((e["kind"], e["namespace"], e["name"]) == (kind, namespace, name) for e in self.entries)

    def record(self, entry: dict) -> None:
        """Add an entry and put it on disk; the first state of an object only (later changes restore to it too)."""
        if entry["action"] in ("config-map", "deployment") and self.has(entry["kind"], entry["namespace"], entry["name"]):
            return
        self.entries.append(entry)
        self.write()

    def close(self) -> None:
        """Everything was restored: the journal goes."""
        self.path.unlink(missing_ok=True)

    def describe(self) -> list[str]:
        """One line per change, as `--dry-run` and the recovery message print them."""
        verbs = {"config-map": "changed", "deployment": "changed", "created": "created", "deleted": "deleted"}
        return [f"{verbs[e['action']]} {e['kind']} {e['namespace']}/{e['name']}" for e in self.entries]


# --- what KubeFaults records --------------------------------------------------------------


def config_map_entry(core, namespace: str, name: str) -> dict:
    from kubernetes.client.rest import ApiException

    try:
        data = core.read_namespaced_config_map(name, namespace).data or {}
        existed = True
    except ApiException as err:
        if err.status != 404:
            raise
        data, existed = {}, False
    return {"action": "config-map", "kind": "ConfigMap", "namespace": namespace, "name": name, "existed": existed, "data": data}


def deployment_entry(api, apps, namespace: str, name: str) -> dict:
    deployment = apps.read_namespaced_deployment(name, namespace)
    return {"action": "deployment", "kind": "Deployment", "namespace": namespace, "name": name,
            "replicas": deployment.spec.replicas, "template": api.sanitize_for_serialization(deployment.spec.template)}


def created_entry(kind: str, namespace: str, name: str) -> dict:
    return {"action": "created", "kind": kind, "namespace": namespace or "", "name": name}


def deleted_entry(kind: str, namespace: str, name: str, body: dict) -> dict:
    metadata = {k: v for k, v in body.get("metadata", {}).items() if k in ("name", "namespace", "labels", "annotations")}
    spec = dict(body.get("spec", {}))
    for assigned in ("clusterIP", "clusterIPs"):  # the API server hands out new ones; the old may be taken by then
        spec.pop(assigned, None)
    return {"action": "deleted", "kind": kind, "namespace": namespace, "name": name,
            "body": {"apiVersion": body.get("apiVersion"), "kind": kind, "metadata": metadata, "spec": spec}}
