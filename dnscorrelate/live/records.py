"""The tracer's records as they arrive, and what has been decoded of them: one buffer for a capture on this
machine (`capture.Capture`) and for each node's stream of the node agents (`agent_stream.NodeStream`).

Records are kept as the batches they came in (a ring-buffer read, an agent's frame) and decoded on demand
with `sources.decode`: `new_events` from a cursor for live views, `decode_all` for the whole table, `take`
for a consumer that forwards or writes them as they come."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from dnscorrelate.sources.bpf import EVENT_DTYPE
from dnscorrelate.sources.decode import Vantage, decode


@dataclass
class RecordBuffer:
    batches: list[bytes] = field(default_factory=list)  # a reader may append to it directly (the tracer's sink)
    cursor: int = 0  # batches before it were decoded by `new_events`
    taken_bytes: int = 0  # bytes removed by `take`, still counted as received
    decode_stats: Counter = field(default_factory=Counter)  # decode counters of what was decoded (all of it, after `decode_all`)

    def append(self, batch: bytes) -> None:
        self.batches.append(batch)

    def pending_bytes(self) -> int:
        """Bytes held: read and not yet taken."""
        return sum(map(len, self.batches))

    def records_received(self) -> int:
        """Records that arrived, taken ones included."""
        return (self.taken_bytes + self.pending_bytes()) // EVENT_DTYPE.itemsize

    def take(self, count: int) -> list[bytes]:
        """Remove and return the first `count` batches; live views go on from where they were."""
        taken = self.batches[:count]
        del self.batches[:count]  # a reader only appends: what arrives meanwhile stays
        self.cursor = max(0, self.cursor - count)
        self.taken_bytes += sum(map(len, taken))
        return taken

    def took_elsewhere(self, nbytes: int) -> None:
        """Count records a consumer took without their passing through here (read in place from the ring buffer)."""
        self.taken_bytes += nbytes

    def new_events(self, vantages: dict[int, Vantage], boot_to_wall: int) -> pd.DataFrame:
        """Events of the batches that arrived since the last call; the decode counters add up."""
        end = len(self.batches)
        frame, counts = decode(b"".join(self.batches[self.cursor:end]), vantages, boot_to_wall)
        self.cursor = end
        self.decode_stats.update(counts)
        return frame

    def decode_all(self, vantages: dict[int, Vantage], boot_to_wall: int, head: bytes = b"") -> pd.DataFrame:
        """Events of every batch held, after `head` (records held back from an earlier `take`); the decode counters
        become this decode's."""
        frame, self.decode_stats = decode(head + b"".join(self.batches), vantages, boot_to_wall)
        return frame
