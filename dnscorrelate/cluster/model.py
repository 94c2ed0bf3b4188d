"""The Kubernetes objects every backend shares, in Kubernetes' own schema.

One model for the lab's YAML and for a real cluster's API: field names are
Kubernetes' camelCase (Python keywords by alias: `from`, `except`), so a lab
manifest and the JSON of the official client
(`ApiClient().sanitize_for_serialization(obj)`, `kubectl get -o json`) parse
alike. Nulls mean "absent", as the API server treats them, and `kind` may be
missing (list items carry none). Fields dnscorrelate does not use (images,
resources, status conditions...) are accepted and ignored.

NetworkPolicy semantics (who is isolated, what a rule admits) live in
`cluster.policy` (which imports this module, never the other way);
`ClusterModel` holds a cluster's objects with the lookups the backends and
the diagnoser need.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Protocol = Literal["TCP", "UDP", "SCTP"]


class KubeModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        """The API (and the official client's `to_dict`) writes null for unset fields: treat them as absent."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ObjectMeta(KubeModel):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=63)
    namespace: str = Field("default", pattern=DNS_LABEL, max_length=63)
    labels: dict[str, str] = {}


class LabelSelectorRequirement(KubeModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


class LabelSelector(KubeModel):
    """An empty selector matches everything, as in Kubernetes."""

    matchLabels: dict[str, str] = {}
    matchExpressions: list[LabelSelectorRequirement] = []

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchLabels.items()) and all(
            e.matches(labels) for e in self.matchExpressions
        )


# --- Namespace -------------------------------------------------------------


class Namespace(KubeModel):
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta

    @property
    def labels(self) -> dict[str, str]:
        """The namespace's labels, with the one Kubernetes sets on every namespace."""
        return {**self.metadata.labels, "kubernetes.io/metadata.name": self.metadata.name}


# --- Pod -------------------------------------------------------------------


class ContainerPort(KubeModel):
    name: str | None = None
    containerPort: int = Field(ge=1, le=65535)
    protocol: Protocol = "TCP"


class Container(KubeModel):
    name: str = "app"
    ports: list[ContainerPort] = []


class PodDNSConfigOption(KubeModel):
    name: str
    value: str | None = None


class PodDNSConfig(KubeModel):
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[PodDNSConfigOption] = []


class PodSpec(KubeModel):
    nodeName: str | None = None
    hostname: str | None = Field(None, pattern=DNS_LABEL)
    subdomain: str | None = Field(None, pattern=DNS_LABEL)
    containers: list[Container] = []
    dnsPolicy: Literal["ClusterFirst", "Default", "None", "ClusterFirstWithHostNet"] = "ClusterFirst"
    dnsConfig: PodDNSConfig | None = None


class PodIP(KubeModel):
    ip: str


class PodStatus(KubeModel):
    """What the kubelet reports; a lab pod gets the address the lab gave it."""

    podIP: str | None = None
    podIPs: list[PodIP] = []
    hostIP: str | None = None
    phase: str | None = None


class Pod(KubeModel):
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec = PodSpec()
    status: PodStatus = PodStatus()

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def ip(self) -> str | None:
        return self.status.podIP

    @property
    def ips(self) -> list[str]:
        """Every address of the pod (dual-stack pods have two)."""
        listed = [p.ip for p in self.status.podIPs]
        return listed or ([self.status.podIP] if self.status.podIP else [])

    def named_port(self, name: str, protocol: str) -> int | None:
        """The container port called `name` with `protocol`, as Services and policies resolve it."""
        for container in self.spec.containers:
            for port in container.ports:
                if port.name == name and port.protocol == protocol:
                    return port.containerPort
        return None


# --- Service ---------------------------------------------------------------


class ServicePort(KubeModel):
    name: str | None = Field(None, pattern=DNS_LABEL)
    port: int = Field(ge=1, le=65535)
    targetPort: int | str | None = None
    protocol: Protocol = "TCP"


class ServiceSpec(KubeModel):
    type: Literal["ClusterIP", "ExternalName", "NodePort", "LoadBalancer"] = "ClusterIP"
    clusterIP: str | None = None
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = []
    externalName: str | None = None

    @field_validator("clusterIP")
    @classmethod
    def _ip_or_none(cls, value: str | None) -> str | None:
        if value not in (None, "None", ""):
            ipaddress.ip_address(value)
        return value

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"


class Service(KubeModel):
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec = ServiceSpec()

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    def selects(self, namespace: str, labels: dict[str, str]) -> bool:
        """Whether a pod in `namespace` with `labels` is behind this Service's selector (none selects nothing)."""
        selector = self.spec.selector
        return (selector is not None and namespace == self.metadata.namespace
                and all(labels.get(k) == v for k, v in selector.items()))


# --- EndpointSlice ---------------------------------------------------------

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ObjectReference(KubeModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None


class EndpointConditions(KubeModel):
    """Unset `ready` means ready, as the API reference says consumers must read it."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(KubeModel):
    addresses: list[str] = []
    conditions: EndpointConditions = EndpointConditions()
    hostname: str | None = None
    nodeName: str | None = None
    targetRef: ObjectReference | None = None


class EndpointPort(KubeModel):
    name: str | None = None
    port: int | None = None
    protocol: Protocol = "TCP"


class EndpointSlice(KubeModel):
    """A Service's endpoints as the EndpointSlice controller publishes them (discovery.k8s.io/v1)."""

    kind: Literal["EndpointSlice"] = "EndpointSlice"
    metadata: ObjectMeta
    addressType: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    endpoints: list[Endpoint] = []
    ports: list[EndpointPort] = []

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)


# --- Node ------------------------------------------------------------------


class NodeAddress(KubeModel):
    type: str
    address: str


class NodeSpec(KubeModel):
    podCIDR: str | None = None
    podCIDRs: list[str] = []


class NodeStatus(KubeModel):
    addresses: list[NodeAddress] = []


class Node(KubeModel):
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = NodeSpec()
    status: NodeStatus = NodeStatus()

    @property
    def internal_ip(self) -> str | None:
        return next((a.address for a in self.status.addresses if a.type == "InternalIP"), None)

    @property
    def pod_cidr(self) -> str | None:
        return self.spec.podCIDR or next(iter(self.spec.podCIDRs), None)


# --- ConfigMap (the Corefile) ----------------------------------------------


class ConfigMap(KubeModel):
    kind: Literal["ConfigMap"] = "ConfigMap"
    metadata: ObjectMeta
    data: dict[str, str] = {}


# --- NetworkPolicy ---------------------------------------------------------


class IPBlock(KubeModel):
    cidr: str
    except_: list[str] = Field([], alias="except")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return str(ipaddress.ip_network(value, strict=False))

    @field_validator("except_")
    @classmethod
    def _excepts(cls, values: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v, strict=False)) for v in values]


