"""The `dnscorrelate` command line."""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
from pathlib import Path
import os
import sys
import time
import warnings

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from dnscorrelate.errors import USER_ERRORS, ClusterError, LabError, interrupt_on_termination
from dnscorrelate.outputs import check_output_dir, check_output_file, written_whole
from dnscorrelate.report.terminal import SafeConsole, printable, quiet_exit

PIPED_WIDTH = 160


def stdout_console() -> Console:
    """Rich's console for results. Written to a pipe or a file, rich assumes 80 columns, which folds the
    14-column traces table into slivers (and makes rendering it twice as slow): use PIPED_WIDTH there
    unless COLUMNS says otherwise."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return SafeConsole()
    return SafeConsole(width=PIPED_WIDTH)


console = stdout_console()
errors = SafeConsole(stderr=True)


def friendly_errors(fn):
    """Turn the project's expected errors and Ctrl-C into a message and exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            finally:
                sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        except BrokenPipeError:  # click.echo's; rich's consoles call quiet_exit themselves
            quiet_exit()
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                raise
            print_error(f"could not write the output: {err.strerror}")
            sys.exit(2)
        except USER_ERRORS as err:
            print_error(err)
            sys.exit(2)
        except KeyboardInterrupt:
            errors.print("interrupted")
            sys.exit(130)

    return wrapper


def print_error(err: Exception) -> None:
    """`error: MESSAGE` on stderr. The message is the user's text (paths, YAML keys, patterns): never markup."""
    errors.print(Text.assemble(("error:", "bold red"), " ", printable(str(err))), highlight=False, soft_wrap=True)


def say_swept() -> None:
    """Remove labs whose owning process died (a `run` killed with -9) and say which."""
    from dnscorrelate.cluster.lab.backend import sweep_orphans

    for lab_name, pid in sweep_orphans():
        errors.print(f"removed lab {lab_name}: process {pid}, which made it, is gone without removing it", highlight=False, markup=False)


def needs_root(what: str) -> None:
    """LabError saying what needs root, before anything is tried as another user."""
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (network namespaces, nftables, eBPF): run with sudo")


lab_option = click.option("--lab", "--name", "lab_name", metavar="NAME", help="Which lab (default: the only one up).")


def log_plugin_warnings(facts) -> list[str]:
    """Say so when CoreDNS's server blocks have no `log` plugin: traces then lack CoreDNS's own account."""
    blocks = facts.server_blocks()
    silent = [" ".join(b.zones) or "." for b in blocks if "log" not in b.plugins]
    if not blocks or not silent:
        return []
    return [f"the Corefile's server block(s) {', '.join(silent)} have no `log` plugin, so CoreDNS's own account of each "
            "lookup (its rcode, its duration) is missing from the traces. Add a line `log` to the block: "
            "kubectl -n kube-system edit configmap coredns (CoreDNS's `reload` picks it up within a minute)."]


def live_backend(lab_name: str | None, kubeconfig: str | None, context: str | None, agent: bool = False,
                 agent_image: str | None = None):
    """The cluster a live command works on: a Kubernetes cluster when a context or kubeconfig is named, else the lab.
    With `agent`, that cluster's capture runs in the node agents (a DaemonSet for the session). On a kind cluster made
    here the agents run this checkout (mounted into the nodes), unless `agent_image` names a registry or a digest:
    that image runs its own package, pulled as on any cluster (the registry path, `cluster up --registry`)."""
    if agent and not (kubeconfig or context):
        raise click.UsageError("--agent captures on a Kubernetes cluster's nodes: name it with --context or --kubeconfig")
    if kubeconfig or context:
        from dnscorrelate.cluster.kube.backend import AgentOptions, KubeBackend

        from dnscorrelate.cluster.kube.agent import pullable

        ours = kind_kubeconfig(context)  # a kind cluster `cluster up` made here, else None
        from_host = ours is not None and not (agent_image and pullable(agent_image))
        options = AgentOptions(agent_image, built=built_agent_image(from_host), source_from_host=from_host) if agent else None
        return KubeBackend(kubeconfig or ours, context, agent=options)
    from dnscorrelate.cluster.lab.backend import LabBackend

    return LabBackend.find(lab_name)


def kind_kubeconfig(context: str | None) -> str | None:
    """The kubeconfig `cluster up` wrote for `context`, when kind made that cluster here. kind names every context
    it makes `kind-NAME`: any other context is a cluster kind did not make, and goes to the kube backend as it is."""
    if not (context and context.startswith("kind-")):
        return None
    from dnscorrelate.cluster.kind.cluster import kubeconfig_of_context

    return kubeconfig_of_context(context)


def built_agent_image(source_from_host: bool) -> str | None:
    """The node agent's image `make cluster` built here, if it did (the kube backend takes it when no node holds one)."""
    from dnscorrelate.cluster.kind.build import agent_image

    try:
        return agent_image(source_from_host)
    except ClusterError:
        return None


@click.group()
@click.version_option(package_name="dnscorrelate")
def main() -> None:
    """Correlate CoreDNS logs with eBPF packet traces and say which DNS hop failed, and why."""
    if not sys.warnoptions:  # libraries' warnings (pandas' FutureWarning) are for us, not users; -W shows them
        warnings.simplefilter("ignore")
    interrupt_on_termination()  # kill and a closed terminal clean up as Ctrl-C does (the node agents removed)


@main.group()
def lab() -> None:
    """A Kubernetes-shaped DNS lab: network namespaces, nftables, a real CoreDNS."""


