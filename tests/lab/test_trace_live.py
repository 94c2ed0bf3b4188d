"""`dnscorrelate trace pod/NAME` live: each lookup once, as it completes, with its finding; a summary on exit."""

import json
import subprocess
import sys

from .conftest import in_pod


def test_trace_prints_each_lookup_of_the_pod(fresh_lab, tmp_path):
    lab = fresh_lab()
    report = tmp_path / "trace.html"
    cmd = [sys.executable, "-m", "dnscorrelate", "trace", "pod/mypod", "-n", "demo", "--lab", lab.name, "--duration", "4",
           "-o", "json", "--filter", "qtype==A", "--report", str(report)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "tracing demo/mypod" in process.stderr.readline()
    in_pod(lab, "mypod", "getent", "ahosts", "web")
    in_pod(lab, "mypod", "dig", "+tries=1", "+timeout=1", "nosuch.demo.svc.cluster.local")
    in_pod(lab, "web-0", "dig", "+tries=1", "+timeout=1", "example.com")  # another pod: not traced
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lookups = [json.loads(line) for line in out.splitlines()]
    assert [(l["qname"], l["qtype"]) for l in lookups] == [("web.demo.svc.cluster.local.", "A"), ("nosuch.demo.svc.cluster.local.", "A")]
    assert lookups[0]["outcome"] == "answered" and lookups[0]["hops"][0]["vantage"] == "demo/mypod"
    assert lookups[1]["findings"] == ["nxdomain"] and lookups[1]["rcode"] == "NXDOMAIN"
    assert "lookups from demo/mypod" in err and "lost_samples=0" in err
    html = report.read_text()
    assert "waterfall" in html
    assert f"cluster <b>lab {lab.name}</b>" in html and '<div class="node" data-node="node-0">' in html  # the lab's facts
    assert "demo/mypod <code>" in html and "<summary>Corefile</summary>" in html


def test_trace_counts_log_lines_lost_when_a_followed_log_is_truncated(fresh_lab):
    """copytruncate of every CoreDNS log while `trace` follows them: the lines read before are counted and said."""
    import os
    from pathlib import Path

    lab = fresh_lab()
    cmd = [sys.executable, "-m", "dnscorrelate", "trace", "pod/mypod", "-n", "demo", "--lab", lab.name, "--duration", "6", "-o", "json"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "tracing demo/mypod" in process.stderr.readline()
    in_pod(lab, "mypod", "getent", "ahosts", "web")
    first = json.loads(process.stdout.readline())  # printed by a tick, which read the logs (their start-up lines at least)
    assert first["qname"] == "web.demo.svc.cluster.local."
    logs = [Path(p.log) for p in lab.processes if p.role.startswith("coredns-")]
    for log in logs:
        os.truncate(log, 0)
    in_pod(lab, "mypod", "getent", "ahosts", "example.com")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lost = int(err.split("log_lines_lost=")[1].split()[0])
    assert lost >= len(logs), err  # every replica had written its banner at least
    assert "rotated or truncated while followed" in " ".join(err.split())  # the terminal wraps the warning
