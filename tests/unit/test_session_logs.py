"""Issue 13, item 6: a log file rotated or truncated while `trace` follows it."""

from types import SimpleNamespace

from dnscorrelate.cluster.backend import Session
from dnscorrelate.cluster.facts import ClusterFacts

LINE = '[INFO] 10.0.0.1:{port} - {id} "A IN a. udp 1 false 512" NOERROR qr 1 0.1s\n'


def following(tmp_path):
    """A session's `logs` over two replicas' log files, as `trace` reads them every tick."""
    paths = [tmp_path / "coredns-0.log", tmp_path / "coredns-1.log"]
    backend = SimpleNamespace(log_sources=lambda: [SimpleNamespace(replica=p.stem, path=str(p)) for p in paths])
    return paths, SimpleNamespace(backend=backend, facts=ClusterFacts(), logs_read=set())


def test_a_log_rotated_away_is_said_and_the_others_still_read(tmp_path):
    paths, session = following(tmp_path)
    for i, path in enumerate(paths):
        path.write_text(LINE.format(port=1000 + i, id=i))
    assert len(Session.logs(session).records) == 2
    paths[0].rename(tmp_path / "coredns-0.log.1")  # rotated; the new file is not there yet
    logs = Session.logs(session)
    assert len(logs.records) == 1 and set(logs.records["replica"]) == {"coredns-1"}
    assert len(logs.warnings) == 1 and "coredns-0.log: log file missing when read (rotated or deleted)" in logs.warnings[0]


def test_a_truncated_log_is_read_again_from_its_start(tmp_path):
    paths, session = following(tmp_path)
    for path in paths:
        path.write_text("".join(LINE.format(port=1000 + k, id=k) for k in range(5)))
    assert len(Session.logs(session).records) == 10
    paths[0].write_text(LINE.format(port=2000, id=9))  # copytruncate, then one new line
    logs = Session.logs(session)
    assert len(logs.records) == 6  # the lines cut away are gone from the analysis (not counted: see the issue note)
