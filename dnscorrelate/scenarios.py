"""Scenarios: a lab, faults, queries and what the diagnosis should say, in YAML.

The format is documented with examples in scenarios/README.md. Loading
validates everything up front and names file, line, field and reason. A
scenario's faults and `expect` are read by the runner only: the diagnoser
never sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from dnscorrelate.cluster.model import Manifest
from dnscorrelate.cluster.lab.spec import LabSpec, SpecError, describe_errors, parse_yaml, read_text

HOPS = ("pod", "pod->node", "node->coredns", "coredns", "coredns->upstream", "upstream", "return")
CODES = (
    "ok", "dropped-before-node", "dropped-at-node", "coredns-unreachable", "upstream-unreachable", "upstream-error",
    "coredns-error", "upstream-slow", "nxdomain", "nodata", "search-path-expansion", "response-lost", "truncated", "coredns-imbalance",
    "slow-coredns", "unanswered", "no-lookups",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- faults: one key each, applied in order -------------------------------------


class CorefileFault(Strict):
    corefile: str = Field(description="A whole Corefile, as in the coredns ConfigMap")


class CustomServerBlockFault(Strict):
    customServerBlock: str = Field(description="A server block, like a coredns-custom *.server key")
    key: str | None = Field(None, description="The coredns-custom key (default: from the block's zone)")


class ApplyFault(Strict):
    apply: Manifest


class DeleteTarget(Strict):
    kind: Literal["Service", "NetworkPolicy"]
    namespace: str = "default"
    name: str


class DeleteFault(Strict):
    delete: DeleteTarget


class UpstreamCorefileFault(Strict):
    upstreamCorefile: str


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


class StopReplicaFault(Strict):
    stopReplica: int = Field(ge=0)


class ResolvConfSpec(Strict):
    pod: str
    text: str


class ResolvConfFault(Strict):
    resolvConf: ResolvConfSpec


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
    client: Literal["dnspython", "glibc", "dig"] = "dnspython"
    timeout: float = Field(2.0, gt=0, le=30, description="Seconds a client waits for each answer")

    @field_validator("from_")
    @classmethod
    def _pod_ref(cls, value: str) -> str:
        if "/" not in value.removeprefix("pod/"):
            raise ValueError("name the pod as namespace/name, for example demo/mypod")
        return value.removeprefix("pod/")


class Expect(Strict):
    findings: list[Literal[CODES]] = Field(min_length=1)  # type: ignore[valid-type]
    hop: Literal[HOPS] | None = None  # type: ignore[valid-type]


class LabOverlay(LabSpec):
    """The lab spec's fields, merged over the default lab (see dnscorrelate/cluster/lab/README.md)."""


class Scenario(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60)
    description: str = ""
    lab: LabOverlay = LabOverlay()
    faults: list[Fault] = []
    queries: list[Query] = Field(min_length=1)
    expect: Expect


def load_scenario(path: str | Path) -> Scenario:
    """A validated scenario; SpecError names file, line, field and reason."""
    path = Path(path)
    data, source = parse_yaml(read_text(path), str(path))
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a scenario is a mapping with name, queries and expect")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise SpecError(describe_errors(err, source)) from None


def scenario_paths(arguments: list[str]) -> list[Path]:
    """Files named, or every *.yaml of folders named."""
    paths = []
    for argument in arguments:
        path = Path(argument)
        paths += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return paths
