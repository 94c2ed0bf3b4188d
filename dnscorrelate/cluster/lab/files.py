"""The text files a lab runs on: resolv.conf and hosts per namespace, Corefiles, zone files.

All are pure functions of the Topology; `runtime` writes them under the lab's
run directory and `/etc/netns/<netns>/`, where `ip netns exec` bind-mounts
them over /etc/resolv.conf and /etc/hosts, as the kubelet does for a pod.
"""

from __future__ import annotations

from pathlib import Path

from dnscorrelate.cluster.lab import kubedns
from dnscorrelate.cluster.facts import pod_search_list
from dnscorrelate.cluster.model import Pod
from dnscorrelate.cluster.lab.topology import PodInfo, Topology


def pod_resolv_conf(topology: Topology, pod: PodInfo, manifest: Pod) -> str:
    """The kubelet's resolv.conf for `pod`, per its dnsPolicy and dnsConfig."""
    spec = manifest.spec
    searches = pod_search_list(manifest, topology.domain)
    if spec.dnsPolicy == "Default":
        nameservers, options = [topology.upstream_ip], []
    elif spec.dnsPolicy == "None":
        nameservers, options = [], []
    else:
        nameservers, options = [topology.nodelocal_ip or topology.cluster_dns_ip], ["ndots:5"]
    if spec.dnsConfig:
        nameservers += spec.dnsConfig.nameservers
        given = {o.name: o for o in spec.dnsConfig.options}
        options = [o for o in options if o.split(":")[0] not in given]
        options += [f"{o.name}:{o.value}" if o.value else o.name for o in given.values()]
    return resolv_conf(nameservers, searches, options)


def resolv_conf(nameservers: list[str], searches: list[str] = (), options: list[str] = ()) -> str:
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {ns}" for ns in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def pod_hosts(pod: PodInfo, manifest: Pod, domain: str) -> str:
    """The kubelet-managed /etc/hosts of a pod."""
    name = manifest.spec.hostname or pod.name
    fqdn = f"{name}.{manifest.spec.subdomain}.{pod.namespace}.svc.{domain}\t" if manifest.spec.subdomain else ""
    return (
        "# Kubernetes-managed hosts file (dnscorrelate lab).\n"
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{pod.ip}\t{fqdn}{name}\n"
    )


def replica_corefile(topology: Topology, zone_dir: Path, dnstap_dir: Path | None = None) -> str:
    """The replicas' Corefile: the ConfigMap's, with kubernetes emulated and coredns-custom blocks appended;
    with `dnstap_dir`, every server block sends dnstap to the lab's sink there (see `with_dnstap`)."""
    spec = topology.spec
    corefile = kubedns.emulate_kubernetes(
        spec.corefile,
        str(zone_dir / "cluster.db"),
        str(zone_dir / "reverse.db"),
        kubedns.reverse_zone_name(topology),
    )
    custom = [f"# coredns-custom: {name}\n{text.strip()}\n" for name, text in sorted(spec.customServerBlocks.items())]
    text = "\n".join([corefile.rstrip() + "\n", *custom])
    return with_dnstap(text, dnstap_dir) if dnstap_dir else text


REPLICA_ENV = "DNSCORRELATE_REPLICA"  # each replica's role (coredns-0), set in its environment by the lab


def with_dnstap(corefile: str, dnstap_dir: Path) -> str:
    """`corefile` with a `dnstap` directive opening every server block: the replicas share one Corefile,
    so the socket and identity name the replica through CoreDNS's `{$ENV}` substitution."""
    replica = "{$" + REPLICA_ENV + "}"
    directive = [f"    dnstap unix://{dnstap_dir}/{replica}.sock full {{", f"        identity {replica}", "    }"]
    lines, depth = [], 0
    for raw in corefile.splitlines():
        lines.append(raw)
        line = raw.split("#", 1)[0].strip()
        if depth == 0 and line.endswith("{"):
            lines += directive
        depth += line.count("{") - line.count("}")
    return "\n".join(lines) + "\n"


def nodelocal_corefile(topology: Topology) -> str:
    """NodeLocal DNSCache's Corefile, as node-cache renders it: cluster.local over TCP to kube-dns."""
    ip = topology.nodelocal_ip
    kube_dns = topology.cluster_dns_ip

    def server(zone: str, cache: list[str], forward: str) -> list[str]:
        return [
            f"{zone}:53 {{",
            "    errors",
            *cache,
            "    reload",
            "    loop",
            f"    bind {ip}",
            forward,
            "    prometheus :9253",
            "    log",
            "}",
        ]

    cluster_cache = ["    cache {", "        success 9984 30", "        denial 9984 5", "    }"]
    to_kube_dns = f"    forward . {kube_dns} {{\n        force_tcp\n    }}"
    lines = []
    for zone in (topology.domain, "in-addr.arpa", "ip6.arpa"):
        lines += server(zone, cluster_cache if zone == topology.domain else ["    cache 30"], to_kube_dns)
    lines += server(".", ["    cache 30"], "    forward . /etc/resolv.conf")
    return "\n".join(lines) + "\n"
