"""The Corefile's facts: server blocks (zones, port, plugins) and forward blocks, from the `coredns`
ConfigMap's Corefile and the `coredns-custom` ConfigMap's `*.server` keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dnscorrelate.cluster.model import ConfigMap

COREFILE_MAP = ("kube-system", "coredns")
CUSTOM_MAP = ("kube-system", "coredns-custom")


@dataclass(frozen=True)
class ForwardBlock:
    zones: tuple[str, ...]
    targets: tuple[str, ...]
    source: str  # "Corefile" or "coredns-custom <key>"


@dataclass(frozen=True)
class ServerBlock:
    zones: tuple[str, ...]  # without ports or trailing dots; "." for the root
    plugins: tuple[str, ...]  # the block's directives, in order
    source: str
    port: int = 53

    def serves(self, qname: str) -> str:
        """The longest of its zones that `qname` is in ("" if none)."""
        name = qname.lower().rstrip(".")
        inside = [z for z in self.zones if z == "." or name == z or name.endswith("." + z)]
        return max(inside, key=lambda z: 0 if z == "." else len(z) + 1, default="")


def serving_block(blocks: list[ServerBlock], qname: str, port: int = 53) -> ServerBlock | None:
    """The server block CoreDNS picks for `qname` asked on `port`: the one with the longest zone it is in."""
    serving = [(len(b.serves(qname).strip(".")), b) for b in blocks if b.port == port and b.serves(qname)]
    return max(serving, key=lambda pair: pair[0])[1] if serving else None


def parse_server_blocks(corefile: str, source: str) -> list[ServerBlock]:
    """Every server block's zones and the directives at its top level."""
    blocks, zones, plugins, depth = [], (), [], 0
    for raw in corefile.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            zones, plugins = block_zones(line[:-1]), []
            port = block_port(line[:-1])
        elif depth == 1 and line != "}":
            plugins.append(line.split()[0].rstrip("{"))
        depth += line.count("{") - line.count("}")
        if depth == 0 and zones:
            blocks.append(ServerBlock(zones, tuple(plugins), source, port))
            zones = ()
    return blocks


def block_zones(keys: str) -> tuple[str, ...]:
    """`cluster.local:53 .:53` -> ("cluster.local", ".")."""
    return tuple(z.removeprefix("dns://").split(":")[0].rstrip(".").lower() or "." for z in keys.split())


def block_port(keys: str) -> int:
    """The port a server block listens on, from its first key (53 when none is given): `cluster.local:5353` -> 5353."""
    first = keys.split()[0].removeprefix("dns://") if keys.split() else ""
    port = first.partition(":")[2]
    return int(port) if port.isdigit() else 53


def parse_forwards(corefile: str, source: str) -> list[ForwardBlock]:
    """(zones, targets) of every `forward FROM TO...` with the zones of its server block."""
    blocks, zones, depth = [], (), 0
    for raw in corefile.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            zones = block_zones(line[:-1])
        match = re.match(r"^forward\s+(\S+)\s+([^{]+)", line)
        if match and depth == 1:
            targets = tuple(t.removeprefix("dns://") for t in match.group(2).split())
            blocks.append(ForwardBlock(zones if match.group(1) == "." else (match.group(1).rstrip("."),), targets, source))
        depth += line.count("{") - line.count("}")
    return blocks




def corefile_from_config_maps(config_maps: list[ConfigMap]) -> tuple[str, dict[str, str]]:
    """(Corefile, custom server blocks) from kube-system's `coredns` and `coredns-custom` ConfigMaps
    (as AKS and others name them); ("", {}) for what is missing."""
    by_ref = {(m.metadata.namespace, m.metadata.name): m for m in config_maps}
    main = by_ref.get(COREFILE_MAP)
    custom = by_ref.get(CUSTOM_MAP)
    corefile = main.data.get("Corefile", "") if main else ""
    blocks = {k: v for k, v in custom.data.items() if k.endswith(".server")} if custom else {}
    return corefile, blocks


# --- credentials, kept out of reports ---------------------------------------------------------------------------

REDACTED = "[redacted]"
# A directive whose arguments are, or point at, credentials: tsig's `secret NAME KEY`, a plugin's `password`,
# `token`, `*_key`/`key file`, `credentials`, `client_secret`, and forward's/grpc's `tls CERT KEY CA`.
SECRET_DIRECTIVE = re.compile(r"secret|passw|token|key|credential|auth|^tls$", re.I)
URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redacted_corefile(text: str) -> str:
    """`text` with every credential-like directive's arguments and every URL's user:password replaced by
    `[redacted]`; comments, zones and the block structure stay, so a reader still sees which plugin had one."""
    lines = []
    for line in text.splitlines(keepends=True):
        body, hash_, comment = line.partition("#")
        body = URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", body)
        match = re.match(r"^(\s*)(\S+)(\s+)(.*?)(\s*[{]?\s*)$", body, re.S)
        is_zone = match is not None and any(c in match[2] for c in ".:")  # a server block's keys, not a directive
        if match and not is_zone and SECRET_DIRECTIVE.search(match[2]) and match[4].strip() not in ("", "{"):
            body = f"{match[1]}{match[2]}{match[3]}{REDACTED}{match[5]}"
        lines.append(body + hash_ + comment)
    return "".join(lines)
