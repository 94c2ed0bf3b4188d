"""The lab: a Kubernetes-shaped DNS network built from network namespaces, with a real CoreDNS."""
