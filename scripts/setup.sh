#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root): system packages,
# the kernel-header link bcc needs, the project venv, and the pinned CoreDNS.
# (The CO-RE tracer object is compiled by `make cluster` or a test, not here: bpf/build.sh.)
# Each step checks first and does nothing when already done, so `make test`
# stays fast on a machine that is set up.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup: must run as root (network namespaces, nftables, eBPF)" >&2; exit 1; }

# 1. Debian packages. bcc comes from Debian (python3-bpfcc) and needs kernel
#    headers; clang and libbpf-dev compile the same tracer ahead of time into the
#    CO-RE object the node agent loads with libbpf1 (bpf/build.sh; the lab tests
#    load both builds); dig is a real resolver pods use; chromium renders the HTML
#    reports in a test; tshark and dnstap-ldns are the reference decoders the pcap
#    and dnstap readers are checked against.
packages=(python3-bpfcc linux-headers-amd64 clang libbpf-dev libbpf1 nftables iproute2 dnsutils python3-venv procps chromium tshark dnstap-ldns)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. bcc compiles against /lib/modules/$(uname -r)/build. This kernel ships no
#    headers package of its own; Debian's -amd64 headers serve a socket filter.
moddir=/lib/modules/$(uname -r)
if [ ! -e "$moddir/build/Makefile" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  common=${hdr%-amd64}-common
  if [ -n "$hdr" ] && [ -d "$common" ]; then
    log "linking kernel headers $hdr for bcc"
    mkdir -p "$moddir"
    ln -sfn "$hdr" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
  else
    log "warning: no Debian kernel headers found; eBPF capture will be unavailable"
  fi
fi

# 3. The venv sees Debian's site-packages so `import bcc` works.
stamp=.setup/venv.$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ ! -e "$stamp" ]; then
  log "creating .venv and installing dnscorrelate"
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  mkdir -p .setup && rm -f .setup/venv.* && touch "$stamp"
fi

# 4. CoreDNS, pinned, rebuilt only when its sources changed.
make -s -C coredns
