"""The packet-event table: one row per DNS packet per vantage point, one schema for every source.

Sources (eBPF capture today; pcap, dnstap, Inspektor Gadget later) produce it;
the correlator reads it and knows nothing of where it came from. Repeated
strings are pandas categoricals, so a million rows stay cheap.

| column      | type     | meaning |
| ----------- | -------- | ------- |
| ts_ns       | int64    | wall-clock time, ns since the epoch (UTC), converted once per capture |
| netns       | uint64   | network namespace inode |
| vantage     | category | who saw it: `demo/mypod`, `node-0`, `kube-system/coredns-0`, `upstream` |
| role        | category | pod, node, coredns, upstream, other |
| ifindex     | int32    | interface index inside that namespace |
| ifname      | category | interface name (eth0, cbr0, veth…), when known |
| pkt_type    | category | HOST, BROADCAST, MULTICAST, OTHERHOST, OUTGOING, LOOPBACK |
| kind        | category | `dns`; `icmp-error` (an ICMP error quoting a DNS packet: the tuple is the quoted one's); `tcp-syn`, `tcp-synack`, `tcp-rst` (TCP connection set-up on a DNS port: no DNS fields) |
| icmp_type   | int16    | ICMP type of an icmp-error row, else -1 |
| icmp_code   | int16    | ICMP code of an icmp-error row, else -1 |
| proto       | category | udp, tcp |
| family      | int8     | 4 or 6 |
| src_ip, dst_ip     | category | addresses as seen at this vantage (before/after NAT) |
| src_port, dst_port | int32    | |
| dns_id      | int32    | DNS message id |
| qr          | bool     | True for a response |
| opcode      | int8     | |
| rcode       | category | NOERROR, NXDOMAIN, SERVFAIL, REFUSED, … (responses) |
| aa, tc, rd, ra | bool  | header flags |
| qname       | category | lower-case, with trailing dot; empty when it could not be decoded |
| qtype       | category | A, AAAA, SRV, … |
| answers     | category | answer records `TYPE value`, joined by `, ` (A, AAAA, CNAME, PTR, SRV, …) |
| ancount     | int16    | answer count from the header |
| size        | int32    | DNS message length in bytes (without TCP's length prefix) |
| latency_ns  | int64    | responses: time since this vantage first saw the query (matched in the kernel); 0 when it saw none |
| decoded     | bool     | whether the payload decoded as a DNS message |
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dnscorrelate.errors import EventsError  # noqa: F401 (re-exported)

CATEGORIES = ["vantage", "role", "ifname", "pkt_type", "kind", "proto", "src_ip", "dst_ip", "rcode", "qname", "qtype", "answers"]

COLUMNS: dict[str, str] = {
    "ts_ns": "int64",
    "netns": "uint64",
    "vantage": "category",
    "role": "category",
    "ifindex": "int32",
    "ifname": "category",
    "pkt_type": "category",
    "kind": "category",
    "icmp_type": "int16",
    "icmp_code": "int16",
    "proto": "category",
    "family": "int8",
    "src_ip": "category",
    "src_port": "int32",
    "dst_ip": "category",
    "dst_port": "int32",
    "dns_id": "int32",
    "qr": "bool",
    "opcode": "int8",
    "rcode": "category",
    "aa": "bool",
    "tc": "bool",
    "rd": "bool",
    "ra": "bool",
    "qname": "category",
    "qtype": "category",
    "answers": "category",
    "ancount": "int16",
    "size": "int32",
    "latency_ns": "int64",
    "decoded": "bool",
}

PKT_TYPES = ["HOST", "BROADCAST", "MULTICAST", "OTHERHOST", "OUTGOING", "LOOPBACK", "USER", "KERNEL"]


def empty_events() -> pd.DataFrame:
    return conform(pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()}))


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with exactly the schema's columns, in order, with the schema's dtypes."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise EventsError(f"events table lacks columns: {', '.join(missing)}")
    out = frame[list(COLUMNS)]  # a new frame: the caller's is never changed
    for name, dtype in COLUMNS.items():
        if dtype == "category":
            if not isinstance(out[name].dtype, pd.CategoricalDtype):
                out[name] = out[name].astype(object).where(out[name].notna(), "").astype(str).astype("category")
        elif out[name].dtype != np.dtype(dtype):
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


STATS_KEY = b"dnscorrelate.stats"


def save(frame: pd.DataFrame, path: str | Path, stats: dict | None = None) -> None:
    """Write events as Parquet (categoricals kept), with the capture's counters in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(conform(frame), preserve_index=False)
    metadata = {**(table.schema.metadata or {}), STATS_KEY: json.dumps(stats or {}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def to_json(frame: pd.DataFrame, stats: dict | None = None) -> str:
    """One JSON document: {"events": [...], "stats": {...}}."""
    records = json.loads(conform(frame).to_json(orient="records"))
    return json.dumps({"events": records, "stats": stats or {}})


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Events and capture counters from a file written by `save` (Parquet) or `capture -o json` (JSON)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            stats = json.loads((table.schema.metadata or {}).get(STATS_KEY, b"{}"))
            return conform(table.to_pandas()), stats
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or not isinstance(document.get("events"), list):
            raise ValueError('expected a JSON object with an "events" list')
        return conform(pd.DataFrame.from_records(document["events"], columns=list(COLUMNS))), document.get("stats", {})
    except (OSError, ValueError) as err:
        raise EventsError(f"{path}: cannot read events: {err}") from None
    except EventsError as err:
        raise EventsError(f"{path}: {err}") from None
