"""Evidence as it happens: the live `Session` (session.py), the eBPF capture, the node agents' streams, dnstap
received live and logs followed while a session runs. See README.md."""
