"""Terminal tables (rich) for packet events."""

from __future__ import annotations

import time

import pandas as pd
from rich.table import Table
from rich.text import Text


def clock(ts_ns: int) -> str:
    """HH:MM:SS.micro in local time."""
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{nanos // 1000:06d}"


def events_table(frame: pd.DataFrame, title: str = "DNS packets") -> Table:
    """One row per packet per vantage point, like trace_dns, with the kernel-matched latency of responses."""
    table = Table(title=title, title_justify="left")
    for column in ("TIME", "VANTAGE", "IF", "PKT_TYPE", "PROTO", "SRC", "DST", "ID", "QR", "QTYPE", "QNAME", "RCODE", "LATENCY", "ANSWERS"):
        table.add_column(column, overflow="fold")
    for row in frame.itertuples(index=False):
        latency = f"{row.latency_ns / 1e6:.3f}ms" if row.latency_ns else ""
        qr = "R" if row.qr else "Q"
        if row.kind == "icmp-error":
            qr = f"ICMP {row.icmp_type}/{row.icmp_code}"
        table.add_row(
            clock(row.ts_ns), str(row.vantage), str(row.ifname), str(row.pkt_type), str(row.proto),
            f"{row.src_ip}:{row.src_port}", f"{row.dst_ip}:{row.dst_port}", f"{row.dns_id:04x}", qr,
            str(row.qtype), Text(str(row.qname)), str(row.rcode), latency, Text(str(row.answers)),
        )
    return table


def ms_text(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return f"{value / 1e6:.2f}"


OUTCOME_STYLE = {"answered": "green", "timed-out": "red", "partial": "yellow"}


def traces_table(traces: pd.DataFrame, title: str = "traces", limit: int | None = 200) -> Table:
    """One row per client request, with per-segment latency in milliseconds. Cells are Text, never markup:
    a name with brackets prints as itself, and rich skips parsing 2,800 cells."""
    table = Table(title=title, title_justify="left")
    for column in ("ID", "CLIENT", "QNAME", "QTYPE", "PROTO", "SERVER", "OUTCOME", "RCODE", "FROM", "TO-DNS", "DNS", "UPSTREAM", "RETURN", "TOTAL"):
        table.add_column(column, overflow="fold")
    shown = traces if limit is None else traces.head(limit)
    for t in shown.itertuples(index=False):
        table.add_row(
            Text(str(t.trace_id)), Text(t.client_vantage or t.client_ip), Text(t.qname), Text(t.qtype), Text(t.proto), Text(t.server),
            Text(t.outcome, style=OUTCOME_STYLE.get(t.outcome, "")), Text(t.rcode), Text(t.served_from),
            *(Text(ms_text(value)) for value in (t.to_server_ns, t.server_ns, t.upstream_rtt_ns, t.return_ns, t.total_ns)),
        )
    if limit is not None and len(traces) > limit:
        table.caption = f"{len(traces) - limit} more traces not shown (-o json has them all)"
    return table


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def findings_table(findings: list, title: str = "findings") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("CODE", "HOP", "COUNT", "SUMMARY", "EVIDENCE"):
        table.add_column(column, overflow="fold")
    for f in findings:
        refs = f.evidence.get("traces", [])
        evidence = "traces " + ", ".join(map(str, refs[:6])) + (" …" if len(refs) > 6 else "") if refs else ""
        table.add_row(Text(f.code, style=SEVERITY_STYLE.get(f.severity, "")), f.hop, str(f.count), Text(f.summary), evidence)
    return table


def stats_line(stats: dict) -> str:
    keys = ["packets", "log_lines", "unparsed_lines", "traces", "upstream_exchanges", "ambiguous", "lost_samples", "decode_errors",
            "log_records_unmatched", "icmp_unmatched"]
    return "  ".join(f"{k}={stats.get(k, 0)}" for k in keys)
