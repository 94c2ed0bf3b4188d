"""`pipx install dnscorrelate` for files: in a venv without Debian's site-packages (so no bcc), with no
root and no cluster, `correlate` reads logs, pcaps, Inspektor Gadget JSON and dnstap, and gives the
same traces as the development venv; the commands that need the kernel say so instead of failing
with a traceback. pip fetches the dependencies from PyPI (its cache makes later runs quick)."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnscorrelate.cli import main

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
FORMATS = FIXTURES / "real-formats"

EVIDENCE = {
    "logs": ["--coredns-log", str(FORMATS / "coredns-logs" / "kubectl-prefix-1.11.1.log")],
    "pcap": ["--pcap", str(FORMATS / "dumpcap-any.pcapng"), "--port", "15353", "--port", "15354"],
    "ig": ["--ig-json", str(FORMATS / "ig-trace-dns-v0.25.jsonl")],
    "dnstap": ["--dnstap", str(FORMATS / "coredns-dnstap.fstrm")],
    "events+logs": ["--events", str(FIXTURES / "healthy" / "events.parquet"),
                    "--coredns-log", str(FIXTURES / "healthy" / "coredns-0.log"),
                    "--coredns-log", str(FIXTURES / "healthy" / "coredns-1.log")],
}


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A venv that sees nothing of the system's packages, with this checkout pip-installed (not editable)."""
    if os.environ.get("DNSCORRELATE_SKIP_INSTALL_TEST"):
        pytest.skip("DNSCORRELATE_SKIP_INSTALL_TEST is set")
    where = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(where)
    python = where / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
                               capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        pytest.fail(f"pip install of {REPO} into a clean venv failed:\n{installed.stderr[-3000:]}")
    return where


def run_installed(venv_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv_dir / "bin" / "dnscorrelate"), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=venv_dir)


def test_the_clean_venv_has_no_bcc_and_runs_its_own_copy(clean_venv):
    probe = subprocess.run([str(clean_venv / "bin" / "python"), "-c",
                            "import importlib.util, dnscorrelate; print(importlib.util.find_spec('bcc') is None, dnscorrelate.__file__)"],
                           capture_output=True, text=True, cwd=clean_venv, check=True)
    no_bcc, location = probe.stdout.split()
    assert no_bcc == "True"
    assert location.startswith(str(clean_venv)), location


@pytest.mark.parametrize("kind", sorted(EVIDENCE))
def test_correlate_on_files_gives_the_same_traces_as_the_dev_install(clean_venv, kind):
    args = ["correlate", *EVIDENCE[kind], "-o", "json"]
    installed = run_installed(clean_venv, *args)
    assert installed.returncode == 0, installed.stderr
    assert "Traceback" not in installed.stderr
    here = CliRunner().invoke(main, args)
    assert here.exit_code == 0, here.output
    theirs, ours = json.loads(installed.stdout), json.loads(here.stdout)
    assert len(theirs["traces"]) > 0
    assert theirs["traces"] == ours["traces"]
    assert [f["code"] for f in theirs["findings"]] == [f["code"] for f in ours["findings"]]


def test_commands_that_need_the_kernel_say_so_without_a_traceback(clean_venv):
    for args in (["capture", "--duration", "1", "-o", "x.parquet"], ["trace", "pod/mypod", "-n", "demo"]):
        result = run_installed(clean_venv, *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.stderr.strip().lower().startswith("error:"), result.stderr
