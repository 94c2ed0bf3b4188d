"""HTML reports: self-contained, and every name from packets or logs is escaped."""

import re

import pytest

from dnscorrelate.analysis import analyze
from dnscorrelate.report.html import render_report, service_of
from tests.fixtures import HERE as FIXTURES, load_fixture, load_kube_facts

from .conftest import DENY_EGRESS, spec_with


def report_of(name, **kwargs):
    frame, stats, logs, facts = load_fixture(name)
    return render_report(analyze(frame, logs, facts, stats), name, **kwargs)


def test_report_is_self_contained():
    html = report_of("stale-endpoint")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "<svg" in html and 'class="waterfall"' in html and "coredns-unreachable" in html


def test_names_from_packets_are_escaped():
    frame, stats, logs, facts = load_fixture("healthy")
    hostile = '<script>alert("x")</script>.example.com.'
    frame["qname"] = frame["qname"].cat.add_categories([hostile])
    frame.loc[frame["qname"] == "example.com.", "qname"] = hostile
    html = render_report(analyze(frame, logs, facts, stats), "t")
    assert hostile not in html and "&lt;script&gt;alert(" in html


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if (p / "events.parquet").exists()))
def test_every_recorded_fault_renders(name):
    html = report_of(name)
    assert html.count('class="waterfall"') >= 1 and "</html>" in html


def test_service_names():
    assert service_of("x.svc.cluster.local.") == "" and service_of("svc.cluster.local.") == ""
    assert service_of("web.demo.svc.cluster.local.") == "demo/web"
    assert service_of("web-0.web-headless.demo.svc.cluster.local.") == "demo/web-headless"
    assert service_of("example.com.") == ""


def test_wide_lines_indent_upstream_sightings_even_beside_icmp_errors():
    """ICMP error rows make the sightings' depth a float column; `trace -o wide` still indents by it."""
    from dnscorrelate.report.records import trace_records
    from dnscorrelate.report.text import sighting_lines

    frame, stats, logs, facts = load_fixture("bad-forward-server")
    records = trace_records(analyze(frame, logs, facts, stats).correlation)
    upstream = next(r for r in records if any(h["depth"] == 1 for h in r["hops"]))
    lines = sighting_lines(upstream)
    assert len(lines) == len(upstream["hops"])
    assert any(line.startswith(" " * 8 + "+") for line in lines) and any(line.startswith(" " * 6 + "+") for line in lines)


def test_trace_lines_read_only_the_fields_marked_wide():
    """`trace pod/NAME`'s line reads only TRACES fields marked wide, its -o wide hop lines only hop fields marked wide."""
    from collections import namedtuple

    from dnscorrelate import schema
    from dnscorrelate.report.records import trace_records
    from dnscorrelate.report.text import sighting_lines, trace_line

    frame, stats, logs, facts = load_fixture("stale-endpoint")
    correlation = analyze(frame, logs, facts, stats).correlation
    wide = schema.names(schema.TRACES, schema.WIDE)
    Row = namedtuple("Row", wide)
    sighting_fields = set(schema.names(schema.EVENTS + schema.SIGHTING_FIELDS, schema.WIDE))
    for trace, record in zip(correlation.traces.itertuples(index=False), trace_records(correlation)):
        assert trace_line(Row(*(getattr(trace, name) for name in wide)), ["x"]) == trace_line(trace, ["x"])
        only_wide = {**record, "hops": [{k: v for k, v in h.items() if k in sighting_fields} for h in record["hops"]]}
        assert sighting_lines(only_wide) == sighting_lines(record)
    assert any(h["kind"] == "icmp-error" for r in trace_records(correlation) for h in r["hops"])


def test_a_scenario_that_could_not_run_is_a_record_with_its_error_and_what_it_lacks():
    from dnscorrelate.report.records import scenario_record
    from dnscorrelate.runner import ScenarioResult
    from dnscorrelate.scenarios import load_scenario

    record = scenario_record(ScenarioResult(load_scenario("scenarios/healthy.yaml"), error="LabError: no root"))
    assert (record["name"], record["passed"], record["error"], record["missing"]) == ("healthy", False, "LabError: no root", ["ok"])
    assert record["traces"] == [] and record["stats"]["queries"] == 0 and record["backend"] == "lab"


# --- the cluster section: drawn from ClusterFacts, the same for the lab and a real cluster ----------------


def node_boxes(html):
    """node name -> the pods (namespace/name, with their class) its box in the cluster section lists."""
    boxes = re.findall(r'<div class="node" data-node="([^"]+)">(.*?)</div>', html, re.S)
    return {name: re.findall(r'<span class="pod ([^"]*)"[^>]*>([^ <]+) <code>([^<]*)</code>', body) for name, body in boxes}


def corefile_block(html):
    return re.search(r'<details class="corefile"><summary>Corefile</summary><pre class="mono">(.*?)</pre></details>', html, re.S).group(1)


