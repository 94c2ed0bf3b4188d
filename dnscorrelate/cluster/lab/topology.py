"""From a LabSpec to a concrete topology: nodes, pod IPs, network namespaces, Service endpoints.

This is pure data; `lab.runtime` makes it real. Addressing (fixed, like a
kubeadm cluster on minikube's network):

  pod network    10.244.<node>.0/24, gateway .1 on the node's bridge `cbr0`
  services       10.96.0.0/12: kubernetes 10.96.0.1, kube-dns 10.96.0.10, others from 10.96.0.100
  node network   192.168.49.0/24 on a lab-only switch: upstream .1, node-<i> .(2+i)
  NodeLocal DNS  169.254.20.10 on each node's loopback, when enabled
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import Counter

from pydantic import BaseModel

from dnscorrelate.cluster.model import object_key, Container, ContainerPort, ObjectMeta, Pod, PodSpec, Service, ServicePort, ServiceSpec
from dnscorrelate.cluster.spec import LabSpec, SpecError

# Every namespace, /etc/netns entry and nftables table of a lab starts with this. Tests that
# sweep all labs set their own, so they never touch a lab a developer has running.
PREFIX = os.environ.get("DNSCORRELATE_PREFIX", "dnsc-")
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.96.0.10"
KUBERNETES_SVC_IP = "10.96.0.1"
SERVICE_CIDR = "10.96.0.0/12"
FIRST_ALLOCATED_SVC = 100
POD_CIDR = "10.244.0.0/16"
LAN_CIDR = "192.168.49.0/24"
UPSTREAM_IP = "192.168.49.1"
NODELOCAL_IP = "169.254.20.10"
COREDNS_LABELS = {"k8s-app": "kube-dns"}


class NodeInfo(BaseModel):
    name: str
    index: int
    netns: str
    pod_cidr: str
    gateway: str
    lan_ip: str


class PodInfo(BaseModel):
    namespace: str
    name: str
    ip: str
    node: str
    netns: str
    labels: dict[str, str]
    coredns_replica: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Endpoint(BaseModel):
    pod: str
    ip: str
    port: int


class ServicePortInfo(BaseModel):
    name: str | None
    port: int
    protocol: str
    endpoints: list[Endpoint]


class ServiceInfo(BaseModel):
    namespace: str
    name: str
    type: str
    cluster_ip: str | None
    external_name: str | None = None
    ports: list[ServicePortInfo]
    selected_pods: list[str]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Topology(BaseModel):
    lab: str
    prefix: str
    nodes: list[NodeInfo]
    pods: list[PodInfo]
    services: list[ServiceInfo]
    lan_netns: str
    upstream_netns: str
    upstream_ip: str = UPSTREAM_IP
    cluster_dns_ip: str = CLUSTER_DNS_IP
    nodelocal_ip: str | None = None
    domain: str = CLUSTER_DOMAIN
    spec: LabSpec

    def pod(self, key: str) -> PodInfo:
        for pod in self.pods:
            if pod.key == key:
                return pod
        raise KeyError(key)

    def node(self, name: str) -> NodeInfo:
        return next(n for n in self.nodes if n.name == name)

    @property
    def coredns_pods(self) -> list[PodInfo]:
        return [p for p in self.pods if p.coredns_replica is not None]

    def all_netns(self) -> list[str]:
        return [self.lan_netns, self.upstream_netns, *(n.netns for n in self.nodes), *(p.netns for p in self.pods)]

    def manifest_pod(self, key: str) -> Pod:
        return next(p for p in all_pods(self.spec) if f"{p.metadata.namespace}/{p.metadata.name}" == key)


def coredns_pod(replica: int) -> Pod:
    """A CoreDNS replica as kubeadm's Deployment makes it (dnsPolicy Default: the node's resolv.conf)."""
    return Pod(
        kind="Pod",
        metadata=ObjectMeta(name=f"coredns-{replica}", namespace="kube-system", labels=COREDNS_LABELS),
        spec=PodSpec(
            dnsPolicy="Default",
            containers=[
                Container(
                    name="coredns",
                    ports=[
                        ContainerPort(name="dns", containerPort=53, protocol="UDP"),
                        ContainerPort(name="dns-tcp", containerPort=53, protocol="TCP"),
                        ContainerPort(name="metrics", containerPort=9153, protocol="TCP"),
                    ],
                )
            ],
        ),
    )


def system_services() -> list[Service]:
    """The Services every kubeadm cluster has: kubernetes (no endpoints here: no API server) and kube-dns."""
    kube_dns = ServiceSpec(
        clusterIP=CLUSTER_DNS_IP,
        selector=COREDNS_LABELS,
        ports=[
            ServicePort(name="dns", port=53, targetPort=53, protocol="UDP"),
            ServicePort(name="dns-tcp", port=53, targetPort=53, protocol="TCP"),
            ServicePort(name="metrics", port=9153, targetPort=9153, protocol="TCP"),
        ],
    )
    kubernetes = ServiceSpec(clusterIP=KUBERNETES_SVC_IP, ports=[ServicePort(name="https", port=443, targetPort=6443)])
    return [
        Service(kind="Service", metadata=ObjectMeta(name="kubernetes", namespace="default"), spec=kubernetes),
        Service(kind="Service", metadata=ObjectMeta(name="kube-dns", namespace="kube-system"), spec=kube_dns),
    ]


def all_pods(spec: LabSpec) -> list[Pod]:
    return [coredns_pod(i) for i in range(spec.corednsReplicas)] + spec.pods


def all_services(spec: LabSpec) -> list[Service]:
    user = {(s.metadata.namespace, s.metadata.name) for s in spec.services}
    system = [s for s in system_services() if (s.metadata.namespace, s.metadata.name) not in user]
    return system + spec.services


def check_objects(spec: LabSpec) -> None:
    """Raise SpecError for what the API server would reject: duplicates, unknown namespaces or nodes."""
    namespaces = {ns.metadata.name for ns in spec.namespaces} | {"default", "kube-system"}
    problems = []
    seen = Counter(object_key(m) for m in spec.manifests)
    problems += [f"{kind} {ns + '/' if ns else ''}{name} is declared {n} times" for (kind, ns, name), n in seen.items() if n > 1]
    node_names = {f"node-{i}" for i in range(spec.nodes)}
    for m in spec.manifests:
        ref = f"{m.kind} {m.metadata.namespace}/{m.metadata.name}"
        if m.kind != "Namespace" and m.metadata.namespace not in namespaces:
            problems.append(f"{ref}: namespace {m.metadata.namespace!r} is not declared; add a Namespace manifest")
        if m.kind == "Pod" and m.spec.nodeName and m.spec.nodeName not in node_names:
            problems.append(f"{ref}: spec.nodeName {m.spec.nodeName!r} is not one of {sorted(node_names)}")
        if m.kind == "Service" and m.spec.type not in ("ClusterIP", "ExternalName"):
            problems.append(f"{ref}: spec.type {m.spec.type} is not supported by the lab (ClusterIP, headless or ExternalName)")
        if m.kind == "Service" and m.spec.type == "ExternalName" and not m.spec.externalName:
            problems.append(f"{ref}: spec.externalName is required for type ExternalName")
        if m.kind == "Service" and m.spec.clusterIP not in (None, "None", ""):
            if ipaddress.ip_address(m.spec.clusterIP) not in ipaddress.ip_network(SERVICE_CIDR):
                problems.append(f"{ref}: spec.clusterIP {m.spec.clusterIP} is outside the service CIDR {SERVICE_CIDR}")
    if problems:
        raise SpecError("invalid lab spec:\n" + "\n".join(f"  {p}" for p in problems))


def place_pods(spec: LabSpec, nodes: list[NodeInfo], prefix: str) -> list[PodInfo]:
    """Every pod with its node (round-robin unless pinned) and the next free IP of that node's CIDR."""
    hosts = {n.name: ipaddress.ip_network(n.pod_cidr).hosts() for n in nodes}
    for iterator in hosts.values():
        next(iterator)  # .1 is the node's gateway
    placed = []
    for index, pod in enumerate(all_pods(spec)):
        node = pod.spec.nodeName or nodes[index % len(nodes)].name
        try:
            ip = str(next(hosts[node]))
        except StopIteration:
            raise SpecError(f"too many pods on {node}: its /24 is full") from None
        replica = index if index < spec.corednsReplicas else None
        placed.append(
            PodInfo(
                namespace=pod.metadata.namespace,
                name=pod.metadata.name,
                ip=ip,
                node=node,
                netns=f"{prefix}{pod.metadata.namespace}.{pod.metadata.name}",
                labels=pod.metadata.labels,
                coredns_replica=replica,
            )
        )
    return placed


