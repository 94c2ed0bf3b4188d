"""tshark as the reference decoder: the DNS messages it sees in a capture file, to compare with ours."""

from __future__ import annotations

import shutil
import subprocess

import dns.name
import dns.rcode
import pandas as pd
import pytest

FIELDS = ["frame.number", "ip.src", "ipv6.src", "dns.id", "dns.flags.response", "dns.qry.name", "dns.flags.rcode", "dns.count.answers",
          "dns.count.prerequisites"]  # an UPDATE's second header count (RFC 2136), where a query's answer count is
SEP = "\x1f"  # between several DNS messages of one frame (names may hold commas)

requires_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (scripts/setup.sh installs Debian's)")


def tshark_messages(path, ports=(53,)) -> set[tuple]:
    """(frame, source address, id, is-response, name, header rcode, answer count) per DNS message tshark decodes."""
    decode_as = [arg for port in ports if port != 53 for arg in ("-d", f"udp.port=={port},dns", "-d", f"tcp.port=={port},dns")]
    command = ["tshark", "-n", "-r", str(path), *decode_as, "-Y", "dns", "-T", "fields", "-E", f"aggregator={SEP}",
               *[arg for f in FIELDS for arg in ("-e", f)]]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    messages = set()
    for line in out.splitlines():
        frame, ip4, ip6, ids, responses, names, rcodes, answers, prerequisites = line.split("\t")
        source = (ip4 or ip6).split(SEP)[-1]  # an ICMP error's inner header comes after the outer one
        count = len(ids.split(SEP))
        # tshark leaves a field out where a message lacks it (4.0 prints no rcode for queries): a short or empty
        # column is padded for every message of the frame, not read as the first one's only
        columns = [c.split(SEP) if c else [] for c in (ids, responses, names, rcodes, answers or prerequisites)]
        columns = [c + [""] * (count - len(c)) for c in columns]
        for qid, qr, name, rcode, ancount in zip(*columns):
            messages.add((int(frame), source, int(qid, 16), qr in ("1", "True"), plain_name(name), int(rcode or 0), int(ancount or 0)))
    return messages


def plain_name(name: str) -> str:
    """A name as tshark prints it: no trailing dot, no escapes, lower case; '<Root>' for the root."""
    return "" if name in ("<Root>", "<root>") else name.lower()


def our_messages(frame: pd.DataFrame, frame_numbers) -> set[tuple]:
    messages = set()
    for number, row in zip(frame_numbers, frame.itertuples()):
        if row.kind != "dns" and not (row.kind == "icmp-error" and row.dns_id >= 0):  # tshark decodes a quoted DNS header too
            continue
        name = dns.name.from_text(row.qname).to_unicode(omit_final_dot=True) if row.qname else ""
        if row.qname:  # tshark prints labels raw, dnspython escapes what is not a hostname character
            name = ".".join(label.decode("latin-1") for label in dns.name.from_text(row.qname).labels if label)
        rcode = dns.rcode.from_text(row.rcode) & 0xF if row.rcode else 0
        messages.add((int(number), row.src_ip, int(row.dns_id), bool(row.qr), name.lower(), rcode, int(row.ancount)))
    return messages
