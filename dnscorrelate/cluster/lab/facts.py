"""The lab as the cluster model sees it: its spec's objects with the addresses the lab gave them, and
the EndpointSlices a cluster's controller would publish, so the lab and a real cluster fill one model."""

from __future__ import annotations

from collections import defaultdict

from dnscorrelate.cluster.facts import ClusterFacts, pod_search_list
from dnscorrelate.cluster.model import (
    SERVICE_NAME_LABEL, ClusterModel, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Node, NodeAddress,
    NodeSpec, NodeStatus, ObjectMeta, ObjectReference, Pod, PodIP, PodStatus, Service,
)
from dnscorrelate.cluster.lab.topology import ServiceInfo, Topology, all_pods, all_services


def lab_pods(topology: Topology) -> list[Pod]:
    """Every pod of the lab (CoreDNS replicas first), with its IP and its node's."""
    manifests = {p.key: p for p in all_pods(topology.spec)}
    pods = []
    for placed in topology.pods:
        host_ip = topology.node(placed.node).lan_ip
        status = PodStatus(podIP=placed.ip, podIPs=[PodIP(ip=placed.ip)], hostIP=host_ip, phase="Running")
        manifest = manifests[placed.key]
        spec = manifest.spec if manifest.spec.nodeName else manifest.spec.model_copy(update={"nodeName": placed.node})
        pods.append(manifest.model_copy(update={"spec": spec, "status": status}))
    return pods


def lab_services(topology: Topology) -> list[Service]:
    """The spec's Services and the system ones, with the ClusterIPs the lab allocated."""
    allocated = {s.key: s.cluster_ip for s in topology.services}
    services = []
    for svc in all_services(topology.spec):
        ip = allocated[svc.key]
        if ip and svc.spec.clusterIP != ip:
            svc = svc.model_copy(update={"spec": svc.spec.model_copy(update={"clusterIP": ip})})
        services.append(svc)
    return services


def endpoint_slices(service: ServiceInfo, topology: Topology) -> list[EndpointSlice]:
    """A Service's endpoints as EndpointSlices: one slice per set of resolved ports, as the controller groups them."""
    ports_of: dict[str, list[EndpointPort]] = defaultdict(list)
    for port in service.ports:
        for ep in port.endpoints:
            ports_of[ep.pod].append(EndpointPort(name=port.name, port=ep.port, protocol=port.protocol))
    groups: dict[tuple, list[str]] = defaultdict(list)
    for pod_key, ports in ports_of.items():
        groups[tuple((p.name, p.port, p.protocol) for p in ports)].append(pod_key)
    slices = []
    for index, (ports, pod_keys) in enumerate(groups.items()):
        endpoints = []
        for key in pod_keys:
            pod = topology.pod(key)
            endpoints.append(Endpoint(addresses=[pod.ip], conditions=EndpointConditions(ready=True, serving=True, terminating=False),
                                      nodeName=pod.node, targetRef=ObjectReference(kind="Pod", namespace=pod.namespace, name=pod.name)))
        meta = ObjectMeta(name=f"{service.name}-{index}", namespace=service.namespace, labels={SERVICE_NAME_LABEL: service.name})
        slices.append(EndpointSlice(metadata=meta, endpoints=endpoints,
                                    ports=[EndpointPort(name=n, port=p, protocol=proto) for n, p, proto in ports]))
    return slices


def lab_nodes(topology: Topology) -> list[Node]:
    return [
        Node(metadata=ObjectMeta(name=n.name), spec=NodeSpec(podCIDR=n.pod_cidr, podCIDRs=[n.pod_cidr]),
             status=NodeStatus(addresses=[NodeAddress(type="InternalIP", address=n.lan_ip), NodeAddress(type="Hostname", address=n.name)]))
        for n in topology.nodes
    ]


def lab_model(topology: Topology) -> ClusterModel:
    spec = topology.spec
    return ClusterModel(
        namespaces=list(spec.namespaces),
        nodes=lab_nodes(topology),
        pods=lab_pods(topology),
        services=lab_services(topology),
        endpoint_slices=[s for svc in topology.services for s in endpoint_slices(svc, topology)],
        policies=list(spec.policies),
    )


def facts_from_topology(topology: Topology) -> ClusterFacts:
    """Facts a lab knows: its spec, pods, Services and policies, and each pod's search list."""
    model = lab_model(topology)
    facts = ClusterFacts(
        cluster=f"lab {topology.lab}",
        corefile=topology.spec.corefile,
        custom_server_blocks=dict(topology.spec.customServerBlocks),
        domain=topology.domain,
        cluster_dns_ip=topology.cluster_dns_ip,
        nodelocal_ip=topology.nodelocal_ip or "",
        resolv_conf_upstreams=(topology.upstream_ip,),
        model=model,
    )
    for pod, placed in zip(model.pods, topology.pods):
        if placed.coredns_replica is not None:
            facts.coredns_pods[placed.ip] = placed.key
        facts.search[placed.ip] = pod_search_list(pod, topology.domain)
    return facts