def resolve_target_port(port: ServicePort, pod: Pod) -> int | None:
    """The pod port a Service port sends to: targetPort by number or name, else the port itself."""
    target = port.targetPort if port.targetPort is not None else port.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    return pod.named_port(str(target), port.protocol)


def build_services(spec: LabSpec, pods: list[PodInfo]) -> list[ServiceInfo]:
    """Services with a ClusterIP each (fixed or allocated) and their endpoints, as the endpoints controller makes them."""
    manifests = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in all_pods(spec)}
    taken = {s.spec.clusterIP for s in all_services(spec) if s.spec.clusterIP not in (None, "None", "")}
    next_ip = (ipaddress.ip_address("10.96.0.0") + n for n in range(FIRST_ALLOCATED_SVC, 4096))
    services = []
    for svc in all_services(spec):
        if svc.spec.type == "ExternalName":
            cluster_ip = None
        elif svc.spec.headless:
            cluster_ip = None
        elif svc.spec.clusterIP:
            cluster_ip = svc.spec.clusterIP
        else:
            cluster_ip = str(next(ip for ip in next_ip if str(ip) not in taken))
        selected = [p for p in pods if svc.selects(p.namespace, p.labels)]
        ports = []
        for port in svc.spec.ports:
            endpoints = []
            for p in selected:
                target = resolve_target_port(port, manifests[p.key])
                if target is not None:
                    endpoints.append(Endpoint(pod=p.key, ip=p.ip, port=target))
            ports.append(ServicePortInfo(name=port.name, port=port.port, protocol=port.protocol, endpoints=endpoints))
        services.append(
            ServiceInfo(
                namespace=svc.metadata.namespace,
                name=svc.metadata.name,
                type=svc.spec.type,
                cluster_ip=cluster_ip,
                external_name=svc.spec.externalName,
                ports=ports,
                selected_pods=[p.key for p in selected],
            )
        )
    return services


