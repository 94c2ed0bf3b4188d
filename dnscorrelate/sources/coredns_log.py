"""CoreDNS's own account: `log` plugin query lines and `errors` plugin lines.

Reads what `kubectl logs` (optionally `--timestamps`, `--prefix`) or the
lab's `lab logs coredns` print, from any CoreDNS release still found in
clusters:

  v1.7+ (common)   [INFO] 10.244.0.4:46772 - 58151 "A IN example.com. udp 52 false 1232" NOERROR qr,rd,ra 96 0.001034049s
  {combined}       ... the same ... "QUERY"
  1.3 - 1.6        2021-03-11T07:03:56.565Z [INFO] 172.27.172.128:34346 - 7481 "A IN rwc.default.svc.cluster.local. tcp 50 false 65535" NOERROR qr,aa,rd 98 0.0002043s
  1.2.x            10.244.0.4:46772 - [22/Nov/2018:01:26:17 +0000] 58151 "A IN example.com. udp 29 false 512" NOERROR qr,rd,ra 68 1.830937ms
  pre-1.0          10.2.6.75 - [06/Feb/2017:21:18:44 +0000] "A IN kubernetes.default.svc.cluster.local. udp 54 false 512" NOERROR 70 981.518µs
  custom           any format string from the Corefile's `log` directive
  errors           [ERROR] plugin/errors: 2 example.com. A: read udp 10.244.0.2:45117->192.168.49.1:53: i/o timeout

Every line ends up counted: a query record, an error record, a known
CoreDNS message (banner, plugin notices), or unparsed (kept with its line
number). Missing fields (`-`) become empty values, never errors.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

import dns.rcode

from dnscorrelate.errors import LogFormatError  # noqa: F401 (re-exported)
from dnscorrelate.schema import LOG_ERRORS, LOG_RECORDS, Field, ParsedLogs, empty

# --- formats -----------------------------------------------------------------

COMMON = '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}'
COMBINED = COMMON + ' "{>opcode}"'
LEGACY_1_2 = '{remote}:{port} - [{when}] {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}'
LEGACY_PRE_1_0 = '{remote} - [{when}] "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {rsize} {duration}'
FALLBACK_FORMATS = [COMMON, COMBINED, LEGACY_1_2, LEGACY_PRE_1_0]

GO_DURATION = r"(?:\d+(?:\.\d+)?(?:h|m|s|ms|µs|us|ns))+"
PLACEHOLDERS = {
    "{remote}": r"(?P<remote_ip>\[[0-9A-Fa-f:.%]+\]|[^\s\[\]]+?)",
    "{port}": r"(?P<remote_port>\d+|-)",
    "{local}": r"(?P<local>\S+)",
    "{>id}": r"(?P<id>\d+|-)",
    "{type}": r"(?P<qtype>\S+)",
    "{class}": r"(?P<qclass>\S+)",
    "{name}": r"(?P<qname>\S+)",
    "{proto}": r"(?P<proto>udp|tcp|-)",
    "{size}": r"(?P<size>\d+|-)",
    "{>do}": r"(?P<do>true|false|-)",
    "{>bufsize}": r"(?P<bufsize>\d+|-)",
    "{rcode}": r"(?P<rcode>[A-Za-z]+|\d+|-)",
    "{>rflags}": r"(?P<rflags>[a-z]+(?:,[a-z]+)*|-)",
    "{rsize}": r"(?P<rsize>\d+|-)",
    "{duration}": rf"(?P<duration>{GO_DURATION}|-)",
    "{>opcode}": r"(?P<opcode>\S+)",
    "{when}": r"(?P<when>[^\]]+)",
}

PREFIX = re.compile(r"^\[pod/(?P<pod>[^/\]]+)/[^\]]*\]\s+")
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
HEAD = re.compile(
    rf"^(?:\[pod/(?P<pod>[^/\]]+)/[^\]]*\]\s+)?(?:(?P<ts1>{TIMESTAMP})\s+)?(?:(?P<ts2>{TIMESTAMP})\s+)?"
    r"(?:(?P<level>\[(?:INFO|ERROR|WARNING|DEBUG|FATAL)\])\s+)?(?P<body>.*)$"
)
ERROR_BODY = re.compile(r"^plugin/errors: (?P<rcode>\d+) (?P<qname>\S+) (?P<qtype>\S+): (?P<error>.*)$")
UPSTREAM_IN_ERROR = re.compile(r"(?:read|write|dial) (?:udp|tcp) (?:\S+->)?(?P<ip>\[[^\]]+\]|[\d.]+):(?P<port>\d+)")
KNOWN_MESSAGES = re.compile(
    r"^(?:plugin/\S+|\.?[\w.-]*:\d+(?: on \S+)?$|CoreDNS-[\w.+-]+$|\S+/\S+, go[\d.]+|maxprocs:|Reloading|Reloading complete|"
    r"\[(?:INFO|WARNING|ERROR|DEBUG|FATAL)\]|Starting|Shutting|SIGTERM|SIGUSR1)"
)
REASONS = [
    ("i/o timeout", "timeout"), ("connection refused", "refused"), ("no route to host", "no-route"),
    ("network is unreachable", "unreachable"), ("host is unreachable", "unreachable"), ("no healthy upstream", "no-healthy-upstream"),
    ("connection reset", "reset"), ("overflow", "overflow"),
]


def format_regex(fmt: str) -> re.Pattern:
    """A regex with named groups for a CoreDNS log format string (`{common}`, `{combined}` or custom)."""
    fmt = fmt.replace("{common}", COMMON).replace("{combined}", COMBINED)
    parts, pos, meta = [], 0, 0
    for match in re.finditer(r"\{[^{}]*\}", fmt):
        parts.append(re.escape(fmt[pos : match.start()]))
        token = match.group(0)
        if token in PLACEHOLDERS:
            group = PLACEHOLDERS[token]
            name = re.match(r"\(\?P<(\w+)>", group).group(1)
            if f"(?P<{name}>" in "".join(parts):
                group = f"(?:{group[len(f'(?P<{name}>'):]}"  # a placeholder used twice: match, don't capture again
            parts.append(group)
        elif token.startswith("{/"):
            parts.append(rf"(?P<meta{meta}>\S*)")
            meta += 1
        else:
            raise LogFormatError(f"unknown placeholder {token} in log format {fmt!r}")
        pos = match.end()
    parts.append(re.escape(fmt[pos:]))
    return re.compile("^" + "".join(parts) + r"\s*$")


def formats_from_corefile(corefile: str) -> list[str]:
    """The format strings of every `log` directive in a Corefile (quoted, {common} or {combined})."""
    found = []
    for line in corefile.splitlines():
        tokens = line.split("#", 1)[0].strip()
        if not re.match(r"^log(\s|$)", tokens):
            continue
        quoted = re.search(r'"((?:[^"\\]|\\.)*)"', tokens)
        if quoted:
            found.append(quoted.group(1).replace('\\"', '"'))
        elif "{combined}" in tokens:
            found.append(COMBINED)
        elif "{common}" in tokens:
            found.append(COMMON)
    return found


# --- values ------------------------------------------------------------------

GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def duration_seconds(text: str | float | None) -> float:
    """Seconds from `0.001034049s` or Go's Duration.String() (`1.830937ms`, `981.518µs`, `1m2.5s`); NaN for `-`."""
    if not isinstance(text, str) or text in ("", "-"):
        return float("nan")
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|µs|us|ns|m|s)", text):
        total += float(number) * GO_UNITS[unit]
    return total


