"""`trace pod/NAME`'s live loop: each lookup is printed once, also when CoreDNS's log line is read before the
capture has decoded the lookup's packets (it came through the API first on a loaded cluster, and the lookup was
printed twice: once from the line alone, once from its packets)."""

from __future__ import annotations

from types import SimpleNamespace

from dnscorrelate import trace as tracing
from tests.fixtures import load_fixture


def live_session(monkeypatch, name: str):
    frame, _, logs, facts = load_fixture(name)
    client = frame[(frame["role"] == "pod") & (frame["pkt_type"] == "OUTGOING") & ~frame["qr"].astype(bool)]
    pod_ip = str(client["src_ip"].iloc[0])
    live = SimpleNamespace(facts=facts, logs=lambda: logs, hubble=SimpleNamespace(enabled=False), stats={"one_clock": 1})  # a lab: one clock
    printed = []
    session = tracing.TraceSession(live, SimpleNamespace(ip=pod_ip, key="demo/mypod"), [],
                                   lambda t, record, codes: printed.append((t.client_port, t.dns_id, t.coverage)))
    return session, frame, printed


def at(monkeypatch, ns: int) -> None:
    monkeypatch.setattr(tracing.time, "time_ns", lambda: ns)


def test_a_log_line_ahead_of_its_packets_is_not_printed_as_a_lookup_of_its_own(monkeypatch):
    session, frame, printed = live_session(monkeypatch, "healthy")
    last = int(frame["ts_ns"].max())
    at(monkeypatch, last + 10**9)  # the log lines are in, no packet decoded yet
    session.tick(frame.iloc[0:0])
    assert printed == []
    at(monkeypatch, last + 2 * 10**9)  # the capture's packets arrive
    session.tick(frame)
    assert printed and all(coverage != "logs" for _, _, coverage in printed)
    lookups = [(port, qid) for port, qid, _ in printed]
    assert len(lookups) == len(set(lookups))


def test_a_lookup_only_a_log_line_shows_is_printed_once_it_settles(monkeypatch):
    session, frame, printed = live_session(monkeypatch, "healthy")
    at(monkeypatch, int(frame["ts_ns"].max()) + tracing.LOG_SETTLE_NS + 10**9)  # no packet ever came: the lines alone
    session.tick(frame.iloc[0:0])
    assert printed and {coverage for _, _, coverage in printed} == {"logs"}


def test_with_hubble_a_slow_lookup_waits_for_its_answers_flows_not_only_its_starts(monkeypatch):
    """The DNS proxy's response flow comes as late as the answer: a lookup answered seconds after it started was
    printed SETTLE_NS after its start, before Hubble's response of it arrived, and kept one proxy hop of two."""
    session, frame, printed = live_session(monkeypatch, "healthy")
    session.live.hubble.enabled = True
    slow = frame.copy()
    answers = slow["qr"].astype(bool)
    slow.loc[answers, "ts_ns"] += 3 * 10**9  # every answer 3 s late
    last_query = int(slow.loc[~answers, "ts_ns"].max())
    at(monkeypatch, last_query + tracing.SETTLE_NS + 10**9)  # settled by its start, not by its answer
    session.tick(slow)
    assert printed == []
    first_answer = int(slow.loc[answers, "ts_ns"].min())
    assert last_query + tracing.GIVE_UP_NS < first_answer + tracing.SETTLE_NS - 2 * 10**8
    at(monkeypatch, last_query + tracing.GIVE_UP_NS + 10**8)  # past a client's patience, still before its answer's flows
    session.tick(slow.iloc[0:0])
    assert printed == []
    at(monkeypatch, int(slow["ts_ns"].max()) + tracing.SETTLE_NS + 10**8)
    session.tick(slow.iloc[0:0])
    assert printed


def test_an_unanswered_lookup_is_printed_once_a_client_would_have_given_up(monkeypatch):
    session, frame, printed = live_session(monkeypatch, "deny-dns-egress")
    session.live.hubble.enabled = True  # its flows' wait is shorter than a client's patience
    first_query = int(frame.loc[~frame["qr"].astype(bool), "ts_ns"].min())
    at(monkeypatch, first_query + tracing.GIVE_UP_NS - 10**8)
    session.tick(frame)
    assert printed == []
    at(monkeypatch, int(frame["ts_ns"].max()) + tracing.GIVE_UP_NS + 10**8)
    session.tick(frame.iloc[0:0])
    assert printed and all(coverage != "logs" for _, _, coverage in printed)
