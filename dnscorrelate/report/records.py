"""Correlations as plain data: the JSON of `correlate -o json`, `run -o json` and `trace -o json`."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import replace

import pandas as pd

from dnscorrelate import schema
from dnscorrelate.correlate import Correlation
from dnscorrelate.diagnose import Analysis


def clean(value):
    """JSON-safe scalars: NA and NaN become None, numpy numbers become Python ones."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def millis(value) -> float | None:
    value = clean(value)
    return None if value is None else round(value / 1e6, 3)


def hop_records(hops: pd.DataFrame) -> dict[int, list[dict]]:
    """Each trace's hops in time order, as dicts."""
    if hops.empty:
        return {}
    frame = hops[[c for c in schema.names(schema.EVENTS + schema.HOP_FIELDS, schema.JSON) if c in hops.columns] + ["trace_id"]].copy()
    frame = frame[frame["trace_id"].notna() & (frame["trace_id"] >= 0)]
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    frame["latency_ms"] = (frame["latency_ns"] / 1e6).round(3)
    frame = frame.drop(columns=["latency_ns"])
    out: dict[int, list[dict]] = {}
    for trace_id, group in frame.groupby("trace_id", sort=False):
        rows = group.drop(columns=["trace_id"]).to_dict("records")
        out[int(trace_id)] = [{k: clean(v) for k, v in row.items()} for row in rows]
    return out


def trace_records(correlation: Correlation, with_hops: bool = True) -> list[dict]:
    """Every trace as a dict: who asked what, where it went, how long each segment took, what CoreDNS said."""
    hops = hop_records(correlation.hops) if with_hops else {}
    upstream = {}
    upstream_fields = schema.names(schema.UPSTREAM, schema.JSON)
    for trace_id, group in correlation.upstream.groupby("trace_id"):
        upstream[int(trace_id)] = [
            {"from": r["from"], "server": r["server"], "address": r["server_addr"], "dns_id": clean(r["dns_id"]), "proto": r["proto"],
             "rcode": r["rcode"], "answered": bool(r["answered"]), "rtt_ms": millis(r["rtt_ns"]), "ambiguous": bool(r["ambiguous"]), "depth": clean(r["depth"])}
            for r in group[upstream_fields].to_dict("records")
        ]
    records = []
    for t in correlation.traces[schema.names(schema.TRACES, schema.JSON)].to_dict("records"):
        trace_id = int(t["trace_id"])
        record = {
            "id": trace_id,
            "client": {"ip": t["client_ip"], "port": clean(t["client_port"]), "vantage": t["client_vantage"]},
            "dns_id": clean(t["dns_id"]), "proto": t["proto"], "qname": t["qname"], "qtype": t["qtype"],
            "outcome": t["outcome"], "rcode": t["rcode"], "answers": t["answers"],
            "server": t["server"], "replica": t["replica"], "served_from": t["served_from"], "purpose": t["purpose"],
            "dnat": {"to": t["dnat_to"], "at": t["dnat_at"]} if t["dnat_to"] else None,
            "reached": t["reached"],
            "segments_ms": {
                "to_server": millis(t["to_server_ns"]), "server": millis(t["server_ns"]), "server_self": millis(t["server_self_ns"]),
                "upstream_rtt": millis(t["upstream_rtt_ns"]), "return": millis(t["return_ns"]), "total": millis(t["total_ns"]),
                "kernel_at_client": millis(t["client_latency_ns"]),
            },
            "upstream": upstream.get(trace_id, []),
            "log": {"rcode": t["log_rcode"], "duration_ms": None if clean(t["log_duration_s"]) is None else round(t["log_duration_s"] * 1e3, 3), "ref": t["log_ref"]} if t["log_ref"] else None,
            "error": t["error"] or None,
            "icmp": t["icmp"] or None,
            "ambiguous": bool(t["ambiguous"]),
        }
        if with_hops:
            record["hops"] = hops.get(trace_id, [])
        records.append(record)
    return records


