"""The kind cluster's pod network: flannel (the default) or Cilium, and a guard that keeps pods'
traffic on this machine.

flannel (built here from its Go module, kind/README.md) runs as a DaemonSet, as its own manifest
runs it: an init container copies the flannel CNI plugin and its config onto the node, then
flanneld (`--kube-subnet-mgr`) takes each node's podCIDR from the API, joins the nodes with a VXLAN
overlay and masquerades what pods send outside the pod network. Pods sit on the node's `cni0`
bridge, through the reference `bridge` and `host-local` plugins the flannel plugin delegates to.

The guard is ours (`guard_rules`, one `inet` table per node on the output and forward hooks, IPv4
and IPv6): what a node or its pods send to anything but the pod network, the Services, the nodes, the
upstream and loopback is counted and dropped at the node, so a Corefile, a scenario, a hostNetwork
pod or the node's own resolver naming some other address never sends a packet off this machine. The
upstream itself sits on an `--internal` Docker network (cluster.create_upstream_network), closed
towards this machine by `upstream_host_rules`. With flannel, NetworkPolicies are enforced by
`policy_agent`.

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
GUARD_TABLE = "dnsc-guard"
OLD_GUARD_TABLE = "dnsc-podnet"  # the IPv4, forward-only guard of earlier versions
GUARD_COUNTERS = ("output-ipv4", "output-ipv6", "forward-ipv4", "forward-ipv6")
API_SERVER_PORT = 6443
KUBELET_PORT = 10250
REPLY_PORTS = (API_SERVER_PORT, KUBELET_PORT)
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


def guard_rules(nodes: list[str], upstream: str, registry: list[str] = ()) -> str:
    """nftables for a node, IPv4 and IPv6, on the output hook (the node's own processes, hostNetwork
    pods, Docker's embedded DNS forwarding the node's lookups) and the forward hook (pods): only the
    pod network, the Services, the nodes' addresses (`nodes`), the upstream and loopback, and the API
    server's and kubelet's replies to clients on this machine (kubectl reaches the API server through
    Docker's port mapping, from the Docker network's gateway); everything else is counted, per hook and
    family (GUARD_COUNTERS), and dropped before routing can take it off the machine. The chains run
    after kube-proxy's and kind's DNAT (priority filter - 10 > dstnat), so they see real destinations:
    a Service's backend, not its ClusterIP. `registry`: the local registry's addresses (`cluster up --registry`),
    which the nodes' containerd pulls from."""
    allowed4 = [POD_SUBNET, SERVICE_SUBNET, "127.0.0.0/8", upstream, *(a for a in [*nodes, *registry] if ":" not in a)]
    allowed6 = ["::1", "fe80::/10", "ff02::/16", *(a for a in [*nodes, *registry] if ":" in a)]  # link-local: neighbour discovery
    ports = ", ".join(str(p) for p in REPLY_PORTS)
    lines = [
        f"table inet {GUARD_TABLE} {{",
        *(f"  counter {name} {{ }}" for name in GUARD_COUNTERS),
        f"  set allowed-ipv4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {', '.join(unique(allowed4))} }} }}",
        f"  set allowed-ipv6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ {', '.join(unique(allowed6))} }} }}",
    ]
    for hook in ("output", "forward"):
        lines += [
            f"  chain {hook} {{",
            f"    type filter hook {hook} priority filter - 10; policy accept;",
            *(['    oifname "lo" accept'] if hook == "output" else []),
            "    ip daddr @allowed-ipv4 accept",
            "    ip6 daddr @allowed-ipv6 accept",
            *([f"    tcp sport {{ {ports} }} ct state established accept"] if hook == "output" else []),
            f'    meta nfproto ipv4 counter name "{hook}-ipv4" drop comment "off this machine"',
            f'    meta nfproto ipv6 counter name "{hook}-ipv6" drop comment "off this machine"',
            "  }",
        ]
    return "\n".join([*lines, "}", ""])


def unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def guard_script(nodes: list[str], upstream: str, registry: list[str] = ()) -> str:
    """A shell script that installs the guard on a node, replacing any earlier one (and the IPv4-only
    table of earlier versions) in one transaction; idempotent."""
    return "\n".join([
        "set -e",
        f"nft delete table ip {OLD_GUARD_TABLE} 2>/dev/null || true",
        f"nft -f - <<'EOF'\ntable inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\n{guard_rules(nodes, upstream, registry)}EOF",
    ]) + "\n"


def upstream_host_rules(table: str, bridge: str) -> str:
    """nftables for this machine: nothing arriving from the upstream's internal Docker network (its
    bridge `bridge`) reaches this machine's own sockets, or is forwarded anywhere but back onto that
    bridge. Docker's `--internal` gives the upstream no NAT and drops forwarding off the bridge, but
    (20.10) still routes it to the bridge's gateway, this machine: this table drops, and counts, both
    what this machine would forward and what would reach its services (a local DNS forwarder could
    relay a lookup out)."""
    return "\n".join([
        f"table inet {table} {{",
        "  counter input { }",
        "  counter forward { }",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        f'    iifname "{bridge}" ct state established,related accept',
        f'    iifname "{bridge}" counter name "input" drop comment "the upstream may reach no service of this machine"',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        f'    iifname "{bridge}" oifname != "{bridge}" counter name "forward" drop comment "off the internal network"',
        "  }",
        "}",
        "",
    ])


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
