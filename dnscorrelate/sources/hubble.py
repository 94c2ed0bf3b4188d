"""Hubble flows (`hubble observe -o json` / `-o jsonpb`, Cilium) into the packet-event table.

    frame, stats = read_hubble_json("flows.json")

Each line is a GetFlowsResponse, `{"flow": {...}, "node_name": ..., "time": ...}`, or a bare Flow
object (older `hubble observe -o json`, `jq .flow`); field names as in Cilium's api/v1/flow/flow.proto
(`source_port`), or protojson's lowerCamelCase (`sourcePort`); enums by name or number.

**L7 DNS flows** (`Type` L7, `l7.dns`) are the DNS proxy's account of a lookup: a REQUEST and a
RESPONSE (`l7.type`; `is_reply` and `traffic_direction` may be absent, so `l7.type` decides). Each is a
`dns` row: `qname` from `l7.dns.query`, `qtype` from `qtypes`, `rcode` from the numeric `rcode`
(absent: 0, NOERROR), `answers` from `ips` (A/AAAA) and `cnames`, addresses and ports from `IP` and
`l4`. The proxy sits at a pod's egress (or, for an ingress rule, the server's ingress): the row's
vantage is that pod (`NS/POD` from `source`/`destination`, role pod, or coredns for CoreDNS replicas),
or the node (`node_name`, role node) when that end is no pod; `ifname` is `dns-proxy`.

Hubble has no DNS id. A REQUEST and its RESPONSE are paired on node, client address and port,
protocol, name and qtypes (the first unanswered request of that key, in time order), and both get one
synthetic `dns_id` of 65536 or more: never a real id, so the correlator's (client ip, port, id, proto)
key joins each pair and nothing else. A response's `latency_ns` is the proxy's own (`l7.latency_ns`, or
the time from its request): the proxy's view only. `stats["warnings"]` says so.

**L3/L4 flows** on a DNS port (`--port`, 53 by default) are rows of kind `flow`: the datapath saw a
packet of a DNS exchange; no DNS fields (`dns_id` -1). `qr` is `is_reply` (else: it came from the DNS
port). Their vantage follows `trace_observation_point` (TO_ENDPOINT: the destination pod; FROM_ENDPOINT,
TO_PROXY: the source pod; others: the node) or, without one, `traffic_direction` (egress: the source,
ingress: the destination). Every Hubble row carries `verdict` (FORWARDED, REDIRECTED, DROPPED, AUDIT, …)
and, when dropped, `drop_reason` in Hubble's own words (`drop_reason_desc`: POLICY_DENIED, …); a
dropped DNS packet is thus a `flow` row with `verdict` DROPPED. A DROPPED flow on another port (TCP to an
address a lookup returned, stopped by a toFQDNs policy) is a `conn-drop` row at the pod that sent it (ingress:
that received it), counted in `l3_l4_other_port` and in `connection_drops`; other flows on other ports are
only counted. Every row names both ends where Hubble does
(`src_name`, `dst_name`: `NS/POD` of `source` and `destination`): the server a client's proxy talked to.

Every line is counted once: `lines` = `blank_lines` + `unparsed_lines` (their numbers in
`unparsed_line_numbers`) + `records`; `records` = `flows` + `non_flow_records` (node_status,
lost_events: `events_lost` sums what Hubble said it lost, …); `flows` = `l7_dns_requests` +
`l7_dns_responses` + `l7_dns_other` (an l7.type neither REQUEST nor RESPONSE) + `l7_not_dns` (HTTP,
Kafka) + `l3_l4_dns_port` + `l3_l4_other_port` + `type_<name>` (SOCK, UNKNOWN_TYPE, …) + `bad_flows`
(a field of the wrong type or missing: numbers in `bad_flow_line_numbers`). `dropped` counts the rows
whose verdict is DROPPED (`dropped_by_reason`: by Hubble's reason); `nodes` lists the nodes that reported.
"""

from __future__ import annotations

import calendar
import json
import re
from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path

import dns.rcode
import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.naming import pod_role

