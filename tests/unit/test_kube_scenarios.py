"""Pieces of `run --backend kind` that need no cluster: which log lines belong to a scenario on a shared
cluster, how the in-pod query batch's output becomes ClientResults, which scenarios may share a cluster."""

import json
from datetime import datetime, timezone

import pytest

from dnscorrelate.cluster.kube import clients
from dnscorrelate.cluster.kubeapi import logged_before
from dnscorrelate.errors import ClusterError
from dnscorrelate.runner import shareable
from dnscorrelate.scenarios import Scenario


def test_a_kubelet_stamped_line_is_before_a_moment_to_the_microsecond_and_other_lines_are_kept():
    moment = datetime(2026, 11, 23, 19, 34, 7, 500000, tzinfo=timezone.utc)
    assert logged_before("2026-11-23T19:34:07.499999999Z [INFO] x", moment)
    assert not logged_before("2026-11-23T19:34:07.5Z [INFO] x", moment)  # RFC3339Nano drops trailing zeros
    assert not logged_before("2026-11-23T19:34:08Z [INFO] x", moment)
    assert not logged_before("[INFO] no stamp", moment)


def test_one_exec_prints_the_batch_and_it_becomes_client_results(monkeypatch):
    batch = [{"client": "dnspython", "name": "web", "answered": True, "rcode": "NOERROR", "answers": ["10.96.0.100"],
              "seconds": 0.01, "error": ""},
             {"client": "dnspython", "name": "web", "answered": False, "rcode": "", "answers": [], "seconds": 2.0,
              "error": "timeout: x"}]
    calls = []

    def fake_stream(fn, pod, namespace, command, **kwargs):
        calls.append((pod, namespace, json.loads(command[-1])))
        return "some warning on stderr\n" + clients.MARKER + json.dumps(batch) + "\n"

    monkeypatch.setattr("kubernetes.stream.stream", fake_stream)
    from kubernetes import client

    results = clients.exec_queries(client.ApiClient(), "demo/mypod", "dnspython", "web", "A", "tcp", 2, 2, 2.0)
    assert calls == [("mypod", "demo", {"client": "dnspython", "name": "web", "type": "A", "tcp": True, "count": 2,
                                        "concurrency": 2, "timeout": 2.0})]
    assert [(r.answered, r.rcode, r.answers) for r in results] == [(True, "NOERROR", ("10.96.0.100",)), (False, "", ())]


def test_an_exec_that_prints_no_results_says_what_it_printed(monkeypatch):
    monkeypatch.setattr("kubernetes.stream.stream", lambda *a, **k: "python3: not found\n")
    from kubernetes import client

    with pytest.raises(ClusterError, match="demo/mypod printed no results: python3: not found"):
        clients.exec_queries(client.ApiClient(), "demo/mypod", "dig", "a.", "A", "udp", 1, 1, 1.0)


def test_scenarios_whose_changes_can_be_undone_share_a_cluster_and_those_needing_another_cluster_do_not():
    base = {"name": "x", "queries": [{"from": "demo/mypod", "name": "a."}], "expect": {"findings": ["ok"]}}
    assert shareable(Scenario.model_validate(base))
    assert shareable(Scenario.model_validate({**base, "faults": [{"stopReplica": 0}]}))  # journaled, replicas restored
    assert shareable(Scenario.model_validate({**base, "lab": {"upstreamZones": {"a.test": "@ TXT x"}}}))  # upstream files restored
    assert not shareable(Scenario.model_validate({**base, "lab": {"nodes": 3}}))
    assert not shareable(Scenario.model_validate({**base, "lab": {"dnstap": True}}))


def test_a_corefile_reload_is_seen_in_each_replicas_log_after_the_patch_and_a_failed_one_is_said():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    import pytest

    from dnscorrelate.cluster.kube.faults import KubeFaults
    from dnscorrelate.errors import ClusterError

    logs = {
        "old": "2026-11-23T19:34:00.1Z [INFO] plugin/reload: Running configuration SHA512 = aa\n",
        "new": "2026-11-23T19:34:00.1Z [INFO] plugin/reload: Running configuration SHA512 = aa\n"
               "2026-11-23T19:34:31.2Z [INFO] Reloading\n"
               "2026-11-23T19:34:31.3Z [INFO] plugin/reload: Running configuration SHA512 = bb\n",
        "bad": "2026-11-23T19:34:31.2Z [ERROR] plugin/reload: Corefile changed but reload failed: plugin/acl: bad\n",
    }
    faults = KubeFaults.__new__(KubeFaults)
    faults.core = SimpleNamespace(read_namespaced_pod_log=lambda name, ns, **_: logs[name])
    patched = datetime(2026, 11, 23, 19, 34, 5, tzinfo=timezone.utc)
    assert not faults.reloaded("old", patched)  # the configuration it started with is not the new one
    assert faults.reloaded("new", patched)
    with pytest.raises(ClusterError, match="did not take the new Corefile: .*reload failed: plugin/acl: bad"):
        faults.reloaded("bad", patched)


