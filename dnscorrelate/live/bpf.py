"""The eBPF side of capture: compile `bpf/dns_trace.c` once, attach it in any network namespace.

One process compiles the tracer once (bcc, ~1 s). Each namespace gets a
dispatcher of eight raw instructions, loaded with the bpf(2) syscall in
microseconds, that stamps the namespace's capture id into `skb->cb[0]` and
tail-calls the tracer. The dispatcher is attached to an AF_PACKET socket
created inside the namespace; the socket stays bound to that namespace after
the thread returns home. Events arrive on one ring buffer.
"""

from __future__ import annotations

import ctypes as ct
import functools
import mmap
import os
import select
import socket
import struct
from pathlib import Path

import numpy as np

from dnscorrelate.errors import CaptureError
from dnscorrelate.live import nsenter
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX  # noqa: F401 (re-exported: the records it reads)

BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "dns_trace.c"
# The ring buffer's size in pages (a power of two). Only tests and loss experiments change it: with a
# tiny ring, events are lost and must show up as `lost_samples`.
RING_PAGES = int(os.environ.get("DNSCORRELATE_RING_PAGES", 1 << 13))

# Indices of the per-CPU `counters` array, as in dns_trace.c.
COUNTERS = ["events", "lost", "non_dns", "non_ip", "truncated_header", "tcp_no_payload"]

# A ring-buffer record: an 8-byte header (length with busy/discard bits, page
# offset), then the event, padded to 8 bytes. Every record has the same size.
RECORD_DTYPE = np.dtype([("length", "<u4"), ("page_offset", "<u4"), ("event", f"V{EVENT_DTYPE.itemsize}")])
assert RECORD_DTYPE.itemsize % 8 == 0
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_SOCKET_FILTER = 1
SO_ATTACH_BPF = 50
ETH_P_ALL = 0x0003
CB0_OFFSET = 48  # offsetof(struct __sk_buff, cb[0])
BPF_FUNC_TAIL_CALL = 12

_libc = ct.CDLL(None, use_errno=True)


def _bpf_syscall(cmd: int, attr: bytes) -> int:
    buf = ct.create_string_buffer(attr, 128)
    result = _libc.syscall(SYS_BPF, cmd, buf, 128)
    if result < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return result if cmd != BPF_PROG_TEST_RUN else buf.raw


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def dispatcher_instructions(capture_id: int, prog_array_fd: int) -> bytes:
    """skb->cb[0] = capture_id; tail_call(skb, prog_array, 0); return 0."""
    return b"".join(
        [
            _insn(0xB7, dst=2, imm=capture_id),  # r2 = capture_id
            _insn(0x63, dst=1, src=2, off=CB0_OFFSET),  # *(u32 *)(r1 + cb[0]) = r2
            _insn(0x18, dst=2, src=1, imm=prog_array_fd),  # r2 = map fd (BPF_PSEUDO_MAP_FD), two slots
            _insn(0x00),
            _insn(0xB7, dst=3, imm=0),  # r3 = 0
            _insn(0x85, imm=BPF_FUNC_TAIL_CALL),
            _insn(0xB7, dst=0, imm=0),  # return 0: never queue the packet on the socket
            _insn(0x95),
        ]
    )


def load_socket_filter(instructions: bytes, name: bytes = b"dnsc_dispatch") -> int:
    """Load raw socket-filter instructions; returns the program fd."""
    license_ = ct.create_string_buffer(b"GPL")
    insns = ct.create_string_buffer(instructions)
    log = ct.create_string_buffer(4096)
    attr = struct.pack(
        "<IIQQIIQII16s", BPF_PROG_TYPE_SOCKET_FILTER, len(instructions) // 8, ct.addressof(insns),
        ct.addressof(license_), 1, len(log), ct.addressof(log), 0, 0, name,
    )
    try:
        return _bpf_syscall(BPF_PROG_LOAD, attr)
    except OSError as err:
        raise CaptureError(f"loading the dispatcher failed: {err.strerror}: {log.value.decode(errors='replace')}") from None


