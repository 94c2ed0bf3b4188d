"""DuckDB or Polars for the out-of-core passes: the clocks' aggregate and the partitioned write, over a capture
directory `bench/correlate_fleet.py --keep DIR` made.

    .venv/bin/python bench/outofcore_engines.py DIR [--parts 5]

Each engine runs both passes of correlate/outofcore.py (the same SQL the package runs for DuckDB; the same
steps as lazy frames for Polars, collected with its streaming engine) in a fresh process, so peak RSS
(VmHWM) is its own. Prints seconds, peak RSS and the per-pair bounds each found (they must agree); asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["cip", "cport", "dns_id", "proto"]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def with_duckdb(files: list[Path], parts: int, out: Path) -> dict:
    from dnscorrelate.correlate import outofcore

    started = time.perf_counter()
    con = outofcore.connect(out / "spill")
    outofcore.events_view(con, files, {}, True)
    clocks, _ = outofcore.estimate_clocks(con)
    aggregate = time.perf_counter() - started
    outofcore.offsets_table(con, clocks)
    outofcore.write_parts(con, out / "parts", parts)
    return {"aggregate_s": round(aggregate, 1), "partition_s": round(time.perf_counter() - started - aggregate, 1),
            "offsets": {n: o for n, (o, _) in sorted(clocks.offsets.items())[:3]}}


def with_polars(files: list[Path], parts: int, out: Path) -> dict:
    import polars as pl

    from dnscorrelate.correlate.clocks import EXCHANGE_WINDOW_NS, solve

    started = time.perf_counter()
    lf = pl.scan_parquet([str(f) for f in files])
    node = pl.col("node").cast(pl.String)
    counts = dict(lf.filter(node != "").group_by(node).agg(pl.len()).collect(engine="streaming").iter_rows())
    qr = pl.col("qr")
    d = lf.filter((pl.col("kind").cast(pl.String) == "dns") & (node != "")).select(
        cip=pl.when(qr).then(pl.col("dst_ip").cast(pl.String)).otherwise(pl.col("src_ip").cast(pl.String)),
        cport=pl.when(qr).then(pl.col("dst_port")).otherwise(pl.col("src_port")),
        dns_id=pl.col("dns_id"), proto=pl.col("proto").cast(pl.String), ts=pl.col("ts_ns"), qr=qr, node=node)
    gap = pl.col("ts").diff().over(KEYS, order_by="ts")
    d = d.with_columns(fresh=(gap.is_null() | (gap > EXCHANGE_WINDOW_NS)).cast(pl.Int64))
    d = d.with_columns(burst=pl.col("fresh").cum_sum().over(KEYS, order_by="ts"))
    firsts = d.group_by([*KEYS, "burst", "node"]).agg(q=pl.col("ts").filter(~qr).min(), r=pl.col("ts").filter(qr).min()).drop_nulls(["q", "r"])
    firsts = firsts.with_columns(span=pl.col("r") - pl.col("q"), seen_at=pl.len().over([*KEYS, "burst"]))
    firsts = firsts.with_columns(rank=pl.col("span").rank("ordinal", descending=True).over([*KEYS, "burst"]))
    outer = firsts.filter((pl.col("rank") == 1) & (pl.col("seen_at") > 1))
    inner = firsts.filter(pl.col("rank") > 1)
    bounds = inner.join(outer, on=[*KEYS, "burst"], suffix="_o").select(
        outer=pl.col("node_o"), inner=pl.col("node"), lower=pl.col("r") - pl.col("r_o"), upper=pl.col("q") - pl.col("q_o"))
    tight = bounds.group_by("outer", "inner").agg(pl.col("lower").max(), pl.col("upper").min(), n=pl.len()).collect(engine="streaming").to_pandas()
    crossings = {n: int(tight.loc[(tight["outer"] == n) | (tight["inner"] == n), "n"].sum()) for n in counts}
    clocks = solve(counts, tight.set_index(["outer", "inner"]) if len(tight) else None, crossings)
    aggregate = time.perf_counter() - started
    shifts = pl.DataFrame({"node": list(clocks.offsets), "shift": [o for o, _ in clocks.offsets.values()]})
    parted = (lf.with_columns(node=node).join(shifts.lazy(), on="node", how="left")
              .with_columns(ts_ns=pl.col("ts_ns") - pl.col("shift").fill_null(0),
                            part=(pl.struct(pl.col("qname").cast(pl.String), pl.col("qtype").cast(pl.String)).hash() % parts).cast(pl.Int32))
              .drop("shift"))
    parted.sink_parquet(pl.PartitionBy(str(out / "parts"), key="part"), mkdir=True, engine="streaming")
    return {"aggregate_s": round(aggregate, 1), "partition_s": round(time.perf_counter() - started - aggregate, 1),
            "offsets": {n: o for n, (o, _) in sorted(clocks.offsets.items())[:3]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--parts", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    files = sorted(Path(args.directory).glob("*.parquet"))
    if args.one:
        with tempfile.TemporaryDirectory(prefix="dnsc-engines-") as tmp:
            result = (with_duckdb if args.one == "duckdb" else with_polars)(files, args.parts, Path(tmp))
        print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb())}))
        return
    print(f"{'engine':>7} {'clocks pass':>12} {'partition pass':>15} {'peak RSS':>9}  first offsets (ns)")
    for engine in ("duckdb", "polars"):
        out = subprocess.run([sys.executable, __file__, args.directory, "--parts", str(args.parts), "--one", engine],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(f"{engine:>7}  failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{engine:>7} {r['aggregate_s']:>10} s {r['partition_s']:>13} s {r['peak_rss_mb']:>6} MB  {r['offsets']}")


if __name__ == "__main__":
    main()
