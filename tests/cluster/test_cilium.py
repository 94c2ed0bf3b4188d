"""`cluster up --cni cilium --hubble`: Cilium (built here from its Go module) as the pod network, enforcing
NetworkPolicy itself; DNS through CoreDNS, a policy's drop and its removal, and trace's hops; Hubble in every
agent, the visibility policy's allow beside a deny, and `trace --hubble`; Cilium's own DNS failures as scenarios
(their policies, Hubble's flows in the session); Hubble beside us on the same lookups (the smoke version of
bench/hubble_side_by_side.py)."""

import pytest
from kubernetes import client as k8s

from dnscorrelate.cluster.kind import cluster as kind
from dnscorrelate.cluster.model import NetworkPolicy

from .test_kind import pod_exec

pytestmark = pytest.mark.cluster
DIG = ["dig", "+short", "+tries=1", "+timeout=2", "example.com"]


def test_cilium_runs_on_every_node_and_pods_resolve_through_coredns(cilium_cluster):
    core = k8s.CoreV1Api(kind.api_client(cilium_cluster))
    nodes = {n.metadata.name for n in core.list_node().items}
    agents = core.list_namespaced_pod("kube-system", label_selector="k8s-app=cilium").items
    assert {p.spec.node_name for p in agents} == nodes and len(nodes) == 2
    assert all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions) for p in agents)
    assert not core.list_namespaced_pod("kube-system", label_selector="app=dnsc-policy").items  # Cilium enforces policy
    assert not core.list_namespaced_pod("kube-system", label_selector="app=dnsc-flannel").items
    web = core.read_namespaced_service("web", "demo").spec.cluster_ip
    assert web in pod_exec(cilium_cluster, "demo", "mypod", ["getent", "ahosts", "web.demo.svc.cluster.local"])
    assert pod_exec(cilium_cluster, "demo", "mypod", DIG).split() == ["192.0.2.10"]


def test_a_networkpolicy_drops_dns_once_cilium_says_it_is_enforced_and_deleting_it_restores_it(cilium_cluster):
    """The kube backend's faults wait for Cilium's own signal (every endpoint realized the new policy
    revision): the first lookup after apply() returns is dropped, the first after delete() answered."""
    from dnscorrelate.cluster.kube.faults import KubeFaults

    faults = KubeFaults(kind.api_client(cilium_cluster))
    deny = NetworkPolicy.model_validate({
        "kind": "NetworkPolicy", "metadata": {"name": "deny-egress", "namespace": "demo"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}})
    applied_s = faults.apply([deny])
    try:
        out = pod_exec(cilium_cluster, "demo", "mypod", DIG)
        assert "timed out" in out and "192.0.2.10" not in out, out
    finally:
        deleted_s = faults.delete("NetworkPolicy", "demo", "deny-egress")
    assert pod_exec(cilium_cluster, "demo", "mypod", DIG).split() == ["192.0.2.10"]
    assert applied_s < 30 and deleted_s < 30
    print(f"policy enforced {applied_s:.2f} s after create, lifted {deleted_s:.2f} s after delete")


def started_trace(cluster, log, *options: str):
    """`trace pod/mypod -o json` on the cluster, its stderr into `log`, returned once it says it is tracing (the
    tracer compiled and attached: seconds to tens of seconds on a loaded machine)."""
    import subprocess
    import sys

    with log.open("w") as err:
        trace = subprocess.Popen(
            [sys.executable, "-m", "dnscorrelate", "trace", "pod/mypod", "-n", "demo", "--context", cluster.context,
             "--kubeconfig", str(cluster.kubeconfig), "-o", "json", *options], stdout=subprocess.PIPE, stderr=err, text=True)
    kind.wait_for(lambda: "tracing demo/mypod" in log.read_text() or trace.poll() is not None, "trace to start", 90)
    return trace


