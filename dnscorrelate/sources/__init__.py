"""Sources of evidence: eBPF packet capture (and, in correlate, CoreDNS logs)."""
