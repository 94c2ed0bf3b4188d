// Builds the hubble CLI (main package github.com/cilium/cilium/hubble) from the same Cilium module
// kind/cilium/go.mod builds the agent from. Its own module so that the CLI's extra dependencies
// (kubectl's and cli-runtime's packages, its gRPC middleware) do not change kind/cilium/go.sum, which
// keys the agent's build (kind/build.sh): adding the CLI costs its own packages, not a rebuild of
// the agent. None of kind/cilium/go.mod's replaces are needed: the CLI imports none of those modules.
module dnscorrelate.local/kind/cilium/hubble

go 1.26.0

require github.com/cilium/cilium v1.20.2
