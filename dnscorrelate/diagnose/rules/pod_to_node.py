"""Hop `pod->node`: from the pod's interface to its node."""

from __future__ import annotations

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
    dropped = ev.lookups[(ev.lookups["verdict"] == "DROPPED").to_numpy()]
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


CAUSES = [dropped_in_the_datapath, dropped_before_node]
