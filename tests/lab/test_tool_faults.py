"""Issue 13: faults in the tool itself. A ring buffer too small for the traffic loses events: the loss is
counted and shown, never silent."""

import os
import subprocess
import sys

from .test_lookup_identity import CLIENT


def test_a_tiny_ring_buffer_overflows_and_the_loss_is_counted_and_shown(fresh_lab, tmp_path):
    lab = fresh_lab()
    pod = lab.pod("mypod", "demo")
    saved = tmp_path / "events.parquet"
    env = {**os.environ, "DNSCORRELATE_RING_PAGES": "1"}  # one page: a handful of events
    capture = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "--duration", "6", "-o", str(saved)],
                               env=env, stderr=subprocess.PIPE, text=True)
    started = capture.stderr.readline()  # said once compiled and attached
    assert started.startswith("capturing in"), started
    flood = subprocess.run(["ip", "netns", "exec", pod.netns, sys.executable, "-c", CLIENT, "10.96.0.10", "2000"],
                           capture_output=True, text=True, timeout=120)
    assert flood.returncode == 0, flood.stderr
    _, err = capture.communicate(timeout=120)
    err = started + err
    assert capture.returncode == 0, err
    lost = int(err.split("lost_samples=")[1].split()[0])
    assert lost > 0, err  # shown by capture ...
    shown = subprocess.run([sys.executable, "-m", "dnscorrelate", "correlate", "--events", str(saved)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and f"lost_samples={lost}" in shown.stderr, shown.stderr  # ... and by every analysis of the file
