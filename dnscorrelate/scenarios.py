"""Scenarios: a lab, faults, queries and what the diagnosis should say, in YAML.

The format is documented with examples in scenarios/README.md. Loading
validates everything up front and names file, line, field and reason. A
scenario's faults and `expect` are read by the runner only: the diagnoser
never sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from dnscorrelate.cluster.model import Manifest
from dnscorrelate.cluster.spec import LabSpec, SpecError, Source, default_spec, describe_errors, line_of, merge, parse_yaml, read_text
from dnscorrelate.findings import CODE_NAMES, HOP_NAMES

if TYPE_CHECKING:
    from dnscorrelate.cluster.backend import Faults


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- faults: one key each, applied in order; each applies itself through the backend's `Faults` ----------------


class CorefileFault(Strict):
    corefile: str = Field(description="A whole Corefile, as in the coredns ConfigMap")

    def apply_to(self, faults: Faults) -> None:
        faults.set_corefile(self.corefile)


class CustomServerBlockFault(Strict):
    customServerBlock: str = Field(description="A server block, like a coredns-custom *.server key")
    key: str | None = Field(None, description="The coredns-custom key (default: from the block's zone)")

    def apply_to(self, faults: Faults) -> None:
        key = self.key or self.customServerBlock.split()[0].split(":")[0].rstrip(".").replace(".", "-") + ".server"
        faults.set_custom_server_block(key, self.customServerBlock)


class ApplyFault(Strict):
    apply: Manifest

    def apply_to(self, faults: Faults) -> None:
        faults.apply([self.apply])


class DeleteTarget(Strict):
    kind: Literal["Service", "NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]
    namespace: str = "default"
    name: str


class DeleteFault(Strict):
    delete: DeleteTarget

    def apply_to(self, faults: Faults) -> None:
        faults.delete(self.delete.kind, self.delete.namespace, self.delete.name)


class UpstreamCorefileFault(Strict):
    upstreamCorefile: str

    def apply_to(self, faults: Faults) -> None:
        faults.set_upstream_corefile(self.upstreamCorefile)


class LinkSpec(Strict):
    from_: str = Field(alias="from", description="Lab host: a pod (ns/name), node-0, upstream")
    to: str
    loss: float | None = Field(None, gt=0, le=1)
    drop: bool = False

    @model_validator(mode="after")
    def _one_effect(self):
        if not self.drop and self.loss is None:
            raise ValueError("give loss (0-1] or drop: true")
        return self


class LinkFault(Strict):
    link: LinkSpec

    def apply_to(self, faults: Faults) -> None:
        faults.set_link(self.link.from_, self.link.to, self.link.loss or 0.0, self.link.drop)


class StopReplicaFault(Strict):
    stopReplica: int = Field(ge=0)

    def apply_to(self, faults: Faults) -> None:
        faults.stop_replica(self.stopReplica)


class ResolvConfSpec(Strict):
    pod: str
    text: str


class ResolvConfFault(Strict):
    resolvConf: ResolvConfSpec

    def apply_to(self, faults: Faults) -> None:
        faults.set_resolv_conf(self.resolvConf.pod, self.resolvConf.text)


FAULT_KEYS = {
    "corefile": CorefileFault, "customServerBlock": CustomServerBlockFault, "apply": ApplyFault, "delete": DeleteFault,
    "upstreamCorefile": UpstreamCorefileFault, "link": LinkFault, "stopReplica": StopReplicaFault, "resolvConf": ResolvConfFault,
}


def fault_kind(value: Any) -> str | None:
    """The tag of a fault: its one known key, capitalised (error paths drop capitalised tags)."""
    if isinstance(value, dict):
        keys = [k for k in value if k in FAULT_KEYS]
        return keys[0][0].upper() + keys[0][1:] if len(keys) == 1 else None
    return next((k[0].upper() + k[1:] for k, kind in FAULT_KEYS.items() if isinstance(value, kind)), None)


Fault = Annotated[
    Union[tuple(Annotated[kind, Tag(key[0].upper() + key[1:])] for key, kind in FAULT_KEYS.items())],
    Discriminator(fault_kind, custom_error_type="fault", custom_error_message=f"a fault has exactly one of: {', '.join(FAULT_KEYS)}"),
]


class Query(Strict):
    from_: str = Field(alias="from", description="The pod that asks, ns/name")
    name: str
    type: str = "A"
    count: int = Field(1, ge=1, le=10000)
    concurrency: int = Field(1, ge=1, le=64)
    proto: Literal["udp", "tcp"] = "udp"
    client: Literal["dnspython", "glibc", "dig", "connect"] = Field(
        "dnspython", description="connect: dnspython's lookup, then a TCP connection to the first address on port 80")
    timeout: float = Field(2.0, gt=0, le=30, description="Seconds a client waits for each answer")

    @field_validator("from_")
    @classmethod
    def _pod_ref(cls, value: str) -> str:
        if "/" not in value.removeprefix("pod/"):
            raise ValueError("name the pod as namespace/name, for example demo/mypod")
        return value.removeprefix("pod/")

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        """A name a client can send: dnspython refuses a label over 63 bytes or a name over 255."""
        import dns.exception
        import dns.name

        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as err:
            raise ValueError(f"not a DNS name a client can send: {err}") from None
        return value


class Expect(Strict):
    findings: list[Literal[CODE_NAMES]] = Field(min_length=1)  # type: ignore[valid-type]  (every code the diagnoser can emit)
    hop: Literal[HOP_NAMES] | None = None  # type: ignore[valid-type]


class LabOverlay(LabSpec):
    """The lab spec's fields, merged over the default lab (see dnscorrelate/cluster/lab/README.md)."""


