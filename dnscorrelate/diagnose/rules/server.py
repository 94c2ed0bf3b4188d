"""Hop `server`: the server that answered, named by its address (what it is only facts say): the answers it
gave, as one vantage point saw them."""

from __future__ import annotations

from dnscorrelate.diagnose.evidence import Evidence, failed
from dnscorrelate.diagnose.finding import Finding, evidence, finding
from dnscorrelate.diagnose.words import names, plural, questions

MEANINGS = {
    "SERVFAIL": "it failed to resolve them, by its own fault or its upstream's: one capture point cannot tell which",
    "REFUSED": "it refuses these names or this client (not recursive for it, an ACL, a zone it does not serve)",
    "NOTIMP": "it does not implement what was asked",
    "FORMERR": "it could not parse the query (a malformed or unusual message)",
    "BADVERS": "it does not speak the EDNS version the query used (an EDNS extended response code: the OPT record's high bits)",
}


def server_error_seen(ev: Evidence) -> list[Finding]:
    """Failure answers one vantage point saw, said of the server's address and nothing behind it."""
    seen = ev.seen
    errors = seen[((seen["outcome"] == "answered") & failed(seen["rcode"])).to_numpy()
                  & ~seen["trace_id"].isin(set(ev.proxy_refused["trace_id"])).to_numpy()]  # the dns-proxy hop's
    return [finding(
        "server-error-seen",
        f"{server} answered {rcode} to {plural(len(group), 'lookup')} of {questions(group['qname'])}, seen at {names(group['client_vantage'])}: "
        f"{MEANINGS.get(rcode, 'an error response code (an EDNS extended one when over 15)')}.",
        evidence(group, server=server, rcode=rcode), len(group))
        for (server, rcode), group in errors.groupby(["server", "rcode"])]


def wrong_id_response(ev: Evidence) -> list[Finding]:
    """UDP responses with an id no query had, racing a query on the same socket that awaited its answer."""
    strays = ev.strays[(ev.strays["outcome"] == "wrong-id").to_numpy()]
    findings = []
    lookups = ev.lookups
    for (vantage, server, client), group in strays.groupby(["client_vantage", "server", "client_ip"]):
        raced = set(group["raced_dns_id"].astype(int))
        real = lookups[(lookups["client_ip"] == client).to_numpy() & lookups["dns_id"].isin(raced).to_numpy()]
        outcome = ("its own answer came after" if (real["outcome"] == "answered").any() else "its own answer never came") if len(real) else ""
        findings.append(finding(
            "wrong-id-response",
            f"{server} sent {plural(len(group), 'response')} with id {names(group['dns_id'].astype(int).map(hex))} to {client} at {vantage} "
            f"while its query {names(group['raced_dns_id'].astype(int).map(hex))} on that socket awaited an answer"
            + (f" ({outcome})" if outcome else "") + ": a response with the wrong id racing the right one is the classic sign of "
            "spoofing (an off-path sender guessing ids) or of a forwarder that mixes up its clients' queries.",
            evidence(group, server=server, raced=sorted(raced)), len(group)))
    return findings


def update_error(ev: Evidence) -> list[Finding]:
    """UPDATE and NOTIFY messages (no lookups) answered with an error."""
    others = ev.not_lookups
    bad = others[((others["outcome"] == "answered") & failed(others["rcode"])).to_numpy()]
    findings = []
    for (server, opcode, rcode), group in bad.groupby(["server", "opcode", "rcode"]):
        why = ("it takes no updates from this client or key: check its allow-update or update-policy and the TSIG key"
               if rcode == "REFUSED" else "see its log for why")
        findings.append(finding(
            "update-error",
            f"{server} answered {rcode} to {plural(len(group), f'DNS {opcode}')} for zone {names(group['qname'])} from "
            f"{names(group['client_ip'])}: {why}. These are not lookups.",
            evidence(group, server=server, opcode=opcode, rcode=rcode), len(group)))
    return findings


def not_a_lookup(ev: Evidence) -> list[Finding]:
    """UPDATE and NOTIFY messages answered without error: named, and kept apart from lookups."""
    others = ev.not_lookups
    fine = others[~((others["outcome"] == "answered") & failed(others["rcode"])).to_numpy()]
    return [finding(
        "not-a-lookup",
        f"{plural(len(group), f'DNS {opcode} message')} for {names(group['qname'])} to {server} ({names(group['outcome'])}, "
        f"{names(group['rcode']) or 'no response'}): not lookups, kept apart from them.",
        evidence(group, server=server, opcode=opcode), len(group))
        for (server, opcode), group in fine.groupby(["server", "opcode"])]


CAUSES = [server_error_seen, wrong_id_response, update_error, not_a_lookup]
