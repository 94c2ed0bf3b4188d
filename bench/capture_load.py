"""Capture cost and loss under real load: dnsperf from a lab pod against the kube-dns VIP, capture off and on.

    sudo .venv/bin/python bench/capture_load.py [--rates 2000 4000 8000 16000 0] [--seconds 5] [--repeat 3] [--mixes cached forwarded]
    sudo .venv/bin/python bench/capture_load.py --cpu-per-query [--tap] [--copies-side] [--full-side] [--seconds 5] [--repeat 6] [--mixes cached forwarded]
    sudo .venv/bin/python bench/capture_load.py --agent-cpu [--rates 10000] [--seconds 10] [--repeat 2]

For two mixes (cache hits: a few external names CoreDNS has cached;
forwarded: names unique to each run, so every query goes to the upstream)
and each rate (0 = as fast as dnsperf can), it runs dnsperf in --repeat
interleaved pairs, capture off then on, and prints for the median run of each
side: the qps CoreDNS achieved, CoreDNS's CPU time (all
replicas and the upstream, from /proc), the capture's own CPU (this process:
ring-buffer polling and copying; decoding happens later and is not counted),
events per second delivered, and lost samples. Prints figures; asserts
nothing. Everything shares the machine's two cores with dnsperf.

--cpu-per-query: the on/off ratio as CoreDNS's CPU per query rather than qps, which other work on the machine
moves far more than capture does. CoreDNS's processes (replicas and upstream) are pinned to core 1, dnsperf
and this process (the capture's reader) to core 0; at the maximum rate, --repeat interleaved off/on pairs
give CoreDNS CPU seconds / queries answered. The ratio off/on of the medians is the qps ratio CoreDNS would
show if its core were its limit (the tracer's own time is charged to whoever sends or receives the packet,
CoreDNS included). Load average is printed before and after: the figures mean little when it is high. With
--tap, a third side in each round: the capture's sockets in the same namespaces with a filter that keeps nothing
and no tracer, which tells the kernel's cost of the sockets themselves from the tracer's. `on` is the capture as
it runs (CoreDNS's namespaces receive-only: live/capture.py RECEIVE_ONLY_ROLES; the node skipping its copies of
what it sends into captured namespaces); with --copies-side, a side more, `copies`: the node keeping those copies;
with --full-side, another, `full`: that, and every namespace recording what it sends too.

--agent-cpu: the node agent's own CPU (`kube/agent.py`'s `Agent`, run in this process over the lab's
namespaces, its stream written to /dev/null) while dnsperf sends cache hits at --rates qps from mypod,
filtering for web-0 (`trace`'s default), which meanwhile asks 10 new names a second (a second dnsperf: each
lookup forwarded upstream, its records sent, the flood's counted and dropped), and sending every record (the
full stream), alternating, --repeat times. The lab is one node: its agent sees every hop of every
lookup, more than any one node of a cluster would.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHED = ["example.com A", "www.example.com A", "github.com A", "api.github.com A", "kubernetes.io A", "example.org A"]
TICKS = os.sysconf("SC_CLK_TCK")
PIN_DNSPERF = "--cpu-per-query" in sys.argv  # dnsperf on core 0, apart from CoreDNS


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dnsperf(netns: str, server: str, names: Path, seconds: int, rate: int) -> float:
    """Queries per second dnsperf got answered."""
    cmd = ["ip", "netns", "exec", netns, *(["taskset", "-c", "0"] if PIN_DNSPERF else []), "dnsperf", "-s", server, "-d", str(names), "-l", str(seconds), "-c", "8", "-q", "500", "-t", "2"]
    if rate:
        cmd += ["-Q", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def warm_cache(lab, directory: Path) -> Path:
    """The cache-hit names as a dnsperf file in `directory`, each asked once so CoreDNS has it cached."""
    names = directory / "cached.txt"
    names.write_text("\n".join(CACHED) + "\n")
    dnsperf(lab.pod("mypod", "demo").netns, lab.topology.cluster_dns_ip, names, 1, 1000)
    return names


# side: (CoreDNS's namespaces receive-only, the node skipping its copies into captured namespaces) of the capture
CAPTURE_SIDES = {"on": (True, True), "copies": (True, False), "full": (False, False)}


def measure(lab, names: Path, seconds: int, rate: int, capture_on: bool, tap_only: bool = False, receive_only: bool = True,
            skip_copies: bool = True) -> dict:
    from dnscorrelate.cluster.lab.capture import lab_targets
    from dnscorrelate.live.capture import Capture

    pids = [p.pid for p in lab.processes]
    pod = lab.pod("mypod", "demo")
    capture = Capture(lab_targets(lab), receive_only_servers=receive_only, skip_copies=skip_copies) if capture_on else None
    taps = bare_taps(lab_targets(lab)) if tap_only else []
    if capture:
        capture.start()
    cpu_before, own_before = cpu_seconds(pids), own_cpu()
    qps = dnsperf(pod.netns, lab.topology.cluster_dns_ip, names, seconds, rate)
    coredns_cpu = cpu_seconds(pids) - cpu_before
    for tap in taps:
        tap.close()
    result = {"qps": qps, "coredns_cpu": coredns_cpu, "capture_cpu": 0.0, "events_per_s": 0.0, "lost": 0}
    if capture:
        capture.stop()
        result["capture_cpu"] = own_cpu() - own_before
        result["events_per_s"] = capture.stats["records_received"] / seconds
        result["records_per_query"] = capture.stats["records_received"] / max(qps * seconds, 1)
        result["lost"] = capture.stats["lost_samples"]
        capture.raw.clear()
    return result


SO_ATTACH_FILTER = 26  # asm-generic/socket.h; Python's socket module does not name it


def bare_taps(targets) -> list:
    """In each namespace the capture attaches to, the socket it attaches (AF_PACKET, every protocol) with a filter
    that keeps nothing (classic BPF `ret #0`) and no tracer: what the kernel does for every packet before the
    tracer runs (on transmit, a clone of each packet for the taps)."""
    import socket
    import struct
    import ctypes as ct

    from dnscorrelate.live import nsenter
    from dnscorrelate.live.bpf import ETH_P_ALL

    keep_nothing = ct.create_string_buffer(struct.pack("<HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    program = struct.pack("<HxxxxxxQ", 1, ct.addressof(keep_nothing))  # struct sock_fprog {len; *filter}
    taps = []
    for target in targets:
        with nsenter.entered_path(target.path):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
        taps.append(sock)
    return taps


def pin(pids: list[int], core: int) -> None:
    """Every thread of these processes onto one core."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, check=True)


