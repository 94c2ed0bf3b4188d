"""Issue 13, item 6: a log file rotated or truncated while `trace` follows it: what was read of it and is
gone since is counted and said, never lost silently."""

import os
from types import SimpleNamespace

from dnscorrelate.live.session import Session
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.correlate import correlate
from dnscorrelate.report.text import stats_line
from dnscorrelate.live.logs import LogFollower

LINE = '[INFO] 10.0.0.1:{port} - {id} "A IN a. udp 1 false 512" NOERROR qr 1 0.1s\n'


def lines(n: int, start: int = 0) -> str:
    return "".join(LINE.format(port=1000 + k, id=k) for k in range(start, start + n))


def following(tmp_path):
    """A session's `logs` over two replicas' log files, as `trace` reads them every tick."""
    paths = [tmp_path / "coredns-0.log", tmp_path / "coredns-1.log"]
    backend = SimpleNamespace(log_sources=lambda: [SimpleNamespace(replica=p.stem, path=str(p)) for p in paths])
    return paths, SimpleNamespace(backend=backend, facts=ClusterFacts(), followed=LogFollower())


def test_a_log_rotated_away_is_said_with_what_it_held_and_the_others_still_read(tmp_path):
    paths, session = following(tmp_path)
    paths[0].write_text(lines(3))
    paths[1].write_text(lines(1, 10))
    assert len(Session.logs(session).records) == 4
    paths[0].rename(tmp_path / "coredns-0.log.1")  # rotated; the new file is not there yet
    logs = Session.logs(session)
    assert len(logs.records) == 1 and set(logs.records["replica"]) == {"coredns-1"}
    assert logs.lines_lost == 3
    assert logs.warnings == [f"{paths[0]}: log file missing when read (rotated or deleted): lines it held are not in this analysis "
                             "(3 lines read from it before)"]
    paths[0].write_text(lines(2, 20))  # the new file appears: read from its start, the count stays
    logs = Session.logs(session)
    assert len(logs.records) == 3 and logs.lines_lost == 3
    assert logs.warnings == [f"{paths[0]}: rotated or truncated while followed: 3 lines read from it before are no longer in it "
                             "and not in this analysis (nor any written just before that)"]


def test_a_truncated_log_counts_the_lines_cut_away(tmp_path):
    paths, session = following(tmp_path)
    for path in paths:
        path.write_text(lines(5))
    assert len(Session.logs(session).records) == 10
    paths[0].write_text(LINE.format(port=2000, id=9))  # copytruncate, then one new line
    logs = Session.logs(session)
    assert len(logs.records) == 6 and logs.lines_lost == 5
    assert len(logs.warnings) == 1 and "coredns-0.log: rotated or truncated while followed: 5 lines" in logs.warnings[0]
    assert "log_lines_lost=5" in stats_line(correlate(None, logs).stats)  # what `trace` prints at the end
    assert Session.logs(session).lines_lost == 5  # counted once, said at every later read


def test_a_log_truncated_and_written_past_its_old_length_is_caught_by_its_first_bytes(tmp_path):
    paths, session = following(tmp_path)
    for path in paths:
        path.write_text(lines(2))
    Session.logs(session)
    with paths[0].open("r+") as stream:  # truncated, then more written than it held: same inode, larger
        stream.truncate(0)
        stream.write(lines(4, 100))
    logs = Session.logs(session)
    assert len(logs.records) == 6 and logs.lines_lost == 2


def test_a_log_rotated_and_recreated_between_reads_is_caught_by_its_inode(tmp_path):
    paths, session = following(tmp_path)
    for path in paths:
        path.write_text(lines(2))
    Session.logs(session)
    os.rename(paths[0], tmp_path / "old.log")
    paths[0].write_text(lines(2))  # the same bytes in a new file: the old lines are still gone
    logs = Session.logs(session)
    assert logs.lines_lost == 2 and len(logs.records) == 4


def test_a_log_that_only_grows_loses_nothing(tmp_path):
    paths, session = following(tmp_path)
    for path in paths:
        path.write_text(lines(2))
    Session.logs(session)
    with paths[0].open("a") as stream:
        stream.write(lines(3, 50))
    logs = Session.logs(session)
    assert logs.lines_lost == 0 and logs.warnings == [] and len(logs.records) == 7