@lab.command("up")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Lab spec YAML, merged over the default.")
@click.option("--name", "name", default="lab", show_default=True, help="Lab name: 1-12 lowercase letters or digits.")
@friendly_errors
def lab_up(spec_path: str | None, name: str) -> None:
    """Build the lab and start CoreDNS."""
    from dnscorrelate.cluster.lab.backend import Lab, preflight
    from dnscorrelate.cluster.spec import load_spec

    spec = load_spec(spec_path)
    preflight()  # root, ip, nft: before sweeping, which needs them too
    say_swept()
    with console.status(f"bringing up lab {escape(name)}"):
        started = Lab.up(spec, name, owned=False)  # the user's: it stays until `lab down`
    print_status(started.status())
    console.print(f"\nlab [bold]{escape(name)}[/] is up. Try: dnscorrelate lab exec pod/mypod -n demo -- dig +short example.com")


@lab.command("status")
@lab_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly_errors
def lab_status(lab_name: str | None, output: str) -> None:
    """Show a running lab: pods, Services, CoreDNS processes."""
    from dnscorrelate.cluster.lab.backend import Lab, running_labs

    names = [lab_name] if lab_name else running_labs()
    statuses = [Lab.load(n).status() for n in names]
    if output == "json":
        click.echo(json.dumps(statuses if not lab_name else statuses[0], indent=2))
        return
    if not statuses:
        console.print("no lab is up")
    for status in statuses:
        print_status(status)