class NetworkPolicyPeer(KubeModel):
    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None


class NetworkPolicyPort(KubeModel):
    protocol: Protocol = "TCP"
    port: int | str | None = None
    endPort: int | None = Field(None, ge=1, le=65535)


class NetworkPolicyIngressRule(KubeModel):
    from_: list[NetworkPolicyPeer] = Field([], alias="from")
    ports: list[NetworkPolicyPort] = []

    @property
    def peers(self) -> list[NetworkPolicyPeer]:
        return self.from_


class NetworkPolicyEgressRule(KubeModel):
    to: list[NetworkPolicyPeer] = []
    ports: list[NetworkPolicyPort] = []

    @property
    def peers(self) -> list[NetworkPolicyPeer]:
        return self.to


class NetworkPolicySpec(KubeModel):
    podSelector: LabelSelector = LabelSelector()
    policyTypes: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[NetworkPolicyIngressRule] = []
    egress: list[NetworkPolicyEgressRule] = []


class NetworkPolicy(KubeModel):
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    metadata: ObjectMeta
    spec: NetworkPolicySpec = NetworkPolicySpec()

    @property
    def policy_types(self) -> set[str]:
        """Kubernetes' defaulting: Ingress always, Egress when egress rules are given."""
        if self.spec.policyTypes is not None:
            return set(self.spec.policyTypes)
        return {"Ingress", "Egress"} if self.spec.egress else {"Ingress"}

    def rules(self, direction: str) -> list[NetworkPolicyIngressRule] | list[NetworkPolicyEgressRule]:
        return self.spec.ingress if direction == "Ingress" else self.spec.egress

    @property
    def ref(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


# --- Cilium's own policies ----------------------------------------------------
# Only what the diagnoser reads is modelled (who a policy selects, its egress DNS rules and toFQDNs); every other
# field is kept as given (extra="allow"), so a scenario's policy reaches the cluster whole.


class CiliumModel(KubeModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class FQDNSelector(CiliumModel):
    """A name (`matchName`) or a pattern (`matchPattern`, `*` for DNS characters within a label; `*` alone for
    every name), as toFQDNs and DNS rules write them."""

    matchName: str | None = None
    matchPattern: str | None = None

    @property
    def text(self) -> str:
        return f"matchName {self.matchName}" if self.matchName else f"matchPattern {self.matchPattern!r}"


class CiliumL7Rules(CiliumModel):
    dns: list[FQDNSelector] | None = None


class CiliumPortProtocol(CiliumModel):
    port: str | int | None = None
    protocol: str = "ANY"


class CiliumPortRule(CiliumModel):
    ports: list[CiliumPortProtocol] = []
    rules: CiliumL7Rules | None = None


class CiliumEgressRule(CiliumModel):
    toEndpoints: list[LabelSelector] = []
    toFQDNs: list[FQDNSelector] = []
    toPorts: list[CiliumPortRule] = []


class CiliumPolicySpec(CiliumModel):
    endpointSelector: LabelSelector = LabelSelector()
    egress: list[CiliumEgressRule] = []
    description: str = ""


class CiliumNetworkPolicy(CiliumModel):
    """A CiliumNetworkPolicy (cilium.io/v2): it selects endpoints of its own namespace. Its meaning (whom it
    selects, what names it lets through) is in `cluster.cilium_policy`."""

    kind: Literal["CiliumNetworkPolicy"] = "CiliumNetworkPolicy"
    metadata: ObjectMeta
    spec: CiliumPolicySpec = CiliumPolicySpec()

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"


class CiliumClusterwideNetworkPolicy(CiliumNetworkPolicy):
    """The same rules over every namespace."""

    kind: Literal["CiliumClusterwideNetworkPolicy"] = "CiliumClusterwideNetworkPolicy"

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.name}"


CILIUM_POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")

Manifest = Annotated[Union[Namespace, Pod, Service, NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy],
                     Field(discriminator="kind")]
"""The kinds a lab spec or `lab apply` manifest may hold."""

KubeObject = Annotated[
    Union[Namespace, Pod, Service, NetworkPolicy, EndpointSlice, Node, ConfigMap, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy],
    Field(discriminator="kind")
]
"""Every kind the model knows, as read from a cluster (items of a list need their `kind` set first)."""

CLUSTER_SCOPED = ("Namespace", "Node", "CiliumClusterwideNetworkPolicy")


def object_key(m: KubeModel) -> tuple[str, str, str]:
    """(kind, namespace, name): what makes an object unique in a cluster (namespaces and nodes are cluster-wide)."""
    return (m.kind, "" if m.kind in CLUSTER_SCOPED else m.metadata.namespace, m.metadata.name)


# --- A cluster's objects -----------------------------------------------------


class ClusterModel(BaseModel):
    """A cluster's objects, from any backend, with the lookups callers need. Pods are found by their
    status.podIP: a pod without an address is in the model but not behind an IP."""

    model_config = ConfigDict(frozen=True)

    namespaces: list[Namespace] = []
    nodes: list[Node] = []
    pods: list[Pod] = []
    services: list[Service] = []
    endpoint_slices: list[EndpointSlice] = []
    policies: list[NetworkPolicy] = []
    config_maps: list[ConfigMap] = []
    cilium_policies: list[Annotated[Union[CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy], Field(discriminator="kind")]] = []

    @classmethod
    def from_objects(cls, objects) -> ClusterModel:
        """Sort objects of any kind (in order) into a model."""
        fields = {"Namespace": "namespaces", "Node": "nodes", "Pod": "pods", "Service": "services",
                  "EndpointSlice": "endpoint_slices", "NetworkPolicy": "policies", "ConfigMap": "config_maps",
                  "CiliumNetworkPolicy": "cilium_policies", "CiliumClusterwideNetworkPolicy": "cilium_policies"}
        sorted_objects: dict[str, list] = {name: [] for name in fields.values()}
        for obj in objects:
            sorted_objects[fields[obj.kind]].append(obj)
        return cls(**sorted_objects)

    @cached_property
    def pods_by_ip(self) -> dict[str, Pod]:
        return {ip: pod for pod in self.pods for ip in pod.ips}

    def pod_by_ip(self, ip: str) -> Pod | None:
        return self.pods_by_ip.get(ip)

    def pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self.pods if p.metadata.namespace == namespace and p.metadata.name == name), None)

    def namespace_labels(self, name: str) -> dict[str, str]:
        """A namespace's labels, with the one Kubernetes sets on every namespace (also for undeclared ones)."""
        found = next((ns for ns in self.namespaces if ns.metadata.name == name), None)
        return found.labels if found else {"kubernetes.io/metadata.name": name}

    def services_in(self, namespace: str) -> list[Service]:
        return [s for s in self.services if s.metadata.namespace == namespace]

    def endpoint_slices_of(self, service: Service) -> list[EndpointSlice]:
        return [e for e in self.endpoint_slices
                if e.metadata.namespace == service.metadata.namespace and e.service_name == service.metadata.name]

    def service_pods(self, service: Service) -> list[Pod]:
        """The pods behind a Service: its EndpointSlices' targets when there are slices, else its selector's pods."""
        slices = self.endpoint_slices_of(service)
        if slices:
            refs = [ep.targetRef for s in slices for ep in s.endpoints if ep.targetRef and ep.targetRef.kind == "Pod"]
            keys = dict.fromkeys((r.namespace or service.metadata.namespace, r.name) for r in refs)
            return [p for p in (self.pod(*key) for key in keys) if p is not None]
        return [p for p in self.pods if service.selects(p.metadata.namespace, p.metadata.labels)]

    def pods_in(self, namespace: str) -> list[Pod]:
        return [p for p in self.pods if p.metadata.namespace == namespace]
