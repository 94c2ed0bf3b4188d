"""NetworkPolicies really drop DNS in the kernel, and removing them restores it."""

from pathlib import Path

from dnscorrelate.cluster.spec import load_manifests

from .conftest import dig, in_pod
from .test_lab import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def times_out(lab, name="example.com"):
    done = in_pod(lab, "mypod", "dig", "+tries=1", "+timeout=1", name)
    return done.returncode == 9 and "timed out" in done.stdout


def test_deny_egress_times_out_and_deleting_it_restores(fresh_lab):
    lab = fresh_lab()
    assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]
    applied = cli("lab", "apply", "-f", str(EXAMPLES / "deny-egress.yaml"), "--lab", lab.name)
    assert applied.returncode == 0, applied.stderr
    assert times_out(lab)
    deleted = cli("lab", "delete", "networkpolicy/deny-egress", "-n", "demo", "--lab", lab.name)
    assert deleted.returncode == 0, deleted.stderr
    assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]


def test_allowing_dns_to_coredns_pods_works_after_dnat(fresh_lab):
    lab = fresh_lab()
    lab.apply(load_manifests(EXAMPLES / "deny-egress.yaml") + load_manifests(EXAMPLES / "allow-dns.yaml"))
    assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]  # to the VIP, allowed as CoreDNS pod IPs
    assert dig(lab, "mypod", "+tcp", "example.com") == ["192.0.2.10"]
    web = in_pod(lab, "mypod", "timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/10.96.0.100/80")
    assert web.returncode == 124  # other egress is still dropped: the connect hangs


def test_ingress_policy_on_coredns_drops_queries(fresh_lab, tmp_path):
    lab = fresh_lab()
    policy = tmp_path / "dns-ingress.yaml"
    policy.write_text(
        "kind: NetworkPolicy\nmetadata: {name: only-monitoring, namespace: kube-system}\n"
        "spec:\n  podSelector: {matchLabels: {k8s-app: kube-dns}}\n"
        "  ingress: [{from: [{namespaceSelector: {matchLabels: {team: monitoring}}}]}]\n"
    )
    lab.apply(load_manifests(policy))
    assert times_out(lab)
    lab.delete("NetworkPolicy", "kube-system", "only-monitoring")
    assert dig(lab, "mypod", "example.com") == ["192.0.2.10"]


def test_a_new_service_resolves_and_a_deleted_one_is_nxdomain(fresh_lab, tmp_path):
    lab = fresh_lab()
    svc = tmp_path / "svc.yaml"
    svc.write_text("kind: Service\nmetadata: {name: api, namespace: demo}\nspec: {selector: {app: web}, ports: [{port: 8080}]}\n")
    lab.apply(load_manifests(svc))
    ip = next(s.cluster_ip for s in lab.topology.services if s.key == "demo/api")
    assert _retry(lab, "api.demo.svc.cluster.local", [ip])
    lab.delete("svc", "demo", "api")
    assert _retry(lab, "api.demo.svc.cluster.local", [])


def _retry(lab, name, expected, tries=30):
    """The file plugin reloads a changed zone within a second; wait for it."""
    import time

    for _ in range(tries):
        if dig(lab, "mypod", name) == expected:
            return True
        time.sleep(0.1)
    return False


def test_applying_a_pod_is_refused_clearly(fresh_lab, tmp_path):
    lab = fresh_lab()
    pod = tmp_path / "pod.yaml"
    pod.write_text("kind: Pod\nmetadata: {name: late, namespace: demo}\n")
    done = cli("lab", "apply", "-f", str(pod), "--lab", lab.name)
    assert done.returncode == 2 and "only Service, NetworkPolicy can change" in done.stderr