def print_status(status: dict) -> None:
    from dnscorrelate.report.text import lab_status_tables

    console.print(*lab_status_tables(status))


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@lab_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@friendly_errors
def lab_exec(pod: str, namespace: str, lab_name: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in POD's network namespace, with its resolv.conf (like kubectl exec).

    Example: dnscorrelate lab exec pod/mypod -n demo -- getent ahosts web
    """
    from dnscorrelate.cluster.lab.backend import Lab, resolve_lab_name

    target = Lab.load(resolve_lab_name(lab_name)).pod(pod, namespace)
    argv = ["ip", "netns", "exec", target.netns, *command]
    os.execvp(argv[0], argv)


@lab.command("logs")
@click.argument("component", type=click.Choice(["coredns", "upstream", "nodelocal"]), default="coredns")
@lab_option
@click.option("--replica", type=int, help="Only this CoreDNS replica.")
@friendly_errors
def lab_logs_cmd(component: str, lab_name: str | None, replica: int | None) -> None:
    """Print a DNS server's log, timestamped like `kubectl logs --timestamps --prefix`."""
    from dnscorrelate.cluster.lab.backend import Lab, merged_logs, resolve_lab_name

    running = Lab.load(resolve_lab_name(lab_name))
    for line in merged_logs(running, component, replica):
        click.echo(line)


@lab.command("apply")
@click.option("-f", "--filename", "path", required=True, type=click.Path(dir_okay=False), help="Manifest YAML.")
@lab_option
@friendly_errors
def lab_apply(path: str, lab_name: str | None) -> None:
    """Create or replace Services and NetworkPolicies in a running lab (like kubectl apply -f)."""
    from dnscorrelate.cluster.lab.backend import Lab, resolve_lab_name
    from dnscorrelate.cluster.spec import load_manifests

    running = Lab.load(resolve_lab_name(lab_name))
    for line in running.apply(load_manifests(path)):
        console.print(line, markup=False)


@lab.command("delete")
@click.argument("ref", metavar="KIND/NAME")
@click.option("-n", "--namespace", default="default", show_default=True)
@lab_option
@friendly_errors
def lab_delete(ref: str, namespace: str, lab_name: str | None) -> None:
    """Delete a Service or NetworkPolicy from a running lab (like kubectl delete networkpolicy/NAME)."""
    from dnscorrelate.cluster.lab.backend import Lab, resolve_lab_name

    kind, _, name = ref.partition("/")
    if not name:
        raise LabError(f"{ref!r}: expected KIND/NAME, for example networkpolicy/deny-egress")
    console.print(Lab.load(resolve_lab_name(lab_name)).delete(kind, namespace, name), markup=False)


@lab.command("down")
@click.option("--name", "name", help="The lab to remove (default: the only one up).")
@click.option("--all", "everything", is_flag=True, help="Remove every lab, including the debris of crashed ones, "
              "but those a live process (a run, a test) still uses.")
@click.option("--force", is_flag=True, help="With --all: remove labs in use by a live process too.")
@friendly_errors
def lab_down(name: str | None, everything: bool, force: bool) -> None:
    """Remove a lab: processes, namespaces, /etc/netns entries, nftables tables."""
    from dnscorrelate.cluster.lab.backend import resolve_lab_name, teardown, teardown_all

    needs_root("removing a lab")
    if everything:
        removed, kept = teardown_all(force)
        for lab_name, pid in kept:
            errors.print(f"kept lab {lab_name}: process {pid} still uses it (--force removes it)", highlight=False, markup=False)
    else:
        removed = teardown(resolve_lab_name(name))
    console.print(
        f"removed {len(removed['labs'])} lab(s) {', '.join(removed['labs'])}: {len(removed['netns'])} namespaces, "
        f"{len(removed['pids'])} processes, {len(removed['etc_netns'])} /etc/netns entries"
    )


@main.command()
@lab_option
@click.option("--netns", "namespaces", multiple=True, metavar="NS", help="Capture in this namespace instead: a /run/netns name or a path such as /proc/PID/ns/net. Repeatable.")
@click.option("--duration", type=float, help="Seconds to capture (default: until Ctrl-C).")
@click.option("--port", "ports", type=int, multiple=True, default=(53,), show_default=True, help="DNS port to trace. Repeatable.")
@click.option("-o", "--output", default="table", show_default=True, metavar="table|json|FILE.parquet|FILE.pcapng|DIR/",
              help="Print a table, print JSON, save Parquet, save pcapng (one interface per vantage point, for Wireshark), or "
              "save a capture directory (a name ending in /): one Parquet file per node, written as it streams, with the "
              "cluster's objects and Corefile, for `correlate --events DIR/`.")
@click.option("--context", help="Capture on the cluster of this kubeconfig context instead of a lab (as kubectl --context).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The kubeconfig to read (as kubectl; default $KUBECONFIG, ~/.kube/config).")
@click.option("--agent", is_flag=True, help="With --context: capture through dnscorrelate's node agent on every node "
              "(see `trace --agent`); with -o DIR/, each node's events go to its own file.")
@click.option("--agent-image", metavar="IMAGE", help="With --agent: the agent's image.")
@friendly_errors
def capture(lab_name: str | None, namespaces: tuple[str, ...], duration: float | None, ports: tuple[int, ...], output: str,
            context: str | None, kubeconfig: str | None, agent: bool, agent_image: str | None) -> None:
    """Capture DNS packets in every namespace of a lab (or the given ones, or a cluster's nodes), with eBPF."""
    from dnscorrelate import events
    from dnscorrelate.live.session import NamespacesBackend, Session

    to_dir = output.endswith("/") or Path(output).is_dir()
    if output not in ("table", "json") and not output.endswith((".parquet", ".pcapng")) and not to_dir:
        raise click.BadParameter("use table, json, a file name ending in .parquet or .pcapng, or a directory ending in /", param_hint="-o")
    if to_dir:
        check_capture_dir(output)
    elif output not in ("table", "json"):
        check_output_file(output, "-o")
    backend = NamespacesBackend(list(namespaces)) if namespaces else live_backend(lab_name, kubeconfig, context, agent, agent_image)
    session = Session(backend, ports=tuple(ports))
    with errors.status("loading the tracer"):
        session.start()
    loaded = "compile" if session.tracer_kind == "bcc" else "CO-RE object loaded in"
    errors.print(f"capturing in {len(session.vantages)} namespaces ({loaded} {session.compile_seconds:.2f}s, attach "
                 f"{session.attach_seconds * 1000:.1f}ms); Ctrl-C to stop", soft_wrap=True)  # one line for a script to wait on
    if to_dir:
        capture_to_dir(session, backend, output, duration)
        return
    if output.endswith(".parquet"):
        capture_to_parquet(session, output, duration)
        return
    try:
        if duration is None:
            while True:
                time.sleep(3600)
        time.sleep(duration)
    except KeyboardInterrupt:
        pass
    finally:
        session.stop()
    frame = session.events()
    if output == "json":
        click.echo(events.to_json(frame, session.stats))
    elif output == "table":
        print_events(frame)
    elif output.endswith(".pcapng"):
        from dnscorrelate.sources.pcapng_out import write_pcapng

        with written_whole(output, "-o") as partial:
            written = write_pcapng(frame, partial)
        errors.print(f"wrote {written['packets']} packets on {written['interfaces']} interfaces to {output}", markup=False)
    print_capture_stats(session.stats)


STREAM_EVERY_S = 1.0  # `capture -o FILE.parquet` writes a row group this often: memory holds about this much capture


def capture_to_parquet(session, output: str, duration: float | None) -> None:
    """Events decoded and written as row groups while capturing (a long capture never holds them all), into a
    temporary file renamed to `output` once closed with its counters; a full disk stops the capture with an
    error and leaves no file."""
    from dnscorrelate import events

    with written_whole(output, "-o") as partial:
        stream = events.ParquetStream(partial)
        stream_until(session, stream.write, duration)
        stream.close(session.stats)
    errors.print(f"wrote {stream.rows} events in {stream.row_groups} row groups to {output}", markup=False)
    print_capture_stats(session.stats)
    behind = session.stats.get("backlog_full_seconds", 0)
    if behind:
        errors.print(f"warning: decoding fell behind the packets for {behind:.1f} s: the reader paused (memory stays bounded) and "
                     f"the kernel's ring buffer dropped what did not fit, counted in lost_samples={session.stats.get('lost_samples', 0)}",
                     highlight=False, markup=False, soft_wrap=True)


def check_capture_dir(output: str) -> None:
    """A capture directory is new or empty of events: never mixed with another capture's files."""
    directory = Path(output)
    if directory.exists() and not directory.is_dir():
        raise click.BadParameter(f"{output} exists and is not a directory", param_hint="-o")
    if directory.is_dir() and any(directory.glob("*.parquet")):
        raise click.BadParameter(f"{output} holds Parquet files already: give a new or empty directory", param_hint="-o")


def stream_until(session, write, duration: float | None) -> None:
    """`write(session.drain_events())` every STREAM_EVERY_S until `duration` ends or Ctrl-C; the session stopped and
    its last events written."""
    try:
        write(session.drain_events())
        started = time.monotonic()
        end = float("inf") if duration is None else started + duration
        tick = started
        while time.monotonic() < end:
            # a write every STREAM_EVERY_S, counted from the last drain's start: time spent decoding is not slept
            # too, and a drain that took longer is followed at once (the records waiting are bounded)
            tick = max(tick + STREAM_EVERY_S, time.monotonic())
            time.sleep(max(0.0, min(tick, end) - time.monotonic()))
            write(session.drain_events())
    except KeyboardInterrupt:
        pass
    finally:
        session.stop()
    write(session.drain_events(last=True))


def capture_to_dir(session, backend, output: str, duration: float | None) -> None:
    """`capture -o DIR/`: each node's events into DIR/NODE.parquet as they come (events.NodeParquetDir; a capture on
    this machine, whose rows name no node, into DIR/local.parquet), then the counters in DIR/manifest.json and
    the cluster's objects and Corefile beside them (analysis.save_facts)."""
    from dnscorrelate import analysis, events

    writer = events.NodeParquetDir(output)
    stream_until(session, writer.write, duration)
    writer.close(session.stats)
    analysis.save_facts(backend.facts(), Path(output))
    errors.print(f"wrote {writer.rows} events of {len(writer.streams)} nodes to {output} (one Parquet file each, manifest.json, "
                 f"{analysis.SAVED_MANIFESTS}); correlate them with: dnscorrelate correlate --events {output}", markup=False)
    print_capture_stats(session.stats)


def print_events(frame) -> None:
    from dnscorrelate.report.text import events_table

    console.print(events_table(frame))


def print_capture_stats(stats: dict) -> None:
    from dnscorrelate.report.text import capture_stats_line

    errors.print(capture_stats_line(stats), highlight=False)


@main.command()
@click.option("--events", "events_path", type=click.Path(), help="Packet events saved by `capture` (Parquet or JSON), or the directory "
              "`capture --agent -o DIR/` wrote (one Parquet file per node: correlated out of core, a part at a time).")
@click.option("--coredns-log", "log_paths", multiple=True, metavar="[REPLICA=]FILE",
              help="CoreDNS or NodeLocal DNS log (kubectl logs [--timestamps] [--prefix]); REPLICA names the pod when no --prefix does. Repeatable.")
@click.option("--corefile", type=click.Path(dir_okay=False), help="The Corefile: its log format and forward targets.")
@click.option("--log-format", "log_formats", multiple=True, metavar="FORMAT",
              help="The `log` directive's format string, when the Corefile is not given (e.g. '{remote} {type} {name} {rcode} {duration}'). Repeatable.")
@click.option("--manifests", "manifest_paths", multiple=True, type=click.Path(dir_okay=False), help="Services, NetworkPolicies, Namespaces (YAML) to name causes. Repeatable.")
@click.option("--pcap", "pcap_specs", multiple=True, metavar="[VANTAGE=]FILE", help="pcap/pcapng (tcpdump, tshark); VANTAGE like pod/NS/NAME, node/NAME, coredns/NAME. Repeatable.")
@click.option("--ig-json", "ig_paths", multiple=True, type=click.Path(dir_okay=False), help="Inspektor Gadget trace_dns JSON output. Repeatable.")
@click.option("--dnstap", "dnstap_specs", multiple=True, metavar="[VANTAGE=]FILE", help="CoreDNS dnstap Frame Streams file. Repeatable.")
@click.option("--hubble-json", "hubble_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Cilium Hubble flows: `hubble observe -o json` (or jsonpb) output. Repeatable.")
@click.option("--port", "ports", type=int, multiple=True, default=(53,), show_default=True, help="DNS port in --pcap files. Repeatable.")
@lab_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Also write a self-contained HTML report here.")
@click.option("--traces-out", type=click.Path(dir_okay=False), metavar="FILE.parquet",
              help="Also write every lookup's trace to this Parquet file (the traces table's columns). A capture directory "
              "of more lookups than one diagnosis holds shows only the traces its findings cite; this file has them all.")
@friendly_errors
def correlate(events_path, log_paths, corefile, log_formats, manifest_paths, pcap_specs, ig_paths, dnstap_specs, hubble_paths, ports, lab_name,
              output, report_path, traces_out) -> None:
    """Stitch saved packets and CoreDNS logs into one trace per request, and diagnose them."""
    from dnscorrelate import analysis

    if report_path:
        check_output_file(report_path, "--report")
    if traces_out:
        check_output_file(traces_out, "--traces-out")

    if not events_path and not log_paths and not (pcap_specs or ig_paths or dnstap_specs or hubble_paths):
        raise click.UsageError("give --events, --pcap, --ig-json, --dnstap, --hubble-json and/or --coredns-log")
    evidence = None
    if pcap_specs or ig_paths or dnstap_specs or hubble_paths:
        from dnscorrelate.sources.evidence import evidence_line, read_evidence

        evidence = read_evidence(pcap_specs, ig_paths, dnstap_specs, ports, hubble_paths)
        errors.print(evidence_line(evidence[1]), highlight=False, markup=False)
        for warning in evidence[1].get("warnings", []):
            errors.print(f"warning: {warning}", highlight=False, markup=False)
    from dnscorrelate.sources.coredns_log import log_source

    result = analysis.from_files(events_path, [log_source(spec) for spec in log_paths], corefile, list(manifest_paths), lab_name,
                                 evidence=evidence, log_formats=list(log_formats), traces_out=traces_out)
    if report_path:
        analysis.write_report(result, report_path, [events_path, *log_paths, *pcap_specs, *ig_paths, *dnstap_specs])
    if output == "json":
        from dnscorrelate.report.records import write_analysis_json

        write_analysis_json(result, sys.stdout)  # streamed: the document is never one string (its stats say traces_written)
        return
    print_analysis(result)
    if traces_out:
        errors.print(f"{result.correlation.stats['traces_written']} traces written to {traces_out}", highlight=False, markup=False)


def print_analysis(result) -> None:
    from dnscorrelate.report.text import findings_table, stats_line, traces_table, unparsed_lines

    console.print(traces_table(result.correlation.traces))
    console.print(findings_table(result.findings))
    for line in unparsed_lines(result.correlation.unparsed):
        errors.print(line, highlight=False, markup=False)
    for warning in result.correlation.warnings:
        errors.print(f"warning: {warning}", highlight=False, markup=False)
    errors.print(stats_line(result.correlation.stats), highlight=False)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="SCENARIO...")