def timestamps_ns(series: pd.Series) -> pd.Series:
    """Nanoseconds since the epoch for RFC 3339 stamps (the kubectl prefix or CoreDNS 1.3-1.6's own); NA if absent."""
    parsed = pd.to_datetime(series.str.replace(",", ".", regex=False), utc=True, errors="coerce", format="ISO8601")
    values = parsed.astype("int64").astype("Int64")
    return values.mask(parsed.isna())


def apache_time_ns(series: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(series, format="%d/%b/%Y:%H:%M:%S %z", utc=True, errors="coerce")
    return parsed.astype("int64").astype("Int64").mask(parsed.isna())


def rcode_name(value: str) -> str:
    """`NXDOMAIN` as is; the errors plugin's numeric `2` as `SERVFAIL`."""
    if isinstance(value, str) and value.isdigit():
        try:
            return dns.rcode.to_text(int(value))
        except ValueError:
            return value
    return value if isinstance(value, str) and value != "-" else ""


def extract(series: pd.Series, pattern: re.Pattern) -> pd.DataFrame:
    """Named groups of `pattern` per line, as strings (NA where a group did not match)."""
    return series.astype("string").str.extract(pattern).astype("string")


def integers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series.where(series != "-"), errors="coerce").astype("Int32")


# --- parsing -----------------------------------------------------------------