class Scenario(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60)
    description: str = ""
    lab: LabOverlay = LabOverlay()
    faults: list[Fault] = []
    queries: list[Query] = Field(min_length=1)
    expect: Expect
    hubble: bool = Field(False, description="The session reads Cilium's Hubble too (kind --cni cilium only): its DNS proxy "
                         "records and its drops are evidence beside the capture")


BACKENDS = ("lab", "kind")
KIND_NODES = 2  # cluster/kind/cluster.py: a control plane and a worker
KIND_REPLICAS = 2  # kubeadm's CoreDNS Deployment
LAB_ONLY_FAULTS = {
    UpstreamCorefileFault: ("upstreamCorefile", "the upstream resolver's Corefile is the lab's to change mid-run; on kind "
                            "give it in lab.upstreamCorefile (the upstream container starts with it)"),
    LinkFault: ("link", "links between hosts are the lab's veth pairs; a kind cluster's links cannot drop or lose packets"),
    ResolvConfFault: ("resolvConf", "a running pod's resolv.conf is written by the kubelet on kind; give the pod a dnsConfig instead"),
}


CILIUM_ONLY = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


def cilium_problems(scenario: Scenario, backend: str, cni: str | None) -> list[tuple[tuple, str]]:
    """(field path, reason) for each Cilium policy the scenario makes where no Cilium enforces it: the lab (its
    nftables agent reads NetworkPolicy only) and a kind cluster on flannel. `cni` None: a user's cluster, whose
    CNI the API says when the object is created."""
    if backend != "lab" and cni in (None, "cilium"):
        return []
    where = "the lab enforces NetworkPolicy only (nftables); run it with --backend kind --cni cilium" if backend == "lab" else \
        f"the kind cluster's pod network is {cni}, which has no Cilium policies; run it with --cni cilium"
    problems = [(("lab", "manifests", i, "kind"), f"a {m.kind} needs Cilium: {where}")
                for i, m in enumerate(scenario.lab.manifests) if m.kind in CILIUM_ONLY]

    for i, fault in enumerate(scenario.faults):
        kind = fault.apply.kind if isinstance(fault, ApplyFault) else fault.delete.kind if isinstance(fault, DeleteFault) else ""
        if kind in CILIUM_ONLY:
            key = "apply" if isinstance(fault, ApplyFault) else "delete"
            problems.append((("faults", i, key, "kind"), f"a {kind} needs Cilium: {where}"))
    if scenario.hubble:
        problems.append((("hubble",), f"Hubble is part of Cilium: {where}"))
    return problems


def backend_problems(scenario: Scenario, backend: str, cni: str | None = "flannel") -> list[tuple[tuple, str]]:
    """(field path, reason) for each part of the scenario the backend cannot make: the lab makes everything
    but Cilium's policies; a kind cluster has two nodes, kubeadm's two CoreDNS replicas, no NodeLocal DNS,
    makes faults through the API only, and Cilium's policies only with Cilium as its pod network (`cni`)."""
    if backend == "lab":
        return cilium_problems(scenario, backend, cni)
    problems = cilium_problems(scenario, backend, cni)
    overlay = scenario.lab
    if overlay.nodeLocalDNS:
        problems.append((("lab", "nodeLocalDNS"), "the kind cluster runs no NodeLocal DNSCache (lab only)"))
    if "nodes" in overlay.model_fields_set and overlay.nodes != KIND_NODES:
        problems.append((("lab", "nodes"), f"the kind cluster has {KIND_NODES} nodes (lab only)"))
    if "corednsReplicas" in overlay.model_fields_set and overlay.corednsReplicas != KIND_REPLICAS:
        problems.append((("lab", "corednsReplicas"), f"the kind cluster runs {KIND_REPLICAS} CoreDNS replicas (lab only)"))
    if overlay.extends == "none":
        problems.append((("lab", "extends"), "the kind cluster always starts from the default lab (lab only)"))
    for i, fault in enumerate(scenario.faults):
        for kind, (key, why) in LAB_ONLY_FAULTS.items():
            if isinstance(fault, kind):
                problems.append((("faults", i, key), f"{why} (lab only)"))
    return problems


