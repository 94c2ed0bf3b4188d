#!/usr/bin/env bash
# bpf/build.sh OUTDIR: compiles dns_trace.c once, ahead of time, into OUTDIR/dns_trace-KEY.bpf.o, a
# CO-RE object that libbpf loads (dnscorrelate/live/bpf.py, DNSCORRELATE_TRACER=core) with no kernel
# headers on the machine that runs it. KEY is the source's SHA-256 (12 hex digits): the loader looks for
# the object of the very source it ships, so a changed dns_trace.c is never run with an older object.
# Needs clang and libbpf's headers (Debian: clang, libbpf-dev); prints the object's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out_dir=${1:?usage: bpf/build.sh OUTDIR}
key=$(sha256sum "$here/dns_trace.c" | cut -c1-12)
object=$out_dir/dns_trace-$key.bpf.o
if [ ! -s "$object" ]; then
  command -v clang >/dev/null || { echo "bpf/build.sh: clang is missing (Debian: apt-get install clang libbpf-dev)" >&2; exit 1; }
  [ -e /usr/include/bpf/bpf_helpers.h ] || { echo "bpf/build.sh: libbpf's headers are missing (Debian: apt-get install libbpf-dev)" >&2; exit 1; }
  mkdir -p "$out_dir"
  # The packet headers are the build machine's UAPI ones (wire formats; the same on every kernel); the
  # program reads only __sk_buff, which the verifier rewrites for the running kernel. -g keeps the BTF
  # that libbpf needs for the maps' layout.
  clang -O2 -g -target bpf -DDNSC_LIBBPF -I"/usr/include/$(uname -m)-linux-gnu" -Wall -Werror \
    -c "$here/dns_trace.c" -o "$object.tmp"
  mv "$object.tmp" "$object"
fi
echo "$object"