def parse_lines(lines: list[str], source: str, replica: str | None = None, formats: list[str] = ()) -> ParsedLogs:
    """Parse the lines of one log; `replica` names the CoreDNS pod when no `[pod/NAME/...]` prefix does."""
    if not lines:
        return ParsedLogs.none()
    text = pd.Series([line.rstrip("\r\n") for line in lines], dtype="string")
    head = extract(text, HEAD)
    head["line_no"] = np.arange(1, len(text) + 1)
    head["replica"] = head["pod"].fillna(replica or "")
    head["ts_ns"] = timestamps_ns(head["ts1"].fillna(head["ts2"]))
    body = head["body"].fillna("")
    blank = body.str.strip() == ""

    errors_match = extract(body, ERROR_BODY)
    is_error = errors_match["rcode"].notna()

    records = []
    remaining = ~is_error & ~blank
    for fmt in [*formats, *FALLBACK_FORMATS]:
        if not remaining.any():
            break
        extracted = extract(body[remaining], format_regex(fmt))
        hit = extracted.iloc[:, 0].notna() if len(extracted.columns) else pd.Series(False, index=extracted.index)
        if hit.any():
            records.append(extracted[hit])
            remaining &= ~remaining.index.isin(extracted.index[hit])

    # A level-tagged line that is not a query (those always quote the question) is a CoreDNS notice.
    known = remaining & (body.str.match(KNOWN_MESSAGES) | (head["level"].notna() & ~body.str.contains('"', regex=False)))
    unparsed_mask = remaining & ~known
    parsed = ParsedLogs(
        records=build_records(pd.concat(records) if records else pd.DataFrame(), head, text, source),
        errors=build_errors(errors_match[is_error], head, text, source),
        other_lines=int(known.sum() + blank.sum()),
        unparsed=[(source, int(n), str(t)) for n, t in zip(head["line_no"][unparsed_mask], text[unparsed_mask])],
    )
    return parsed


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series("-", index=frame.index, dtype="string")


def build_records(found: pd.DataFrame, head: pd.DataFrame, text: pd.Series, source: str) -> pd.DataFrame:
    if found.empty:
        return empty(LOG_RECORDS)
    found = found.sort_index()
    meta = head.loc[found.index]
    ts = meta["ts_ns"]
    if "when" in found.columns:
        ts = ts.fillna(apache_time_ns(found["when"]))
    remote = column(found, "remote_ip").str.strip("[]")
    frame = pd.DataFrame(
        {
            "ts_ns": ts,
            "replica": meta["replica"],
            "remote_ip": remote.where(remote != "-", ""),
            "remote_port": integers(column(found, "remote_port")),
            "id": integers(column(found, "id")),
            "qtype": column(found, "qtype").replace("-", ""),
            "qclass": column(found, "qclass").replace("-", ""),
            "qname": column(found, "qname").replace("-", "").str.lower(),
            "proto": column(found, "proto").replace("-", ""),
            "size": integers(column(found, "size")),
            "do": column(found, "do").map({"true": True, "false": False}).astype("boolean"),
            "bufsize": integers(column(found, "bufsize")),
            "rcode": column(found, "rcode").map(rcode_name),
            "rflags": column(found, "rflags").replace("-", ""),
            "rsize": integers(column(found, "rsize")),
            "duration_s": column(found, "duration").map(duration_seconds),
            "opcode": column(found, "opcode").replace("-", ""),
            "source": source,
            "line_no": meta["line_no"],
            "text": text.loc[found.index].astype(object),
        }
    )
    return conform(frame, LOG_RECORDS)


