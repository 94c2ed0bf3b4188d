"""The node agent on a kind cluster of `cluster up`: how long until the agents capture, and how many events per
second reach the CLI through the API server's exec, with what loss.

    sudo .venv/bin/python bench/agent_stream.py --cluster NAME [--seconds 10]

mypod sends cached lookups (web.demo.svc.cluster.local) to the kube-dns VIP as fast as one dnspython loop can
for --seconds; every node's agent streams what it sees. Prints figures; asserts nothing. The DaemonSet is
applied for the run and removed after it, as `trace --agent` does.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="a cluster `cluster up --name NAME` made")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

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