def check_lab_name(name: str) -> str:
    """A lab name is 1-12 lowercase letters and digits: no '-', so no lab's prefix is a prefix of another's."""
    if not re.fullmatch(r"[a-z0-9]{1,12}", name or ""):
        raise SpecError(f"lab name {name!r}: use 1-12 lowercase letters or digits")
    return name


def build_topology(spec: LabSpec, lab: str) -> Topology:
    """The concrete lab `spec` describes, named `lab` (every object is prefixed `dnsc-<lab>-`)."""
    check_objects(spec)
    prefix = f"{PREFIX}{check_lab_name(lab)}-"
    lan_base = ipaddress.ip_address(UPSTREAM_IP)
    nodes = [
        NodeInfo(
            name=f"node-{i}",
            index=i,
            netns=f"{prefix}node-{i}",
            pod_cidr=f"10.244.{i}.0/24",
            gateway=f"10.244.{i}.1",
            lan_ip=str(lan_base + 1 + i),
        )
        for i in range(spec.nodes)
    ]
    pods = place_pods(spec, nodes, prefix)
    return Topology(
        lab=lab,
        prefix=prefix,
        nodes=nodes,
        pods=pods,
        services=build_services(spec, pods),
        lan_netns=f"{prefix}lan",
        upstream_netns=f"{prefix}upstream",
        nodelocal_ip=NODELOCAL_IP if spec.nodeLocalDNS else None,
        spec=spec,
    )
