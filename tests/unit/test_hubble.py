"""Hubble flows (`hubble observe -o json` / jsonpb) into packet events: real output from cilium/hubble-otel's
test data (../shared/data/third-party/hubble), crafted edge cases, and `correlate --hubble-json`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnscorrelate.cli import main
from dnscorrelate.errors import EventsError
from dnscorrelate.sources.hubble import SYNTHETIC_ID_BASE, read_hubble_json, time_ns
from tests.unit.test_cli_evidence import two_lookups

THIRD_PARTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "third-party" / "hubble"  # shared/ sits beside the repository
GKE = "cilium-hubble-otel-basic-sample-330-dns-flows.json"
KIND = "cilium-hubble-otel-basic-sample-400-udp-flows.json"


def third_party(name: str) -> Path:
    path = THIRD_PARTY / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data sits beside the repository)")
    return path


def hubble_says(path: Path) -> dict:
    """What the file itself says, counted straight from its JSON: L7 DNS flows by l7.type, responses' rcodes
    (absent: 0), L3/L4 flows by verdict, and each L7 response's rcode by its time."""
    said = {"l7": Counter(), "rcode": Counter(), "l3_l4": Counter(), "rcode_at": {}}
    for line in path.read_text().splitlines():
        flow = json.loads(line)["flow"]
        if flow["Type"] == "L7":
            said["l7"][flow["l7"]["type"]] += 1
            if flow["l7"]["type"] == "RESPONSE":
                said["rcode"][flow["l7"]["dns"].get("rcode", 0)] += 1
                said["rcode_at"][time_ns(flow["time"])] = flow["l7"]["dns"].get("rcode", 0)
        else:
            said["l3_l4"][flow["verdict"]] += 1
    return said


def accounted(stats: dict) -> None:
    """Every line is counted once, every record once, every flow once."""
    assert stats["lines"] == stats.get("blank_lines", 0) + stats.get("unparsed_lines", 0) + stats["records"]
    assert stats["records"] == stats["flows"] + stats.get("non_flow_records", 0)
    kinds = ["l7_dns_requests", "l7_dns_responses", "l7_dns_other", "l7_not_dns", "l3_l4_dns_port", "l3_l4_other_port", "bad_flows"]
    assert stats["flows"] == sum(stats.get(k, 0) for k in kinds) + sum(v for k, v in stats.items() if k.startswith("type_"))


def pairs_of(frame):
    """For each synthetic id, its request and response rows (asserting there is exactly one of each)."""
    dns = frame[frame["kind"] == "dns"].astype({"src_ip": str, "dst_ip": str, "qname": str, "qtype": str})
    counts = dns.groupby("dns_id")["qr"].agg(["sum", "count"])
    assert (counts["sum"] == 1).all() and (counts["count"] == 2).all()
    return dns[~dns["qr"]].set_index("dns_id"), dns[dns["qr"]].set_index("dns_id")


@pytest.mark.parametrize("name, pairs", [(GKE, 165), (KIND, 74)])
def test_each_request_is_paired_with_its_response_as_hubble_counts_them(name, pairs):
    path = third_party(name)
    said = hubble_says(path)
    frame, stats = read_hubble_json(path)
    accounted(stats)
    assert said["l7"] == {"REQUEST": pairs, "RESPONSE": pairs}
    assert stats["l7_dns_pairs"] == pairs and not stats.get("requests_without_response") and not stats.get("responses_without_request")
    requests, responses = pairs_of(frame)
    assert len(requests) == pairs and (requests.index >= SYNTHETIC_ID_BASE).all()
    responses = responses.loc[requests.index]
    assert (responses["dst_ip"] == requests["src_ip"]).all() and (responses["dst_port"] == requests["src_port"]).all()
    assert (responses["qname"] == requests["qname"]).all() and (responses["qtype"] == requests["qtype"]).all()
    assert (responses["ts_ns"] > requests["ts_ns"]).all() and (responses["latency_ns"] > 0).all()
    assert Counter(responses["rcode"]) == {("NOERROR" if code == 0 else "NXDOMAIN"): n for code, n in said["rcode"].items()}
    rcode_text = {0: "NOERROR", 3: "NXDOMAIN"}
    assert {int(t): r for t, r in zip(responses["ts_ns"], responses["rcode"])} == {t: rcode_text[c] for t, c in said["rcode_at"].items()}
    assert stats["warnings"] and "no DNS id" in stats["warnings"][0]