def test_trace_shows_every_hop_through_ciliums_service_translation(cilium_cluster, tmp_path):
    """Cilium translates the kube-dns VIP in BPF at the pod's veth (kube-proxy's rules see none of it) and
    crosses nodes over its VXLAN device; the node's capture sees the VIP as the packet arrives and the
    endpoint as it leaves, so trace stitches pod -> DNAT -> CoreDNS -> upstream as on flannel."""
    import json
    import uuid

    trace = started_trace(cilium_cluster, tmp_path / "trace.err", "--duration", "20")
    names = [f"trace-{uuid.uuid4().hex[:8]}.example.org" for _ in range(4)]  # spread over both replicas
    for name in names:
        pod_exec(cilium_cluster, "demo", "mypod", ["dig", "+short", "+tries=1", "+timeout=2", name])
    out, _ = trace.communicate(timeout=60)
    assert trace.returncode == 0, (tmp_path / "trace.err").read_text()
    records = {r["qname"]: r for r in map(json.loads, out.splitlines())}
    for name in names:
        record = records[name + "."]
        roles = [h["role"] for h in record["hops"]]
        assert roles[0] == "pod" and roles[-1] == "pod"
        assert {"node", "coredns", "upstream"} <= set(roles)
        assert record["dnat"]["to"].endswith(":53") and record["hops"][0]["dst_ip"] == "10.96.0.10"
        assert record["served_from"] == "upstream" and record["log"] is not None
        assert set(record["findings"]) <= {"ok"}


# --- Hubble (`cluster up --hubble`, `trace --hubble`) ---------------------------------------------------


@pytest.fixture
def dns_visibility(cilium_cluster):
    """The default visibility policy of `cluster up --hubble` (every pod's DNS through the DNS proxy), applied
    and realized for one test, then deleted and that realized too, so the module's other tests see Cilium alone."""
    import subprocess

    import yaml

    from dnscorrelate.cluster import cilium
    from dnscorrelate.cluster.kind.build import load_build
    from dnscorrelate.cluster.kind.network import DNS_VISIBILITY_POLICY, dns_visibility_policy

    core = k8s.CoreV1Api(kind.api_client(cilium_cluster))
    wait = lambda probe, what: kind.wait_for(probe, what, 120)  # noqa: E731
    before = cilium.policy_revisions(core)
    kind.kubectl_create(cilium_cluster, load_build(), yaml.safe_dump(dns_visibility_policy()), "the visibility policy")
    cilium.wait_enforced(core, before, wait)
    yield
    before = cilium.policy_revisions(core)
    subprocess.run([load_build().kubectl, "--kubeconfig", str(cilium_cluster.kubeconfig), "--context", cilium_cluster.context,
                    "delete", "ciliumclusterwidenetworkpolicy", DNS_VISIBILITY_POLICY], check=True, capture_output=True)
    cilium.wait_enforced(core, before, wait)


def test_every_agent_runs_hubble_and_carries_the_cli_built_here(cilium_cluster):
    from dnscorrelate.cluster import cilium

    core = k8s.CoreV1Api(kind.api_client(cilium_cluster))
    for agent in cilium.agents(core):
        assert "Healthcheck (via unix:///var/run/cilium/hubble.sock): Ok" in cilium.hubble_answers(core, agent.metadata.name)
        assert cilium.agent_exec(core, agent.metadata.name, "hubble", "version").startswith("hubble v1.20.2 ")


def test_the_visibility_policy_allows_dns_even_where_a_networkpolicy_denies_egress(cilium_cluster, dns_visibility):
    """What kind/README.md says of deny scenarios on a `--hubble` cluster: Cilium's allow rules add up, so a
    default-deny egress NetworkPolicy still stops the pod's other traffic, but its DNS to kube-dns is answered."""
    from dnscorrelate.cluster.kube.faults import KubeFaults

    faults = KubeFaults(kind.api_client(cilium_cluster))
    deny = NetworkPolicy.model_validate({
        "kind": "NetworkPolicy", "metadata": {"name": "deny-egress", "namespace": "demo"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}})
    faults.apply([deny])
    try:
        assert pod_exec(cilium_cluster, "demo", "mypod", DIG).split() == ["192.0.2.10"]
        web = pod_exec(cilium_cluster, "demo", "mypod", ["python3", "-c", "import socket; s = socket.socket(); s.settimeout(2); "
                                                          "print(s.connect_ex(('web.demo.svc.cluster.local', 80)))"])
        assert web.strip() != "0", web  # the web Service is not reachable: the deny holds for everything else
    finally:
        faults.delete("NetworkPolicy", "demo", "deny-egress")