SHIPPED = __import__("pathlib").Path(__file__).resolve().parents[2] / "scenarios"


def test_on_a_users_cluster_a_scenario_moves_into_its_own_namespace():
    from dnscorrelate.runner import in_namespace
    from dnscorrelate.scenarios import load_scenario

    moved = in_namespace(load_scenario(SHIPPED / "deny-dns-egress.yaml", "kind"), "dnsc-scenario-x-1234")
    assert moved.faults[0].apply.metadata.namespace == "dnsc-scenario-x-1234"
    assert {q.from_ for q in moved.queries} == {"dnsc-scenario-x-1234/mypod"}
    ingress = in_namespace(load_scenario(SHIPPED / "deny-dns-ingress.yaml", "kind"), "dnsc-scenario-x-1234")
    assert ingress.faults[0].apply.metadata.namespace == "kube-system"  # a policy on CoreDNS stays where CoreDNS is


def test_faults_on_shared_objects_are_refused_naming_the_fault_and_the_flag_and_the_rest_pass():
    from dnscorrelate.runner import in_namespace, refusals
    from dnscorrelate.scenarios import load_scenario

    def refused(name):
        return refusals(in_namespace(load_scenario(SHIPPED / f"{name}.yaml", "kind"), "dnsc-scenario-x-1"), "dnsc-scenario-x-1")

    assert refused("deny-dns-egress") == [] and refused("healthy") == []
    [acl] = refused("coredns-acl")
    assert "faults[0] (corefile)" in acl and "ConfigMap kube-system/coredns" in acl and "--allow-cluster-changes" in acl
    [ingress] = refused("deny-dns-ingress")
    assert "faults[0] (apply)" in ingress and "NetworkPolicy kube-system/dns-only-monitoring" in ingress
    [custom] = refused("bad-forward-server")
    assert "faults[0] (customServerBlock)" in custom and "coredns-custom" in custom


def test_dry_run_lists_every_change_in_order_with_the_shared_ones_marked():
    from dnscorrelate.runner import planned_changes
    from dnscorrelate.scenarios import load_scenario

    changes = planned_changes(load_scenario(SHIPPED / "zone-not-served.yaml", "kind"), "dnsc-scenario-z-1")
    assert changes[0][0].startswith("create Namespace dnsc-scenario-z-1") and not changes[0][1]
    assert ("create Pod dnsc-scenario-z-1/mypod", False) in changes
    assert changes[-1] == ("replace the Corefile in ConfigMap kube-system/coredns; CoreDNS reloads or restarts", True)


@pytest.mark.parametrize("argv, message", [
    (["run", "--dry-run", "scenarios/healthy.yaml"], "go with --context"),
    (["run", "--name", "dev", "scenarios/healthy.yaml"], "give --backend kind too"),
    (["run", "--context", "c", "scenarios/truncated.yaml"], "truncated: need the lab's upstream resolver"),
])
def test_run_options_that_do_not_fit_together_are_refused_before_anything_runs(monkeypatch, argv, message):
    from click.testing import CliRunner

    from dnscorrelate import runner
    from dnscorrelate.cli import main

    monkeypatch.setattr(runner, "run_all", lambda *a, **k: pytest.fail("ran"))
    monkeypatch.chdir(SHIPPED.parent)
    done = CliRunner().invoke(main, argv)
    assert done.exit_code == 2 and message in " ".join(done.output.split()), done.output


def test_dry_run_prints_the_changes_and_runs_nothing(monkeypatch):
    from click.testing import CliRunner

    from dnscorrelate import runner
    from dnscorrelate.cli import main

    monkeypatch.setattr(runner, "run_all", lambda *a, **k: pytest.fail("ran"))
    done = CliRunner().invoke(main, ["run", "--context", "c", "--dry-run", str(SHIPPED / "coredns-acl.yaml")])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "replace the Corefile in ConfigMap kube-system/coredns; CoreDNS reloads or restarts [shared: refused without --allow-cluster-changes]" in text
