"""`dnscorrelate cluster up | status | down`: a kind cluster with the lab's workloads.

Every name carries the prefix: kind cluster `dnsc-NAME` (kubectl context `kind-dnsc-NAME`), its own
Docker network `dnsc-NAME`, the upstream resolver container `dnsc-NAME-upstream` alone on the
internal Docker network `dnsc-NAME-upstream` (which the nodes join too), with `--registry` the local
registry container `dnsc-NAME-registry` (registry.py), this machine's nftables table `inet
dnsc-NAME-upstream`, and the run directory /run/dnscorrelate/clusters/NAME (kubeconfig, upstream files). `down` removes all of them; `down --all` finds them by prefix and label after a
crash or kill -9.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dnscorrelate.errors import ClusterError

PREFIX = "dnsc-"
LABEL = "io.dnscorrelate.cluster"
RUN_ROOT = Path(os.environ.get("DNSCORRELATE_CLUSTER_DIR", "/run/dnscorrelate/clusters"))
CHECKOUT = Path(__file__).resolve().parents[3]  # mounted into the nodes: the agents run this code
TRACER_IN_NODE = "/opt/dnscorrelate/tracer"  # the build's compiled tracers, where the agent image looks (live/bpf.py)
NAME = re.compile(r"^[a-z0-9]{1,20}$")
READY_TIMEOUT_S = 240
CILIUM_READY_TIMEOUT_S = 300  # each agent compiles its datapath with clang first (two nodes on two cores)
SWEEPS = 10
UPSTREAM_SUFFIX = "-upstream"
SYSTEMD_STUB = "127.0.0.53"  # Docker reads systemd-resolved's own list instead of this stub
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")


@dataclass(frozen=True)
class KindCluster:
    name: str

    @property
    def kind_name(self) -> str:
        return PREFIX + self.name

    @property
    def context(self) -> str:
        return "kind-" + self.kind_name

    @property
    def network(self) -> str:
        return self.kind_name

    @property
    def upstream_container(self) -> str:
        return f"{self.kind_name}-upstream"

    @property
    def upstream_network(self) -> str:
        """The upstream's Docker network, `--internal`: no NAT, nothing forwarded off its bridge."""
        return f"{self.kind_name}{UPSTREAM_SUFFIX}"

    @property
    def host_table(self) -> str:
        """This machine's nftables table (inet) closing the upstream network's bridge (network.upstream_host_rules)."""
        return f"{self.kind_name}{UPSTREAM_SUFFIX}"

    @property
    def dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"


@dataclass
class Timings:
    """Seconds per step of `up`, in order (bench/cluster_up.py prints them)."""
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable, *args):
        start = time.monotonic()
        result = fn(*args)
        self.steps[name] = round(time.monotonic() - start, 2)
        return result


def kubeconfig_of_context(context: str) -> str | None:
    """The kubeconfig `cluster up` wrote for a context it made (kind-dnsc-NAME), if that cluster is up."""
    prefix = "kind-" + PREFIX
    path = RUN_ROOT / context[len(prefix):] / "kubeconfig" if context.startswith(prefix) else None
    return str(path) if path and path.exists() else None


def upstream_address(cluster: KindCluster, client=None) -> str:
    """The upstream resolver container's address on its internal network (network.py): where the kube backend
    points a scenario's `forward . /etc/resolv.conf`."""
    container = (client or docker()).containers.get(cluster.upstream_container)
    return container.attrs["NetworkSettings"]["Networks"][cluster.upstream_network]["IPAddress"]


def registry_host(cluster: KindCluster) -> str | None:
    """`localhost:PORT` of the cluster's local registry (`up(registry=True)`), or None when it has none."""
    from dnscorrelate.cluster.kind.registry import registry_of

    return registry_of(cluster, docker())


def push_agent_image(reference: str, say: Callable[[str], None] = lambda _: None) -> str:
    """`agent image --push`: the standalone agent image built here tagged as `reference` (REGISTRY/NAME[:TAG]) and
    pushed (registry.push_image); returns it pinned by digest. A ValueError names what is wrong with `reference`,
    before anything else is looked at."""
    from dnscorrelate.cluster.kind import registry
    from dnscorrelate.cluster.kind.build import agent_image

    registry.split_reference(reference)
    return registry.push_image(docker(), agent_image(source_from_host=False), reference, say)


def checked_name(name: str) -> str:
    if not NAME.match(name):
        raise ClusterError(f"cluster name {name!r}: use 1-20 lowercase letters or digits")
    return name