@click.option("--report-dir", type=click.Path(file_okay=False), default="reports", show_default=True, help="Where HTML reports go; empty for none.")
@click.option("--evidence-dir", type=click.Path(file_okay=False), help="Also save each scenario's events, logs and topology here.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--backend", type=click.Choice(["lab", "kind"]), default="lab", show_default=True,
              help="Where each scenario runs: a fresh lab, or one two-node kind cluster for all (`make cluster` first; ~2 min to make).")
@click.option("--name", "cluster_name", help="With --backend kind: run on this cluster, already up (`cluster up --name`), and leave it up.")
@click.option("--context", help="Run on the cluster of this kubeconfig context, as it is: each scenario in a namespace of its own "
              "(dnsc-scenario-...), removed after.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="With --context: the kubeconfig to read (as kubectl).")
@click.option("--allow-cluster-changes", is_flag=True, help="With --context: let faults change shared objects (the coredns and "
              "coredns-custom ConfigMaps, CoreDNS's replicas, objects outside the scenario's namespace); each is journaled and restored.")
@click.option("--dry-run", is_flag=True, help="With --context: print every change each scenario would make, and make none.")
@click.option("--client-image", help="With --context: the image of the scenario's client pod (default: the one `make cluster` built).")
@click.option("--cni", type=click.Choice(["flannel", "cilium"]), default="flannel", show_default=True,
              help="With --backend kind: the cluster's pod network (scenarios/README.md says what differs on Cilium).")
@friendly_errors
def run(paths: tuple[str, ...], report_dir: str, evidence_dir: str | None, output: str, backend: str, cluster_name: str | None,
        context: str | None, kubeconfig: str | None, allow_cluster_changes: bool, dry_run: bool, client_image: str | None,
        cni: str) -> None:
    """Run scenarios: lab or kind cluster, faults, queries, capture, diagnosis, report. Exits 1 when an
    expectation fails, 2 when a scenario file is bad or the backend cannot run it (the good ones beside it still run)."""
    from dnscorrelate import runner
    from dnscorrelate.errors import SpecError
    from dnscorrelate.scenarios import load_scenario, scenario_paths

    if cni != "flannel" and backend != "kind":
        raise click.UsageError("--cni goes with --backend kind: the lab has no CNI")
    if report_dir:
        check_output_dir(report_dir, "--report-dir")
    if evidence_dir:
        check_output_dir(evidence_dir, "--evidence-dir")
    if cluster_name and backend != "kind":
        raise click.UsageError("--name names a kind cluster: give --backend kind too")
    if (allow_cluster_changes or dry_run or kubeconfig or client_image) and not context:
        raise click.UsageError("--allow-cluster-changes, --dry-run, --kubeconfig and --client-image go with --context")
    if context and cluster_name:
        raise click.UsageError("give --context (any cluster) or --name (a kind cluster of `cluster up`), not both")
    scenarios, bad = [], []
    for path in scenario_paths(list(paths)):
        try:
            # a user's cluster can make what kind can; whether it runs Cilium, its API says when a policy is created
            scenarios.append(load_scenario(path, "kind" if context else backend, None if context else cni))
        except SpecError as err:
            bad.append(path)
            print_error(err)
    if not scenarios and not bad:
        raise click.UsageError("no scenario files found")
    if not scenarios:
        sys.exit(2)
    if context:
        unshareable = [s.name for s in scenarios if not runner.shareable(s)]
        if unshareable:
            raise click.UsageError(f"{', '.join(unshareable)}: need a cluster built for them (nodes, replicas, NodeLocal DNS "
                                   "or dnstap in lab:); run them with --backend kind")
        upstream = [s.name for s in scenarios if s.lab.upstreamZones or s.lab.upstreamCorefile]
        if upstream:
            raise click.UsageError(f"{', '.join(upstream)}: need the lab's upstream resolver (lab.upstreamZones, "
                                   "lab.upstreamCorefile), which a user's cluster does not have; run them with --backend kind")
    if dry_run:
        print_planned_changes(scenarios, allow_cluster_changes)
        return
    if context and not allow_cluster_changes:  # refused before anything is made; the others still run
        for scenario in list(scenarios):
            if refused := runner.refusals(runner.in_namespace(scenario, "dnsc-scenario-x"), "dnsc-scenario-x"):
                scenarios.remove(scenario)
                bad.append(scenario.name)
                for line in refused:
                    errors.print(f"error: {line}", highlight=False, markup=False)
        if not scenarios:
            sys.exit(2)
    needs_root("running a scenario")
    say_swept()
    context_stage = None
    if context:
        from dnscorrelate.cluster.kind.build import load_build

        image = client_image or load_build().client_image
        context_stage = lambda step: runner.ContextStage(kubeconfig, context, allow_cluster_changes, image, step)  # noqa: E731
    results = runner.run_all(scenarios, Path(report_dir) if report_dir else None, Path(evidence_dir) if evidence_dir else None,
                             console=errors, show_progress=output == "table" or errors.is_terminal,
                             backend="context" if context else backend, cni=cni,
                             cluster_name=cluster_name, context_stage=context_stage)
    if output == "json":
        from dnscorrelate.report.records import scenario_record

        for result in results:
            click.echo(json.dumps(scenario_record(result)))
    else:
        print_results(results)
    if bad:
        errors.print(f"{len(bad)} scenario file(s) not run, see above: {', '.join(map(str, bad))}", highlight=False, markup=False)
    sys.exit(2 if bad else 0 if all(r.passed for r in results) else 1)


def print_planned_changes(scenarios, allow_cluster_changes: bool) -> None:
    """`run --context --dry-run`: each scenario's changes, in order, the shared ones marked (and refused without the flag)."""
    from dnscorrelate import runner

    for scenario in scenarios:
        namespace = f"{runner.SCENARIO_NAMESPACE_PREFIX}{scenario.name[:30]}-xxxx"  # xxxx: random at run time
        console.print(f"{scenario.name}:", highlight=False, markup=False)
        for change, shared in runner.planned_changes(scenario, namespace):
            mark = "" if not shared else ("  [shared: journaled, restored after]" if allow_cluster_changes
                                          else "  [shared: refused without --allow-cluster-changes]")
            console.print(f"  {change}{mark}", highlight=False, markup=False)
        console.print("  then: everything above undone (namespace removed, shared objects restored), the baseline checked",
                      highlight=False, markup=False)


def print_results(results) -> None:
    from dnscorrelate.report.text import scenarios_table

    console.print(scenarios_table(results))


@main.command()
@click.argument("pod", metavar="pod/NAME")
@click.option("-n", "--namespace", default="default", show_default=True)
@lab_option
@click.option("--context", help="A kubeconfig context: trace on that cluster instead of a lab (as kubectl --context).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The kubeconfig to read (as kubectl; default $KUBECONFIG, ~/.kube/config).")
@click.option("--agent", is_flag=True, help="Capture through dnscorrelate's node agent, for a cluster whose nodes do not run here: "
              "a DaemonSet dnsc-agent-SESSION in kube-system for the session, removed after it (`dnscorrelate agent manifest` shows it; "
              "`dnscorrelate agent cleanup` removes what a killed session left).")
@click.option("--agent-image", metavar="IMAGE", help="With --agent: the agent's image (default: one the nodes already hold, else the one "
              "built here; `dnscorrelate agent image --push REGISTRY/NAME` pushes that one and prints the name to give here). "
              "On a kind cluster made here, a name with its registry or digest runs that image's own package, pulled.")
@click.option("--full-stream", is_flag=True, help="With --agent: every node's agent sends every DNS packet it sees, not only "
              "those of the pod's lookups and what they caused (the default: bytes in proportion to the pod's lookups, "
              "not to the nodes' queries).")
@click.option("--hubble", is_flag=True, help="On a Cilium cluster with Hubble: each agent's flows (`hubble observe --follow` through "
              "exec, on its unix socket) as one more vantage; its DNS proxy rows join the lookups our capture sees.")
@click.option("--duration", type=float, help="Seconds to trace (default: until Ctrl-C).")
@click.option("--filter", "filters", multiple=True, metavar="EXPR", help="rcode!=NOERROR, latency>5ms, name~REGEX, nameserver==IP, ... Repeatable (all must hold).")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table", show_default=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write an HTML report of the session here.")
@friendly_errors
def trace(pod, namespace, lab_name, context, kubeconfig, agent, agent_image, full_stream, hubble, duration, filters, output,
          report_path) -> None:
    """Watch one pod's DNS lookups live, hop by hop, with per-hop latency and what went wrong."""
    from dnscorrelate import trace as tracing
    from dnscorrelate.live.session import Session

    try:
        parsed = [tracing.Filter.parse(f) for f in filters]
    except tracing.FilterError as err:
        raise click.BadParameter(str(err), param_hint="--filter") from None
    if report_path:
        check_output_file(report_path, "--report")
    if agent_image and not agent:
        raise click.UsageError("--agent-image goes with --agent")
    if full_stream and not agent:
        raise click.UsageError("--full-stream goes with --agent")
    backend = live_backend(lab_name, kubeconfig, context, agent, agent_image)
    target = backend.pod(pod, namespace)
    if agent and not full_stream:
        backend.agent.clients = tuple(target.ips)  # each node sends what the pod's lookups need (live/agent_filter.py)

    from dnscorrelate.report.records import json_line
    from dnscorrelate.report.text import sighting_lines, trace_line

    def emit(t, record, codes):
        if output == "json":
            click.echo(json_line(record, codes))
            return
        console.print(trace_line(t, codes), highlight=False, markup=False, soft_wrap=True)
        if output == "wide":
            for line in sighting_lines(record):
                console.print(line, highlight=False, markup=False, soft_wrap=True)

    live = Session(backend, hubble=hubble)
    session = tracing.TraceSession(live, target, parsed, emit)
    if agent:
        with errors.status("starting the node agents"):
            live.start()
    else:
        live.start()
    warned: list[str] = []
    try:  # from here on, Ctrl-C ends the session as --duration does: stopped, summed up, the agents removed
        errors.print(f"tracing {target.key} ({target.ip}) in {len(live.vantages)} namespaces{agent_start_note(live)} "
                     f"(tracer: {live.tracer_kind or 'none'}); Ctrl-C to stop", highlight=False, markup=False, soft_wrap=True)
        warned = live.capture_warnings
        for warning in warned:
            errors.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
        for warning in log_plugin_warnings(live.facts):
            errors.print(f"warning: {warning}", highlight=False, markup=False)
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            time.sleep(min(tracing.TICK_S, max(0.05, (duration or 1e9) - (time.monotonic() - started))))
            session.tick(live.new_events())
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()
    for warning in live.capture_warnings[len(warned):]:  # said at stop: a node's stream cut short, debris left
        errors.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    session.tick(live.new_events(), final=True)
    print_trace_summary(session, live, report_path)


