"""Issue 13, item 4: nothing a user can cause ends in a traceback; user text never acts on the terminal."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnscorrelate.cli import main

SCENARIO = "queries: [{from: demo/mypod, name: a.}]\nexpect: {findings: [ok]}\n"


def invoke(*argv):
    result = CliRunner().invoke(main, list(argv))
    assert "Traceback" not in result.output and not isinstance(result.exception, (UnicodeError, AttributeError, KeyError))
    return result


@pytest.mark.parametrize("command, name, content", [
    (["run"], "s.yaml", b"name: x\ndescription: caf\xe9\n" + SCENARIO.encode()),
    (["lab", "up", "--name", "zz", "--spec"], "spec.yaml", b"nodes: 1\n# caf\xe9\n"),
    (["correlate", "--coredns-log", "/dev/null", "--corefile"], "Corefile", b".:53 {\n  log \"caf\xe9\"\n}\n"),
    (["correlate", "--coredns-log", "/dev/null", "--manifests"], "m.yaml", b"kind: Service\nmetadata: {name: caf\xe9}\n"),
])
def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path, command, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    result = invoke(*command, str(path))
    assert result.exit_code == 2
    assert f"{path}:2: byte 0xe9" in result.output and "not UTF-8" in result.output


def test_markup_in_a_yaml_key_or_a_pattern_prints_as_written(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text('name: "Bad[a-z]"\n"[/x]": 1\n' + SCENARIO)
    result = invoke("run", "--report-dir", "", str(path))
    assert result.exit_code == 2
    assert "[/x]: Extra inputs are not permitted" in result.output
    assert "String should match pattern '^[a-z0-9][a-z0-9-]*$'" in result.output


def test_markup_in_a_path_prints_as_written(tmp_path):
    result = invoke("correlate", "--events", str(tmp_path / "[/x].parquet"))
    assert result.exit_code == 2 and f"{tmp_path}/[/x].parquet: cannot read events" in result.output


def test_control_characters_are_escaped_on_the_terminal_and_kept_in_json(tmp_path):
    log = tmp_path / "coredns-0.log"
    log.write_text('[INFO] 10.0.0.1:1 - 2 "A IN a\x1b[2Jb. udp 1 false 512" NOERROR qr 1 0.1s\n'
                   "garbage \x1b]0;title\x07 line\n")
    table = invoke("correlate", "--coredns-log", str(log))
    assert table.exit_code == 0 and "\x1b" not in table.output and "\x07" not in table.output
    assert "a\\x1b[2jb." in table.output and "garbage \\x1b]0;title\\x07 line" in table.output
    as_json = invoke("correlate", "--coredns-log", str(log), "-o", "json")
    assert json.loads(as_json.stdout)["traces"][0]["qname"] == "a\x1b[2jb."


FIXTURE_EVENTS = str(Path(__file__).resolve().parents[1] / "fixtures" / "nodelocal-imbalance" / "events.parquet")


@pytest.mark.parametrize("output", ["table", "json"])
def test_output_piped_to_a_reader_that_stops_early_exits_0_quietly(output):
    """`dnscorrelate correlate ... | head -c 200`: no BrokenPipeError, no 'Exception ignored', exit 0."""
    tool = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "correlate", "--events", FIXTURE_EVENTS, "-o", output],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    tool.stdout.read(200)
    tool.stdout.close()  # the reader has enough
    stderr = tool.stderr.read().decode()
    assert tool.wait(timeout=60) == 0 and "Error" not in stderr and "Exception" not in stderr, stderr


def test_library_warnings_are_not_shown_to_users(monkeypatch, tmp_path):
    from dnscorrelate import analysis

    real = analysis.analyze

    def warning_analyze(*args, **kwargs):
        warnings.warn("Downcasting object dtype arrays on .fillna is deprecated", FutureWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "analyze", warning_analyze)
    log = tmp_path / "coredns-0.log"
    log.write_text('[INFO] 10.0.0.1:1 - 2 "A IN a. udp 1 false 512" NOERROR qr 1 0.1s\n')
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert invoke("correlate", "--coredns-log", str(log)).exit_code == 0
    assert not [w for w in shown if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("argv, what", [
    (["lab", "down", "--all"], "removing a lab needs root"),
    (["run", "--report-dir", "", "scenarios/healthy.yaml"], "running a scenario needs root"),
])
def test_commands_that_need_root_say_so_to_other_users(argv, what):
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "dnscorrelate", *argv],
                          capture_output=True, text=True, timeout=60, cwd=root, env={**os.environ, "HOME": "/tmp"})
    assert done.returncode == 2 and what in done.stderr and "Traceback" not in done.stderr, done.stderr