def docker():
    """A Docker client, or a ClusterError saying how to get Docker running."""
    import docker as docker_sdk

    try:
        client = docker_sdk.from_env()
        client.ping()
        return client
    except Exception as err:  # the SDK raises several kinds for "no daemon"
        raise ClusterError(f"Docker is not reachable ({err.__class__.__name__}): run `make cluster`, which installs "
                           "and starts it, or start dockerd yourself") from None


def run_kind(build, *args: str, env: dict | None = None, timeout: float = 600) -> str:
    """kind's stdout; a failure becomes a ClusterError quoting kind's last lines."""
    try:
        done = subprocess.run([build.kind, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`kind {' '.join(args)}` did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise ClusterError(f"`kind {' '.join(args[:2])}` failed:\n{tail}")
    return done.stdout


def die_with_parent() -> None:
    """In the child: be killed when the parent dies, so a kill -9 of `cluster up` stops kind too and
    `down` finds debris that stays put."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def existing_clusters(build) -> list[str]:
    """Names (without the prefix) of this project's kind clusters."""
    names = run_kind(build, "get", "clusters").split()
    return sorted(n[len(PREFIX):] for n in names if n.startswith(PREFIX))


def kind_config(build, registry: bool = False) -> str:
    """kind's cluster config: a control plane and a worker with this checkout and the build's compiled tracers
    mounted (for the agents; no kernel headers: the agent loads the CO-RE object), no default CNI (kindnet cannot
    be built here; network.py runs flannel), and on a machine lacking CAP_SYS_RESOURCE, containerd told to run
    runc through the shim and not to lower oom_score_adj; with `registry`, containerd reading registry hosts from
    /etc/containerd/certs.d (registry.py)."""
    from dnscorrelate.cluster.kind import registry as local_registry
    from dnscorrelate.cluster.kind.network import POD_SUBNET, SERVICE_SUBNET

    mount = ["    extraMounts:", f"      - hostPath: {CHECKOUT}", "        containerPath: /opt/dnscorrelate/src", "        readOnly: true"]
    if build.tracer_dir:
        mount += [f"      - hostPath: {build.tracer_dir}", f"        containerPath: {TRACER_IN_NODE}", "        readOnly: true"]
    lines = [
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        "networking:",
        "  disableDefaultCNI: true",
        f"  podSubnet: {POD_SUBNET}",
        f"  serviceSubnet: {SERVICE_SUBNET}",
        "nodes:",
        "  - role: control-plane",
        *mount,
        "  - role: worker",
        *mount,
    ]
    if build.cap_shim or registry:
        lines.append("containerdConfigPatches:")
    if registry:
        lines += local_registry.kind_config_patch()
    if build.cap_shim:
        lines += [
            "  - |-",
            '    [plugins."io.containerd.grpc.v1.cri"]',
            "      restrict_oom_score_adj = true",
            '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
            '      BinaryName = "/usr/local/libexec/dnscorrelate/runc-shim"',
        ]
    return "\n".join(lines) + "\n"


def up(name: str = "kind", spec_path: str | None = None, say: Callable[[str], None] = lambda _: None,
       spec=None, cni: str = "flannel", hubble: bool = False, hubble_policy: str = "default",
       registry: bool = False) -> tuple[KindCluster, Timings]:
    """Create the cluster and everything on it from a lab spec (`spec`, a LabSpec, or the file `spec_path`,
    or the default), with `cni` as its pod network (network.CNIS); with `hubble` (Cilium only), Hubble and
    the DNS proxy on and the visibility policy `hubble_policy` (network.visibility_policies) applied; with
    `registry`, a local registry the nodes pull from (registry.py). On any failure or Ctrl-C, remove what
    was made."""
    from dnscorrelate.cluster.kind import registry as local_registry
    from dnscorrelate.cluster.kind.build import load_build
    from dnscorrelate.cluster.kind.network import CNIS, visibility_policies
    from dnscorrelate.cluster.spec import load_spec

    if cni not in CNIS:
        raise ClusterError(f"unknown CNI {cni!r}: choose one of {', '.join(CNIS)}")
    if hubble and cni != "cilium":
        raise ClusterError("--hubble needs --cni cilium: Hubble is part of Cilium's agent")
    cluster = KindCluster(checked_name(name))
    spec = spec if spec is not None else load_spec(spec_path)
    policies = visibility_policies(hubble_policy) if hubble else []
    build = load_build()
    manifest = cilium_manifest(build, hubble) if cni == "cilium" else ""
    if registry and not build.registry_image:
        raise ClusterError("--registry: this build has no registry image (no REGISTRY_IMAGE in build.env): run `make cluster` "
                           "from the dnscorrelate checkout (it builds only what is missing)")
    client = docker()
    refuse_host_loopback_resolvers()
    if cluster.name in existing_clusters(build):
        raise ClusterError(f"a cluster named {cluster.name!r} is already up: `dnscorrelate cluster down --name {cluster.name}` "
                           "first, or choose another --name")
    timings = Timings()
    try:
        cluster.dir.mkdir(parents=True, exist_ok=True)
        (cluster.dir / "owner").write_text(str(os.getpid()))
        say("creating nodes (kind)")
        timings.run("nodes", create_nodes, cluster, build, registry)
        api = api_client(cluster)
        mark_made_here(api, cluster.name)
        untaint_control_plane(api)
        say("upstream resolver")
        upstream_ip = timings.run("upstream", start_upstream, cluster, build, spec, client)
        registry_addresses = []
        if registry:
            say("local registry")
            host = timings.run("registry", local_registry.start, cluster, build, client, {LABEL: cluster.name})
            local_registry.configure_nodes(cluster, node_containers(client, cluster), host)
            local_registry.publish(api, host)
            registry_addresses = local_registry.addresses(cluster, client)
        say("traffic guard")
        timings.run("guard", install_guard, cluster, client, upstream_ip, registry_addresses)
        say("pod network")
        timings.run("pod-network", setup_pod_network, cluster, api, client, build, cni, manifest)
        say("CoreDNS and workloads")
        timings.run("coredns", configure_coredns, api, spec, upstream_ip)
        timings.run("workloads", create_workloads, api, spec, build, cni)
        say("waiting for every pod")
        timings.run("ready", wait_ready, api)
        if hubble:
            say("Hubble: visibility policy, and every agent's Hubble server answering")
            timings.run("hubble", setup_hubble, cluster, api, build, policies)
    except BaseException:
        say("failed: removing what was made")
        down(cluster.name)
        raise
    return cluster, timings


def refuse_host_loopback_resolvers(resolv_conf: Path = Path("/etc/resolv.conf"),
                                   systemd_resolv_conf: Path = SYSTEMD_RESOLV_CONF) -> None:
    """A ClusterError when Docker's embedded DNS would forward the nodes' lookups from this machine's own
    network namespace, where no node's guard can drop them (loopback_resolvers)."""
    loopback = loopback_resolvers(resolv_conf.read_text() if resolv_conf.exists() else "", systemd_resolv_conf.exists())
    if loopback:
        raise ClusterError(
            f"{resolv_conf} names the loopback resolver {', '.join(loopback)}: Docker's DNS, the nodes' resolver, would "
            "send names it does not know to it from this machine's own network namespace, past the nodes' guard, and it "
            "may ask the world; a kind cluster here promises that nothing leaves the machine. Point resolv.conf at a "
            "non-loopback resolver, or set \"dns\" in /etc/docker/daemon.json to one, then retry")


def loopback_resolvers(resolv_conf: str, systemd_resolved: bool) -> list[str]:
    """The loopback nameservers of a resolv.conf's text: Docker's embedded DNS forwards to those from the host's
    network namespace (to the others from the container's, through the node's guard); systemd-resolved's stub
    127.0.0.53 does not count when its own list exists, because Docker reads that list instead."""
    import ipaddress

    found = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if address.is_loopback and not (systemd_resolved and fields[1] == SYSTEMD_STUB):
                found.append(fields[1])
    return found


def cilium_manifest(build, hubble: bool) -> str:
    """The rendered Cilium manifest `cluster up` applies: with Hubble and the DNS proxy on, or without;
    a ClusterError saying how to make it when this build lacks it."""
    manifest = build.cilium_hubble_manifest if hubble else build.cilium_manifest
    if not (manifest and Path(manifest).exists()):
        which = "CILIUM_HUBBLE_MANIFEST" if hubble else "CILIUM_MANIFEST"
        raise ClusterError(f"this build has no Cilium{' with Hubble' if hubble else ''} (no {which} in build.env, or "
                           "the file is gone): run `make cluster` from the dnscorrelate checkout")
    return manifest


def create_nodes(cluster: KindCluster, build, registry: bool = False) -> None:
    config = cluster.dir / "kind.yaml"
    config.write_text(kind_config(build, registry))
    run_kind(build, "create", "cluster", "--name", cluster.kind_name, "--image", build.node_image,
             "--config", str(config), "--kubeconfig", str(cluster.kubeconfig), "--wait", "0s",
             env={"KIND_EXPERIMENTAL_DOCKER_NETWORK": cluster.network})


def mark_made_here(api, name: str) -> None:
    """The ConfigMap that tells the kube backend's faults this cluster is ours to change (kube/faults.py)."""
    from kubernetes import client as k8s

    from dnscorrelate.cluster.kubeapi import MADE_HERE, MADE_HERE_NAMESPACE

    k8s.CoreV1Api(api).create_namespaced_config_map(MADE_HERE_NAMESPACE, {
        "metadata": {"name": MADE_HERE}, "data": {"cluster": name, "made-by": "dnscorrelate cluster up"}})


def untaint_control_plane(api) -> None:
    """Let pods run on the control plane too, so the scheduler spreads CoreDNS and workloads over both
    nodes and lookups cross nodes (DNAT to another node, as in a real cluster)."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api)
    for node in core.list_node().items:
        kept = [t for t in node.spec.taints or [] if t.key != "node-role.kubernetes.io/control-plane"]
        if len(kept) != len(node.spec.taints or []):
            core.patch_node(node.metadata.name, {"spec": {"taints": [api.sanitize_for_serialization(t) for t in kept] or None}})


def api_client(cluster: KindCluster):
    """The official client, configured from the cluster's kubeconfig."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig), context=cluster.context)


def labelled(client, label: str) -> list:
    """Containers with `label` (KEY or KEY=VALUE), running or not, that still exist. Docker's listing can
    hold containers that are already gone (removed meanwhile, or half-created by a `docker run` killed
    with its kind): those are left out instead of failing."""
    import docker.errors

    found = []
    for container in client.containers.list(all=True, sparse=True, filters={"label": label}):
        try:
            container.reload()
            found.append(container)
        except docker.errors.NotFound:
            pass
    return found


def remove(container) -> bool:
    """Remove a container; False when it was already gone."""
    import docker.errors

    try:
        container.remove(force=True, v=True)
        return True
    except docker.errors.NotFound:
        return False


def node_containers(client, cluster: KindCluster) -> dict:
    """The cluster's node containers by node name."""
    return {c.name: c for c in labelled(client, f"io.x-k8s.kind.cluster={cluster.kind_name}")}


def install_guard(cluster: KindCluster, client, upstream_ip: str, registry: list[str] = ()) -> None:
    """The guard (network.guard_rules) on every node: the nodes' own traffic and their pods' reach only the
    cluster's addresses, the nodes, the upstream and the local registry (`registry`, its addresses)."""
    from dnscorrelate.cluster.kind.network import guard_script

    nodes = node_containers(client, cluster)
    script = guard_script(node_addresses(nodes.values()), upstream_ip, registry)
    for name, container in nodes.items():
        exit_code, output = container.exec_run(["sh", "-c", script])
        if exit_code != 0:
            raise ClusterError(f"the traffic guard on node {name} failed: {output.decode(errors='replace').strip()}")


def node_addresses(containers) -> list[str]:
    """Every IPv4 and IPv6 address the node containers hold on their Docker networks, sorted."""
    found = set()
    for container in containers:
        for settings in container.attrs["NetworkSettings"]["Networks"].values():
            found |= {a for a in (settings.get("IPAddress"), settings.get("GlobalIPv6Address")) if a}
    return sorted(found)


def setup_pod_network(cluster: KindCluster, api, client, build, cni: str = "flannel", manifest: str = "") -> None:
    """flannel (or Cilium) on every node; returns once the network runs on every node and every node is
    Ready, so that the pods created next are spread over both nodes instead of all landing on whichever
    node had its network first."""
    from kubernetes import client as k8s
    from kubernetes import utils

    from dnscorrelate.cluster.kind.network import FLANNEL, FLANNEL_NAMESPACE, flannel_objects

    if cni == "cilium":
        setup_cilium(cluster, api, build, manifest or build.cilium_manifest)
        return
    for body in flannel_objects(build.flannel_image):
        utils.create_from_dict(api, body)
    apps = k8s.AppsV1Api(api)

    core = k8s.CoreV1Api(api)

    def flannel_ready():
        status = apps.read_namespaced_daemon_set(FLANNEL, FLANNEL_NAMESPACE).status
        scheduled = status.desired_number_scheduled
        return scheduled and status.number_ready == scheduled and not any(not_ready_node(n) for n in core.list_node().items)

    wait_for(flannel_ready, "flannel to hold a lease on every node and every node to be Ready", 120,
             lambda: ", ".join(f"{p.metadata.name} ({pod_reason(core, p)})" for p in
                               core.list_namespaced_pod(FLANNEL_NAMESPACE, label_selector=f"app={FLANNEL}").items))


def setup_cilium(cluster: KindCluster, api, build, manifest: str) -> None:
    """Cilium's rendered manifests (network.cilium_objects), created by the built kubectl (the Python
    client's typed models refuse some of the chart's valid YAML, such as `cpu: 1`); returns once its agent
    is ready on every node (its datapath compiled and attached), its operator is ready and every node is
    Ready."""
    import yaml
    from kubernetes import client as k8s

    from dnscorrelate.cluster.kind.network import (CILIUM_AGENT, CILIUM_AGENT_SELECTOR, CILIUM_NAMESPACE, CILIUM_OPERATOR,
                                                   cilium_objects)

    kubectl_create(cluster, build, yaml.safe_dump_all(cilium_objects(manifest), sort_keys=False), "Cilium's objects")
    apps = k8s.AppsV1Api(api)
    core = k8s.CoreV1Api(api)

    def cilium_ready():
        agents = apps.read_namespaced_daemon_set(CILIUM_AGENT, CILIUM_NAMESPACE).status
        operator = apps.read_namespaced_deployment(CILIUM_OPERATOR, CILIUM_NAMESPACE).status
        return (agents.desired_number_scheduled and agents.number_ready == agents.desired_number_scheduled
                and operator.ready_replicas and not any(not_ready_node(n) for n in core.list_node().items))

    wait_for(cilium_ready, "Cilium's agent on every node and its operator to be ready, and every node to be Ready",
             CILIUM_READY_TIMEOUT_S,
             lambda: ", ".join(f"{p.metadata.name} ({pod_reason(core, p)})" for p in
                               core.list_namespaced_pod(CILIUM_NAMESPACE, label_selector=CILIUM_AGENT_SELECTOR).items))


def kubectl_create(cluster: KindCluster, build, manifest: str, what: str) -> None:
    """`kubectl create` of a YAML stream (the built kubectl: the Python client's typed models refuse some
    valid YAML, and it knows Cilium's custom resources); a ClusterError with kubectl's message."""
    done = subprocess.run([build.kubectl, "--kubeconfig", str(cluster.kubeconfig), "--context", cluster.context, "create", "-f", "-"],
                          input=manifest, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ClusterError(f"creating {what} failed: {done.stderr.strip()}")


def setup_hubble(cluster: KindCluster, api, build, policies: list[dict]) -> None:
    """The visibility policies, created and realized by every agent's endpoints (`cluster.cilium`'s wait for
    Cilium's policy revision, as the kube backend's faults wait), then every agent's Hubble server answering
    on its unix socket (`hubble status`, the CLI in the agent image)."""
    import yaml
    from kubernetes import client as k8s

    from dnscorrelate.cluster import cilium

    core = k8s.CoreV1Api(api)
    if policies:
        before = cilium.policy_revisions(core)
        kubectl_create(cluster, build, yaml.safe_dump_all(policies, sort_keys=False), "the Hubble visibility policy")
        cilium.wait_enforced(core, before, lambda probe, what: wait_for(probe, what, 120))
    for agent in cilium.agents(core):
        wait_for(lambda: "Healthcheck" in cilium.hubble_answers(core, agent.metadata.name),
                 f"Hubble's server in Cilium agent {agent.metadata.name} to answer", 60)


def internal_ip(node) -> str:
    return next(a.address for a in node.status.addresses if a.type == "InternalIP")


def start_upstream(cluster: KindCluster, build, spec, client) -> str:
    """The upstream resolver, a container alone on the cluster's internal network (create_upstream_network);
    returns its address. Whatever its Corefile says (a scenario's lab.upstreamCorefile too), nothing it sends
    gets past that network's bridge (Docker's isolation, and the host table before it)."""
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    from dnscorrelate.cluster.upstream import write_upstream_files

    create_upstream_network(client, cluster)
    testcontainers_config.ryuk_disabled = True  # its reaper is an image we cannot pull; `down` removes ours
    files = cluster.dir / "upstream"
    write_upstream_files(spec, files, int(time.time()))
    (
        DockerContainer(build.upstream_image)
        .with_name(cluster.upstream_container)
        .with_command(["-conf", str(files / "Corefile")])
        .with_volume_mapping(str(files), str(files), "ro")
        .with_kwargs(network=cluster.upstream_network, labels={LABEL: cluster.name})
        .start()
    )
    return upstream_address(cluster, client)


def create_upstream_network(client, cluster: KindCluster):
    """The upstream's Docker network, `--internal`, with every node attached (a second interface, no default
    route: the nodes' own network stays kind's, which kind needs for its port mapping of the API server and
    its DNS set-up), and this machine's table closing its bridge (network.upstream_host_rules). The nodes
    reach the upstream on the shared bridge, with no route of ours and no NAT."""
    network = client.networks.create(cluster.upstream_network, driver="bridge", internal=True, check_duplicate=True,
                                     labels={LABEL: cluster.name})
    for container in node_containers(client, cluster).values():
        network.connect(container)
    bridge = f"br-{network.id[:12]}"  # Docker's name for a user network's bridge
    if not Path("/sys/class/net", bridge).exists():
        raise ClusterError(f"Docker network {cluster.upstream_network} has no bridge {bridge} on this machine")
    load_host_table(cluster.host_table, bridge)
    return network


def load_host_table(table: str, bridge: str) -> None:
    """network.upstream_host_rules loaded on this machine, replacing an earlier table of that name at once."""
    from dnscorrelate.cluster.kind.network import upstream_host_rules

    rules = f"table inet {table}\ndelete table inet {table}\n{upstream_host_rules(table, bridge)}"
    try:
        done = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ClusterError("nft is not installed here: the upstream's network needs this machine's nftables "
                           "(Debian: apt-get install nftables)") from None
    if done.returncode != 0:
        raise ClusterError(f"loading nftables table {table} on this machine failed: {done.stderr.strip()}")


def delete_host_table(table: str) -> bool:
    """Remove this machine's table `table`; False when there was none (or no nft)."""
    try:
        return subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


def attached(name: str) -> KindCluster:
    """A cluster `cluster up` made and that is up (its kubeconfig in the run directory), or a ClusterError."""
    cluster = KindCluster(checked_name(name))
    if not cluster.kubeconfig.exists():
        raise ClusterError(f"no cluster named {name!r} is up here (no {cluster.kubeconfig}): `dnscorrelate cluster up --name {name}` first")
    return cluster


def unfinished_scenario(name: str) -> str | None:
    """The scenario whose journal a killed `run` left in the cluster's run directory (kube/journal.py's file), if any."""
    import json

    path = KindCluster(name).dir / "journal.json"
    try:
        return json.loads(path.read_text()).get("scenario") or "(unnamed)"
    except (OSError, ValueError):
        return "(unreadable journal)" if path.exists() else None


def upstream_baseline_dir(cluster: KindCluster) -> Path:
    return cluster.dir / "upstream.baseline"


def overlay_upstream(cluster: KindCluster, spec) -> bool:
    """The upstream resolver serves `spec`'s zones and Corefile (a scenario's lab overlay) until `restore_upstream`:
    its files as they were are copied aside first (once, on disk, so a killed run is restored too), then the
    new ones written and the container restarted; returns once it answers from them."""
    import shutil

    from dnscorrelate.cluster.upstream import write_upstream_files

    files = cluster.dir / "upstream"
    saved = upstream_baseline_dir(cluster)
    if not saved.exists():
        shutil.copytree(files, saved.with_suffix(".tmp"), dirs_exist_ok=True)
        os.replace(saved.with_suffix(".tmp"), saved)
    for old in files.iterdir():
        old.unlink()
    write_upstream_files(spec, files, int(time.time()))
    restart_upstream(cluster)
    return True


def restore_upstream(cluster: KindCluster) -> bool:
    """The upstream resolver back on the files it had before `overlay_upstream`; False when it had not been changed."""
    import filecmp
    import shutil

    files, saved = cluster.dir / "upstream", upstream_baseline_dir(cluster)
    if not saved.exists():
        return False
    same = {p.name for p in files.iterdir()} == {p.name for p in saved.iterdir()} and all(
        filecmp.cmp(files / p.name, p, shallow=False) for p in saved.iterdir())
    if not same:
        for old in files.iterdir():
            old.unlink()
        for kept in saved.iterdir():
            shutil.copy(kept, files / kept.name)
        restart_upstream(cluster)
    shutil.rmtree(saved)
    return not same


def restart_upstream(cluster: KindCluster) -> None:
    """Restart the upstream container on its current files and wait until it answers the root SOA with the
    serial its root.db has now (so the new zones are loaded); a ClusterError if its address changed."""
    address = upstream_address(cluster)
    container = docker().containers.get(cluster.upstream_container)
    container.restart(timeout=1)
    if upstream_address(cluster) != address:
        raise ClusterError(f"the upstream container {cluster.upstream_container} came back at {upstream_address(cluster)}, "
                           f"not {address}: CoreDNS still forwards there; remove the cluster (`cluster down --name {cluster.name}`)")
    serial = int(re.search(r"SOA \S+ \S+ (\d+)", (cluster.dir / "upstream" / "root.db").read_text()).group(1))
    wait_for(lambda: root_serial(address) == serial, f"the upstream resolver {address} to serve its new files", 60)


def root_serial(address: str) -> int | None:
    """The serial of the root SOA the upstream answers with, or None while it does not answer."""
    import dns.exception
    import dns.message
    import dns.query

    try:
        answer = dns.query.udp(dns.message.make_query(".", "SOA"), address, timeout=1.0)
    except (dns.exception.DNSException, OSError):
        return None
    return next((rr.serial for rrset in answer.answer for rr in rrset if rrset.rdtype == 6), None)


def configure_coredns(api, spec, upstream_ip: str) -> None:
    """The coredns ConfigMap gets the spec's Corefile (with `log`), forwarding to the upstream; the
    replicas restart on it, one per node, so the first query already sees it."""
    from kubernetes import client as k8s

    from dnscorrelate.cluster.workloads import cluster_corefile

    core = k8s.CoreV1Api(api)
    core.patch_namespaced_config_map("coredns", "kube-system", {"data": {"Corefile": cluster_corefile(spec.corefile, upstream_ip)}})
    # one replica per node, counting only the current ReplicaSet's pods (pod-template-hash), so lookups
    # cross nodes through kube-proxy's DNAT as in a real cluster, after every restart too
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
              "labelSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "matchLabelKeys": ["pod-template-hash"]}
    restarted = {"spec": {"template": {"metadata": {"annotations": {"dnscorrelate/restartedAt": str(time.time())}},
                                       "spec": {"topologySpreadConstraints": [spread]}}}}
    k8s.AppsV1Api(api).patch_namespaced_deployment("coredns", "kube-system", restarted)


def create_workloads(api, spec, build, cni: str = "flannel") -> None:
    """With flannel, our NetworkPolicy agent first (a policy in the spec is enforced from the start; Cilium
    enforces policies itself), then the spec's objects."""
    from kubernetes import utils

    from dnscorrelate.cluster.kind.policy_agent import daemonset
    from dnscorrelate.cluster.workloads import manifest_objects

    agent = daemonset(build.agent_image) if cni == "flannel" else []
    for body in [*agent, *manifest_objects(spec, build.client_image)]:
        utils.create_from_dict(api, body)


def wait_ready(api) -> None:
    """Until every node is Ready and every pod Running and ready, with one CoreDNS generation."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api)
    wait_for(lambda: not_ready(core) == [], "every node and pod to be ready", READY_TIMEOUT_S,
             lambda: "not ready: " + ", ".join(not_ready(core)))


def not_ready(core) -> list[str]:
    """What is not yet ready, as `node/NAME` and `pod/NS/NAME (reason)`."""
    waiting = [f"node/{n.metadata.name}" for n in core.list_node().items if not_ready_node(n)]
    for pod in core.list_pod_for_all_namespaces().items:
        if pod.metadata.deletion_timestamp:
            waiting.append(f"pod/{pod.metadata.namespace}/{pod.metadata.name} (terminating)")
        elif not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            waiting.append(f"pod/{pod.metadata.namespace}/{pod.metadata.name} ({pod_reason(core, pod)})")
    return waiting


def pod_reason(core, pod) -> str:
    """Why a pod is not ready; for a crashing container, with the last lines it printed."""
    for status in pod.status.container_statuses or []:
        state = status.state
        if state.waiting and state.waiting.reason == "CrashLoopBackOff":
            return f"crashing, last output: {last_output(core, pod, status.name)}"
        if state.waiting:
            return state.waiting.reason or "waiting"
        if state.terminated:
            return f"terminated: {state.terminated.reason}"
    return pod.status.phase or "pending"


def last_output(core, pod, container: str, lines: int = 4) -> str:
    try:
        text = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container,
                                            previous=True, tail_lines=lines)
    except Exception as err:  # the log is a courtesy in an error message; its absence must not hide the error
        return f"(no log: {err.__class__.__name__})"
    return " | ".join(text.strip().splitlines()) or "(nothing)"


def wait_for(probe: Callable, what: str, timeout_s: float, detail: Callable[[], str] | None = None):
    """probe()'s first truthy result (or True for an empty list), polling; a ClusterError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result or result == []:
            return result
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail else ""
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
        time.sleep(1)


def down(name: str) -> list[str]:
    """Remove the cluster `name` and everything it made; returns what was removed. Safe to repeat."""
    cluster = KindCluster(name)
    removed = []
    try:
        from dnscorrelate.cluster.kind.build import load_build

        build = load_build()
        if cluster.name in existing_clusters(build):
            run_kind(build, "delete", "cluster", "--name", cluster.kind_name)
            removed.append(f"kind cluster {cluster.kind_name}")
    except ClusterError:
        pass  # no build, or kind failed: the containers are still removed below by label
    client = docker()
    # a killed `up` leaves kind's `docker run`s in flight, and dockerd finishes a create whose client is
    # gone: stop those clients first, then sweep until a pass finds none
    stop_inflight_docker_runs(cluster)
    for _ in range(SWEEPS):
        swept = [f"container {c.name}" for c in labelled(client, f"{LABEL}={cluster.name}") if remove(c)]
        swept += [f"node container {name}" for name, c in node_containers(client, cluster).items() if remove(c)]
        removed += swept
        if not swept:
            break
        time.sleep(1)
    for network in client.networks.list(names=[cluster.network, cluster.upstream_network]):
        if network.name in (cluster.network, cluster.upstream_network):
            network.remove()
            removed.append(f"network {network.name}")
    if delete_host_table(cluster.host_table):
        removed.append(f"nftables table inet {cluster.host_table}")
    if cluster.dir.exists():
        import shutil

        shutil.rmtree(cluster.dir)
        removed.append(f"directory {cluster.dir}")
    return removed


def stop_inflight_docker_runs(cluster: KindCluster, timeout_s: float = 10.0) -> None:
    """Kill `docker` client processes still creating this cluster's containers (their --name starts with
    `dnsc-NAME-`) and wait until they are gone."""
    import signal

    marker = f"{cluster.kind_name}-".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"docker") and any(a.startswith(marker) for a in argv):
            pids.append(int(proc.name))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pids:
        time.sleep(2)  # what dockerd was creating for them lands now, for the sweep to find


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def down_all() -> list[str]:
    """Remove every cluster this project made, up or half made, found by prefix and label."""
    client = docker()
    names = {c.labels["io.x-k8s.kind.cluster"][len(PREFIX):] for c in labelled(client, "io.x-k8s.kind.cluster")
             if c.labels["io.x-k8s.kind.cluster"].startswith(PREFIX)}
    names |= {c.labels[LABEL] for c in labelled(client, LABEL)}
    names |= {n.name[len(PREFIX):].removesuffix(UPSTREAM_SUFFIX) for n in client.networks.list() if n.name.startswith(PREFIX)}
    names |= {p.name for p in RUN_ROOT.iterdir()} if RUN_ROOT.exists() else set()
    return [item for name in sorted(n for n in names if n) for item in down(name)]


def status(name: str) -> dict:
    """Nodes and pods of a running cluster, as the API reports them."""
    from kubernetes import client as k8s

    cluster = KindCluster(checked_name(name))
    if not cluster.kubeconfig.exists():
        raise ClusterError(f"no cluster named {name!r} is up here (no {cluster.kubeconfig}); `dnscorrelate cluster up --name {name}`")
    core = k8s.CoreV1Api(api_client(cluster))
    return {
        "name": cluster.name,
        "context": cluster.context,
        "kubeconfig": str(cluster.kubeconfig),
        "registry": registry_host(cluster),
        "nodes": [{"name": n.metadata.name, "ip": internal_ip(n), "podCIDR": n.spec.pod_cidr,
                   "ready": not not_ready_node(n), "version": n.status.node_info.kubelet_version}
                  for n in core.list_node().items],
        "pods": [{"namespace": p.metadata.namespace, "name": p.metadata.name, "ip": p.status.pod_ip,
                  "node": p.spec.node_name, "phase": p.status.phase}
                 for p in core.list_pod_for_all_namespaces().items],
    }


def not_ready_node(node) -> bool:
    return not any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
