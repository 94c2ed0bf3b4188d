"""Evidence people already have, read into one packet-event table: pcap/pcapng files, Inspektor
Gadget JSON, dnstap and Hubble flows, in any mix.

    frame, stats = read_evidence(pcaps=[("pod/demo/mypod", "mypod.pcap"), (None, "node.pcapng")],
                                 ig_json=["trace.json"], dnstap=[(None, "coredns-0.fstrm")],
                                 hubble_json=["flows.json"], ports=(53,))

The rows of every file are concatenated and sorted by time; categoricals are unified by
`events.conform`. `stats` accounts for every packet, line and frame: per file under
`files` (each reader's own counters), and summed per kind of input as `pcap_*`, `ig_*`, `dnstap_*`
and `hubble_*`; `decode_errors` totals the messages that did not decode, as the capture's does;
`warnings` gathers what readers could not settle (Hubble's missing DNS id), once each.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from dnscorrelate import events
from dnscorrelate.sources.naming import split_vantage_spec

DEFAULT_PORTS = (53,)
DNSTAP_TYPES = [f"{role}_{leg}" for role in ("CLIENT", "FORWARDER", "RESOLVER", "AUTH", "STUB", "TOOL", "UPDATE")
                for leg in ("QUERY", "RESPONSE")]


def named(items: Iterable[str | tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """(vantage or None, path) pairs from `VANTAGE=FILE` strings or pairs."""
    return [item if isinstance(item, tuple) else split_vantage_spec(str(item)) for item in items]


def add_totals(totals: dict, prefix: str, stats: dict) -> None:
    for key, value in stats.items():
        if isinstance(value, int) and not isinstance(value, bool):
            totals[f"{prefix}_{key}"] = totals.get(f"{prefix}_{key}", 0) + value


def read_evidence(pcaps: Iterable = (), ig_json: Iterable = (), dnstap: Iterable = (),
                  ports: Iterable[int] = DEFAULT_PORTS, hubble_json: Iterable = ()) -> tuple[pd.DataFrame, dict]:
    """One events table from every input, and counters that account for all of them."""
    from dnscorrelate.sources.dnstap import read_dnstap
    from dnscorrelate.sources.hubble import read_hubble_json
    from dnscorrelate.sources.ig import read_ig_json
    from dnscorrelate.sources.pcap import read_pcap

    ports = tuple(ports) or DEFAULT_PORTS
    frames: list[pd.DataFrame] = []
    stats: dict = {"files": {}}
    readers = [("pcap", vantage, path, lambda v, p: read_pcap(p, v, ports)) for vantage, path in named(pcaps)]
    readers += [("ig", None, str(path), lambda v, p: read_ig_json(p)) for path in ig_json]
    readers += [("dnstap", vantage, path, lambda v, p: read_dnstap(p, v)) for vantage, path in named(dnstap)]
    readers += [("hubble", None, str(path), lambda v, p: read_hubble_json(p, ports)) for path in hubble_json]
    for kind, vantage, path, read in readers:
        frame, counts = read(vantage, path)
        frames.append(frame)
        stats["files"][str(path)] = {"kind": kind, **({"vantage": vantage} if vantage else {}), "events": len(frame), **counts}
        add_totals(stats, kind, counts)
        stats.setdefault("warnings", []).extend(w for w in counts.get("warnings", []) if w not in stats["warnings"])
    frame = events.concat(frames)
    stats["events"] = len(frame)
    stats["decode_errors"] = int((~frame["decoded"] & (frame["kind"] == "dns")).sum()) if len(frame) else 0
    return frame, stats


def evidence_line(stats: dict) -> str:
    """One line for people: what was read from each kind of input, and what could not be used."""
    parts = [f"events={stats.get('events', 0)}"]
    keys = {
        "pcap": ["packets", "dns_messages", "packets_not_dns", "packets_non_ip", "packets_bad_header", "packets_ip_fragment",
                 "truncated", "bad_checksum", "undecodable", "tcp_bytes_unreassembled", "file_truncated_bytes"],
        "ig": ["lines", "dns_events", "unparsed_lines", "non_event_records", "bad_records", "no_wall_time"],
        "dnstap": ["frames", "frames_mapped", *(t.lower() for t in DNSTAP_TYPES), "embedded_queries", "no_message", "not_messages",
                   "bad_frames", "bad_address", "type_unknown", "undecodable", "truncated_bytes"],
        "hubble": ["lines", "flows", "l7_dns_requests", "l7_dns_responses", "l7_dns_pairs", "l3_l4_dns_port", "dropped",
                   "requests_without_response", "responses_without_request", "l3_l4_other_port", "l7_not_dns", "l7_dns_other",
                   "non_flow_records", "events_lost", "blank_lines", "unparsed_lines", "bad_flows"],
    }
    for kind, names in keys.items():
        if any(f.get("kind") == kind for f in stats.get("files", {}).values()):
            shown = [f"{kind}_{n}={stats.get(f'{kind}_{n}', 0)}" for n in names if stats.get(f"{kind}_{n}", 0) or n in names[:2]]
            parts += shown
    parts += [f"{key}={stats[key]}" for key in sorted(stats) if key.startswith("hubble_type_")]
    return "  ".join(parts)
