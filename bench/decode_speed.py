"""Decoding speed: tracer records to the packet-event table, no root needed.

    .venv/bin/python bench/decode_speed.py [--records 300000] [--distinct 1000]

Queries and responses for `distinct` names from three namespaces, repeated
to `records` records; prints the best of three runs. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnscorrelate.sources.decode import Vantage, decode  # noqa: E402
from tests.frames import query, record, response  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--distinct", type=int, default=1000)
    args = parser.parse_args()
    pairs = args.distinct // 2
    one = b"".join(
        record(query(f"n{i}.example.com.", qid=i), capture_id=1 + i % 3, ts=i)
        + record(response(f"n{i}.example.com.", qid=i), capture_id=1 + i % 3, ts=i + 5, sport=53, dport=40000)
        for i in range(pairs)
    )
    raw = one * (args.records // (2 * pairs))
    vantages = {i: Vantage(i, f"v{i}", "pod", {2: "eth0"}) for i in (1, 2, 3)}
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        frame, _ = decode(raw, vantages, 0)
        runs.append(time.perf_counter() - started)
    print(f"decode {len(frame):,} records: best {min(runs):.2f} s, {len(frame) / min(runs):,.0f} records/s")


if __name__ == "__main__":
    main()