def cpu_per_query(lab, names_of, seconds: int, repeat: int, mix: str, tap: bool = False, full: bool = False, copies: bool = False) -> None:
    """Interleaved off/on runs at the maximum rate, CoreDNS pinned apart: CoreDNS µs per answered query each side;
    with `tap`, a side more: the capture's sockets with a filter that keeps nothing, no tracer; with `copies`, one
    more: the node keeping its copies of what it sends into captured namespaces; with `full`, one more: that and
    CoreDNS's namespaces recording what they send too (CAPTURE_SIDES)."""
    import statistics

    sides = ["off", "on", *(["tap"] if tap else []), *(["copies"] if copies else []), *(["full"] if full else [])]
    runs = []
    for attempt in range(repeat):
        run_of = {}
        for side in sides[attempt % len(sides):] + sides[:attempt % len(sides)]:  # each side goes first in turn
            receive_only, skip_copies = CAPTURE_SIDES.get(side, (True, True))
            run = measure(lab, names_of(attempt, side), seconds, 0, side in CAPTURE_SIDES, tap_only=side == "tap",
                          receive_only=receive_only, skip_copies=skip_copies)
            run_of[side] = run | {"us_per_query": run["coredns_cpu"] / max(run["qps"] * seconds, 1) * 1e6}
        runs.append(run_of)
        us = {side: run_of[side]["us_per_query"] for side in sides}
        print(f"| {mix} | {attempt + 1} | {run_of['off']['qps']:,.0f} | {run_of['on']['qps']:,.0f} | {us['off']:.1f} | {us['on']:.1f} | "
              + (f"{us['tap']:.1f} | {us['off'] / us['tap']:.3f} | " if tap else "")
              + (f"{us['copies']:.1f} | {us['off'] / us['copies']:.3f} | {run_of['copies']['records_per_query']:.2f} | " if copies else "")
              + (f"{us['full']:.1f} | {us['off'] / us['full']:.3f} | {run_of['full']['records_per_query']:.2f} | " if full else "")
              + f"{us['off'] / us['on']:.3f} | {run_of['on']['records_per_query']:.2f} | {run_of['on']['lost']} | {os.getloadavg()[0]:.1f} |", flush=True)
    median = {side: statistics.median(r[side]["us_per_query"] for r in runs) for side in sides}
    ratios = sorted(r["off"]["us_per_query"] / r["on"]["us_per_query"] for r in runs)
    print(f"{mix}: CoreDNS CPU per query, median of {repeat}: off {median['off']:.1f} µs, on {median['on']:.1f} µs: ratio "
          f"{median['off'] / median['on']:.3f} (pairs {ratios[0]:.3f}-{ratios[-1]:.3f}); goal 0.97: "
          f"{'met' if median['off'] / median['on'] >= 0.97 else 'not met'}"
          + (f"; the bare taps alone: {median['tap']:.1f} µs, ratio {median['off'] / median['tap']:.3f}, "
             f"{(median['tap'] - median['off']) / max(median['on'] - median['off'], 1e-9):.0%} of capture's cost" if tap else "")
          + (f"; the node keeping its copies (copies): {median['copies']:.1f} µs, ratio {median['off'] / median['copies']:.3f}" if copies else "")
          + (f"; every namespace recording what it sends (full): {median['full']:.1f} µs, ratio {median['off'] / median['full']:.3f}" if full else ""))


