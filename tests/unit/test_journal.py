"""The journal of a scenario's changes on a shared cluster (cluster/kube/journal.py), without a cluster: each
change is on disk before the API call that makes it, the first state of an object is the one kept, and a
journal a killed run left is read back."""

import json
from types import SimpleNamespace

import pytest

from dnscorrelate.cluster.kube.journal import SCENARIO_LABEL, Journal, created_entry, deleted_entry
from dnscorrelate.errors import ClusterError


def test_an_entry_is_on_disk_once_recorded_and_only_an_objects_first_state_is_kept(tmp_path):
    path = tmp_path / "journal.json"
    journal = Journal.start(path, "coredns-acl")
    assert json.loads(path.read_text())["entries"] == []  # a kill before the first change leaves an empty journal
    first = {"action": "config-map", "kind": "ConfigMap", "namespace": "kube-system", "name": "coredns", "existed": True,
             "data": {"Corefile": "old"}}
    journal.record(first)
    journal.record({**first, "data": {"Corefile": "changed by the first fault"}})
    loaded = Journal.load(path)
    assert (loaded.scenario, loaded.entries) == ("coredns-acl", [first])
    assert loaded.describe() == ["changed ConfigMap kube-system/coredns"]
    loaded.close()
    assert not path.exists() and Journal.load(path) is None


def test_a_journal_that_cannot_be_read_says_which_file_and_what_to_do(tmp_path):
    path = tmp_path / "journal.json"
    path.write_text("{not json")
    with pytest.raises(ClusterError, match=r"journal.json: not a journal dnscorrelate can read .*remove the cluster"):
        Journal.load(path)


def test_a_deleted_objects_body_drops_what_the_api_server_assigned():
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "demo", "uid": "u", "resourceVersion": "9",
                                                                 "labels": {"app": "web"}},
            "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "ports": [{"port": 80}]}, "status": {}}
    entry = deleted_entry("Service", "demo", "web", body)
    assert entry["body"] == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
                             "spec": {"ports": [{"port": 80}]}}


def test_kube_faults_journal_an_object_before_creating_it_and_label_it_as_the_scenarios(tmp_path, monkeypatch):
    from kubernetes import client

    from dnscorrelate.cluster.kube.faults import KubeFaults
    from dnscorrelate.cluster.model import Service

    path = tmp_path / "journal.json"
    seen = []

    def create_from_dict(api, body):
        seen.append((json.loads(path.read_text())["entries"], body["metadata"]["labels"]))

    monkeypatch.setattr("kubernetes.utils.create_from_dict", create_from_dict)
    faults = KubeFaults(client.ApiClient(), journal=Journal.start(path, "cname-without-a"), allow_cluster_changes=True)  # no API to ask
    monkeypatch.setattr(faults, "policy_state", lambda: {})
    service = Service.model_validate({"kind": "Service", "metadata": {"name": "legacy", "namespace": "demo", "labels": {"team": "a"}},
                                      "spec": {"type": "ExternalName", "externalName": "old.corp.test"}})
    faults.apply([service])
    assert seen == [([created_entry("Service", "demo", "legacy")], {"team": "a", SCENARIO_LABEL: "cname-without-a"})]


def test_kube_faults_journal_the_coredns_configmap_before_patching_it(tmp_path, monkeypatch):
    from kubernetes import client

    from dnscorrelate.cluster.kube.faults import KubeFaults

    path = tmp_path / "journal.json"
    faults = KubeFaults(client.ApiClient(), journal=Journal.start(path, "zone-not-served"), allow_cluster_changes=True)  # no API to ask
    patched = []
    corefile = ".:53 {\n    forward . 192.0.2.1\n}\n"  # no reload: the Deployment restarts, so it is journaled too
    faults.core = SimpleNamespace(
        read_namespaced_config_map=lambda name, ns: SimpleNamespace(data={"Corefile": corefile}),
        list_namespaced_pod=lambda ns, label_selector: SimpleNamespace(items=[]),
        patch_namespaced_config_map=lambda name, ns, body: patched.append(json.loads(path.read_text())["entries"]),
    )
    faults.apps = SimpleNamespace(read_namespaced_deployment=lambda name, ns: SimpleNamespace(
        spec=SimpleNamespace(replicas=2, template={"metadata": {"labels": {"k8s-app": "kube-dns"}}})))
    monkeypatch.setattr(faults, "restart_coredns", lambda: None)
    faults.set_corefile("cluster.local:53 {\n    kubernetes\n}\n")
    [entries] = patched
    assert [(e["kind"], e["name"]) for e in entries] == [("ConfigMap", "coredns"), ("Deployment", "coredns")]
    assert entries[0]["data"] == {"Corefile": corefile} and entries[1]["replicas"] == 2
