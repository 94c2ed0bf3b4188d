"""Changing a running lab the way things go wrong in a cluster.

- `set_corefile` / `set_custom_server_block`: a new coredns ConfigMap. With the
  `reload` plugin the replicas reload it (SIGUSR1 does at once what the plugin's
  30-second poll would do); without it they are restarted, as a cluster needs.
- `set_upstream_corefile`: the upstream resolver restarts with a new Corefile
  (erratic delays or drops, acl refusals, ...).
- `stop_replica`: a CoreDNS process dies; its pod, IP and endpoint stay behind
  the kube-dns VIP (a stale endpoint).
- `set_link`: loss or a full drop on the link between two lab hosts, with an
  nftables netdev hook. Egress hooks run before the packet-socket tap, so a
  packet dropped there is not seen leaving; links out of a pod are therefore
  cut at the node side's ingress (after the node's tap), so the evidence shows
  the packet reaching the node. There is no netem here: links cannot delay.
- `set_resolv_conf`: a pod's resolv.conf.
"""

from __future__ import annotations

import os
import re
import signal
import time
import zlib
from pathlib import Path

from dnscorrelate.cluster.lab import netns
from dnscorrelate.cluster.lab.netns import LabError

RELOAD_TIMEOUT_S = 45.0  # SIGUSR1 reloads at once; were it lost, the plugin's own 30 s (+-7.5 s) check still would


def log_count(path: str, needle: str) -> int:
    try:
        return Path(path).read_text(errors="replace").count(needle)
    except OSError:
        return 0


def reload_replicas(lab) -> None:
    """Make every replica run the lab's current Corefile: reload when it has `reload`, restart otherwise."""
    has_reload = re.search(r"^\s*reload\b", lab.topology.spec.corefile, flags=re.M) is not None
    replicas = [p for p in lab.processes if p.role.startswith("coredns-") and netns.alive(p.pid)]
    if not has_reload:
        for process in replicas:
            lab.restart(process.role)
        return
    before = {p.role: (log_count(p.log, "Reloading complete"), log_count(p.log, "[ERROR] Restart failed")) for p in replicas}
    for process in replicas:
        os.kill(process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    pending = {p.role: p for p in replicas}
    while pending and time.monotonic() < deadline:
        for role, process in list(pending.items()):
            done, failed = before[role]
            if log_count(process.log, "[ERROR] Restart failed") > failed:
                raise LabError(f"{role} rejected the new Corefile (see {process.log}); it keeps the old one")
            if log_count(process.log, "Reloading complete") > done:
                del pending[role]
        time.sleep(0.02)
    if pending:
        raise LabError(f"{', '.join(pending)} did not reload within {RELOAD_TIMEOUT_S:.0f}s")


def set_corefile(lab, corefile: str) -> None:
    lab.replace_spec(lab.topology.spec.model_copy(update={"corefile": corefile}))
    lab.write_corefiles()
    reload_replicas(lab)


def set_custom_server_block(lab, key: str, text: str) -> None:
    blocks = {**lab.topology.spec.customServerBlocks, key: text}
    lab.replace_spec(lab.topology.spec.model_copy(update={"customServerBlocks": blocks}))
    lab.write_corefiles()
    reload_replicas(lab)


def set_upstream_corefile(lab, corefile: str) -> None:
    lab.replace_spec(lab.topology.spec.model_copy(update={"upstreamCorefile": corefile}))
    lab.write_corefiles()
    lab.restart("upstream")


def stop_replica(lab, replica: int) -> None:
    """Kill CoreDNS replica `replica`; its pod and endpoint stay."""
    role = f"coredns-{replica}"
    try:
        process = lab.process(role)
    except StopIteration:
        raise LabError(f"there is no CoreDNS replica {replica} (replicas: {len(lab.topology.coredns_pods)})") from None
    netns.kill_all([process.pid])


def set_resolv_conf(lab, pod_ref: str, text: str) -> None:
    pod = lab.pod(pod_ref)
    from dnscorrelate.cluster.lab.runtime import write_netns_file

    write_netns_file(pod.netns, "resolv.conf", text if text.endswith("\n") else text + "\n")


def host_addresses(lab, host: str) -> tuple[str, list[str]]:
    """(namespace, addresses) of a lab host: a pod (`ns/name`), a node (`node-0`) or `upstream`."""
    t = lab.topology
    if host == "upstream":
        return t.upstream_netns, [t.upstream_ip]
    for node in t.nodes:
        if host in (node.name, "node") and (host != "node" or node.index == 0):
            return node.netns, [node.gateway, node.lan_ip]
    pod = lab.pod(host)
    return pod.netns, [pod.ip]


def link_hook(lab, source: str, target: str) -> tuple[str, str, str]:
    """(namespace, device, hook) where packets from `source` to `target` can be cut."""
    from dnscorrelate.cluster.lab.runtime import host_veth

    t = lab.topology
    source_ns, _ = host_addresses(lab, source)
    target_ns, _ = host_addresses(lab, target)
    pods = {p.netns: p for p in t.pods}
    if source_ns in pods:  # pod -> its node: cut at the node's veth, after the node saw it
        pod = pods[source_ns]
        return t.node(pod.node).netns, host_veth(pod), "ingress"
    if target_ns in pods:  # node -> pod: cut on the node's veth toward the pod
        pod = pods[target_ns]
        return t.node(pod.node).netns, host_veth(pod), "egress"
    return source_ns, "eth0", "egress"  # node <-> upstream, node <-> node: over the node network


def set_link(lab, source: str, target: str, loss: float = 0.0, drop: bool = False) -> None:
    """Lose `loss` (0-1) of the packets from `source` to `target`, or all of them with `drop`."""
    if not drop and not 0 < loss <= 1:
        raise LabError(f"link {source} -> {target}: give drop: true or a loss between 0 and 1, not {loss}")
    namespace, device, hook = link_hook(lab, source, target)
    _, addresses = host_addresses(lab, target)
    match = "" if hook == "ingress" or "veth" in device else f"ip daddr {{ {', '.join(addresses)} }} "
    verdict = "counter drop" if drop or loss >= 1 else f"numgen random mod 1000 < {int(loss * 1000)} counter drop"
    table = f"{lab.topology.prefix}link-{zlib.crc32(f'{source}>{target}'.encode()):08x}"
    script = (
        f"table netdev {table} {{}}\ndelete table netdev {table}\n"
        f"table netdev {table} {{\n  chain cut {{\n    type filter hook {hook} device \"{device}\" priority 0; policy accept;\n"
        f"    meta protocol ip {match}{verdict} comment \"{source} -> {target}\"\n  }}\n}}\n"
    )
    netns.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], stdin=script)