class RingReader:
    """Reads a BPF ring buffer of fixed-size records straight from its memory map, a batch at a time.

    bcc's reader calls back into Python once per record, several microseconds
    each; here a batch is one numpy view and one copy. The layout is the
    kernel's: a consumer page we write, then (read-only) a producer page and
    the data area mapped twice, so a batch that wraps is still contiguous.
    Only records below the producer position and before the first one still
    being written are taken; beyond it lie stale records of the previous lap.
    x86's ordering makes plain loads and stores acquire and release.
    """

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        self.mask = data_size - 1
        self._consumer_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._consumer_pos = np.frombuffer(self._consumer_map, "<u8", 1)
        self._producer_pos = np.frombuffer(self._producer_map, "<u8", 1)
        self._data_offset = page
        self._epoll = select.epoll()
        # Edge-triggered: a ring with data in it always polls readable, so a level-triggered reader under
        # load never sleeps and drains a few records at a time; this one wakes only when the kernel says so.
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def wait(self, timeout_ms: int) -> None:
        self._epoll.poll(timeout_ms / 1000)

    def read(self) -> bytes:
        """The events (without record headers) committed since the last read, concatenated."""
        consumer = int(self._consumer_pos[0])
        available = (int(self._producer_pos[0]) - consumer) // RECORD_DTYPE.itemsize
        if available <= 0:
            return b""
        records = np.frombuffer(self._producer_map, RECORD_DTYPE, available, self._data_offset + (consumer & self.mask))
        lengths = records["length"]
        busy = np.flatnonzero(lengths & BUSY_BIT)
        taken = records[: busy[0]] if busy.size else records
        if ((taken["length"] & ~np.uint32(BUSY_BIT | DISCARD_BIT)) != EVENT_DTYPE.itemsize).any():
            raise CaptureError(f"ring buffer records are not all {EVENT_DTYPE.itemsize} bytes: "
                               "bpf/dns_trace.c and EVENT_DTYPE disagree")
        discarded = (taken["length"] & DISCARD_BIT) != 0
        events = (taken["event"][~discarded] if discarded.any() else taken["event"]).tobytes()  # one copy
        del records, lengths, taken  # release the views into the map before moving on
        self._consumer_pos[0] = consumer + (busy[0] if busy.size else available) * RECORD_DTYPE.itemsize
        return events


class Tracer:
    """The compiled tracer of this process: attach points, ring buffer, counters."""

    def __init__(self) -> None:
        try:
            from bcc import BPF
        except ImportError:
            raise CaptureError("bcc is not importable: run `make setup` (Debian python3-bpfcc, venv with system site-packages)") from None
        if os.geteuid() != 0:
            raise CaptureError("eBPF capture needs root")
        build = Path(f"/lib/modules/{os.uname().release}/build")
        if not build.exists():
            raise CaptureError(f"bcc needs kernel headers at {build}: run `make setup`")
        try:
            self.bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=[f"-DPAYLOAD_MAX={PAYLOAD_MAX}", f"-DRING_PAGES={RING_PAGES}", "-w"])
            self.tracer = self.bpf.load_func(b"dns_trace", BPF.SOCKET_FILTER)
        except Exception as err:  # bcc raises bare Exception for compile and verifier errors
            raise CaptureError(f"compiling {BPF_SOURCE.name} failed: {err}") from None
        self.bpf[b"progs"][ct.c_int(0)] = ct.c_int(self.tracer.fd)
        self._sink: list[bytes] | None = None
        self._ports: list[int] = []
        ring = self.bpf[b"events"]
        self.ring = RingReader(ring.map_fd, ring.max_entries)

    def set_ports(self, ports: list[int]) -> None:
        table = self.bpf[b"dns_ports"]  # an array indexed by port: unset the previous ones, set these
        for port, traced in [*((p, 0) for p in self._ports), *((p, 1) for p in ports)]:
            table[ct.c_int(port)] = ct.c_uint8(traced)
        self._ports = list(ports)

    def reset(self) -> None:
        """Forget queries seen by an earlier capture in this process (they no longer match any response)."""
        table = self.bpf[b"generation"]
        table[ct.c_int(0)] = ct.c_uint32(table[ct.c_int(0)].value + 1)

    def counters(self) -> dict[str, int]:
        table = self.bpf[b"counters"]
        return {name: int(sum(table[ct.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def attach(self, netns_path: str, capture_id: int) -> socket.socket:
        """Trace every packet of the namespace at `netns_path` as `capture_id`; close the socket to stop."""
        fd = load_socket_filter(dispatcher_instructions(capture_id, self.bpf[b"progs"].map_fd))
        try:
            with nsenter.entered_path(netns_path):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)
        finally:
            os.close(fd)  # the socket holds its own reference to the program
        return sock

    def start(self, sink: list[bytes]) -> None:
        self._sink = sink

    def poll(self, timeout_ms: int) -> None:
        """Wait until the kernel wakes us (every few hundred events) or `timeout_ms` passes, then drain."""
        self.ring.wait(timeout_ms)
        self.drain()

    def drain(self) -> None:
        """Move every committed event into the sink (dropped when no capture is running)."""
        events = self.ring.read()
        sink = self._sink
        if events and sink is not None:
            sink.append(events)

    def stop(self) -> None:
        self._sink = None

    def test_run(self, frame: bytes, capture_id: int = 1) -> None:
        """Run the tracer on one crafted Ethernet frame (BPF_PROG_TEST_RUN); its event lands in the sink."""
        ctx = bytearray(192)  # struct __sk_buff, zeroed but for cb[0]
        struct.pack_into("<I", ctx, CB0_OFFSET, capture_id)
        data = ct.create_string_buffer(frame, len(frame))
        ctx_buf = ct.create_string_buffer(bytes(ctx), len(ctx))
        attr = struct.pack(
            "<IIIIQQIIIIQQ", self.tracer.fd, 0, len(frame), 0, ct.addressof(data), 0, 1, 0, len(ctx), 0,
            ct.addressof(ctx_buf), 0,
        )
        _bpf_syscall(BPF_PROG_TEST_RUN, attr)


@functools.cache
def tracer() -> Tracer:
    """The process's one compiled tracer (compiling costs about a second; attaching, microseconds)."""
    return Tracer()
