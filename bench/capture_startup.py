"""Capture start-up: loading the tracer (bcc compiling it, or libbpf loading the CO-RE object), then attaching
it to every namespace of a lab.

    sudo .venv/bin/python bench/capture_startup.py [--pods N] [--runs R] [--tracer bcc|core]

Prints the figures; asserts nothing. Each run is a fresh process, since the
tracer is loaded once per process. `--tracer core` compiles the object first
(bpf/build.sh, into a temporary directory; not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_RUN = """
import json, time
from dnscorrelate.cluster.lab.runtime import Lab
from dnscorrelate.cluster.lab.capture import lab_targets
from dnscorrelate.live.capture import Capture
lab = Lab.load({name!r})
started = time.monotonic()
capture = Capture(lab_targets(lab))
capture.start()
total = time.monotonic() - started
capture.stop()
print(json.dumps({{"compile": capture.compile_seconds, "attach": capture.attach_seconds, "total": total, "namespaces": len(capture.vantages)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=0, help="extra pods in the lab (default: the default lab)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tracer", choices=("bcc", "core"), default="bcc", help="how each run loads the tracer")
    args = parser.parse_args()
    objects = tempfile.mkdtemp(prefix="dnsc-tracer-")
    if args.tracer == "core":
        subprocess.run([str(Path(__file__).resolve().parents[1] / "bpf" / "build.sh"), objects], check=True, stdout=subprocess.DEVNULL)
    env = {**os.environ, "DNSCORRELATE_TRACER": args.tracer, "DNSCORRELATE_TRACER_DIR": objects}

    from dnscorrelate.cluster.lab.runtime import Lab, teardown
    from dnscorrelate.cluster.spec import Source, load_spec, merge, validate

    extra = [{"kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "demo"}} for i in range(args.pods)]
    spec = merge(load_spec(), validate({"manifests": extra}, Source("bench", None)))
    lab = Lab.up(spec, "benchstart")
    try:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", ONE_RUN.format(name=lab.name)], capture_output=True, text=True,
                                 check=True, env=env)
            runs.append(json.loads(out.stdout))
    finally:
        teardown(lab.name)
    namespaces = runs[0]["namespaces"]
    for key in ("compile", "attach", "total"):
        values = [r[key] for r in runs]
        print(f"{key:8s} median {statistics.median(values) * 1000:8.1f} ms   min {min(values) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms")
    per_ns = statistics.median(r["attach"] for r in runs) / namespaces * 1e6
    print(f"tracer {args.tracer}, namespaces {namespaces}, attach per namespace {per_ns:.0f} us, runs {len(runs)}")


if __name__ == "__main__":
    main()
