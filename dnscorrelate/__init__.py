"""dnscorrelate: correlate CoreDNS logs with eBPF packet traces to diagnose Kubernetes DNS, hop by hop."""

__version__ = "0.1.0"
