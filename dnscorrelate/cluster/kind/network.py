"""The kind cluster's pod network: flannel (the default) or Cilium, and a guard that keeps pods'
traffic on this machine.

flannel (built here from its Go module, kind/README.md) runs as a DaemonSet, as its own manifest
runs it: an init container copies the flannel CNI plugin and its config onto the node, then
flanneld (`--kube-subnet-mgr`) takes each node's podCIDR from the API, joins the nodes with a VXLAN
overlay and masquerades what pods send outside the pod network. Pods sit on the node's `cni0`
bridge, through the reference `bridge` and `host-local` plugins the flannel plugin delegates to.

The guard is ours: pods' traffic to anything but the pod network, the Services and the cluster's
own Docker network is dropped at the node, so a Corefile or a scenario naming some other address
never sends a packet off this machine. With flannel, NetworkPolicies are enforced by `policy_agent`.

Cilium (built here from its Go module, its chart rendered at build time: kind/README.md) is the
other pod network, `cluster up --cni cilium`: it enforces NetworkPolicy itself, in BPF, and our
policy agent is not deployed. Its manifests are applied as rendered, with one change
(`cilium_objects`): the agent gets the node's /proc/sys/kernel read-only, because the nodes share
this machine's kernel and the agent would otherwise set kernel-wide sysctls on it
(kernel.unprivileged_bpf_disabled=1, which cannot be undone until a reboot, and
kernel.timer_migration=0); it ignores the failure.

Hubble (`cluster up --cni cilium --hubble`): the chart rendered with kind/cilium/hubble-values.yaml too,
Hubble's server in each agent on its unix socket (`cluster.cilium.HUBBLE_SERVER`) and the agent's DNS proxy on, and a
visibility policy: a Cilium policy with a `dns` rule, which sends the DNS of the pods it selects
through the proxy, the only way Hubble gets DNS records. The default (dns_visibility_policy) selects
every pod's DNS to kube-dns and asks for no default deny. It is still an allow rule, and Cilium's
rules add up: wherever a NetworkPolicy denies a selected pod's egress, DNS to kube-dns stays allowed
(kind/README.md, "Hubble").
"""

from __future__ import annotations

import json

POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"
GUARD_TABLE = "dnsc-podnet"
FLANNEL = "dnsc-flannel"
FLANNEL_NAMESPACE = "kube-system"
SUBNET_ENV = "/run/flannel/subnet.env"  # flanneld writes it once it holds the node's lease
CNIS = ("flannel", "cilium")
CILIUM_NAMESPACE = "kube-system"
CILIUM_AGENT = "cilium"  # the DaemonSet; its pods are labelled k8s-app=cilium
CILIUM_AGENT_SELECTOR = "k8s-app=cilium"
CILIUM_OPERATOR = "cilium-operator"
HOST_SYSCTL_KERNEL = "/proc/sys/kernel"
DNS_VISIBILITY_POLICY = "dnsc-dns-visibility"
CILIUM_POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
KUBE_DNS_ENDPOINT = {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}


def cni_config() -> str:
    """The CNI config list flannel's init container installs: the flannel plugin, which delegates to
    `bridge` over the lease in subnet.env, then portmap (flannel's own manifest's list)."""
    return json.dumps({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def net_config() -> str:
    """flanneld's network config: the cluster's pod network over VXLAN."""
    return json.dumps({"Network": POD_SUBNET, "Backend": {"Type": "vxlan"}}, indent=2)


def flannel_objects(image: str) -> list[dict]:
    """flannel's ServiceAccount, ClusterRole (read nodes and pods, patch node status with its lease),
    binding, ConfigMap and DaemonSet: host network, NET_ADMIN and NET_RAW, as flannel's manifest asks."""
    labels = {"app": FLANNEL}
    meta = {"name": FLANNEL, "namespace": FLANNEL_NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": FLANNEL},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": FLANNEL},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLANNEL},
         "subjects": [{"kind": "ServiceAccount", **meta}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"cni-conf.json": cni_config(), "net-conf.json": net_config()}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {**meta, "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
             "serviceAccountName": FLANNEL,
             "hostNetwork": True,
             "priorityClassName": "system-node-critical",
             "tolerations": [{"operator": "Exists"}],
             "initContainers": [
                 copier("install-cni-plugin", image, "/opt/cni-plugin/flannel", "/opt/cni/bin/flannel",
                        {"cni-plugin": "/opt/cni/bin"}),
                 copier("install-cni", image, "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist",
                        {"cni": "/etc/cni/net.d", "config": "/etc/kube-flannel"}),
             ],
             "containers": [{
                 "name": "flanneld",
                 "image": image,
                 "imagePullPolicy": "Never",
                 "command": ["/opt/bin/flanneld", "--ip-masq", "--kube-subnet-mgr"],
                 "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                 "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                 "readinessProbe": {"exec": {"command": ["test", "-s", SUBNET_ENV]}, "periodSeconds": 1},
                 "volumeMounts": [{"name": "run", "mountPath": "/run/flannel"},
                                  {"name": "config", "mountPath": "/etc/kube-flannel"},
                                  {"name": "xtables-lock", "mountPath": "/run/xtables.lock"}],
             }],
             "volumes": [
                 {"name": "run", "hostPath": {"path": "/run/flannel"}},
                 {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
                 {"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                 {"name": "config", "configMap": {"name": FLANNEL}},
                 {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
             ],
         }}}},
    ]


