"""resolv.conf and hosts as the kubelet writes them; upstream and NodeLocal Corefiles."""

from pathlib import Path

import dns.zone

from dnscorrelate.cluster import upstream
from dnscorrelate.cluster.lab import files
from dnscorrelate.cluster.lab.topology import build_topology

from .conftest import spec_with


def resolv_of(topology, key):
    pod = topology.pod(key)
    return files.pod_resolv_conf(topology, pod, topology.manifest_pod(key))


def test_cluster_first_pod_gets_the_kubernetes_search_list(topology):
    assert resolv_of(topology, "demo/mypod") == (
        "search demo.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )


def test_coredns_pods_use_the_nodes_resolver(topology):
    assert resolv_of(topology, "kube-system/coredns-0") == "nameserver 192.168.49.1\n"


def test_dns_config_overrides_options_and_adds_searches():
    spec = spec_with(manifests=[{
        "kind": "Pod", "metadata": {"name": "tuned", "namespace": "demo"},
        "spec": {"dnsConfig": {"searches": ["corp.internal"], "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}},
    }])
    text = resolv_of(build_topology(spec, "t"), "demo/tuned")
    assert "search demo.svc.cluster.local svc.cluster.local cluster.local corp.internal\n" in text
    assert text.endswith("options ndots:1 edns0\n")


def test_node_local_dns_becomes_the_pods_nameserver():
    topology = build_topology(spec_with(nodeLocalDNS=True), "t")
    assert "nameserver 169.254.20.10\n" in resolv_of(topology, "demo/mypod")
    corefile = files.nodelocal_corefile(topology)
    assert "bind 169.254.20.10" in corefile and "force_tcp" in corefile and "forward . 10.96.0.10" in corefile


def test_pod_hosts_file_names_the_pod(topology):
    pod = topology.pod("demo/web-0")
    text = files.pod_hosts(pod, topology.manifest_pod(pod.key), "cluster.local")
    assert f"{pod.ip}\tweb-0.web-headless.demo.svc.cluster.local\tweb-0\n" in text


def test_upstream_zone_is_wrapped_with_an_soa_and_parses():
    text = upstream.upstream_zone("example.com", "@ A 192.0.2.10\nwww CNAME @\n", 3)
    zone = dns.zone.from_text(text, relativize=False)
    assert zone.get_rdataset("www.example.com.", "CNAME")[0].to_text() == "example.com."


def test_upstream_corefile_serves_each_zone_and_nxdomain_for_the_rest(topology):
    corefile = upstream.upstream_corefile(topology.spec, Path("/u"))
    assert "file /u/root.db ." in corefile and "file /u/example.com.db example.com" in corefile
    assert "response set ra" in corefile


def test_server_blocks_and_the_one_that_serves_a_name():
    from dnscorrelate.cluster.facts import ClusterFacts

    facts = ClusterFacts(
        corefile="cluster.local:53 in-addr.arpa:53 {\n  errors\n  kubernetes cluster.local {\n    pods insecure\n  }\n}\n"
                 ".:53 {\n  forward . /etc/resolv.conf # comment\n  cache 30\n}\n",
        custom_server_blocks={"corp.server": "corp.test:53 {\n  acl {\n    block\n  }\n  forward . 10.0.0.53\n}\n"},
    )
    blocks = facts.server_blocks()
    assert [(b.zones, b.plugins, b.source) for b in blocks] == [
        (("cluster.local", "in-addr.arpa"), ("errors", "kubernetes"), "Corefile"),
        ((".",), ("forward", "cache"), "Corefile"),
        (("corp.test",), ("acl", "forward"), "coredns-custom corp.server"),
    ]
    assert facts.serving_block("web.demo.svc.cluster.local.") == blocks[0]
    assert facts.serving_block("A.Corp.Test.") == blocks[2] and facts.serving_block("corp.test.") == blocks[2]
    assert facts.serving_block("notcorp.test.") == blocks[1]
    assert ClusterFacts(corefile="cluster.local:53 {\n  errors\n}\n").serving_block("example.com.") is None
    on_another_port = ClusterFacts(corefile="cluster.local {\n  errors\n}\n.:5353 {\n  forward . 10.0.0.53\n}\n")
    assert [b.port for b in on_another_port.server_blocks()] == [53, 5353]
    assert on_another_port.serving_block("example.com.") is None and on_another_port.serving_block("example.com.", 5353)
