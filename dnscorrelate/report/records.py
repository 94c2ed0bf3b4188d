"""Correlations as plain data: the JSON of `correlate -o json`, `run -o json` and `trace -o json`."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
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


def sighting_records(sightings: pd.DataFrame) -> dict[int, list[dict]]:
    """Each trace's sightings in time order, as dicts."""
    if sightings.empty:
        return {}
    frame = sightings[[c for c in schema.names(schema.EVENTS + schema.SIGHTING_FIELDS, schema.JSON) if c in sightings.columns] + ["trace_id"]].copy()
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


def trace_records(correlation: Correlation, with_sightings: bool = True) -> list[dict]:
    """Every trace as a dict: who asked what, where it went, how long each segment took, what CoreDNS said."""
    sightings = sighting_records(correlation.sightings) if with_sightings else {}
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
        if with_sightings:
            record["hops"] = sightings.get(trace_id, [])  # the JSON keeps its first name for a trace's sightings
        records.append(record)
    return records


def analysis_record(analysis: Analysis, with_sightings: bool = True) -> dict:
    """`correlate -o json`: every trace, every finding, the correlation's counts."""
    return {
        "traces": trace_records(analysis.correlation, with_sightings),
        "findings": [f.to_dict() for f in analysis.findings],
        "stats": analysis.correlation.stats,
        "warnings": analysis.correlation.warnings,
    }


