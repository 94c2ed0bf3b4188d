"""Inspektor Gadget's DNS tracer output (JSON) into the packet-event table (dnscorrelate/events.py).

    frame, stats = read_ig_json("trace.json")

Both generations of field names are read:

- image-based `trace_dns` (`kubectl gadget run trace_dns -o json`, `ig run trace_dns -o json`):
  `k8s` {node, namespace, podName, containerName, hostnetwork}, `netns_id`, `src`/`dst`
  {addr, port, proto, version}, `id` (hex), `qr` "Q"/"R" (or `qr_raw`), `name`, `qtype`
  (or `qtype_raw`), `rcode` "Success"/"NameError"/... (or `rcode_raw`), `pkt_type` (or
  `pkt_type_raw`), `latency_ns` / `latency_ns_raw`, `num_answers`, `addresses`, `tc`/`rd`/`ra`,
  `timestamp` (RFC 3339 text, or ns) and `timestamp_raw`;
- built-in `trace dns` (`kubectl gadget trace dns -o json`, v0.1x-0.2x): `node`, `namespace`,
  `pod` flat (v0.1x) or in `k8s` {node, namespace, podName} (v0.2x), `netnsid`, `mountnsid`,
  `pktType`, `qr`, `nameserver`, `id`, `qtype`, `name`, `rcode` "NoError"/"NXDomain"/...,
  `latency` (ns), `numAnswers`, `addresses`, `srcIP`/`dstIP`/`srcPort`/`dstPort`/`protocol`,
  `timestamp` (ns).

Each event is one row seen at a vantage named from its Kubernetes fields: `NS/POD` (role
`pod`, or `coredns` for CoreDNS replicas) for a pod, the node's name (role `node`) for
host-network events. The gadget does not keep the message: `size` is 0, `ancount` is the
gadget's answer count (the old gadget counted addresses), and the oldest events name only the
nameserver (the pod's address is then empty). One JSON object per line, a JSON array, or
pretty-printed objects; lines that do not parse are counted with their numbers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import dns.rcode
import dns.rdatatype
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.naming import pod_role

RCODES = {  # both generations' names -> dnspython's
    "success": "NOERROR", "noerror": "NOERROR", "formaterror": "FORMERR", "formerr": "FORMERR",
    "serverfailure": "SERVFAIL", "servfail": "SERVFAIL", "nameerror": "NXDOMAIN", "nxdomain": "NXDOMAIN",
    "notimplemented": "NOTIMP", "notimp": "NOTIMP", "refused": "REFUSED",
}
PKT_TYPES = events.PKT_TYPES
PROTOCOLS = {"udp": "udp", "tcp": "tcp", "17": "udp", "6": "tcp"}
DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
DURATION_PART = re.compile(r"([0-9.]+)(ns|us|µs|μs|ms|s|m|h)")
EPOCH_2001_NS = 10**18  # smaller timestamps are time since boot, not wall-clock time
SHOWN_BAD_LINES = 20


def json_values(text: str, stats: Counter, bad_lines: list[int]) -> list[dict]:
    """Every JSON object in `text`: one per line, pretty-printed, or in a top-level array."""
    decoder = json.JSONDecoder()
    found, position, end = [], 0, len(text)
    while position < end:
        while position < end and text[position].isspace():
            position += 1
        if position >= end:
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            line_end = text.find("\n", position)
            bad_lines.append(text.count("\n", 0, position) + 1)
            stats["unparsed_lines"] += 1
            position = end if line_end < 0 else line_end + 1
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                found.append(item)
            else:
                stats["non_event_records"] += 1
    return found


def first(record: dict, *keys, default=None):
    for key in keys:
        value = record.get(key)
        if value not in (None, ""):
            return value
    return default


def duration_ns(value) -> int:
    """Nanoseconds from an integer, or from Go's duration text (`1.5ms`, `2m3.1s`)."""
    if value in (None, ""):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return int(sum(float(amount) * DURATION_UNITS[unit] for amount, unit in DURATION_PART.findall(text)))


def wall_time_ns(record: dict) -> int | None:
    """The event's wall-clock time in ns: RFC 3339 text, or an integer of ns since the epoch."""
    for key in ("timestamp", "timestamp_raw"):
        value = record.get(key)
        if isinstance(value, str) and value:
            if value.isdigit():
                value = int(value)
            else:
                try:
                    return pd.Timestamp(value).value  # ns since the epoch, UTC (naive text is taken as UTC)
                except ValueError:
                    continue
        if isinstance(value, (int, float)) and value >= EPOCH_2001_NS:
            return int(value)
    return None


def qname_text(name) -> str:
    """Lower case with a trailing dot; raw wire labels (length bytes as characters) are turned into dots."""
    if not name:
        return ""
    name = str(name)
    if name[0] < " ":  # \u0010inspektor-gadget\u0002io: labels as the wire has them
        labels, at = [], 0
        while at < len(name) and 0 < ord(name[at]) < 64:
            labels.append(name[at + 1 : at + 1 + ord(name[at])])
            at += 1 + ord(name[at])
        name = ".".join(labels)
    name = name.lower()
    return name if name.endswith(".") else name + "."


def rcode_text(record: dict, response: bool) -> str:
    if not response:
        return ""
    value = first(record, "rcode", "rcode_raw")
    if value is None:
        return ""
    text = str(value)
    if text.isdigit():
        return dns.rcode.to_text(int(text))
    return RCODES.get(text.lower().replace("_", ""), text.upper())


def qtype_text(record: dict) -> str:
    value = first(record, "qtype", "qtype_raw", default="")
    return dns.rdatatype.to_text(int(value)) if isinstance(value, int) or str(value).isdigit() else str(value)