def analysis_record(analysis: Analysis, with_hops: bool = True) -> dict:
    """`correlate -o json`: every trace, every finding, the correlation's counts."""
    return {
        "traces": trace_records(analysis.correlation, with_hops),
        "findings": [f.to_dict() for f in analysis.findings],
        "stats": analysis.correlation.stats,
        "warnings": analysis.correlation.warnings,
    }


def scenario_record(result) -> dict:
    """`run -o json`: one scenario's verdict, findings, traces (without hops), counts and timings."""
    findings = [f.to_dict() for f in result.analysis.findings] if result.analysis else []
    stats = result.analysis.correlation.stats if result.analysis else {}
    return {
        "name": result.scenario.name,
        "passed": result.passed,
        "expected": result.scenario.expect.model_dump(),
        "missing": result.missing,
        "error": result.error or None,
        "findings": [{k: f[k] for k in ("code", "hop", "summary", "evidence")} for f in findings],
        "traces": trace_records(result.analysis.correlation, with_hops=False) if result.analysis else [],
        "stats": {
            "queries": len(result.clients),
            "answered": sum(c.answered for c in result.clients),
            "lost_samples": int(result.capture_stats.get("lost_samples", 0)),
            "unparsed_lines": int(stats.get("unparsed_lines", 0)),
            "packets": int(stats.get("packets", 0)),
            "traces": int(stats.get("traces", 0)),
            "ambiguous": int(stats.get("ambiguous", 0)),
        },
        "backend": result.backend,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "propagation_s": [[what, round(seconds, 3)] for what, seconds in result.propagation],
        "report": result.report or None,
    }


def json_line(record: dict, codes: list[str]) -> str:
    """`trace -o json`: one lookup's record and the codes of the findings about it, on one line."""
    return json.dumps({**record, "findings": codes})


TRACES_PER_CHUNK = 20_000


def trace_record_chunks(correlation: Correlation, with_hops: bool = True, size: int = TRACES_PER_CHUNK):
    """trace_records, `size` traces at a time: a million hops never become a million dicts at once.
    Traces are in trace_id order; hops and upstream exchanges are cut out by trace_id ranges."""
    traces = correlation.traces
    hops = correlation.hops[correlation.hops["trace_id"].notna() & (correlation.hops["trace_id"] >= 0)] if with_hops else correlation.hops.iloc[0:0]
    hops = hops.sort_values("trace_id", kind="stable")  # time order kept within a trace
    upstream = correlation.upstream.sort_values("trace_id", kind="stable")
    hop_ids, upstream_ids = hops["trace_id"].to_numpy(), upstream["trace_id"].to_numpy()
    for start in range(0, len(traces), size):
        part = traces.iloc[start:start + size]
        low, high = part["trace_id"].min(), part["trace_id"].max()
        cut = lambda ids: slice(ids.searchsorted(low, "left"), ids.searchsorted(high, "right"))  # noqa: E731
        yield trace_records(replace(correlation, traces=part, hops=hops.iloc[cut(hop_ids)], upstream=upstream.iloc[cut(upstream_ids)]),
                            with_hops)


def write_analysis_json(analysis: Analysis, out, with_hops: bool = True) -> None:
    """`json.dumps(analysis_record(analysis), indent=1)`, written to `out` trace by trace: the same text,
    without the whole document (several GB at a million packets) in memory at once."""
    rest = json.dumps({**analysis_record(replace(analysis, correlation=replace(analysis.correlation, traces=analysis.correlation.traces.iloc[0:0])),
                                         with_hops=False)}, indent=1)
    opening = '{\n "traces": ['
    assert rest.startswith(opening + "]"), rest[:40]
    out.write(opening)
    written = 0
    for records in trace_record_chunks(analysis.correlation, with_hops):
        for record in records:
            out.write((",\n" if written else "\n") + textwrap.indent(json.dumps(record, indent=1), "  "))
            written += 1
    out.write("\n ]" if written else "]")
    out.write(rest[len(opening) + 1:])
    out.write("\n")
