"""Where CoreDNS forwards a name (from the Corefile in the facts), and how findings name an upstream."""

from __future__ import annotations

from dnscorrelate.cluster.facts import ClusterFacts

UNKNOWN_UPSTREAM = "unknown upstream"


def upstream_phrase(address: str) -> str:
    """`CoreDNS's upstream 8.8.8.8:53`, or what is known when nothing names it."""
    return "CoreDNS's upstream (no errors line or Corefile names it)" if address == UNKNOWN_UPSTREAM else f"CoreDNS's upstream {address}"


def forward_targets(facts: ClusterFacts, qname: str) -> str:
    """The forward targets of the Corefile block that would forward `qname` (longest zone), '' if none known."""
    name = qname.lower().rstrip(".")
    best = None
    for block in facts.forward_blocks() if facts.corefile else []:
        for zone in block.zones:
            zone = zone.strip(".").lower()
            if (zone == "" or name == zone or name.endswith("." + zone)) and (best is None or len(zone) > best[0]):
                best = (len(zone), block)
    return ", ".join(best[1].targets) if best else ""