def is_response(record: dict) -> bool | None:
    value = first(record, "qr", "qr_raw")
    if isinstance(value, str):
        return {"R": True, "Q": False}.get(value.upper())
    if isinstance(value, (bool, int)):
        return bool(value)
    return None


def endpoint(record: dict, side: str) -> tuple[str, int, str]:
    """(address, port, protocol) of `src` or `dst`, from either generation's fields."""
    nested = record.get(side)
    if isinstance(nested, dict):
        return str(nested.get("addr") or ""), int(nested.get("port") or 0), str(nested.get("proto") or "")
    address = first(record, f"{side}IP", default="")
    port = int(first(record, f"{side}Port", default=0))
    if not address and record.get("nameserver"):  # v0.1x: only the nameserver is known
        response = is_response(record)
        if (side == "src") == bool(response):
            address = record["nameserver"]
            port = 53
    return str(address), port, str(first(record, "protocol", default=""))


def vantage_of(record: dict) -> tuple[str, str]:
    """(vantage, role): the pod, as NAMESPACE/POD, or the node for host-network events."""
    k8s = record.get("k8s") if isinstance(record.get("k8s"), dict) else {}
    namespace = first(k8s, "namespace") or first(record, "namespace", default="")
    pod = first(k8s, "podName", "podname", "pod") or first(record, "pod", "podName", default="")
    node = first(k8s, "node") or first(record, "node", default="")
    host_network = bool(k8s.get("hostnetwork") or k8s.get("hostNetwork") or record.get("hostNetwork"))
    if pod and namespace and not host_network:
        return f"{namespace}/{pod}", pod_role(namespace, pod)
    if node:
        return node, "node"
    return "ig-unknown", "other"


def answers_text(addresses) -> str:
    if isinstance(addresses, str):
        addresses = [a for a in addresses.split(",") if a]
    return ", ".join(f"{'AAAA' if ':' in a else 'A'} {a}" for a in addresses or [])


def row_of(record: dict) -> dict | None:
    """One event's row, or None when it is not a DNS event (a gadget log line, an error record)."""
    response = is_response(record)
    if response is None or not (record.get("name") or record.get("id")):
        return None
    src_ip, src_port, src_proto = endpoint(record, "src")
    dst_ip, dst_port, dst_proto = endpoint(record, "dst")
    vantage, role = vantage_of(record)
    pkt_type = first(record, "pkt_type", "pktType", "pkt_type_raw", default="")
    if isinstance(pkt_type, int) or str(pkt_type).isdigit():
        pkt_type = PKT_TYPES[int(pkt_type)] if int(pkt_type) < len(PKT_TYPES) else ""
    dns_id = first(record, "id", default=-1)
    protocol = PROTOCOLS.get(str(src_proto or dst_proto).lower(), "udp")
    return {
        "ts_ns": wall_time_ns(record),
        "netns": int(first(record, "netns_id", "netnsid", "netns", default=0)),
        "vantage": vantage,
        "role": role,
        "ifindex": 0,
        "ifname": "",
        "pkt_type": str(pkt_type).upper() if pkt_type != "UNKNOWN" else "",
        "kind": "dns",
        "icmp_type": -1,
        "icmp_code": -1,
        "proto": protocol,
        "family": 6 if ":" in (src_ip + dst_ip) else 4,
        "src_ip": src_ip,
        "src_port": src_port,
        "dst_ip": dst_ip,
        "dst_port": dst_port,
        "dns_id": int(dns_id, 16) if isinstance(dns_id, str) else int(dns_id),
        "qr": response,
        "opcode": 0,
        "rcode": rcode_text(record, response),
        "aa": False,
        "tc": bool(record.get("tc", False)),
        "rd": bool(record.get("rd", False)),
        "ra": bool(record.get("ra", False)),
        "qname": qname_text(record.get("name")),
        "qtype": qtype_text(record),
        "answers": answers_text(record.get("addresses")) if response else "",
        "ancount": int(first(record, "num_answers", "numAnswers", default=0)),
        "size": 0,
        "latency_ns": duration_ns(first(record, "latency_ns_raw", "latency_ns", "latency")) if response else 0,
        "decoded": bool(record.get("name")),
    }


def read_ig_json(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of one Inspektor Gadget JSON output file, and what was counted."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise EventsError(f"{path}: cannot read: {err.strerror}") from None
    stats: Counter = Counter(lines=text.count("\n") + (1 if text and not text.endswith("\n") else 0))
    bad_lines: list[int] = []
    rows = []
    for record in json_values(text, stats, bad_lines):
        stats["records"] += 1
        try:
            row = row_of(record)
        except (TypeError, ValueError) as err:  # a field of the wrong type
            stats["bad_records"] += 1
            stats.setdefault("bad_record_errors", str(err))
            continue
        if row is None:
            stats["non_event_records"] += 1
            continue
        if row["ts_ns"] is None:
            stats["no_wall_time"] += 1
            continue
        rows.append(row)
    stats["dns_events"] = len(rows)
    if not rows and (bad_lines or stats["records"]):
        shown = ", ".join(map(str, bad_lines[:SHOWN_BAD_LINES]))
        raise EventsError(
            f"{path}: no Inspektor Gadget DNS event found ({stats['records']} JSON records"
            + (f"; lines that are not JSON: {shown}" if shown else "")
            + "); expected the output of `kubectl gadget run trace_dns -o json` or `kubectl gadget trace dns -o json`"
        )
    result = dict(stats)
    if bad_lines:
        result["unparsed_line_numbers"] = bad_lines[:SHOWN_BAD_LINES]
    frame = pd.DataFrame(rows, columns=list(events.COLUMNS)) if rows else events.empty_events()
    frame = frame.sort_values("ts_ns", kind="stable") if rows else frame
    return events.conform(frame.astype({"netns": np.uint64})), result
