"""The default lab answers as a Kubernetes cluster does, through the real datapath and a real CoreDNS."""

import json
import re
import subprocess
import sys
import uuid

from .conftest import dig, in_pod

CLI = [sys.executable, "-m", "dnscorrelate"]


def cli(*args, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_glibc_resolves_a_service_through_the_search_list(default_lab):
    done = cli("lab", "exec", "pod/mypod", "-n", "demo", "--lab", default_lab.name, "--", "getent", "ahosts", "web")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "10.96.0.100"
    assert "web.demo.svc.cluster.local" in done.stdout


def test_dig_gets_the_upstream_record(default_lab):
    assert dig(default_lab, "mypod", "example.com") == ["192.0.2.10"]
    assert dig(default_lab, "mypod", "+tcp", "github.com") == ["198.51.100.4"]


def test_cluster_records(default_lab):
    assert sorted(dig(default_lab, "mypod", "web-headless.demo.svc.cluster.local")) == ["10.244.0.5", "10.244.0.6"]
    assert sorted(dig(default_lab, "mypod", "SRV", "_http._tcp.web.demo.svc.cluster.local")) == sorted(
        ["0", "100", "80", "web.demo.svc.cluster.local."]
    )
    assert dig(default_lab, "mypod", "-x", "10.96.0.10") == ["kube-dns.kube-system.svc.cluster.local."]
    nx = in_pod(default_lab, "mypod", "dig", "+tries=1", "+timeout=1", "missing.demo.svc.cluster.local")
    assert "status: NXDOMAIN" in nx.stdout and "hostmaster.cluster.local" in nx.stdout


def test_the_pod_sees_its_own_resolv_conf(default_lab):
    text = in_pod(default_lab, "mypod", "cat", "/etc/resolv.conf").stdout
    assert text.splitlines() == ["search demo.svc.cluster.local svc.cluster.local cluster.local", "nameserver 10.96.0.10", "options ndots:5"]


def test_logs_show_each_query_spread_over_both_replicas(default_lab):
    marker = uuid.uuid4().hex[:8]
    names = [f"q{i}-{marker}.example.com" for i in range(24)]
    for name in names:
        dig(default_lab, "mypod", name)
    done = cli("lab", "logs", "coredns", "--lab", default_lab.name)
    assert done.returncode == 0, done.stderr
    served_by = {}
    for line in done.stdout.splitlines():
        m = re.match(r"\[pod/(coredns-\d)/coredns\] (\S+Z) \[INFO\] 10\.244\.0\.4:\d+ - \d+ \"A IN (\S+)\. udp", line)
        if m and marker in m.group(3):
            served_by[m.group(3)] = m.group(1)
    assert set(served_by) == set(names)  # every query logged, with the kubectl --timestamps prefix
    assert set(served_by.values()) == {"coredns-0", "coredns-1"}  # 24 random picks hit both (p of failure 2^-23)


def test_status_json_describes_the_lab(default_lab):
    done = cli("lab", "status", "--lab", default_lab.name, "-o", "json")
    status = json.loads(done.stdout)
    assert [p["pod"] for p in status["pods"]][:3] == ["kube-system/coredns-0", "kube-system/coredns-1", "demo/mypod"]
    assert all(p["running"] for p in status["processes"]) and len(status["processes"]) == 3


def test_exec_in_an_unknown_pod_is_a_clear_error(default_lab):
    done = cli("lab", "exec", "pod/nobody", "-n", "demo", "--lab", default_lab.name, "--", "true")
    assert done.returncode == 2
    assert "pod demo/nobody is not in lab" in done.stderr and "Traceback" not in done.stderr


def test_a_second_lab_with_the_same_name_is_refused(default_lab):
    done = cli("lab", "up", "--name", default_lab.name)
    assert done.returncode == 2 and "already up" in done.stderr
    assert all(p["running"] for p in default_lab.status()["processes"])
