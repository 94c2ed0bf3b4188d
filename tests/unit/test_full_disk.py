"""Issue 13, item 6: a full disk on output gives a clear error and leaves no truncated file that looks complete."""

import subprocess

import pytest

from dnscorrelate import events
from dnscorrelate.errors import OutputError
from dnscorrelate.outputs import written_whole
from dnscorrelate.sources.pcapng_out import write_pcapng
from tests.fixtures import load_fixture


@pytest.fixture
def full_disk(tmp_path):
    """An 8 KiB tmpfs: too small for any capture file."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("name, write", [
    ("events.parquet", lambda frame, stats, path: events.save(frame, path, stats)),
    ("events.pcapng", lambda frame, stats, path: write_pcapng(frame, path)),
])
def test_a_full_disk_leaves_no_file_and_names_the_output(full_disk, name, write):
    frame, stats, _, _ = load_fixture("nodelocal-imbalance")
    target = full_disk / name
    with pytest.raises(OutputError, match=rf"-o {target}: could not write it \(.*No space left on device.*\); nothing was written there"):
        with written_whole(target, "-o") as partial:
            write(frame, stats, partial)
    assert list(full_disk.iterdir()) == []


def test_a_finished_write_is_renamed_into_place(tmp_path):
    with written_whole(tmp_path / "r.html", "--report") as partial:
        partial.write_text("<html></html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"] and (tmp_path / "r.html").read_text() == "<html></html>"


@pytest.mark.parametrize("output", ["table", "json"])
def test_stdout_on_a_full_device_is_an_error_not_a_traceback(output):
    import sys

    from tests.fixtures import HERE
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "dnscorrelate", "correlate", "--events", str(HERE / "healthy" / "events.parquet"), "-o", output],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2 and "could not write the output: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr


def scenario_result(name: str):
    """What `run` hands the HTML report: one recorded fixture's analysis and verdict."""
    from types import SimpleNamespace

    from dnscorrelate.analysis import analyze
    from dnscorrelate.cluster.facts import ClusterFacts

    frame, stats, logs, _ = load_fixture(name)
    scenario = SimpleNamespace(name=name, description="", expect=SimpleNamespace(findings=["ok"], hop=""))
    return SimpleNamespace(scenario=scenario, passed=True, missing=[], error="", analysis=analyze(frame, logs, ClusterFacts(), stats),
                           facts=None, clients=[], timings={"queries": 1.0}, report="")


def test_run_reports_on_a_full_disk_leave_no_half_written_page(full_disk):
    from dnscorrelate.report.html import write_index, write_scenario_report

    result = scenario_result("healthy")
    with pytest.raises(OutputError, match=r"No space left on device.*nothing was written there"):
        write_scenario_report(result, full_disk)
    assert list(full_disk.iterdir()) == []
    result.report = str(full_disk / "healthy.html")
    with pytest.raises(OutputError, match=r"No space left on device"):
        write_index([result] * 200, full_disk)  # 200 rows: more than the 8 KiB there is
    assert list(full_disk.iterdir()) == []


def test_run_reports_are_renamed_into_place_whole(tmp_path):
    from dnscorrelate.report.html import write_index, write_scenario_report

    result = scenario_result("healthy")
    result.report = str(write_scenario_report(result, tmp_path))
    write_index([result], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["healthy.html", "index.html"]
    assert (tmp_path / "healthy.html").read_text().rstrip().endswith("</html>")


def test_a_file_written_whole_has_the_mode_open_would_give_it(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with written_whole(tmp_path / "r.html", "--report") as partial:
            partial.write_text("<html></html>")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.html").stat().st_mode & 0o777 == 0o644  # readable by the user who opens the report, not 0600
