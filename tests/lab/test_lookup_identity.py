"""Issue 13: a client reusing DNS ids on one socket; every lookup it sends is one trace."""

import json
import subprocess
import sys

from dnscorrelate.analysis import analyze
from dnscorrelate.cluster.lab.capture import lab_targets, lab_watcher
from dnscorrelate.live.capture import Capture

LOOKUPS = 3000

# One UDP socket, ids 0-99 over and over, each lookup waited for before the next (dnspython builds and
# parses the messages; the socket is ours so the port stays the same).
CLIENT = """
import json, socket, sys
import dns.message
server, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 0))
sock.settimeout(2)
answered = 0
for i in range(count):
    query = dns.message.make_query("web.demo.svc.cluster.local.", "A")
    query.id = i % 100
    sock.sendto(query.to_wire(), (server, 53))
    try:
        answered += dns.message.from_wire(sock.recv(4096)).id == query.id
    except socket.timeout:
        pass
print(json.dumps({"port": sock.getsockname()[1], "sent": count, "answered": answered}))
"""


def test_one_socket_reusing_ids_gives_one_trace_per_lookup_sent(fresh_lab):
    lab = fresh_lab()
    pod = lab.pod("mypod", "demo")
    with Capture(lab_targets(lab), watch=lab_watcher(lab)) as capture:
        done = subprocess.run(["ip", "netns", "exec", pod.netns, sys.executable, "-c", CLIENT, "10.96.0.10", str(LOOKUPS)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    client = json.loads(done.stdout)
    assert client["sent"] == LOOKUPS and client["answered"] > 0.95 * LOOKUPS
    assert capture.stats.get("lost_samples", 0) == 0
    traces = analyze(capture.events(), None, None, capture.stats).correlation.traces
    mine = traces[(traces["client_vantage"] == "demo/mypod") & (traces["client_port"] == client["port"])]
    assert len(mine) == LOOKUPS
    assert (mine["outcome"] == "answered").sum() == client["answered"]
    assert mine["dns_id"].nunique() == 100