def agent_start_note(live) -> str:
    """`, through N node agents (ready in X s, capturing in Y s)` when the capture runs in the node agents."""
    nodes, timings = live.capture.remote_nodes, live.capture.timings
    if not nodes:
        return ""
    return (f" on {len(nodes)} nodes through the node agents (pods ready in {timings['ready_seconds']:.1f} s, "
            f"capturing in {timings['start_seconds']:.1f} s)")


def print_trace_summary(session, live, report_path) -> None:
    from dnscorrelate import trace as tracing
    from dnscorrelate.analysis import analyze
    from dnscorrelate.report.text import findings_table, lookups_line, node_lines, stats_line

    frame = live.events()
    analysis = tracing.for_client(analyze(frame, live.logs(), session.facts, live.stats), session.pod.ip)
    errors.print(lookups_line(analysis.correlation.traces, session.pod.key), highlight=False, markup=False)
    for warning in analysis.correlation.warnings:  # a log rotated away while followed, among others
        errors.print(f"warning: {warning}", highlight=False, markup=False)
    if analysis.findings:
        errors.print(findings_table(analysis.findings, title=f"findings for {escape(session.pod.key)}"))
    errors.print(stats_line(analysis.correlation.stats), highlight=False)
    if live.hubble.enabled:
        from dnscorrelate.live.hubble import stats_line as hubble_line

        errors.print(hubble_line(live.stats), highlight=False, markup=False)
    for line in node_lines(live.stats.get("nodes", {})):  # the node agents' loss, node by node
        errors.print(line, highlight=False, markup=False, soft_wrap=True)
    if report_path:
        from dnscorrelate.report.html import holds_cluster_facts, render_report

        html = render_report(analysis, f"trace {session.pod.key}", "dnscorrelate trace session", facts=session.facts)
        with written_whole(report_path, "--report", private=holds_cluster_facts(session.facts)) as partial:
            partial.write_text(html)
        errors.print(f"report: {report_path}", markup=False)