def load_scenario(path: str | Path, backend: str = "lab", cni: str | None = "flannel") -> Scenario:
    """A validated scenario that `backend` (lab or kind, with `cni` as its pod network; None: a user's cluster,
    any) can run; SpecError names file, line, field and reason."""
    path = Path(path)
    data, source = parse_yaml(read_text(path), str(path))
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a scenario is a mapping with name, queries and expect")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise SpecError(describe_errors(err, source)) from None
    problems = unknown_references(scenario) + backend_problems(scenario, backend, cni)
    if problems:
        raise SpecError("\n".join(f"{source.name}:{line_of(source.node, where) or '?'}: {field_path(where)}: {why}" for where, why in problems))
    return scenario


def field_path(where: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in where).replace(".[", "[")


def scenario_lab(scenario: Scenario) -> LabSpec:
    """The lab the scenario runs in: its overlay merged over the default, unless it opts out."""
    return scenario.lab if scenario.lab.extends == "none" else merge(default_spec(), scenario.lab)


def unknown_references(scenario: Scenario) -> list[tuple[tuple, str]]:
    """(field path, reason) for each pod, host, replica or object a fault or query names that the lab will
    not have at that point: faults apply in order, so an `apply` makes its object known to later ones."""
    from dnscorrelate.cluster.lab.topology import all_pods, all_services

    spec = scenario_lab(scenario)
    pods = {f"{p.metadata.namespace}/{p.metadata.name}" for p in all_pods(spec)}
    objects = {(s.kind, s.metadata.namespace, s.metadata.name) for s in [*all_services(spec), *spec.policies]}
    hosts = pods | {f"node-{i}" for i in range(spec.nodes)} | {"node", "upstream"}
    problems = []

    def need(value: str, known: set, where: tuple, what: str) -> None:
        name = value.removeprefix("pod/")  # the lab reads pod/NS/NAME, NS/NAME and NAME (namespace default)
        if name not in known and f"default/{name}" not in known:
            choices = ", ".join(sorted(known)[:12])
            problems.append((where, f"{what} {value!r} is not in the lab (it has: {choices})"))

    for i, fault in enumerate(scenario.faults):
        at = ("faults", i)
        if isinstance(fault, ApplyFault):
            m = fault.apply
            objects.add((m.kind, m.metadata.namespace, m.metadata.name))
            if m.kind == "Pod":
                pods.add(f"{m.metadata.namespace}/{m.metadata.name}")
                hosts.add(f"{m.metadata.namespace}/{m.metadata.name}")
        elif isinstance(fault, DeleteFault):
            target = (fault.delete.kind, fault.delete.namespace, fault.delete.name)
            if target not in objects:
                problems.append(((*at, "delete", "name"), f"{target[0]} {target[1]}/{target[2]} is not in the lab"))
            objects.discard(target)
        elif isinstance(fault, LinkFault):
            need(fault.link.from_, hosts, (*at, "link", "from"), "host")
            need(fault.link.to, hosts, (*at, "link", "to"), "host")
        elif isinstance(fault, StopReplicaFault) and fault.stopReplica >= spec.corednsReplicas:
            problems.append(((*at, "stopReplica"), f"replica {fault.stopReplica} does not exist: the lab runs "
                             f"{spec.corednsReplicas} CoreDNS replica(s), numbered from 0"))
        elif isinstance(fault, ResolvConfFault):
            need(fault.resolvConf.pod, pods, (*at, "resolvConf", "pod"), "pod")
    for i, query in enumerate(scenario.queries):
        need(query.from_, pods, ("queries", i, "from"), "pod")
    return problems


def scenario_paths(arguments: list[str]) -> list[Path]:
    """Files named, or every *.yaml of folders named."""
    paths = []
    for argument in arguments:
        path = Path(argument)
        paths += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return paths
