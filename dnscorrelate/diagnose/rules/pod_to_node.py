"""Hop `pod->node`: from the pod's interface to its node."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.diagnose.evidence import Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.policies import lost_per_client, policy_cause
from dnscorrelate.diagnose.words import names, plural, questions
from dnscorrelate.findings import NODE_COREDNS, POD_NODE, SERVER


def dropped_before_node(ev: Evidence) -> list[Finding]:
    """Queries that never reached the node, and no answer: stopped in the pod or on its way out. Only where the
    evidence holds a capture at a node: else their absence there says nothing, and the `unanswered` fallback says
    where they were last seen."""
    return [finding("dropped-before-node",
                    f"{plural(len(group), 'DNS query')} from {client} never left the pod's network namespace or never reached the "
                    f"node: {cause or 'check the pod interface, its routes and any firewall inside the pod'}.",
                    evidence(group), len(group))
            for client, group, cause in lost_per_client(ev.lost_before_coredns, ev.facts, at_node=False, node_captured=ev.node_captured)]


def asked(qnames) -> str:
    """The names asked; a flow of the datapath alone (no DNS proxy saw it) shows none."""
    return questions(qnames) if (qnames != "").any() else "a name the flow does not show (the datapath's flow has no DNS fields)"


def where_dropped(ev: Evidence, at: str) -> tuple[str, str, str]:
    """(vantage, direction, hop) of a `dropped_at` value: a drop on a pod's egress is on its way to the node; on
    ingress, at the server it was for (`node->coredns` when that is a CoreDNS replica, else `server`)."""
    vantage, _, direction = at.rpartition(" ") if at.endswith((" egress", " ingress")) else (at, "", "")
    if direction != "ingress":  # on a pod's egress; with no direction, at a node's interface on the way on
        return vantage, direction, POD_NODE if direction == "egress" else NODE_COREDNS
    seen = ev.correlation.sightings
    roles = set(seen.loc[(seen["vantage"].astype(str) == vantage).to_numpy(), "role"].astype(str))
    return vantage, direction, NODE_COREDNS if "coredns" in roles else SERVER


def dropped_in_the_datapath(ev: Evidence) -> list[Finding]:
    """Lookups a flow of which was DROPPED (Hubble's verdict): by a policy, or for the reason the flow gives,
    said in its own words and where it was enforced."""
    # a lookup the DNS proxy refused carries its DROPPED record: the dns-proxy hop says why (dns-proxy-refused)
    dropped = ev.lookups[(ev.lookups["verdict"] == "DROPPED").to_numpy() & ~ev.lookups["trace_id"].isin(set(ev.proxy_refused["trace_id"])).to_numpy()]
    findings = []
    for (at, reason, server), group in dropped.groupby(["dropped_at", "drop_reason", "server"], sort=True):
        vantage, direction, hop = where_dropped(ev, at)
        policy = "POLICY" in reason.upper()
        where = f"at {vantage}" + (f" on its {direction}" if direction else "")
        enforced = {"egress": " (the policy of the pod that sent them)", "ingress": f" (the policy of {vantage}, which they were for)"}
        answered = int((group["outcome"] == "answered").sum())
        advice = ((f"allow {vantage}'s egress to {server} on UDP and TCP 53" if direction == "egress" else
                   f"allow {vantage}'s ingress on UDP and TCP 53 from {names(group['client_vantage'])}")
                  + (f"; {cause}" if (cause := policy_cause(ev.facts, group["client_ip"].iloc[0], group)) else "")) if policy and direction else ""
        summary = (f"{plural(len(group), 'lookup')} of {asked(group['qname'])} to {server} dropped {where}"
                   + (enforced.get(direction, "") if policy else "") + f": the flow's verdict is DROPPED, reason {reason or 'not given'}"
                   + (f" ({answered} answered all the same: a retry or another packet got through)" if answered else "")
                   + (f". To let DNS through, {advice}." if advice else "."))
        cited = evidence(group, dropped_at=at, reason=reason, server=server)
        findings.append(finding("dropped-by-policy", summary, cited, len(group), hop=hop) if policy
                        else finding("dropped-in-datapath", summary, cited, len(group), hop=hop))
    return findings


FQDN_WINDOW_NS = 120 * 10**9  # a connection this long after the answer is still taken to be what the lookup was for


def answered_addresses(ev: Evidence) -> pd.DataFrame:
    """(client_ip, address, trace_id, qname, t) for every address a lookup's answer gave its client."""
    good = ev.lookups[((ev.lookups["outcome"] == "answered") & (ev.lookups["rcode"] == "NOERROR")).to_numpy()]
    rows = [(client, record.split()[-1], trace_id, qname, t)
            for client, answers, trace_id, qname, t in zip(good["client_ip"], good["answers"], good["trace_id"], good["qname"], good["t_start"])
            for record in str(answers or "").split(", ") if record.startswith(("A ", "AAAA "))]
    return pd.DataFrame(rows, columns=["client_ip", "address", "trace_id", "qname", "t"])


def fqdn_policy_denied(ev: Evidence) -> list[Finding]:
    """Connections a policy dropped (Hubble's `conn-drop` flows at the pod's egress) to an address a lookup of the same
    pod had just returned: the name the pod needed is not among the names the pod's toFQDNs policies allow."""
    from dnscorrelate.cluster.cilium_policy import fqdn_selectors, rules_text, verdict_on_name

    drops = ev.correlation.connection_drops
    drops = drops[(drops["pkt_type"].astype(str) == "OUTGOING").to_numpy() & drops["drop_reason"].astype(str).str.upper().str.contains("POLICY").to_numpy()]
    if drops.empty:
        return []
    given = answered_addresses(ev)
    flows = drops[["ts_ns", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "drop_reason"]].astype(
        {"src_ip": str, "dst_ip": str, "proto": str, "drop_reason": str})
    joined = flows.merge(given, left_on=["src_ip", "dst_ip"], right_on=["client_ip", "address"])
    joined = joined[((joined["ts_ns"] >= joined["t"]) & (joined["ts_ns"] - joined["t"] <= FQDN_WINDOW_NS)).to_numpy()]
    joined = joined.sort_values("t").drop_duplicates(["ts_ns", "src_ip", "src_port", "dst_ip", "dst_port"], keep="last")
    findings = []
    for (client_ip, qname), group in joined.groupby(["src_ip", "qname"], sort=True):
        pod = ev.facts.pods.get(client_ip)
        client = pod.key if pod else client_ip
        allowing, closed = verdict_on_name(ev.facts.model.cilium_policies, pod, qname, fqdn_selectors)
        ports = names(group["proto"].astype(str).str.upper() + " " + group["dst_port"].astype(str))
        if closed and not allowing:
            refs = "; ".join(f"{p.ref} (toFQDNs {rules_text(p, fqdn_selectors)})" for p in closed)
            cause = (f"{refs} {'selects' if len(closed) == 1 else 'select'} {client} for egress and no toFQDNs of "
                     f"{'it' if len(closed) == 1 else 'them'} covers {qname}: its addresses stay closed to the pod. Add "
                     f"`matchName: {qname.rstrip('.')}` (or a matchPattern covering it) to a toFQDNs rule")
        elif allowing:
            cause = (f"the toFQDNs of {'; '.join(p.ref for p in allowing)} cover {qname}, yet the flow was dropped: the "
                     "address may not have been learned from the DNS proxy (a lookup that did not go through it) or the port is not allowed")
        else:
            cause = "no Cilium policy with toFQDNs selects the pod in the facts; check the policies that select it (`kubectl get cnp,ccnp -A`)"
        lookups = ev.lookups[ev.lookups["trace_id"].isin(set(group["trace_id"])).to_numpy()]
        connections = len(group.drop_duplicates(["src_port", "dst_ip", "dst_port", "proto"]))
        findings.append(finding(
            "fqdn-policy-denied",
            f"{client} looked up {qname} and got {names(group['dst_ip'])}, then {plural(connections, 'connection')} to it "
            f"({ports}; {plural(len(group), 'packet')}, retries included) {'was' if connections == 1 else 'were'} dropped at the pod's "
            "egress: the flow's verdict is DROPPED, reason "
            f"{names(group['drop_reason'])}. The lookup succeeded; the policy stopped what the name was for. {cause}.",
            evidence(lookups, name=qname, addresses=sorted(set(group["dst_ip"])), policies=[p.ref for p in closed],
                     drops=int(len(group))), len(group)))
    return findings


CAUSES = [dropped_in_the_datapath, fqdn_policy_denied, dropped_before_node]
