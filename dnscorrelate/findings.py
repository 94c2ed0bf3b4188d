"""Every finding the diagnoser can emit, and every hop it can name, declared once.

Like `schema.py` for columns (and CoreDNS's `plugin.cfg` for plugins), one
ordered declaration drives the rest:

- `diagnose/` sorts its findings in this order (most telling first), takes
  each finding's hop and severity from its entry, and refuses a code or hop
  not declared here;
- `scenarios.py` accepts in `expect` exactly these codes and hops;
- `schema.FINDINGS` describes `hop` from `HOPS`;
- the findings table in dnscorrelate/README.md is `python -m dnscorrelate.findings`
  (tests/unit/test_findings_registry.py keeps the two equal).

A hop is a place a lookup passes: a segment between two places (`pod->node`)
or a place itself (`coredns`). A packet seen at a vantage point is a
*sighting*, not a hop (`Correlation.sightings`).
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)


@dataclass(frozen=True)
class Hop:
    name: str
    meaning: str


# Where a lookup goes in a cluster, in the order it goes there.
POD, POD_NODE, DNS_PROXY, NODE_COREDNS, COREDNS, COREDNS_UPSTREAM, UPSTREAM, RETURN = (
    "pod", "pod->node", "dns-proxy", "node->coredns", "coredns", "coredns->upstream", "upstream", "return")
# Where one vantage point can place something, knowing no topology: the way from it to a server, the server.
SEEN_PATH, SERVER = "vantage->server", "server"

HOPS = [
    Hop(POD, "inside the client pod: its resolver, its search list, its network namespace"),
    Hop(POD_NODE, "from the pod's interface to its node"),
    Hop(DNS_PROXY, "Cilium's DNS proxy on the client's node, where a policy's DNS rule sends the pod's DNS: it refuses the "
        "names the rule does not cover and relays the others to the server, on the pod's behalf"),
    Hop(NODE_COREDNS, "from the node, through the kube-dns Service's DNAT, to a CoreDNS replica"),
    Hop(COREDNS, "a CoreDNS (or NodeLocal DNS) replica itself: its plugins, its cache, its zones"),
    Hop(COREDNS_UPSTREAM, "from a CoreDNS replica to the upstream resolver it forwards to"),
    Hop(UPSTREAM, "the upstream resolver itself"),
    Hop(RETURN, "the response's way back to the client"),
    Hop(SEEN_PATH, "from one vantage point (a capture) to the server its queries went to and back: all one place shows of the path"),
    Hop(SERVER, "the server that answered, by its address (what it is, CoreDNS or not, only facts say)"),
]
HOP_NAMES = tuple(h.name for h in HOPS)


@dataclass(frozen=True)
class Code:
    code: str
    hops: tuple[str, ...]  # where it can be placed; the first is the usual one
    severity: str  # the usual severity; a rule may lower it, saying why
    meaning: str  # the evidence it rests on, in one line (the README's table)

    @property
    def hop(self) -> str:
        return self.hops[0] if self.hops else ""


def c(code: str, hops: str, severity: str, meaning: str) -> Code:
    """A Code, its hops given as words: c("nxdomain", "coredns upstream", ERROR, "...")."""
    return Code(code, tuple(hops.split()), severity, meaning)


CODES = [
    c("ok", "", INFO, "every lookup answered, nothing else found"),
    c("dropped-by-policy", f"{POD_NODE} {NODE_COREDNS} {SERVER}", ERROR,
      "a flow of the lookup with verdict DROPPED for a policy, in the flow's own words (Hubble's drop_reason_desc: "
      "POLICY_DENIED, …) and where it was enforced: the client pod on egress (`pod->node`), the server on ingress"),
    c("dropped-in-datapath", f"{POD_NODE} {NODE_COREDNS} {SERVER}", ERROR,
      "a flow of the lookup with verdict DROPPED for another reason than a policy, quoted as the flow gives it, and where"),
    c("fqdn-policy-denied", POD_NODE, ERROR,
      "a lookup answered, then a connection from the same pod to an address it returned DROPPED by a policy (Hubble's "
      "flow, `conn-drop`): the name the pod needed, and the Cilium policies whose toFQDNs select the pod and do not "
      "cover it, named from facts"),
    c("dns-proxy-refused", DNS_PROXY, ERROR,
      "the pod got an error answer (REFUSED: the agent's tofqdns-dns-reject-response-code) that no DNS server gave: no "
      "CoreDNS replica saw the query and CoreDNS logged none, and Cilium's DNS proxy recorded it DROPPED (Hubble) or a "
      "Cilium policy's DNS rules select the pod and cover not the name; the policy and its rules named from facts"),
    c("dropped-before-node", POD_NODE, ERROR, "query seen leaving the pod, never at the node though the node was captured, no answer"),
    c("dropped-at-node", NODE_COREDNS, ERROR,
      "query seen at the node, never at CoreDNS, no ICMP, no answer; NetworkPolicies named from facts"),
    c("coredns-unreachable", COREDNS, ERROR,
      "ICMP errors about the DNAT target's port 53 (a query that arrives without one reached a live process)"),
    c("forwarding-loop", COREDNS_UPSTREAM, ERROR,
      "CoreDNS's loop plugin logged a loop (`[FATAL] plugin/loop: Loop (…) detected for zone`): its forward target sends "
      "queries back to it; the usual cause (a node resolv.conf naming a local stub) and fix said"),
    c("upstream-unreachable", COREDNS_UPSTREAM, ERROR,
      "upstream exchanges never answered, TCP connections never accepted or refused, errors lines (i/o timeout, refused), "
      "a query CoreDNS logged unanswered (`NOERROR - 0 6.01s`, `- - 0 6.00s`) after a forward's wait, CoreDNS's own loop "
      "probes or health checks failing (a warning when only loop probes: the upstream may ignore HINFO); the upstream named "
      "from the errors line or the Corefile's forward, and the forward block or a NetworkPolicy on the replicas"),
    c("upstream-error", UPSTREAM, ERROR, "the upstream itself answered SERVFAIL, REFUSED or NOTIMP"),
    c("coredns-error", COREDNS, ERROR,
      "the DNS server answered SERVFAIL, REFUSED, NOTIMP or FORMERR itself, with no failed upstream exchange behind it; the "
      "cause named from the Corefile (no server block serves the name, an acl in the serving block, no errors plugin) or "
      "quoted from the errors log"),
    c("response-lost", RETURN, ERROR, "the server answered, the client never got it"),
    c("no-response-seen", SEEN_PATH, ERROR,
      "one vantage point: queries seen there and no response seen there within the time the capture allows, per server "
      "address (any ICMP error about them quoted); where they were lost is not visible from one place"),
    c("icmp-error-seen", SEEN_PATH, ERROR,
      "one vantage point: queries answered by an ICMP error instead of DNS (port unreachable: nothing listens there; "
      "administratively prohibited: a firewall), per address"),
    c("server-error-seen", SERVER, ERROR,
      "one vantage point: the server at an address answered SERVFAIL, REFUSED, NOTIMP, FORMERR or an EDNS extended rcode "
      "(BADVERS, …); whether it failed itself or passed on an upstream's failure is not visible from one place"),
    c("wrong-id-response", SERVER, WARNING,
      "a UDP response with an id no query had, arriving on a socket whose query with another id awaited its answer: the "
      "classic sign of spoofing (an off-path guess) or of a confused forwarder"),
    c("nxdomain", f"{COREDNS} {UPSTREAM} {SERVER}", ERROR,
      "NXDOMAIN for what was meant: a missing Service (with the namespace's Services listed), a CNAME to nothing, or an "
      "external name"),
    c("nodata", f"{COREDNS} {UPSTREAM} {SERVER}", WARNING,
      "a response packet with NOERROR without the type asked (a CNAME without an A); AAAA next to a good A is normal and "
      "not reported. Never from logs alone: a log line has no answer count"),
    c("truncated", f"{COREDNS} {UPSTREAM} {SERVER}", WARNING, "TC bit, and whether the client retried over TCP"),
    c("upstream-slow", UPSTREAM, WARNING,
      "upstream round trips over 100 ms; with logs only, answers CoreDNS did not give itself (not `aa`) that took over "
      "100 ms, said with the caveat that a log does not split CoreDNS's time from the upstream's"),
    c("slow-coredns", COREDNS, WARNING,
      "time inside CoreDNS, upstream waits excluded, over 100 ms (with logs only: authoritative answers only, the one time "
      "a log's duration is CoreDNS's own; and CoreDNS's own `/health` check logged late or failing)"),
    c("dns-proxy-time", DNS_PROXY, INFO,
      "lookups relayed by Cilium's DNS proxy (its records at the pod, Hubble): the time between the pod and the server, "
      "both ways, through the proxy (its hop) against the time in the server, and the proxy's own latency as Hubble gives it"),
    c("slow-response-seen", SEEN_PATH, WARNING,
      "one vantage point: answers over 100 ms from query to response at that place, per server address (what the time "
      "was spent on is not visible from one place)"),
    c("update-error", SERVER, WARNING,
      "a DNS UPDATE or NOTIFY (no lookup) answered with an error: REFUSED when the server takes no updates from that client "
      "or key"),
    c("coredns-imbalance", NODE_COREDNS, WARNING,
      "one replica takes over 80% of at least 20 requests (NodeLocal DNS's force_tcp included)"),
    c("search-path-expansion", POD, INFO,
      "NXDOMAIN expansions of a dotted name before the name itself (advice: trailing dot, ndots)"),
    c("duplicate-response", SEEN_PATH, INFO,
      "more responses to one query at one place than queries and servers explain: a server or middlebox that sends twice, "
      "or a capture that copied the packet"),
    c("several-servers-answered", SEEN_PATH, INFO,
      "one query sent to several servers (a resolver list tried in parallel, or a retry to the next) and more than one "
      "answered; the client keeps the first, and a later answer may draw an ICMP port unreachable"),
    c("query-not-seen", SEEN_PATH, INFO,
      "responses whose query the evidence does not hold (sent before the capture began, or lost in a gap such as a TCP "
      "segment acknowledged but not captured); not counted as lookups"),
    c("not-a-lookup", SERVER, INFO, "messages of another opcode than QUERY (UPDATE, NOTIFY) answered without error: kept apart from lookups"),
    c("unanswered", f"{POD} {POD_NODE} {NODE_COREDNS} {COREDNS}", ERROR,
      "no answer and no rule above explains it, placed where last seen (for a live CoreDNS that never answered: said so, "
      "with what to check; a query CoreDNS logged unanswered, with its errors line quoted); nothing is dropped silently"),
    c("no-lookups", POD, WARNING,
      "no lookup from a workload in the evidence at all (a warning with the packet and log counts, how many were CoreDNS's "
      "own, and whether CoreDNS logged that it could not reach the Kubernetes API; never `ok`)"),
]
ORDER = {entry.code: rank for rank, entry in enumerate(CODES)}
BY_CODE = {entry.code: entry for entry in CODES}
CODE_NAMES = tuple(ORDER)


def entry(code: str) -> Code:
    """The registry's entry for `code`; a KeyError naming the registry for an undeclared one."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise KeyError(f"finding code {code!r} is not declared in dnscorrelate/findings.py") from None


def markdown() -> str:
    """The findings table of dnscorrelate/README.md: code, hop, severity, evidence, in the diagnoser's order."""
    rows = [f"| `{e.code}` | {' / '.join(e.hops)} | {e.severity} | {e.meaning} |" for e in CODES]
    return "\n".join(["| code | hop | severity | evidence it rests on |", "| --- | --- | --- | --- |", *rows])


def hops_markdown() -> str:
    """The hops table of dnscorrelate/README.md."""
    rows = [f"| `{h.name}` | {h.meaning} |" for h in HOPS]
    return "\n".join(["| hop | where |", "| --- | --- |", *rows])


if __name__ == "__main__":
    print(f"{hops_markdown()}\n\n{markdown()}")
