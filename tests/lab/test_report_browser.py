"""A scenario's report opens in a real headless Chromium (Debian's), runs its script without errors and shows the waterfall."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make setup` installs Debian's chromium")
    return path


def test_report_renders_in_chromium(run_scenario, lab_ready, tmp_path):
    result = run_scenario(SCENARIOS / "stale-endpoint.yaml", report_dir=tmp_path)
    report = Path(result.report)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                              capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    assert "data-errors" not in dom, "the page raised script errors"
    assert dom.count('class="waterfall"') >= 10 and "<circle" in dom
    assert "coredns-unreachable" in dom
    assert 'id="cluster"' in dom and "kube-system/coredns-0 <code>" in dom  # the cluster, from the run's facts
