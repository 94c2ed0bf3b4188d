"""The kind cluster: real Kubernetes components, real CoreDNS, resolution from a pod, cleanup."""

import re
import time
import uuid

from kubernetes import client as k8s
from kubernetes.stream import stream

from dnscorrelate.cluster.kind import cluster as kind
from tests.cluster.tracing import started_trace


def core(cluster):
    return k8s.CoreV1Api(kind.api_client(cluster))


def pod_exec(cluster, namespace, pod, command):
    """stdout+stderr of `command` run in the pod, through the API server's exec."""
    return stream(core(cluster).connect_get_namespaced_pod_exec, pod, namespace, command=command,
                  stderr=True, stdin=False, stdout=True, tty=False)


def test_nodes_are_ready_and_run_the_built_kubernetes(kind_cluster, kind_build):
    nodes = core(kind_cluster).list_node().items
    assert sorted(n.metadata.labels.get("node-role.kubernetes.io/control-plane") is not None for n in nodes) == [False, True]
    for node in nodes:
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions), node.metadata.name
        assert node.status.node_info.kubelet_version == kind_build.kube_version


def test_control_plane_coredns_and_workloads_run_as_real_pods(kind_cluster):
    pods = core(kind_cluster).list_pod_for_all_namespaces().items
    names = {(p.metadata.namespace, re.sub(r"-[a-z0-9]{5,10}(-[a-z0-9]{5})?$", "", p.metadata.name)) for p in pods}
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        assert any(ns == "kube-system" and name.startswith(component) for ns, name in names), component
    coredns = [p for p in pods if (p.metadata.labels or {}).get("k8s-app") == "kube-dns"]
    assert len(coredns) == 2 and all(p.status.phase == "Running" for p in coredns)
    assert {"mypod", "web-0", "web-1"} <= {p.metadata.name for p in pods if p.metadata.namespace == "demo"}
    dns = core(kind_cluster).read_namespaced_service("kube-dns", "kube-system")
    assert dns.spec.cluster_ip == "10.96.0.10"


def test_mypod_resolves_a_service_and_an_external_name_through_coredns(kind_cluster):
    web = core(kind_cluster).read_namespaced_service("web", "demo").spec.cluster_ip
    out = pod_exec(kind_cluster, "demo", "mypod", ["getent", "ahosts", "web.demo.svc.cluster.local"])
    assert web in out
    out = pod_exec(kind_cluster, "demo", "mypod", ["dig", "+short", "+timeout=2", "example.com"])
    assert out.split() == ["192.0.2.10"]
    script = "import dns.resolver; print(dns.resolver.resolve('web', 'A', search=True)[0].address)"
    assert pod_exec(kind_cluster, "demo", "mypod", ["python3", "-c", script]).strip() == web


def test_a_networkpolicy_applied_through_the_api_drops_dns_and_deleting_it_restores_it(kind_cluster):
    net = k8s.NetworkingV1Api(kind.api_client(kind_cluster))
    dig = ["dig", "+short", "+tries=1", "+timeout=2", "example.com"]
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-egress", "namespace": "demo"},
            "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}}
    net.create_namespaced_network_policy("demo", deny)
    try:
        out = wait_until(lambda: pod_exec(kind_cluster, "demo", "mypod", dig), lambda out: "timed out" in out)
        assert "192.0.2.10" not in out
    finally:
        net.delete_namespaced_network_policy("deny-egress", "demo")
    out = wait_until(lambda: pod_exec(kind_cluster, "demo", "mypod", dig), lambda out: "192.0.2.10" in out)
    assert out.split() == ["192.0.2.10"]


