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
