"""The kind cluster's objects and pod network, rendered from the lab spec (no cluster needed)."""

import ipaddress
import json

from dnscorrelate.cluster.kind.network import Node, cni_config, masquerade_rules, node_script
from dnscorrelate.cluster.kind.workloads import cluster_corefile, manifest_objects, write_upstream_files
from dnscorrelate.cluster.lab.spec import load_spec


def test_manifests_become_runnable_api_objects_in_creation_order():
    objects = manifest_objects(load_spec(), "dnscorrelate/client:x")
    kinds = [o["kind"] for o in objects]
    assert kinds == sorted(kinds, key=["Namespace", "Pod", "Service", "NetworkPolicy"].index)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["demo"]  # built-ins already exist
    pods = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Pod"}
    assert pods["mypod"]["spec"]["containers"][0]["command"] == ["sleep", "infinity"]
    web = pods["web-0"]["spec"]
    assert web["containers"][0]["command"] == ["python3", "-m", "http.server", "8080"]
    assert (web["hostname"], web["subdomain"]) == ("web-0", "web-headless")
    assert all(c["image"] == "dnscorrelate/client:x" and c["imagePullPolicy"] == "Never"
               for p in pods.values() for c in p["spec"]["containers"])
    headless = next(o for o in objects if o["metadata"]["name"] == "web-headless")
    assert headless["apiVersion"] == "v1" and headless["spec"]["clusterIP"] == "None"


def test_corefile_forwards_to_the_upstream_not_the_nodes_resolver():
    corefile = load_spec().corefile
    rewritten = cluster_corefile(corefile, "172.30.0.9")
    assert "/etc/resolv.conf" in corefile and "/etc/resolv.conf" not in rewritten
    assert "forward . 172.30.0.9 {" in rewritten
    assert cluster_corefile("forward . 10.0.0.1\n", "172.30.0.9") == "forward . 10.0.0.1\n"  # explicit targets stay


def test_upstream_files_serve_every_zone_from_the_mounted_directory(tmp_path):
    spec = load_spec()
    write_upstream_files(spec, tmp_path, 7)
    corefile = (tmp_path / "Corefile").read_text()
    for zone in spec.upstreamZones:
        assert f"file {tmp_path / (zone + '.db')} {zone}" in corefile
        assert "SOA" in (tmp_path / f"{zone}.db").read_text()


def test_pod_network_script_routes_to_peers_and_masquerades_leaving_traffic():
    me, peer = Node("cp", "172.30.0.2", "10.244.0.0/24"), Node("w", "172.30.0.3", "10.244.1.0/24")
    config = json.loads(cni_config(me))
    ipam = config["plugins"][0]["ipam"]
    assert config["plugins"][0]["type"] == "ptp" and ipam["ranges"] == [[{"subnet": "10.244.0.0/24"}]]
    script = node_script(me, [peer], "172.30.0.0/16")
    assert "ip route replace 10.244.1.0/24 via 172.30.0.3" in script
    assert "10.244.0.0/24 via" not in script
    rules = masquerade_rules("172.30.0.0/16")
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in rules
    # nothing a pod sends leaves for an address outside the pods, the Services and the cluster's Docker network
    assert "ip daddr != { 10.244.0.0/16, 10.96.0.0/16, 172.30.0.0/16 } counter drop" in rules
    assert ipaddress.ip_network(me.pod_cidr).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
