# Every target does its own set-up, so each works on a fresh machine.
PY := .venv/bin/python

.PHONY: setup test demo lab-down clean

setup:
	@scripts/setup.sh

## test: the whole suite; lab tests need root (CI is root)
test: setup
	$(PY) -m pytest -q

## demo: the main job on the lab: every shipped scenario, reports in reports/ (index.html)
demo: setup
	.venv/bin/dnscorrelate run scenarios/ --report-dir reports

lab-down:
	.venv/bin/dnscorrelate lab down --all

clean: lab-down
	rm -rf .venv .setup coredns/bin