def test_trace_hubble_joins_the_dns_proxys_records_to_the_lookups_it_captures(cilium_cluster, dns_visibility, tmp_path):
    """`trace --hubble`: each agent's flows read as the session runs; the DNS proxy's request and response for
    each lookup carry the client's own DNS id (taken from the captured packet), so they are hops of the same
    trace, at the pod, beside the capture's."""
    import json
    import re
    import uuid

    log = tmp_path / "trace.err"
    trace = started_trace(cilium_cluster, log, "--hubble", "--duration", "25")
    names = [f"hubble-{uuid.uuid4().hex[:8]}.example.org" for _ in range(3)]
    for name in names:
        pod_exec(cilium_cluster, "demo", "mypod", ["dig", "+short", "+tries=1", "+timeout=2", name])
    out, _ = trace.communicate(timeout=90)
    said = log.read_text()
    assert trace.returncode == 0, said
    records = {}
    for record in map(json.loads, out.splitlines()):
        records.setdefault(record["qname"], []).append(record)
    for name in names:
        record = records[name + "."][-1]  # the last print holds every sighting
        assert record["dns_id"] < 65536  # the client's id, not Hubble's synthetic one
        proxy = [h for h in record["hops"] if h["ifname"] == "dns-proxy"]
        seen = [(h.get("vantage"), h.get("ifname"), "R" if h.get("qr") else "Q", h.get("ts_ns")) for h in record["hops"]]
        assert [h["vantage"] for h in proxy] == ["demo/mypod", "demo/mypod"], (seen, re.findall(r"hubble_\w+=\d+", said))
        assert record["rcode"] == "NOERROR" and record["log"] is not None
    stats = {key: int(value) for key, value in re.findall(r"(hubble_\w+)=(\d+)", said)}  # the summary (maybe wrapped)
    assert stats["hubble_streams"] == 4 and stats["hubble_l7_dns_pairs"] >= len(names)  # per agent: DNS flows, drops
    assert not any("several-servers-answered" in r["findings"] for rs in records.values() for r in rs)  # the proxy is one hop
    assert stats["hubble_ids_aligned"] >= 2 * len(names)


# --- Cilium's own DNS failures, and Hubble beside us ------------------------------------------------------


@pytest.fixture(scope="module")
def cilium_stage(cilium_cluster):
    """The module's Cilium cluster as `run --backend kind --cni cilium --name` uses it: scenarios journaled, undone,
    the baseline proven; its sessions read Hubble."""
    from dnscorrelate.runner import SharedKindStage

    return SharedKindStage(cilium_cluster.name)


@pytest.mark.parametrize("name", ["fqdn-policy-denied", "dns-rule-refused", "dns-proxy-hop"])
def test_ciliums_own_dns_failures_pass_as_scenarios_on_cilium(cilium_stage, name):
    from pathlib import Path

    from dnscorrelate.runner import run_scenario
    from dnscorrelate.scenarios import load_scenario

    assert cilium_stage.hubble
    path = Path(__file__).resolve().parents[2] / "scenarios" / f"{name}.yaml"
    result = run_scenario(load_scenario(path, "kind", "cilium"), stage=cilium_stage)
    assert result.passed, result.explain()
    assert result.capture_stats.get("hubble_streams") == 4 and result.capture_stats.get("hubble_l7_dns_requests", 0) > 0
    assert "several-servers-answered" not in {f.code for f in result.analysis.findings}
    assert {"restore", "baseline"} <= set(result.timings)


def test_side_by_side_smoke_hubble_and_the_capture_agree_on_the_same_lookups(cilium_stage, dns_visibility):
    """The smoke version of bench/hubble_side_by_side.py: lookups through the DNS proxy, captured by a session that
    reads Hubble; per lookup, both saw it, rcodes and answers agree, and only we show the VIP's translation."""
    from dnscorrelate.live.session import Session
    from dnscorrelate.side_by_side import lookups_side_by_side, summarize

    backend = cilium_stage.backend
    cilium_stage.new_window()
    session = Session(backend, hubble=True)
    session.start()
    try:
        for name in ("web", "example.com.", "nothing-here.demo.svc.cluster.local."):
            backend.run_queries("demo/mypod", "dnspython", name, "A", "udp", 4, 2, 2.0)
    finally:
        session.stop()
    evidence = session.evidence()
    summary = summarize(lookups_side_by_side(evidence.events, evidence.logs, evidence.facts, evidence.capture_stats))
    print(summary)
    assert summary["seen_by_us"] >= 12 and summary["seen_by_hubble"] >= 12 and summary["seen_by_both"] >= 12
    assert summary["rcode_compared"] >= 12 and summary["rcode_agree"] == summary["rcode_compared"]
    assert summary["answers_agree"] == summary["rcode_compared"]
    assert summary["vip_translation_us"] == summary["seen_by_us"] and summary["vip_translation_hubble"] == 0
    assert summary["timeouts_us"] == 0 and summary["drops_us"] == summary["drops_hubble"] == 0
