"""Bad input and missing privileges give a clear message and exit code, never a traceback."""

import os
import subprocess
import sys

from .test_lab import cli


def test_an_invalid_spec_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("corednsReplicas: lots\n")
    done = cli("lab", "up", "--spec", str(bad), "--name", "never")
    assert done.returncode == 2
    assert f"{bad}:1: corednsReplicas: Input should be a valid integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_lab_name_is_refused():
    done = cli("lab", "up", "--name", "Bad-Name")
    assert done.returncode == 2 and "lab name 'Bad-Name'" in done.stderr


def test_without_root_the_lab_says_so():
    env = {**os.environ, "HOME": "/tmp"}
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "dnscorrelate", "lab", "up", "--name", "noroot"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "the lab needs root" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_coredns_binary_is_named(tmp_path):
    env = {**os.environ, "DNSCORRELATE_COREDNS": str(tmp_path / "nope")}
    done = subprocess.run([sys.executable, "-m", "dnscorrelate", "lab", "up", "--name", "nobin"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "CoreDNS binary not found" in done.stderr and "DNSCORRELATE_COREDNS" in done.stderr
