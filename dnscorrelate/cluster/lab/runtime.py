"""Bring a lab up, find a running one, and tear labs down, leaving nothing behind.

Everything a lab makes carries its prefix `dnsc-<lab>-`: network namespaces,
`/etc/netns/<netns>/` entries, the nftables table `dnsc-<lab>` (inside the
node namespaces only), and processes whose command line names the lab's run
directory `/run/dnscorrelate/labs/<lab>/` (and which live in lab
namespaces). The state file there is written before anything is created, so
a lab whose `up` crashed is still found and removed by `lab down`;
`lab down --all` also sweeps by prefix when even the state file is gone.

A lab made for one process (a scenario `run`, a test) records that process
as its owner: `lab down --all` leaves labs whose owner still runs (unless
forced), and `lab up` and `run` remove labs whose owner died without tearing
them down (kill -9). A lab from `lab up` has no owner: it stays until `lab down`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dnscorrelate.cluster import upstream as upstream_files
from dnscorrelate.cluster.lab import files, kubedns, netns, nft
from dnscorrelate.cluster.lab.netns import LabError
from dnscorrelate.cluster.model import Manifest, object_key
from dnscorrelate.cluster.owners import owner_alive, this_process
from dnscorrelate.cluster.spec import LabSpec
from dnscorrelate.cluster.lab.topology import PREFIX, SERVICE_CIDR, PodInfo, Topology, build_topology

RUN_ROOT = Path(os.environ.get("DNSCORRELATE_RUN_DIR", "/run/dnscorrelate/labs"))
ETC_NETNS = Path("/etc/netns")
REPO_COREDNS = Path(__file__).resolve().parents[3] / "coredns" / "bin" / "coredns"
READY_TIMEOUT_S = 10.0


def coredns_binary() -> Path:
    """The CoreDNS to run: $DNSCORRELATE_COREDNS, else the repo's pinned build."""
    path = Path(os.environ.get("DNSCORRELATE_COREDNS") or REPO_COREDNS)
    if not os.access(path, os.X_OK):
        hint = "check DNSCORRELATE_COREDNS" if "DNSCORRELATE_COREDNS" in os.environ else "run `make -C coredns`"
        raise LabError(f"CoreDNS binary not found at {path}: {hint}")
    return path