SYNTHETIC_ID_BASE = 65536  # above every real DNS id (16 bits)
SHOWN_BAD_LINES = 20
FLOW_TYPES = {0: "UNKNOWN_TYPE", 1: "L3_L4", 2: "L7", 3: "SOCK"}
L7_TYPES = {0: "UNKNOWN_L7_TYPE", 1: "REQUEST", 2: "RESPONSE", 3: "SAMPLE"}
VERDICTS = {0: "VERDICT_UNKNOWN", 1: "FORWARDED", 2: "DROPPED", 3: "ERROR", 4: "AUDIT", 5: "REDIRECTED", 6: "TRACED", 7: "TRANSLATED"}
DIRECTIONS = {0: "TRAFFIC_DIRECTION_UNKNOWN", 1: "INGRESS", 2: "EGRESS"}
OBSERVATION_POINTS = {0: "UNKNOWN_POINT", 1: "TO_PROXY", 2: "TO_HOST", 3: "TO_STACK", 4: "TO_OVERLAY", 101: "TO_ENDPOINT",
                      5: "FROM_ENDPOINT", 6: "FROM_PROXY", 7: "FROM_HOST", 8: "FROM_STACK", 9: "FROM_OVERLAY", 10: "FROM_NETWORK",
                      11: "TO_NETWORK"}
FLOW_FIELDS = {"time", "verdict", "IP", "l4", "Type", "source", "destination", "l7", "event_type", "traffic_direction", "Summary"}
RESPONSE_KINDS = ("node_status", "lost_events", "agent_event", "debug_event")  # GetFlowsResponse's other members
TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
WARNING = ("hubble: no DNS id, so each REQUEST is paired with its RESPONSE on node, client address and port, protocol, name "
           "and qtype, and both carry a synthetic dns_id (65536 and up); latency is the DNS proxy's only")


def field(obj: dict, name: str, default=None):
    """A field by its proto name (`source_port`) or protojson's JSON name (`sourcePort`)."""
    if name in obj:
        return obj[name]
    head, *rest = name.split("_")
    return obj.get(head + "".join(part.title() for part in rest), default)


def enum_name(value, names: dict[int, str]) -> str:
    """An enum given by name or by number (protojson's UseEnumNumbers) as its name; "" when absent."""
    if value is None or value == "":
        return ""
    if isinstance(value, int):
        return names.get(value, str(value))
    return str(value)


def time_ns(text) -> int:
    """RFC 3339 text (protojson's Timestamp: `2021-10-04T11:22:26.592280339Z`) as ns since the epoch."""
    match = TIME.match(str(text))
    if not match:
        raise ValueError(f"time {text!r} is not RFC 3339")
    seconds = calendar.timegm(tuple(int(x) for x in re.split(r"[-T:]", match[1])) + (0, 0, 0))
    if match[3] != "Z":
        sign = 1 if match[3][0] == "+" else -1
        seconds -= sign * (int(match[3][1:3]) * 3600 + int(match[3][4:6]) * 60)
    return seconds * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))


def ports_of(flow: dict) -> tuple[str, int, int]:
    """(protocol, source port, destination port) from `l4`; protocol "" when it is neither TCP nor UDP."""
    l4 = flow.get("l4") or {}
    for name in ("TCP", "UDP"):
        if name in l4:
            layer = l4[name] or {}
            return name.lower(), int(field(layer, "source_port", 0)), int(field(layer, "destination_port", 0))
    return "", 0, 0


def pod_name(endpoint: dict) -> str:
    namespace, pod = field(endpoint, "namespace", ""), field(endpoint, "pod_name", "")
    return f"{namespace}/{pod}" if namespace and pod else ""


def vantage_of(endpoint: dict | None, node: str) -> tuple[str, str]:
    """(vantage, role): the endpoint's pod, else the node that reported the flow."""
    name = pod_name(endpoint or {})
    if name:
        return name, pod_role(*name.split("/", 1))
    return (node or "hubble"), "node"


def answers_text(dns_record: dict) -> str:
    records = [f"{'AAAA' if ':' in ip else 'A'} {ip}" for ip in dns_record.get("ips") or []]
    records += [f"CNAME {name.lower()}" for name in dns_record.get("cnames") or []]
    return ", ".join(records)


