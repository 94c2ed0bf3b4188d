"""Self-contained HTML reports: one per scenario or trace session, and an index across scenarios.

Everything is inline (CSS, SVG charts drawn by matplotlib, the waterfalls,
a few lines of script), so a report opens offline and can be mailed. Every
name taken from packets, logs or the cluster goes through Jinja2's
autoescaping: query names, a Corefile's comments and a context's name are
anyone's text. The cluster is drawn from its `ClusterFacts` alone, so the
lab and a real cluster look alike.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from dnscorrelate import schema
from dnscorrelate.cluster.corefile import redacted_corefile
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.diagnose import Analysis
from dnscorrelate.outputs import written_whole
from dnscorrelate.report.text import ms

MAX_WATERFALLS = 300
ROW_HEIGHT = 18
LABEL_WIDTH = 400
PLOT_WIDTH = 560
SEGMENTS = [("to_server_ns", "pod → server", "#4c78a8"), ("server_self_ns", "inside CoreDNS", "#f58518"),
            ("upstream_wait_ns", "waiting on upstream", "#b279a2"), ("return_ns", "return", "#54a24b")]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("dnscorrelate.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


_env.filters["ms"] = ms  # {{ value | ms("–") }}


# --- tables ------------------------------------------------------------------------


def service_of(qname: str, domain: str = "cluster.local") -> str:
    """`ns/name` for a Service name, '' for anything else."""
    labels = qname.rstrip(".").split(".")
    suffix = ["svc", *domain.split(".")]
    if len(labels) >= len(suffix) + 2 and labels[-len(suffix):] == suffix:
        return f"{labels[-len(suffix) - 1]}/{labels[-len(suffix) - 2]}"
    return ""


def rcodes_by_name(traces: pd.DataFrame) -> list[dict]:
    if traces.empty:
        return []
    frame = traces.assign(rcode=traces["rcode"].replace("", "(none)"), service=traces["qname"].map(service_of))
    table = frame.groupby(["qname", "service", "rcode"]).size().unstack(fill_value=0)
    rows = []
    for (qname, service), counts in table.iterrows():
        rows.append({"qname": qname, "service": service, "counts": {k: int(v) for k, v in counts.items() if v}})
    return sorted(rows, key=lambda r: -sum(r["counts"].values()))[:50]


def percentiles(traces: pd.DataFrame) -> list[dict]:
    rows = []
    for column, label in [("total_ns", "client total"), ("to_server_ns", "pod → server"), ("server_ns", "in server"),
                          ("upstream_rtt_ns", "upstream round trip"), ("return_ns", "return")]:
        values = traces[column].dropna().astype(float) if column in traces else pd.Series(dtype=float)
        if len(values):
            rows.append({"segment": label, "n": len(values), **{p: ms(values.quantile(q)) for p, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}, "max": ms(values.max())})
    return rows


def replica_spread(analysis: Analysis) -> list[dict]:
    traces = analysis.correlation.traces
    direct = traces.loc[traces["server_role"] == "coredns", "server"]
    relayed = analysis.correlation.upstream.loc[analysis.correlation.upstream["server"].str.startswith("kube-system/"), "server"]
    counts = pd.concat([direct, relayed]).value_counts()
    total = int(counts.sum())
    return [{"replica": r, "count": int(c), "share": f"{c / total:.0%}"} for r, c in counts.items()]


def top_external(traces: pd.DataFrame, domain: str = "cluster.local") -> list[dict]:
    names = traces.loc[~traces["qname"].str.endswith(f"{domain}.") & (traces["qname"] != "") & ~traces["qname"].str.endswith(".arpa."), "qname"]
    registrable = names.str.rstrip(".").str.split(".").str[-2:].str.join(".")
    return [{"domain": d, "count": int(c)} for d, c in registrable.value_counts().head(15).items()]


# --- charts (matplotlib, as inline SVG) ------------------------------------------------


def svg_of(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def latency_chart(traces: pd.DataFrame) -> str:
    """Per request, stacked milliseconds of each segment (up to 60 requests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = traces[traces["total_ns"].notna()].head(60)
    if shown.empty:
        return ""
    figure, axis = plt.subplots(figsize=(9, 2.6))
    left = np.zeros(len(shown))
    positions = np.arange(len(shown))
    for column, label, color in SEGMENTS:
        values = shown[column].astype(float).fillna(0).to_numpy() / 1e6 if column in shown else np.zeros(len(shown))
        axis.bar(positions, values, bottom=left, color=color, label=label, width=0.8)
        left += values
    axis.set_xlabel("request (trace id order)")
    axis.set_ylabel("ms")
    axis.set_xticks(positions[:: max(1, len(positions) // 15)], [str(t) for t in shown["trace_id"].to_numpy()[:: max(1, len(positions) // 15)]])
    axis.legend(fontsize=7, ncols=4, loc="upper left", frameon=False)
    axis.spines[["top", "right"]].set_visible(False)
    return svg_of(figure)


def replica_chart(spread: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not spread:
        return ""
    figure, axis = plt.subplots(figsize=(4, 0.4 + 0.35 * len(spread)))
    axis.barh([s["replica"] for s in spread], [s["count"] for s in spread], color="#4c78a8")
    axis.set_xlabel("requests served")
    axis.invert_yaxis()
    axis.spines[["top", "right"]].set_visible(False)
    return svg_of(figure)


# --- waterfalls ----------------------------------------------------------------------


def waterfalls(analysis: Analysis, limit: int = MAX_WATERFALLS) -> list[dict]:
    """For each trace, rows (one per sighting) with x positions on a shared scale, and segment bars."""
    traces = analysis.correlation.traces
    traces = traces[traces["purpose"] == "lookup"].head(limit)  # as render_report lists them
    sightings = analysis.correlation.sightings
    sightings = sightings[sightings["trace_id"].isin(traces["trace_id"])]
    by_trace = {int(k): g for k, g in sightings.groupby("trace_id")}
    result = []
    for t in traces.itertuples(index=False):
        rows = by_trace.get(int(t.trace_id))
        if rows is None or rows.empty:
            continue
        start, end = int(rows["ts_ns"].min()), int(rows["ts_ns"].max())
        span = max(end - start, 1)
        scale = PLOT_WIDTH / span
        points = []
        for i, h in enumerate(rows.itertuples(index=False)):
            kind = "icmp" if h.kind == "icmp-error" else ("response" if h.qr else "query")
            points.append({
                "x": LABEL_WIDTH + (int(h.ts_ns) - start) * scale, "y": 30 + i * ROW_HEIGHT,
                "label": f"{h.vantage} · {h.pkt_type} · {h.src_ip}:{h.src_port} → {h.dst_ip}:{h.dst_port}",
                "offset": f"+{(int(h.ts_ns) - start) / 1e6:.3f} ms", "kind": kind, "depth": int(h.depth) if h.depth == h.depth else 0,
                "detail": f"id {h.dns_id} {h.rcode or ''} {h.answers or ''}".strip(),
            })
        bars = []
        if t.t_start == t.t_start:
            marks = [("pod → server", t.t_start, t.t_server_in, "#4c78a8"), ("in server", t.t_server_in, t.t_server_out, "#f58518"),
                     ("return", t.t_server_out, t.t_client_in, "#54a24b")]
            for label, a, b, color in marks:
                if a is not pd.NA and b is not pd.NA and a == a and b == b and b >= a:
                    bars.append({"x": LABEL_WIDTH + (int(a) - start) * scale, "width": max((int(b) - int(a)) * scale, 1), "color": color,
                                 "label": f"{label} {(int(b) - int(a)) / 1e6:.3f} ms"})
        result.append({"id": int(t.trace_id), "points": points, "bars": bars, "height": 40 + len(points) * ROW_HEIGHT,
                       "span_ms": f"{span / 1e6:.3f}", "width": LABEL_WIDTH + PLOT_WIDTH + 90})
    return result


# --- the cluster ----------------------------------------------------------------------

NODELOCAL_LABEL = ("k8s-app", "node-local-dns")  # the label of the NodeLocal DNSCache DaemonSet's pods


def cluster_view(facts: ClusterFacts | None) -> dict | None:
    """The cluster as its facts hold it, the same for every backend: nodes with their pods, Services with
    their endpoints, NetworkPolicies, where CoreDNS forwards, NodeLocal DNS, the Corefile. None when the
    facts know no cluster (bare namespaces, a log file alone)."""
    if facts is None:
        return None
    model = facts.model
    if not (model.nodes or model.pods or model.services or facts.corefile):
        return None
    nodes = [{"name": n.metadata.name, "ip": n.internal_ip or "", "cidr": n.pod_cidr or "", "pods": []} for n in model.nodes]
    by_name = {n["name"]: n for n in nodes}
    node_ips = {n.internal_ip for n in model.nodes if n.internal_ip}
    unplaced = []
    for pod in model.pods:
        role = ("coredns" if any(facts.coredns_pods.get(ip) == pod.key for ip in pod.ips)
                else "nodelocal" if pod.metadata.labels.get(NODELOCAL_LABEL[0]) == NODELOCAL_LABEL[1] else "")
        entry = {"name": pod.key, "ips": ", ".join(pod.ips) or "no IP", "role": role,
                 "host": bool(pod.ips) and set(pod.ips) <= node_ips}  # hostNetwork: the node's own address
        node = by_name.get(pod.spec.nodeName or "")
        (node["pods"] if node else unplaced).append(entry)
    return {
        "name": facts.cluster, "nodes": nodes, "unplaced": unplaced, "nodelocal": facts.nodelocal_ip,
        "dns_ip": facts.cluster_dns_ip, "services": [service_view(model, s) for s in model.services],
        "policies": [policy_view(p) for p in model.policies],
        "forwards": [{"zones": " ".join(b.zones), "targets": redacted_corefile(", ".join(b.targets)), "source": b.source}
                     for b in facts.forward_blocks()],
        # coredns-custom and the Corefile can hold tsig secrets, plugin passwords and tokens: never in a report
        "corefile": redacted_corefile(facts.corefile),
        "custom": sorted((key, redacted_corefile(text)) for key, text in facts.custom_server_blocks.items()),
    }


def holds_cluster_facts(facts: ClusterFacts | None) -> bool:
    """True when a report of these facts draws the cluster (its pods, addresses, Corefile): written 0600."""
    return cluster_view(facts) is not None


def service_view(model, service) -> dict:
    """A Service's address and its endpoints (`ip:port`, as its EndpointSlices publish them)."""
    spec = service.spec
    address = spec.externalName if spec.type == "ExternalName" else (spec.clusterIP or "None")
    endpoints = set()
    for piece in model.endpoint_slices_of(service):
        ports = [p.port for p in piece.ports if p.port] or [None]
        for endpoint in piece.endpoints:
            ready = " (not ready)" if endpoint.conditions.ready is False else ""  # unset means ready
            endpoints |= {f"{ip}:{port}{ready}" if port else f"{ip}{ready}" for ip in endpoint.addresses for port in ports}
    ports = ", ".join(f"{p.port}/{p.protocol}" for p in spec.ports)
    return {"name": service.key, "type": spec.type, "ip": address or "", "ports": ports,
            "endpoints": ", ".join(sorted(endpoints)) or "none"}


def policy_view(policy) -> dict:
    selector = policy.spec.podSelector
    labels = [f"{k}={v}" for k, v in selector.matchLabels.items()] + [f"{e.key} {e.operator} {','.join(e.values)}".strip() for e in selector.matchExpressions]
    return {"name": policy.ref, "types": ", ".join(sorted(policy.policy_types)), "pods": ", ".join(labels) or "all pods"}


# --- pages ----------------------------------------------------------------------------


def render_report(analysis: Analysis, title: str, subtitle: str = "", verdict: dict | None = None, facts: ClusterFacts | None = None,
                  clients: list | None = None, timings: dict | None = None) -> str:
    """One page: findings, every lookup sighting by sighting, latency, names, replicas and the cluster `facts` hold."""
    traces = analysis.correlation.traces
    traces = traces[traces["purpose"] == "lookup"]  # CoreDNS's own queries (loop probes, health checks) are not the clients'
    spread = replica_spread(analysis)
    return _env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, verdict=verdict, generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        findings=[f.to_dict() for f in analysis.findings], traces=traces[schema.names(schema.TRACES, schema.HTML)].to_dict("records"), stats=analysis.correlation.stats,
        waterfalls=waterfalls(analysis), more_traces=max(0, len(traces) - MAX_WATERFALLS),
        rcodes=rcodes_by_name(traces), qtypes=traces["qtype"].value_counts().to_dict() if len(traces) else {},
        replicas=spread, percentiles=percentiles(traces), external=top_external(traces),
        latency_svg=latency_chart(traces), replica_svg=replica_chart(spread), cluster=cluster_view(facts),
        clients={"queries": len(clients), "answered": sum(c.answered for c in clients)} if clients is not None else None,
        timings=timings or {}, segments=SEGMENTS, unparsed=analysis.correlation.unparsed[:50],
    )


def write_scenario_report(result, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    scenario = result.scenario
    verdict = {"passed": result.passed, "expected": ", ".join(scenario.expect.findings) + (f" at {scenario.expect.hop}" if scenario.expect.hop else ""),
               "missing": result.missing}
    html = render_report(result.analysis, f"scenario {scenario.name}", scenario.description, verdict, result.facts, result.clients, result.timings)
    path = report_dir / f"{scenario.name}.html"
    with written_whole(path, "--report-dir", private=holds_cluster_facts(result.facts)) as partial:  # renamed into place once whole: a full disk leaves no half report
        partial.write_text(html)
    return path


def write_index(results: list, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        rows.append({
            "name": r.scenario.name, "description": r.scenario.description, "passed": r.passed, "error": r.error,
            "expected": ", ".join(r.scenario.expect.findings) + (f" at {r.scenario.expect.hop}" if r.scenario.expect.hop else ""),
            "found": [(f.code, f.hop, f.summary) for f in r.analysis.findings] if r.analysis else [],
            "report": Path(r.report).name if r.report else "", "seconds": f"{sum(r.timings.values()):.1f}",
        })
    path = report_dir / "index.html"
    page = _env.get_template("index.html.j2").render(rows=rows, generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                     passed=sum(r.passed for r in results), total=len(results))
    with written_whole(path, "--report-dir") as partial:
        partial.write_text(page)
    return path
