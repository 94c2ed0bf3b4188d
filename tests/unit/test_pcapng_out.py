"""Events -> pcapng -> the pcap reader gives the same rows (as far as pcapng carries them), and tshark
opens the file, names each vantage's interface and decodes every DNS message as we do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dnscorrelate import events
from dnscorrelate.sources.dnstap import read_dnstap
from dnscorrelate.sources.pcap import read_pcap, read_pcap_detailed
from dnscorrelate.sources.pcapng_out import write_pcapng
from tests import packets as p
from tests.tshark import our_messages, requires_tshark, tshark_messages

REAL_PCAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-pcaps"  # shared/ sits beside the repository
DNSTAP = Path(__file__).resolve().parents[1] / "fixtures" / "real-formats" / "coredns-dnstap.fstrm"
T0 = 1_700_000_000_000_000_000
# What pcapng cannot carry back: the message's original size (it is rebuilt from the columns),
# answers of types the table does not list (so ancount), and addresses a source did not record.
NOT_CARRIED = {"size", "ancount", "src_ip", "dst_ip"}


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    plain = [f.astype({c: object for c in events.CATEGORIES}) for f in frames]
    return events.conform(pd.concat(plain, ignore_index=True).sort_values("ts_ns", kind="stable"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> pd.DataFrame:
    """Events from several sources and vantage points: crafted ICMP and TCP set-up, real dnstap, and the
    real captures of ../shared when it is beside the repository (a user's clone has none: every kind the
    test asserts is crafted here too)."""
    tmp = tmp_path_factory.mktemp("mixed")
    crafted = tmp / "crafted.pcap"
    icmp = p.ipv4("10.96.0.10", "10.244.1.5", 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + p.udp(40000, 53, p.query())[:40])
    syn = p.tcp(40001, 53, 7, flags=0x02)
    synack = p.tcp(53, 40001, 90, flags=0x12, src="10.96.0.10", dst="10.244.1.5")
    crafted.write_bytes(p.pcap_file(113, [(T0, p.sll(icmp, 0)), (T0 + 5, p.sll(syn, 4)), (T0 + 9, p.sll(synack, 0))]))
    frames = [read_pcap(crafted, "pod/demo/mypod")[0], read_dnstap(DNSTAP)[0]]
    if REAL_PCAPS.exists():
        frames += [read_pcap(REAL_PCAPS / "dnscap-dns.pcap", "node/kind-worker")[0], read_pcap(REAL_PCAPS / "dnscap-dnso1tcp.pcap", "pod/demo/client")[0],
                   read_pcap(REAL_PCAPS / "dnscap-dns6.pcap")[0], read_pcap(REAL_PCAPS / "tcpdump-dns-badcookie.pcap")[0],
                   read_pcap(REAL_PCAPS / "dnscap-sll2.pcap")[0]]
    return concat(frames)


def test_round_trip_gives_the_same_rows(mixed, tmp_path):
    path = tmp_path / "out.pcapng"
    written = write_pcapng(mixed, path)
    back, stats = read_pcap(path)
    assert written["packets"] == stats["packets"] == len(back) == len(mixed)
    assert written["interfaces"] == mixed.groupby(["vantage", "netns", "ifindex", "ifname"], observed=True).ngroups
    assert stats["bad_checksum"] == stats["undecodable"] == stats["packets_not_dns"] == 0
    ours, theirs = mixed.astype({c: str for c in events.CATEGORIES}), back.astype({c: str for c in events.CATEGORIES})
    for column in set(events.COLUMNS) - NOT_CARRIED:
        assert ours[column].tolist() == theirs[column].tolist(), column
    known = ours["src_ip"] != ""
    assert ours["src_ip"][known].tolist() == theirs["src_ip"][known].tolist()
    assert set(mixed["kind"]) == {"dns", "icmp-error", "tcp-syn", "tcp-synack"}
    assert {"HOST", "OUTGOING"} <= set(back["pkt_type"])


@requires_tshark
def test_tshark_opens_it_with_one_named_interface_per_vantage(mixed, tmp_path):
    path = tmp_path / "out.pcapng"
    write_pcapng(mixed, path)
    fields = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert len(fields) == len(mixed)
    assert set(fields) == set(mixed["vantage"].astype(str))
    ports = (53, 15353, 15354)  # the dnstap fixture's CoreDNS listened on high ports
    result = read_pcap_detailed(path, ports=ports)
    # dnstap's client leg has no server port (0): tshark does not take TCP to port 0 for DNS, we do for our own files
    portless = set(result.frame_numbers[((result.frame["src_port"] == 0) | (result.frame["dst_port"] == 0)).to_numpy()].tolist())
    ours = {m for m in our_messages(result.frame, result.frame_numbers) if m[0] not in portless}
    assert ours == {m for m in tshark_messages(path, ports) if m[0] not in portless}
    assert len(ours) > len(mixed) - len(portless) - 5


SCENARIOS = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("scenario", ["healthy", "truncated", "bad-forward-server", "nodelocal-imbalance", "stale-endpoint", "deny-dns-egress"])
def test_capture_to_pcapng_to_correlate_gives_the_same_traces_and_findings(scenario, tmp_path):
    """Issue 12's round trip: a lab capture's events, written as pcapng and read with `correlate --pcap`,
    make the same traces and findings as `correlate --events` on the capture itself."""
    import json

    from click.testing import CliRunner

    from dnscorrelate.cli import main

    saved = SCENARIOS / scenario / "events.parquet"
    frame, _ = events.load(saved)
    write_pcapng(frame, tmp_path / "capture.pcapng")
    direct = CliRunner().invoke(main, ["correlate", "--events", str(saved), "-o", "json"])
    via_pcapng = CliRunner().invoke(main, ["correlate", "--pcap", str(tmp_path / "capture.pcapng"), "-o", "json"])
    assert direct.exit_code == via_pcapng.exit_code == 0, via_pcapng.output
    expected, got = json.loads(direct.stdout), json.loads(via_pcapng.stdout)
    assert got["traces"] == expected["traces"]
    assert got["findings"] == expected["findings"]
    assert len(got["traces"]) > 0