def qname_text(query: str) -> str:
    query = str(query or "").lower()
    return query if not query or query.endswith(".") else query + "."


def base_row(flow: dict, ts_ns: int, vantage: tuple[str, str], pkt_type: str, ifname: str, kind: str) -> dict:
    proto, sport, dport = ports_of(flow)
    ip = flow.get("IP") or {}
    src, dst = str(ip.get("source", "")), str(ip.get("destination", ""))
    verdict = enum_name(flow.get("verdict"), VERDICTS)
    reason = field(flow, "drop_reason_desc")
    if reason in (None, "", 0, "DROP_REASON_UNKNOWN") and field(flow, "drop_reason"):
        reason = f"drop_reason {field(flow, 'drop_reason')}"  # flows older than drop_reason_desc
    return {
        "ts_ns": ts_ns, "netns": 0, "vantage": vantage[0], "role": vantage[1], "ifindex": int((flow.get("interface") or {}).get("index", 0)),
        "ifname": ifname, "pkt_type": pkt_type, "kind": kind, "icmp_type": -1, "icmp_code": -1, "proto": proto or "udp",
        "family": 6 if ":" in src + dst else 4, "src_ip": src, "src_port": sport, "dst_ip": dst, "dst_port": dport,
        "dns_id": -1, "qr": False, "opcode": 0, "rcode": "", "aa": False, "tc": False, "rd": False, "ra": False, "qname": "",
        "qtype": "", "answers": "", "ancount": 0, "size": 0, "latency_ns": 0, "decoded": False,
        "verdict": verdict, "drop_reason": str(reason) if reason not in (None, "", 0, "DROP_REASON_UNKNOWN") else "",
        "src_name": pod_name(flow.get("source") or {}), "dst_name": pod_name(flow.get("destination") or {}),
    }


def l7_dns_row(flow: dict, ts_ns: int, node: str) -> tuple[dict, bool] | None:
    """A DNS proxy's REQUEST or RESPONSE as a row, and whether it is the response; None for another l7.type."""
    l7 = flow["l7"]
    kind = enum_name(l7.get("type"), L7_TYPES)
    if kind not in ("REQUEST", "RESPONSE"):
        return None
    response = kind == "RESPONSE"
    ingress = enum_name(field(flow, "traffic_direction"), DIRECTIONS) == "INGRESS"  # the proxy at the server's ingress
    local = flow.get("destination" if response != ingress else "source")
    local_sends = response == ingress
    row = base_row(flow, ts_ns, vantage_of(local, node), "OUTGOING" if local_sends else "HOST", "dns-proxy", "dns")
    record = l7["dns"] or {}
    rcode = int(record.get("rcode") or 0)
    row.update(qr=response, qname=qname_text(record.get("query")), qtype=",".join(record.get("qtypes") or []), decoded=True,
               rcode=dns.rcode.to_text(rcode) if response else "", answers=answers_text(record) if response else "",
               ancount=len(record.get("ips") or []) + len(record.get("cnames") or []) if response else 0,
               latency_ns=int(field(l7, "latency_ns", 0) or 0) if response else 0)
    return row, response


def connection_drop_row(flow: dict, ts_ns: int, node: str) -> dict | None:
    """A datapath flow on another port, DROPPED, as a `conn-drop` row at the pod that sent it (a connection a
    policy stopped, say to an address a lookup returned); None for any other verdict."""
    if enum_name(flow.get("verdict"), VERDICTS) != "DROPPED":
        return None
    ingress = enum_name(field(flow, "traffic_direction"), DIRECTIONS) == "INGRESS"
    local = flow.get("destination") if ingress else flow.get("source")
    return base_row(flow, ts_ns, vantage_of(local, node), "HOST" if ingress else "OUTGOING",
                    (flow.get("interface") or {}).get("name", "") or "datapath", "conn-drop")


