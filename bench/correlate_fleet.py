"""A whole-cluster capture of a fleet: `correlate --events DIR` (out of core) against the in-memory pandas path.

    .venv/bin/python bench/correlate_fleet.py [--nodes 100] [--events 1000000 10000000] [--in-memory-up-to 10000000]
                                              [--keep DIR] [--reuse] [--source tests/fixtures/healthy]

A simulated `capture --agent -o DIR/`: one Parquet file per node, as the agents' streams write them. A lab
recording (every packet of a set of lookups, at the pod, its node, the CoreDNS replicas and the upstream)
is replicated: copy g runs on node g mod N, its client pod and node sightings timed by that node's clock
and named `NS/POD-g` and `node-N`; its CoreDNS sightings by the node its replica runs on (node-0, node-1),
the upstream's by its own host. Each copy has its own client address, ports and DNS ids, the copies are
2 ms apart per node (5k lookups a second on each node at 100 nodes: the issue's whole-cluster hour, in
seconds), and every node's clock is off by a fixed amount drawn in +-5 ms. Files are written with pyarrow
a chunk at a time (memory bounded by the chunk, not the size).

Each size is then correlated in a fresh process per path, so peak RSS (VmHWM) is that run's alone: the
out-of-core path (correlate/outofcore.py) and, up to --in-memory-up-to, today's path (every file in one
pandas frame). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SPACING_NS = 2_000_000  # between copies on one node
CHUNK_COPIES = 5_000  # copies of the recording per row group (about 500k events with the healthy recording)
SERVER_NODES = ("node-0", "node-1")  # where the CoreDNS replicas run


def peak_rss_mb() -> float:
    """VmHWM of this process, MB."""
    return status_mb("VmHWM")


def status_mb(field: str) -> float:
    """A memory field of this process's /proc status (VmRSS, VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def client_ips(copies: np.ndarray) -> np.ndarray:
    """A distinct pod address for each copy."""
    return np.array([f"10.{100 + g // 60000}.{(g // 250) % 240}.{g % 250 + 2}" for g in copies], dtype=object)


def with_copies(column: pd.Series, n_copies: int, replace_code: int | None, extra: list[str], extra_index: np.ndarray,
                override: np.ndarray | None = None) -> pd.Categorical:
    """A categorical column tiled `n_copies` times, built from codes (no string per row): rows whose code is
    `replace_code` (or where `override`) take `extra[extra_index]` instead."""
    base = column.astype(str).astype("category")
    categories = list(base.cat.categories)
    known = {c: i for i, c in enumerate(categories)}
    for value in extra:
        if value not in known:
            known[value] = len(categories)
            categories.append(value)
    extra_codes = np.array([known[v] for v in extra], dtype=np.int64)
    codes = np.tile(base.cat.codes.to_numpy().astype(np.int64), n_copies)
    swap = override if override is not None else (codes == known[replace_code] if replace_code in known else np.zeros(len(codes), bool))
    codes = np.where(swap, extra_codes[np.clip(extra_index, 0, len(extra_codes) - 1)], codes)
    return pd.Categorical.from_codes(codes, categories=categories)