def preflight() -> None:
    """Raise LabError unless this process can build a lab: root, iproute2, nftables, netns support."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables): run with sudo")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            raise LabError(f"`{tool}` not found: run `make setup` (Debian packages iproute2, nftables)")
    if not Path("/proc/self/ns/net").exists():
        raise LabError("this kernel has no network namespaces")


@dataclass
class Process:
    """A lab process: CoreDNS in a namespace, its log file, and the timestamper behind it."""

    role: str  # coredns-0, upstream, nodelocal-node-0
    netns: str
    corefile: str
    log: str
    pid: int = 0
    stamper_pid: int = 0


@dataclass
class Lab:
    topology: Topology
    dir: Path
    processes: list[Process] = field(default_factory=list)
    coredns: str = ""
    serial: int = 0  # the cluster zones' SOA serial: the file plugin reloads only when it grows
    owner: dict | None = None  # {"pid", "start"} of the process the lab was made for; None: the user's (`lab up`)

    @property
    def name(self) -> str:
        return self.topology.lab

    # --- state -------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def save(self) -> None:
        state = {
            "topology": self.topology.model_dump(mode="json", by_alias=True),
            "processes": [vars(p) for p in self.processes],
            "coredns": self.coredns,
            "serial": self.serial,
            "owner": self.owner,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, name: str) -> Lab:
        path = RUN_ROOT / name / "state.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} is up (looked for {path})") from None
        topology = Topology.model_validate(state["topology"])
        processes = [Process(**p) for p in state["processes"]]
        return cls(topology, path.parent, processes, state.get("coredns", ""), state.get("serial", 0), state.get("owner"))

    # --- up ----------------------------------------------------------------

    @classmethod
    def up(cls, spec: LabSpec, name: str = "lab", owned: bool = True) -> Lab:
        """Build and start the lab; on any failure or Ctrl-C, remove what was made and re-raise. An `owned`
        lab belongs to this process: once it is gone, the lab is debris for the next sweep."""
        preflight()
        topology = build_topology(spec, name)
        binary = coredns_binary()
        if (RUN_ROOT / name).exists() or netns.list_netns(topology.prefix):
            raise LabError(f"lab {name!r} is already up: `dnscorrelate lab down --name {name}` first, or pick another --name")
        lab = cls(topology, RUN_ROOT / name, coredns=str(binary), owner=this_process() if owned else None)
        lab.dir.mkdir(parents=True)
        lab.save()
        try:
            lab._build()
        except BaseException:
            teardown(name)
            raise
        return lab

    def _build(self) -> None:
        self._write_files()
        netns.add_netns(self.topology.all_netns())
        self._wire()
        self.apply_rules()
        self._start_dns()
        self.save()

    def _write_files(self) -> None:
        t = self.topology
        for sub in ("zones", "upstream", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        node_resolv = files.resolv_conf([t.upstream_ip])
        for name in [t.upstream_netns, *(n.netns for n in t.nodes)]:
            write_netns_file(name, "resolv.conf", node_resolv)
        for pod in t.pods:
            manifest = t.manifest_pod(pod.key)
            write_netns_file(pod.netns, "resolv.conf", files.pod_resolv_conf(t, pod, manifest))
            write_netns_file(pod.netns, "hosts", files.pod_hosts(pod, manifest, t.domain))
        self.write_cluster_zones()
        upstream_files.write_upstream_files(t.spec, self.dir / "upstream", int(time.time()))  # as the kind cluster's upstream
        self.write_corefiles()

    def write_corefiles(self) -> None:
        """The replicas', upstream's and NodeLocal DNS's Corefiles, from the current spec."""
        t = self.topology
        (self.dir / "upstream" / "Corefile").write_text(upstream_files.upstream_corefile(t.spec, self.dir / "upstream"))
        dnstap_dir = self.dnstap_dir if t.spec.dnstap else None
        (self.dir / "Corefile").write_text(files.replica_corefile(t, self.dir / "zones", dnstap_dir))
        if t.nodelocal_ip:
            (self.dir / "Corefile.nodelocal").write_text(files.nodelocal_corefile(t))

    def write_cluster_zones(self, wait: bool = False) -> None:
        """(Re)write the cluster domain's zones; with `wait`, return once every running replica
        serves them (the file plugin polls each second and logs each reload), as a cluster's
        CoreDNS sees an API change within moments."""
        replicas = [p for p in self.processes if p.role.startswith("coredns-") and netns.alive(p.pid)]
        marker = f'Successfully reloaded zone "{self.topology.domain}." in'
        before = {p.role: read_text(p.log).count(marker) for p in replicas}
        t = self.topology
        stanza = kubedns.find_kubernetes_stanza(t.spec.corefile)
        ttl = stanza.ttl if stanza else kubedns.DEFAULT_TTL
        self.serial = max(self.serial + 1, int(time.time()))
        (self.dir / "zones" / "cluster.db").write_text(kubedns.cluster_zone(t, ttl, self.serial))
        (self.dir / "zones" / "reverse.db").write_text(kubedns.reverse_zone(t, ttl, self.serial))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while wait and replicas and time.monotonic() < deadline:
            if all(read_text(p.log).count(marker) > before[p.role] for p in replicas):
                return
            time.sleep(0.05)
        if wait and replicas:
            raise LabError(f"CoreDNS did not reload the {t.domain} zone within {READY_TIMEOUT_S:.0f}s")

    def _wire(self) -> None:
        """Links, addresses and routes. Every veth has both ends in lab namespaces."""
        t = self.topology
        lan = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
        lan += [f"link add ups type veth peer name eth0 netns {t.upstream_netns}", "link set ups master br0 up"]
        lan += [f"link add n{n.index} type veth peer name eth0 netns {n.netns}" for n in t.nodes]
        lan += [f"link set n{n.index} master br0 up" for n in t.nodes]
        netns.ip_batch(lan, t.lan_netns)
        netns.ip_batch(["link set lo up", f"addr add {t.upstream_ip}/24 dev eth0", "link set eth0 up"], t.upstream_netns)
        for node in t.nodes:
            netns.set_sysctls(
                node.netns,
                {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"},
            )
            local = [p for p in t.pods if p.node == node.name]
            cmds = ["link set lo up", f"addr add {node.lan_ip}/24 dev eth0", "link set eth0 up"]
            # A fixed bridge MAC: Linux would otherwise copy the lowest port MAC, and a pod whose
            # veth had it would see its packets to the gateway as HOST instead of OTHERHOST.
            cmds += [f"link add cbr0 address 02:00:0a:f4:{node.index:02x}:01 type bridge", f"addr add {node.gateway}/24 dev cbr0", "link set cbr0 up"]
            for pod in local:
                veth = host_veth(pod)
                cmds += [f"link add {veth} type veth peer name eth0 netns {pod.netns}", f"link set {veth} master cbr0 up"]
            cmds += [f"route add {o.pod_cidr} via {o.lan_ip}" for o in t.nodes if o is not node]
            # Node-local clients of ClusterIPs (NodeLocal DNS) need a route before DNAT rewrites the address.
            cmds.append(f"route add {SERVICE_CIDR} dev cbr0")
            if t.nodelocal_ip:
                cmds.append(f"addr add {t.nodelocal_ip}/32 dev lo")
            netns.ip_batch(cmds, node.netns)
            for pod in local:
                netns.ip_batch(
                    ["link set lo up", f"addr add {pod.ip}/24 dev eth0", "link set eth0 up", f"route add default via {node.gateway}"],
                    pod.netns,
                )

    def apply_rules(self) -> None:
        """(Re)apply every node's nftables table atomically."""
        for node in self.topology.nodes:
            netns.run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], stdin=nft.ruleset(self.topology, node))

    def _start_dns(self) -> None:
        t = self.topology
        upstream = self._spawn("upstream", t.upstream_netns, self.dir / "upstream" / "Corefile")
        wait_listening([upstream], self)
        if t.spec.dnstap:
            self._start_dnstap_sink()  # before the replicas: CoreDNS dials its sink at start, then only every 10 s
        replicas = [self._spawn(f"coredns-{p.coredns_replica}", p.netns, self.dir / "Corefile") for p in t.coredns_pods]
        nodelocal = []
        if t.nodelocal_ip:
            nodelocal = [self._spawn(f"nodelocal-{n.name}", n.netns, self.dir / "Corefile.nodelocal") for n in t.nodes]
        wait_listening(replicas + nodelocal, self)

    def _spawn(self, role: str, netns_name: str, corefile: Path) -> Process:
        """Start CoreDNS in `netns_name`, its output timestamped into logs/<role>.log."""
        log = self.dir / "logs" / f"{role}.log"
        process = Process(role=role, netns=netns_name, corefile=str(corefile), log=str(log))
        read_end, write_end = os.pipe()
        try:
            exec_in = ["ip", "netns", "exec", netns_name]
            dns = subprocess.Popen(
                [*exec_in, self.coredns, "-conf", str(corefile), "-pidfile", str(self.dir / f"{role}.pid")],
                stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end, cwd=self.dir, start_new_session=True,
                env={**os.environ, files.REPLICA_ENV: role},
            )
            stamper = subprocess.Popen(
                [*exec_in, sys.executable, "-m", "dnscorrelate.cluster.lab.logstamp", str(log)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            os.close(read_end)
            os.close(write_end)
        process.pid, process.stamper_pid = dns.pid, stamper.pid
        self.processes.append(process)
        self.save()
        return process

    @property
    def dnstap_dir(self) -> Path:
        """Where the dnstap sink listens (`<replica>.sock`) and keeps what it received (`<replica>.fstrm`)."""
        return self.dir / "dnstap"

    def dnstap_files(self) -> list[tuple[str, Path]]:
        """(replica, frame file) of every CoreDNS replica, when the spec turns dnstap on."""
        if not self.topology.spec.dnstap:
            return []
        return [(f"coredns-{p.coredns_replica}", self.dnstap_dir / f"coredns-{p.coredns_replica}.fstrm") for p in self.topology.coredns_pods]

    def _start_dnstap_sink(self) -> None:
        """The sink the replicas' dnstap connects to, in the node network's namespace (a lab process like the
        others: its command line names the run directory), up once its sockets are."""
        names = [name for name, _ in self.dnstap_files()]
        log = self.dir / "logs" / "dnstap.log"
        with log.open("ab") as out:
            sink = subprocess.Popen(
                ["ip", "netns", "exec", self.topology.lan_netns, sys.executable, "-m", "dnscorrelate.live.dnstap",
                 str(self.dnstap_dir), *names],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        self.processes.append(Process(role="dnstap", netns=self.topology.lan_netns, corefile="", log=str(log), pid=sink.pid))
        self.save()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all((self.dnstap_dir / f"{name}.sock").exists() for name in names):
            if sink.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the dnstap sink did not start (see {log}):\n{read_text(str(log))[-2000:]}")
            time.sleep(0.01)

    # --- changing a running lab ---------------------------------------------

    def apply(self, manifests: list[Manifest]) -> list[str]:
        """Create or replace Services and NetworkPolicies, as `kubectl apply` would; returns what changed."""
        spec = self.topology.spec
        for m in manifests:
            if m.kind not in MUTABLE_KINDS:
                raise LabError(f"{m.kind} {m.metadata.namespace}/{m.metadata.name}: only {', '.join(MUTABLE_KINDS)} can change in a running lab; put {m.kind}s in the lab spec")
        keys = {object_key(m) for m in manifests}
        kept = [m for m in spec.manifests if object_key(m) not in keys]
        self.replace_spec(spec.model_copy(update={"manifests": kept + list(manifests)}))
        self.write_cluster_zones(wait=any(m.kind == "Service" for m in manifests))
        self.apply_rules()
        self.save()
        return [f"{m.kind.lower()}/{m.metadata.name} ({m.metadata.namespace}) configured" for m in manifests]

    def delete(self, kind: str, namespace: str, name: str) -> str:
        """Delete a Service or NetworkPolicy, as `kubectl delete` would."""
        kind = KIND_NAMES.get(kind.lower(), kind)
        spec = self.topology.spec
        kept = [m for m in spec.manifests if object_key(m) != (kind, namespace, name)]
        if len(kept) == len(spec.manifests):
            raise LabError(f"{kind} {namespace}/{name} not found in lab {self.name!r}")
        if kind not in MUTABLE_KINDS:
            raise LabError(f"{kind}s cannot be deleted from a running lab")
        self.replace_spec(spec.model_copy(update={"manifests": kept}))
        self.write_cluster_zones(wait=kind == "Service")
        self.apply_rules()
        self.save()
        return f"{kind.lower()}/{name} ({namespace}) deleted"

    def replace_spec(self, spec: LabSpec) -> None:
        """Adopt `spec` (same pods) as the lab's; callers rewrite what it changes."""
        topology = build_topology(spec, self.name)
        if [p.model_dump() for p in topology.pods] != [p.model_dump() for p in self.topology.pods]:
            raise LabError("this change would move pods; pods are fixed while a lab runs")
        self.topology = topology
        self.save()

    def restart(self, role: str) -> None:
        """Stop a DNS server and start it again on its (possibly new) Corefile."""
        old = self.process(role)
        netns.kill_all([old.pid, old.stamper_pid])
        self.processes.remove(old)
        wait_listening([self._spawn(role, old.netns, Path(old.corefile))], self)
        self.save()

    # --- queries about a running lab ---------------------------------------

    def pod(self, ref: str, namespace: str = "default") -> PodInfo:
        """The pod `ref` names: `pod/NAME`, `NAME` or `NS/NAME`, in `namespace` unless given."""
        name = ref.removeprefix("pod/")
        key = name if "/" in name else f"{namespace}/{name}"
        try:
            return self.topology.pod(key)
        except KeyError:
            known = ", ".join(p.key for p in self.topology.pods)
            raise LabError(f"pod {key} is not in lab {self.name!r} (pods: {known})") from None

    def process(self, role: str) -> Process:
        return next(p for p in self.processes if p.role == role)

    def status(self) -> dict:
        t = self.topology
        return {
            "name": self.name,
            "dir": str(self.dir),
            "coredns": self.coredns,
            "nodes": [n.model_dump() for n in t.nodes],
            "pods": [
                {"pod": p.key, "ip": p.ip, "node": p.node, "netns": p.netns, "coredns_replica": p.coredns_replica}
                for p in t.pods
            ],
            "services": [
                {"service": s.key, "type": s.type, "cluster_ip": s.cluster_ip or "None",
                 "endpoints": sorted({f"{e.ip}:{e.port}" for port in s.ports for e in port.endpoints})}
                for s in t.services
            ],
            "processes": [{**vars(p), "running": netns.alive(p.pid)} for p in self.processes],
            "upstream": {"ip": t.upstream_ip, "netns": t.upstream_netns, "zones": sorted(t.spec.upstreamZones)},
            "nodelocal_ip": t.nodelocal_ip,
        }


MUTABLE_KINDS = ("Service", "NetworkPolicy")
KIND_NAMES = {"svc": "Service", "service": "Service", "netpol": "NetworkPolicy", "networkpolicy": "NetworkPolicy",
              "pod": "Pod", "namespace": "Namespace", "ns": "Namespace"}


def host_veth(pod: PodInfo) -> str:
    """The node-side veth name of a pod, like a CNI's `veth<hash>` (15 characters at most)."""
    import zlib

    return f"veth{zlib.crc32(pod.key.encode()):08x}"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def write_netns_file(netns_name: str, name: str, text: str) -> None:
    directory = ETC_NETNS / netns_name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


def listening_on_53(pid: int) -> bool:
    """Whether the process's namespace has a UDP socket bound to port 53 (no query sent, like a probe)."""
    for table in ("udp", "udp6"):  # Go binds [::]:53 dual-stack, which shows in udp6
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return False
        if any(row.split()[1].endswith(":0035") for row in rows):
            return True
    return False


def wait_listening(processes: list[Process], lab: Lab) -> None:
    """Wait until every CoreDNS listens on port 53; a CoreDNS that exits raises with its log."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(processes)
    while pending:
        for p in list(pending):
            if not netns.alive(p.pid):
                time.sleep(0.1)  # let the stamper write the last lines
                tail = Path(p.log).read_text(errors="replace")[-2000:] if Path(p.log).exists() else ""
                raise LabError(f"CoreDNS {p.role} exited at start-up (Corefile {p.corefile}):\n{tail}")
            if listening_on_53(p.pid):
                pending.remove(p)
        if pending and time.monotonic() > deadline:
            raise LabError(f"CoreDNS {', '.join(p.role for p in pending)} not listening after {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.01)


# --- finding and removing labs ---------------------------------------------


def running_labs() -> list[str]:
    """Names of labs with a state directory."""
    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.name for p in RUN_ROOT.iterdir() if p.is_dir())


def stale_objects(prefix: str = PREFIX) -> dict[str, list]:
    """What carries `prefix` on this machine: namespaces, /etc/netns entries, processes."""
    names = netns.list_netns(prefix)
    inodes = set()
    for n in names:
        try:
            inodes.add(netns.netns_inode(n))
        except OSError:
            continue
    name = prefix.removeprefix(PREFIX).rstrip("-")
    lab_dir = f"{RUN_ROOT / name}/" if name else f"{RUN_ROOT}/"
    etc = sorted(p.name for p in ETC_NETNS.glob(f"{prefix}*")) if ETC_NETNS.is_dir() else []
    pids = set(netns.pids_in(inodes)) | set(netns.pids_with_arg(lab_dir))
    return {"netns": names, "etc_netns": etc, "pids": sorted(pids)}


def lab_owner(name: str) -> dict | None:
    """The owner recorded in lab `name`'s state (None: the user's lab, or no readable state)."""
    try:
        owner = json.loads((RUN_ROOT / name / "state.json").read_text()).get("owner")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, dict) and "pid" in owner else None


def sweep_orphans() -> list[tuple[str, int]]:
    """Remove the labs whose owning process died without tearing them down; (lab, pid) of each."""
    orphans = [(name, int(owner["pid"])) for name in running_labs()
               if (owner := lab_owner(name)) is not None and not owner_alive(owner)]
    for name, _ in orphans:
        teardown(name)
    return orphans


def teardown_all(force: bool = False) -> tuple[dict[str, list], list[tuple[str, int]]]:
    """Every lab but those a live process owns (all of them with `force`), and the debris of labs that have
    no state left; returns what was removed and (lab, owner pid) of each lab kept."""
    kept = [] if force else [(name, int(owner["pid"])) for name in running_labs() if owner_alive(owner := lab_owner(name))]
    if not kept:
        return teardown(None), []
    keep = {name for name, _ in kept}
    debris = {n.removeprefix(PREFIX).split("-", 1)[0] for n in netns.list_netns(PREFIX)}
    removed: dict[str, list] = {"netns": [], "etc_netns": [], "pids": [], "labs": []}
    for name in sorted((set(running_labs()) | debris) - keep):
        for what, items in teardown(name).items():
            removed[what] += items
    return removed, kept


def teardown(name: str | None) -> dict[str, list]:
    """Remove lab `name` (every lab when None); returns what was removed."""
    prefix = f"{PREFIX}{name}-" if name else PREFIX
    found = stale_objects(prefix)
    netns.kill_all(found["pids"])
    netns.delete_netns(found["netns"])
    for entry in found["etc_netns"]:
        shutil.rmtree(ETC_NETNS / entry, ignore_errors=True)
    dirs = [RUN_ROOT / name] if name else [RUN_ROOT / n for n in running_labs()]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return {**found, "labs": [d.name for d in dirs]}


def resolve_lab_name(name: str | None) -> str:
    """`name`, or the only running lab's name; errors say which labs exist."""
    if name:
        return name
    labs = running_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is up: `dnscorrelate lab up` first")
    raise LabError(f"several labs are up ({', '.join(labs)}): choose one with --lab NAME")
