"""Sources of evidence: packet events (eBPF capture, pcap/pcapng, Inspektor Gadget, dnstap) and CoreDNS log records, each per schema.py."""
