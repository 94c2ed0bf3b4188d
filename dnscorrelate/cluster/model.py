"""The subset of Kubernetes objects the lab understands, in Kubernetes' own schema.

Manifests are validated with pydantic; fields the lab does not use (images,
resources, ...) are accepted and ignored, as a cluster would not care about
them for DNS either. Semantics follow the Kubernetes API reference, notably
NetworkPolicy's default-deny rules (see `NetworkPolicy.isolates`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Protocol = Literal["TCP", "UDP", "SCTP"]


class KubeModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


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
    kind: Literal["Namespace"]
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


class Pod(KubeModel):
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec = PodSpec()

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
    type: Literal["ClusterIP", "ExternalName"] = "ClusterIP"
    clusterIP: str | None = None
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = []
    externalName: str | None = None

    @field_validator("clusterIP")
    @classmethod
    def _ip_or_none(cls, value: str | None) -> str | None:
        if value not in (None, "None", ""):
            ipaddress.IPv4Address(value)
        return value

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"


class Service(KubeModel):
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec = ServiceSpec()


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
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec = NetworkPolicySpec()

    @property
    def policy_types(self) -> set[str]:
        """Kubernetes' defaulting: Ingress always, Egress when egress rules are given."""
        if self.spec.policyTypes is not None:
            return set(self.spec.policyTypes)
        return {"Ingress", "Egress"} if self.spec.egress else {"Ingress"}

    def isolates(self, pod: Pod, direction: str) -> bool:
        """Whether this policy selects `pod` and so isolates it in `direction` (Ingress/Egress)."""
        return (
            pod.metadata.namespace == self.metadata.namespace
            and direction in self.policy_types
            and self.spec.podSelector.matches(pod.metadata.labels)
        )

    def rules(self, direction: str) -> list[NetworkPolicyIngressRule] | list[NetworkPolicyEgressRule]:
        return self.spec.ingress if direction == "Ingress" else self.spec.egress

    @property
    def ref(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


Manifest = Annotated[Union[Namespace, Pod, Service, NetworkPolicy], Field(discriminator="kind")]


def object_key(m: Namespace | Pod | Service | NetworkPolicy) -> tuple[str, str, str]:
    """(kind, namespace, name): what makes an object unique in a cluster (namespaces are cluster-wide)."""
    return (m.kind, "" if m.kind == "Namespace" else m.metadata.namespace, m.metadata.name)