def scenario_record(result) -> dict:
    """`run -o json`: one scenario's verdict, findings, traces (without sightings), counts and timings."""
    findings = [f.to_dict() for f in result.analysis.findings] if result.analysis else []
    stats = result.analysis.correlation.stats if result.analysis else {}
    return {
        "name": result.scenario.name,
        "passed": result.passed,
        "expected": result.scenario.expect.model_dump(),
        "missing": result.missing,
        "error": result.error or None,
        "findings": [{k: f[k] for k in ("code", "hop", "summary", "evidence")} for f in findings],
        "traces": trace_records(result.analysis.correlation, with_sightings=False) if result.analysis else [],
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


def chunk_parts(correlation: Correlation, with_sightings: bool = True, size: int = TRACES_PER_CHUNK, max_sightings: int | None = None):
    """The correlation `size` traces at a time (fewer when `max_sightings` is given: a part ends once it holds that
    many sightings), each part with its sightings and upstream exchanges. Traces are in trace_id order; sightings and
    upstream exchanges are cut out by trace_id ranges."""
    traces = correlation.traces
    sightings = correlation.sightings[correlation.sightings["trace_id"].notna() & (correlation.sightings["trace_id"] >= 0)] if with_sightings else correlation.sightings.iloc[0:0]
    sightings = sightings.sort_values("trace_id", kind="stable")  # time order kept within a trace
    upstream = correlation.upstream.sort_values("trace_id", kind="stable")
    sighting_ids, upstream_ids = sightings["trace_id"].to_numpy(), upstream["trace_id"].to_numpy()
    first_sighting = sighting_ids.searchsorted(traces["trace_id"].to_numpy(), "left")  # each trace's first sighting's row (ascending)
    start = 0
    while start < len(traces):
        end = min(len(traces), start + size)
        if max_sightings:
            end = max(start + 1, min(end, int(first_sighting.searchsorted(first_sighting[start] + max_sightings, "left"))))
        part = traces.iloc[start:end]
        low, high = part["trace_id"].min(), part["trace_id"].max()
        cut = lambda ids: slice(ids.searchsorted(low, "left"), ids.searchsorted(high, "right"))  # noqa: E731
        yield replace(correlation, traces=part, sightings=sightings.iloc[cut(sighting_ids)], upstream=upstream.iloc[cut(upstream_ids)])
        start = end


def trace_record_chunks(correlation: Correlation, with_sightings: bool = True, size: int = TRACES_PER_CHUNK):
    """trace_records, `size` traces at a time: a million sightings never become a million dicts at once."""
    for part in chunk_parts(correlation, with_sightings, size):
        yield trace_records(part, with_sightings)


# --- -o json, fast: the text of json.dumps(trace_records(...), indent=1), column by column ------------------
#
# json.dumps with an indent runs Python's pure encoder, a call per value: at a million sightings that was most of
# `correlate -o json`'s minutes. Here each column of a part is encoded at once (a distinct string once), and
# each sighting and trace is one %-format of its encoded values into the layout json.dumps(indent=1) gives, two
# spaces in (textwrap.indent). tests/unit/test_json_stream.py and test_bounded_memory.py hold it to json.dumps's text.

_string = json.encoder.encode_basestring_ascii  # what json.dumps (ensure_ascii) writes for a str


def _scalar(value) -> str:
    """json.dumps(value) for a JSON scalar, as the encoder writes it (float.__repr__, NaN, Infinity)."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return "Infinity" if value == math.inf else "-Infinity" if value == -math.inf else float.__repr__(value)
    return json.dumps(value)


def _each(values: list, encode) -> list[str]:
    """encode(v) for every value; a string once per distinct string (other values are not cached: 1, 1.0
    and True are equal keys, and their texts differ)."""
    seen: dict[str, str] = {}
    out = []
    for value in values:
        if type(value) is str:
            text = seen.get(value)
            if text is None:
                text = seen[value] = encode(value)
        else:
            text = encode(value)
        out.append(text)
    return out


def _encoded(column: pd.Series, how: str = "clean") -> list[str]:
    """Each row's JSON text as trace_records/sighting_records write it: `raw` (the value as to_dict gives it),
    `clean` (through clean()), `millis` (through millis()), `str` (a categorical made str first, as
    sighting_records does)."""
    dtype = column.dtype
    if how in ("raw", "clean") and dtype.kind == "b" and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return np.where(column.to_numpy(), "true", "false").tolist()
    if how in ("raw", "clean") and dtype.kind in "iu" and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return column.to_numpy().astype(str).tolist()
    if isinstance(dtype, pd.CategoricalDtype):
        if how == "str":
            names = column.cat.categories.astype(str).tolist()
            categories = [_scalar(n) for n in names] + [_scalar("nan")]
        else:
            encode = _scalar if how == "raw" else (lambda v: _scalar(clean(v)))
            categories = [encode(v) for v in column.cat.categories.tolist()] + [encode(np.nan)]
        return np.array(categories, dtype=object)[column.cat.codes.to_numpy()].tolist()
    values = column.tolist()
    if how == "raw":
        return _each(values, lambda v: _scalar(v.item() if isinstance(v, np.generic) else v))
    if how == "millis":
        return _each(values, lambda v: _scalar(millis(v)))
    return _each(values, lambda v: _scalar(clean(v)))


def _truthy(column: pd.Series) -> np.ndarray:
    """bool(value) for each row, as `if t[...]` and `bool(t[...])` read to_dict's values."""
    return np.fromiter((bool(v) for v in column.tolist()), dtype=bool, count=len(column))


def _layout(keys: list[str], indent: int) -> str:
    """A %-template of one JSON object with these keys, as json.dumps(indent=1) lays it out `indent` spaces in."""
    inner = " " * (indent + 1)
    return "{\n" + ",\n".join(f"{inner}{_string(k)}: %s" for k in keys) + "\n" + " " * indent + "}"


def _listing(items: list[str], indent: int) -> str:
    """A JSON list of already-encoded items (each laid out `indent` + 1 spaces in), closing `indent` in."""
    if not items:
        return "[]"
    inner = " " * (indent + 1)
    return "[\n" + ",\n".join(inner + item for item in items) + "\n" + " " * indent + "]"


def _grouped(texts: list[str], ids: np.ndarray, wanted: np.ndarray, indent: int) -> list[str]:
    """For each trace id in `wanted`, the JSON list of its items (`texts`, whose trace ids `ids` are sorted)."""
    left, right = ids.searchsorted(wanted, "left"), ids.searchsorted(wanted, "right")
    return [_listing(texts[lo:hi], indent) for lo, hi in zip(left.tolist(), right.tolist())]


SIGHTING_KEYS_EXTRA = "latency_ms"


def _sighting_texts(sightings: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Each sighting's JSON object under `hops` (sighting_records's keys and values), and the sightings' trace ids."""
    keys = [c for c in schema.names(schema.EVENTS + schema.SIGHTING_FIELDS, schema.JSON) if c in sightings.columns and c not in ("trace_id", "latency_ns")]
    columns = [_encoded(sightings[k], "str" if isinstance(sightings[k].dtype, pd.CategoricalDtype) else "clean") for k in keys]
    columns.append(_encoded((sightings["latency_ns"] / 1e6).round(3)))
    template = _layout([*keys, SIGHTING_KEYS_EXTRA], 4)
    return [template % row for row in zip(*columns)], sightings["trace_id"].to_numpy()


UPSTREAM_KEYS = [("from", "from", "raw"), ("server", "server", "raw"), ("address", "server_addr", "raw"), ("dns_id", "dns_id", "clean"),
                 ("proto", "proto", "raw"), ("rcode", "rcode", "raw"), ("answered", "answered", "bool"), ("rtt_ms", "rtt_ns", "millis"),
                 ("ambiguous", "ambiguous", "bool"), ("depth", "depth", "clean")]


def _upstream_texts(upstream: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    columns = [np.where(_truthy(upstream[c]), "true", "false").tolist() if how == "bool" else _encoded(upstream[c], how) for _, c, how in UPSTREAM_KEYS]
    template = _layout([k for k, _, _ in UPSTREAM_KEYS], 4)
    return [template % row for row in zip(*columns)], upstream["trace_id"].to_numpy()


SEGMENTS = [("to_server", "to_server_ns"), ("server", "server_ns"), ("server_self", "server_self_ns"), ("upstream_rtt", "upstream_rtt_ns"),
            ("return", "return_ns"), ("total", "total_ns"), ("kernel_at_client", "client_latency_ns")]
TRACE_KEYS = ["id", "client", "dns_id", "proto", "qname", "qtype", "outcome", "rcode", "answers", "server", "replica", "served_from", "purpose",
              "dnat", "reached", "segments_ms", "upstream", "log", "error", "icmp", "ambiguous"]


def trace_texts(correlation: Correlation, with_sightings: bool = True) -> list[str]:
    """Each trace's text in `correlate -o json`: json.dumps(record, indent=1) of trace_records's record,
    indented two spaces, built column by column."""
    t = correlation.traces
    if t.empty:
        return []
    ids = t["trace_id"].to_numpy()
    enc = lambda name, how="raw": _encoded(t[name], how)  # noqa: E731
    client = _layout(["ip", "port", "vantage"], 3)
    clients = [client % row for row in zip(enc("client_ip"), enc("client_port", "clean"), enc("client_vantage"))]
    dnat = _layout(["to", "at"], 3)
    dnats = [dnat % (to, at) if yes else "null" for yes, to, at in zip(_truthy(t["dnat_to"]).tolist(), enc("dnat_to"), enc("dnat_at"))]
    segments = _layout([k for k, _ in SEGMENTS], 3)
    segment_texts = [segments % row for row in zip(*(enc(c, "millis") for _, c in SEGMENTS))]
    upstream_texts, upstream_ids = _upstream_texts(correlation.upstream)
    upstreams = _grouped(upstream_texts, upstream_ids, ids, 3)
    log = _layout(["rcode", "duration_ms", "ref"], 3)
    durations = _each(t["log_duration_s"].tolist(), lambda v: "null" if clean(v) is None else _scalar(round(v * 1e3, 3)))
    logs = [log % (rcode, duration, ref) if yes else "null"
            for yes, rcode, duration, ref in zip(_truthy(t["log_ref"]).tolist(), enc("log_rcode"), durations, enc("log_ref"))]
    or_null = lambda name: [text if yes else "null" for yes, text in zip(_truthy(t[name]).tolist(), enc(name))]  # noqa: E731  (`x or None`)
    columns = [_encoded(pd.Series(ids), "clean"), clients, enc("dns_id", "clean"), enc("proto"), enc("qname"), enc("qtype"), enc("outcome"),
               enc("rcode"), enc("answers"), enc("server"), enc("replica"), enc("served_from"), enc("purpose"), dnats, enc("reached"),
               segment_texts, upstreams, logs, or_null("error"), or_null("icmp"), np.where(_truthy(t["ambiguous"]), "true", "false").tolist()]
    keys = list(TRACE_KEYS)
    if with_sightings:
        sighting_texts, sighting_ids = _sighting_texts(correlation.sightings) if len(correlation.sightings) else ([], np.array([], dtype=np.int64))
        columns.append(_grouped(sighting_texts, sighting_ids, ids, 3))
        keys.append("hops")
    template = "  " + _layout(keys, 2)
    return [template % row for row in zip(*columns)]


SIGHTINGS_PER_CHUNK = 20_000


def write_analysis_json(analysis: Analysis, out, with_sightings: bool = True, size: int = TRACES_PER_CHUNK, max_sightings: int = SIGHTINGS_PER_CHUNK) -> None:
    """`json.dumps(analysis_record(analysis), indent=1)`, written to `out` part by part (`size` traces, fewer
    when they hold more than `max_sightings` sightings): the same text, without the whole document (several GB at a
    million packets) in memory at once."""
    rest = json.dumps({**analysis_record(replace(analysis, correlation=replace(analysis.correlation, traces=analysis.correlation.traces.iloc[0:0])),
                                         with_sightings=False)}, indent=1)
    opening = '{\n "traces": ['
    assert rest.startswith(opening + "]"), rest[:40]
    out.write(opening)
    written = 0
    for part in chunk_parts(analysis.correlation, with_sightings, size, max_sightings):
        texts = trace_texts(part, with_sightings)
        if texts:
            out.write((",\n" if written else "\n") + ",\n".join(texts))
            written += len(texts)
    out.write("\n ]" if written else "]")
    out.write(rest[len(opening) + 1:])
    out.write("\n")
