"""Diagnose: Findings from the evidence of a Correlation, and cluster facts to name causes.

Each rule is a small function over the traces table (vectorized masks, then
one Finding per subject: a client pod, a replica, an upstream server, a
name). The diagnoser never sees what a scenario injected; facts only help to
name the cause (the policy, the forward block, the Services in a namespace).

Hops: pod, pod->node, node->coredns, coredns, coredns->upstream, upstream, return.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from itertools import islice

import numpy as np
import pandas as pd

from dnscorrelate.correlate import Correlation
from dnscorrelate.cluster.facts import ClusterFacts, blocking_policies, serving_block

SLOW_UPSTREAM_MS = 100.0
SLOW_COREDNS_MS = 100.0
FORWARD_TIMEOUT_S = 1.0  # a query CoreDNS logged unanswered after this long waited on an upstream (forward gives up at 2-6 s)
NETWORK_REASONS = ["timeout", "refused", "unreachable", "no-route", "no-healthy-upstream", "blocked", "reset"]
IMBALANCE_MIN_TRACES = 20
IMBALANCE_SHARE = 0.8
EVIDENCE_LIMIT = 20
PROBLEM_ORDER = [
    "dropped-before-node", "dropped-at-node", "coredns-unreachable", "forwarding-loop", "upstream-unreachable", "upstream-error",
    "coredns-error", "response-lost", "nxdomain", "nodata", "truncated", "upstream-slow", "slow-coredns", "coredns-imbalance",
    "search-path-expansion", "unanswered", "no-lookups",
]


@dataclass
class Finding:
    code: str
    hop: str
    summary: str
    evidence: dict = field(default_factory=dict)
    count: int = 0
    severity: str = "error"  # error, warning, info
    covers: frozenset[int] = field(init=False, repr=False, compare=False)  # every trace it explains, not only those cited

    def __post_init__(self) -> None:
        self.covers = frozenset(self.evidence.pop(COVERED, self.evidence.get("traces", ())))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "covers"}


COVERED = "_covered"  # evidence() hands a finding all of its trace ids under this key; the finding keeps them apart


def evidence(traces: pd.DataFrame, **extra) -> dict:
    """Trace ids and log references behind a finding (the first EVIDENCE_LIMIT of each)."""
    ids = traces["trace_id"].to_numpy()
    refs = list(islice((r for r in traces.get("log_ref", pd.Series(dtype=str)) if r), EVIDENCE_LIMIT))
    errors = list(islice((e for e in traces.get("error", pd.Series(dtype=str)) if e), 5))
    found = {"traces": [int(t) for t in ids[:EVIDENCE_LIMIT]], "log_lines": refs, COVERED: ids.tolist()}
    if errors:
        found["errors"] = errors
    return {**found, **extra}


def in_ms(value_ns) -> str:
    return f"{value_ns / 1e6:.1f} ms"


def client_traces(traces: pd.DataFrame) -> pd.DataFrame:
    """Requests from workloads: not the ones CoreDNS makes itself (its loop check, health probes). The table
    itself when that is every row: a filtered copy of a million traces is several hundred MB."""
    keep = (~traces["client_role"].isin(["coredns", "upstream", "node"]) & (traces["purpose"] == "lookup")).to_numpy()
    return traces if keep.all() else traces[keep]


def logs_only(traces: pd.DataFrame) -> pd.Series:
    """Traces known from CoreDNS's log alone: no packet shows their client."""
    return (traces["client_vantage"] == "") & (traces["client_role"] == "")


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else f"{n} {word}s"


def names(series: pd.Series, limit: int = 3) -> str:
    values = list(dict.fromkeys(v for v in series.astype(str) if v))
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# --- rules ---------------------------------------------------------------------------


