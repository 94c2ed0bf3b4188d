"""A live lab run, and the same evidence saved and re-read with `dnscorrelate correlate`, give the same Traces and Findings."""

import json
import shutil
import subprocess
import sys
import time

from dnscorrelate import events
from dnscorrelate.analysis import analyze
from dnscorrelate.cluster.lab.facts import facts_from_topology
from dnscorrelate.cluster.spec import load_manifests
from dnscorrelate.report.records import analysis_record
from dnscorrelate.cluster.lab.capture import lab_targets, lab_watcher
from dnscorrelate.live.capture import Capture
from dnscorrelate.sources.coredns_log import read_logs

from .conftest import in_pod
from .test_policies import EXAMPLES


def test_live_and_reread_agree(fresh_lab, tmp_path):
    lab = fresh_lab()
    with Capture(lab_targets(lab), watch=lab_watcher(lab)) as capture:
        in_pod(lab, "mypod", "getent", "ahosts", "web")
        in_pod(lab, "mypod", "getent", "ahosts", "kubernetes.io")
        in_pod(lab, "mypod", "dig", "+tries=1", "+timeout=2", "nosuch.demo.svc.cluster.local")
        lab.apply(load_manifests(EXAMPLES / "deny-egress.yaml"))
        in_pod(lab, "mypod", "dig", "+tries=1", "+timeout=1", "example.com")
        time.sleep(0.2)
    logs = [p.log for p in lab.processes if p.role.startswith("coredns-")]
    live = analysis_record(analyze(capture.events(), read_logs(logs, lab.topology.spec.corefile), facts_from_topology(lab.topology), capture.stats))

    events.save(capture.events(), tmp_path / "events.parquet", capture.stats)
    copies = []
    for path in logs:
        copies.append(str(tmp_path / path.rsplit("/", 1)[1]))
        shutil.copy(path, copies[-1])
    cmd = [sys.executable, "-m", "dnscorrelate", "correlate", "--events", str(tmp_path / "events.parquet"), "--lab", lab.name, "-o", "json"]
    for path in copies:
        cmd += ["--coredns-log", path]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reread = json.loads(done.stdout)

    def without_paths(document):  # log references name the file read: the copies differ only by folder
        text = json.dumps(document, sort_keys=True)
        for original, copy in zip(logs, copies):
            text = text.replace(copy, original)
        return json.loads(text)

    assert without_paths(reread)["traces"] == live["traces"]
    assert without_paths(reread)["findings"] == live["findings"]
    assert reread["stats"] == live["stats"]
    codes = {f["code"] for f in live["findings"]}
    assert {"dropped-at-node", "nxdomain", "search-path-expansion"} <= codes
