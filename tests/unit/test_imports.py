"""The package's import rules (dnscorrelate/README.md's layer table, cluster/README.md's backends), read from
every module's imports with `ast`, lazy ones inside functions included, so that the structure cannot drift:
no import points back up the pipeline, the three backends never import each other, and no import cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dnscorrelate"
BACKENDS = ("lab", "kube", "kind")
COMMANDS = ("cli", "runner", "trace", "pytest_plugin", "scenarios", "__main__")

# layer -> the layers it may import (besides itself). The README's table, as data.
MAY_IMPORT = {
    "package": set(),  # dnscorrelate/__init__.py: the version
    "errors": set(),
    "findings": set(),  # the registry of findings (issue 18 step 2, on its own branch): codes, hops, order
    "schema": {"findings"},
    "senders": set(),  # who sent a packet, from the evidence: the rule correlate/ and live/dnstap.py share
    "textfiles": set(),
    "outputs": {"errors"},
    "events": {"schema", "errors"},
    "sources": {"schema", "events", "errors", "textfiles"},
    "cluster": {"errors", "textfiles"},  # the shared model: model, policy, corefile, facts, spec, workloads, ...
    "live": {"package", "errors", "schema", "senders", "events", "sources", "cluster"},
    **{f"cluster.{b}": {"package", "errors", "textfiles", "schema", "events", "sources", "live", "cluster"} for b in BACKENDS},
    "correlate": {"schema", "senders"},
    "diagnose": {"findings", "schema", "correlate", "cluster"},
    "report": {"findings", "schema", "correlate", "diagnose", "cluster", "outputs", "errors"},
    # everything below; correlate --lab NAME reads a lab's facts through its backend
    "analysis": {"errors", "findings", "schema", "textfiles", "outputs", "events", "sources", "correlate", "diagnose", "cluster",
                 "cluster.lab", "report"},
    # the same evidence analysed twice, Hubble's flows alone and ours alone (bench and the Cilium test print it)
    "side_by_side": {"analysis", "diagnose", "schema"},
    "commands": None,  # anything; what they may know of a backend is checked below
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules `name` imports anywhere in its file (a package imported for one of its modules counts as
    that module)."""
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m.split(".")[0] == "dnscorrelate" and m != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imported(name, path)) for name, path in modules().items()}


def layer(name: str) -> str:
    parts = name.split(".")[1:]
    if not parts:
        return "package"
    if parts[0] == "cluster":
        return f"cluster.{parts[1]}" if len(parts) > 1 and parts[1] in BACKENDS else "cluster"
    return "commands" if parts[0] in COMMANDS else parts[0]


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(MAY_IMPORT), "a new top-level module: give it a row in MAY_IMPORT and the README"


def test_no_import_points_back_up_the_pipeline():
    broken = [f"{m} -> {d}" for m, deps in graph().items() for d in sorted(deps)
              if MAY_IMPORT[layer(m)] is not None and layer(d) != layer(m) and layer(d) not in MAY_IMPORT[layer(m)]]
    assert broken == []


def test_backends_never_import_each_other():
    """lab/, kube/ and kind/ share only the model in cluster/; what kube needs of kind is passed in."""
    crossing = [f"{m} -> {d}" for m, deps in graph().items() for d in sorted(deps)
                if layer(m).startswith("cluster.") and layer(d).startswith("cluster.") and layer(d) != layer(m)]
    assert crossing == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycles_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles({m: set(deps) for m, deps in graph().items()}) == []


def test_no_import_cycle_between_layers():
    edges: dict[str, set[str]] = defaultdict(set)
    for m, deps in graph().items():
        edges[layer(m)] |= {layer(d) for d in deps if layer(d) != layer(m)}
    assert cycles(dict(edges)) == []


@pytest.mark.parametrize("readme", ["dnscorrelate/README.md", "dnscorrelate/cluster/README.md", "dnscorrelate/cluster/lab/README.md",
                                    "dnscorrelate/cluster/kube/README.md", "dnscorrelate/cluster/kind/README.md",
                                    "dnscorrelate/live/README.md", "dnscorrelate/sources/README.md"])
def test_the_readmes_state_the_rule_this_test_checks(readme):
    assert "tests/unit/test_imports.py" in (ROOT / readme).read_text()


# What the commands may know of each backend: its front module (its `Backend`, and for the `lab`, `cluster` and
# `agent` commands its lifecycle), never its internals.
FRONTS = {
    "dnscorrelate.cluster.lab.backend",
    "dnscorrelate.cluster.kube.backend",
    "dnscorrelate.cluster.kube.agent",  # `dnscorrelate agent`: the node agent itself
    "dnscorrelate.cluster.kind.cluster",
    "dnscorrelate.cluster.kind.build",
}
SPEAK_THROUGH_INTERFACES = ("dnscorrelate.cli", "dnscorrelate.runner", "dnscorrelate.trace", "dnscorrelate.pytest_plugin")


def test_the_commands_reach_a_backend_only_through_its_front():
    reaches = [f"{m} -> {d}" for m in SPEAK_THROUGH_INTERFACES for d in sorted(graph()[m])
               if layer(d).startswith("cluster.") and d not in FRONTS]
    assert reaches == []


@pytest.mark.parametrize("name", [*SPEAK_THROUGH_INTERFACES, "dnscorrelate.cluster.backend", "dnscorrelate.live.session"])
def test_no_probing_for_undeclared_attributes(name):
    """What a backend or a capture offers is declared (`cluster.backend`'s protocols), not discovered."""
    probes = [f"line {node.lineno}: {node.func.id}" for node in ast.walk(ast.parse(modules()[name].read_text()))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")]
    assert probes == []
