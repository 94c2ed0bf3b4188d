// Builds Cilium's agent, operator, CNI plugin and tools from its own module (github.com/cilium/cilium,
// main packages by import path, kind/build.sh). Replaces, each because the Go module proxy here
// lacks what Cilium's go.mod names (kind/README.md):
//   - controller-tools: Cilium's own go.mod replaces it with Cilium's fork; a dependency's replaces
//     do not apply to us, so it is repeated here.
//   - gobgp/v4: Cilium pins a pseudo-version the proxy does not serve; the v4.8.0 release compiles.
//   - mcs-api/controllers v0.5.2: not served at all; the operator uses one constant, stubbed.
module dnscorrelate.local/kind/cilium

go 1.26.0

require github.com/cilium/cilium v1.20.2

replace sigs.k8s.io/controller-tools => github.com/cilium/controller-tools v0.21.0-1

replace github.com/osrg/gobgp/v4 => github.com/osrg/gobgp/v4 v4.8.0

replace sigs.k8s.io/mcs-api/controllers => ./mcs-controllers-stub