def build_errors(found: pd.DataFrame, head: pd.DataFrame, text: pd.Series, source: str) -> pd.DataFrame:
    if found.empty:
        return empty(LOG_ERRORS)
    meta = head.loc[found.index]
    upstream = extract(found["error"], UPSTREAM_IN_ERROR)
    reason = pd.Series("", index=found.index, dtype="string")
    for needle, label in reversed(REASONS):
        reason = reason.mask(found["error"].str.contains(needle, regex=False), label)
    frame = pd.DataFrame(
        {
            "ts_ns": meta["ts_ns"],
            "replica": meta["replica"],
            "rcode": found["rcode"].map(rcode_name),
            "qname": found["qname"].str.lower(),
            "qtype": found["qtype"],
            "error": found["error"],
            "upstream_ip": upstream["ip"].fillna("").str.strip("[]"),
            "upstream_port": pd.to_numeric(upstream["port"], errors="coerce").astype("Int32"),
            "reason": reason.replace("", "other"),
            "source": source,
            "line_no": meta["line_no"],
            "text": text.loc[found.index].astype(object),
        }
    )
    return conform(frame, LOG_ERRORS)


def conform(frame: pd.DataFrame, table: list[Field]) -> pd.DataFrame:
    """The table's columns with their dtypes; missing text in categories becomes ""."""
    out = frame[[c.name for c in table]].copy()
    for c in table:
        if c.dtype == "category":
            out[c.name] = out[c.name].astype("string").fillna("").astype(str).astype("category")
        else:
            out[c.name] = out[c.name].astype(c.dtype)
    return out.reset_index(drop=True)


def replica_from_path(path: Path) -> str:
    """`coredns-0` from `coredns-0.log` or `.../coredns-0/...`; the file name otherwise."""
    match = re.search(r"(coredns-[\w-]*?\d+|nodelocal-[\w-]+)", path.name)
    return match.group(1) if match else path.stem


def read_logs(paths: list[str | Path], corefile: str | None = None) -> ParsedLogs:
    """Parse every log file (formats from the Corefile's `log` directives first, then the known ones)."""
    formats = formats_from_corefile(corefile) if corefile else []
    parts = []
    for path in map(Path, paths):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError as err:
            raise LogFormatError(f"{path}: cannot read: {err.strerror}") from None
        parts.append(parse_lines(lines, str(path), replica_from_path(path), formats))
    return merge(parts)


def merge(parts: list[ParsedLogs]) -> ParsedLogs:
    if not parts:
        return ParsedLogs.none()
    records = pd.concat([p.records for p in parts if len(p.records)] or [empty(LOG_RECORDS)], ignore_index=True)
    errors = pd.concat([p.errors for p in parts if len(p.errors)] or [empty(LOG_ERRORS)], ignore_index=True)
    return ParsedLogs(
        records=conform(records, LOG_RECORDS) if len(records) else empty(LOG_RECORDS),
        errors=conform(errors, LOG_ERRORS) if len(errors) else empty(LOG_ERRORS),
        other_lines=sum(p.other_lines for p in parts),
        unparsed=[u for p in parts for u in p.unparsed],
    )
