#!/usr/bin/env bash
# Builds, offline and once, everything `dnscorrelate cluster up` needs: Docker,
# the kind CLI, Kubernetes and etcd as one binary, flannel, the component images kubeadm
# expects, the node image, a client image and an upstream-resolver image.
# Nothing is pulled from a registry: binaries come from the Go module proxy,
# root filesystems from Debian's packages. Every step is cached under
# $DNSCORRELATE_CACHE/kind, keyed by its inputs, so a second run costs seconds.
# Each step's time goes to build-times.tsv (bench/cluster_build.py reads it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
source "$here/versions.env"

CACHE=${DNSCORRELATE_CACHE:-/var/cache/dnscorrelate}/kind
LOGS=$CACHE/logs
mkdir -p "$CACHE/bin" "$LOGS"
rm -rf "$CACHE"/work.* "$CACHE"/*.partial.tar "$CACHE"/*.tmp  # what an interrupted run left
TIMES=$CACHE/build-times.tsv
MIN_FREE_GB=12

say() { printf '\033[1mcluster build:\033[0m %s\n' "$*" >&2; }
die() { printf 'cluster build: %s\n' "$*" >&2; exit 1; }

# step NAME ADVICE CMD...: runs CMD with its output in $LOGS/NAME.log, records
# its duration, and on failure names the step, the log and what to do.
step() {
  local name=$1 advice=$2; shift 2
  local log=$LOGS/$name.log start=$SECONDS
  say "$name ..."
  # in the background, so that `set -e` holds inside CMD (bash ignores it in an `if` condition)
  ( set -e; "$@" ) >"$log" 2>&1 &
  if ! wait $!; then
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    die "step '$name' failed (full log: $log). $advice"
  fi
  printf '%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$name" "$((SECONDS - start))" >>"$TIMES"
  say "$name done in $((SECONDS - start)) s"
}

# key FILES...: a short hash of the files' contents and the pinned versions.
key() { cat "$here/versions.env" "$@" | sha256sum | cut -c1-12; }

needs_cap_shim() { # the bounding set lacks CAP_SYS_RESOURCE (bit 24)
  local bnd; bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
  (( (16#$bnd >> 24 & 1) == 0 ))
}

[ "$(id -u)" = 0 ] || die "run as root (it installs Docker and starts dockerd)"
free_gb=$(df -Pk "$CACHE" | awk 'NR==2 {print int($4/1048576)}')
[ "$free_gb" -ge "$MIN_FREE_GB" ] || die "only ${free_gb} GB free under $CACHE; the build needs ${MIN_FREE_GB} GB. Free some space (docker system prune, old caches) and run again."
command -v go >/dev/null || die "the Go toolchain is missing (need Go >= 1.24 on PATH)"

# --- 1. Small Go tools: the pause process and the runc capability shim ------
tools_key=$(key "$here"/tools/go.mod "$here"/tools/*/main.go)
if [ ! -x "$CACHE/bin/runc-shim-$tools_key" ]; then
  build_tools() {
    cd "$here/tools"
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$CACHE/bin/pause-$tools_key" ./pause
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$CACHE/bin/runc-shim-$tools_key" ./runc-shim
  }
  step tools "Check that Go works: go version" build_tools
fi
ln -sfn "pause-$tools_key" "$CACHE/bin/pause"
ln -sfn "runc-shim-$tools_key" "$CACHE/bin/runc-shim"

# --- 2. Docker (Debian's docker.io), running --------------------------------
install_docker() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io mmdebstrap
}
command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null ||
  step docker-install "apt-get must reach Debian's mirror; try: apt-get update && apt-get install docker.io mmdebstrap" install_docker

configure_docker() { # only on a machine that lacks CAP_SYS_RESOURCE: a user's laptop keeps its Docker as it is
  install -D -m 0755 "$CACHE/bin/runc-shim" /usr/local/libexec/dnscorrelate/runc-shim
  python3 - <<'EOF'
import json, pathlib
path = pathlib.Path("/etc/docker/daemon.json")
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
config.setdefault("runtimes", {})["dnscorrelate-runc"] = {"path": "/usr/local/libexec/dnscorrelate/runc-shim"}
config["default-runtime"] = "dnscorrelate-runc"
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=2) + "\n")
EOF
}
start_docker() {
  if ! docker info >/dev/null 2>&1; then
    setsid dockerd >/var/log/dnscorrelate-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  elif needs_cap_shim && ! docker info --format '{{.DefaultRuntime}}' | grep -qx dnscorrelate-runc; then
    pkill -HUP -x dockerd  # dockerd reloads runtimes and default-runtime on SIGHUP
    sleep 1
  fi
  docker info >/dev/null
}
needs_cap_shim && configure_docker
step docker-start "dockerd did not start: see /var/log/dnscorrelate-dockerd.log" start_docker