def l3_l4_row(flow: dict, ts_ns: int, node: str, ports: frozenset[int]) -> dict | None:
    """A datapath flow on a DNS port as a `flow` row; a DROPPED one on another port as a `conn-drop` row; None
    for the rest."""
    proto, sport, dport = ports_of(flow)
    if not proto or not (sport in ports or dport in ports):
        return connection_drop_row(flow, ts_ns, node) if proto else None
    reply = field(flow, "is_reply")
    reply = (sport in ports and dport not in ports) if reply is None else bool(reply)
    point = enum_name(field(flow, "trace_observation_point"), OBSERVATION_POINTS)
    direction = enum_name(field(flow, "traffic_direction"), DIRECTIONS)
    if point == "TO_ENDPOINT":
        local, pkt_type = flow.get("destination"), "HOST"
    elif point in ("FROM_ENDPOINT", "TO_PROXY"):
        local, pkt_type = flow.get("source"), "OUTGOING"
    elif point not in ("", "UNKNOWN_POINT"):
        local, pkt_type = None, "OUTGOING" if point.startswith("TO_") else "HOST"
    elif direction in ("EGRESS", "INGRESS"):  # policy verdicts and drops: where the rule was enforced
        local, pkt_type = (flow.get("source"), "OUTGOING") if direction == "EGRESS" else (flow.get("destination"), "HOST")
    else:
        local, pkt_type = None, ""
    interface = (flow.get("interface") or {}).get("name", "")
    row = base_row(flow, ts_ns, vantage_of(local, node), pkt_type, interface or point.lower().replace("_", "-"), "flow")
    row["qr"] = reply
    return row


def flow_of(record: dict, stats: Counter) -> tuple[dict, str, object] | None:
    """(flow, node name, time) of a GetFlowsResponse or a bare Flow; None (counted) for other records."""
    flow = record.get("flow")
    if isinstance(flow, dict):
        return flow, field(record, "node_name") or field(flow, "node_name", ""), flow.get("time") or record.get("time")
    if len(FLOW_FIELDS & record.keys()) >= 2:
        return record, field(record, "node_name", ""), record.get("time")
    kind = next((k for k in RESPONSE_KINDS if field(record, k) is not None), "other")
    stats["non_flow_records"] += 1
    stats[f"records_{kind}"] += 1
    if kind == "lost_events":
        stats["events_lost"] += int(field(field(record, "lost_events"), "num_events_lost", 0) or 0)
    return None


def row_of_flow(flow: dict, node: str, when, ports: frozenset[int], stats: Counter) -> tuple[dict, bool | None] | None:
    """The row of one flow and, for L7 DNS, whether it is a response (None for an L3/L4 row); None, counted,
    when the flow is not one this table holds."""
    kind = enum_name(flow.get("Type"), FLOW_TYPES)
    ts_ns = time_ns(when)
    if kind == "L7":
        if not isinstance(flow.get("l7"), dict) or "dns" not in flow["l7"]:
            stats["l7_not_dns"] += 1
            return None
        made = l7_dns_row(flow, ts_ns, node)
        if made is None:
            stats["l7_dns_other"] += 1
            return None
        stats["l7_dns_responses" if made[1] else "l7_dns_requests"] += 1
        return made
    if kind == "L3_L4":
        row = l3_l4_row(flow, ts_ns, node, ports)
        stats["l3_l4_other_port" if row is None or row["kind"] == "conn-drop" else "l3_l4_dns_port"] += 1
        stats["connection_drops"] += row is not None and row["kind"] == "conn-drop"
        return None if row is None else (row, None)
    stats[f"type_{kind or 'missing'}"] += 1
    return None


def pair_requests(rows: list[dict], responses: list[bool | None], nodes: list[str], stats: Counter) -> None:
    """Give each REQUEST and the RESPONSE that answers it one synthetic dns_id (rows in time order); a
    response's latency, when the proxy gave none, is the time since its request."""
    pending: dict[tuple, deque] = {}
    next_id = SYNTHETIC_ID_BASE
    for index, (row, response) in enumerate(zip(rows, responses)):
        if response is None:
            continue
        client = (row["dst_ip"], row["dst_port"]) if response else (row["src_ip"], row["src_port"])
        key = (nodes[index], *client, row["proto"], row["qname"], row["qtype"])
        waiting = pending.setdefault(key, deque())
        if not response:
            row["dns_id"], next_id = next_id, next_id + 1
            waiting.append(index)
            continue
        if waiting:
            request = rows[waiting.popleft()]
            row["dns_id"] = request["dns_id"]
            row["latency_ns"] = row["latency_ns"] or max(row["ts_ns"] - request["ts_ns"], 0)
            stats["l7_dns_pairs"] += 1
        else:
            row["dns_id"], next_id = next_id, next_id + 1
            stats["responses_without_request"] += 1
    stats["requests_without_response"] += sum(len(waiting) for waiting in pending.values())


