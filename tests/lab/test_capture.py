"""Live capture in a lab: one query's whole chain through every namespace, UDP and TCP."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from dnscorrelate.cluster.lab import netns
from dnscorrelate.cluster.lab.capture import lab_targets, lab_watcher
from dnscorrelate.live.capture import Capture, netns_targets

from .conftest import dig


@pytest.fixture(scope="module")
def capture_lab(default_lab):
    return default_lab


def capture_during(lab, action, receive_only_servers: bool = True, skip_copies: bool = True):
    with Capture(lab_targets(lab), watch=lab_watcher(lab), receive_only_servers=receive_only_servers, skip_copies=skip_copies) as capture:
        action()
        time.sleep(0.1)
    return capture.events(), capture.stats


def steps(frame):
    return [(r.vantage, r.pkt_type, r.src_ip, r.dst_ip, r.qr) for r in frame.itertuples()]


def chain_of(frame, name):
    """The client leg and upstream leg of the one lookup of `name`, in time order."""
    rows = frame[frame.qname == name]
    client = rows[(rows.dst_port == 53) & (rows.vantage == "demo/mypod")].iloc[0]
    client_leg = rows[rows.dns_id == client.dns_id]
    upstream_leg = rows[rows.dns_id != client.dns_id]
    return client, client_leg, upstream_leg


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(("receive_only", "skip"), [(True, True), (True, False), (False, False)],
                         ids=["as-it-runs", "coredns-receive-only", "both-ways"])
def test_one_lookup_is_seen_hop_by_hop(capture_lab, proto, receive_only, skip):
    """Receive-only (the default where the node is captured too), CoreDNS's namespace records what arrives there;
    what it sends is recorded by the node, at the other end of its veth, first. Skipping copies (the default too),
    the node records nothing it sends into a captured namespace's veth: that namespace records it arriving."""
    lab = capture_lab
    name = f"chain-{proto}-{uuid.uuid4().hex[:8]}.example.org."
    flags = ["+tcp"] if proto == "tcp" else []
    frame, stats = capture_during(lab, lambda: dig(lab, "mypod", *flags, name), receive_only, skip)
    assert stats["lost_samples"] == 0 and stats["decode_errors"] == 0
    assert stats["namespaces_receive_only"] == (len(lab.topology.coredns_pods) if receive_only else 0)
    into_veths = frame[(frame.vantage == "node-0") & (frame.pkt_type == "OUTGOING") & frame.ifname.astype(str).str.startswith("veth")]
    assert (stats["veths_node_copies_skipped"] >= len(lab.topology.coredns_pods) + 1) == skip  # the replicas' and mypod's, at least
    assert into_veths[into_veths.qname == name].empty == skip
    client, client_leg, upstream_leg = chain_of(frame, name)
    pod_ip, vip = lab.pod("mypod", "demo").ip, lab.topology.cluster_dns_ip
    replica = next(p for p in lab.topology.coredns_pods if p.ip in set(client_leg.dst_ip))
    assert set(client_leg.proto) == {proto} and set(upstream_leg.proto) == {proto}

    way_in = steps(client_leg[~client_leg.qr])
    assert way_in[0] == ("demo/mypod", "OUTGOING", pod_ip, vip, False)
    assert ("node-0", "OTHERHOST", pod_ip, vip, False) in way_in  # before DNAT
    assert ("node-0", "OUTGOING", pod_ip, replica.ip, False) in way_in  # after DNAT
    assert way_in[-1] == (replica.key, "HOST", pod_ip, replica.ip, False)

    up = steps(upstream_leg)
    sent_by_replica = ("node-0", "OTHERHOST") if receive_only else (replica.key, "OUTGOING")
    assert up[0] == (*sent_by_replica, replica.ip, "192.168.49.1", False)  # its own id and port
    assert any(step[:2] == (replica.key, "OUTGOING") for step in steps(frame[frame.qname == name])) != receive_only
    assert ("node-0", "OUTGOING", "192.168.49.2", "192.168.49.1", False) in up  # masqueraded
    assert ("upstream", "HOST", "192.168.49.2", "192.168.49.1", False) in up
    assert ("upstream", "OUTGOING", "192.168.49.1", "192.168.49.2", True) in up
    assert up[-1] == (replica.key, "HOST", "192.168.49.1", replica.ip, True)
    assert set(upstream_leg.dns_id) != {client.dns_id}

    way_back = client_leg[client_leg.qr]
    assert steps(way_back)[0] == (*sent_by_replica, replica.ip, pod_ip, True)
    assert (("node-0", "OUTGOING", vip, pod_ip, True) in steps(way_back)) != skip  # un-DNAT, seen where it was sent on
    assert steps(way_back)[-1] == ("demo/mypod", "HOST", vip, pod_ip, True)
    assert set(way_back.rcode) == {"NOERROR"} and set(way_back.answers) == {"A 192.0.2.21"}

    assert frame.ts_ns.is_monotonic_increasing
    at_coredns = way_back.iloc[0].latency_ns
    at_pod = way_back.iloc[-1].latency_ns
    assert 0 < at_coredns < at_pod  # each vantage measures from its own first sighting of the query (the node's, receive-only)


