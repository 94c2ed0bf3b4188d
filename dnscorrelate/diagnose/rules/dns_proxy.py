"""Hop `dns-proxy`: Cilium's DNS proxy on the client's node, where a policy's DNS rule sends the pod's DNS. It
answers the names the rule does not cover itself (REFUSED by default, Cilium's `tofqdns-dns-reject-response-code`,
`pkg/fqdn/dnsproxy`) and relays the others to the server the pod asked, from the pod's own address and port
(transparent mode), so the server's answer goes to the proxy and the pod gets the proxy's copy from the address
it asked (the kube-dns VIP)."""

from __future__ import annotations

import pandas as pd

from dnscorrelate.diagnose.evidence import PROXY, Evidence
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.words import in_ms, names, plural, questions


def dns_proxy_refused(ev: Evidence) -> list[Finding]:
    """Error answers the DNS proxy gave itself, per client and policy (`Evidence.proxy_refused`)."""
    findings = []
    for (client, rcode, rules), group in ev.proxy_refused.groupby(["client_vantage", "rcode", "rules"], sort=True):
        said = [f"the pod got {rcode} from {names(group['dst_ip'])}, the address it asked",
                "no CoreDNS replica saw the query and no CoreDNS logged it" if group["server_watched"].all()
                else "CoreDNS was not watched (no capture or log of it), so only the proxy's record says no server answered"]
        if group["denied_by_proxy"].all():
            said.append("Cilium's DNS proxy recorded the request DROPPED (Hubble's L7 flow at the pod)")
        cause = (f"{rules} {'selects' if rules.count(';') == 0 else 'select'} {client}, and no DNS rule covers "
                 f"{questions(group['qname'])}: the proxy answers every name its rules do not cover with the agent's "
                 f"tofqdns-dns-reject-response-code ({rcode} here). Add the name to a rule (matchName) or widen a matchPattern"
                 if rules else "no Cilium policy in the facts explains it (read them with `kubectl get cnp,ccnp -A`)")
        findings.append(finding(
            "dns-proxy-refused",
            f"{plural(len(group), 'lookup')} of {questions(group['qname'])} from {client} answered {rcode} by Cilium's DNS proxy on "
            f"the pod's node, not by a DNS server: {'; '.join(said)}. {cause}.",
            evidence(group, rcode=rcode, policies=rules), len(group)))
    return findings


def proxy_exchanges(ev: Evidence) -> pd.DataFrame:
    """Answered lookups that went through the DNS proxy and on to a server: the proxy's records (Hubble's L7 flows)
    are among their sightings, a server's time is known, and the proxy did not answer them itself; with
    `proxy_latency_ns` (what the proxy's response record gives, 0 when none)."""
    seen = ev.correlation.sightings
    proxied = seen[(seen["ifname"].astype(str) == PROXY).to_numpy()] if len(seen) else seen
    if proxied.empty:
        return ev.lookups.iloc[0:0].assign(proxy_latency_ns=pd.Series(dtype="int64"))
    latency = proxied[proxied["qr"].to_numpy(dtype=bool)].groupby("trace_id")["latency_ns"].max()
    traces = ev.traces
    through = traces[(traces["trace_id"].isin(set(proxied["trace_id"])) & (traces["outcome"] == "answered")
                      & traces["server_ns"].notna() & traces["to_server_ns"].notna() & traces["return_ns"].notna()
                      & ~traces["trace_id"].isin(set(ev.proxy_refused["trace_id"]))).to_numpy()]
    return through.assign(proxy_latency_ns=latency.reindex(through["trace_id"]).fillna(0).astype("int64").to_numpy())


def dns_proxy_time(ev: Evidence) -> list[Finding]:
    """Where a proxied lookup's time went: the proxy's hop (to the server and back, through the proxy) against the
    server itself, per client and server."""
    findings = []
    for (client, server), group in proxy_exchanges(ev).groupby(["client_vantage", "server"], sort=True):
        hop = (group["to_server_ns"].astype(float) + group["return_ns"].astype(float)).median()
        inside = group["server_ns"].astype(float).median()
        own = group.loc[group["proxy_latency_ns"] > 0, "proxy_latency_ns"].astype(float)
        more = "the proxy's hop" if hop > inside else "the server"
        findings.append(finding(
            "dns-proxy-time",
            f"{plural(len(group), 'lookup')} from {client} went through Cilium's DNS proxy to {server} "
            f"({questions(group['qname'])}): median {in_ms(hop)} between the pod and the server both ways, through the proxy "
            f"(its work, and the wire), against {in_ms(inside)} in the server; {more} took longer"
            + (f". Hubble's record of the proxy gives {in_ms(own.median())} median: the proxy's wait for the server, the "
               "server's time included (Hubble alone cannot split the two)" if len(own) else "")
            + ".", evidence(group, proxy_hop_ms=round(hop / 1e6, 3), server_ms=round(inside / 1e6, 3), server=server), len(group)))
    return findings


CAUSES = [dns_proxy_refused, dns_proxy_time]