@main.group()
def cluster() -> None:
    """A real Kubernetes cluster on this machine (kind, built offline by `make cluster`)."""


cluster_name_option = click.option("--name", "name", default="kind", show_default=True, help="Cluster name (kind cluster dnsc-NAME).")


@cluster.command("up")
@cluster_name_option
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Lab spec YAML: its workloads, Corefile and upstream zones.")
@click.option("--cni", type=click.Choice(["flannel", "cilium"]), default="flannel", show_default=True,
              help="Pod network: flannel with dnscorrelate's NetworkPolicy agent, or Cilium (enforces NetworkPolicy itself).")
@click.option("--hubble", is_flag=True,
              help="With --cni cilium: Hubble's server in every agent (unix socket, no relay), the agent's DNS proxy, "
                   "the hubble CLI in the agent's container, and a visibility policy (--hubble-policy).")
@click.option("--hubble-policy", default="default", show_default=True, metavar="default|none|FILE",
              help="Which pods' DNS Hubble sees: default = every pod's DNS to kube-dns (a CiliumClusterwideNetworkPolicy "
                   "with a dns rule, no default deny; still an allow rule for DNS to kube-dns, see kind/README.md), "
                   "none, or a YAML file of Cilium policies with a dns rule.")
@click.option("--registry", is_flag=True,
              help="A local registry beside the cluster (container dnsc-NAME-registry, on 127.0.0.1:PORT), which the nodes "
                   "pull localhost:PORT/... from, as kind's local-registry guide sets one up; removed with the cluster. "
                   "Push the agent to it with `dnscorrelate agent image --push localhost:PORT/dnscorrelate/agent`.")