class LabDiscovery:
    """The lab's namespaces, for an agent run in this process (`kube/agent.py`'s `Agent` asks these two)."""

    errors = 0

    def __init__(self, lab) -> None:
        from dnscorrelate.cluster.lab.capture import lab_targets

        self.lab, self.lab_targets = lab, lab_targets

    def targets(self):
        return self.lab_targets(self.lab)

    def watcher(self):
        return lambda: self.lab_targets(self.lab)


def agent_cpu(lab, names: Path, seconds: int, rate: int, filtered: bool) -> dict:
    """CPU seconds of an agent capturing the lab while dnsperf runs, and what it sent."""
    import threading

    from dnscorrelate.cluster.kube.agent import Agent

    traced = lab.pod("web-0", "demo")
    with open(os.devnull, "wb") as out, tempfile.TemporaryDirectory() as tmp:
        agent = Agent(out, "node-0", discovery=LabDiscovery(lab), clients=(traced.ip,) if filtered else ())
        thread = threading.Thread(target=agent.run, args=(seconds + 3,))
        before = own_cpu()
        thread.start()
        while agent.capture is None or not agent.writer.bytes_sent:
            time.sleep(0.05)
        start_cpu = own_cpu()
        own_names = Path(tmp) / "traced.txt"
        own_names.write_text("".join(f"t{time.time_ns()}-{i}.example.org A\n" for i in range(10 * seconds + 10)))
        # its own process, so that its CPU is not the agent's
        lookups = subprocess.Popen(["ip", "netns", "exec", traced.netns, "dnsperf", "-s", lab.topology.cluster_dns_ip, "-d", str(own_names),
                                    "-l", str(seconds), "-Q", "10", "-n", "1"], stdout=subprocess.PIPE, text=True)
        qps = dnsperf(lab.pod("mypod", "demo").netns, lab.topology.cluster_dns_ip, names, seconds, rate)
        used = own_cpu() - start_cpu
        answered = re.search(r"Queries completed:\s+(\d+)", lookups.communicate()[0])
        agent.stop()
        thread.join()
    counters = agent.counters()
    return {"qps": qps, "cpu_share": used / seconds, "startup_cpu": start_cpu - before, "events": counters["events"],
            "sent": agent.writer.records_sent, "bytes": agent.writer.bytes_sent, "traced_answered": int(answered.group(1)) if answered else 0}


