"""`run --context` on a cluster reached only through a kubeconfig: the session's kind cluster, its kubeconfig
copied aside and nothing of `cluster up`'s state used. Scenarios run in namespaces of their own; faults on
shared objects are refused without --allow-cluster-changes and restored with it; nothing is left behind
(labelled objects listed, CoreDNS's ConfigMaps compared)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LABEL = "dnscorrelate.io/scenario"


def dns_config_maps(core) -> dict:
    return {m.metadata.name: m.data for m in core.list_namespaced_config_map("kube-system").items
            if m.metadata.name in ("coredns", "coredns-custom")}


def left_behind(core, net) -> list[str]:
    found = [f"Namespace {n.metadata.name}" for n in core.list_namespace().items
             if (n.metadata.labels or {}).get(LABEL) or n.metadata.name.startswith("dnsc-scenario-")]
    found += [f"Pod {p.metadata.namespace}/{p.metadata.name}" for p in core.list_pod_for_all_namespaces(label_selector=LABEL).items]
    found += [f"Service {s.metadata.namespace}/{s.metadata.name}" for s in core.list_service_for_all_namespaces(label_selector=LABEL).items]
    found += [f"NetworkPolicy {p.metadata.namespace}/{p.metadata.name}"
              for p in net.list_network_policy_for_all_namespaces(label_selector=LABEL).items]
    return found


def test_run_context_on_a_cluster_known_only_by_its_kubeconfig_refuses_shared_changes_and_leaves_nothing(
        kind_build, kind_cluster, tmp_path):
    kubeconfig = tmp_path / "foreign-kubeconfig"
    shutil.copy(kind_cluster.kubeconfig, kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig), context=kind_cluster.context)
    core, net = k8s.CoreV1Api(api), k8s.NetworkingV1Api(api)
    maps_before = dns_config_maps(core)
    assert left_behind(core, net) == []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DNSCORRELATE_CLUSTER_DIR": str(tmp_path / "no-cluster-up-state")}
    run = [sys.executable, "-m", "dnscorrelate", "run", "--context", kind_cluster.context, "--kubeconfig", str(kubeconfig),
           "--report-dir", ""]

    def dnsc(*args):
        done = subprocess.run([*run, *args], env=env, capture_output=True, text=True, timeout=900)
        done.said = " ".join(done.stderr.split())  # rich wraps lines at the terminal's width
        return done

    dry = dnsc("--dry-run", str(SCENARIOS / "deny-dns-ingress.yaml"))
    assert dry.returncode == 0, dry.stderr
    assert "create NetworkPolicy kube-system/dns-only-monitoring [shared: refused without --allow-cluster-changes]" in " ".join(dry.stdout.split())
    assert left_behind(core, net) == []  # a dry run makes nothing

    refused = dnsc(str(SCENARIOS / "coredns-acl.yaml"), str(SCENARIOS / "deny-dns-egress.yaml"))
    assert refused.returncode == 2, refused.stderr[-3000:]  # coredns-acl refused; deny-dns-egress ran and passed
    assert "coredns-acl: faults[0] (corefile) would replace the Corefile in ConfigMap kube-system/coredns" in refused.said
    assert "--allow-cluster-changes" in refused.said
    assert "pass deny-dns-egress" in refused.said
    assert left_behind(core, net) == [] and dns_config_maps(core) == maps_before

    allowed = dnsc("--allow-cluster-changes", str(SCENARIOS / "deny-dns-ingress.yaml"), str(SCENARIOS / "coredns-acl.yaml"))
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert left_behind(core, net) == [] and dns_config_maps(core) == maps_before
