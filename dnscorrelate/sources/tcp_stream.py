"""DNS messages out of one direction of a TCP connection: the one reassembler the eBPF decoder
(decode.py) and the pcap reader (pcap/) share.

DNS over TCP puts a 2-byte length before each message (RFC 1035 4.2.2). A segment may hold several
messages, part of one, or the end of one and the start of the next. Segments are fed in order of
arrival; retransmitted bytes are dropped (new bytes at a retransmission's end are kept), a gap throws
away the half-built message, and a segment the capture cut short (snap length, or the tracer's 512
bytes) still gives a row when it starts a message: its header and question are there. The rest of that
message is skipped up to where the next one starts.

What is thrown away is counted in the `counts` each caller passes, under these names:
`retransmissions`, `segments_cut`, `gaps` (and `gap_bytes`, the half-built message a gap lost),
`skipped_segments` and `skipped_bytes` (inside a cut message), `cut_bytes` (a cut segment that started
no message, with what was buffered). What is still buffered at the end is `pending_bytes`.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

SEQ_MOD = 2**32
MIN_CUT_MESSAGE = 14  # length prefix and a 12-byte header: enough of a cut message to make a row


def seq_before(a: int, b: int) -> bool:
    """`a` comes before `b` in sequence space (wrapping at 2**32)."""
    return a != b and (b - a) % SEQ_MOD < SEQ_MOD // 2


@dataclass(slots=True)
class Message:
    """A DNS message out of a stream (without its length prefix)."""

    wire: bytes
    complete: bool  # False: a cut segment held only its start
    size: int  # the length its prefix says
    started_by: Any = None  # the token of the segment its first byte came in, when the stream was between messages then


@dataclass
class TcpStream:
    """One direction of one TCP connection at one vantage point, being reassembled."""

    buffer: bytes = b""
    expected: int | None = None  # the next sequence number
    skip_to: int | None = None  # inside a message whose bytes the capture cut: where the next one starts
    started_by: Any = None

    @property
    def between_messages(self) -> bool:
        """Nothing half-built: what came before is settled."""
        return not self.buffer and self.skip_to is None

    def segment(self, seq: int, data: bytes, payload_len: int, counts: Counter, token: Any = None) -> list[Message]:
        """Feed one segment (`data` as captured, `payload_len` as sent); the messages it completes."""
        if self.skip_to is not None:
            if seq_before(seq, self.skip_to):
                counts["skipped_segments"] += 1
                counts["skipped_bytes"] += len(data)
                return []
            self.skip_to, self.expected = None, seq
        if len(data) < payload_len:
            return self.cut_segment(seq, data, counts, token)
        if self.expected is not None and seq != self.expected:
            if seq_before(seq, self.expected):
                overlap = (self.expected - seq) % SEQ_MOD
                if overlap >= len(data):
                    counts["retransmissions"] += 1
                    return []
                data, seq = data[overlap:], self.expected  # retransmitted, with new bytes at its end
            else:
                counts["gaps"] += 1
                counts["gap_bytes"] += len(self.buffer)
                self.buffer = b""
        if not self.buffer:
            self.started_by = token
        self.buffer += data
        self.expected = (seq + len(data)) % SEQ_MOD
        return self.whole_messages()

    def cut_segment(self, seq: int, data: bytes, counts: Counter, token: Any) -> list[Message]:
        counts["segments_cut"] += 1
        found = []
        if not self.buffer and len(data) >= MIN_CUT_MESSAGE:
            length = struct.unpack_from("!H", data)[0]
            found.append(Message(data[2:], False, length, token))
            self.skip_to = (seq + 2 + length) % SEQ_MOD
        else:
            counts["cut_bytes"] += len(self.buffer) + len(data)
        self.buffer, self.expected = b"", None
        return found

    def whole_messages(self) -> list[Message]:
        found = []
        while len(self.buffer) >= 2:
            length = struct.unpack_from("!H", self.buffer)[0]
            if len(self.buffer) < 2 + length:
                break
            found.append(Message(self.buffer[2 : 2 + length], True, length, self.started_by))
            self.buffer = self.buffer[2 + length :]
            self.started_by = None
        return found