def test_the_gke_file_nxdomains_and_answers():
    frame, stats = read_hubble_json(third_party(GKE))
    responses = frame[frame["qr"]]
    assert Counter(responses["rcode"]) == {"NXDOMAIN": 102, "NOERROR": 63}
    assert set(frame["proto"]) == {"tcp"} and set(frame["verdict"]) == {"FORWARDED"} and set(frame["ifname"]) == {"dns-proxy"}
    # the proxy guards node-local-dns's egress: every row is at a node-local-dns pod, queries leaving, answers arriving
    assert {v.split("/")[1].rsplit("-", 1)[0] for v in frame["vantage"]} == {"node-local-dns"}
    assert set(zip(frame["qr"], frame["pkt_type"])) == {(False, "OUTGOING"), (True, "HOST")}
    answered = responses[responses["answers"] != ""]
    assert len(answered) == 55 and answered["answers"].str.startswith("A ").all()
    assert len(stats["nodes"]) == 4


def test_the_kind_file_l3_l4_flows_are_flow_rows_with_their_verdicts():
    path = third_party(KIND)
    said = hubble_says(path)
    frame, stats = read_hubble_json(path)
    flows = frame[frame["kind"] == "flow"]
    assert stats["l3_l4_dns_port"] == len(flows) == 252 and Counter(flows["verdict"]) == said["l3_l4"] == {"FORWARDED": 222, "REDIRECTED": 30}
    assert (flows["dns_id"] == -1).all() and not flows["decoded"].any() and set(flows["drop_reason"]) == {""}
    overlay = flows[flows["ifname"] == "cilium_vxlan"]
    assert len(overlay) == 74 and set(overlay["vantage"]) == {"kind-control-plane"} and set(overlay["role"]) == {"node"}
    assert set(frame.loc[frame["kind"] == "dns", "vantage"]) == {"bookinfo/ratings-v1-b6994bb9-jgqxb", "bookinfo/productpage-v1-6b746f74dc-9rcxx"}


T0 = "2026-01-02T03:04:05.000000001Z"


def flow(**fields) -> dict:
    base = {"time": T0, "verdict": "FORWARDED", "IP": {"source": "10.0.1.5", "destination": "10.0.0.10", "ipVersion": "IPv4"},
            "l4": {"UDP": {"source_port": 40000, "destination_port": 53}},
            "source": {"namespace": "demo", "pod_name": "client"}, "destination": {"namespace": "kube-system", "pod_name": "coredns-1"},
            "Type": "L3_L4", "node_name": "worker-1", "traffic_direction": "EGRESS"}
    return {**base, **fields}


def reply(**fields) -> dict:
    return flow(IP={"source": "10.0.0.10", "destination": "10.0.1.5"}, l4={"UDP": {"source_port": 53, "destination_port": 40000}},
                source={"namespace": "kube-system", "pod_name": "coredns-1"}, destination={"namespace": "demo", "pod_name": "client"},
                **fields)


def dns_l7(kind: str, **dns) -> dict:
    return {"type": kind, "dns": {"query": "web.demo.svc.cluster.local.", "qtypes": ["A"], "observation_source": "proxy", **dns}}