def copier(name: str, image: str, source: str, target: str, mounts: dict[str, str]) -> dict:
    """An init container that copies `source` to `target` (on a hostPath volume) with volumes `mounts`."""
    return {"name": name, "image": image, "imagePullPolicy": "Never", "command": ["cp", "-f", source, target],
            "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in mounts.items()]}


def guard_rules(docker_subnet: str) -> str:
    """nftables: what a pod sends to anything outside the pod network, the Services and the
    cluster's Docker network is dropped at the node."""
    inside = f"{{ {POD_SUBNET}, {SERVICE_SUBNET}, {docker_subnet} }}"
    return (
        f"table ip {GUARD_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        f"    ip saddr {POD_SUBNET} ip daddr != {inside} counter drop comment \"off this machine\"\n"
        "  }\n"
        "}\n"
    )


def guard_script(docker_subnet: str) -> str:
    """A shell script that installs the guard on a node; idempotent."""
    return "\n".join([
        "set -e",
        f"nft delete table ip {GUARD_TABLE} 2>/dev/null || true",
        f"nft -f - <<'EOF'\n{guard_rules(docker_subnet)}EOF",
    ]) + "\n"


def cilium_objects(manifest: str) -> list[dict]:
    """The rendered chart's objects, with every mount of the node's /proc/sys/kernel made read-only
    (module docstring); a ClusterError when the manifest holds no such mount to protect (a changed
    chart: look before applying it) or no agent DaemonSet."""
    import yaml

    from dnscorrelate.errors import ClusterError

    objects = [o for o in yaml.safe_load_all(open(manifest)) if o]
    agents = [o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == CILIUM_AGENT]
    if len(agents) != 1:
        raise ClusterError(f"{manifest} has no Cilium agent DaemonSet {CILIUM_AGENT!r}: rebuild with `make cluster`")
    protected = 0
    for body in objects:
        spec = body.get("spec", {}).get("template", {}).get("spec", {})
        kernel = {v["name"] for v in spec.get("volumes", []) if v.get("hostPath", {}).get("path", "").rstrip("/") in
                  (HOST_SYSCTL_KERNEL, "/proc/sys", "/proc")}
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in kernel and not container.get("securityContext", {}).get("privileged"):
                    mount["readOnly"] = True
                    protected += 1
    if not protected:
        raise ClusterError(f"{manifest}: no mount of the node's {HOST_SYSCTL_KERNEL} found to make read-only; "
                           "the chart changed, check what its agent may write before applying it")
    return objects


def dns_visibility_policy() -> dict:
    """The default visibility policy of `cluster up --hubble`: every pod's DNS to kube-dns (UDP and TCP
    port 53) through the agent's DNS proxy, any name (matchPattern "*"). `enableDefaultDeny` false both
    ways: selecting a pod does not put it in default deny, so its other traffic is what the cluster's
    other policies make it. It stays an allow rule for DNS to kube-dns (module docstring)."""
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": DNS_VISIBILITY_POLICY},
        "spec": {
            "description": "dnscorrelate: every pod's DNS to kube-dns through Cilium's DNS proxy, for Hubble's DNS records",
            "endpointSelector": {},
            "enableDefaultDeny": {"egress": False, "ingress": False},
            "egress": [{
                "toEndpoints": [{"matchLabels": KUBE_DNS_ENDPOINT}],
                "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}],
            }],
        },
    }


def visibility_policies(choice: str) -> list[dict]:
    """The visibility policy `cluster up --hubble-policy` names: "default" (dns_visibility_policy), "none",
    or a YAML file of CiliumNetworkPolicy/CiliumClusterwideNetworkPolicy objects, at least one with a
    `dns` rule (without one Hubble gets no DNS record); a ClusterError naming the file and document
    otherwise."""
    import yaml

    from dnscorrelate.errors import ClusterError

    if choice == "default":
        return [dns_visibility_policy()]
    if choice == "none":
        return []
    try:
        with open(choice) as f:
            objects = [o for o in yaml.safe_load_all(f) if o is not None]
    except OSError as err:
        raise ClusterError(f"--hubble-policy {choice}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ClusterError(f"--hubble-policy {choice}: not YAML: {err}") from None
    for index, body in enumerate(objects, 1):
        kind = body.get("kind") if isinstance(body, dict) else None
        if kind not in CILIUM_POLICY_KINDS:
            raise ClusterError(f"{choice}: document {index}: kind: {kind!r} is not one of {', '.join(CILIUM_POLICY_KINDS)}")
        if not (body.get("metadata") or {}).get("name"):
            raise ClusterError(f"{choice}: document {index}: metadata.name: missing")
    if not any(has_dns_rule(body) for body in objects):
        raise ClusterError(f"{choice}: no policy has a toPorts rules.dns entry: Hubble would see no DNS "
                           "(see `dnscorrelate cluster up --help`, or --hubble-policy default)")
    return objects


def has_dns_rule(policy: dict) -> bool:
    """Whether a Cilium policy (spec or specs) holds an egress toPorts rule with `dns` entries."""
    specs = [policy.get("spec") or {}] + list(policy.get("specs") or [])
    return any(port.get("rules", {}).get("dns")
               for spec in specs for rule in spec.get("egress") or [] for port in rule.get("toPorts") or [])
