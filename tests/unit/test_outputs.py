"""Issue 13, item 2: output paths are checked before capturing or running anything."""

import pytest
from click.testing import CliRunner

from dnscorrelate import runner
from dnscorrelate.cli import main
from dnscorrelate.live import session
from dnscorrelate.errors import OutputError
from dnscorrelate.outputs import check_output_dir, check_output_file
from tests.fixtures import HERE as FIXTURES

SCENARIO = str(FIXTURES.parents[1] / "scenarios" / "healthy.yaml")


@pytest.fixture
def no_work(monkeypatch):
    """Any capture or scenario run fails the test: the path must be refused first."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(session.Session, "start", refuse)
    monkeypatch.setattr(runner, "run_all", refuse)
    from dnscorrelate.cluster.lab import backend as lab_backend
    monkeypatch.setattr(lab_backend.LabBackend, "find", classmethod(lambda cls, name=None: object()))


@pytest.mark.parametrize("argv, message", [
    (["capture", "-o", "/nonexistent/dir/x.parquet", "--duration", "10"], "folder /nonexistent/dir does not exist"),
    (["capture", "-o", "/proc/x.pcapng", "--duration", "10"], "cannot write in /proc"),
    (["run", "--report-dir", "/proc/nope", SCENARIO], "--report-dir /proc/nope: cannot create it"),
    (["run", "--report-dir", "", "--evidence-dir", "/proc/nope/e", SCENARIO], "--evidence-dir /proc/nope/e: cannot create it"),
    (["trace", "pod/mypod", "-n", "demo", "--report", "/nonexistent/r.html"], "folder /nonexistent does not exist"),
])
def test_bad_output_paths_fail_before_the_work_with_exit_2(no_work, argv, message):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_file_where_a_folder_is_wanted_and_the_reverse(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "f", "--report-dir")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, "-o")


def test_good_paths_pass_and_leave_nothing_behind(tmp_path):
    assert check_output_file(tmp_path / "x.parquet", "-o") == tmp_path / "x.parquet"
    assert check_output_dir(tmp_path / "a" / "b", "--report-dir").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and not any((tmp_path / "a" / "b").iterdir())


def test_a_bad_file_in_a_directory_is_reported_and_the_good_ones_still_run(tmp_path, monkeypatch):
    """Issue 13: one bad scenario no longer blocks the ones beside it; the run exits 2."""
    import shutil

    from dnscorrelate import cli

    shutil.copy(SCENARIO, tmp_path / "healthy.yaml")
    (tmp_path / "broken.yaml").write_bytes(b"name: x\ndescription: caf\xe9\n")
    ran = []
    monkeypatch.setattr(runner, "run_all", lambda scenarios, *a, **k: ran.extend(s.name for s in scenarios) or [])
    monkeypatch.setattr(cli, "say_swept", lambda: None)
    result = CliRunner().invoke(main, ["run", "--report-dir", "", str(tmp_path)])
    assert ran == ["healthy"]
    assert result.exit_code == 2 and f"{tmp_path}/broken.yaml:2: byte 0xe9" in result.output
    assert "1 scenario file(s) not run" in result.output