def wait_until(action, done, timeout_s=30):
    """action()'s first result that done() accepts; the last one when time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = action()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(1)


def test_coredns_log_lines_carry_the_pods_ip(kind_cluster):
    api = core(kind_cluster)
    mypod_ip = api.read_namespaced_pod("mypod", "demo").status.pod_ip
    name = f"probe-{uuid.uuid4().hex[:6]}.example.org"
    pod_exec(kind_cluster, "demo", "mypod", ["dig", "+short", "+timeout=2", f"{name}."])
    replicas = api.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    logs = "".join(api.read_namespaced_pod_log(p.metadata.name, "kube-system") for p in replicas)
    lines = [line for line in logs.splitlines() if name in line]
    assert lines and all(line.startswith(f"[INFO] {mypod_ip}:") for line in lines), lines or logs[-2000:]


def test_down_leaves_nothing_behind(kind_build):
    name = f"d{uuid.uuid4().hex[:8]}"
    made, _ = kind.up(name)
    assert kind.status(name)["nodes"]
    kind.down(name)
    client = kind.docker()
    assert not client.containers.list(all=True, filters={"label": f"io.x-k8s.kind.cluster={made.kind_name}"})
    assert not client.containers.list(all=True, filters={"label": f"{kind.LABEL}={name}"})
    assert not [n for n in client.networks.list() if n.name == made.network]
    assert not made.dir.exists()
    assert name not in kind.existing_clusters(kind_build)


def test_trace_on_the_cluster_shows_every_hop_through_dnat_and_masquerade(kind_cluster, tmp_path):
    """`dnscorrelate trace --context` captures in the pods' and nodes' namespaces found in /proc; its report
    draws the cluster as the API shows it."""
    import json
    import subprocess
    import sys

    from markupsafe import escape

    report = tmp_path / "trace.html"
    trace = started_trace(["pod/mypod", "-n", "demo", "--context", kind_cluster.context, "--kubeconfig", str(kind_cluster.kubeconfig),
                           "--duration", "20", "-o", "json", "--report", str(report)])
    external_name = f"trace-{uuid.uuid4().hex[:8]}.example.org"  # a wildcard answers it; never in CoreDNS's cache yet
    for name in (external_name, "nosuch.demo.svc.cluster.local"):
        pod_exec(kind_cluster, "demo", "mypod", ["dig", "+short", "+tries=1", "+timeout=2", name])
    out, err = trace.communicate(timeout=60)
    assert trace.returncode == 0, err
    records = {r["qname"]: r for r in map(json.loads, out.splitlines())}
    external = records[external_name + "."]
    roles = [h["role"] for h in external["hops"]]
    assert roles[0] == "pod" and roles[-1] == "pod"
    assert {"node", "coredns", "upstream"} <= set(roles)
    assert external["dnat"]["to"].endswith(":53") and external["served_from"] == "upstream"
    assert external["log"] is not None  # CoreDNS's own line, read through the API, joined to the packets
    assert set(external["findings"]) <= {"ok"}  # nothing wrong with it (the NXDOMAIN below is another lookup's)
    assert external["segments_ms"]["upstream_rtt"] > 0
    missing = records["nosuch.demo.svc.cluster.local."]
    assert missing["rcode"] == "NXDOMAIN" and "nxdomain" in missing["findings"]

    page = report.read_text()
    mypod = core(kind_cluster).read_namespaced_pod("mypod", "demo")
    node = page.split(f'<div class="node" data-node="{mypod.spec.node_name}">', 1)[1].split("</div>", 1)[0]
    assert f"demo/mypod <code>{mypod.status.pod_ip}</code>" in node
    assert f"cluster <b>{kind_cluster.context}</b>" in page
    for n in core(kind_cluster).list_node().items:
        assert f'data-node="{n.metadata.name}"' in page
    for p in core(kind_cluster).list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items:
        assert f'<span class="pod coredns" title="coredns">kube-system/{p.metadata.name} <code>{p.status.pod_ip}</code>' in page
    corefile = core(kind_cluster).read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    assert f'<pre class="mono">{escape(corefile)}</pre>' in page  # as the ConfigMap holds it, escaped as Jinja2 does


def test_a_name_in_use_is_refused_before_anything_is_made(kind_cluster):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "dnscorrelate", "cluster", "up", "--name", kind_cluster.name],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "already up" in done.stderr and "Traceback" not in done.stderr
    assert kind.status(kind_cluster.name)["nodes"]  # the running cluster is untouched


def test_no_docker_is_a_clear_error(monkeypatch):
    import pytest

    from dnscorrelate.errors import ClusterError

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ClusterError, match="Docker is not reachable"):
        kind.docker()


def test_down_removes_the_debris_of_a_killed_up(kind_build):
    import signal
    import subprocess
    import sys

    name = f"k{uuid.uuid4().hex[:8]}"
    made = kind.KindCluster(name)
    up = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "cluster", "up", "--name", name],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = kind.docker()
    deadline = time.monotonic() + 120
    while not kind.node_containers(client, made) and time.monotonic() < deadline:
        time.sleep(0.5)
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert kind.node_containers(client, made), "kind never started the nodes"
    removed = kind.down(name)
    assert removed
    assert not kind.node_containers(client, made)
    time.sleep(5)  # nothing the killed up had in flight appears afterwards (it once did, under load)
    assert not kind.node_containers(client, made)
    assert not [n for n in client.networks.list() if n.name == made.network]
    assert not made.dir.exists()
