"""The diagnoser's rules, one module per hop of the registry (dnscorrelate/findings.py), found by the hop's
name as dnspython finds its rdtypes: `pod->node` is `pod_to_node.py`, `return` is `return_.py`.

Each rule takes the `Evidence` and returns Findings. A module lists its rules by when they run:

- `CAUSES`: read the evidence; each names what it explains (`Finding.covers`);
- `FALLBACKS`: for what no cause explains (`Evidence.explained`), run after every cause;
- `ALERTS`: from what CoreDNS logged about itself, whether or not a workload looked anything up;
- `OWN_QUERIES`: the one rule that reads CoreDNS's own queries and may add to the findings so far.

A rule sits in the module of its codes' usual hop (the registry's first); rules of one module run in the
order listed, which breaks ties between equal findings.
"""

from __future__ import annotations

import importlib
import keyword
from collections.abc import Callable, Iterator

from dnscorrelate.findings import HOP_NAMES


def module_name(hop: str) -> str:
    """`pod_to_node` for `pod->node`, `return_` for `return` (a keyword)."""
    name = hop.replace("->", "_to_").replace("-", "_")
    return name + "_" if keyword.iskeyword(name) else name


def rules(kind: str) -> Iterator[Callable]:
    """Every hop module's rules of `kind` (CAUSES, FALLBACKS, ALERTS, OWN_QUERIES), hop by hop in the registry's order."""
    for hop in HOP_NAMES:
        module = importlib.import_module(f"{__name__}.{module_name(hop)}")
        found = getattr(module, kind, ())
        yield from ([found] if callable(found) else found)
