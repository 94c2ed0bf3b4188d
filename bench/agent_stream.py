"""The node agent on a kind cluster of `cluster up`: how long until the agents capture, and how many events per
second reach the CLI through the API server's exec, with what loss; with --compare, what one pod's trace costs
on the wire with the agents sending only its lookups against every packet, while another pod floods CoreDNS.

    sudo .venv/bin/python bench/agent_stream.py --cluster NAME [--seconds 10]
    sudo .venv/bin/python bench/agent_stream.py --cluster NAME --compare [--seconds 15] [--rate 0] [--repeat 2] [--dnsperf]

Default: mypod sends cached lookups (web.demo.svc.cluster.local) to the kube-dns VIP as fast as one dnspython
loop can for --seconds; every node's agent streams what it sees.

--compare: a flood pod (on mypod's node) sends cached lookups straight to the CoreDNS replica on the other node,
as fast as it can (--rate 0; dnspython, 64 queries in flight; or with --dnsperf, this machine's dnsperf entered into
the flood pod's network namespace, 8 clients, 500 in flight) or paced to --rate qps,
while mypod sends 10 lookups a second (names unique to the run under example.org, so each is forwarded upstream)
to the kube-dns VIP; once with the agents filtering for mypod (`trace`'s default) and once with the full stream,
alternating, --repeat times. For each node: bytes/s on the wire, records sent, records counted and not sent, and
the agent process's CPU (from /proc on this machine, which runs kind's nodes).

Prints figures; asserts nothing. The DaemonSet is applied for each run and removed after it, as `trace --agent`
does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOAD = """
import time
import dns.message, dns.query
query = dns.message.make_query("web.demo.svc.cluster.local.", "A")
sent, end = 0, time.time() + {seconds}
while time.time() < end:
    dns.query.udp(query, "10.96.0.10", timeout=1)
    sent += 1
print(sent)
"""


FLOOD = """
import socket, time, dns.message
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("{server}", 53))
sock.settimeout(0.2)
wire = bytearray(dns.message.make_query("web.demo.svc.cluster.local.", "A").to_wire())
rate, sent, answered = {rate}, 0, 0
start = time.time(); end = start + {seconds}
while time.time() < end:
    burst = 64
    if rate:
        burst = max(0, min(64, int((time.time() - start) * rate) - sent))
        if not burst:
            time.sleep(0.001)
            continue
    for _ in range(burst):
        wire[0:2] = (sent & 0xFFFF).to_bytes(2, "big")
        sock.send(wire)
        sent += 1
    for _ in range(burst):
        try:
            sock.recv(512)
            answered += 1
        except OSError:
            break
print(sent, answered, time.time() - start)
"""

TRACED = """
import time, uuid, dns.message, dns.query
tag, sent, answered = uuid.uuid4().hex[:6], 0, 0
start = time.time(); end = start + {seconds}
while time.time() < end:
    query = dns.message.make_query(f"bench-{{tag}}-{{sent}}.example.org.", "A")
    sent += 1
    try:
        dns.query.udp(query, "10.96.0.10", timeout=1)
        answered += 1
    except Exception:
        pass
    time.sleep(max(0.0, start + sent / 10 - time.time()))
