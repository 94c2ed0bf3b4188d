"""Peak memory of `dnscorrelate correlate` at 1M inputs, per output format (issue 13: under 2 GB each).

    .venv/bin/python bench/memory.py [--size 1000000] [--keep DIR] [--inputs events logs] [--outputs table json]

Two inputs of SIZE each: packet events (a real lab capture, tests/fixtures/healthy,
replicated with distinct clients, ports, ids and times, as bench/correlate_scale.py
does), and CoreDNS `log` lines (real lines of that fixture's format, each with its
own client port, id and time). Each command runs in a fresh process under
/usr/bin/time; peak RSS is that process's maximum resident set. Output goes to
/dev/null. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def make_events(path: Path, size: int) -> None:
    from correlate_scale import replicate

    from dnscorrelate import events

    frame, _ = events.load(ROOT / "tests/fixtures/healthy/events.parquet")
    events.save(replicate(frame, size), path, {})


def make_log(path: Path, size: int) -> None:
    """SIZE CoreDNS log lines like kubectl logs --timestamps, a microsecond apart, with ports and ids cycling."""
    start = np.datetime64("2026-11-22T02:20:00", "ns")
    i = np.arange(size)
    stamps = np.datetime_as_string(start + i * 1000, unit="ns")
    names = ["web.demo.svc.cluster.local.", "example.com.", "nosuch.demo.svc.cluster.local.", "kubernetes.io."]
    with path.open("w") as out:
        for k in range(0, size, 100_000):
            chunk = range(k, min(size, k + 100_000))
            out.writelines(
                f'{stamps[j]}Z [INFO] 10.244.{(j >> 16) & 255}.{(j >> 8) & 255 or 1}:{1024 + j % 60000} - {j % 65536} '
                f'"A IN {names[j % 4]} udp 56 false 1232" NOERROR qr,aa,rd 106 0.000{j % 900 + 100}s\n'
                for j in chunk)


def peak(cmd: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of `cmd` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    kb = int(done.stderr.strip().splitlines()[-1])
    return elapsed, kb / 1024, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--keep", help="Keep (or reuse) the generated inputs in this folder.")
    parser.add_argument("--outputs", nargs="*", default=["table", "json"])
    parser.add_argument("--inputs", nargs="*", choices=["events", "logs"], default=["events", "logs"])
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="dnsc-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    events_path, log_path = folder / f"events-{args.size}.parquet", folder / f"coredns-0-{args.size}.log"
    if "events" in args.inputs and not events_path.exists():
        make_events(events_path, args.size)
    if "logs" in args.inputs and not log_path.exists():
        make_log(log_path, args.size)
    tool = [sys.executable, "-m", "dnscorrelate", "correlate"]
    print(f"{'input':<28} {'output':<7} {'seconds':>8} {'peak RSS':>10} exit")
    runs = {"events": (f"{args.size:,} packet events", ["--events", str(events_path)]),
            "logs": (f"{args.size:,} CoreDNS log lines", ["--coredns-log", str(log_path)])}
    for label, inputs in (runs[name] for name in args.inputs):
        for output in args.outputs:
            seconds, mb, code = peak([*tool, *inputs, "-o", output])
            print(f"{label:<28} {output:<7} {seconds:>8.1f} {mb:>7.0f} MB {code}", flush=True)


if __name__ == "__main__":
    main()