def dropped(traces: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    """Queries that never reached CoreDNS, and no answer: stopped in the pod or at the node."""
    lost = traces[(traces["outcome"] == "timed-out") & (traces["icmp"] == "") & (traces["client_vantage"] != "")]
    lost = lost[~lost["reached_role"].isin(["coredns", "upstream"]) & ~lost["server_role"].isin(["coredns"])]
    findings = []
    for (client, at_node), group in lost.groupby(["client_vantage", "seen_at_node"], sort=True):
        client_ip = group["client_ip"].iloc[0]
        cause = policy_cause(facts, client_ip, group)
        n = len(group)
        if not at_node:
            findings.append(Finding(
                "dropped-before-node", "pod->node",
                f"{plural(n, 'DNS query')} from {client} never left the pod's network namespace or never reached the node: "
                f"{cause or 'check the pod interface, its routes and any firewall inside the pod'}.",
                evidence(group), n))
        else:
            node = group["reached"].iloc[0]
            findings.append(Finding(
                "dropped-at-node", "node->coredns",
                f"{plural(n, 'DNS query')} from {client} reached {node} but never reached CoreDNS and got no answer: "
                f"{cause or 'a NetworkPolicy or firewall on the node drops them'}.",
                evidence(group), n))
    return findings


def policies_phrase(policies: list) -> tuple[str, bool]:
    """('NetworkPolicy a/b, NetworkPolicy c/d', whether there is just one), to name them in a sentence."""
    return ", ".join(f"NetworkPolicy {p.ref}" for p in policies), len(policies) == 1


def policy_cause(facts: ClusterFacts, client_ip: str, group: pd.DataFrame) -> str:
    """Which NetworkPolicy drops DNS from `client_ip` to CoreDNS, from the facts; '' when unknown."""
    proto = group["proto"].iloc[0]
    targets = list(facts.coredns_pods) or [t.split(":")[0] for t in group["dnat_to"] if t]
    client = facts.pod_key(client_ip)
    for direction in ("Egress", "Ingress"):
        for target in targets:
            subject, other = (client_ip, target) if direction == "Egress" else (target, client_ip)
            blocking = blocking_policies(facts, direction, subject, other, proto, 53)
            if not blocking:
                continue
            refs, one = policies_phrase(blocking)
            if direction == "Egress":
                return (f"{refs} {'selects' if one else 'select'} {client} for Egress and allow{'s' if one else ''} no "
                        f"{proto.upper()} 53 to the CoreDNS pods; allow egress to pods labelled k8s-app=kube-dns in kube-system on UDP and TCP 53")
            return (f"{refs} {'selects' if one else 'select'} the CoreDNS pod {facts.coredns_pods.get(target, target)} for Ingress "
                    f"and {'does' if one else 'do'} not admit {client} on {proto.upper()} 53; allow ingress from all pods on UDP and TCP 53")
    return ""


def coredns_unreachable(traces: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    """The DNAT target does not answer: ICMP errors about its port 53. (A query delivered without one
    reached a live process; that is not this finding.)"""
    with_icmp = traces[(traces["icmp_target"] != "").to_numpy()]  # string work only where there is an ICMP error
    icmp = with_icmp["icmp_target"].str.endswith(":53") & (with_icmp["outcome"] != "answered")
    if facts.coredns_pods:
        icmp &= with_icmp["icmp_target"].str.split(":").str[0].isin(list(facts.coredns_pods)) | (with_icmp["server_role"] == "coredns")
    bad = with_icmp[icmp]
    findings = []
    total_to_dns = traces.loc[(traces["dnat_to"] != "").to_numpy(), "client_vantage"].value_counts()
    for target, group in bad.groupby("icmp_target"):
        ip = target.split(":")[0]
        replica = facts.coredns_pods.get(ip, group["reached"].iloc[0] if group["reached_role"].iloc[0] == "coredns" else ip)
        n = len(group)
        share = f" ({n} of {int(total_to_dns.reindex(group['client_vantage'].unique()).sum())} lookups that went through kube-dns)" if len(total_to_dns) else ""
        how = group["icmp"].iloc[0]
        findings.append(Finding(
            "coredns-unreachable", "coredns",
            f"kube-dns sends queries to {replica} at {target}, where nothing answers{share}: {how}. The replica is down but its "
            f"endpoint is still behind the Service (a stale endpoint); check the pod and the kube-dns EndpointSlice.",
            evidence(group, target=target), n))
    return findings


def upstream_problems(traces: pd.DataFrame, upstream: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    findings = []
    unanswered = upstream[~upstream["answered"] & (upstream["depth"] == 1)]
    failed_ids = set(unanswered["trace_id"])
    by_errors = traces[traces["error_reason"].isin(NETWORK_REASONS)]
    # CoreDNS logged them unanswered after waiting as long as forward does: with logs alone, an upstream that
    # did not answer (named when an errors line gives its address).
    silent = traces[logs_only(traces) & (traces["outcome"] == "timed-out") & (traces["log_duration_s"] >= FORWARD_TIMEOUT_S)
                    & traces["error_reason"].isin(["", *NETWORK_REASONS])]
    failing = traces[traces["trace_id"].isin(failed_ids) & (traces["upstream_answered"] == 0) | traces["trace_id"].isin(by_errors["trace_id"])]
    not_connected = traces[(traces["upstream_connects_unanswered"] + traces["upstream_connects_refused"] > 0) & (traces["upstream_answered"] == 0)]
    failing = failing[failing["outcome"] != "answered"].pipe(lambda f: pd.concat([
        f, traces[traces["trace_id"].isin(failed_ids) & (traces["rcode"] == "SERVFAIL")], not_connected[not_connected["outcome"] != "answered"],
        by_errors[(by_errors["upstream_answered"] == 0) & by_errors["rcode"].isin(["SERVFAIL", ""])], silent,
    ])).drop_duplicates("trace_id")
    if len(failing):
        server_of = unanswered.drop_duplicates("trace_id").set_index("trace_id")["server_addr"]
        connect = failing["upstream_connect_target"].mask(failing["upstream_connect_target"] == "")
        target = failing["trace_id"].map(server_of)
        target = target.where(target.notna(), connect)
        target = target.where(target.notna(), failing["error_upstream"])  # where, not fillna: no object downcast warning
        named_by_corefile = failing["qname"].map(lambda q: forward_targets(facts, q))
        target = target.mask(target == "", named_by_corefile).mask(lambda t: t == "", UNKNOWN_UPSTREAM)
        for address, group in failing.groupby(target):
            blocks = facts.forwards_to(address)
            where = "; ".join(f"forward for {', '.join(b.zones)} in the {b.source}" for b in blocks)
            reason = names(group["error_reason"]) or connect_reason(group) or logged_unanswered(group) or "no response"
            policy = upstream_policy_cause(facts, group, address)
            n = len(group)
            advice = f" {policy}." if policy else (f" It is the {where}: fix or remove that forward target." if where else " Check the forward targets in the Corefile.")
            findings.append(Finding(
                "upstream-unreachable", "coredns->upstream",
                f"{upstream_phrase(address)} does not answer ({reason}): {plural(n, 'lookup')} of {names(group['qname'])} "
                f"failed with {names(group['rcode']) or 'a timeout'}." + advice,
                evidence(group, upstream=address), n))
    errored = upstream[upstream["answered"] & upstream["rcode"].isin(["SERVFAIL", "REFUSED", "NOTIMP"]) & (upstream["depth"] == 1)]
    for (address, rcode), group in errored.groupby(["server_addr", "rcode"]):
        ids = traces[traces["trace_id"].isin(group["trace_id"])]
        advice = "the upstream refuses these clients or names (an ACL, or a resolver that is not recursive for them)" if rcode == "REFUSED" else "the upstream itself fails to resolve them"
        findings.append(Finding(
            "upstream-error", "upstream",
            f"Upstream {address} answered {rcode} for {plural(len(group), 'query')} ({names(group['qname'])}): {advice}; CoreDNS passes that on to the pods.",
            evidence(ids, upstream=address), len(group)))
    slow = upstream[upstream["answered"] & (upstream["rtt_ns"].astype("float") > SLOW_UPSTREAM_MS * 1e6) & (upstream["depth"] == 1)]
    for address, group in slow.groupby("server_addr"):
        rtt = group["rtt_ns"].astype(float)
        ids = traces[traces["trace_id"].isin(group["trace_id"])]
        findings.append(Finding(
            "upstream-slow", "upstream",
            f"Upstream {address} is slow: {plural(len(group), 'answer')} took {in_ms(rtt.median())} median, {in_ms(rtt.max())} at worst "
            f"(threshold {SLOW_UPSTREAM_MS:.0f} ms); pods wait on it for every uncached external name. Check that resolver or add a faster one.",
            evidence(ids, upstream=address, median_ms=round(rtt.median() / 1e6, 3)), len(group), "warning"))
    return findings


UNKNOWN_UPSTREAM = "unknown upstream"


def upstream_phrase(address: str) -> str:
    """`CoreDNS's upstream 8.8.8.8:53`, or what is known when nothing names it."""
    return "CoreDNS's upstream (no errors line or Corefile names it)" if address == UNKNOWN_UPSTREAM else f"CoreDNS's upstream {address}"


def forward_targets(facts: ClusterFacts, qname: str) -> str:
    """The forward targets of the Corefile block that would forward `qname` (longest zone), '' if none known."""
    name = qname.lower().rstrip(".")
    best = None
    for block in facts.forward_blocks() if facts.corefile else []:
        for zone in block.zones:
            zone = zone.strip(".").lower()
            if (zone == "" or name == zone or name.endswith("." + zone)) and (best is None or len(zone) > best[0]):
                best = (len(zone), block)
    return ", ".join(best[1].targets) if best else ""


def logged_unanswered(group: pd.DataFrame) -> str:
    """'CoreDNS logged N unanswered after 6.0 s' for traces known from its log alone, else ''."""
    logged = group[logs_only(group) & (group["outcome"] == "timed-out")]
    if logged.empty:
        return ""
    return f"CoreDNS logged {plural(len(logged), 'query')} unanswered after {logged['log_duration_s'].median():.1f} s"


def connect_reason(group: pd.DataFrame) -> str:
    tried = int(group["upstream_connects"].sum())
    if not tried:
        return ""
    refused = int(group["upstream_connects_refused"].sum())
    if refused:
        return f"{plural(refused, 'TCP connection')} refused (RST)"
    return f"{plural(tried, 'TCP connection')} never accepted (no SYN-ACK)"


def upstream_policy_cause(facts: ClusterFacts, group: pd.DataFrame, address: str) -> str:
    """A NetworkPolicy that keeps the CoreDNS replicas from reaching `address`, from the facts."""
    ip = address.rsplit(":", 1)[0]
    for replica in dict.fromkeys(group["server"]):
        replica_ip = next((i for i, key in facts.coredns_pods.items() if key == replica), None)
        for proto in dict.fromkeys([*group["proto"].str.upper(), "UDP", "TCP"]):
            blocking = blocking_policies(facts, "Egress", replica_ip, ip, proto, 53) if replica_ip else []
            if blocking:
                refs, one = policies_phrase(blocking)
                return (f"{refs} {'selects' if one else 'select'} {replica} for Egress and allow{'s' if one else ''} no {proto} 53 to {ip}: new connections are dropped "
                        "(flows already open may go on until conntrack forgets them); allow egress to the upstream on UDP and TCP 53")
    return ""


def slow_coredns(traces: pd.DataFrame) -> list[Finding]:
    own = traces["server_self_ns"].astype(float)
    slow = traces[(own > SLOW_COREDNS_MS * 1e6) & (traces["server_role"] == "coredns")]
    findings = []
    for replica, group in slow.groupby("server"):
        t = group["server_self_ns"].astype(float)
        findings.append(Finding(
            "slow-coredns", "coredns",
            f"{replica} itself took {in_ms(t.median())} median ({in_ms(t.max())} at worst) to answer {plural(len(group), 'query')}, "
            f"not counting upstream time: check its CPU limits and load, and the plugins in its Corefile.",
            evidence(group), len(group), "warning"))
    return findings


def slow_forwarded_in_logs(traces: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    """Slow answers CoreDNS did not give itself (not authoritative), known from its log alone: the log's
    duration holds the upstream's round trip and CoreDNS's own time, which only packets split."""
    own = traces["server_self_ns"].astype(float)
    slow = traces[logs_only(traces) & (traces["outcome"] == "answered") & own.isna() & traces["rcode"].isin(["NOERROR", "NXDOMAIN"])
                  & (traces["error"] == "") & (traces["server_ns"].astype(float) > SLOW_UPSTREAM_MS * 1e6)]
    if slow.empty:
        return []
    t = slow["server_ns"].astype(float)
    upstream = names(slow["qname"].map(lambda q: forward_targets(facts, q)))
    return [Finding(
        "upstream-slow", "upstream",
        f"{plural(len(slow), 'answer')} CoreDNS did not serve itself ({names(slow['qname'])}) took {in_ms(t.median())} median, "
        f"{in_ms(t.max())} at worst, by its log: that time is mostly its upstream{' ' + upstream if upstream else ''}'s round trip "
        "(the log does not split it from CoreDNS's own time; a capture on the replica would).",
        evidence(slow, **({"upstream": upstream} if upstream else {})), len(slow), "warning")]


def own_queries(traces: pd.DataFrame, findings: list[Finding]) -> list[Finding]:
    """CoreDNS's own queries (loop probes, forward health checks) tell something only when they fail: the
    upstream they went to does not answer. Added to the finding that already names that upstream, or one of
    their own."""
    own = traces[traces["purpose"] != "lookup"]
    failed = own[own["error_reason"].isin(NETWORK_REASONS) | (own["outcome"] == "timed-out")]
    address = failed["error_upstream"].mask(failed["error_upstream"] == "", failed["dst_ip"]).mask(lambda a: a == "", UNKNOWN_UPSTREAM)
    new = []
    for target, group in failed.groupby(address):
        kinds = group["purpose"].value_counts()
        what = " and ".join(
            {"loop-probe": f"{plural(int(n), 'loop-plugin probe')} (HINFO for a random name)",
             "health-check": f"{plural(int(n), 'forward health check')} (. IN NS)"}[kind] for kind, n in kinds.items())
        reason = names(group["error_reason"]) or "no response"
        known = next((f for f in findings if f.code == "upstream-unreachable" and host_of(f.evidence.get("upstream", "")) == host_of(target)), None)
        if known:
            known.summary += f" CoreDNS's own {what} to it failed too ({reason})."
            continue
        if "health-check" in kinds:
            summary = (f"{upstream_phrase(target)} does not answer its {what} ({reason}): the forward plugin marks it down, "
                       "and lookups it forwards there fail. Check that resolver and the replicas' path to it.")
            severity = "error"
        else:
            summary = (f"{upstream_phrase(target)} does not answer its {what} ({reason}) from {names(group['replica'])}: "
                       "the replica cannot reach it (a firewall, a NetworkPolicy, a route), or it ignores HINFO queries. "
                       "Names CoreDNS forwards there will fail the same way; test one with dig from a pod.")
            severity = "warning"
        new.append(Finding("upstream-unreachable", "coredns->upstream", summary, evidence(group, upstream=target, own_queries=True),
                           len(group), severity))
    return new


def host_of(address: str) -> str:
    """`10.0.0.1` of `10.0.0.1:53`, `2001:db8::1` of `[2001:db8::1]:53`; the address itself without a port."""
    if address.startswith("["):
        return address[1:].split("]")[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


LOOP_LINE = re.compile(r'Loop \((?P<path>[^)]*)\) detected for zone "(?P<zone>[^"]*)"')
HEALTH_TOOK = re.compile(r"took more than \S+: (?P<took>\S+)$")


def logged_alerts(alerts: list[dict]) -> list[Finding]:
    """What CoreDNS said about itself: the loop plugin's fatal loop (a forwarding loop), its own /health
    answering late or not (an overloaded or throttled replica)."""
    findings = []
    frame = pd.DataFrame(alerts, columns=["kind", "source", "line_no", "replica", "ts_ns", "text"])
    refs = lambda group: {"traces": [], "log_lines": [f"{s}:{n}" for s, n in zip(group["source"], group["line_no"])][:EVIDENCE_LIMIT]}
    for replica, group in frame[frame["kind"] == "loop-detected"].groupby("replica"):
        found = group["text"].str.extract(LOOP_LINE)
        zones = names(found["zone"].dropna()) or "?"
        findings.append(Finding(
            "forwarding-loop", "coredns->upstream",
            f"{replica or 'CoreDNS'} detected a forwarding loop for zone {zones} ({names(found['path'].dropna(), 1)}, "
            f"{plural(len(group), 'time')}): its forward target sends its queries back to it, so the loop plugin stops "
            "CoreDNS (CrashLoopBackOff). Most often `forward . /etc/resolv.conf` on a node whose resolv.conf names a local "
            "stub (127.0.0.53, systemd-resolved): give the kubelet the real resolv.conf (resolvConf: /run/systemd/resolve/resolv.conf) "
            "or forward to the upstream's address.", refs(group), len(group)))
    for replica, group in frame[frame["kind"] == "health-slow"].groupby("replica"):
        if len(group) < 2:  # once (at start-up, say) is not a pattern
            continue
        took = group["text"].str.extract(HEALTH_TOOK)["took"].dropna()
        worst = f", up to {max(took, key=lambda t: duration_of(t))}" if len(took) else ""
        findings.append(Finding(
            "slow-coredns", "coredns",
            f"{replica or 'CoreDNS'}'s own health endpoint answered late or not at all ({plural(len(group), 'time')}{worst}): "
            "the replica is overloaded or CPU-throttled, and its answers wait too. Check its CPU limits and load.",
            refs(group), len(group), "warning"))
    return findings


def duration_of(text: str) -> float:
    """Seconds of a Go duration's text (`1.23888291s`, `950ms`); 0 when unreadable."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|µs|us|ns|m|s)", text))


def response_lost(traces: pd.DataFrame) -> list[Finding]:
    lost = traces[(traces["outcome"] == "partial") & (traces["client_vantage"] != "")]
    return [
        Finding("response-lost", "return",
                f"CoreDNS answered {plural(len(group), 'query')} from {client} but the responses never reached the pod: "
                f"something on the way back (conntrack, a policy on replies, the node) drops them.",
                evidence(group), len(group))
        for client, group in lost.groupby("client_vantage")
    ]


def truncated(traces: pd.DataFrame) -> list[Finding]:
    tc = traces[traces["tc"] & (traces["proto"] == "udp")]
    findings = []
    for name, group in tc.groupby("qname"):
        retried = traces[(traces["qname"] == name) & (traces["proto"] == "tcp")]
        hop = "upstream" if (group["served_from"] == "upstream").any() else "coredns"
        findings.append(Finding(
            "truncated", hop,
            f"The answer for {name} did not fit in UDP: {plural(len(group), 'response')} had the TC bit"
            + (f" and the client retried over TCP {plural(len(retried), 'time')}" if len(retried) else " and no TCP retry was seen")
            + ". Large answers cost a second round trip; make sure TCP 53 is allowed everywhere on the path.",
            evidence(pd.concat([group, retried])), len(group), "warning"))
    return findings


def imbalance(traces: pd.DataFrame, upstream: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    """Requests reaching CoreDNS replicas (directly, or from NodeLocal DNS) piling onto one of them."""
    replicas = set(facts.coredns_pods.values()) or set(traces.loc[traces["server_role"] == "coredns", "server"])
    direct = traces.loc[traces["server_role"] == "coredns", ["trace_id", "server"]]
    relayed = upstream.loc[upstream["server"].isin(replicas), ["trace_id", "server"]]
    served = pd.concat([direct, relayed])
    if len(served) < IMBALANCE_MIN_TRACES:
        return []
    counts = served["server"].value_counts()
    counts = counts.reindex(sorted(set(counts.index) | replicas), fill_value=0)
    if len(counts) < 2 or counts.max() / counts.sum() <= IMBALANCE_SHARE:
        return []
    spread = ", ".join(f"{r} {c}" for r, c in counts.sort_values(ascending=False).items())
    via = " (all relayed by NodeLocal DNS, whose force_tcp connection sticks to one replica)" if len(relayed) and not len(direct) else ""
    return [Finding(
        "coredns-imbalance", "node->coredns",
        f"Queries are not spread over the CoreDNS replicas ({spread}): one replica takes {counts.max() / counts.sum():.0%}{via}. "
        "Long-lived TCP connections or clients pinned to one address do this; check kube-proxy's balancing and connection reuse.",
        evidence(traces[traces["trace_id"].isin(served["trace_id"])]), int(counts.sum()), "warning")]


def search_lists(traces: pd.DataFrame, facts: ClusterFacts) -> pd.DataFrame:
    """(client_ip, suffix) pairs: each client's search domains, from the facts, else the Kubernetes
    list for the namespace its names suggest (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`)."""
    d = facts.domain
    clients = pd.Series(traces["client_ip"].unique())
    known = clients[clients.isin(list(facts.search))]
    pairs = [(ip, s.rstrip(".").lower()) for ip in known for s in facts.search[ip]]
    unknown = traces[~traces["client_ip"].isin(set(known))]
    ns = unknown["qname"].str.lower().str.extract(rf"\.([a-z0-9-]+)\.svc\.{re.escape(d)}\.$")[0]
    guessed = (
        pd.DataFrame({"client_ip": unknown["client_ip"], "ns": ns}).dropna()
        .groupby(["client_ip", "ns"]).size().reset_index(name="n")
        .sort_values(["client_ip", "n"], ascending=[True, False]).drop_duplicates("client_ip")
    )
    pairs += [(ip, f"{n}.svc.{d}") for ip, n in zip(guessed["client_ip"], guessed["ns"])]
    pairs += [(ip, s) for ip in unknown["client_ip"].unique() for s in (f"svc.{d}", d)]
    return pd.DataFrame(pairs, columns=["client_ip", "suffix"])


def split_search(traces: pd.DataFrame, facts: ClusterFacts) -> pd.Series:
    """Each trace's base name where its qname is `base.<one of its client's search domains>.`, else ''."""
    if traces.empty:
        return pd.Series("", index=traces.index, dtype=object)
    asked = traces[["client_ip", "qname"]]
    distinct = asked.drop_duplicates()  # lookups repeat: split each distinct (client, name) once
    candidates = distinct.reset_index().merge(search_lists(traces, facts), on="client_ip")
    qname = candidates["qname"].str.lower()
    tail = "." + candidates["suffix"] + "."
    hit = candidates[[q.endswith(t) for q, t in zip(qname, tail)]].copy()
    hit["base"] = [q[: -len(t)] for q, t in zip(hit["qname"].str.lower(), "." + hit["suffix"] + ".")]
    longest = hit.assign(length=hit["suffix"].str.len()).sort_values("length", ascending=False).drop_duplicates("index")
    base = longest.set_index("index")["base"].reindex(distinct.index).fillna("")
    joined = asked.merge(distinct.assign(base=base.to_numpy()), on=["client_ip", "qname"], how="left")
    return pd.Series(joined["base"].to_numpy(), index=traces.index)


def lower(column: pd.Series) -> pd.Series:
    """`column.str.lower()`, each distinct name lowered once: rows share its string (a million rows of a few
    names are not a million new strings)."""
    codes, distinct = pd.factorize(column)
    lowered = np.append(distinct.str.lower().to_numpy(dtype=object), np.nan) if len(distinct) else np.array([np.nan], dtype=object)
    return pd.Series(lowered[codes], index=column.index, name=column.name)


def per_distinct(test, *columns: pd.Series) -> np.ndarray:
    """`test(*values)` for each row of `columns`, computed once per distinct combination of values."""
    combined = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes, distinct = pd.factorize(column)
        combined = combined * (len(distinct) + 1) + codes + 1
    _, first, rows = np.unique(combined, return_index=True, return_inverse=True)
    values = [column.to_numpy()[first] for column in columns]
    return np.array([test(*row) for row in zip(*values)], dtype=bool)[rows] if len(first) else np.zeros(len(combined), dtype=bool)


NAME_COLUMNS = ["trace_id", "client_ip", "client_vantage", "qname", "qtype", "rcode", "answers", "ancount", "responses_seen", "tc", "aa",
                "served_from", "upstream_server", "log_ref", "error"]


def name_problems(traces: pd.DataFrame, facts: ClusterFacts) -> list[Finding]:
    """NXDOMAIN and NODATA for what the workload meant, and the search-list noise around it."""
    columns = [c for c in NAME_COLUMNS if c in traces.columns]  # copy only what the rules and evidence read
    answered = traces.loc[(traces["outcome"] == "answered").to_numpy(), columns]
    if answered.empty:
        return []
    # Only NXDOMAIN answers can be search-list noise or a missing Service: split just those.
    denied = answered["rcode"] == "NXDOMAIN"
    answered["base"] = ""
    answered.loc[denied, "base"] = split_search(answered[denied], facts).to_numpy()
    answered["multi_label_base"] = False
    answered.loc[denied, "multi_label_base"] = answered.loc[denied, "base"].str.contains(".", regex=False).to_numpy(dtype=bool)
    qnames = lower(answered["qname"])
    findings = []

    # Search-list noise: NXDOMAIN expansions of a dotted name the same client then asked as itself.
    noise = answered[(answered["rcode"] == "NXDOMAIN") & answered["multi_label_base"]]
    asked_plain = set(zip(answered["client_ip"], qnames))
    noise = noise[np.array([(c, b + ".") in asked_plain for c, b in zip(noise["client_ip"], noise["base"])], dtype=bool)]
    for (client, base), group in noise.groupby(["client_vantage", "base"]):
        finals = answered[(answered["client_vantage"] == client) & (qnames == base + ".")]
        outcome = names(finals["rcode"])
        findings.append(Finding(
            "search-path-expansion", "pod",
            f"{client} looked up {base} through its search list first: {plural(len(group), 'extra query')} "
            f"({names(group['qname'], 2)}) all NXDOMAIN before {base}. itself ({outcome}). "
            f"Use the trailing-dot name {base}. or lower ndots (dnsConfig options ndots:1) to skip them.",
            evidence(pd.concat([group, finals])), len(group), "info"))

    # NXDOMAIN for what was meant: not search noise.
    nx = answered[(answered["rcode"] == "NXDOMAIN") & ~answered.index.isin(noise.index)].copy()
    in_cluster_lookup = (nx["base"] != "") & ~nx["multi_label_base"]
    # A single-label name tried through the search list (and then as itself) is one in-cluster lookup.
    bare = set(zip(nx.loc[in_cluster_lookup, "client_ip"], nx.loc[in_cluster_lookup, "base"] + "."))
    part_of_lookup = np.array([(c, q) in bare for c, q in zip(nx["client_ip"], nx["qname"].str.lower())], dtype=bool)
    nx["service"] = np.where(in_cluster_lookup, nx["base"], "")
    nx.loc[part_of_lookup, "service"] = nx.loc[part_of_lookup, "qname"].str.rstrip(".")
    direct = nx["qname"].str.lower().str.extract(rf"^(?P<svc>[^.]+)\.(?P<ns>[^.]+)\.svc\.{re.escape(facts.domain)}\.$")
    cluster_rows = (nx["service"] != "") | direct["svc"].notna()
    nx["service"] = nx["service"].where(nx["service"] != "", direct["svc"].fillna(""))
    namespace_of = {ip: facts.pods[ip].metadata.namespace for ip in facts.pods}
    nx["namespace"] = direct["ns"].fillna(pd.Series(nx["client_ip"].map(namespace_of), index=nx.index)).fillna("")
    aliased = nx["answers"].str.contains("CNAME ", regex=False)
    for namespace, group in nx[cluster_rows & ~aliased].groupby("namespace"):
        services = sorted(set(group["service"]))
        known = facts.services.get(namespace)
        listing = f" Services in {namespace}: {', '.join(sorted(known))}." if known else ""
        missing = ", ".join(services[:3]) + (f" and {len(services) - 3} more" if len(services) > 3 else "")
        findings.append(Finding(
            "nxdomain", "coredns",
            f"No Service {missing} in namespace {namespace or '?'}: {plural(len(group), 'lookup')} "
            f"({names(group['qname'], 2)}) got NXDOMAIN from CoreDNS.{listing} Check the name, the namespace, and that the Service exists.",
            evidence(group, kind="in-cluster", services=services), len(group)))
    for qname, group in nx[aliased].groupby("qname"):
        target = group["answers"].str.extract(r"CNAME (\S+)")[0].dropna()
        findings.append(Finding(
            "nxdomain", "upstream",
            f"{qname} is an alias (CNAME) of {target.iloc[-1] if len(target) else 'another name'}, which does not exist: "
            f"{plural(len(group), 'lookup')} got NXDOMAIN. Point the alias (an ExternalName Service?) at a name that resolves.",
            evidence(group, kind="alias"), len(group)))
    for qname, group in nx[~cluster_rows & ~aliased].groupby("qname"):
        from_upstream = (group["served_from"] == "upstream").any()
        servers = names(group["upstream_server"])
        where = f"the upstream resolver {servers}" if from_upstream and servers else ("the upstream resolver" if from_upstream else "CoreDNS")
        findings.append(Finding(
            "nxdomain", "upstream" if from_upstream else "coredns",
            f"{qname} does not exist according to {where}: {plural(len(group), 'lookup')} got NXDOMAIN. "
            "It is an external name: check its spelling and its public or private zone.",
            evidence(group, kind="external"), len(group)))

    # NODATA: NOERROR without the type asked, a CNAME without its A included; AAAA next to a good A is normal.
    with_a = per_distinct(lambda answers: re.search(r"(?:^|, )A ", answers) is not None, answered["answers"])
    a_answered = set(pd.DataFrame({"c": answered["client_ip"], "q": qnames, "a": with_a}).drop_duplicates().itertuples(index=False, name=None))
    has_type = per_distinct(lambda qtype, answers: f", {qtype} " in f", {answers}", answered["qtype"], answered["answers"])
    missing = answered[(answered["rcode"] == "NOERROR") & (answered["qtype"] != "") & ~has_type]
    normal_aaaa = [(q == "AAAA") and ((c, n, True) in a_answered) for q, c, n in zip(missing["qtype"], missing["client_ip"], missing["qname"].str.lower())]
    missing = missing[~np.array(normal_aaaa, dtype=bool)] if len(missing) else missing
    missing = missing[missing["qtype"].isin(["A", "AAAA", "SRV", "PTR", "MX", "TXT", "CNAME"]) & ~missing.index.isin(noise.index)]
    # A truncated answer, or one whose records the capture could not keep (ancount > 0, none decoded), is not NODATA;
    # nor is one no response packet was seen of: CoreDNS's log line has no answer count.
    missing = missing[~missing["tc"] & ~((missing["ancount"] > 0) & (missing["answers"] == "")) & (missing["responses_seen"] > 0)]
    for (qname, qtype), group in missing.groupby(["qname", "qtype"]):
        cname = group["answers"].str.extract(r"CNAME (\S+)")[0].dropna()
        detail = f"a CNAME to {cname.iloc[0]} but no {qtype} record for it" if len(cname) else f"no {qtype} record"
        hop = "coredns" if group["aa"].any() or group["served_from"].eq("authoritative").any() else ("upstream" if group["served_from"].eq("upstream").any() else "coredns")
        findings.append(Finding(
            "nodata", hop,
            f"{qname} exists but has {detail}: {plural(len(group), 'lookup')} got NOERROR with nothing to connect to. "
            + ("Make the CNAME target resolvable (an ExternalName Service points at a name without addresses?)." if len(cname) else f"Add the {qtype} record or ask for the right type."),
            evidence(group), len(group), "warning"))
    return findings


def unanswered(traces: pd.DataFrame, explained: set[int]) -> list[Finding]:
    """Lookups nobody answered that no rule explains, said plainly, with where they were last seen."""
    rest = traces[(traces["outcome"] == "timed-out") & ~traces["trace_id"].isin(explained)]
    findings = []
    for replica, group in rest[logs_only(rest)].groupby("server"):
        findings.append(Finding(
            "unanswered", "coredns",
            f"{replica} logged {plural(len(group), 'lookup')} of {names(group['qname'])} without an answer (no response flags, "
            f"size 0) after {in_ms(group['server_ns'].astype(float).median())} median: a plugin gave up without writing one. "
            + (f"Its errors log says: {next(e for e in group['error'] if e)}" if (group["error"] != "").any()
               else "Its errors log (the errors plugin) says which and why."), evidence(group), len(group)))
    rest = rest[~logs_only(rest)]
    for (reached, role), group in rest.groupby(["reached", "reached_role"]):
        if role == "coredns":
            hop = "coredns"
            story = (f"reached {reached}, which is alive (no ICMP error) but neither answered nor logged them before the client gave up, "
                     "and no upstream query was seen: CoreDNS is stuck, most often waiting on an upstream it cannot connect to "
                     "(a TCP connection that never completes carries no DNS and is not captured). Check its errors log and its path to the upstream.")
        else:
            hop = {"pod": "pod->node", "node": "node->coredns"}.get(role, "pod")
            story = f"got no answer; they were last seen at {reached or 'no vantage point'}."
        findings.append(Finding("unanswered", hop, f"{plural(len(group), 'lookup')} of {names(group['qname'])} {story}", evidence(group), len(group)))
    return findings


FAILURE_RCODES = ["SERVFAIL", "REFUSED", "NOTIMP", "FORMERR"]


def server_failures(traces: pd.DataFrame, facts: ClusterFacts, explained: set[int]) -> list[Finding]:
    """Failure answers the DNS server gave on its own: no failed upstream exchange (or other rule) explains them."""
    rest = traces[(traces["outcome"] == "answered") & traces["rcode"].isin(FAILURE_RCODES) & ~traces["trace_id"].isin(explained)]
    findings = []
    for (server, role, rcode), group in rest.groupby(["server", "server_role", "rcode"]):
        why = refused_cause(group, facts, role) if rcode == "REFUSED" else failure_cause(group, facts, role)
        logged = logs_only(group).all()
        behind = ("by its log, which does not show whether an upstream answered so first" if logged
                  else "with no failed upstream exchange behind it")
        findings.append(Finding(
            "coredns-error", "coredns",
            f"{server} answered {rcode}{'' if logged else ' itself'} to {plural(len(group), 'lookup')} of {names(group['qname'])}"
            f"{' from ' + names(group['client_vantage']) if names(group['client_vantage']) else ''}, {behind}: {why}",
            evidence(group, rcode=rcode), len(group)))
    return findings


def refused_cause(group: pd.DataFrame, facts: ClusterFacts, role: str) -> str:
    if role != "coredns" or not facts.corefile:
        return "it refuses names outside its server blocks' zones and clients an acl plugin blocks. Check its Corefile."
    blocks = facts.server_blocks()  # parsed once for all the names
    serving = {q: serving_block(blocks, q) for q in pd.unique(group["qname"])}
    unserved = [q for q, block in serving.items() if block is None]
    if unserved:
        zones = ", ".join(dict.fromkeys(z for b in blocks if b.port == 53 for z in b.zones)) or "none on port 53"
        return (f"no server block serves {', '.join(unserved[:3])} (the Corefile's zones: {zones}), and CoreDNS refuses names "
                "outside its zones. Add a `.` server block that forwards, or one for that zone.")
    with_acl = [b for b in dict.fromkeys(serving.values()) if "acl" in b.plugins]
    if with_acl:
        where = "; ".join(f"the server block for {', '.join(b.zones)} in the {b.source}" for b in with_acl)
        return f"{where} has an acl plugin, which answers REFUSED to the clients and query types it blocks. Check its rules against these clients."
    return "the server block that serves them has no acl plugin, so one of its other plugins refused them. Check that block's plugins."


def failure_cause(group: pd.DataFrame, facts: ClusterFacts, role: str) -> str:
    logged = [e for e in group["error"] if e]
    if logged:
        return f"its errors log says: {logged[0]}"
    block = facts.serving_block(group["qname"].iloc[0]) if role == "coredns" and facts.corefile else None
    if block is not None and "errors" not in block.plugins:
        return (f"the server block for {', '.join(block.zones)} has no errors plugin, so CoreDNS logged no reason. "
                "Add `errors` to it and look again.")
    return "CoreDNS logged no reason for it. Check its errors log and the plugins of the server block that serves these names."


def no_lookups(correlation: Correlation) -> Finding:
    """Nothing to diagnose: said as a warning, never as `ok`, with what the capture did see."""
    stats = correlation.stats
    own = stats.get("own_queries", 0)
    seen = (f"{plural(stats.get('packets', 0), 'packet')} ({stats.get('dns_packets', 0)} DNS) and "
            f"{plural(stats.get('log_records', 0), 'CoreDNS log record')} were read"
            + (f"; {own} of the lookups were CoreDNS's own (loop probes, forward health checks)" if own else ""))
    api = [a for a in correlation.log_alerts if a["kind"] == "api-unreachable"]
    if api:
        seen += (f". CoreDNS could not reach the Kubernetes API ({plural(len(api), 'line')}, e.g. {api[0]['source']}:{api[0]['line_no']}), "
                 "so it serves no or stale cluster names until it does")
    return Finding("no-lookups", "pod", f"No lookup from a workload was captured, so there is nothing to diagnose: {seen}. "
                   "Check that the pod looked a name up while the capture ran and that its network namespace was captured.",
                   {"stats": {k: stats.get(k, 0) for k in ("packets", "dns_packets", "log_records", "traces", "lost_samples")}},
                   0, "warning")


def findings_about(findings: list[Finding], trace_ids: set[int]) -> list[Finding]:
    """The findings that explain any of `trace_ids`, each citing only those; findings about no trace in particular stay."""
    kept = []
    for f in findings:
        mine = sorted(f.covers & trace_ids)
        if not f.covers:
            kept.append(f)
        elif mine:  # cite these lookups, which need not be among the ones cited for everybody
            kept.append(replace(f, evidence={**f.evidence, "traces": mine[:EVIDENCE_LIMIT], COVERED: mine}))
    return kept


@dataclass
class Analysis:
    """A correlation and its diagnosis: what every output presents."""

    correlation: Correlation
    findings: list[Finding]

    def restricted_to(self, trace_ids: set[int]) -> Analysis:
        """The traces in `trace_ids`, with their hops and upstream exchanges, and the findings about them."""
        return Analysis(self.correlation.restricted_to(trace_ids), findings_about(self.findings, trace_ids))


def diagnose(correlation: Correlation, facts: ClusterFacts | None = None) -> list[Finding]:
    """Findings, most severe first; `ok` alone when nothing is wrong, `no-lookups` when there was nothing to look at."""
    facts = facts or ClusterFacts()
    traces = client_traces(correlation.traces)
    alerts = logged_alerts(correlation.log_alerts)
    if traces.empty:
        return alerts + own_queries(correlation.traces, alerts) or [no_lookups(correlation)]
    findings: list[Finding] = []
    findings += dropped(traces, facts)
    findings += coredns_unreachable(traces, facts)
    findings += upstream_problems(traces, correlation.upstream, facts)
    findings += response_lost(traces)
    findings += name_problems(traces, facts)
    findings += truncated(traces)
    findings += slow_coredns(traces)
    findings += slow_forwarded_in_logs(traces, facts)
    findings += imbalance(traces, correlation.upstream, facts)
    explained = set().union(*(f.covers for f in findings))
    findings += server_failures(traces, facts, explained)
    findings += unanswered(traces, explained)
    findings += own_queries(correlation.traces, findings)
    findings += alerts
    findings.sort(key=lambda f: (PROBLEM_ORDER.index(f.code), -f.count))
    if not any(f.severity in ("error", "warning") for f in findings):
        good = traces.loc[((traces["outcome"] == "answered") & traces["rcode"].isin(["NOERROR"])).to_numpy(),  # what is read, not the table
                          ["trace_id", "log_ref", "error", "total_ns", "client_vantage", "client_role"]]
        findings.insert(0, Finding(
            "ok", "", f"{plural(len(good), 'lookup')} answered correctly, "
            + ("by CoreDNS's log (which shows no other hop)" if len(good) and logs_only(good).all() else "every hop in order")
            + (f" (p50 {in_ms(good['total_ns'].astype(float).median())} at the client)." if len(good) and good["total_ns"].notna().any() else "."),
            evidence(good), len(good), "info"))
    return findings
