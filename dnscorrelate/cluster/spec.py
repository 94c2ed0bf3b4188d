"""The lab spec: what a Kubernetes-shaped DNS lab contains, read from YAML.

A spec file is merged over the default spec shipped with the project
(`default.yaml`), unless it says `extends: none`. Scalars replace the
default's, maps (upstreamZones, customServerBlocks) are merged key by key, and
`manifests` are appended. Errors name the file, the field path, its line and
the reason, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dnscorrelate.errors import SpecError  # noqa: F401 (re-exported)
from dnscorrelate.textfiles import read_user_text
from dnscorrelate.cluster.model import Manifest, Namespace, NetworkPolicy, Pod, Service

DEFAULT_SPEC = "default.yaml"


class LabSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extends: Literal["default", "none"] = "default"
    nodes: int = Field(1, ge=1, le=4, description="Kubernetes nodes; pods are spread over them")
    corednsReplicas: int = Field(2, ge=0, le=8)
    corefile: str = Field("", description="The Corefile, exactly as in the coredns ConfigMap")
    customServerBlocks: dict[str, str] = Field(
        {}, description="Extra server blocks, like the coredns-custom ConfigMap's *.server keys"
    )
    nodeLocalDNS: bool = Field(False, description="Run NodeLocal DNSCache on 169.254.20.10 in each node")
    dnstap: bool = Field(False, description="CoreDNS replicas send dnstap (with messages) to a sink the lab runs; sessions read it")
    upstreamZones: dict[str, str] = Field({}, description="Zones the upstream resolver serves: name -> zone text")
    upstreamCorefile: str | None = Field(None, description="Replace the upstream resolver's generated Corefile")
    manifests: list[Manifest] = []

    def objects(self, kind: type) -> list:
        return [m for m in self.manifests if isinstance(m, kind)]

    @property
    def pods(self) -> list[Pod]:
        return self.objects(Pod)

    @property
    def services(self) -> list[Service]:
        return self.objects(Service)

    @property
    def policies(self) -> list[NetworkPolicy]:
        return self.objects(NetworkPolicy)

    @property
    def namespaces(self) -> list[Namespace]:
        return self.objects(Namespace)


def merge(base: LabSpec, overlay: LabSpec) -> LabSpec:
    """`overlay` over `base`: the fields the overlay set win, maps merge, manifests append."""
    merged = base.model_copy()
    for field in overlay.model_fields_set:
        value = getattr(overlay, field)
        if field == "manifests":
            value = base.manifests + value
        elif isinstance(value, dict):
            value = {**getattr(base, field), **value}
        setattr(merged, field, value)
    return merged


@dataclass(frozen=True)
class Source:
    """Where a document came from, to locate errors in it."""

    name: str
    node: yaml.Node | None


def parse_yaml(text: str, name: str) -> tuple[Any, Source]:
    """The YAML document in `text` and its node tree (for line numbers)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{where}: invalid YAML: {problem}") from None
    return data, Source(name, node)


def line_of(node: yaml.Node | None, path: tuple) -> int | None:
    """The 1-based line of the deepest node reachable along `path`."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def describe_errors(err: ValidationError, source: Source, prefix: tuple = ()) -> str:
    """One line per error: `file:line: field.path: reason`."""
    lines = []
    for e in err.errors():
        # Discriminated unions add the tag ('Pod') to the location; it is not a field.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        path = prefix + loc
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")
        line = line_of(source.node, path)
        where = f"{source.name}:{line}" if line else source.name
        lines.append(f"{where}: {field or '(document)'}: {e['msg']}")
    return "\n".join(lines)


def validate(data: Any, source: Source) -> LabSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source.name}: a lab spec is a mapping of fields, not {type(data).__name__}")
    try:
        return LabSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(describe_errors(err, source)) from None


def default_spec() -> LabSpec:
    text = resources.files("dnscorrelate.cluster").joinpath(DEFAULT_SPEC).read_text()
    return validate(*parse_yaml(text, DEFAULT_SPEC))


def spec_from_data(data: Any, source: Source) -> LabSpec:
    """A complete spec from an already-parsed document, merged over the default unless it opts out."""
    overlay = validate(data, source)
    if overlay.extends == "none":
        return overlay
    return merge(default_spec(), overlay)


def read_text(path: Path) -> str:
    """A file's text, or SpecError naming it (and the line, when it is not UTF-8)."""
    return read_user_text(path, SpecError)


def load_spec(path: str | Path | None = None) -> LabSpec:
    """The spec in `path` (merged over the default), or the default when `path` is None."""
    if path is None:
        return default_spec()
    path = Path(path)
    return spec_from_data(*parse_yaml(read_text(path), str(path)))


MANIFEST = TypeAdapter(Manifest)


def load_manifests(path: str | Path) -> list:
    """The Kubernetes objects in a YAML file (several documents, or a `kind: List`), validated."""
    path = Path(path)
    text = read_text(path)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {getattr(err, 'problem', err)}") from None
    objects = []
    for document, node in zip(documents, nodes):
        if document is None:
            continue
        items = [(document, ())]
        if isinstance(document, dict) and document.get("kind") == "List":
            items = [(item, ("items", i)) for i, item in enumerate(document.get("items") or [])]
        for item, where in items:
            try:
                objects.append(MANIFEST.validate_python(item))
            except ValidationError as err:
                raise SpecError(describe_errors(err, Source(str(path), node), where)) from None
    return objects
