// Stands in for sigs.k8s.io/mcs-api/controllers v0.5.2, which the Go module proxy here does not
// serve. Cilium's operator (pkg/clustermesh/mcsapi) uses one constant of it; nothing else.
module sigs.k8s.io/mcs-api/controllers

go 1.22