def lines_of(path: Path):
    """The file's lines one at a time (a file of a million flows is never held whole)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        yield from lines


def read_line(number: int, line: str, ports: frozenset[int], stats: Counter, bad_lines: list[int], bad_flows: list[int],
              made: list) -> None:
    """Count one line and, when it is a flow this table holds, add its row to `made`."""
    stats["lines"] += 1
    if not line.strip():
        stats["blank_lines"] += 1
        return
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        stats["unparsed_lines"] += 1
        bad_lines.append(number)
        return
    stats["records"] += 1
    found = flow_of(record, stats)
    if found is None:
        return
    stats["flows"] += 1
    flow, node, when = found
    try:
        result = row_of_flow(flow, str(node or ""), when, ports, stats)
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of the wrong type, or no time
        stats["bad_flows"] += 1
        bad_flows.append(number)
        stats.setdefault("bad_flow_error", f"line {number}: {err}")
        return
    if result is not None:
        made.append((result[0]["ts_ns"], result[0], result[1], str(node or "")))


def read_hubble_json(path: str | Path, ports=(53,)) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of one `hubble observe -o json` (or jsonpb) file, and what was counted."""
    path = Path(path)
    try:
        return read_hubble_lines(lines_of(path), str(path), ports)
    except OSError as err:
        raise EventsError(f"{path}: cannot read: {err.strerror}") from None


def read_hubble_lines(lines: Iterable[str], source: str, ports=(53,), require_flows: bool = True) -> tuple[pd.DataFrame, dict]:
    """The packet-event table of `hubble observe -o json` lines (a file's, or what `trace --hubble` read
    from the agents so far), and what was counted; `source` names them in errors. With `require_flows`, an
    EventsError when there were records but not one flow (not Hubble's output)."""
    ports = frozenset(ports or (53,))
    stats: Counter = Counter()
    bad_lines: list[int] = []
    bad_flows: list[int] = []
    made: list[tuple[int, dict, bool | None, str]] = []
    for number, line in enumerate(lines, 1):
        read_line(number, line, ports, stats, bad_lines, bad_flows, made)
    if require_flows and not stats["flows"] and (bad_lines or stats["records"]):
        shown = ", ".join(map(str, bad_lines[:SHOWN_BAD_LINES]))
        raise EventsError(f"{source}: no Hubble flow found ({stats['records']} JSON records"
                          + (f"; lines that are not JSON objects: {shown}" if shown else "")
                          + "); expected the output of `hubble observe -o json` (or -o jsonpb): one flow per line")
    made.sort(key=lambda item: item[0])
    rows, responses, nodes = [m[1] for m in made], [m[2] for m in made], [m[3] for m in made]
    pair_requests(rows, responses, nodes, stats)
    result = dict(stats)
    if bad_lines:
        result["unparsed_line_numbers"] = bad_lines[:SHOWN_BAD_LINES]
    if bad_flows:
        result["bad_flow_line_numbers"] = bad_flows[:SHOWN_BAD_LINES]
    drops = Counter(row["drop_reason"] or "unknown" for row in rows if row["verdict"] == "DROPPED")
    result["dropped"] = sum(drops.values())
    result["dropped_by_reason"] = dict(drops)
    result["warnings"] = [WARNING] if stats["l7_dns_requests"] or stats["l7_dns_responses"] else []
    result["nodes"] = sorted({n for n in nodes if n})
    frame = pd.DataFrame(rows, columns=list(events.COLUMNS)) if rows else events.empty_events()
    return events.conform(frame.astype({"netns": np.uint64})), result
