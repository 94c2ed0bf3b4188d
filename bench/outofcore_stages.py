"""Where `correlate --events DIR/` spends its time and memory out of core, stage by stage.

    .venv/bin/python bench/outofcore_stages.py DIR [--rss-log FILE]

DIR is a capture directory (`capture --agent -o DIR/`, or `bench/correlate_fleet.py --keep`'s DIR/SIZE). The
out-of-core path (correlate/outofcore.py, diagnose/windows.py) runs in this process with its stages wrapped:
each stage's own wall time (a stage inside another counts in both), calls, and the most RSS seen while it ran,
sampled every --every seconds by a thread (so a peak shorter than that can be missed: VmHWM at the end is the
true peak). --rss-log writes every sample (seconds, RSS MB, peak MB, the innermost stages) to follow RSS over
time. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnscorrelate import analysis, events  # noqa: E402
from dnscorrelate.correlate import outofcore, spilled  # noqa: E402
from dnscorrelate.diagnose import windows  # noqa: E402

from correlate_fleet import peak_rss_mb, status_mb  # noqa: E402

STAGES = {  # owner, functions: each call is a stage
    outofcore: ("estimate_clocks", "write_parts", "control_rows", "read_part", "correlate", "numbered_legs", "own_lookups",
                "trimmed", "merged", "window_tables", "uncertain_segments_hidden"),
    spilled.Spilled: ("kept", "sort_into_windows", "capture_ends", "ends_of", "window"),
    windows.WindowedDiagnosis: ("add", "analysis"),
}
GENERATORS = {outofcore: ("leg_slices",)}  # each step of the generator is a stage


class Stages:
    """The stages running now (a stack), and each one's time, calls and most RSS seen."""

    def __init__(self) -> None:
        self.running = ["start"]
        self.seconds, self.calls, self.most_rss = Counter(), Counter(), Counter()

    def timed(self, name: str, step):
        self.running.append(name)
        self.calls[name] += 1
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.running.pop()

    def wrap(self, owner, function: str) -> None:
        original, name = getattr(owner, function), f"{short(owner)}.{function}"
        setattr(owner, function, lambda *args, **kwargs: self.timed(name, lambda: original(*args, **kwargs)))

    def wrap_generator(self, owner, function: str) -> None:
        original, name, done = getattr(owner, function), f"{short(owner)}.{function}", object()

        def stepped(*args, **kwargs):
            steps = original(*args, **kwargs)
            while (item := self.timed(name, lambda: next(steps, done))) is not done:
                yield item

        setattr(owner, function, stepped)


def short(owner) -> str:
    """`outofcore`, `Spilled`: a module's or class's name without its package."""
    return owner.__name__.rsplit(".", 1)[-1]


def sample(stages: Stages, every: float, log, started: float) -> None:
    while True:
        rss = round(status_mb("VmRSS"))
        for name in list(stages.running):
            stages.most_rss[name] = max(stages.most_rss[name], rss)
        if log:
            log.write(f"{time.perf_counter() - started:.0f}\t{rss}\t{round(peak_rss_mb())}\t{'/'.join(stages.running[-3:])}\n")
            log.flush()
        time.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--rss-log", help="every sample, tab-separated: seconds, RSS MB, peak MB, stages")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between RSS samples")
    args = parser.parse_args()
    stages = Stages()
    for owner, functions in STAGES.items():
        for function in functions:
            stages.wrap(owner, function)
    for owner, functions in GENERATORS.items():
        for function in functions:
            stages.wrap_generator(owner, function)
    started = time.perf_counter()
    log = open(args.rss_log, "w") if args.rss_log else None
    threading.Thread(target=sample, args=(stages, args.every, log, started), daemon=True).start()
    directory = Path(args.directory)
    result = analysis.analyze_files(events.capture_files(directory), None, None, events.capture_dir_stats(directory))
    stats = result.correlation.stats
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_rss_mb()),
                      "traces": stats["traces"], "parts": stats.get("parts"), "windows": stats.get("windows", 1),
                      "findings": [f"{f.code}:{f.count}" for f in result.findings]}))
    print(f"{'stage':38} {'seconds':>9} {'calls':>6} {'most RSS seen':>14}")
    for name, seconds in stages.seconds.most_common():
        print(f"{name:38} {seconds:9.1f} {stages.calls[name]:6d} {stages.most_rss[name]:>11} MB")


if __name__ == "__main__":
    main()
