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

Prefixes in front of any of these: `kubectl logs --prefix` (`[pod/NAME/CONTAINER]`,
which names the replica), stern's `POD CONTAINER`, `kubectl logs --timestamps`
(RFC 3339), Go's `2020/10/28 17:17:10` (NodeLocal DNSCache's node-cache and
CoreDNS up to 1.2), leading blanks of pasted excerpts. CoreDNS up to 1.2 wrote
errors without `plugin/errors:` (`[ERROR] 2 NAME. A: unreachable backend: ...`).

Every line ends up counted: a query record, an error record, a known
non-query line (`notices`, by kind: banner, reload, shutdown, health,
loop-detected, startup-error, kubectl, kubernetes (and klog), node-cache, plugin,
errors-summary, blank), or
unparsed (kept with its line number). Missing fields (`-`) become empty values,
never errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

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

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
GO_LOG_DATE = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?"
DNS_CONTAINERS = r"coredns|node-cache|kubedns|dnsmasq|sidecar"
HEAD = re.compile(  # only the groups read below capture: every group is a column for every line
    r"^\s*(?:\[pod/(?P<pod>[^/\]]+)/[^\]]*\]\s+"  # kubectl logs --prefix
    rf"|(?P<stern_pod>[a-z0-9][-a-z0-9.]*)\s+(?:{DNS_CONTAINERS})\s+"  # stern: POD CONTAINER
    rf"|(?:{DNS_CONTAINERS})\s+(?=\[|\d{{4}})"  # a container's name alone
    r"|[\w.-]+/(?P<kail_pod>[\w.-]+)\[[\w.-]+\]:\s+"  # kail: NS/POD[CONTAINER]:
    r"|(?P<compose>[\w.-]+)\s*\|\s)?"  # docker compose: SERVICE |
    rf"(?:(?P<ts1>{TIMESTAMP})\s+)?(?:(?P<ts2>{TIMESTAMP})\s+)?(?:(?P<godate>{GO_LOG_DATE})\s+)?"
    r"(?:(?P<level>\[(?:INFO|ERROR|WARNING|WARN|DEBUG|FATAL)\])\s*)?(?P<body>.*)$"
)
# plugin/errors lines; CoreDNS <= 1.2 wrote the same after [ERROR] without the plugin's name.
ERROR_BODY = re.compile(r"^(?:plugin/errors: )?(?P<rcode>\d+) (?P<qname>\S+) (?P<qtype>[A-Z][A-Z0-9]*): (?P<error>.*)$")
# A failed forward health check (`. IN NS` to the upstream) as CoreDNS 1.0-1.1 logged it: an errors record of its own.
HEALTH_CHECK_BODY = re.compile(r"^(?:plugin/forward: )?(?:[Hh]ealth ?check|[Hh]ealtheck) of (?P<address>\S+) failed with (?P<error>.*)$")
UPSTREAM_IN_ERROR = re.compile(r"(?:(?:read|write|dial) (?:udp|tcp) (?:\S+->)?|health check of )(?P<ip>\[[^\]]+\]|[\d.]+):(?P<port>\d+)")
KLOG = r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]"
NOTICE_KINDS = [  # (kind, body pattern), first match wins; checked on lines that are neither queries nor errors
    ("loop-detected", r"plugin/loop: Loop .*detected"),
    ("startup-error", r"Listen: listen |.*Error during parsing|panic: |goroutine \d+ \[|plugin/\S+: .*(?:cannot|failed to) start|"
                      r"Restart failed"),
    ("kubectl", r"Defaulted container |Found \d+ pods, using pod/"),
    ("reload", r"Reloading(?: complete)?$|plugin/reload:|Restarting"),
    ("shutdown", r"SIG(?:TERM|INT|QUIT|USR1|HUP)\b|.*lameduck|Shutting down|Exiting"),
    ("health", r"plugin/(?:health|ready):"),
    ("errors-summary", r"(?:plugin/errors: )?\d+ errors like '.*' occurred in last \S+$"),
    ("kubernetes", r"plugin/kubernetes:|" + KLOG + r"|Trace\[\d+\]:"),
    ("node-cache", r"Starting node-cache|Using Corefile|Added interface|Updated Corefile|Failed to read node-cache|"
                   r"Failed to sync kube-dns|Tearing down|Setting up networking|Skipping kube-dns configmap sync"),
    ("banner", r"\S*:\d+(?: on \S+)?$|CoreDNS-\S+$|\S+/\S+, go[\d.]+|maxprocs:|No files matching import glob"),
    ("plugin", r"plugin/\S+:|\[(?:INFO|ERROR|WARNING|DEBUG|FATAL)\]|All upstreams down|Failed to connect to"),
]
NOTICE = re.compile("|".join(f"(?P<{kind.replace('-', '_')}>{pattern})" for kind, pattern in NOTICE_KINDS))
# Notices that tell something about the server, kept with their lines (ParsedLogs.alerts) for the diagnosis.
ALERT_KINDS = {"loop-detected", "startup-error"}
SLOW_HEALTH = re.compile(r"plugin/health: Local health request .*(?:took more than|failed)")
API_UNREACHABLE = re.compile(r"(?:dial tcp|Get \S+).*(?:i/o timeout|connection refused|no route to host|network is unreachable)")
# A line with a question (`A IN name.`), or a response code next to an address, is most likely a query line in
# a custom format: never a notice, and a reason to hint at --log-format when it stays unparsed.
LOOKS_LIKE_QUERY = re.compile(
    r"\b[A-Z][A-Z0-9]* (?:IN|CH|ANY) \S+\.|(?=.*\b(?:NOERROR|NXDOMAIN|SERVFAIL|REFUSED|FORMERR|NOTIMP)\b).*\b\d{1,3}(?:\.\d{1,3}){3}\b"
)
REASONS = [
    ("i/o timeout", "timeout"), ("connection refused", "refused"), ("no route to host", "no-route"),
    ("network is unreachable", "unreachable"), ("host is unreachable", "unreachable"), ("no healthy upstream", "no-healthy-upstream"),
    ("no healthy proxies", "no-healthy-upstream"), ("no upstream host", "no-healthy-upstream"), ("no such host", "no-such-host"),
    ("operation not permitted", "blocked"),
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


def parse_lines(lines: list[str], source: str, replica: str | None = None, formats: list[str] = (),
                replica_is_guess: bool = False) -> ParsedLogs:
    """Parse the lines of one log; `replica` names the DNS server pod when no `[pod/NAME/...]` (or stern) prefix
    does. When it is a guess (a file's name) and some query or errors line has no prefix, the source is listed
    in `guessed_replicas`."""
    parsed = parse_chunk(lines, source, replica, formats, replica_is_guess)
    parsed.warnings = custom_format_hint(unparsed_texts(parsed), source, bool(formats))
    return parsed


def parse_chunk(lines: list[str], source: str, replica: str | None, formats: list[str], replica_is_guess: bool,
                first_line_no: int = 1) -> ParsedLogs:
    """`parse_lines` for a run of a log's lines starting at line `first_line_no`, without the custom-format hint
    (which counts over the whole log)."""
    if not lines:
        return ParsedLogs.none()
    text = pd.Series([line.rstrip("\r\n") for line in lines], dtype="string")
    head = extract(text, HEAD)
    head["line_no"] = np.arange(first_line_no, first_line_no + len(text))
    named = head["pod"].fillna(head["stern_pod"]).fillna(head["kail_pod"]).fillna(head["compose"])
    head["replica"] = named.fillna(replica or "")
    head["ts_ns"] = line_times(head)
    body = head["body"].fillna("")
    blank = body.str.strip() == ""

    errors_match = extract(body, ERROR_BODY)
    # Without `plugin/errors:` (CoreDNS <= 1.2) only an [ERROR] line is an errors line.
    is_error = errors_match["rcode"].notna() & (body.str.startswith("plugin/errors:") | (head["level"] == "[ERROR]"))
    checks = extract(body, HEALTH_CHECK_BODY)
    is_check = checks["address"].notna() & ~is_error
    errors_match.loc[is_check, ["rcode", "qname", "qtype"]] = ["", ".", "NS"]
    errors_match.loc[is_check, "error"] = "health check of " + checks.loc[is_check, "address"] + " failed: " + checks.loc[is_check, "error"]
    is_error |= is_check

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

    kinds = notice_kinds(body[remaining], head["level"][remaining])
    known = remaining & kinds.reindex(remaining.index).notna()
    unparsed_mask = remaining & ~known
    notices = kinds.dropna().value_counts().to_dict()
    if blank.any():
        notices["blank"] = int(blank.sum())
    return ParsedLogs(
        records=build_records(pd.concat(records) if records else pd.DataFrame(), head, source),
        errors=build_errors(errors_match[is_error], head, text, source),
        other_lines=int(known.sum() + blank.sum()),
        unparsed=[(source, int(n), str(t)) for n, t in zip(head["line_no"][unparsed_mask], text[unparsed_mask])],
        notices={str(k): int(v) for k, v in notices.items()},
        guessed_replicas={source: replica} if replica_is_guess and replica and named[~remaining & ~blank].isna().any() else {},
        alerts=alerts(kinds, body, head, source),
    )


def alerts(kinds: pd.Series, body: pd.Series, head: pd.DataFrame, source: str) -> list[dict]:
    """The notices that tell something (ALERT_KINDS; `health-slow`: CoreDNS's own /health answered late or not;
    `api-unreachable`: the kubernetes plugin could not reach the API server)."""
    kind = kinds.where(kinds.isin(ALERT_KINDS))
    text = body[kinds.index]
    kind = kind.mask((kinds == "health") & text.str.contains(SLOW_HEALTH), "health-slow")
    kind = kind.mask((kinds == "kubernetes") & text.str.contains(API_UNREACHABLE), "api-unreachable")
    rows = kind.dropna().index
    return [{"kind": str(kind[i]), "source": source, "line_no": int(head.at[i, "line_no"]), "replica": str(head.at[i, "replica"]),
             "ts_ns": None if pd.isna(head.at[i, "ts_ns"]) else int(head.at[i, "ts_ns"]), "text": str(body[i])} for i in rows]


def line_times(head: pd.DataFrame) -> pd.Series:
    """ns since the epoch from kubectl's --timestamps, CoreDNS 1.3-1.6's own stamp, or Go's log date (read as UTC)."""
    godate = head["godate"].str.replace("/", "-", regex=False).str.replace(" ", "T", regex=False) + "Z"
    return timestamps_ns(head["ts1"].fillna(head["ts2"]).fillna(godate))


def notice_kinds(body: pd.Series, level: pd.Series) -> pd.Series:
    """The kind of each recognised non-query line (NOTICE_KINDS), NA where none fits. Any other level-tagged
    line is a notice too, unless it looks like a query (LOOKS_LIKE_QUERY)."""
    if body.empty:
        return pd.Series(dtype="string")
    groups = body.str.extract(NOTICE)
    kinds = pd.Series(pd.NA, index=body.index, dtype="string")
    for kind, _ in reversed(NOTICE_KINDS):
        kinds = kinds.mask(groups[kind.replace("-", "_")].notna(), kind)
    tagged = level.notna() & ~body.str.contains('"', regex=False) & ~body.str.contains(LOOKS_LIKE_QUERY)
    return kinds.mask(kinds.isna() & tagged, "plugin")


def unparsed_texts(parsed: ParsedLogs) -> pd.Series:
    return pd.Series([text for _, _, text in parsed.unparsed], dtype="string")


def custom_format_hint(unparsed: pd.Series, source: str, had_formats: bool) -> list[str]:
    """A hint when unparsed lines quote a question: a `log` format this reader was not given."""
    looks = int(unparsed.str.contains(LOOKS_LIKE_QUERY).sum()) if len(unparsed) else 0
    if not looks:
        return []
    given = "the formats given do not match them" if had_formats else "no Corefile or log format was given"
    return [f"{source}: {looks} unparsed line(s) look like queries in a custom `log` format ({given}): "
            "pass --corefile with the Corefile, or --log-format with the `log` directive's format string"]


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series("-", index=frame.index, dtype="string")


def build_records(found: pd.DataFrame, head: pd.DataFrame, source: str) -> pd.DataFrame:
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
    """The file's stem (`coredns-0` from `coredns-0.log`): a guess, so callers say so."""
    return path.stem



def log_source(spec: str) -> tuple[str | None, str]:
    """`REPLICA=FILE` as (replica, file); a plain FILE (or one whose name holds `=`) as (None, file)."""
    replica, sep, path = spec.partition("=")
    if not sep or not replica or "/" in replica or Path(spec).exists():
        return None, spec
    return replica, path


def read_logs(sources: list, corefile: str | None = None, log_formats: list[str] = ()) -> ParsedLogs:
    """Parse every log: `sources` are paths or (replica, path) pairs (replica None: none named). Formats from
    `log_formats` and the Corefile's `log` directives are tried first, then the known ones.

    A line's replica is its kubectl `--prefix` (or stern) pod when it has one, else the named replica; when
    neither is there the file's stem stands in, and the file is listed in `guessed_replicas`."""
    formats = [*log_formats, *(formats_from_corefile(corefile) if corefile else [])]
    parts = []
    for item in sources:
        replica, path = item if isinstance(item, tuple) else (None, item)
        parts.append(parse_file(Path(path), replica or replica_from_path(Path(path)), formats, replica_is_guess=not replica))
    return merge(parts)


# Lines parsed at a time: a line's intermediate columns (every regex group as a Python string) cost about
# 2.6 KB, so a whole 1M-line log at once took about 2.6 GB; what a chunk keeps is its compact frames.
CHUNK_LINES = 100_000
BLOCK_CHARS = 1 << 22
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines cuts


def parse_file(path: Path, replica: str, formats: list[str], replica_is_guess: bool) -> ParsedLogs:
    """One log file parsed CHUNK_LINES at a time: the same result as `parse_lines` on all its lines."""
    source, chunks, first_line_no = str(path), [], 1
    for lines in line_chunks(path, CHUNK_LINES):
        chunks.append(parse_chunk(lines, source, replica, formats, replica_is_guess, first_line_no))
        first_line_no += len(lines)
    parsed = merge(chunks)
    parsed.warnings = custom_format_hint(unparsed_texts(parsed), source, bool(formats))
    parsed.lines_by_source = {source: first_line_no - 1}
    return parsed


def line_chunks(path: Path, size: int) -> Iterator[list[str]]:
    """The file's lines, `size` at a time, cut as `read_text(errors="replace").splitlines()` cuts them (undecodable
    bytes replaced, CR LF and a lone CR read as LF), without holding the whole file."""
    chunk: list[str] = []
    try:
        with path.open(errors="replace") as stream:
            rest = ""
            while block := stream.read(BLOCK_CHARS):
                pieces = (rest + block).splitlines(keepends=True)
                rest = pieces.pop() if pieces[-1][-1] not in LINE_BREAKS else ""  # a line the next block ends
                for piece in pieces:
                    chunk.append(piece[:-1])
                    if len(chunk) == size:
                        yield chunk
                        chunk = []
            if rest:
                chunk.append(rest)
    except OSError as err:
        raise LogFormatError(f"{path}: cannot read: {err.strerror}") from None
    if chunk:
        yield chunk


def concat_frames(frames: list[pd.DataFrame], table: list[Field]) -> pd.DataFrame:
    """Conformed frames of one table as one, rows in order; categoricals unified with sorted categories, as
    `conform` makes them (a plain pd.concat turns categoricals of different categories into object columns)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty(table)
    if len(frames) == 1:
        return frames[0]
    return pd.DataFrame({
        c.name: pd.Series(union_categoricals([f[c.name] for f in frames], sort_categories=True)) if c.dtype == "category"
        else pd.concat([f[c.name] for f in frames], ignore_index=True)
        for c in table
    })


def merge(parts: list[ParsedLogs]) -> ParsedLogs:
    if not parts:
        return ParsedLogs.none()
    notices: dict[str, int] = {}
    for p in parts:
        for kind, n in p.notices.items():
            notices[kind] = notices.get(kind, 0) + n
    return ParsedLogs(
        records=concat_frames([p.records for p in parts], LOG_RECORDS),
        errors=concat_frames([p.errors for p in parts], LOG_ERRORS),
        other_lines=sum(p.other_lines for p in parts),
        unparsed=[u for p in parts for u in p.unparsed],
        notices=notices,
        guessed_replicas={k: v for p in parts for k, v in p.guessed_replicas.items()},
        warnings=[w for p in parts for w in p.warnings],
        alerts=[a for p in parts for a in p.alerts],
        lines_by_source={k: v for p in parts for k, v in p.lines_by_source.items()},
        lines_lost=sum(p.lines_lost for p in parts),
    )
