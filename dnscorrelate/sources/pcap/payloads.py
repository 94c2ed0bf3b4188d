"""DNS payloads as Arrow binary views into the bytes they came from: no Python object per message.

The dedupe (one dnspython decode per distinct message) needs each row's bytes after the DNS id told apart.
A bytes object per row cost the bulk path more than the headers did; instead each row is one 16-byte
Arrow "binary view" (its length, then up to 12 bytes inline, or its first 4 bytes, which buffer and
where), pointing into the memory-mapped file, and Arrow's C++ hash table (`dictionary_encode`) finds the
distinct ones. Offsets in a view are 32-bit, so a file is seen as overlapping 2 GiB windows, one every GiB.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INLINE = 12  # bytes a view holds itself
WINDOW_STEP = 1 << 30  # a payload starting in window k's first GiB ends inside it (payloads are < 64 KiB)
WINDOW_SIZE = 1 << 31


class Payloads:
    """Byte strings as binary views (an (N, 4) int32 array) over a list of buffers."""

    def __init__(self, views: np.ndarray, buffers: list):
        self.views = views
        self.buffers = buffers

    def __len__(self) -> int:
        return len(self.views)

    @classmethod
    def in_buffer(cls, data, at: np.ndarray, length: np.ndarray) -> Payloads:
        """The strings data[at : at + length] (length >= 0) of a bytes-like buffer, without copying them."""
        data = np.frombuffer(data, np.uint8) if len(data) else np.zeros(0, np.uint8)
        at, length = np.asarray(at, np.int64), np.asarray(length, np.int64)
        views = np.zeros((len(at), 4), np.int32)
        views[:, 0] = length
        if len(data) >= 4:  # every row as a long one first (most are): no masked writes of the long ones' columns
            first_bytes = np.ndarray((len(data) - 3,), np.int32, buffer=data, strides=(1,))  # 4 bytes at any offset
            views[:, 1] = first_bytes[np.minimum(at, len(data) - 4)]
            views[:, 2] = at // WINDOW_STEP
            views[:, 3] = at % WINDOW_STEP
        short = np.flatnonzero(length <= INLINE)
        if len(short):
            inline = np.zeros((len(short), INLINE), np.uint8)
            if len(data):
                inside = np.arange(INLINE) < length[short, None]
                positions = np.minimum(at[short, None] + np.arange(INLINE), len(data) - 1)
                inline[inside] = data[positions][inside]
            views[short, 1:] = inline.view(np.int32)
        return cls(views, cls.windows_of(data))

    @staticmethod
    def windows_of(data: np.ndarray) -> list[np.ndarray]:
        return [data[start : start + WINDOW_SIZE] for start in range(0, max(len(data), 1), WINDOW_STEP)]

    @classmethod
    def of_bytes(cls, strings: list[bytes]) -> Payloads:
        joined = b"".join(strings)
        length = np.fromiter(map(len, strings), np.int64, len(strings))
        return cls.in_buffer(joined, np.cumsum(length) - length, length)

    def take(self, order: np.ndarray) -> Payloads:
        return Payloads(self.views[order], self.buffers)

    @staticmethod
    def concat(parts: list[Payloads]) -> Payloads:
        views, buffers = [], []
        for part in parts:
            shifted = part.views.copy()
            shifted[:, 2] = np.where(shifted[:, 0] > INLINE, shifted[:, 2] + len(buffers), shifted[:, 2])
            views.append(shifted)
            buffers += part.buffers
        return Payloads(np.concatenate(views) if views else np.zeros((0, 4), np.int32), buffers)

    def arrow(self) -> pa.Array:
        buffers = [pa.py_buffer(np.ascontiguousarray(b)) for b in self.buffers]
        return pa.Array.from_buffers(pa.binary_view(), len(self), [None, pa.py_buffer(np.ascontiguousarray(self.views)), *buffers])

    def factorized(self) -> tuple[np.ndarray, list[bytes]]:
        """A code per string (distinct strings in order of first appearance) and the distinct strings."""
        encoded = pc.dictionary_encode(self.arrow())
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()
