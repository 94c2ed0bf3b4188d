"""Vantage names and roles for evidence read from files, named the way the eBPF capture names them.

The capture calls a pod `namespace/name` (role `pod`, or `coredns` for a CoreDNS
replica), a node by its name (role `node`) and the upstream resolver `upstream`.
A user names a file's vantage with a kind prefix, as kubectl does:

| given                          | vantage                  | role     |
| ------------------------------ | ------------------------ | -------- |
| `pod/demo/mypod`               | `demo/mypod`             | pod      |
| `pod/kube-system/coredns-0`    | `kube-system/coredns-0`  | coredns  |
| `coredns/coredns-0`            | `kube-system/coredns-0`  | coredns  |
| `coredns/NS/NAME`              | `NS/NAME`                | coredns  |
| `node/kind-worker`             | `kind-worker`            | node     |
| `upstream` or `upstream/NAME`  | `upstream` or `NAME`     | upstream |
| `demo/mypod` (no prefix)       | `demo/mypod`             | pod (coredns as above) |
| anything else                  | as given                 | other    |
"""

from __future__ import annotations

COREDNS_NAMESPACE = "kube-system"


def is_coredns_pod(namespace: str, name: str) -> bool:
    """CoreDNS replicas as kubeadm, kind and the lab name them: `coredns-...` in kube-system."""
    return namespace == COREDNS_NAMESPACE and name.startswith("coredns")


def pod_role(namespace: str, name: str) -> str:
    return "coredns" if is_coredns_pod(namespace, name) else "pod"


def vantage_and_role(given: str) -> tuple[str, str]:
    """(vantage, role) for a user's vantage name; see the module's table."""
    kind, _, rest = given.partition("/")
    if kind == "pod" and rest.count("/") == 1:
        namespace, name = rest.split("/")
        return rest, pod_role(namespace, name)
    if kind == "coredns" and rest:
        return (rest if "/" in rest else f"{COREDNS_NAMESPACE}/{rest}"), "coredns"
    if kind == "node" and rest and "/" not in rest:
        return rest, "node"
    if kind == "upstream":
        return rest or "upstream", "upstream"
    if given.count("/") == 1 and all(given.split("/")):
        namespace, name = given.split("/")
        return given, pod_role(namespace, name)
    return given, "other"


def split_vantage_spec(spec: str) -> tuple[str | None, str]:
    """`VANTAGE=FILE` -> (VANTAGE, FILE); a plain FILE -> (None, FILE)."""
    vantage, sep, path = spec.partition("=")
    if sep and vantage and path:
        return vantage, path
    return None, spec