def test_the_lab_is_drawn_from_its_facts():
    """What LabBackend.facts() gives a lab of two nodes with NodeLocal DNS, a NetworkPolicy and a coredns-custom block."""
    from dnscorrelate.cluster.lab.facts import facts_from_topology
    from dnscorrelate.cluster.lab.topology import build_topology

    spec = spec_with(nodes=2, nodeLocalDNS=True, manifests=[DENY_EGRESS],
                     customServerBlocks={"corp.server": "corp.test:53 {\n    forward . 192.168.49.9\n}\n"})
    facts = facts_from_topology(build_topology(spec, "t"))
    frame, stats, logs, _ = load_fixture("healthy")
    html = render_report(analyze(frame, logs, facts, stats), "t", facts=facts)
    boxes = node_boxes(html)
    placed = {p.key: (p.spec.nodeName, p.ip) for p in facts.model.pods}
    assert set(boxes) == {"node-0", "node-1"}
    for node, pods in boxes.items():
        for classes, name, ip in pods:
            assert placed[name] == (node, ip)
            assert ("coredns" in classes.split()) == name.startswith("kube-system/coredns-")
    assert sorted(name for pods in boxes.values() for _, name, _ in pods) == sorted(placed)
    assert {name for _, name, _ in boxes["node-1"]} >= {"kube-system/coredns-1", "demo/web-0"}  # round-robin
    assert '<b>node-1</b> <code>192.168.49.3</code>, pods <code>10.244.1.0/24</code>, NodeLocal DNS <code>169.254.20.10</code>' in html
    assert "forwards <code>.</code> to <code>192.168.49.1</code>" in html  # forward . /etc/resolv.conf: the lab's upstream
    assert "forwards <code>corp.test</code> to <code>192.168.49.9</code> <span class=\"muted\">(coredns-custom corp.server)</span>" in html
    assert '<td class="mono">demo/deny-egress</td><td>Egress</td><td class="mono">all pods</td>' in html
    assert corefile_block(html) == facts.corefile  # nothing in the lab's Corefile needs escaping
    assert "<summary>coredns-custom <code>corp.server</code></summary>" in html
    assert "cluster <b>lab t</b>" in html


def test_a_real_cluster_is_drawn_from_the_objects_the_api_gave():
    """Objects recorded from a kind cluster (the official client's JSON): Kubernetes' names, its nodes and Corefile."""
    facts = load_kube_facts()
    frame, stats, logs, _ = load_fixture("healthy")
    html = render_report(analyze(frame, logs, facts, stats), "trace demo/mypod", "dnscorrelate trace session", facts=facts)
    boxes = node_boxes(html)
    assert set(boxes) == {"dnsc-tb3c1a982-control-plane", "dnsc-tb3c1a982-worker"}
    worker = {name: (classes.split(), ip) for classes, name, ip in boxes["dnsc-tb3c1a982-worker"]}
    assert worker["demo/mypod"] == ([], "10.244.1.3")
    assert worker["kube-system/coredns-54b5489548-f2trn"] == (["coredns"], "10.244.1.2")
    assert worker["kube-system/kube-proxy-lkl4n"] == (["host"], "172.26.0.2")  # hostNetwork: the node's address
    plane = {name for _, name, _ in boxes["dnsc-tb3c1a982-control-plane"]}
    assert "kube-system/coredns-54b5489548-glwsf" in plane and "demo/mypod" not in plane
    assert '<b>dnsc-tb3c1a982-worker</b> <code>172.26.0.2</code>, pods <code>10.244.1.0/24</code>' in html
    assert ('<td class="mono">kube-system/kube-dns</td><td>ClusterIP</td><td class="mono">10.96.0.10</td>'
            '<td class="mono">53/UDP, 53/TCP, 9153/TCP</td><td class="mono">10.244.0.2:53, 10.244.0.2:9153, 10.244.1.2:53, 10.244.1.2:9153</td>') in html
    assert "CoreDNS forwards <code>.</code> to <code>172.26.0.4</code>" in html
    assert "forward . 172.26.0.4 {" in corefile_block(html)
    assert "dnscorrelate trace session · cluster <b>kind-dnsc-tb3c1a982</b>" in html


def test_hostile_strings_from_the_cluster_are_escaped():
    """A Corefile, coredns-custom keys and texts, node addresses and a context name are anyone's text."""
    hostile = '</pre><script>alert("x")</script>'

    def edit(item):
        if item["kind"] == "ConfigMap":
            item = {**item, "data": {"Corefile": f"# {hostile}\n" + item["data"]["Corefile"]}}
        if item["kind"] == "Node":
            item = {**item, "status": {**item["status"], "addresses": [{"type": "InternalIP", "address": hostile}]}}
        return item

    facts = load_kube_facts(edit=edit)
    facts.custom_server_blocks[f"{hostile}.server"] = f"example.test:53 {{ # {hostile}\n    forward . 10.0.0.1\n}}\n"
    facts.cluster = hostile
    frame, stats, logs, _ = load_fixture("healthy")
    html = render_report(analyze(frame, logs, facts, stats), "t", facts=facts)
    assert "<script>" not in html.split("<script>\n", 1)[0] and html.count("<script>") == 1  # only the report's own
    escaped = "&lt;/pre&gt;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    assert corefile_block(html).startswith(f"# {escaped}\n.:53 {{")
    assert html.count(escaped) >= 2 + 2 + 3  # the Corefile's and the custom block's text, its key, both nodes, the name thrice


def test_no_cluster_section_without_a_cluster():
    from dnscorrelate.cluster.facts import ClusterFacts

    frame, stats, logs, facts = load_fixture("healthy")
    analysis = analyze(frame, logs, facts, stats)
    for none in (None, ClusterFacts()):  # a log file alone, bare network namespaces
        html = render_report(analysis, "t", facts=none)
        assert 'id="cluster"' not in html and "cluster <b>" not in html