@friendly_errors
def cluster_up(name: str, spec_path: str | None, cni: str, hubble: bool, hubble_policy: str, registry: bool) -> None:
    """Create a two-node kind cluster with CoreDNS, the lab's workloads and an upstream resolver."""
    from dnscorrelate.cluster.kind import cluster as kind_cluster

    made, timings = kind_cluster.up(name, spec_path, say=lambda step: errors.print(f"cluster {name}: {step}", highlight=False),
                                    cni=cni, hubble=hubble, hubble_policy=hubble_policy, registry=registry)
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.steps.items())
    errors.print(f"cluster {name} is up in {sum(timings.steps.values()):.1f} s ({steps})", highlight=False)
    console.print(f"context {made.context}\nkubeconfig {made.kubeconfig}", highlight=False)
    if registry:
        console.print(f"registry {kind_cluster.registry_host(made)}", highlight=False)


@cluster.command("status")
@cluster_name_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly_errors
def cluster_status(name: str, output: str) -> None:
    """Nodes and pods of a cluster, from its API server."""
    from dnscorrelate.cluster.kind import cluster as kind_cluster

    status = kind_cluster.status(name)
    if output == "json":
        click.echo(json.dumps(status, indent=2))
        return
    from dnscorrelate.report.text import cluster_status_tables

    console.print(*cluster_status_tables(status))


@cluster.command("down")
@cluster_name_option
@click.option("--all", "everything", is_flag=True, help="Remove every dnscorrelate cluster, including the debris of crashed ones.")
@friendly_errors
def cluster_down(name: str, everything: bool) -> None:
    """Remove a cluster: node containers, its network, the upstream container, its kubeconfig."""
    from dnscorrelate.cluster.kind import cluster as kind_cluster

    if not everything and (left := kind_cluster.unfinished_scenario(kind_cluster.checked_name(name))):
        errors.print(f"cluster {name}: scenario {left} did not finish (its run was killed); what it changed goes with the cluster",
                     highlight=False, markup=False)
    removed = kind_cluster.down_all() if everything else kind_cluster.down(kind_cluster.checked_name(name))
    console.print(f"removed {len(removed)}: {', '.join(removed) or 'nothing'}", highlight=False)


@main.group(invoke_without_command=True)
@click.option("--node", help="This node's name: the vantage of its own namespace (default $NODE_NAME, set by the DaemonSet).")
@click.option("--port", "ports", type=int, multiple=True, default=(53,), show_default=True, help="DNS port to trace. Repeatable.")
@click.option("--duration", type=float, help="Seconds to capture (default: until stdin closes, a line `stop`, or SIGTERM).")
@click.option("--client", "clients", multiple=True, metavar="IP", help="Send only the records of this address's lookups and "
              "of what they caused on this node (forwards, upstream), and counters for the rest (`trace`). Repeatable.")
@click.option("--test-clock-skew-ns", type=int, default=0, hidden=True,
              help="Tests only: time this node's events as a wall clock this many ns ahead would.")
