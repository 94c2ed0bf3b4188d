"""Where to capture in a lab: every host's network namespace, named as the traces show it, and a
watcher for namespaces that appear while a capture runs."""

from __future__ import annotations

import os
from collections.abc import Callable

from dnscorrelate.cluster.backend import Target
from dnscorrelate.cluster.lab import netns


def lab_targets(lab) -> list[Target]:
    """Every host of a lab: pods (CoreDNS replicas as role `coredns`), nodes, the upstream. Not the switch."""
    t = lab.topology
    run = netns.NETNS_DIR
    targets = [Target(str(run / p.netns), p.key, "coredns" if p.coredns_replica is not None else "pod") for p in t.pods]
    targets += [Target(str(run / n.netns), n.name, "node", skip_copies=True) for n in t.nodes]
    targets.append(Target(str(run / t.upstream_netns), "upstream", "upstream"))
    return targets


def lab_watcher(lab) -> Callable[[], list[Target]]:
    """New namespaces with the lab's prefix, named from the lab's state when it knows them."""
    known = {os.path.basename(t.path): t for t in lab_targets(lab)}
    skip = {lab.topology.lan_netns}

    def new_targets() -> list[Target]:
        found = []
        for name in netns.list_netns(lab.topology.prefix):
            if name in skip:
                continue
            found.append(known.get(name) or Target(str(netns.NETNS_DIR / name), name))
        return found

    return new_targets