print(sent, answered)
"""


def exec_in(api, pod: str, script: str) -> str:
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    own = k8s.ApiClient(configuration=api.configuration)  # stream() swaps its client's request function while it runs
    return stream(k8s.CoreV1Api(own).connect_get_namespaced_pod_exec, pod, "demo", command=["python3", "-c", script],
                  stderr=True, stdin=False, stdout=True, tty=False)


def agent_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of every `dnscorrelate agent` process capturing on this machine (kind's nodes are
    containers here), by pid."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if b"dnscorrelate" not in command or b"agent" not in command or b"standby" in command:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return found


def node_of_pid(pid: int) -> str:
    """The kind node a process runs in: its NODE_NAME."""
    try:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"NODE_NAME=")), "?")


def pod_pid(uid: str) -> int:
    """A process of the pod with this UID on this machine (its cgroup path names the UID), to enter its network."""
    wanted = (uid, uid.replace("-", "_"))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cgroup = (entry / "cgroup").read_text()
            except OSError:
                continue
            if any(w in cgroup for w in wanted) and b"sleep" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    raise SystemExit(f"no process of pod {uid} on this machine")


def dnsperf_flood(pid: int, server: str, seconds: float, rate: int) -> tuple[float, float]:
    """dnsperf (Debian's, on this machine) in the pod's network namespace: (queries answered a second, seconds)."""
    import re
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt") as names:
        names.write("web.demo.svc.cluster.local A\n")
        names.flush()
        command = ["nsenter", "-t", str(pid), "-n", "dnsperf", "-s", server, "-d", names.name, "-l", str(int(seconds)),
                   "-c", "8", "-q", "500", "-t", "2"] + (["-Q", str(rate)] if rate else [])
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1)), float(re.search(r"Run time \(s\):\s+([\d.]+)", out).group(1))


def flood_pod(api, name: str, node: str, image: str) -> None:
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod("demo", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "dnsc-bench-flood"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "c", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}]}})
    deadline = time.monotonic() + 120
    while core.read_namespaced_pod(name, "demo").status.phase != "Running":
        if time.monotonic() > deadline:
            raise SystemExit(f"pod demo/{name} did not start")
        time.sleep(0.5)


def compare_run(api, filtered: bool, mypod, server: str, flood: str, seconds: float, rate: int, flood_pid: int | None) -> dict:
    """One run: the agents (filtering for mypod, or not), the flood and mypod's 10 lookups/s; figures per node."""
    import threading

    from dnscorrelate.cluster.kind.build import agent_image
    from dnscorrelate.cluster.kube.agents import AgentCapture, AgentOptions

    capture = AgentCapture(api, AgentOptions(built=agent_image(True), source_from_host=True,
                                             clients=(mypod.status.pod_ip,) if filtered else ()))
    capture.start()
    out: dict = {}
    try:
        cpu_before = agent_cpu_seconds()
        started = time.monotonic()
        flooding = (lambda: out.__setitem__("flood", "%d %d %f" % (lambda q, t: (q * t, q * t, t))(*dnsperf_flood(
            flood_pid, server, seconds, rate)))) if flood_pid else (lambda: out.__setitem__("flood", exec_in(
                api, flood, FLOOD.format(server=server, rate=rate, seconds=seconds))))
        threads = [threading.Thread(target=flooding),
                   threading.Thread(target=lambda: out.__setitem__("traced", exec_in(api, "mypod", TRACED.format(seconds=seconds))))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu_after = agent_cpu_seconds()
        node_of = {pid: node_of_pid(pid) for pid in cpu_after}  # while the agents still run
    finally:
        capture.stop()
    capture.events()
    sent, answered, flood_seconds = out["flood"].split()
    traced_sent, traced_answered = out["traced"].split()
    cpu = {}
    for pid, seconds_after in cpu_after.items():
        cpu[node_of[pid]] = cpu.get(node_of[pid], 0.0) + seconds_after - cpu_before.get(pid, 0.0)
    nodes = {}
    for node, n in capture.stats["nodes"].items():
        run_seconds = float(n.get("seconds", elapsed)) or elapsed
        nodes[node] = {"bytes_per_s": n["bytes_received"] / run_seconds, "records": n["records_received"],
                       "filtered": n.get("records_filtered", 0), "events": n["events"], "lost": n["lost_samples"],
                       "cpu_share": cpu.get(node, 0.0) / elapsed}
    return {"filtered": filtered, "flood_qps": int(answered) / float(flood_seconds), "traced": f"{traced_answered}/{traced_sent}",
            "nodes": nodes}


def compare(args) -> None:
    import os
    import uuid

    from kubernetes import client as k8s

    from dnscorrelate.cluster.kind import cluster as kind

    api = kind.api_client(kind.KindCluster(args.cluster))
    core = k8s.CoreV1Api(api)
    mypod = core.read_namespaced_pod("mypod", "demo")
    replicas = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    far = [p for p in replicas if p.spec.node_name != mypod.spec.node_name] or replicas
    server = far[0]
    flood = f"dnsc-bench-flood-{uuid.uuid4().hex[:6]}"
    flood_pod(api, flood, mypod.spec.node_name, mypod.spec.containers[0].image)
    flood_pid = pod_pid(core.read_namespaced_pod(flood, "demo").metadata.uid) if args.dnsperf else None
    print(f"flood ({'dnsperf in its network namespace' if args.dnsperf else 'dnspython'}): demo/{flood} on {mypod.spec.node_name} -> {server.metadata.name} ({server.status.pod_ip}) on "
          f"{server.spec.node_name}, {'as fast as it can' if not args.rate else f'{args.rate} qps'}; traced: demo/mypod, "
          f"10 lookups/s to the kube-dns VIP; {args.seconds:.0f} s a run; load average before: {os.getloadavg()}")
    print("| run | stream | flood qps | mypod answered | node | bytes/s | records sent | records counted, not sent | events seen | lost | agent CPU (% of a core) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for run in range(1, args.repeat + 1):
            for filtered in (True, False):
                r = compare_run(api, filtered, mypod, server.status.pod_ip, flood, args.seconds, args.rate, flood_pid)
                for node, n in sorted(r["nodes"].items()):
                    print(f"| {run} | {'filtered' if filtered else 'full'} | {r['flood_qps']:,.0f} | {r['traced']} | {node} | "
                          f"{n['bytes_per_s']:,.0f} | {n['records']:,} | {n['filtered']:,} | {n['events']:,} | {n['lost']} | "
                          f"{100 * n['cpu_share']:.1f} |", flush=True)
    finally:
        core.delete_namespaced_pod(flood, "demo", grace_period_seconds=0)
        print(f"load average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="a cluster `cluster up --name NAME` made")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--compare", action="store_true", help="filtered against full stream, under a flood")
    parser.add_argument("--rate", type=int, default=0, help="with --compare: the flood's qps (0: as fast as it can)")
    parser.add_argument("--repeat", type=int, default=1, help="with --compare: alternations of filtered and full")
    parser.add_argument("--dnsperf", action="store_true", help="with --compare: flood with this machine's dnsperf in the "
                        "flood pod's network namespace (faster than dnspython) instead of from inside the pod")
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return

    from kubernetes import client as k8s
    from kubernetes.stream import stream

    from dnscorrelate.cluster.kind import cluster as kind
    from dnscorrelate.cluster.kind.build import agent_image
    from dnscorrelate.cluster.kube.agents import AgentCapture, AgentOptions

    api = kind.api_client(kind.KindCluster(args.cluster))
    capture = AgentCapture(api, AgentOptions(built=agent_image(True), source_from_host=True))
    capture.start()
    try:
        t = capture.timings
        print(f"DaemonSet applied in {t['deploy_seconds']:.2f} s; pods ready at {t['ready_seconds']:.2f} s; "
              f"every agent capturing at {t['start_seconds']:.2f} s (tracer loaded in {capture.compile_seconds:.2f} s, "
              f"slowest node)")
        started = time.monotonic()
        sent = stream(k8s.CoreV1Api(api).connect_get_namespaced_pod_exec, "mypod", "demo",
                      command=["python3", "-c", LOAD.format(seconds=args.seconds)], stderr=True, stdin=False, stdout=True,
                      tty=False)
        load_seconds = time.monotonic() - started
    finally:
        stopping = time.monotonic()
        capture.stop()
    stop_seconds = time.monotonic() - stopping
    capture.events()
    s = capture.stats
    print(f"{sent.strip()} lookups in {load_seconds:.1f} s; {s['records_received']} events received of {s['events']} "
          f"the kernels saw ({s['records_received'] / load_seconds:.0f} events/s), lost_samples={s['lost_samples']}, "
          f"{s['bytes_received'] / max(1, s['records_received']):.1f} bytes an event on the wire; stop and remove "
          f"took {stop_seconds:.2f} s")
    for node, n in sorted(s["nodes"].items()):
        print(f"  node {node}: events={n['events']} received={n['records_received']} lost_samples={n['lost_samples']} "
              f"agent_dropped={n['agent_dropped']} stream_cut={n['stream_cut']}")


if __name__ == "__main__":
    main()