def median_run(runs: list[dict]) -> dict:
    """The run with the median qps (its other figures come with it)."""
    return sorted(runs, key=lambda run: run["qps"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 4000, 8000, 16000, 0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="off/on pairs per step; the median run is shown")
    parser.add_argument("--mixes", nargs="+", choices=["cached", "forwarded"], default=["cached", "forwarded"])
    parser.add_argument("--cpu-per-query", action="store_true", help="CoreDNS CPU per query off/on, pinned cores, at the maximum")
    parser.add_argument("--tap", action="store_true", help="with --cpu-per-query: a side more, the capture's sockets with no tracer")
    parser.add_argument("--full-side", action="store_true",
                        help="with --cpu-per-query: a side more, CoreDNS's namespaces not receive-only and the node keeping its copies")
    parser.add_argument("--copies-side", action="store_true",
                        help="with --cpu-per-query: a side more, the node keeping its copies of what it sends into captured namespaces")
    parser.add_argument("--agent-cpu", action="store_true", help="the node agent's CPU, filtered and full, at --rates")
    args = parser.parse_args()
    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import load_spec
    from dnscorrelate.live.bpf import tracer

    tracer()  # compile once, before any measurement
    lab = Lab.up(load_spec(), "benchload")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cached = warm_cache(lab, Path(tmp))
            if args.agent_cpu:
                print(f"load average {os.getloadavg()}")
                print("| rate | stream | qps | agent CPU (% of a core) | events seen | records sent | bytes sent | web-0's lookups answered |")
                print("| --- | --- | --- | --- | --- | --- | --- | --- |")
                for rate in args.rates:
                    for attempt in range(args.repeat):
                        for filtered in (True, False):
                            r = agent_cpu(lab, cached, args.seconds, rate, filtered)
                            print(f"| {rate or 'max'} | {'filtered' if filtered else 'full'} | {r['qps']:,.0f} | "
                                  f"{100 * r['cpu_share']:.1f} | {r['events']:,} | {r['sent']:,} | {r['bytes']:,} | {r['traced_answered']} |", flush=True)
                print(f"load average after: {os.getloadavg()}")
                return
            if args.cpu_per_query:
                pin([p.pid for p in lab.processes], 1)
                os.sched_setaffinity(0, {0})  # the capture's reader thread is started after this: it inherits core 0
                print(f"CoreDNS and the upstream on core 1; dnsperf and the capture reader on core 0; load average {os.getloadavg()}")
                tap_columns = " bare taps | off/taps |" if args.tap else ""
                copies_columns = " copies | off/copies | records/query copies |" if args.copies_side else ""
                full_columns = " full | off/full | records/query full |" if args.full_side else ""
                print(f"| mix | round | qps off | qps on | CoreDNS µs/query off | on |{tap_columns}{copies_columns}{full_columns} off/on | "
                      "records/query on | lost | load (1 min) |")
                print("| --- " * (10 + 2 * args.tap + 3 * args.copies_side + 3 * args.full_side) + "|")

                def names_of(mix):
                    def names(attempt, side):
                        if mix == "cached":
                            return cached
                        path = Path(tmp) / "fwd.txt"
                        path.write_text("".join(f"p{attempt}-{side}-{i}.example.org A\n" for i in range(300_000)))
                        return path
                    return names

                for mix in args.mixes:
                    cpu_per_query(lab, names_of(mix), args.seconds, args.repeat, mix, args.tap, args.full_side, args.copies_side)
                print(f"load average after: {os.getloadavg()}")
                return
            print(f"{'mix':9s} {'rate':>6s} | {'qps off':>8s} {'qps on':>8s} {'ratio':>6s} | {'CoreDNS CPU s off':>17s} {'on':>6s} "
                  f"| {'capture CPU s':>13s} {'us/query':>8s} {'% core':>6s} | {'events/s':>9s} {'lost':>5s}")
            for mix in args.mixes:
                for step, rate in enumerate(args.rates):
                    if mix == "cached":
                        names = cached
                    else:
                        names = Path(tmp) / f"fwd{step}.txt"
                        names.write_text("".join(f"r{step}-{i}.example.org A\n" for i in range(300_000)))
                    offs, ons = [], []
                    for attempt in range(args.repeat):  # interleaved, so drifts of this VM hit both sides
                        offs.append(measure(lab, names, args.seconds, rate, capture_on=False))
                        if mix == "forwarded":
                            names.write_text("".join(f"s{step}-{attempt}-{i}.example.org A\n" for i in range(300_000)))
                        ons.append(measure(lab, names, args.seconds, rate, capture_on=True))
                        if mix == "forwarded":
                            names.write_text("".join(f"r{step}-{attempt + 1}-{i}.example.org A\n" for i in range(300_000)))
                    off, on = median_run(offs), median_run(ons)
                    per_query = on["capture_cpu"] / max(on["qps"] * args.seconds, 1) * 1e6
                    print(f"{mix:9s} {rate or 'max':>6} | {off['qps']:>8.0f} {on['qps']:>8.0f} {on['qps'] / off['qps']:>6.2f} | "
                          f"{off['coredns_cpu']:>17.2f} {on['coredns_cpu']:>6.2f} | {on['capture_cpu']:>13.2f} {per_query:>8.1f} "
                          f"{on['capture_cpu'] / args.seconds * 100:>5.0f}% | {on['events_per_s']:>9.0f} {on['lost']:>5d}")
    finally:
        teardown(lab.name)


if __name__ == "__main__":
    main()
