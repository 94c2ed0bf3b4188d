"""A real Kubernetes cluster on this machine: kind nodes from the image kind/build.sh makes offline,
with the lab's workloads and upstream zones. `cluster.py` brings it up and down; `network.py` is its
pod network; the spec's objects come from the shared `cluster/workloads.py`."""