def fleet_chunk(base: pd.DataFrame, copies: np.ndarray, node: str, skews: dict[str, int], pod_ip: str, nodes: int) -> pd.DataFrame:
    """The recording once for each copy in `copies` (all on `node`), with its own addresses, ports, ids and clocks."""
    n, k = len(base), len(copies)
    g = np.repeat(copies, n)
    copy_index = np.repeat(np.arange(k), n)
    frame = pd.DataFrame({c: np.tile(base[c].to_numpy(), k) for c in base.columns if not isinstance(base[c].dtype, pd.CategoricalDtype)})
    role = np.tile(base["role"].astype(str).to_numpy(), k)
    vantage = np.tile(base["vantage"].astype(str).to_numpy(), k)
    client_side = np.tile(((base["src_ip"].astype(str) == pod_ip) | (base["dst_ip"].astype(str) == pod_ip)).to_numpy(), k)
    server, upstream = role == "coredns", role == "upstream"
    # the recording's one node also forwards CoreDNS's queries upstream (masquerade): the replicas' node does that
    forwarding_node = (role == "node") & ~client_side
    replica_node = np.where(np.char.endswith(vantage.astype("U"), "-1"), SERVER_NODES[1], SERVER_NODES[0])
    clock = np.where(server, replica_node, np.where(upstream, "upstream", np.where(forwarding_node, SERVER_NODES[0], node)))
    for c in base.columns:
        if isinstance(base[c].dtype, pd.CategoricalDtype) and c not in ("src_ip", "dst_ip", "vantage", "node"):
            frame[c] = pd.Categorical.from_codes(np.tile(base[c].cat.codes.to_numpy(), k), dtype=base[c].dtype)
    ips = client_ips(copies)
    for c in ("src_ip", "dst_ip"):
        frame[c] = with_copies(base[c], k, pod_ip, ips, copy_index)
    pods = [f"demo/mypod-{c}" for c in copies]
    frame["vantage"] = with_copies(base["vantage"], k, None, pods + [node, SERVER_NODES[0]],
                                   np.where(role == "pod", copy_index, np.where(forwarding_node, k + 1, k)),
                                   override=(role == "pod") | (role == "node"))
    frame["node"] = pd.Categorical(clock)
    frame["ts_ns"] = frame["ts_ns"].to_numpy() + (g // nodes) * SPACING_NS + pd.Series(clock).map(skews).to_numpy(dtype=np.int64)
    frame["dns_id"] = ((frame["dns_id"].to_numpy().astype(np.int64) + g * 7) % 65536).astype(np.int32)
    for c in ("src_port", "dst_port"):
        values = frame[c].to_numpy().astype(np.int64)
        frame[c] = np.where(values == 53, 53, 1024 + (values + g * 13) % 64000).astype(np.int32)
    return frame[list(base.columns)]


def generate(directory: Path, source: Path, size: int, nodes: int, seed: int = 22) -> dict:
    """`size` events over `nodes` node files; returns what was made (the clocks' skews included)."""
    from dnscorrelate import events

    base, _ = events.load(source / "events.parquet")
    base = base[base["kind"].astype(str) == "dns"].reset_index(drop=True)  # the agents' DNS rows
    pod_ip = str(base.loc[base["role"].astype(str) == "pod", "src_ip"].iloc[0])
    rng = np.random.default_rng(seed)
    names = [f"node-{i}" for i in range(nodes)]
    skews = {n: int(rng.integers(-5_000_000, 5_000_001)) for n in names}
    skews["upstream"] = 0
    copies_total = -(-size // len(base))
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    writer = events.NodeParquetDir(directory)
    written = 0
    for first in range(0, copies_total, CHUNK_COPIES * nodes):
        block = np.arange(first, min(first + CHUNK_COPIES * nodes, copies_total))
        for i, node in enumerate(names):
            mine = block[block % nodes == i]
            if len(mine):
                chunk = fleet_chunk(base, mine, node, skews, pod_ip, nodes)
                writer.write(chunk)
                written += len(chunk)
                del chunk
    writer.close({"packets": written})
    made = {"events": written, "nodes": nodes, "copies": int(copies_total), "source": str(source),
            "seconds": round(time.perf_counter() - started, 1), "skews_ms": {n: skews[n] / 1e6 for n in names}}
    (directory / "fleet.json").write_text(json.dumps(made))
    return made


def run_path(path: str, directory: Path, part_rows: int | None) -> dict:
    """Correlate and diagnose the directory by one path, in this (fresh) process."""
    from dnscorrelate import events
    from dnscorrelate.analysis import analyze, analyze_files

    started = time.perf_counter()
    if path == "in-memory":
        frame, stats = events.load_dir(directory)
        result = analyze(frame, None, None, stats)
    else:
        result = analyze_files(events.capture_files(directory), None, None, events.capture_dir_stats(directory), part_rows=part_rows)
    elapsed = time.perf_counter() - started
    traces = result.correlation.traces  # every lookup, or where the diagnosis ran in windows, those its findings cite
    clocks = result.correlation.stats.get("clocks", {}).get("nodes", {})
    truth = json.loads((directory / "fleet.json").read_text())["skews_ms"]
    reference = result.correlation.stats.get("clocks", {}).get("reference", "")
    errors = [abs(c["offset_ms"] - (truth[n] - truth.get(reference, 0))) for n, c in clocks.items() if n in truth]
    return {"path": path, "seconds": round(elapsed, 1), "peak_rss_mb": round(peak_rss_mb()),
            "traces": int(result.correlation.stats["traces"]), "windows": result.correlation.stats.get("windows", 1),
            "findings": [f"{f.code}:{f.count}" for f in result.findings],
            "parts": result.correlation.stats.get("parts", 1),
            "largest_part": result.correlation.stats.get("largest_part"),  # events held at once (out of core)
            "duckdb_retries": result.correlation.stats.get("duckdb_retries", 0),
            "clock_error_ms_max": round(max(errors), 4) if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--events", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--in-memory-up-to", type=int, default=10_000_000, help="largest size also run in one pandas frame")
    parser.add_argument("--source", default=str(ROOT / "tests/fixtures/healthy"))
    parser.add_argument("--keep", help="generate into DIR/SIZE (kept) instead of a temporary directory")
    parser.add_argument("--reuse", action="store_true", help="with --keep: use DIR/SIZE when it was generated already")
    parser.add_argument("--part-rows", type=int, help="events per part (default: outofcore.PART_ROWS)")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_path(args.one[0], Path(args.one[1]), args.part_rows)))
        return
    import tempfile

    keep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dnsc-fleet-"))
    print(f"{'events':>11} {'nodes':>5} {'path':>11} {'seconds':>8} {'peak RSS':>9} {'traces':>9} {'parts':>5} {'largest':>9} {'retries':>7} "
          f"{'windows':>7}  clock error  findings")
    for size in args.events:
        directory = keep / str(size)
        if not (args.reuse and (directory / "fleet.json").exists()):
            shutil.rmtree(directory, ignore_errors=True)
            made = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                                   f"import correlate_fleet as f, json; from pathlib import Path; "
                                   f"print(json.dumps(f.generate(Path({str(directory)!r}), Path({args.source!r}), {size}, {args.nodes})))"],
                                  capture_output=True, text=True, check=True, cwd=ROOT)
            info = json.loads(made.stdout.strip().splitlines()[-1])
            print(f"# generated {info['events']} events on {info['nodes']} nodes in {info['seconds']} s "
                  f"({sum(p.stat().st_size for p in directory.glob('*.parquet')) / 1e6:.0f} MB of Parquet)", flush=True)
        paths = ["out-of-core"] + (["in-memory"] if size <= args.in_memory_up_to else [])
        for path in paths:
            command = [sys.executable, __file__, "--one", path, str(directory)] + (["--part-rows", str(args.part_rows)] if args.part_rows else [])
            out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(f"{size:>11} {args.nodes:>5} {path:>11}  failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{size:>11} {args.nodes:>5} {path:>11} {r['seconds']:>8} {r['peak_rss_mb']:>6} MB {r['traces']:>9} {r['parts']:>5} "
                  f"{r['largest_part'] or '':>9} {r['duckdb_retries']:>7} {r['windows']:>7}  "
                  f"{r['clock_error_ms_max']} ms  {' '.join(r['findings'])}", flush=True)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
