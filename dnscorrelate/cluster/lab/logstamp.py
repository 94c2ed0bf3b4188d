"""Prefix each line read on stdin with its receive time, as `kubectl logs --timestamps` does.

Run by the lab as the reader end of each CoreDNS process's stdout:
    python -m dnscorrelate.cluster.lab.logstamp OUTFILE
Lines are written and flushed as they arrive, so a reader never waits on a buffer.
"""

import sys
import time


def rfc3339_nano(ns: int) -> bytes:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % nanos


def main() -> None:
    with open(sys.argv[1], "ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(rfc3339_nano(time.time_ns()) + b" " + line)


if __name__ == "__main__":
    main()
