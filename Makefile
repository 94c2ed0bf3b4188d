# Every target does its own set-up, so each works on a fresh machine.
PY := .venv/bin/python

.PHONY: setup cluster test demo demo-kind lab-down cluster-down clean

setup:
	@scripts/setup.sh

## cluster: build, offline and cached, what `dnscorrelate cluster up` needs (kind/README.md)
cluster: setup
	@kind/build.sh

## test: the whole suite; lab and cluster tests need root (CI is root); then the unit tests again from a copy
## with no ../shared beside it, as a user's clone is (scripts/test-bare-copy.sh)
test: setup cluster
	$(PY) -m pytest -q
	@scripts/test-bare-copy.sh

## demo: the main job on the lab: every shipped scenario, reports in reports/ (index.html)
demo: setup
	.venv/bin/dnscorrelate run $(filter-out $(CILIUM_ONLY_SCENARIOS:%=scenarios/%.yaml),$(wildcard scenarios/*.yaml)) --report-dir reports

## demo-kind: the shipped scenarios a kind cluster can make, all on one kind cluster: each scenario's changes
## journaled, undone after it and the baseline proven before the next (`run --backend kind scenarios/` refuses
## the others: file:line: field)
## stale-endpoint runs on kind but finds `ok`: Kubernetes takes a stopped replica out of the Service
## CNI=cilium runs them with Cilium as the pod network (scenarios/README.md: what differs), reports in reports-kind-cilium
LAB_ONLY_SCENARIOS := nodelocal-imbalance response-lost slow-upstream upstream-refused stale-endpoint
## Cilium's own DNS failures (their CiliumNetworkPolicies need Cilium): demo-kind with CNI=cilium only, never the lab
CILIUM_ONLY_SCENARIOS := fqdn-policy-denied dns-rule-refused dns-proxy-hop
CNI := flannel
demo-kind: setup cluster
	.venv/bin/dnscorrelate run --backend kind --cni $(CNI) $(filter-out $(LAB_ONLY_SCENARIOS:%=scenarios/%.yaml) $(if $(filter cilium,$(CNI)),,$(CILIUM_ONLY_SCENARIOS:%=scenarios/%.yaml)),$(wildcard scenarios/*.yaml)) --report-dir reports-kind$(if $(filter-out flannel,$(CNI)),-$(CNI))

lab-down:
	.venv/bin/dnscorrelate lab down --all

cluster-down:
	.venv/bin/dnscorrelate cluster down --all

clean: lab-down
	rm -rf .venv .setup coredns/bin
