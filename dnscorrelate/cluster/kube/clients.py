"""The lab's clients (dnspython, glibc's getent, dig; connect: dnspython, then TCP to the answer) run inside a pod of a real cluster, through
the API server's exec: one exec per query batch, a small Python loop in the pod (the client image
has python3-dnspython, dig and getent) that prints one JSON line; the same `ClientResult`s (cluster/backend.py) as the
lab's clients (cluster/lab/clients.py), with the same meaning of each field.
"""

from __future__ import annotations

import json

from dnscorrelate.cluster.backend import ClientResult
from dnscorrelate.errors import ClusterError

MARKER = "DNSC-RESULTS "

# Runs in the pod: python3 -c SCRIPT '{"client":..., "name":..., ...}'. Mirrors cluster/lab/clients.py.
SCRIPT = r'''
import json, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
import dns.exception, dns.rcode, dns.resolver
a = json.loads(sys.argv[1])
TIMEOUTS = (dns.exception.Timeout, getattr(dns.resolver, "LifetimeTimeout", dns.exception.Timeout))

def result(answered, rcode, answers, started, error=""):
    return {"client": a["client"], "name": a["name"], "answered": answered, "rcode": rcode,
            "answers": list(answers), "seconds": time.monotonic() - started, "error": error[:200]}

def dnspython():
    r = dns.resolver.Resolver()
    r.use_search_by_default = True
    r.timeout = r.lifetime = a["timeout"]
    t = time.monotonic()
    try:
        ans = r.resolve(a["name"], a["type"], tcp=a["tcp"], raise_on_no_answer=False)
        recs = [x.to_text() for x in ans.rrset] if ans.rrset is not None else []
        return result(True, dns.rcode.to_text(ans.response.rcode()), recs, t)
    except dns.resolver.NXDOMAIN:
        return result(True, "NXDOMAIN", [], t)
    except dns.resolver.NoNameservers as e:
        return result(True, "SERVFAIL", [], t, str(e))
    except TIMEOUTS as e:
        return result(False, "", [], t, "timeout: %s" % e)
    except (OSError, dns.exception.DNSException) as e:
        return result(False, "", [], t, "%s: %s" % (type(e).__name__, e))

def glibc():
    t = time.monotonic()
    p = subprocess.run(["getent", "ahosts", a["name"]], capture_output=True, text=True, timeout=a["timeout"] * 12 + 5)
    addrs = list(dict.fromkeys(l.split()[0] for l in p.stdout.splitlines() if l.strip()))
    ok = p.returncode == 0
    return result(ok, "NOERROR" if ok else "", addrs, t, "" if ok else "getent exit %d" % p.returncode)

def dig():
    t = time.monotonic()
    cmd = ["dig", "+tries=1", "+timeout=%d" % max(1, round(a["timeout"]))] + (["+tcp"] if a["tcp"] else []) + [a["name"], a["type"]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a["timeout"] + 10)
    m = re.search(r"status: (\w+)", p.stdout)
    answers = [l.split()[-1] for l in p.stdout.split(";; ANSWER SECTION:")[-1].split("\n\n")[0].splitlines()[1:] if l.strip()] if m else []
    return result(m is not None, m.group(1) if m else "", answers, t, "" if m else (p.stdout.strip().splitlines() or ["no answer"])[-1])

def connect():
    import socket
    r = dnspython()
    r["client"] = "connect"
    if r["rcode"] != "NOERROR" or not r["answers"]:
        return r
    t = time.monotonic()
    try:
        socket.create_connection((r["answers"][0], 80), timeout=a["timeout"]).close()
    except OSError as e:
        r["error"] = ("connect to %s:80: %s" % (r["answers"][0], e or type(e).__name__))[:200]
    return r

one = {"dnspython": dnspython, "glibc": glibc, "dig": dig, "connect": connect}[a["client"]]
with ThreadPoolExecutor(max_workers=a["concurrency"]) as pool:
    out = list(pool.map(lambda _: one(), range(a["count"])))
print("''' + MARKER + r'''" + json.dumps(out), flush=True)
'''


def exec_queries(api, pod_key: str, client: str, name: str, rdtype: str, proto: str, count: int, concurrency: int,
                 timeout: float) -> list[ClientResult]:
    """`count` queries from pod `pod_key` (namespace/name), `concurrency` at a time, in one exec."""
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    namespace, pod = pod_key.split("/", 1)
    args = {"client": client, "name": name, "type": rdtype, "tcp": proto == "tcp", "count": count,
            "concurrency": concurrency, "timeout": timeout}
    budget = count * (timeout * 13 + 10) / concurrency + 30
    # exec gets its own ApiClient: stream() swaps the client's request function for a websocket while it
    # runs, and the capture thread's calls on a shared client would go through that websocket.
    exec_api = k8s.ApiClient(configuration=api.configuration)
    try:
        output = stream(k8s.CoreV1Api(exec_api).connect_get_namespaced_pod_exec, pod, namespace,
                        command=["python3", "-c", SCRIPT, json.dumps(args)], stderr=True, stdin=False, stdout=True,
                        tty=False, _request_timeout=budget)
    except Exception as err:  # the API server or the websocket failed: say which pod and why
        raise ClusterError(f"queries from pod {pod_key} through exec failed: {type(err).__name__}: {err}") from None
    line = next((l for l in reversed(output.splitlines()) if l.startswith(MARKER)), None)
    if line is None:
        tail = " | ".join(output.strip().splitlines()[-5:])
        raise ClusterError(f"queries from pod {pod_key} printed no results: {tail or '(nothing)'}")
    return [ClientResult(r["client"], r["name"], r["answered"], r["rcode"], tuple(r["answers"]), r["seconds"], r["error"])
            for r in json.loads(line[len(MARKER):])]
