"""Any Kubernetes cluster, through its API server with the official client: the model read from the
API (`cluster/kubeapi.py`), and the Kubernetes backend built on it."""
