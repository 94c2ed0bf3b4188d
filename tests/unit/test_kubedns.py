"""The kubernetes stanza's emulation: Corefile rewrite and the generated zones, parsed by dnspython."""

import dns.rdatatype
import dns.zone

from dnscorrelate.cluster.lab import kubedns
from dnscorrelate.cluster.lab.topology import build_topology

from .conftest import spec_with

KUBEADM = """.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    log
}
"""


def test_stanza_is_found_with_zones_and_ttl():
    stanza = kubedns.find_kubernetes_stanza(KUBEADM)
    assert stanza.zones == ["cluster.local", "in-addr.arpa", "ip6.arpa"] and stanza.ttl == 30
    assert KUBEADM[stanza.start : stanza.end].strip().endswith("ttl 30\n    }")


def test_stanza_without_block_defaults_ttl():
    stanza = kubedns.find_kubernetes_stanza(".:53 {\n    kubernetes cluster.local\n    log\n}\n")
    assert stanza.zones == ["cluster.local"] and stanza.ttl == kubedns.DEFAULT_TTL


def test_rewrite_replaces_only_the_stanza():
    out = kubedns.emulate_kubernetes(KUBEADM, "/z/c.db", "/z/r.db", "0.96.10.in-addr.arpa")
    assert "kubernetes cluster.local" not in out.replace("# kubernetes", "")
    assert "file /z/c.db cluster.local {" in out and "file /z/r.db 0.96.10.in-addr.arpa {" in out
    assert "forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }" in out and out.rstrip().endswith("log\n}")
    assert out.count("{") == out.count("}")


def test_corefile_without_kubernetes_is_untouched():
    corefile = ".:53 {\n    forward . 192.0.2.1\n}\n"
    assert kubedns.emulate_kubernetes(corefile, "a", "b", "c") == corefile


def parse(text):
    return dns.zone.from_text(text, relativize=False, check_origin=True)


def records(zone, name, rdtype):
    node = zone.get_node(name)
    rdataset = node and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    return sorted(r.to_text() for r in rdataset) if rdataset else []


def test_cluster_zone_follows_the_kubernetes_dns_spec():
    spec = spec_with(manifests=[
        {"kind": "Service", "metadata": {"name": "ext", "namespace": "demo"}, "spec": {"type": "ExternalName", "externalName": "example.com"}},
    ])
    topology = build_topology(spec, "t")
    zone = parse(kubedns.cluster_zone(topology, 30, 7))
    assert records(zone, "web.demo.svc.cluster.local.", "A") == ["10.96.0.100"]
    assert records(zone, "web-headless.demo.svc.cluster.local.", "A") == ["10.244.0.5", "10.244.0.6"]
    assert records(zone, "web-0.web-headless.demo.svc.cluster.local.", "A") == ["10.244.0.5"]
    assert records(zone, "_http._tcp.web.demo.svc.cluster.local.", "SRV") == ["0 100 80 web.demo.svc.cluster.local."]
    assert records(zone, "_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV") == [
        "0 100 53 kube-dns.kube-system.svc.cluster.local."
    ]
    assert records(zone, "ext.demo.svc.cluster.local.", "CNAME") == ["example.com."]
    assert records(zone, "10-244-0-4.demo.pod.cluster.local.", "A") == ["10.244.0.4"]
    soa = zone.get_rdataset("cluster.local.", "SOA")
    assert soa.ttl == 30 and soa[0].serial == 7


def test_headless_endpoint_without_hostname_is_named_by_ip():
    spec = spec_with(manifests=[
        {"kind": "Pod", "metadata": {"name": "db", "namespace": "demo", "labels": {"app": "db"}}},
        {"kind": "Service", "metadata": {"name": "db", "namespace": "demo"},
         "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}},
    ])
    topology = build_topology(spec, "t")
    zone = parse(kubedns.cluster_zone(topology, 5, 1))
    ip = topology.pod("demo/db").ip
    assert records(zone, f"{ip.replace('.', '-')}.db.demo.svc.cluster.local.", "A") == [ip]
    assert records(zone, "_pg._tcp.db.demo.svc.cluster.local.", "SRV") == [f"0 100 5432 {ip.replace('.', '-')}.db.demo.svc.cluster.local."]


def test_reverse_zone_has_a_ptr_per_cluster_ip(topology):
    name = kubedns.reverse_zone_name(topology)
    zone = dns.zone.from_text(kubedns.reverse_zone(topology, 30, 1), relativize=False)
    assert name == "0.96.10.in-addr.arpa"
    assert records(zone, "10.0.96.10.in-addr.arpa.", "PTR") == ["kube-dns.kube-system.svc.cluster.local."]
    assert records(zone, "100.0.96.10.in-addr.arpa.", "PTR") == ["web.demo.svc.cluster.local."]