@click.pass_context
def agent(ctx, node: str | None, ports: tuple[int, ...], duration: float | None, clients: tuple[str, ...], test_clock_skew_ns: int) -> None:
    """The node agent: capture on this node and stream the events to stdout (run by `trace --agent` in its pods).

    A binary stream for the CLI to read, not for a terminal. It learns which pod each network namespace is from
    the pod map the CLI writes on its stdin (it holds no API credentials), and stops when stdin closes (the exec
    session ended), on a line `stop`, on SIGTERM or after --duration; a node that cannot capture says why in the stream.
    """
    if ctx.invoked_subcommand is not None:
        return
    if sys.stdout.isatty():
        raise click.UsageError("the agent writes a binary stream for `dnscorrelate trace --agent`; redirect stdout")
    from dnscorrelate.cluster.kube.agent import main as agent_main

    for address in clients:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address", param_hint="--client") from None
    sys.exit(agent_main(node, tuple(ports), duration, test_clock_skew_ns, tuple(clients)))


@agent.command("standby")
def agent_standby() -> None:
    """The agent pod's own process: wait to be exec'd into, until SIGTERM."""
    from dnscorrelate.cluster.kube.agent import standby

    standby()


@agent.command("cleanup")
@click.option("--context", help="The kubeconfig context of the cluster (as kubectl --context).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The kubeconfig to read (as kubectl; default $KUBECONFIG, ~/.kube/config).")
@friendly_errors
def agent_cleanup(context: str | None, kubeconfig: str | None) -> None:
    """Remove what killed `trace --agent` sessions left (their DaemonSet; older versions' service account and role), once their lease
    has run out; sessions still running renew theirs and are left alone. Lists what it removed and what it left."""
    from dnscorrelate.cluster.kube.backend import remove_expired_agents

    swept = remove_expired_agents(kubeconfig, context)
    for line in swept.removed:
        console.print(f"removed {line}", highlight=False, markup=False, soft_wrap=True)
    for line in swept.leased:
        console.print(f"left {line}: a session still holds it", highlight=False, markup=False, soft_wrap=True)
    for line in swept.failed:
        errors.print(f"could not remove {line}", highlight=False, markup=False, soft_wrap=True)
    errors.print(f"removed {len(swept.removed)}, left {len(swept.leased)} held by live sessions"
                 + (f", {len(swept.failed)} could not be removed" if swept.failed else ""), highlight=False)
    if swept.failed:
        sys.exit(2)


@agent.command("install")
@click.option("--image", help="The agent image (default: the one `make cluster` built here; a bare name is never pulled).")
@click.option("--source-from-host", is_flag=True, help="Run the package from the node's /opt/dnscorrelate/src (kind clusters of `cluster up`).")
@click.option("--context", help="The kubeconfig context of the cluster (as kubectl --context).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The kubeconfig to read (as kubectl; default $KUBECONFIG, ~/.kube/config).")
@friendly_errors
def agent_install(image: str | None, source_from_host: bool, context: str | None, kubeconfig: str | None) -> None:
    """Install the node agents once, as an admin, in their own namespace `dnscorrelate` (Pod Security: privileged),
    with the Role `dnscorrelate-user` there: users bound to it need no rights in kube-system or on RBAC to trace
    with --agent (they still read the cluster's facts). `trace --agent` uses this DaemonSet when it is there."""
    from dnscorrelate.cluster.kind.build import agent_image
    from dnscorrelate.cluster.kube.backend import install_agents

    for line in install_agents(image or agent_image(source_from_host), source_from_host, kubeconfig, context):
        console.print(line, highlight=False, markup=False)
    console.print("bind users to Role dnscorrelate/dnscorrelate-user (kubectl -n dnscorrelate create rolebinding NAME "
                  "--role dnscorrelate-user --user USER)", highlight=False, markup=False)


@agent.command("manifest")
@click.option("--image", help="The agent image (default: the one `make cluster` built here, dnscorrelate/agent-standalone unless --source-from-host).")
@click.option("--source-from-host", is_flag=True, help="Run the package from the node's /opt/dnscorrelate/src (kind clusters of `cluster up`) instead of the image's.")
@friendly_errors
def agent_manifest(image: str | None, source_from_host: bool) -> None:
    """Print the agent's DaemonSet (no service account token, no RBAC: the CLI sends each agent its node's pods),
    each privilege explained."""
    from dnscorrelate.cluster.kind.build import agent_image
    from dnscorrelate.cluster.kube.agent import manifest

    click.echo(manifest(image or agent_image(source_from_host), source_from_host), nl=False)


@agent.command("image")
@click.option("--push", "reference", required=True, metavar="REGISTRY/NAME[:TAG]",
              help="Tag the agent image `make cluster` built (dnscorrelate/agent-standalone, the package baked in) as this "
                   "and push it (default TAG: the built one's). Prints the digest-pinned name to pass on.")
@friendly_errors
def agent_image_push(reference: str) -> None:
    """Push the standalone agent image to a registry your nodes pull from, and print the --agent-image (trace) and
    --image (agent install, agent manifest) to use. One architecture: the build machine's (linux/amd64 here; no
    multi-architecture index), so nodes of another architecture cannot run it."""
    from dnscorrelate.cluster.kind.cluster import push_agent_image

    try:
        pinned = push_agent_image(reference, say=lambda line: errors.print(line, highlight=False, markup=False))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--push") from None
    console.print(pinned, highlight=False, markup=False, soft_wrap=True)
    errors.print(f"use it: dnscorrelate trace pod/NAME --context CONTEXT --agent --agent-image {pinned}\n"
                 f"    or: dnscorrelate agent install --image {pinned}  (and agent manifest --image {pinned})",
                 highlight=False, markup=False, soft_wrap=True)


if __name__ == "__main__":
    main()
