"""The upstream resolver both the lab and the kind cluster run: a CoreDNS authoritative for the spec's
`upstreamZones` and NXDOMAIN for the rest of the world, answering as a recursive resolver would; its
Corefile and zone files, as pure functions of the spec (and `write_upstream_files` for a container)."""

from __future__ import annotations

import re
from pathlib import Path

from dnscorrelate.cluster.spec import LabSpec


def upstream_zone(name: str, text: str, serial: int) -> str:
    """A zone file for the upstream: `text` as given if it has an SOA, else wrapped with one."""
    origin = name.rstrip(".") + "."
    if re.search(r"\bSOA\b", text):
        return f"$ORIGIN {origin}\n{text}"
    head = f"$ORIGIN {origin}\n$TTL 300\n@ IN SOA ns1.{origin} hostmaster.{origin} {serial} 7200 1800 86400 300\n@ IN NS ns1.{origin}\n"
    return head + text.rstrip() + "\n"


ROOT_ZONE = """$ORIGIN .
$TTL 300
@ IN SOA a.root-servers.lab. hostmaster.lab. {serial} 7200 1800 86400 300
@ IN NS a.root-servers.lab.
"""


def upstream_corefile(spec: LabSpec, zone_dir: Path) -> str:
    """The upstream resolver: authoritative for the spec's zones, NXDOMAIN for the rest of the
    world, and dressed as a recursive resolver (RA set, AA cleared) as a cloud resolver answers.
    The lab's and the kind cluster's upstreams both serve this."""
    if spec.upstreamCorefile:
        return spec.upstreamCorefile
    files = [f"    file {zone_dir / 'root.db'} ."]
    files += [f"    file {zone_dir / (name.rstrip('.') + '.db')} {name.rstrip('.')}" for name in sorted(spec.upstreamZones)]
    return "\n".join(
        [".:53 {", "    errors", "    log", "    header {", "        response set ra", "        response clear aa", "    }", *files, "}", ""]
    )


def write_upstream_files(spec, directory: Path, serial: int) -> None:
    """The upstream resolver's Corefile and zone files under `directory` (the lab's run directory; the kind
    cluster's, mounted at the same path in the upstream container)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "root.db").write_text(ROOT_ZONE.format(serial=serial))
    for zone, text in spec.upstreamZones.items():
        (directory / f"{zone.rstrip('.')}.db").write_text(upstream_zone(zone, text, serial))
    (directory / "Corefile").write_text(upstream_corefile(spec, directory))
