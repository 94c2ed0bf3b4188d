"""NetworkPolicy enforcement for the kind cluster, as a DaemonSet on every node.

Neither a CNI that enforces NetworkPolicy (Calico, Cilium) nor a standalone enforcer
(kube-network-policies, kube-router) can be built here from the Go module proxy, so this is the
project's own, and says so: every second it reads Pods, Namespaces and NetworkPolicies from the
API, and when they changed, replaces one nftables table in the node's network namespace with the
rules the lab compiles from the same evaluator (`cluster.policy`, through the shared compiler
`cluster/nft.py`): a chain per isolated pod on this node, on its source address for Egress and its
destination address for Ingress, after kube-proxy's DNAT, stateful through conntrack.

    python3 -m dnscorrelate.cluster.kind.policy_agent          # NODE_NAME from the downward API
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TABLE = "dnsc-policy"
READY_FILE = Path("/tmp/dnsc-policy-applied")
POLL_S = 1.0


def node_ruleset(model, node_name: str) -> str:
    """The nft script that (re)creates this node's policy table."""
    from dnscorrelate.cluster.nft import policy_table

    return policy_table(model, node_name, TABLE)


def apply(ruleset: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True, capture_output=True)


def run(node_name: str) -> None:
    """Enforce until killed; prints one line per change (kubectl logs shows them)."""
    from dnscorrelate.cluster.kubeapi import client_from_kubeconfig, read_model

    api = client_from_kubeconfig()
    applied = None
    while True:
        started = time.monotonic()
        model = read_model(api, ("Namespace", "Pod", "NetworkPolicy"))
        ruleset = node_ruleset(model, node_name)
        if ruleset != applied:
            apply(ruleset)
            applied = ruleset
            READY_FILE.touch()
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} applied {len(model.policies)} policies "
                  f"for node {node_name} in {(time.monotonic() - started) * 1000:.0f} ms", flush=True)
        time.sleep(POLL_S)


def daemonset(image: str) -> list[dict]:
    """The agent's ServiceAccount, ClusterRole, binding and DaemonSet: host network and NET_ADMIN only,
    read-only access to what policies select on."""
    name, namespace = "dnsc-policy", "kube-system"
    labels = {"app": name}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
             "serviceAccountName": name,
             "hostNetwork": True,
             "tolerations": [{"operator": "Exists"}],
             "terminationGracePeriodSeconds": 1,
             "containers": [{
                 "name": "agent",
                 "image": image,
                 "imagePullPolicy": "Never",
                 "command": ["python3", "-m", "dnscorrelate.cluster.kind.policy_agent"],
                 "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                 "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
                 "readinessProbe": {"exec": {"command": ["test", "-e", str(READY_FILE)]}, "periodSeconds": 1},
                 "volumeMounts": [{"name": "src", "mountPath": "/opt/dnscorrelate/src", "readOnly": True}],
             }],
             "volumes": [{"name": "src", "hostPath": {"path": "/opt/dnscorrelate/src", "type": "Directory"}}],
         }}}},
    ]


if __name__ == "__main__":
    node = os.environ.get("NODE_NAME")
    if not node:
        sys.exit("policy_agent: NODE_NAME is not set (the DaemonSet sets it from spec.nodeName)")
    run(node)