# --- 3. The kind CLI ------------------------------------------------------------
if ! "$CACHE/bin/kind" version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
  step kind-cli "The Go module proxy must serve sigs.k8s.io/kind@$KIND_VERSION" \
    env GOBIN="$CACHE/bin" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi

# --- 4. Kubernetes + etcd, one multi-call binary (8-10 min on 2 cores) --------
kube_key=$(key "$here"/kube/go.mod "$here"/kube/go.sum "$here"/kube/main.go)
KUBE=$CACHE/bin/kube-$kube_key
if [ ! -x "$KUBE" ]; then
  build_kube() {
    local ld="-s -w" p major minor
    IFS=. read -r major minor _ <<<"${KUBE_VERSION#v}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do  # as Kubernetes' hack/lib/version.sh sets them
      ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    cd "$here/kube"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$KUBE.tmp" .
    "$KUBE.tmp" kubectl version --client | grep -q "$KUBE_VERSION"
    mv "$KUBE.tmp" "$KUBE"
  }
  step kube-binary "Building Kubernetes needs about 2.5 GB of memory and the Go module proxy" build_kube
fi
ln -sfn "$(basename "$KUBE")" "$CACHE/bin/kubectl"  # the binary acts as kubectl under that name

# --- 4b. flannel: flanneld from its Go module, and the flannel CNI plugin --------
# The flannel CNI plugin's own module (flannel-io/cni-plugin) is not on the proxy here; the same plugin
# as it was before it moved there, containernetworking/plugins' meta/flannel, is (kind/README.md).
flannel_key=$(key "$here"/flannel/go.mod "$here"/flannel/go.sum "$here"/flannel/tencentvpc-stub/go.mod "$here"/flannel/tencentvpc-stub/*/*.go)
FLANNEL_BIN=$CACHE/bin/flannel-$flannel_key
if [ ! -x "$FLANNEL_BIN/flanneld" ] || [ ! -x "$FLANNEL_BIN/flannel" ]; then
  build_flannel() {
    local version; cd "$here/flannel"
    version=$(go list -m -f '{{.Version}}' github.com/flannel-io/flannel)
    rm -rf "$FLANNEL_BIN.tmp" && mkdir -p "$FLANNEL_BIN.tmp"
    # cgo: flannel's udp backend has C parts; the image is Debian with the same glibc as this build
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$version" \
      -o "$FLANNEL_BIN.tmp/flanneld" github.com/flannel-io/flannel
    CGO_ENABLED=0 GOBIN="$FLANNEL_BIN.tmp" GOFLAGS=-trimpath go install \
      "github.com/containernetworking/plugins/plugins/meta/flannel@$FLANNEL_CNI_PLUGINS_VERSION"
    "$FLANNEL_BIN.tmp/flanneld" --version 2>&1 | grep -qx "$version"
    rm -rf "$FLANNEL_BIN" && mv "$FLANNEL_BIN.tmp" "$FLANNEL_BIN"
  }
  step flannel "The Go module proxy must serve github.com/flannel-io/flannel and containernetworking/plugins@$FLANNEL_CNI_PLUGINS_VERSION" build_flannel
fi

# --- 4c. Cilium: agent, operator, CNI plugin and tools from its Go module, its chart renderer --------
# (kind/cilium/go.mod: three replaces for what the proxy lacks; kind/README.md). About 12 minutes on
# 2 cores the first time, most of it the agent.
# the version is kind/cilium/go.mod's (not in versions.env, whose change would rebuild every step)
CILIUM_VERSION=$(sed -n 's#^require github.com/cilium/cilium \(v[0-9.]*\)$#\1#p' "$here/cilium/go.mod")
[ -n "$CILIUM_VERSION" ] || die "kind/cilium/go.mod names no github.com/cilium/cilium version"
cilium_key=$(key "$here"/cilium/go.mod "$here"/cilium/go.sum "$here"/cilium/mcs-controllers-stub/*)
CILIUM_BIN=$CACHE/bin/cilium-$cilium_key
CILIUM_PROGRAMS="cilium-agent:daemon cilium-operator-generic:operator cilium-cni:plugins/cilium-cni cilium-dbg:cilium-dbg
  cilium-health:cilium-health cilium-health-responder:cilium-health/responder cilium-mount:tools/mount
  cilium-sysctlfix:tools/sysctlfix"
cilium_built() { local p; for p in $CILIUM_PROGRAMS; do [ -x "$CILIUM_BIN/${p%%:*}" ] || return 1; done; }
if ! cilium_built; then
  build_cilium() {
    local p name tags ld="-s -w -X github.com/cilium/cilium/pkg/version.ciliumVersion=${CILIUM_VERSION#v}"
    cd "$here/cilium"
    rm -rf "$CILIUM_BIN.tmp" && mkdir -p "$CILIUM_BIN.tmp"
    for p in $CILIUM_PROGRAMS; do
      name=${p%%:*} tags=""
      # the generic operator, as operator/Makefile builds cilium-operator-generic
      [ "$name" = cilium-operator-generic ] && tags=-tags=ipam_provider_operator,osusergo
      echo "== $name"
      CGO_ENABLED=0 go build -trimpath $tags -ldflags "$ld" -o "$CILIUM_BIN.tmp/$name" "github.com/cilium/cilium/${p#*:}"
    done
    "$CILIUM_BIN.tmp/cilium-agent" --version | grep -q "${CILIUM_VERSION#v}"
    rm -rf "$CILIUM_BIN" && mv "$CILIUM_BIN.tmp" "$CILIUM_BIN"
  }
  step cilium "Building Cilium needs about 3 GB of memory and the Go module proxy (github.com/cilium/cilium@$CILIUM_VERSION)" build_cilium
fi
# the hubble CLI, for `cluster up --hubble`: its own module (kind/cilium/hubble/go.mod), so its extra
# dependencies do not rebuild the agent; most of its packages are the agent's, already in Go's build cache
hubble_key=$(key "$here"/cilium/hubble/go.mod "$here"/cilium/hubble/go.sum)
HUBBLE_BIN=$CACHE/bin/hubble-$hubble_key
if [ ! -x "$HUBBLE_BIN" ]; then
  build_hubble() {
    cd "$here/cilium/hubble"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/cilium/cilium/hubble/pkg.Version=$CILIUM_VERSION" \
      -o "$HUBBLE_BIN.tmp" github.com/cilium/cilium/hubble
    "$HUBBLE_BIN.tmp" version | grep -q "hubble $CILIUM_VERSION"
    mv "$HUBBLE_BIN.tmp" "$HUBBLE_BIN"
  }
  step hubble "The Go module proxy must serve what kind/cilium/hubble/go.sum names" build_hubble
fi
CILIUM_SRC=$(go env GOMODCACHE)/github.com/cilium/cilium@$CILIUM_VERSION  # bpf/, the chart and the image's scripts
[ -d "$CILIUM_SRC/bpf" ] || (cd "$here/cilium" && go mod download "github.com/cilium/cilium@$CILIUM_VERSION")

render_key=$(key "$here"/cilium/render/go.mod "$here"/cilium/render/go.sum "$here"/cilium/render/main.go)
CILIUM_RENDER=$CACHE/bin/cilium-render-$render_key
if [ ! -x "$CILIUM_RENDER" ]; then
  build_render() {
    cd "$here/cilium/render"
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$CILIUM_RENDER.tmp" .
    mv "$CILIUM_RENDER.tmp" "$CILIUM_RENDER"
  }
  step cilium-render "The Go module proxy must serve helm.sh/helm/v3 (kind/cilium/render/go.mod)" build_render
fi

# --- 4d. The node agent's tracer: bpf/dns_trace.c compiled once, here, into a CO-RE object -------------------
# (bpf/build.sh; a second, ~1 s). The agents load it with libbpf: no compiler and no kernel headers on the nodes.
# Keyed by the source, so every checkout that shares this cache finds the object of its own dns_trace.c.
install_bpf_toolchain() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libbpf-dev
}
command -v clang >/dev/null && [ -e /usr/include/bpf/bpf_helpers.h ] ||
  step bpf-toolchain "apt-get must reach Debian's mirror; try: apt-get install clang libbpf-dev" install_bpf_toolchain
TRACER_DIR=$CACHE/tracer
TRACER_OBJECT=$TRACER_DIR/dns_trace-$(sha256sum "$repo/bpf/dns_trace.c" | cut -c1-12).bpf.o
if [ ! -s "$TRACER_OBJECT" ]; then
  step tracer "See the log: clang could not compile bpf/dns_trace.c" "$repo/bpf/build.sh" "$TRACER_DIR"
fi

# --- 5. Root filesystems from Debian packages ---------------------------------
# rootfs NAME PACKAGES: a minbase Debian tree with PACKAGES, as $CACHE/rootfs-NAME-KEY.tar
rootfs() {
  local name=$1 packages=$2 k out
  k=$(printf '%s %s' "$DEBIAN_SUITE" "$packages" | sha256sum | cut -c1-12)
  out=$CACHE/rootfs-$name-$k.tar
  if [ ! -s "$out" ]; then
    # mmdebstrap picks its output format from the name: the partial file must end in .tar too
    step "rootfs-$name" "mmdebstrap must reach Debian's mirror" \
      mmdebstrap --variant=minbase --include="$packages" --skip=cleanup/reproducible "$DEBIAN_SUITE" "${out%.tar}.partial.tar"
    mv "${out%.tar}.partial.tar" "$out"
  fi
  echo "$out"
}
NODE_PACKAGES="systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,procps,jq"
COMPONENT_PACKAGES="iptables,nftables,conntrack,kmod,iproute2"
CLIENT_PACKAGES="python3-dnspython,dnsutils,iproute2,procps"
# the agent loads its compiled tracer with libbpf: no bcc, no LLVM, no headers (its tree is half the size it was)
AGENT_PACKAGES="python3,python3-venv,libbpf1,nftables,iproute2,procps,ca-certificates"
# Cilium's agent compiles its datapath at run time with clang (LLVM >= 18.1; bookworm's clang-19, the
# same LLVM as Cilium's own image), and runs iptables, ip and tc on the node
CILIUM_PACKAGES="clang-19,llvm-19,iptables,ipset,iproute2,kmod,util-linux,mount,bash,ca-certificates,procps,libelf1"
node_tar=$(rootfs node "$NODE_PACKAGES")
component_tar=$(rootfs component "$COMPONENT_PACKAGES")
client_tar=$(rootfs client "$CLIENT_PACKAGES")
agent_tar=$(rootfs agent "$AGENT_PACKAGES")
cilium_tar=$(rootfs cilium "$CILIUM_PACKAGES")

# The agent runtime: Debian's python3 and libbpf plus the package's dependencies from PyPI, in a venv
# at /opt/dnscorrelate/venv. The package itself is not in it: `cluster up` mounts this checkout
# into the nodes, so the agents always run the code you have (kind/README.md).
deps=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("'"$repo"'/pyproject.toml", "rb"))["project"]["dependencies"]))')
agent_runtime_tar=$CACHE/agent-runtime-$(printf '%s\n%s' "$(basename "$agent_tar")" "$deps" | sha256sum | cut -c1-12).tar
if [ ! -s "$agent_runtime_tar" ]; then
  build_agent_runtime() {
    local root; root=$(mktemp -d "$CACHE/work.XXXXXX")
    tar -C "$root" -xf "$agent_tar"
    # pip reaches PyPI from inside the tree with the host's resolver and CA bundle (which holds any
    # CA a TLS-inspecting proxy here needs); neither stays in the image
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/host-ca.crt"
    chroot "$root" python3 -m venv --system-site-packages /opt/dnscorrelate/venv
    printf '%s\n' "$deps" >"$root/tmp/requirements.txt"
    chroot "$root" env PIP_CERT=/tmp/host-ca.crt REQUESTS_CA_BUNDLE=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt PIP_FIND_LINKS= \
      /opt/dnscorrelate/venv/bin/pip install -q \
      --disable-pip-version-check --no-cache-dir -r /tmp/requirements.txt
    chroot "$root" /opt/dnscorrelate/venv/bin/python -c 'import pydantic, kubernetes, pandas, click'
    rm -f "$root/tmp/requirements.txt" "$root/tmp/host-ca.crt" "$root/etc/resolv.conf"
    tar -C "$root" --numeric-owner -cf "$agent_runtime_tar.tmp" .
    mv "$agent_runtime_tar.tmp" "$agent_runtime_tar"
    rm -rf "$root"
  }
  step agent-runtime "pip must reach PyPI from the build tree" build_agent_runtime
fi

# --- 6. Images (docker import of trees we made, tagged as kubeadm expects) -----
COREDNS_BIN=$repo/coredns/bin/coredns
[ -x "$COREDNS_BIN" ] || make -s -C "$repo/coredns"
images_key=$(cat "$KUBE" "$CACHE/bin/pause" "$CACHE/bin/runc-shim" "$COREDNS_BIN" "$FLANNEL_BIN"/* "$CILIUM_BIN"/* "$HUBBLE_BIN" | sha256sum | cut -c1-8)-$(printf '%s\n' "$node_tar" "$component_tar" "$client_tar" "$agent_runtime_tar" "$cilium_tar" | cat - "$here/build.sh" | sha256sum | cut -c1-8)
NODE_IMAGE=dnscorrelate/kind-node:$KUBE_VERSION-$images_key
CLIENT_IMAGE=dnscorrelate/client:$images_key
AGENT_IMAGE=dnscorrelate/agent:$images_key
UPSTREAM_IMAGE=dnscorrelate/upstream:$images_key
FLANNEL_IMAGE=dnscorrelate/flannel:$images_key
CILIUM_IMAGE=dnscorrelate/cilium:$images_key
CILIUM_OPERATOR_IMAGE=dnscorrelate/cilium-operator:$images_key
CILIUM_MANIFEST=$CACHE/cilium-$images_key-$(key "$here"/cilium/values.yaml "$CILIUM_RENDER").yaml
CILIUM_HUBBLE_MANIFEST=$CACHE/cilium-hubble-$images_key-$(key "$here"/cilium/values.yaml "$here"/cilium/hubble-values.yaml "$CILIUM_RENDER").yaml
ENV_PATH='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# import_tree DIR IMAGE CHANGES...: the directory as a one-layer image
import_tree() {
  local dir=$1 image=$2; shift 2
  local changes=() c
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" --numeric-owner -c . | docker import "${changes[@]}" - "$image" >/dev/null
}

build_images() {
  local work; work=$(mktemp -d "$CACHE/work.XXXXXX")

  # Control plane and kube-proxy share one tree (and so one layer): Debian
  # minbase with the tools kube-proxy runs, plus the binary under every name.
  mkdir "$work/component" && tar -C "$work/component" -xf "$component_tar"
  install -m 0755 "$KUBE" "$work/component/usr/local/bin/kube"
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd; do
    ln -s kube "$work/component/usr/local/bin/$c"
  done
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    import_tree "$work/component" "registry.k8s.io/$c:$KUBE_VERSION" "$ENV_PATH" "ENTRYPOINT [\"/usr/local/bin/$c\"]"
  done
  import_tree "$work/component" "registry.k8s.io/etcd:$ETCD_TAG" "$ENV_PATH" 'ENTRYPOINT ["/usr/local/bin/etcd"]'

  mkdir -p "$work/pause" && install -m 0755 "$CACHE/bin/pause" "$work/pause/pause"
  import_tree "$work/pause" "registry.k8s.io/pause:$PAUSE_TAG" 'ENTRYPOINT ["/pause"]'

  # flannel on the components' tree (it runs iptables and ip as kube-proxy does); the CNI plugin
  # rides along for its init container to copy onto the node, as flannel's own manifest does
  install -D -m 0755 "$FLANNEL_BIN/flanneld" "$work/component/opt/bin/flanneld"
  install -D -m 0755 "$FLANNEL_BIN/flannel" "$work/component/opt/cni-plugin/flannel"
  import_tree "$work/component" "$FLANNEL_IMAGE" "$ENV_PATH" 'ENTRYPOINT ["/opt/bin/flanneld"]'

  # CoreDNS: the project's pinned build, as the cluster DNS and as the upstream.
  mkdir -p "$work/coredns/etc/coredns" && install -m 0755 "$COREDNS_BIN" "$work/coredns/coredns"
  import_tree "$work/coredns" "registry.k8s.io/coredns/coredns:$COREDNS_TAG" 'ENTRYPOINT ["/coredns"]'
  docker tag "registry.k8s.io/coredns/coredns:$COREDNS_TAG" "$UPSTREAM_IMAGE"

  mkdir "$work/client" && tar -C "$work/client" -xf "$client_tar"
  import_tree "$work/client" "$CLIENT_IMAGE" "$ENV_PATH" 'CMD ["sleep", "infinity"]'

  mkdir "$work/agent" && tar -C "$work/agent" -xf "$agent_runtime_tar"
  import_tree "$work/agent" "$AGENT_IMAGE" "ENV PATH=/opt/dnscorrelate/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    'ENV PYTHONPATH=/opt/dnscorrelate/src' 'ENTRYPOINT ["python3", "-m", "dnscorrelate"]'

  # Cilium's agent image as its Dockerfile (images/cilium) lays it out, on Debian with clang-19: the
  # binaries in /usr/bin, the datapath's C source in /var/lib/cilium/bpf (Makefile's install-bpf), the
  # init containers' scripts at /; all from the Cilium module in the Go module cache, none copied here
  mkdir "$work/cilium" && tar -C "$work/cilium" -xf "$cilium_tar"
  install -m 0755 "$CILIUM_BIN"/cilium-* "$work/cilium/usr/bin/"
  rm "$work/cilium/usr/bin/cilium-operator-generic"
  install -D -m 0755 "$CILIUM_BIN/cilium-cni" "$work/cilium/opt/cni/bin/cilium-cni"  # its Makefile's CNIBINDIR: install-plugin.sh copies it from there
  rm "$work/cilium/usr/bin/cilium-cni"
  install -m 0755 "$HUBBLE_BIN" "$work/cilium/usr/bin/hubble"  # as Cilium's own agent image carries it
  ln -s clang-19 "$work/cilium/usr/bin/clang"
  ln -s llc-19 "$work/cilium/usr/bin/llc"
  mkdir -p "$work/cilium/var/lib/cilium" "$work/cilium/home/cilium"
  cp -r "$CILIUM_SRC/bpf" "$work/cilium/var/lib/cilium/bpf"
  chmod -R u+w,go-w "$work/cilium/var/lib/cilium/bpf"
  install -m 0755 "$CILIUM_SRC/images/cilium/init-container.sh" "$CILIUM_SRC/plugins/cilium-cni/install-plugin.sh" \
    "$CILIUM_SRC/plugins/cilium-cni/cni-uninstall.sh" "$work/cilium/"
  import_tree "$work/cilium" "$CILIUM_IMAGE" "$ENV_PATH" 'ENV INITSYSTEM=SYSTEMD' 'WORKDIR /home/cilium' 'CMD ["/usr/bin/cilium-dbg"]'
  "$CILIUM_BIN/cilium-agent" --version >/dev/null
  # the operator on the components' tree
  mkdir "$work/operator" && tar -C "$work/operator" -xf "$component_tar"
  install -m 0755 "$CILIUM_BIN/cilium-operator-generic" "$work/operator/usr/bin/"
  import_tree "$work/operator" "$CILIUM_OPERATOR_IMAGE" "$ENV_PATH" 'ENTRYPOINT ["/usr/bin/cilium-operator-generic"]'

  build_node "$work"
  rm -rf "$work"
}

# build_node WORK: kind's base-image layout (files from the kind module) on a
# Debian tree, the Kubernetes binaries, and every image above pre-imported
# into the node's containerd, as kind's own node-image build does.
build_node() {
  local work=$1 root=$1/node files
  files=$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files
  [ -d "$files" ] || (cd "$here/tools" && go mod download "sigs.k8s.io/kind@$KIND_VERSION")
  mkdir "$root" && tar -C "$root" -xf "$node_tar"

  cp -r "$files/usr" "$files/etc" "$files/kind" "$root/"
  chmod 0755 "$root"/usr/local/bin/* "$root"/kind/bin/*
  # kind's containerd config, with our pause tag and without the rootless-only fuse-overlayfs plugin
  sed -e "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:$PAUSE_TAG\"#" -e '/^\[proxy_plugins\]/,/^$/d' \
    "$files/etc/containerd/config.toml" >"$root/etc/containerd/config.toml"
  # the base OCI spec kind's Dockerfile makes: containerd's default plus kind's product-uuid hook, no rlimits
  ctr oci spec | python3 -c 'import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' >"$root/etc/containerd/cri-base.json"
  for b in containerd containerd-shim-runc-v2 ctr; do ln -sf "/usr/bin/$b" "$root/usr/local/bin/$b"; done
  mkdir -p "$root/opt/cni/bin" "$root/etc/kubernetes/manifests" "$root/usr/local/libexec/dnscorrelate"
  for p in "$root"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/$(basename "$p")" "$root/opt/cni/bin/"; done
  install -m 0755 "$CACHE/bin/runc-shim" "$root/usr/local/libexec/dnscorrelate/runc-shim"
  install -m 0755 "$KUBE" "$root/usr/bin/kube"
  for c in kubelet kubeadm kubectl; do ln -s kube "$root/usr/bin/$c"; done
  mkdir -p "$root/opt/dnscorrelate/src"  # cluster up mounts the checkout here for the agents
  echo "$KUBE_VERSION" >"$root/kind/version"

  # systemd as kind's base image sets it up
  find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
        "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
        "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
  chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$root" systemctl mask systemd-binfmt.service >/dev/null 2>&1

  preload_images "$root/var/lib/containerd" \
    "registry.k8s.io/kube-apiserver:$KUBE_VERSION" "registry.k8s.io/kube-controller-manager:$KUBE_VERSION" \
    "registry.k8s.io/kube-scheduler:$KUBE_VERSION" "registry.k8s.io/kube-proxy:$KUBE_VERSION" \
    "registry.k8s.io/etcd:$ETCD_TAG" "registry.k8s.io/pause:$PAUSE_TAG" \
    "registry.k8s.io/coredns/coredns:$COREDNS_TAG" "$CLIENT_IMAGE" "$AGENT_IMAGE" "$FLANNEL_IMAGE" \
    "$CILIUM_IMAGE" "$CILIUM_OPERATOR_IMAGE"

  import_tree "$root" "$NODE_IMAGE" 'ENV container=docker' 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
  # `docker import` takes no STOPSIGNAL; a one-line build adds it (config only, no layer, nothing pulled)
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$NODE_IMAGE" | DOCKER_BUILDKIT=0 docker build -q -t "$NODE_IMAGE" - >/dev/null
}

# preload_images ROOT IMAGES...: a containerd (the host's, same Debian version
# as the node's) writes the images into ROOT. (containerd 1.6's ctr cannot pin
# them as kind does; kubelet evicts images only under disk pressure.)
preload_images() {
  local root=$1; shift
  local run; run=$(mktemp -d /run/dnsc-kind-build.XXXXXX)
  cat >"$run/config.toml" <<EOF
version = 2
root = "$root"
state = "$run/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
EOF
  containerd --config "$run/config.toml" >"$run/containerd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do [ -S "$run/containerd.sock" ] && break; sleep 0.2; done
  docker save "$@" | ctr --address "$run/containerd.sock" -n k8s.io images import \
    --all-platforms --no-unpack --digests -
  kill "$pid"; wait "$pid" || true
  rm -rf "$run"
}

if ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 || ! docker image inspect "$UPSTREAM_IMAGE" >/dev/null 2>&1 ||
   ! docker image inspect "$FLANNEL_IMAGE" >/dev/null 2>&1 || ! docker image inspect "$CILIUM_IMAGE" >/dev/null 2>&1; then
  step images "See the log; a half-built image is never tagged, so run again after fixing" build_images
fi

# Cilium's manifests: its chart, from the module, rendered with kind/cilium/values.yaml and our images;
# and once more with kind/cilium/hubble-values.yaml over it, for `cluster up --hubble` (a second of work)
# render_cilium OUT VALUES...: the chart rendered with VALUES (the later winning) into OUT
render_cilium() {
  local out=$1; shift
  sed -e "s#@AGENT_IMAGE@#$CILIUM_IMAGE#" -e "s#@OPERATOR_IMAGE@#$CILIUM_OPERATOR_IMAGE#" \
    "$here/cilium/values.yaml" >"$out.values.tmp"
  "$CILIUM_RENDER" "$CILIUM_SRC/install/kubernetes/cilium" "$(IFS=,; echo "$out.values.tmp${*:+,$*}")" kube-system \
    "$KUBE_VERSION" >"$out.tmp"
  grep -q "image: \"$CILIUM_IMAGE\"" "$out.tmp"
  rm "$out.values.tmp" && mv "$out.tmp" "$out"
}
if [ ! -s "$CILIUM_MANIFEST" ]; then
  step cilium-manifest "See the log: the chart did not render with kind/cilium/values.yaml" render_cilium "$CILIUM_MANIFEST"
fi
if [ ! -s "$CILIUM_HUBBLE_MANIFEST" ]; then
  render_cilium_hubble() {
    render_cilium "$CILIUM_HUBBLE_MANIFEST" "$here/cilium/hubble-values.yaml"
    grep -q 'enable-hubble: "true"' "$CILIUM_HUBBLE_MANIFEST" && grep -q 'enable-l7-proxy: "true"' "$CILIUM_HUBBLE_MANIFEST"
  }
  step cilium-hubble-manifest "See the log: the chart did not render with kind/cilium/hubble-values.yaml" render_cilium_hubble
fi

# The agent for clusters whose nodes do not mount this checkout (`trace --agent --agent-image` on a
# remote cluster): the agent image with the package, the tracer's source and its compiled object baked in.
# Its own image, keyed by the source, so a code change rebuilds this one layer (seconds), not the node image.
package_key=$( (cd "$repo" && find dnscorrelate bpf -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path 'bpf/build/*' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
AGENT_STANDALONE_IMAGE=dnscorrelate/agent-standalone:$images_key-$package_key
if ! docker image inspect "$AGENT_STANDALONE_IMAGE" >/dev/null 2>&1; then
  build_agent_standalone() {
    local context; context=$(mktemp -d "$CACHE/work.XXXXXX")
    (cd "$repo" && tar --exclude=__pycache__ --exclude='*.pyc' --exclude=bpf/build -c dnscorrelate bpf) | tar -C "$context" -x
    mkdir "$context/tracer" && cp "$TRACER_OBJECT" "$context/tracer/"
    printf 'FROM %s\nCOPY dnscorrelate /opt/dnscorrelate/src/dnscorrelate\nCOPY bpf /opt/dnscorrelate/src/bpf\nCOPY tracer /opt/dnscorrelate/tracer\n' \
      "$AGENT_IMAGE" >"$context/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$AGENT_STANDALONE_IMAGE.partial" "$context" >/dev/null
    rm -rf "$context"
    # it runs with nothing mounted: the package imports, finds the object of its own tracer source, and libbpf
    docker run --rm --network none --entrypoint python3 "$AGENT_STANDALONE_IMAGE.partial" -c \
      'import dnscorrelate.live.bpf as b; print(b.core_object()); b._libbpf()'
    docker tag "$AGENT_STANDALONE_IMAGE.partial" "$AGENT_STANDALONE_IMAGE" && docker rmi "$AGENT_STANDALONE_IMAGE.partial" >/dev/null
  }
  step agent-standalone "See the log" build_agent_standalone
fi

# --- registry: the local registry `cluster up --registry` runs (kind's local-registry guide) -------------
# distribution's own main package by import path from kind/registry/go.mod, static, alone in a scratch-like
# image with kind/registry/config.yml: never loaded into the nodes (they pull from it), keyed by its own
# inputs so it is built once. The image is linux/$(go env GOARCH) only (kind/README.md).
registry_key=$(key "$here"/registry/go.mod "$here"/registry/go.sum "$here"/registry/config.yml)
REGISTRY_BIN=$CACHE/bin/registry-$registry_key
REGISTRY_IMAGE=dnscorrelate/registry:$registry_key
if [ ! -x "$REGISTRY_BIN" ]; then
  build_registry() {
    local version; cd "$here/registry"
    version=$(go list -m -f '{{.Version}}' github.com/distribution/distribution/v3)
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$version" \
      -o "$REGISTRY_BIN.tmp" github.com/distribution/distribution/v3/cmd/registry
    "$REGISTRY_BIN.tmp" --version | grep -q "$version"
    mv "$REGISTRY_BIN.tmp" "$REGISTRY_BIN"
  }
  step registry "The Go module proxy must serve what kind/registry/go.sum names" build_registry
fi
if ! docker image inspect "$REGISTRY_IMAGE" >/dev/null 2>&1; then
  build_registry_image() {
    local root; root=$(mktemp -d "$CACHE/work.XXXXXX")
    install -D -m 0755 "$REGISTRY_BIN" "$root/usr/bin/registry"
    install -D -m 0644 "$here/registry/config.yml" "$root/etc/distribution/config.yml"
    mkdir -p "$root/var/lib/registry" "$root/tmp" && chmod 1777 "$root/tmp"
    # OTEL_TRACES_EXPORTER=none: distribution's tracing would otherwise export its spans over OTLP
    import_tree "$root" "$REGISTRY_IMAGE.partial" 'ENV OTEL_TRACES_EXPORTER=none' 'EXPOSE 5000/tcp' \
      'ENTRYPOINT ["/usr/bin/registry"]' 'CMD ["serve", "/etc/distribution/config.yml"]'
    rm -rf "$root"
    docker run --rm --network none "$REGISTRY_IMAGE.partial" --version
    docker tag "$REGISTRY_IMAGE.partial" "$REGISTRY_IMAGE" && docker rmi "$REGISTRY_IMAGE.partial" >/dev/null
  }
  step registry-image "See the log" build_registry_image
fi
# --- end registry ---

# Earlier builds' images of ours are superseded: remove them (an image a running cluster still uses stays).
for repo_name in dnscorrelate/kind-node dnscorrelate/client dnscorrelate/agent dnscorrelate/upstream dnscorrelate/flannel \
                 dnscorrelate/agent-standalone dnscorrelate/cilium dnscorrelate/cilium-operator dnscorrelate/registry; do
  docker images --format '{{.Repository}}:{{.Tag}}' "$repo_name" |
    grep -vxF -e "$NODE_IMAGE" -e "$CLIENT_IMAGE" -e "$AGENT_IMAGE" -e "$UPSTREAM_IMAGE" -e "$FLANNEL_IMAGE" \
      -e "$AGENT_STANDALONE_IMAGE" -e "$CILIUM_IMAGE" -e "$CILIUM_OPERATOR_IMAGE" -e "$REGISTRY_IMAGE" |
    xargs -r docker rmi >/dev/null 2>&1 || true
done

# Earlier builds' rendered Cilium manifests are superseded too (`cluster up` reads the file only while it applies it).
find "$CACHE" -maxdepth 1 -name 'cilium-*.yaml' ! -name "$(basename "$CILIUM_MANIFEST")" ! -name "$(basename "$CILIUM_HUBBLE_MANIFEST")" -delete

# What `dnscorrelate cluster up` reads.
cat >"$CACHE/build.env" <<EOF
KIND=$CACHE/bin/kind
KUBECTL=$CACHE/bin/kubectl
NODE_IMAGE=$NODE_IMAGE
CLIENT_IMAGE=$CLIENT_IMAGE
AGENT_IMAGE=$AGENT_IMAGE
AGENT_STANDALONE_IMAGE=$AGENT_STANDALONE_IMAGE
REGISTRY_IMAGE=$REGISTRY_IMAGE
UPSTREAM_IMAGE=$UPSTREAM_IMAGE
FLANNEL_IMAGE=$FLANNEL_IMAGE
CILIUM_IMAGE=$CILIUM_IMAGE
CILIUM_OPERATOR_IMAGE=$CILIUM_OPERATOR_IMAGE
CILIUM_MANIFEST=$CILIUM_MANIFEST
CILIUM_HUBBLE_MANIFEST=$CILIUM_HUBBLE_MANIFEST
KUBE_VERSION=$KUBE_VERSION
TRACER_DIR=$TRACER_DIR
CAP_SHIM=$(needs_cap_shim && echo 1 || echo 0)
EOF
say "ready: $NODE_IMAGE (settings in $CACHE/build.env)"
