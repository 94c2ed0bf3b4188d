"""Hop `coredns`: a CoreDNS (or NodeLocal DNS) replica itself, its plugins, its cache, its zones."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dnscorrelate.cluster.facts import ClusterFacts, serving_block
from dnscorrelate.correlate.vantage import VANTAGE
from dnscorrelate.diagnose.evidence import Evidence, failed, logs_only
from dnscorrelate.diagnose.finding import EVIDENCE_LIMIT, Finding, evidence, finding
from dnscorrelate.diagnose.names import per_distinct
from dnscorrelate.diagnose.words import duration_of, in_ms, names, plural
from dnscorrelate.findings import COREDNS, NODE_COREDNS, POD, POD_NODE, SERVER, UPSTREAM

SLOW_COREDNS_MS = 100.0
HEALTH_TOOK = re.compile(r"took more than \S+: (?P<took>\S+)$")


def coredns_unreachable(ev: Evidence) -> list[Finding]:
    """The DNAT target does not answer: ICMP errors about its port 53. (A query delivered without one
    reached a live process; that is not this finding.)"""
    traces, facts = ev.traces, ev.facts
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
        findings.append(finding(
            "coredns-unreachable",
            f"kube-dns sends queries to {replica} at {target}, where nothing answers{share}: {how}. The replica is down but its "
            f"endpoint is still behind the Service (a stale endpoint); check the pod and the kube-dns EndpointSlice.",
            evidence(group, target=target), n))
    return findings


def nxdomain(ev: Evidence) -> list[Finding]:
    """NXDOMAIN for what the workload meant (not its search list's noise): a missing Service, an alias to
    nothing, an external name."""
    answered, _ = ev.answered
    facts = ev.facts
    noise = ev.search_noise
    nx = answered[(answered["rcode"] == "NXDOMAIN") & ~answered.index.isin(noise.index)].copy()
    if nx.empty:
        return []
    findings = []
    one_place = (nx["coverage"] == VANTAGE).to_numpy()
    for server, group in nx[one_place].groupby("server"):
        findings.append(finding(
            "nxdomain",
            f"{names(group['qname'])} {'does' if group['qname'].nunique() == 1 else 'do'} not exist according to {server}: "
            f"{plural(len(group), 'lookup')} got NXDOMAIN, seen at {names(group['client_vantage'])}. "
            "Check the spelling, and the search list that may have made the name.",
            evidence(group, kind="seen", server=server), len(group), hop=SERVER))
    nx = nx[~one_place]
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
        findings.append(finding(
            "nxdomain",
            f"No Service {missing} in namespace {namespace or '?'}: {plural(len(group), 'lookup')} "
            f"({names(group['qname'], 2)}) got NXDOMAIN from CoreDNS.{listing} Check the name, the namespace, and that the Service exists.",
            evidence(group, kind="in-cluster", services=services), len(group), hop=COREDNS))
    for qname, group in nx[aliased].groupby("qname"):
        target = group["answers"].str.extract(r"CNAME (\S+)")[0].dropna()
        findings.append(finding(
            "nxdomain",
            f"{qname} is an alias (CNAME) of {target.iloc[-1] if len(target) else 'another name'}, which does not exist: "
            f"{plural(len(group), 'lookup')} got NXDOMAIN. Point the alias (an ExternalName Service?) at a name that resolves.",
            evidence(group, kind="alias"), len(group), hop=UPSTREAM))
    for qname, group in nx[~cluster_rows & ~aliased].groupby("qname"):
        from_upstream = (group["served_from"] == "upstream").any()
        servers = names(group["upstream_server"])
        where = f"the upstream resolver {servers}" if from_upstream and servers else ("the upstream resolver" if from_upstream else "CoreDNS")
        findings.append(finding(
            "nxdomain",
            f"{qname} does not exist according to {where}: {plural(len(group), 'lookup')} got NXDOMAIN. "
            "It is an external name: check its spelling and its public or private zone.",
            evidence(group, kind="external"), len(group), hop=UPSTREAM if from_upstream else COREDNS))
    return findings


def nodata(ev: Evidence) -> list[Finding]:
    """NOERROR without the type asked, a CNAME without its A included; AAAA next to a good A is normal."""
    answered, qnames = ev.answered
    if answered.empty:
        return []
    with_a = per_distinct(lambda answers: re.search(r"(?:^|, )A ", answers) is not None, answered["answers"])
    a_answered = set(pd.DataFrame({"c": answered["client_ip"], "q": qnames, "a": with_a}).drop_duplicates().itertuples(index=False, name=None))
    has_type = per_distinct(lambda qtype, answers: f", {qtype} " in f", {answers}", answered["qtype"], answered["answers"])
    missing = answered[(answered["rcode"] == "NOERROR") & (answered["qtype"] != "") & ~has_type]
    normal_aaaa = [(q == "AAAA") and ((c, n, True) in a_answered) for q, c, n in zip(missing["qtype"], missing["client_ip"], missing["qname"].str.lower())]
    missing = missing[~np.array(normal_aaaa, dtype=bool)] if len(missing) else missing
    missing = missing[missing["qtype"].isin(["A", "AAAA", "SRV", "PTR", "MX", "TXT", "CNAME"]) & ~missing.index.isin(ev.search_noise.index)]
    # A truncated answer, or one whose records the capture could not keep (ancount > 0, none decoded), is not NODATA;
    # nor is one no response packet was seen of: CoreDNS's log line has no answer count.
    missing = missing[~missing["tc"] & ~((missing["ancount"] > 0) & (missing["answers"] == "")) & (missing["responses_seen"] > 0)]
    findings = []
    for (qname, qtype), group in missing.groupby(["qname", "qtype"]):
        cname = group["answers"].str.extract(r"CNAME (\S+)")[0].dropna()
        detail = f"a CNAME to {cname.iloc[0]} but no {qtype} record for it" if len(cname) else f"no {qtype} record"
        hop = COREDNS if group["aa"].any() or group["served_from"].eq("authoritative").any() else (UPSTREAM if group["served_from"].eq("upstream").any() else COREDNS)
        hop = SERVER if group["coverage"].eq(VANTAGE).all() else hop
        findings.append(finding(
            "nodata",
            f"{qname} exists but has {detail}: {plural(len(group), 'lookup')} got NOERROR with nothing to connect to. "
            + ("Make the CNAME target resolvable (an ExternalName Service points at a name without addresses?)." if len(cname) else f"Add the {qtype} record or ask for the right type."),
            evidence(group), len(group), hop=hop))
    return findings


def truncated(ev: Evidence) -> list[Finding]:
    traces = ev.lookups
    tc = traces[traces["tc"] & (traces["proto"] == "udp")]
    findings = []
    for name, group in tc.groupby("qname"):
        retried = traces[(traces["qname"] == name) & (traces["proto"] == "tcp")]
        hop = UPSTREAM if (group["served_from"] == "upstream").any() else COREDNS
        hop = SERVER if (group["coverage"] == VANTAGE).all() else hop
        findings.append(finding(
            "truncated",
            f"The answer for {name} did not fit in UDP: {plural(len(group), 'response')} had the TC bit"
            + (f" and the client retried over TCP {plural(len(retried), 'time')}" if len(retried) else " and no TCP retry was seen")
            + ". Large answers cost a second round trip; make sure TCP 53 is allowed everywhere on the path.",
            evidence(pd.concat([group, retried])), len(group), hop=hop))
    return findings


def slow_coredns(ev: Evidence) -> list[Finding]:
    traces = ev.traces
    own = traces["server_self_ns"].astype(float)
    slow = traces[(own > SLOW_COREDNS_MS * 1e6) & (traces["server_role"] == "coredns")]
    findings = []
    for replica, group in slow.groupby("server"):
        t = group["server_self_ns"].astype(float)
        findings.append(finding(
            "slow-coredns",
            f"{replica} itself took {in_ms(t.median())} median ({in_ms(t.max())} at worst) to answer {plural(len(group), 'query')}, "
            f"not counting upstream time: check its CPU limits and load, and the plugins in its Corefile.",
            evidence(group), len(group)))
    return findings


def server_failures(ev: Evidence) -> list[Finding]:
    """Failure answers the DNS server gave on its own: no failed upstream exchange (or other rule) explains them."""
    traces, facts = ev.traces, ev.facts
    rest = traces[(traces["outcome"] == "answered") & failed(traces["rcode"]) & ~traces["trace_id"].isin(ev.explained)]
    findings = []
    for (server, role, rcode), group in rest.groupby(["server", "server_role", "rcode"]):
        why = refused_cause(group, facts, role) if rcode == "REFUSED" else failure_cause(group, facts, role)
        logged = logs_only(group).all()
        behind = ("by its log, which does not show whether an upstream answered so first" if logged
                  else "with no failed upstream exchange behind it")
        findings.append(finding(
            "coredns-error",
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


def unanswered(ev: Evidence) -> list[Finding]:
    """Lookups nobody answered that no rule explains, said plainly, with where they were last seen."""
    traces = ev.traces
    rest = traces[(traces["outcome"] == "timed-out") & ~traces["trace_id"].isin(ev.explained)]
    findings = []
    for replica, group in rest[logs_only(rest)].groupby("server"):
        findings.append(finding(
            "unanswered",
            f"{replica} logged {plural(len(group), 'lookup')} of {names(group['qname'])} without an answer (no response flags, "
            f"size 0) after {in_ms(group['server_ns'].astype(float).median())} median: a plugin gave up without writing one. "
            + (f"Its errors log says: {next(e for e in group['error'] if e)}" if (group["error"] != "").any()
               else "Its errors log (the errors plugin) says which and why."), evidence(group), len(group), hop=COREDNS))
    rest = rest[~logs_only(rest)]
    for (reached, role), group in rest.groupby(["reached", "reached_role"]):
        if role == "coredns":
            hop = COREDNS
            story = (f"reached {reached}, which is alive (no ICMP error) but neither answered nor logged them before the client gave up, "
                     "and no upstream query was seen: CoreDNS is stuck, most often waiting on an upstream it cannot connect to "
                     "(a TCP connection that never completes carries no DNS and is not captured). Check its errors log and its path to the upstream.")
        else:
            hop = {"pod": POD_NODE, "node": NODE_COREDNS}.get(role, POD)
            story = f"got no answer; they were last seen at {reached or 'no vantage point'}."
        findings.append(finding("unanswered", f"{plural(len(group), 'lookup')} of {names(group['qname'])} {story}", evidence(group),
                                len(group), hop=hop))
    return findings


def health_slow(ev: Evidence) -> list[Finding]:
    """CoreDNS's own /health answering late or not, more than once: an overloaded or throttled replica."""
    alerts = ev.alerts
    findings = []
    for replica, group in alerts[alerts["kind"] == "health-slow"].groupby("replica"):
        if len(group) < 2:  # once (at start-up, say) is not a pattern
            continue
        took = group["text"].str.extract(HEALTH_TOOK)["took"].dropna()
        worst = f", up to {max(took, key=lambda t: duration_of(t))}" if len(took) else ""
        findings.append(finding(
            "slow-coredns",
            f"{replica or 'CoreDNS'}'s own health endpoint answered late or not at all ({plural(len(group), 'time')}{worst}): "
            "the replica is overloaded or CPU-throttled, and its answers wait too. Check its CPU limits and load.",
            alert_refs(group), len(group)))
    return findings


def alert_refs(group: pd.DataFrame) -> dict:
    """A finding's evidence from CoreDNS's notices: no trace, the log lines."""
    return {"traces": [], "log_lines": [f"{s}:{n}" for s, n in zip(group["source"], group["line_no"])][:EVIDENCE_LIMIT]}


CAUSES = [coredns_unreachable, nxdomain, nodata, truncated, slow_coredns]
FALLBACKS = [server_failures, unanswered]
ALERTS = [health_slow]
