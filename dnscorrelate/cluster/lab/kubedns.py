"""Kubernetes DNS without an API server: the `kubernetes` stanza served by the `file` plugin.

The lab has no API server for CoreDNS's `kubernetes` plugin to watch, so the
Corefile's `kubernetes ZONES {...}` directive is replaced by `file` directives
over zone files generated from the lab's Services and Pods, following the
Kubernetes DNS specification:

  <svc>.<ns>.svc.<domain>                A     ClusterIP, or every ready pod IP if headless
  <hostname>.<svc>.<ns>.svc.<domain>     A     headless endpoints whose pod sets hostname+subdomain
  <a-b-c-d>.<svc>.<ns>.svc.<domain>      A     other headless endpoints
  _<port>._<proto>.<svc>.<ns>.svc...     SRV   named Service ports
  <svc>.<ns>.svc.<domain>                CNAME ExternalName Services
  <a-b-c-d>.<ns>.pod.<domain>            A     every pod (like `pods verified`)
  <d>.<c>.<b>.<a>.in-addr.arpa           PTR   ClusterIPs, in the service /24
  dns-version.<domain>                   TXT   "1.1.0"

Everything else in the cluster domain is NXDOMAIN, with the zone's SOA, as
the plugin answers. What it does not emulate: `pods insecure` answers for
arbitrary a-b-c-d names, wildcard queries, `fallthrough` inside the cluster
domain, endpoint readiness, PTRs for pod IPs (they fall through to `forward`),
and the plugin's own metrics. Those are documented in lab/README.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from dnscorrelate.cluster.lab.topology import Topology

DEFAULT_TTL = 5  # the kubernetes plugin's default


@dataclass(frozen=True)
class KubernetesStanza:
    zones: list[str]
    ttl: int
    start: int
    end: int


def find_kubernetes_stanza(corefile: str) -> KubernetesStanza | None:
    """The first `kubernetes` directive of a Corefile, with its zones, ttl and character span."""
    match = re.search(r"^[ \t]*kubernetes\b([^\n{]*)(\{?)", corefile, flags=re.M)
    if not match:
        return None
    end = match.end()
    body = ""
    if match.group(2):
        depth, i = 1, match.end()
        while i < len(corefile) and depth:
            depth += {"{": 1, "}": -1}.get(corefile[i], 0)
            i += 1
        body, end = corefile[match.end() : i - 1], i
    ttl = re.search(r"^\s*ttl\s+(\d+)", body, flags=re.M)
    zones = [z.rstrip(".") for z in match.group(1).split()] or ["cluster.local"]
    return KubernetesStanza(zones=zones, ttl=int(ttl.group(1)) if ttl else DEFAULT_TTL, start=match.start(), end=end)


def emulate_kubernetes(corefile: str, cluster_zone_file: str, reverse_zone_file: str, reverse_zone: str) -> str:
    """`corefile` with its kubernetes stanza replaced by `file` directives over the generated zones."""
    stanza = find_kubernetes_stanza(corefile)
    if stanza is None:
        return corefile
    indent = re.match(r"[ \t]*", corefile[stanza.start :]).group(0)
    domains = [z for z in stanza.zones if not z.endswith(".arpa")]
    replacement = (
        f"{indent}# kubernetes {' '.join(stanza.zones)}: emulated by the dnscorrelate lab\n"
        f"{indent}file {cluster_zone_file} {' '.join(domains)} {{\n{indent}    reload 1s\n{indent}}}\n"
    )
    if any(z.endswith("in-addr.arpa") for z in stanza.zones):
        replacement += f"{indent}file {reverse_zone_file} {reverse_zone} {{\n{indent}    reload 1s\n{indent}}}"
    return corefile[: stanza.start] + replacement.rstrip("\n") + corefile[stanza.end :]


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def zone_header(origin: str, ttl: int, serial: int, domain: str) -> list[str]:
    return [
        f"$ORIGIN {origin}.",
        f"$TTL {ttl}",
        f"@ IN SOA ns.dns.{domain}. hostmaster.{domain}. {serial} 7200 1800 86400 {ttl}",
        f"@ IN NS ns.dns.{domain}.",
    ]


def cluster_zone(topology: Topology, ttl: int, serial: int) -> str:
    """The cluster domain's zone file: Services, endpoints, SRV records and pod records."""
    domain = topology.domain
    lines = zone_header(domain, ttl, serial, domain)
    lines += [f"ns.dns IN A {topology.cluster_dns_ip}", 'dns-version IN TXT "1.1.0"']
    for svc in topology.services:
        name = f"{svc.name}.{svc.namespace}.svc"
        if svc.type == "ExternalName":
            lines.append(f"{name} IN CNAME {svc.external_name.rstrip('.')}.")
            continue
        if svc.cluster_ip:
            lines.append(f"{name} IN A {svc.cluster_ip}")
        endpoint_names = {}
        if svc.cluster_ip is None:
            for pod_key in svc.selected_pods:
                pod = topology.pod(pod_key)
                spec = topology.manifest_pod(pod_key).spec
                host = spec.hostname if spec.hostname and spec.subdomain == svc.name else dashed(pod.ip)
                endpoint_names[pod.ip] = f"{host}.{name}"
                lines.append(f"{name} IN A {pod.ip}")
                lines.append(f"{host}.{name} IN A {pod.ip}")
        for port in svc.ports:
            if not port.name:
                continue
            srv = f"_{port.name}._{port.protocol.lower()}.{name}"
            if svc.cluster_ip:
                lines.append(f"{srv} IN SRV 0 100 {port.port} {name}.{domain}.")
            else:
                weight = max(1, 100 // max(1, len(port.endpoints)))
                for ep in port.endpoints:
                    lines.append(f"{srv} IN SRV 0 {weight} {ep.port} {endpoint_names[ep.ip]}.{domain}.")
    for pod in topology.pods:
        lines.append(f"{dashed(pod.ip)}.{pod.namespace}.pod IN A {pod.ip}")
    return "\n".join(lines) + "\n"


def reverse_zone_name(topology: Topology) -> str:
    """The reverse zone of the /24 the ClusterIPs live in."""
    network = ipaddress.ip_network(f"{topology.cluster_dns_ip}/24", strict=False)
    return ".".join(reversed(str(network.network_address).split(".")[:3])) + ".in-addr.arpa"


def reverse_zone(topology: Topology, ttl: int, serial: int) -> str:
    """PTR records for every ClusterIP, as the kubernetes plugin answers them."""
    origin = reverse_zone_name(topology)
    lines = zone_header(origin, ttl, serial, topology.domain)
    for svc in topology.services:
        if svc.cluster_ip and ipaddress.ip_address(svc.cluster_ip) in ipaddress.ip_network(f"{topology.cluster_dns_ip}/24", strict=False):
            last = svc.cluster_ip.rsplit(".", 1)[1]
            lines.append(f"{last} IN PTR {svc.name}.{svc.namespace}.svc.{topology.domain}.")
    return "\n".join(lines) + "\n"
