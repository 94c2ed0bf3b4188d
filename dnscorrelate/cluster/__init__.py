"""Clusters dnscorrelate runs on: the Kubernetes model every backend shares, and the backends (lab/)."""
