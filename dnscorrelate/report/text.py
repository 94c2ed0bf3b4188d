"""The terminal: tables (rich) and lines for packets, traces, findings, scenarios and counts.

The commands only print what these return. The packets, traces and findings
tables show the fields their schema table marks `table`, in declaration order.
"""

from __future__ import annotations

import time

import pandas as pd
from rich.table import Table
from rich.text import Text

from dnscorrelate import schema
from dnscorrelate.correlate.traces import OWN_PURPOSES
from dnscorrelate.report.terminal import printable


def clock(ts_ns: int, digits: int = 6) -> str:
    """HH:MM:SS with `digits` decimals (6: microseconds, 3: milliseconds), in local time."""
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{nanos // 10 ** (9 - digits):0{digits}d}"


def ms(value_ns, missing: str = "") -> str:
    """Nanoseconds as milliseconds with two decimals; `missing` for NA or NaN."""
    if value_ns is None or value_ns is pd.NA or (isinstance(value_ns, float) and value_ns != value_ns):
        return missing
    return f"{float(value_ns) / 1e6:.2f}"


def fields_table(title: str, fields: list[schema.Field], rows, cell) -> Table:
    """A table with a column per field (its title) and a row per item of `rows`, each cell `cell(field, row)`.
    Cells are Text, never markup: a name with brackets prints as itself, and rich skips parsing thousands of cells.
    Control characters in them (a query name, a log's text) are shown as escapes, never sent to the terminal."""
    table = Table(title=title, title_justify="left")
    for field in fields:
        table.add_column(field.title, overflow="fold")
    for row in rows:
        table.add_row(*(printable_cell(cell(field, row)) for field in fields))
    return table


def printable_cell(text: Text) -> Text:
    text.plain = printable(text.plain)
    return text


def event_cell(field: schema.Field, row) -> Text:
    """One packet's value of `field` for the terminal: local time, ip:port, the id in hex, Q/R or the ICMP error."""
    value = getattr(row, field.name)
    if field.name == "ts_ns":
        return Text(clock(value))
    if field.name in ("src_ip", "dst_ip"):
        return Text(f"{value}:{getattr(row, field.name.replace('_ip', '_port'))}")
    if field.name == "dns_id":
        return Text(f"{value:04x}")
    if field.name == "qr":
        return Text(f"ICMP {row.icmp_type}/{row.icmp_code}" if row.kind == "icmp-error" else "R" if value else "Q")
    if field.name == "latency_ns":
        return Text(f"{value / 1e6:.3f}ms" if value else "")
    return Text(str(value))


def events_table(frame: pd.DataFrame, title: str = "DNS packets") -> Table:
    """One row per packet per vantage point, like trace_dns, with the kernel-matched latency of responses."""
    return fields_table(title, schema.shown(schema.EVENTS, schema.TABLE), frame.itertuples(index=False), event_cell)


OUTCOME_STYLE = {"answered": "green", "timed-out": "red", "partial": "yellow"}


def trace_cell(field: schema.Field, t) -> Text:
    """One trace's value of `field` for the terminal: durations in ms, the client by vantage (else address)."""
    value = getattr(t, field.name)
    if field.name.endswith("_ns"):
        return Text(ms(value))
    if field.name == "client_vantage":
        return Text(value or t.client_ip)
    return Text(str(value), style=OUTCOME_STYLE.get(value, "") if field.name == "outcome" else "")


def traces_table(traces: pd.DataFrame, title: str = "traces", limit: int | None = 200) -> Table:
    """One row per client request, with per-segment latency in milliseconds (the first `limit`); CoreDNS's own
    queries (loop probes, health checks) are counted in the caption, not listed."""
    own = int(traces["purpose"].isin(OWN_PURPOSES).sum()) if "purpose" in traces else 0
    traces = traces[~traces["purpose"].isin(OWN_PURPOSES)] if own else traces
    shown = traces if limit is None else traces.head(limit)
    table = fields_table(title, schema.shown(schema.TRACES, schema.TABLE), shown.itertuples(index=False), trace_cell)
    captions = [f"{len(traces) - limit} more traces not shown"] if limit is not None and len(traces) > limit else []
    captions += [f"{own} of CoreDNS's own queries (loop probes, health checks) not listed"] if own else []
    if captions:
        table.caption = "; ".join(captions) + " (-o json has them all)"
    return table


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def finding_cell(field: schema.Field, finding) -> Text:
    """One finding's value of `field` for the terminal: the code coloured by severity, the first traces cited."""
    value = getattr(finding, field.name)
    if field.name == "evidence":
        refs = value.get("traces", [])
        return Text("traces " + ", ".join(map(str, refs[:6])) + (" …" if len(refs) > 6 else "") if refs else "")
    return Text(str(value), style=SEVERITY_STYLE.get(finding.severity, "") if field.name == "code" else "")


def findings_table(findings: list, title: str = "findings") -> Table:
    return fields_table(title, schema.shown(schema.FINDINGS, schema.TABLE), findings, finding_cell)


CORRELATION_COUNTS = ["packets", "log_lines", "log_records", "error_records", "log_other", "unparsed_lines", "traces", "own_queries", "upstream_exchanges", "ambiguous", "lost_samples",
                      "decode_errors", "log_records_unmatched", "icmp_unmatched", "log_lines_lost"]


def counts_line(stats: dict, keys: list[str]) -> str:
    return "  ".join(f"{k}={stats.get(k, 0)}" for k in keys)


def stats_line(stats: dict) -> str:
    return counts_line(stats, CORRELATION_COUNTS) + clocks_text(stats.get("clocks"))


def clocks_text(clocks: dict | None) -> str:
    """Each node's clock offset from the reference node's, and its bound, as the crossing lookups gave them."""
    if not clocks:
        return ""
    parts = [f"{node}={c['offset_ms']:+.3f}ms±{c['bound_ms']:.3f}" for node, c in clocks["nodes"].items() if node != clocks["reference"]]
    parts += [f"{node}=unplaced" for node in clocks.get("unplaced", [])]
    return f"  clocks(from {clocks['reference']}): " + " ".join(parts) + ("  clocks_contradict=1" if clocks.get("contradiction") else "")


def lab_status_tables(status: dict) -> list[Table]:
    """`lab status`: the lab's pods, Services with their endpoints, and DNS server processes."""
    pods = Table(title=f"lab {status['name']}: pods", title_justify="left")
    for col in ("POD", "IP", "NODE", "NETNS"):
        pods.add_column(col)
    for p in status["pods"]:
        pods.add_row(p["pod"], p["ip"], p["node"], p["netns"])
    services = Table(title="services", title_justify="left")
    for col in ("SERVICE", "TYPE", "CLUSTER-IP", "ENDPOINTS"):
        services.add_column(col)
    for s in status["services"]:
        services.add_row(s["service"], s["type"], s["cluster_ip"], ", ".join(s["endpoints"]) or "<none>")
    procs = Table(title="dns servers", title_justify="left")
    for col in ("ROLE", "PID", "NETNS", "RUNNING", "LOG"):
        procs.add_column(col)
    for p in status["processes"]:
        procs.add_row(p["role"], str(p["pid"]), p["netns"], "yes" if p["running"] else "[red]no[/]", p["log"])
    return [pods, services, procs]


def cluster_status_tables(status: dict) -> list[Table]:
    """`cluster status`: the nodes and the pods, as the API server reports them."""
    registry = f", registry {status['registry']}" if status.get("registry") else ""
    nodes = Table(title=f"cluster {status['name']} (context {status['context']}, kubeconfig {status['kubeconfig']}{registry}): nodes",
                  title_justify="left")
    for col in ("NODE", "IP", "POD-CIDR", "STATUS", "VERSION"):
        nodes.add_column(col)
    for n in status["nodes"]:
        nodes.add_row(n["name"], n["ip"], n["podCIDR"] or "", "Ready" if n["ready"] else "NotReady", n["version"])
    pods = Table(title="pods", title_justify="left")
    for col in ("NAMESPACE", "POD", "IP", "NODE", "PHASE"):
        pods.add_column(col)
    for p in status["pods"]:
        pods.add_row(p["namespace"], p["name"], p["ip"] or "", p["node"] or "", p["phase"] or "")
    return [nodes, pods]


CAPTURE_COUNTS = ["packets", "lost_samples", "decode_errors", "non_dns_packets", "non_ip_packets", "tcp_without_payload",
                  "truncated_headers", "tcp_segment_cut", "tcp_incomplete_bytes", "namespaces"]


DNSTAP_COUNTS = ["dnstap_frames", "dnstap_rows", "dnstap_outside_session", "dnstap_bad_frames", "dnstap_not_messages",
                 "dnstap_no_message", "dnstap_undecodable", "dnstap_forwarder_ids_without_packet"]


def capture_stats_line(stats: dict) -> str:
    """The capture's counters, and a session's dnstap counters when it read dnstap (a lab with `dnstap: true`)."""
    return counts_line(stats, CAPTURE_COUNTS + (DNSTAP_COUNTS if "dnstap_frames" in stats else []))


NODE_COUNTS = ["events", "records_received", "records_filtered", "lost_samples", "agent_dropped", "cli_dropped", "bad_records",
               "bad_frames", "namespaces"]


def node_lines(nodes: dict[str, dict]) -> list[str]:
    """One line per node whose node agent captured: what it sent, what arrived, what was lost and where
    (`lost_samples` counts the ring buffer's and the agent's drops together), and a stream cut short."""
    lines = []
    for node, stats in sorted(nodes.items()):
        state = "error: " + stats["error"] if stats.get("error") else ("stream cut short: loss after its last counters unknown"
                                                                       if stats.get("stream_cut") else "complete")
        tracer = f"tracer={stats['tracer']}  " if stats.get("tracer") else ""
        lines.append(f"node {node}: {tracer}" + counts_line(stats, NODE_COUNTS) + f"  ({state})")
        lines += [f"node {node}: bad frame {reason}" for reason in stats.get("bad_frame_reasons", [])]
    return lines


def unparsed_lines(unparsed: list[tuple[str, int, str]], limit: int = 20) -> list[str]:
    """The first `limit` log lines that could not be read, where they are, and how many more there were."""
    lines = [f"unparsed {source}:{line}: {text}" for source, line, text in unparsed[:limit]]
    if len(unparsed) > limit:
        lines.append(f"... {len(unparsed) - limit} more unparsed lines")
    return lines


def scenarios_table(results: list) -> Table:
    """One row per scenario run: verdict, what was expected and found, queries answered, time, report."""
    table = Table(title="scenarios", title_justify="left")
    for column in ("SCENARIO", "VERDICT", "EXPECTED", "FOUND", "QUERIES", "TIME", "REPORT"):
        table.add_column(column, overflow="fold")
    for r in results:
        found = ", ".join(f"{f.code}@{f.hop}" if f.hop else f.code for f in r.analysis.findings) if r.analysis else r.error
        verdict = "[green]pass[/]" if r.passed else f"[red]FAIL[/] {', '.join(r.missing)}"
        expected = ", ".join(r.scenario.expect.findings) + (f" @{r.scenario.expect.hop}" if r.scenario.expect.hop else "")
        answered = sum(c.answered for c in r.clients)
        table.add_row(r.scenario.name, verdict, expected, found, f"{answered}/{len(r.clients)}", f"{sum(r.timings.values()):.1f}s", r.report)
    return table


def lookups_line(traces: pd.DataFrame, who: str) -> str:
    """How many lookups `who` made, by response code, with the client's p50 and p99."""
    totals = traces["total_ns"].dropna().astype(float)
    rcodes = ", ".join(f"{k or 'none'} {v}" for k, v in traces["rcode"].value_counts().items())
    latency = f", p50 {ms(totals.quantile(0.5))} ms, p99 {ms(totals.quantile(0.99))} ms" if len(totals) else ""
    return f"{len(traces)} lookups from {who}: {rcodes or 'none'}{latency}"


def trace_line(t, codes: list[str]) -> str:
    """`trace pod/NAME`'s line for one lookup: when, what, the answer, how long, who served it, its findings."""
    total = f"{t.total_ns / 1e6:8.2f}ms" if pd.notna(t.total_ns) else "       –  "
    return f"{clock(t.t_start, 3)}  {t.qname:<44} {t.qtype:<5} {t.rcode or t.outcome:<9} {total}  {t.served_from:<13} {t.server:<24} {','.join(codes)}"


def sighting_lines(record: dict) -> list[str]:
    """`trace -o wide`: a lookup's sightings (the record's `hops`) under its line, indented by depth, offsets from
    its first packet."""
    sightings = record.get("hops", [])
    if not sightings:
        return []
    start = sightings[0]["ts_ns"]
    lines = []
    for h in sightings:
        indent = "  " * int(h.get("depth") or 0)
        what = "ICMP " + f"{h['icmp_type']}/{h['icmp_code']}" if h.get("kind") == "icmp-error" else ("R " + (h.get("rcode") or "") if h.get("qr") else "Q")
        lines.append(f"      {indent}+{(h['ts_ns'] - start) / 1e6:8.3f}ms  {h['vantage']:<24} {h['pkt_type']:<9} "
                     f"{h['src_ip']}:{h['src_port']} → {h['dst_ip']}:{h['dst_port']}  {what}")
    return lines