def test_an_nxdomain_is_captured_with_its_rcode(capture_lab):
    frame, _ = capture_during(capture_lab, lambda: dig(capture_lab, "mypod", "nosuch.demo.svc.cluster.local"))
    answers = frame[(frame.qname == "nosuch.demo.svc.cluster.local.") & frame.qr & (frame.vantage == "demo/mypod")]
    assert list(answers.rcode) == ["NXDOMAIN"]


def test_namespaces_created_during_a_capture_are_picked_up(capture_lab):
    lab = capture_lab
    late = f"{lab.topology.prefix}late"

    def make_one_and_query():
        netns.add_netns([late])
        netns.ip_batch(["link set lo up"], late)
        time.sleep(0.5)  # the watcher looks every 0.2 s
        subprocess.run(["ip", "netns", "exec", late, "dig", "@127.0.0.1", "+tries=1", "+timeout=1", "late.example."], capture_output=True)

    try:
        frame, stats = capture_during(lab, make_one_and_query)
    finally:
        netns.delete_netns([late])
    seen = frame[frame.vantage == late]
    assert "late.example." in set(seen.qname)
    assert "icmp-error" in set(seen.kind)  # nothing listens there: the port-unreachable quotes the query


def test_cli_json_reports_lost_samples_even_when_zero(capture_lab):
    lab = capture_lab
    cmd = [sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "--duration", "3", "-o", "json"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = process.stderr.readline()  # printed once the tracer is attached
    assert "capturing in" in started, started
    name = f"cli-{uuid.uuid4().hex[:6]}.example.org."
    dig(lab, "mypod", name)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    document = json.loads(out)
    assert document["stats"]["lost_samples"] == 0 and "lost_samples=0" in started + err
    assert name in {e["qname"] for e in document["events"]}


def test_a_process_namespace_can_be_a_target(capture_lab):
    lab = capture_lab
    replica = lab.process("coredns-0")
    targets = netns_targets([f"/proc/{replica.pid}/ns/net"])
    with Capture(targets) as capture:
        for i in range(12):  # random DNAT: some reach coredns-0 (all missing it: 1 in 4096)
            dig(lab, "mypod", f"proc-{i}-{uuid.uuid4().hex[:6]}.example.org.")
        time.sleep(0.1)
    frame = capture.events()
    assert set(frame.vantage) == {f"/proc/{replica.pid}/ns/net"}
    assert (frame.netns == os.stat(f"/proc/{replica.pid}/ns/net").st_ino).all() and len(frame) > 0


def test_taking_hands_over_each_record_once_and_counters_run_live(capture_lab):
    """What the node agent relies on: records taken while the capture runs (those the reader read, and those read in
    place from the ring buffer) are removed, taken once, and the kernel counters since the start can be read before
    stop."""
    from dnscorrelate.live.agent_stream import records_in

    lab = capture_lab
    taken = 0
    with Capture(lab_targets(lab), watch=lab_watcher(lab)) as capture:
        dig(lab, "mypod", f"take-{uuid.uuid4().hex[:8]}.example.org.")
        deadline = time.monotonic() + 10
        while capture.kernel_counters()["events"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = capture.kernel_counters()
        for _ in range(2):
            with capture.taking() as batches:
                taken += sum(map(records_in, batches))
    assert running["events"] > 0 and running["lost"] == 0
    left = sum(map(records_in, capture.raw))  # read after the last take, at stop
    assert taken >= running["events"] and taken + left == capture.stats["events"]  # none twice, none missing
    assert capture.stats["records_received"] == capture.stats["events"]


def test_capture_to_parquet_writes_row_groups_while_it_captures(capture_lab, tmp_path):
    """`capture -o FILE.parquet` streams: the temporary file grows while the capture runs (events decoded and
    written as they come, not held to the end), and is renamed complete, counters in its footer, at the end."""
    from dnscorrelate import events

    lab = capture_lab
    saved = tmp_path / "events.parquet"
    cmd = [sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "--duration", "8", "-o", str(saved)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "capturing in" in process.stderr.readline()
    names, sizes, started = [], [], time.monotonic()
    while process.poll() is None:
        if time.monotonic() - started < 5:  # lookups well inside the 8 s the capture runs
            names.append(f"stream-{uuid.uuid4().hex[:6]}.example.org.")
            dig(lab, "mypod", names[-1])
        partial = list(tmp_path.glob(".events.parquet.*.partial"))
        if partial and not saved.exists():
            sizes.append(partial[0].stat().st_size)
        time.sleep(0.3)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    grew = [s for s in sizes if s > 4]  # more than Parquet's opening magic: row groups
    assert len(set(grew)) >= 2, sizes  # written at least twice before the capture ended
    frame, stats = events.load(saved)
    assert set(names) <= set(frame["qname"].astype(str))
    assert stats["lost_samples"] == 0 and stats["packets"] == len(frame) and "row groups" in err
    assert list(tmp_path.iterdir()) == [saved]


def test_drained_events_are_forgotten_and_still_counted(capture_lab):
    lab = capture_lab
    with Capture(lab_targets(lab), watch=lab_watcher(lab)) as capture:
        dig(lab, "mypod", f"drain-{uuid.uuid4().hex[:8]}.example.org.")
        time.sleep(0.2)
        drained = capture.drain()
        assert capture.raw == [] and len(drained) > 0
        dig(lab, "mypod", f"drain-{uuid.uuid4().hex[:8]}.example.org.")
        time.sleep(0.1)
    rest = capture.events()
    assert len(rest) > 0 and capture.stats["packets"] == len(drained) + len(rest)
    assert capture.stats["records_received"] == capture.stats["events"]


def test_capture_to_a_disk_that_fills_up_stops_with_an_error_and_leaves_no_file(capture_lab, tmp_path):
    """Row groups written while capturing fill a 64 KiB tmpfs: an error naming -o and the reason, exit 2, no file."""
    lab = capture_lab
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        saved = mount / "events.parquet"
        cmd = [sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "--duration", "30", "-o", str(saved)]
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "capturing in" in process.stderr.readline()
        while process.poll() is None:
            for _ in range(50):
                dig(lab, "mypod", f"full-{uuid.uuid4().hex}.example.org.")
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2 and "No space left on device" in err and "nothing was written there" in err, err
        assert "Traceback" not in err and list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_capture_to_parquet_bounds_what_waits_undecoded_and_counts_what_the_kernel_drops(capture_lab, tmp_path):
    """When decoding falls behind, the reader stops taking records (here at once: a 1-byte backlog) instead of
    holding them in memory; the kernel's ring buffer (16 pages) then drops what does not fit and counts it. Every
    record read is in the file, and the pause and the loss are said."""
    from dnscorrelate import events

    from .test_lookup_identity import CLIENT

    lab = capture_lab
    pod = lab.pod("mypod", "demo")
    saved = tmp_path / "events.parquet"
    env = {**os.environ, "DNSCORRELATE_BACKLOG_BYTES": "1", "DNSCORRELATE_RING_PAGES": "16"}
    process = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "--duration", "6", "-o", str(saved)],
                               env=env, stderr=subprocess.PIPE, text=True)
    started = process.stderr.readline()
    assert started.startswith("capturing in"), started
    flood = subprocess.run(["ip", "netns", "exec", pod.netns, sys.executable, "-c", CLIENT, "10.96.0.10", "2000"],
                           capture_output=True, text=True, timeout=120)
    assert flood.returncode == 0, flood.stderr
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, started + err
    frame, stats = events.load(saved)
    assert stats["backlog_full_seconds"] > 0 and stats["lost_samples"] > 0, stats
    assert stats["records_received"] == stats["events"] and stats["packets"] == len(frame) > 0  # all that was read is written
    assert "decoding fell behind" in err and f"lost_samples={stats['lost_samples']}" in err
