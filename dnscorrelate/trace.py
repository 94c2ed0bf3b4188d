"""`dnscorrelate trace pod/NAME`: a pod's lookups, live, hop by hop, each with its finding.

Every TICK_S the new packets are decoded and correlated with the CoreDNS logs
over a sliding window; each lookup of the pod is printed once it is complete
(answered, or unanswered for longer than a client would wait). On exit: a
summary and, with --report, an HTML report of the session.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dnscorrelate import events
from dnscorrelate.analysis import Analysis, analyze
from dnscorrelate.report.records import trace_records

TICK_S = 1.0
WINDOW_NS = 30 * 10**9
GIVE_UP_NS = 6 * 10**9  # an unanswered lookup is printed once a client would have given up
LOG_SETTLE_NS = 5 * 10**9  # a lookup only a log line shows waits this long for its packets' decoding
SETTLE_NS = 4 * 10**9  # `--hubble`: how long after its answer a lookup waits for Hubble's flows of it before it is printed (live.hubble holds them up to 3 s)
SAME_LOOKUP_NS = 10**9  # how far a late sighting may move a printed lookup's start and it still be that lookup

FIELDS = {
    "name": "qname", "qname": "qname", "type": "qtype", "qtype": "qtype", "rcode": "rcode", "latency": "total_ns",
    "nameserver": "nameserver", "server": "server", "outcome": "outcome", "proto": "proto", "from": "served_from",
}
FILTER = re.compile(r"^\s*(?P<field>[a-z_]+)\s*(?P<op>==|!=|>=|<=|!~|>|<|~)\s*(?P<value>.+?)\s*$")
UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}


class FilterError(ValueError):
    """A filter that cannot be understood; the message shows the accepted forms."""


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        match = FILTER.match(text)
        if not match or match["field"] not in FIELDS:
            raise FilterError(f"{text!r}: use FIELD OP VALUE with FIELD one of {', '.join(sorted(FIELDS))} and OP one of "
                              "== != > < >= <= ~ !~ (for example rcode!=NOERROR, latency>5ms, name~^api\\., nameserver==10.96.0.10)")
        if match["field"] == "latency" and match["op"] in ("~", "!~"):
            raise FilterError(f"{text!r}: latency compares with == != > < >= <=")
        if match["op"] in ("~", "!~"):
            try:
                re.compile(match["value"])
            except re.error as err:
                raise FilterError(f"{text!r}: bad regular expression: {err}") from None
        return cls(match["field"], match["op"], match["value"])

    def mask(self, traces: pd.DataFrame) -> pd.Series:
        if self.field == "latency":
            number = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?", self.value)
            if not number:
                raise FilterError(f"latency{self.op}{self.value}: give a duration such as 5ms or 1.5s")
            limit = float(number[1]) * UNITS[number[2] or "ms"]
            values = traces["total_ns"].astype("float")
            return {"==": values == limit, "!=": values != limit, ">": values > limit, "<": values < limit,
                    ">=": values >= limit, "<=": values <= limit}[self.op].fillna(False)
        if self.field == "nameserver":  # the address the pod asked, or the one DNAT sent it to
            column = traces["dst_ip"].astype(str) + " " + traces["dnat_to"].astype(str).str.split(":").str[0]
            equal = column.str.split().apply(lambda parts: self.value in parts)
            matches = column.str.contains(self.value, regex=True)
        else:
            column = traces[FIELDS[self.field]].astype(str)
            equal = column.str.lower() == self.value.lower()
            matches = column.str.contains(self.value, regex=True, case=False)
        return {"==": equal, "!=": ~equal, "~": matches, "!~": ~matches}.get(self.op, equal)


def apply_filters(traces: pd.DataFrame, filters: list[Filter]) -> pd.DataFrame:
    for f in filters:
        traces = traces[f.mask(traces)]
    return traces


def for_client(analysis: Analysis, client_ip: str) -> Analysis:
    """The analysis restricted to one client's traces (and their sightings, upstream exchanges and findings)."""
    traces = analysis.correlation.traces
    return analysis.restricted_to(set(traces.loc[traces["client_ip"] == client_ip, "trace_id"]))


def codes_by_trace(analysis: Analysis) -> dict[int, list[str]]:
    codes: dict[int, list[str]] = {}
    for f in analysis.findings:
        for t in f.covers:
            codes.setdefault(t, []).append(f.code)
    return codes


class TraceSession:
    """One pod's lookups over a live `live.session.Session` (its packets, logs and facts)."""

    def __init__(self, live, pod, filters: list[Filter], emit) -> None:
        self.live, self.pod, self.filters, self.emit = live, pod, filters, emit
        self.frames: list[pd.DataFrame] = []
        self.printed: dict[tuple, list[int]] = {}  # (client port, DNS id, protocol) -> when each printed lookup started
        self.facts = live.facts

    def analyze_window(self, new: pd.DataFrame, now_ns: int) -> Analysis:
        if len(new):
            self.frames.append(new)
        self.frames = [f for f in self.frames if len(f) and f["ts_ns"].max() >= now_ns - WINDOW_NS]
        window = events.concat(self.frames) if self.frames else None
        # the live stats say whether one clock timed every row (a capture on this machine): then no offsets are estimated
        return analyze(window, self.live.logs(), self.facts, self.live.stats)

    def was_printed(self, key: tuple) -> bool:
        """Whether this lookup was printed: same socket and id, started within SAME_LOOKUP_NS of a printed one (a
        sighting arriving late, such as Hubble's, can move its start; the same port and id again later is
        another lookup)."""
        return any(abs(int(key[3]) - started) <= SAME_LOOKUP_NS for started in self.printed.get(key[:3], ()))

    def tick(self, new: pd.DataFrame, final: bool = False) -> None:
        """Analyze the window with `new` events and print the lookups complete since; `final` (the session stopped,
        nothing more will come) prints every answered one."""
        now = time.time_ns()
        analysis = for_client(self.analyze_window(new, now), self.pod.ip)
        traces = analysis.correlation.traces
        # a CoreDNS line read through the API can come before the capture has decoded the lookup's packets: a
        # trace only the line makes would be printed, then the packets' trace of the same lookup beside it
        settled = final | (traces["coverage"] != "logs") | (traces["t_start"] < now - LOG_SETTLE_NS)
        # with Hubble, an answered lookup waits SETTLE_NS past its answer for the agents' flows of it, which come
        # later than packets: the DNS proxy's response flow is as late as the answer, seconds after a slow lookup's start
        last_seen = traces["t_client_in"].fillna(traces["t_start"]).astype("int64").clip(lower=traces["t_start"])
        settled &= last_seen < now - (SETTLE_NS if self.live.hubble.enabled and not final else 0)
        # an unanswered one once a client would have given up; a slow answer past that still waits for its flows
        done = traces[settled & ((traces["outcome"] == "answered") | (traces["t_start"] < now - GIVE_UP_NS))]
        keys = list(zip(done["client_port"], done["dns_id"], done["proto"], done["t_start"]))
        fresh = done[np.array([not self.was_printed(k) for k in keys], dtype=bool)] if len(done) else done
        for key in keys:
            self.printed.setdefault(key[:3], []).append(int(key[3]))
        shown = apply_filters(fresh, self.filters)
        if len(shown):
            codes = codes_by_trace(analysis)
            records = {r["id"]: r for r in trace_records(replace(analysis.correlation, traces=shown))}
            for t in shown.itertuples(index=False):
                self.emit(t, records[int(t.trace_id)], codes.get(int(t.trace_id), []))
