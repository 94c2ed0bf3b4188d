"""A lab with `dnstap: true`: every replica sends dnstap to the lab's sink from its start, a Session reads it
as one more source at the replica, and it adds CoreDNS's own account to the traces without adding lookups."""

import os
import signal
import time
from pathlib import Path

from dnscorrelate import events
from dnscorrelate.live.session import Session
from dnscorrelate.cluster.lab.backend import LabBackend
from dnscorrelate.cluster.lab.clients import run_queries
from dnscorrelate.cluster.lab.runtime import read_text, stale_objects, teardown
from dnscorrelate.cluster.spec import load_spec
from dnscorrelate.cluster.lab.topology import PREFIX
from dnscorrelate.correlate import correlate
from dnscorrelate.live.dnstap import dropped_by_coredns

from .conftest import dig


def rows(frame, **where):
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame


def test_a_session_reads_the_replicas_dnstap_live_and_the_traces_stay_the_same(fresh_lab):
    lab = fresh_lab(load_spec().model_copy(update={"dnstap": True}))
    assert "dnstap unix://" in Path(lab.dir / "Corefile").read_text()
    mypod = lab.pod("mypod", "demo")
    with Session(LabBackend(lab)) as session:
        asked = run_queries(mypod.netns, "dnspython", "example.com.", "A", "udp", 3, 1, 5.0)
        asked += run_queries(mypod.netns, "dnspython", "web.demo.svc.cluster.local.", "A", "udp", 3, 1, 5.0)
        time.sleep(1.5)  # CoreDNS's flush
        live = [session.new_events()]
    live.append(session.new_events())
    assert all(r.answered for r in asked)
    frame = session.events()
    tap = rows(frame, ifname="dnstap")
    packets = frame[frame["ifname"] != "dnstap"]
    assert set(tap["vantage"].astype(str)) <= {"kube-system/coredns-0", "kube-system/coredns-1"} and set(tap["role"]) == {"coredns"}

    client_queries = rows(tap, qr=False, pkt_type="HOST", src_ip=mypod.ip)
    client_responses = rows(tap, qr=True, pkt_type="OUTGOING", dst_ip=mypod.ip)
    assert sorted(client_queries["qname"].astype(str)) == ["example.com."] * 3 + ["web.demo.svc.cluster.local."] * 3
    assert len(client_responses) == 6 and set(client_responses["rcode"]) == {"NOERROR"}
    upstream = lab.topology.upstream_ip
    forwarder_queries = rows(tap, qr=False, pkt_type="OUTGOING", dst_ip=upstream)
    forwarder_responses = rows(tap, qr=True, pkt_type="HOST", src_ip=upstream)
    # the loop plugin's HINFO probe is CoreDNS's own: on a loaded machine it can fall inside the session
    asked_upstream = forwarder_queries[forwarder_queries["qtype"].astype(str) != "HINFO"]
    assert set(asked_upstream["qname"].astype(str)) == {"example.com."} and len(forwarder_responses) >= 1
    assert len(forwarder_queries) == len(forwarder_responses)  # the cache answers the rest

    stats = {k.removeprefix("dnstap_"): v for k, v in session.stats.items() if k.startswith("dnstap_")}
    legs = sum(stats.get(k, 0) for k in ("client_query", "client_response", "forwarder_query", "forwarder_response"))
    assert stats["frames"] == legs + sum(v for k, v in stats.items() if k.startswith("type_") or k in ("bad_frames", "not_messages", "no_message"))
    assert stats["rows"] == len(tap) == legs - stats.get("outside_session", 0)  # the loop probe at start-up is outside
    assert stats["undecodable"] == 0 and stats["pending_bytes"] == 0 and stats["dropped_by_coredns"] == 0
    assert stats["forwarder_ids_aligned"] == len(forwarder_queries) + len(forwarder_responses) and stats["forwarder_ids_without_packet"] == 0

    with_tap, without = correlate(frame), correlate(packets.reset_index(drop=True))
    lookups = lambda c: c.traces[c.traces["purpose"] == "lookup"]
    assert len(lookups(with_tap)) == len(lookups(without)) == 6
    assert len(with_tap.traces) == len(without.traces) and len(with_tap.upstream) == len(without.upstream) >= 1
    as_read_live = events.concat(live)
    live_tap = as_read_live[as_read_live["ifname"] == "dnstap"]
    assert sorted(zip(live_tap["ts_ns"], live_tap["dns_id"])) == sorted(zip(tap["ts_ns"], tap["dns_id"]))  # aligned live too
    tap_hops = with_tap.sightings[with_tap.sightings["ifname"] == "dnstap"]
    assert (tap_hops["trace_id"] >= 0).all() and set(tap_hops["depth"]) == {0, 1}  # each in its packets' trace and leg


def test_the_sink_starts_before_the_replicas_and_goes_with_the_lab(fresh_lab):
    lab = fresh_lab(load_spec().model_copy(update={"dnstap": True}))
    sink = lab.process("dnstap")
    replicas = [f"coredns-{p.coredns_replica}" for p in lab.topology.coredns_pods]
    assert sorted(p.name for p in lab.dnstap_dir.glob("*.sock")) == sorted(f"{r}.sock" for r in replicas)
    logs = lambda: [read_text(lab.process(r).log) for r in replicas]
    deadline = time.monotonic() + 5
    while not all("CoreDNS-" in log for log in logs()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the banner comes after the plugins' start-up
    assert all("CoreDNS-" in log and "No connection to dnstap endpoint" not in log for log in logs())

    lab.restart("coredns-0")  # a new CoreDNS process connects to the same sink
    tap_file = lab.dnstap_dir / "coredns-0.fstrm"
    before = tap_file.stat().st_size
    replica_ip = next(p.ip for p in lab.topology.coredns_pods if p.coredns_replica == 0)
    assert dig(lab, "mypod", f"@{replica_ip}", "example.com") == ["192.0.2.10"]
    deadline = time.monotonic() + 5
    while tap_file.stat().st_size == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tap_file.stat().st_size > before and "No connection to dnstap endpoint" not in read_text(lab.process("coredns-0").log)

    os.kill(sink.pid, signal.SIGKILL)  # nothing listens: CoreDNS drops its messages and says how many every 10 s
    dig(lab, "mypod", f"@{replica_ip}", "web.demo.svc.cluster.local")
    time.sleep(1.5)  # its next flush fails: what it had buffered is lost uncounted; what comes after is counted
    for _ in range(3):
        dig(lab, "mypod", f"@{replica_ip}", "web.demo.svc.cluster.local")
    log = Path(lab.process("coredns-0").log)
    deadline = time.monotonic() + 15
    while not dropped_by_coredns([log], 0)["dropped_by_coredns"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dropped_by_coredns([log], 0)["dropped_by_coredns"] >= 6  # a query and a response each

    teardown(lab.name)
    assert not Path(f"/proc/{sink.pid}").exists()
    assert not lab.dir.exists() and stale_objects(f"{PREFIX}{lab.name}-") == {"netns": [], "etc_netns": [], "pids": []}