def write_lines(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_a_policy_drop_is_a_flow_row_with_hubbles_reason(tmp_path):
    dropped = flow(verdict="DROPPED", drop_reason=133, drop_reason_desc="POLICY_DENIED", event_type={"type": 1, "sub_type": 133})
    frame, stats = read_hubble_json(write_lines(tmp_path / "drops.json", [{"flow": dropped, "node_name": "worker-1", "time": T0}]))
    row = frame.iloc[0]
    assert (row.kind, row.verdict, row.drop_reason, row.vantage, row.role, row.pkt_type) == (
        "flow", "DROPPED", "POLICY_DENIED", "demo/client", "pod", "OUTGOING")
    assert (row.src_ip, row.src_port, row.dst_ip, row.dst_port, row.qr) == ("10.0.1.5", 40000, "10.0.0.10", 53, False)
    assert row.ts_ns == 1_767_323_045_000_000_001 and stats["dropped"] == 1 and stats["dropped_by_reason"] == {"POLICY_DENIED": 1}


def test_bare_flows_camel_case_and_numeric_enums_as_jsonpb_may_print_them(tmp_path):
    request = {"time": T0, "verdict": 1, "IP": {"source": "fd00::5", "destination": "fd00::a"},
               "l4": {"UDP": {"sourcePort": 40000, "destinationPort": 53}}, "source": {"namespace": "demo", "podName": "client"},
               "Type": 2, "nodeName": "worker-1", "l7": {"type": 1, "dns": {"query": "Web.Demo.", "qtypes": ["AAAA"]}}}
    response = {**request, "time": "2026-01-02T04:04:05.5+01:00", "IP": {"source": "fd00::a", "destination": "fd00::5"},
                "l4": {"UDP": {"sourcePort": 53, "destinationPort": 40000}}, "destination": {"namespace": "demo", "podName": "client"},
                "source": {}, "l7": {"type": 2, "latencyNs": "2500", "dns": {"query": "Web.Demo.", "qtypes": ["AAAA"], "rcode": 2,
                                                                            "ips": ["fd00::99"], "cnames": ["alias.demo."]}}}
    frame, stats = read_hubble_json(write_lines(tmp_path / "jsonpb.json", [request, response]))
    assert stats["l7_dns_pairs"] == 1 and list(frame["vantage"]) == ["demo/client", "demo/client"]
    answer = frame.iloc[1]
    assert (answer.qname, answer.qtype, answer.rcode, answer.family, answer.latency_ns) == ("web.demo.", "AAAA", "SERVFAIL", 6, 2500)
    assert answer.answers == "AAAA fd00::99, CNAME alias.demo." and answer.ancount == 2
    assert answer.ts_ns - frame.iloc[0].ts_ns == 499_999_999  # +01:00 is an hour ahead of UTC


def test_an_ingress_proxy_sees_from_the_server(tmp_path):
    records = [{"flow": flow(Type="L7", traffic_direction="INGRESS", l7=dns_l7("REQUEST"))},
               {"flow": reply(Type="L7", traffic_direction="INGRESS", l7=dns_l7("RESPONSE"))}]
    frame, _ = read_hubble_json(write_lines(tmp_path / "ingress.json", records))
    assert list(frame["vantage"]) == ["kube-system/coredns-1"] * 2 and list(frame["role"]) == ["coredns"] * 2
    assert list(frame["pkt_type"]) == ["HOST", "OUTGOING"]


def test_unpaired_flows_other_records_and_bad_lines_are_counted_with_their_lines(tmp_path):
    late = "2026-01-02T03:04:09Z"
    records = [
        {"flow": flow(Type="L7", l7=dns_l7("REQUEST"))},                               # 1: never answered
        {"flow": reply(Type="L7", time=late, l7=dns_l7("RESPONSE", rcode=3))},          # 2: answers it
        {"flow": reply(Type="L7", time=late, l7=dns_l7("RESPONSE"))},                   # 3: a second answer: no request left
        "",                                                                            # 4
        "{not json",                                                                   # 5
        {"flow": flow(Type="L7", l7={"type": "REQUEST", "http": {"method": "GET"}})},  # 6: HTTP
        {"flow": flow(Type="SOCK")},                                                   # 7
        {"flow": flow(l4={"TCP": {"source_port": 443, "destination_port": 50000}})},   # 8: not DNS
        {"flow": flow(time="yesterday")},                                              # 9: bad time
        {"node_status": {"state_change": "NODE_CONNECTED", "node_names": ["worker-1"]}},
        {"lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "12"}},
        {"flow": flow(Type="L7", l7=dns_l7("SAMPLE"))},
        "[1, 2]",
    ]
    frame, stats = read_hubble_json(write_lines(tmp_path / "mixed.json", records))
    accounted(stats)
    assert (stats["l7_dns_pairs"], stats["responses_without_request"], stats["requests_without_response"]) == (1, 1, 0)
    assert len(set(frame["dns_id"])) == 2 and list(frame["rcode"]) == ["", "NXDOMAIN", "NOERROR"]
    assert stats["unparsed_line_numbers"] == [5, 13] and stats["blank_lines"] == 1
    assert stats["bad_flow_line_numbers"] == [9] and "line 9" in stats["bad_flow_error"]
    assert (stats["l7_not_dns"], stats["type_SOCK"], stats["l3_l4_other_port"], stats["l7_dns_other"]) == (1, 1, 1, 1)
    assert (stats["records_node_status"], stats["records_lost_events"], stats["events_lost"]) == (1, 1, 12)


def test_a_request_never_answered_keeps_its_own_id(tmp_path):
    records = [{"flow": flow(Type="L7", l7=dns_l7("REQUEST"))}, {"flow": flow(Type="L7", time="2026-01-02T03:04:06Z", l7=dns_l7("REQUEST"))},
               {"flow": reply(Type="L7", time="2026-01-02T03:04:06.5Z", l7=dns_l7("RESPONSE"))}]
    frame, stats = read_hubble_json(write_lines(tmp_path / "retry.json", records))
    assert stats["requests_without_response"] == 1 and list(frame["dns_id"]) == [SYNTHETIC_ID_BASE, SYNTHETIC_ID_BASE + 1, SYNTHETIC_ID_BASE]


@pytest.mark.parametrize("content, reason", [("this is not hubble\nnor this\n", "lines that are not JSON objects: 1, 2"),
                                             ('{"kind": "something else"}\n', "no Hubble flow found")])
def test_a_file_that_is_not_hubble_output_is_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "flows.json"
    path.write_text(content)
    with pytest.raises(EventsError, match=reason) as caught:
        read_hubble_json(path)
    assert str(path) in str(caught.value)


def test_correlate_hubble_json_gives_one_trace_per_lookup():
    path = third_party(GKE)
    result = CliRunner().invoke(main, ["correlate", "--hubble-json", str(path), "-o", "json"])
    assert result.exit_code == 0, result.output
    traces = json.loads(result.stdout)["traces"]
    assert len(traces) == 165 and Counter(t["rcode"] for t in traces) == {"NXDOMAIN": 102, "NOERROR": 63}
    assert all(t["outcome"] == "answered" for t in traces)
    assert "hubble_l7_dns_pairs=165" in result.stderr and "warning: hubble: no DNS id" in result.stderr


def test_correlate_mixes_hubble_with_a_pcap(tmp_path):
    pcap = two_lookups(tmp_path / "capture.pcap")
    hubble = write_lines(tmp_path / "flows.json", [{"flow": flow(Type="L7", l7=dns_l7("REQUEST"))},
                                                   {"flow": reply(Type="L7", l7=dns_l7("RESPONSE", rcode=3), time="2026-01-02T03:04:05.002Z")},
                                                   {"flow": flow(verdict="DROPPED", drop_reason_desc="POLICY_DENIED")}])
    result = CliRunner().invoke(main, ["correlate", "--pcap", f"pod/demo/mypod={pcap}", "--hubble-json", str(hubble), "-o", "json"])
    assert result.exit_code == 0, result.output
    traces = json.loads(result.stdout)["traces"]
    assert sorted(t["client"]["vantage"] for t in traces) == ["demo/client", "demo/mypod", "demo/mypod"]
    assert "pcap_packets=4" in result.stderr and "hubble_dropped=1" in result.stderr


def test_a_bad_hubble_file_on_the_command_line_is_a_clear_error(tmp_path):
    bad = tmp_path / "flows.json"
    bad.write_text("not json at all\n")
    result = CliRunner().invoke(main, ["correlate", "--hubble-json", str(bad)])
    assert result.exit_code == 2 and "flows.json" in result.stderr and "Traceback" not in result.output


# Hubble's evidence all the way to findings (issue 19 item 4): flows join the lookups they carried, a DROPPED flow
# is a drop said in Hubble's words and where it was enforced, and Hubble's view is one place per pod.

def analysis_of(path: Path):
    from dnscorrelate.analysis import analyze
    from dnscorrelate.sources.evidence import read_evidence

    frame, stats = read_evidence(hubble_json=[path])
    return analyze(frame, None, None, stats)


def by_code(analysis) -> dict:
    return {f.code: f for f in analysis.findings}


def test_a_query_dropped_by_an_egress_policy_with_no_l7_record_is_a_lookup_dropped_by_policy(tmp_path):
    """The common case of a deny policy: Cilium drops the packet before its DNS proxy sees it, so Hubble has one
    L3/L4 flow, DROPPED, POLICY_DENIED, and no L7 record. The retry from the same socket is the same lookup."""
    drops = [{"flow": flow(verdict="DROPPED", drop_reason=133, drop_reason_desc="POLICY_DENIED", time=when)}
             for when in (T0, "2026-01-02T03:04:10Z")]
    analysis = analysis_of(write_lines(tmp_path / "deny.json", drops))
    trace = analysis.correlation.traces.iloc[0]
    assert len(analysis.correlation.traces) == 1
    assert (trace.outcome, trace.coverage, trace.client_vantage, trace.server, trace.served_from) == (
        "timed-out", "vantage", "demo/client", "kube-system/coredns-1", "unknown")
    assert (trace.verdict, trace.drop_reason, trace.dropped_at) == ("DROPPED", "POLICY_DENIED", "demo/client egress")
    found = by_code(analysis)
    assert set(found) == {"dropped-by-policy"}, [f.summary for f in analysis.findings]  # not no-response-seen, not dropped-before-node
    drop = found["dropped-by-policy"]
    assert drop.hop == "pod->node" and drop.evidence["reason"] == "POLICY_DENIED" and drop.evidence["traces"] == [0]
    assert "POLICY_DENIED" in drop.summary and "at demo/client on its egress" in drop.summary and "kube-system/coredns-1" in drop.summary
    assert "no DNS fields" in drop.summary  # the flow shows no name, and the finding does not invent one
    assert analysis.correlation.stats["flows_alone"] == 2


def test_a_drop_at_the_servers_ingress_is_placed_there_and_names_the_client(tmp_path):
    dropped = flow(verdict="DROPPED", drop_reason_desc="POLICY_DENIED", traffic_direction="INGRESS")
    analysis = analysis_of(write_lines(tmp_path / "ingress.json", [{"flow": dropped}]))
    trace = analysis.correlation.traces.iloc[0]
    assert (trace.client_vantage, trace.dropped_at) == ("demo/client", "kube-system/coredns-1 ingress")
    drop = by_code(analysis)["dropped-by-policy"]
    assert drop.hop == "node->coredns" and "at kube-system/coredns-1 on its ingress" in drop.summary and "from demo/client" in drop.summary


def test_a_drop_for_another_reason_is_not_called_a_policy(tmp_path):
    dropped = flow(verdict="DROPPED", drop_reason_desc="CT_MAP_INSERTION_FAILED")
    analysis = analysis_of(write_lines(tmp_path / "ct.json", [{"flow": dropped}]))
    assert set(by_code(analysis)) == {"dropped-in-datapath"}
    assert "reason CT_MAP_INSERTION_FAILED" in by_code(analysis)["dropped-in-datapath"].summary


def test_l3_l4_flows_join_the_l7_lookup_they_carried_and_the_server_is_named_by_hubble(tmp_path):
    """An L7 pair with the datapath's flows around it (to the proxy, from the server): one lookup, its flows among
    its sightings; the server is Hubble's destination pod, where it was served from is unknown, and the time the
    `ok` reports is said to be the DNS proxy's."""
    answer = dns_l7("RESPONSE", ips=["10.96.0.20"])
    records = [{"flow": flow(verdict="REDIRECTED", time="2026-01-02T03:04:05.0009Z")},
               {"flow": flow(Type="L7", l7=dns_l7("REQUEST"), time="2026-01-02T03:04:05.001Z")},
               {"flow": reply(trace_observation_point="TO_ENDPOINT", time="2026-01-02T03:04:05.0029Z")},
               {"flow": reply(Type="L7", l7=answer, time="2026-01-02T03:04:05.003Z")}]
    analysis = analysis_of(write_lines(tmp_path / "pair.json", records))
    trace = analysis.correlation.traces.iloc[0]
    assert len(analysis.correlation.traces) == 1
    assert (trace.server, trace.served_from, trace.coverage, trace.verdict) == ("kube-system/coredns-1", "unknown", "vantage", "FORWARDED")
    seen = analysis.correlation.sightings
    assert list(seen.loc[seen["trace_id"] == 0, "kind"].astype(str)) == ["flow", "dns", "flow", "dns"]
    ok = by_code(analysis)["ok"]
    assert "DNS proxy's time" in ok.summary and "every hop in order" not in ok.summary


def test_the_kind_file_flows_join_their_lookups_and_findings_stay_at_the_proxys_vantage():
    """Real flows: every L3/L4 flow of a client pod's socket joins one of its lookups; the 74 left are the DNS
    proxy's own forwarding of each query over the overlay (its own socket, no lookup of a pod's)."""
    analysis = analysis_of(third_party(KIND))
    traces, seen = analysis.correlation.traces, analysis.correlation.sightings
    flows = seen[seen["kind"].astype(str) == "flow"]
    at_pods = flows[flows["vantage"].astype(str).str.startswith("bookinfo/")]
    assert len(at_pods) == 178 and (at_pods["trace_id"] >= 0).all()
    assert set(flows.loc[flows["trace_id"] < 0, "ifname"].astype(str)) == {"cilium_vxlan"} and analysis.correlation.stats["flows_unmatched"] == 74
    joined = at_pods.drop(columns=["client_ip", "client_port"], errors="ignore").astype({"src_ip": str, "dst_ip": str}).merge(traces[["trace_id", "client_ip", "client_port"]], on="trace_id")
    client = joined["src_ip"].where(~joined["qr"].astype(bool), joined["dst_ip"])
    assert (client == joined["client_ip"]).all()  # each flow is on its lookup's socket
    assert set(traces["coverage"]) == {"vantage"} and set(traces["served_from"]) == {"unknown"}
    assert all(s.startswith("kube-system/coredns-") for s in traces["server"])  # Hubble's destination pod
    assert [f.code for f in analysis.findings] == ["ok"] and "DNS proxy's time" in analysis.findings[0].summary


def test_the_gke_file_says_nothing_of_coredns_it_did_not_see():
    """node-local-dns's egress, seen by Hubble's proxy: NXDOMAIN is the server's answer (kube-dns, named by Hubble),
    not 'according to CoreDNS', and no finding sits on a hop behind the server."""
    analysis = analysis_of(third_party(GKE))
    traces = analysis.correlation.traces
    assert set(traces["served_from"]) == {"unknown"} and all(s.startswith("kube-system/kube-dns-") for s in traces["server"])
    assert {f.hop for f in analysis.findings} <= {"server", "vantage->server", "pod"}
    assert not any("CoreDNS" in f.summary for f in analysis.findings)


def test_a_dropped_connection_on_another_port_is_a_conn_drop_row_and_forwarded_ones_are_only_counted(tmp_path):
    """A toFQDNs policy stops the connection to the address a lookup gave: `hubble observe --verdict DROPPED`'s flow
    on TCP 80 is kept (kind conn-drop, at the pod that sent it); a forwarded flow on port 80 is counted, not kept."""
    tcp = {"TCP": {"source_port": 51000, "destination_port": 80, "flags": {"SYN": True}}}
    to_web = {"IP": {"source": "10.0.1.5", "destination": "192.0.2.10"}, "l4": tcp, "destination": {}}
    dropped = flow(verdict="DROPPED", drop_reason_desc="POLICY_DENIED", **to_web)
    frame, stats = read_hubble_json(write_lines(tmp_path / "f.json", [{"flow": dropped}, {"flow": flow(**to_web)}]))
    [row] = frame.itertuples()
    assert (row.kind, row.verdict, row.drop_reason, row.vantage, row.pkt_type, row.proto) == (
        "conn-drop", "DROPPED", "POLICY_DENIED", "demo/client", "OUTGOING", "tcp")
    assert (row.dst_ip, row.dst_port, row.dns_id) == ("192.0.2.10", 80, -1)
    assert stats["connection_drops"] == 1 and stats["l3_l4_other_port"] == 2 and stats["dropped"] == 1
    accounted(stats)


def test_the_live_stream_of_drops_asks_hubble_for_dropped_flows_off_the_dns_ports():
    from dnscorrelate.cluster.kube.hubble import observe_command

    dns, drops = observe_command((53,), 0), observe_command((53,), 0, drops=True)
    assert dns[-2:] == ["--port", "53"] and "--verdict" not in dns
    assert drops[-5:] == ["--verdict", "DROPPED", "--not", "--port", "53"]


def test_a_request_hubble_saw_unanswered_is_said_of_hubbles_flows_not_of_a_capture(tmp_path):
    """Hubble's flows are not a packet capture: a request with no response is not in "the capture", and where it
    went is for Hubble's own gaps (its ring buffer, the pods its DNS rule selects) as much as for the path."""
    records = [{"flow": flow(Type="L7", l7=dns_l7("REQUEST"))},
               {"flow": flow(Type="L7", time="2026-01-02T03:04:09Z", IP={"source": "10.0.1.5", "destination": "10.0.0.10"},
                             l4={"UDP": {"source_port": 40001, "destination_port": 53}},
                             l7=dns_l7("REQUEST", query="other.demo.svc.cluster.local."))},
               {"flow": flow(Type="L7", time="2026-01-02T03:04:09.002Z", IP={"source": "10.0.0.10", "destination": "10.0.1.5"},
                             l4={"UDP": {"source_port": 53, "destination_port": 40001}},
                             source={"namespace": "kube-system", "pod_name": "coredns-1"}, destination={"namespace": "demo", "pod_name": "client"},
                             l7=dns_l7("RESPONSE", query="other.demo.svc.cluster.local.", rcode=0))}]
    lost = by_code(analysis_of(write_lines(tmp_path / "unanswered.json", records)))["no-response-seen"]
    assert "Hubble's flows went on after each" in lost.summary and "one Hubble observer cannot tell" in lost.summary
    assert "capture" not in lost.summary.split("a capture nearer the server")[0]
