"""Every table's columns, declared once: name, dtype, meaning, and the outputs that show it.

Like Inspektor Gadget's `gadget.yaml` field list, one declaration drives the
rest: the sources build their frames from it, the correlator's traces conform
to it, and report/ picks what each output shows from it:

- `table`: the terminal tables (`capture` for packets, `correlate` for traces and findings)
- `wide`: `trace pod/NAME`'s line per lookup, and with `-o wide` its sightings
- `json`: the `-o json` records (for packets: a trace's sightings, under `hops`; `capture -o json` keeps every column)
- `html`: the HTML report's rows

The tables:

| table       | one row per                                 | made by |
| ----------- | ------------------------------------------- | ------- |
| EVENTS      | DNS packet per vantage point                | sources (eBPF capture; pcap, dnstap, Inspektor Gadget later) |
| LOG_RECORDS | CoreDNS `log` plugin line                    | sources/coredns_log.py |
| LOG_ERRORS  | CoreDNS `errors` plugin line                 | sources/coredns_log.py |
| TRACES      | client request, across every hop             | correlate/ |
| UPSTREAM    | upstream exchange a server made for a trace  | correlate/ |
| FINDINGS    | diagnosis (codes and hops: findings.py)      | diagnose/ |

`python -m dnscorrelate.schema` prints the tables as Markdown (the docs'
tables are checked against it by tests/unit/test_schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dnscorrelate.findings import HOP_NAMES, SEVERITIES

TABLE, WIDE, JSON, HTML = "table", "wide", "json", "html"


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str  # a pandas dtype; "object" holds Python strings, capitalised ones (Int64) are nullable
    doc: str
    outputs: frozenset[str] = field(default_factory=frozenset)
    header: str = ""  # the terminal column's title, when not NAME in capitals

    @property
    def title(self) -> str:
        return self.header or self.name.upper()


def f(name: str, dtype: str, doc: str, outputs: str = "", header: str = "") -> Field:
    """A Field, its outputs given as words: f("qname", "category", "...", "table json")."""
    return Field(name, dtype, doc, frozenset(outputs.split()), header)


EVENTS = [
    f("ts_ns", "int64", "wall-clock time, ns since the epoch (UTC), converted once per capture", "table wide json", "TIME"),
    f("netns", "uint64", "network namespace inode"),
    f("vantage", "category", "who saw it: `demo/mypod`, `node-0`, `kube-system/coredns-0`, `upstream`", "table wide json"),
    f("role", "category", "pod, node, coredns, upstream, other", "json"),
    f("ifindex", "int32", "interface index inside that namespace"),
    f("ifname", "category", "interface name (eth0, cbr0, veth…), when known", "table json", "IF"),
    f("pkt_type", "category", "HOST, BROADCAST, MULTICAST, OTHERHOST, OUTGOING, LOOPBACK", "table wide json"),
    f("kind", "category", "`dns`; `icmp-error` (an ICMP error quoting a DNS packet: the tuple is the quoted one's); "
      "`tcp-syn`, `tcp-synack`, `tcp-rst` (TCP connection set-up on a DNS port: no DNS fields); "
      "`flow` (a Hubble L3/L4 flow on a DNS port: no DNS fields, see `verdict`); "
      "`conn-drop` (a Hubble flow DROPPED on another port: a connection a policy stopped, to `dst_ip`)", "wide json"),
    f("icmp_type", "int16", "ICMP type of an icmp-error row, else -1", "wide json"),
    f("icmp_code", "int16", "ICMP code of an icmp-error row, else -1", "wide json"),
    f("proto", "category", "udp, tcp", "table json"),
    f("family", "int8", "4 or 6"),
    f("src_ip", "category", "source address as seen at this vantage (before/after NAT)", "table wide json", "SRC"),
    f("src_port", "int32", "source port (the terminal shows it in SRC)", "wide json"),
    f("dst_ip", "category", "destination address as seen at this vantage (before/after NAT)", "table wide json", "DST"),
    f("dst_port", "int32", "destination port (the terminal shows it in DST)", "wide json"),
    f("dns_id", "int32", "DNS message id", "table json", "ID"),
    f("qr", "bool", "True for a response", "table wide json"),
    f("opcode", "int8", "DNS opcode"),
    f("rcode", "category", "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, … (responses)", "table wide json"),
    f("aa", "bool", "authoritative answer flag"),
    f("tc", "bool", "truncated flag"),
    f("rd", "bool", "recursion desired flag"),
    f("ra", "bool", "recursion available flag"),
    f("qname", "category", "lower-case, with trailing dot; empty when it could not be decoded", "table"),
    f("qtype", "category", "A, AAAA, SRV, …", "table"),
    f("answers", "category", "answer records `TYPE value`, joined by `, ` (A, AAAA, CNAME, PTR, SRV, …)", "table json"),
    f("ancount", "int16", "answer count from the header"),
    f("size", "int32", "DNS message length in bytes (without TCP's length prefix)"),
    f("latency_ns", "int64", "responses: time since this vantage first saw the query (matched in the kernel); 0 when it saw none",
      "table json", "LATENCY"),
    f("decoded", "bool", "whether the payload decoded as a DNS message"),
    f("verdict", "category", "a flow's verdict where the source gives one (Hubble: FORWARDED, REDIRECTED, DROPPED, AUDIT, …); "
      "empty for packets", "json"),
    f("drop_reason", "category", "why it was dropped, in the source's own words (Hubble's drop_reason_desc: POLICY_DENIED, …)", "json"),
    f("src_name", "category", "the source's name where the evidence gives one (Hubble: `NS/POD` of `source`); empty otherwise"),
    f("dst_name", "category", "the destination's name where the evidence gives one (Hubble: `NS/POD` of `destination`)"),
    f("node", "category", "the node whose clock timed it, where the source knows (the node agent's stream); the correlator puts "
      "every node on one time line"),
]
SOURCE_SPECIFIC = ("verdict", "drop_reason", "src_name", "dst_name", "node")
"""EVENTS columns only some sources fill: a frame without them (another source's, an older file) has them empty."""

SIGHTING_FIELDS = [
    f("trace_id", "int64", "the trace a sighting belongs to (-1: none; ICMP errors that quote no trace's query)"),
    f("depth", "int64", "0 for the client's leg, 1 for its server's upstream exchange, 2 further up", "wide json"),
]
"""Columns the correlator adds to packet events to make them a trace's sightings (JSON calls them `hops`)."""

_LOG_COMMON = [
    f("ts_ns", "Int64", "when the line was written, ns since the epoch (empty when the line has no time)"),
    f("replica", "category", "the DNS server pod that wrote it: `coredns-0`, `nodelocal-node-0`"),
]
_LOG_SOURCE = [
    f("source", "category", "the log file it was read from"),
    f("line_no", "int64", "its line number in that file"),
]

LOG_RECORDS = [
    *_LOG_COMMON,
    f("remote_ip", "category", "the client's address as CoreDNS saw it"),
    f("remote_port", "Int32", "the client's port"),
    f("id", "Int32", "DNS message id"),
    f("qtype", "category", "A, AAAA, …"),
    f("qclass", "category", "IN, CH, …"),
    f("qname", "category", "lower-case, with trailing dot"),
    f("proto", "category", "udp, tcp"),
    f("size", "Int32", "request size in bytes"),
    f("do", "boolean", "the DNSSEC OK bit"),
    f("bufsize", "Int32", "the client's EDNS buffer size"),
    f("rcode", "category", "the response code CoreDNS sent"),
    f("rflags", "category", "the response's flags: `qr,aa,rd`"),
    f("rsize", "Int32", "response size in bytes"),
    f("duration_s", "float64", "time CoreDNS spent, in seconds"),
    f("opcode", "category", "QUERY, … ({combined} format only)"),
    *_LOG_SOURCE,  # not the line's text: nothing reads it, and at a million lines it is about 200 MB (source and line_no find it)
]

LOG_ERRORS = [
    *_LOG_COMMON,
    f("rcode", "category", "the response code the error led to"),
    f("qname", "category", "the question's name, lower-case"),
    f("qtype", "category", "the question's type"),
    f("error", "object", "the error text: `read udp 10.244.0.2:45117->192.168.49.1:53: i/o timeout`"),
    f("upstream_ip", "category", "the upstream address the error names, if any"),
    f("upstream_port", "Int32", "its port"),
    f("reason", "category", "timeout, refused, unreachable, no-route, … or other"),
    *_LOG_SOURCE,
    f("text", "object", "the line as written"),
]

TRACES = [
    f("trace_id", "int64", "the trace's number, in order of its first packet (or log line)", "table json html", "ID"),
    f("client_vantage", "object", "the vantage the query left from (`demo/mypod`), empty with logs only", "table json html", "CLIENT"),
    f("client_role", "object", "that vantage's role: pod, coredns, node, …"),
    f("client_ip", "object", "the client's address (the source of its query)", "json html"),
    f("client_port", "int32", "the client's port", "json"),
    f("dns_id", "int32", "the client's DNS message id", "json"),
    f("qname", "object", "the question's name", "table wide json html"),
    f("qtype", "object", "the question's type", "table wide json html"),
    f("proto", "object", "udp, tcp", "table json html"),
    f("server", "object", "the DNS server that answered it, or the deepest it reached unanswered; with `vantage` coverage the "
      "address that answered (or was asked), named when the facts know it", "table wide json html"),
    f("server_role", "object", "that server's role: coredns, node (NodeLocal DNS), upstream"),
    f("reached", "object", "the deepest vantage the query was seen at", "json"),
    f("reached_role", "object", "that vantage's role"),
    f("dst_ip", "object", "the address the client asked (the Service VIP, a NodeLocal address)"),
    f("dnat_to", "object", "`ip:port` DNAT rewrote the destination to, if any", "json"),
    f("dnat_at", "object", "the vantage where the rewrite was seen", "json"),
    f("seen_at_node", "bool", "the query was seen at a node"),
    f("forwarded_by_node", "bool", "a node sent it on towards a server"),
    f("outcome", "object", "`answered`, `timed-out` (no response anywhere), `partial` (a response never reached the client); for a "
      "response whose query no vantage saw: `wrong-id` (UDP, while a query with another id on its socket awaited its answer) or "
      "`query-not-seen` (its query fell before the capture or in a gap)", "table wide json html"),
    f("rcode", "object", "the response code the client got (empty: none)", "table wide json html"),
    f("server_rcode", "object", "the response code the server sent"),
    f("answers", "object", "answer records `TYPE value`, joined by `, `", "json"),
    f("ancount", "int64", "answer count from the header"),
    f("tc", "bool", "the response was truncated"),
    f("aa", "bool", "the response was authoritative"),
    f("responses_seen", "int64", "sightings of a response anywhere"),
    f("query_seen", "bool", "a query of it was seen at some vantage"),
    f("query_received", "bool", "its first query was seen arriving (pkt_type HOST) where it was first seen: that place is its server "
      "(a server's own capture or dnstap)"),
    f("duplicate_responses", "int64", "responses at the client beyond one per query and per answering address: the same answer again"),
    f("responders", "int64", "distinct addresses that answered it at the client (2: it went to two servers and both answered)"),
    f("raced_dns_id", "int64", "for a `wrong-id` response, the id of the query it raced; else -1"),
    f("opcode", "object", "QUERY, UPDATE, NOTIFY, … (of its first message; empty with logs only)"),
    f("coverage", "object", "what the evidence covers: `path` (packets at places with roles: pod, node, CoreDNS, upstream), "
      "`vantage` (one place nothing names, or the only place there is: its server is the address that answered), `logs` (CoreDNS's log alone)"),
    f("served_from", "object", "upstream, authoritative, cache, none (packets at places with roles); authoritative, unknown (logs only); "
      "unknown (one vantage point)",
      "table wide json html", "FROM"),
    f("replica", "object", "the CoreDNS or NodeLocal DNS pod that served it", "json"),
    f("purpose", "object", "`lookup` (a client's); CoreDNS's own: `loop-probe` (the loop plugin's HINFO), `health-check` (forward's `. IN NS`); "
      "another opcode than QUERY: `update`, `notify`, …", "json"),
    f("t_start", "int64", "when the query left the client, ns since the epoch", "wide"),
    f("t_server_in", "Int64", "when the query reached its server"),
    f("t_server_out", "Int64", "when the server's response left"),
    f("t_client_in", "Int64", "when the response reached the client"),
    f("client_latency_ns", "Int64", "response latency the kernel measured at the client", "json"),
    f("to_server_ns", "Int64", "segment pod → server", "table json", "TO-DNS"),
    f("server_ns", "Int64", "segment inside the server", "table json", "DNS"),
    f("upstream_rtt_ns", "Int64", "that exchange's round trip", "table json", "UPSTREAM"),
    f("return_ns", "Int64", "segment server → pod", "table json", "RETURN"),
    f("total_ns", "Int64", "the client's whole wait", "table wide json html", "TOTAL"),
    f("server_self_ns", "Int64", "time inside the server, upstream waits excluded", "json"),
    f("upstream_wait_ns", "Int64", "time the server waited on upstreams (first query out to last answer back)"),
    f("upstream_count", "int64", "upstream exchanges made for it"),
    f("upstream_answered", "int64", "of which answered"),
    f("upstream_rcode", "object", "the last answered upstream exchange's response code"),
    f("upstream_server", "object", "`ip:port` of the server's last direct upstream"),
    f("ambiguous", "bool", "an upstream exchange could belong to another trace as well", "json"),
    f("upstream_connects", "int64", "TCP connections its server tried upstream while serving it"),
    f("upstream_connects_refused", "int64", "of which refused (RST)"),
    f("upstream_connects_unanswered", "int64", "of which never answered"),
    f("upstream_connect_target", "object", "`ip:port` of the last one"),
    f("log_rcode", "object", "the response code in CoreDNS's log line for it", "json"),
    f("log_duration_s", "float64", "the duration in that log line, seconds", "json"),
    f("log_ref", "object", "`file:line` of that log line", "json"),
    f("error", "object", "the last CoreDNS errors line about it", "json"),
    f("error_reason", "object", "that line's reason: timeout, refused, …"),
    f("error_upstream", "object", "the upstream address that line names"),
    f("error_count", "int64", "errors lines about it"),
    f("icmp", "object", "the first ICMP error quoting its query: type/code, where, about which destination", "json"),
    f("icmp_target", "object", "`ip:port` that ICMP error was about"),
    f("verdict", "object", "DROPPED when a flow of it was dropped (a Hubble flow's verdict), else its flows' last verdict; empty: no flow"),
    f("drop_reason", "object", "why, in the flow's own words (Hubble's drop_reason_desc: POLICY_DENIED, …)"),
    f("dropped_at", "object", "where it was dropped: the vantage, and `egress` (leaving it) or `ingress` (arriving at it)"),
    f("clock_bound_ns", "Int64", "for a lookup whose client and server are on two nodes: how wrong its segments between them may be "
      "after the nodes' clocks were put on one time line (segments shorter than this are left out); empty on one node"),
]

UPSTREAM = [
    f("trace_id", "int64", "the trace it was made for"),
    f("leg_id", "int64", "its leg (the correlator's number)"),
    f("depth", "int64", "1: by the trace's server; 2: by that upstream (NodeLocal DNS → CoreDNS → upstream)", "json"),
    f("from", "object", "the vantage that asked", "json"),
    f("server", "object", "the vantage that answered or was asked last", "json"),
    f("server_addr", "object", "`ip:port` asked", "json"),
    f("dns_id", "int32", "its own DNS id", "json"),
    f("proto", "object", "udp, tcp", "json"),
    f("qname", "object", "the question's name"),
    f("qtype", "object", "the question's type"),
    f("t_out", "int64", "when the query left, ns since the epoch"),
    f("t_in", "Int64", "when the answer came back"),
    f("rcode", "object", "the upstream's response code", "json"),
    f("answered", "bool", "an answer came back", "json"),
    f("ambiguous", "bool", "it fits the window of more than one trace", "json"),
    f("rtt_ns", "Int64", "round trip", "json"),
]

FINDINGS = [
    f("code", "object", "stable name of what was found, declared in findings.py: `dropped-at-node`, `nxdomain`, …", "table json html"),
    f("hop", "object", f"where (findings.py's hops): {', '.join(HOP_NAMES)}", "table json html"),
    f("count", "int64", "how many lookups it concerns", "table json html"),
    f("summary", "object", "one line to act on", "table json html"),
    f("evidence", "object", "trace ids, log references, errors lines it rests on", "table json html"),
    f("severity", "object", ", ".join(SEVERITIES), "json html"),
]


@dataclass
class ParsedLogs:
    """What a set of CoreDNS log files said (LOG_RECORDS and LOG_ERRORS frames), and what could not be read."""

    records: pd.DataFrame
    errors: pd.DataFrame
    other_lines: int = 0  # recognised lines that are not queries: banners, reloads, plugin notices, blank
    unparsed: list[tuple[str, int, str]] = field(default_factory=list)  # (source, line number, text)
    notices: dict[str, int] = field(default_factory=dict)  # other_lines by kind: banner, reload, shutdown, loop-detected, …
    guessed_replicas: dict[str, str] = field(default_factory=dict)  # source -> replica taken from its file name
    warnings: list[str] = field(default_factory=list)  # what the reader could not be sure of, said once
    alerts: list[dict] = field(default_factory=list)  # notices that tell something: loop-detected, health-slow, startup-error
    lines_by_source: dict[str, int] = field(default_factory=dict)  # lines read from each file
    lines_lost: int = 0  # lines read from a followed file before it was rotated or truncated, gone from it since

    @classmethod
    def none(cls) -> ParsedLogs:
        return cls(empty(LOG_RECORDS), empty(LOG_ERRORS))

    @property
    def log_lines(self) -> int:
        return len(self.records) + len(self.errors) + self.other_lines + len(self.unparsed)


def names(table: list[Field], output: str | None = None) -> list[str]:
    """The table's column names, or only those shown in `output`."""
    return [c.name for c in (table if output is None else shown(table, output))]


def dtypes(table: list[Field]) -> dict[str, str]:
    return {c.name: c.dtype for c in table}


def shown(table: list[Field], output: str) -> list[Field]:
    """The fields an output shows, in declaration order."""
    return [c for c in table if output in c.outputs]


def empty(table: list[Field]) -> pd.DataFrame:
    """A frame with no rows and exactly the table's columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in table})


def empty_value(dtype: str):
    """What a column holds where nothing was seen: "" for text, False for flags, NA (NaN) for nullable
    numbers and floats, 0 for counts."""
    if dtype in ("object", "category"):
        return ""
    if dtype == "bool":
        return False
    if dtype.startswith("float"):
        return float("nan")
    return pd.NA if dtype[0].isupper() or dtype == "boolean" else 0


def with_empty_columns(frame: pd.DataFrame, table: list[Field]) -> pd.DataFrame:
    """`frame` plus every column of the table it lacks, holding that column's empty value. The frame's own
    columns are not copied (at a million rows a copy of the table is hundreds of MB): the result shares them."""
    missing = {c.name: pd.Series(empty_value(c.dtype), index=frame.index, dtype=c.dtype) for c in table if c.name not in frame.columns}
    return pd.DataFrame({**{name: frame[name] for name in frame.columns}, **missing}, copy=False)


def conform(frame: pd.DataFrame, table: list[Field]) -> pd.DataFrame:
    """`frame` with exactly the table's columns, in order, each cast to its declared dtype. Columns already of
    their dtype are the frame's own, not copies (callers hand their frame over); casts are made one column at
    a time, so no second copy of the whole table is ever held."""
    out = pd.DataFrame({c.name: frame[c.name] for c in table}, index=frame.index, copy=False)
    for c in table:
        if out[c.name].dtype != pd.api.types.pandas_dtype(c.dtype):
            out[c.name] = out[c.name].astype(c.dtype)
    return out


def markdown(table: list[Field]) -> str:
    """The table's fields as a Markdown table: column, type, outputs, meaning."""
    rows = [f"| {c.name} | {c.dtype} | {' '.join(sorted(c.outputs))} | {c.doc} |" for c in table]
    return "\n".join(["| column | type | shown in | meaning |", "| --- | --- | --- | --- |", *rows])


TABLES = {"EVENTS": EVENTS, "LOG_RECORDS": LOG_RECORDS, "LOG_ERRORS": LOG_ERRORS, "TRACES": TRACES, "UPSTREAM": UPSTREAM, "FINDINGS": FINDINGS}

if __name__ == "__main__":
    for title, fields in TABLES.items():
        print(f"### {title}\n\n{markdown(fields)}\n")
