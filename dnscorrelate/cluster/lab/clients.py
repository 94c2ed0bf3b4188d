"""Real resolvers asking from inside a pod: dnspython (in-process), glibc (getent) and dig.

Each query returns a ClientResult; the runner counts answered ones. The
dnspython client runs in threads that enter the pod's network namespace and
read the pod's resolv.conf, so its search list and ndots apply as in the pod.
glibc resolves with `getent ahosts` (A and AAAA, through the search list);
it ignores `type` and `proto`. dig asks exactly the name given, one try. connect is dnspython's lookup,
then a TCP connection to the first address on port 80.
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import dns.rdatatype
import dns.resolver

from dnscorrelate.cluster.backend import ClientResult
from dnscorrelate.cluster.lab import netns
from dnscorrelate.cluster.lab.runtime import ETC_NETNS


def dnspython_query(netns_name: str, name: str, rdtype: str, tcp: bool, timeout: float) -> ClientResult:
    resolver = dns.resolver.Resolver(filename=str(ETC_NETNS / netns_name / "resolv.conf"))
    resolver.use_search_by_default = True  # as a pod's stub resolver: the search list and ndots apply
    resolver.timeout = resolver.lifetime = timeout
    started = time.monotonic()
    try:
        with netns.entered(netns_name):
            answer = resolver.resolve(name, rdtype, tcp=tcp, raise_on_no_answer=False)
        rcode = dns.rcode.to_text(answer.response.rcode())
        records = tuple(r.to_text() for r in answer.rrset) if answer.rrset is not None else ()
        return ClientResult("dnspython", name, True, rcode, records, time.monotonic() - started)
    except dns.resolver.NXDOMAIN:
        return ClientResult("dnspython", name, True, "NXDOMAIN", (), time.monotonic() - started)
    except dns.resolver.NoNameservers as err:
        return ClientResult("dnspython", name, True, "SERVFAIL", (), time.monotonic() - started, str(err)[:200])
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout) as err:
        return ClientResult("dnspython", name, False, "", (), time.monotonic() - started, f"timeout: {err}"[:200])
    except (OSError, dns.exception.DNSException) as err:
        return ClientResult("dnspython", name, False, "", (), time.monotonic() - started, f"{type(err).__name__}: {err}"[:200])


def glibc_query(netns_name: str, name: str, timeout: float) -> ClientResult:
    started = time.monotonic()
    done = subprocess.run(["ip", "netns", "exec", netns_name, "getent", "ahosts", name], capture_output=True, text=True, timeout=timeout * 12 + 5)
    addresses = tuple(dict.fromkeys(line.split()[0] for line in done.stdout.splitlines() if line.strip()))
    # getent exits 2 when the name does not resolve; it cannot tell NXDOMAIN from a timeout.
    return ClientResult("glibc", name, done.returncode == 0, "NOERROR" if done.returncode == 0 else "", addresses,
                        time.monotonic() - started, "" if done.returncode == 0 else f"getent exit {done.returncode}")


def dig_query(netns_name: str, name: str, rdtype: str, tcp: bool, timeout: float) -> ClientResult:
    started = time.monotonic()
    cmd = ["ip", "netns", "exec", netns_name, "dig", "+tries=1", f"+timeout={max(1, round(timeout))}", *(["+tcp"] if tcp else []), name, rdtype]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    status = re.search(r"status: (\w+)", done.stdout)
    answers = tuple(line.split()[-1] for line in done.stdout.split(";; ANSWER SECTION:")[-1].split("\n\n")[0].splitlines()[1:] if line.strip()) if status else ()
    return ClientResult("dig", name, status is not None, status.group(1) if status else "", answers, time.monotonic() - started,
                        "" if status else (done.stdout.strip().splitlines() or ["no answer"])[-1])


def connect_query(netns_name: str, name: str, rdtype: str, tcp: bool, timeout: float) -> ClientResult:
    """dnspython's lookup, then a TCP connection to the first address on port 80 (what an application does with
    the name); `error` says when the connection failed."""
    from dataclasses import replace

    looked_up = replace(dnspython_query(netns_name, name, rdtype, tcp, timeout), client="connect")
    if looked_up.rcode != "NOERROR" or not looked_up.answers:
        return looked_up
    address = looked_up.answers[0]
    done = subprocess.run(["ip", "netns", "exec", netns_name, "timeout", str(timeout), "bash", "-c", f"exec 3<>/dev/tcp/{address}/80"],
                          capture_output=True, text=True)
    return looked_up if done.returncode == 0 else replace(
        looked_up, error=f"connect to {address}:80: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'timed out'}"[:200])


def run_queries(netns_name: str, client: str, name: str, rdtype: str, proto: str, count: int, concurrency: int, timeout: float) -> list[ClientResult]:
    """`count` queries from the pod whose namespace is `netns_name`, `concurrency` at a time."""
    tcp = proto == "tcp"

    def one(_):
        if client == "dnspython":
            return dnspython_query(netns_name, name, rdtype, tcp, timeout)
        if client == "glibc":
            return glibc_query(netns_name, name, timeout)
        if client == "connect":
            return connect_query(netns_name, name, rdtype, tcp, timeout)
        return dig_query(netns_name, name, rdtype, tcp, timeout)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(count)))
