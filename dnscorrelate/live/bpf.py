"""The eBPF side of capture: load `bpf/dns_trace.c` once, attach it in any network namespace.

One process loads the tracer once, in one of two ways from the same source
(`DNSCORRELATE_TRACER`): `bcc` (the default, the local capture) compiles it
at run time against the kernel's headers, ~1 s; `core` loads the object
`bpf/build.sh` compiled ahead of time with libbpf, in milliseconds and with no
headers, as the node agent does. Everything after loading is shared: maps are
reached by their file descriptors with the bpf(2) syscall, whichever loaded
them. Each namespace gets a dispatcher of eight raw instructions, loaded with
bpf(2) in microseconds, that stamps the namespace's capture id into
`skb->cb[0]` and tail-calls the tracer (a node's dispatcher first returns on
what the node sends into a captured namespace's veth: `skip_outgoing`). The dispatcher is attached to an
AF_PACKET socket created inside the namespace; the socket stays bound to that
namespace after the thread returns home. Events arrive on one ring buffer.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import functools
import hashlib
import mmap
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnscorrelate.errors import CaptureError
from dnscorrelate.live import nsenter
from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX  # noqa: F401 (re-exported: the records it reads)

BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "dns_trace.c"
TRACER_ENV = "DNSCORRELATE_TRACER"  # how this process loads the tracer: TRACERS
TRACERS = ("bcc", "core")
TRACER_DIR_ENV = "DNSCORRELATE_TRACER_DIR"  # where `bpf/build.sh` put the compiled object, if not a default place
BTF_ENV = "DNSCORRELATE_BTF"  # a BTF file for a kernel without /sys/kernel/btf/vmlinux, for libbpf
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
# Maps the tracer declares and user space reaches (by file descriptor, whichever loader made them).
MAPS = ("events", "progs", "counters", "dns_ports", "generation")
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
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_SOCKET_FILTER = 1
SO_ATTACH_BPF = 50
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23  # linux/socket.h, linux/if_packet.h (Linux 4.20+)
ETH_P_ALL = 0x0003
CB0_OFFSET = 48  # offsetof(struct __sk_buff, cb[0])
PKT_TYPE_OFFSET, IFINDEX_OFFSET = 4, 40  # offsetof(struct __sk_buff, pkt_type), (…, ifindex)
PACKET_OUTGOING = 4  # linux/if_packet.h
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


def dispatcher_instructions(capture_id: int, prog_array_fd: int, skip_outgoing: tuple[int, ...] = ()) -> bytes:
    """skb->cb[0] = capture_id; tail_call(skb, prog_array, 0); return 0. With `skip_outgoing`, a packet the
    namespace sends out of one of those interfaces returns at once: one compare an interface, no tracer run."""
    skip = []
    if skip_outgoing:
        last = len(skip_outgoing)
        skip = [
            _insn(0x61, dst=2, src=1, off=PKT_TYPE_OFFSET),  # r2 = skb->pkt_type
            _insn(0x55, dst=2, off=last + 1, imm=PACKET_OUTGOING),  # if r2 != OUTGOING: on to the tracer
            _insn(0x61, dst=2, src=1, off=IFINDEX_OFFSET),  # r2 = skb->ifindex
            # if r2 == index: to the closing `return 0`, past the tracer's seven instructions and the compares after it
            *[_insn(0x15, dst=2, off=last - i - 1 + 6, imm=index) for i, index in enumerate(skip_outgoing)],
        ]
    return b"".join(
        [
            *skip,
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

    def fill(self) -> float:
        """The share of the ring holding records not read yet."""
        return (int(self._producer_pos[0]) - int(self._consumer_pos[0])) / (self.mask + 1)

    def read(self) -> bytes:
        """The events (without record headers) committed since the last read, concatenated."""
        with self.in_place() as events:
            return events.tobytes()  # one copy

    @contextlib.contextmanager
    def in_place(self) -> Iterator[np.ndarray]:
        """The events committed since the last read, as EVENT_DTYPE rows read where they lie in the ring (a view,
        valid only inside the block: what the kernel writes next lands there), then consumed."""
        consumer = int(self._consumer_pos[0])
        available = (int(self._producer_pos[0]) - consumer) // RECORD_DTYPE.itemsize
        if available <= 0:
            yield np.empty(0, dtype=EVENT_DTYPE)
            return
        records = np.frombuffer(self._producer_map, RECORD_DTYPE, available, self._data_offset + (consumer & self.mask))
        lengths = records["length"]
        busy = np.flatnonzero(lengths & BUSY_BIT)
        taken = records[: busy[0]] if busy.size else records
        if ((taken["length"] & ~np.uint32(BUSY_BIT | DISCARD_BIT)) != EVENT_DTYPE.itemsize).any():
            raise CaptureError(f"ring buffer records are not all {EVENT_DTYPE.itemsize} bytes: "
                               "bpf/dns_trace.c and EVENT_DTYPE disagree")
        discarded = (taken["length"] & DISCARD_BIT) != 0
        events = (taken["event"][~discarded] if discarded.any() else taken["event"]).view(EVENT_DTYPE)
        try:
            yield events
        finally:
            del records, lengths, taken, events  # release the views into the map before moving on
            self._consumer_pos[0] = consumer + (busy[0] if busy.size else available) * RECORD_DTYPE.itemsize


@dataclass
class Loaded:
    """A tracer in the kernel: its program and maps as file descriptors, held open by `owner`."""

    how: str  # one of TRACERS
    program_fd: int
    map_fds: dict[str, int]
    ring_bytes: int
    owner: object  # bcc's BPF or libbpf's bpf_object: closing it would close the fds
    source: str  # what was loaded: the source bcc compiled, or the object libbpf loaded


def load_with_bcc() -> Loaded:
    """Compile `bpf/dns_trace.c` with bcc against this kernel's headers (~1 s)."""
    try:
        from bcc import BPF
    except ImportError:
        raise CaptureError("bcc is not importable: run `make setup` (Debian python3-bpfcc, venv with system site-packages)") from None
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise CaptureError(f"bcc needs kernel headers at {build}: run `make setup`")
    try:
        compiled = BPF(src_file=str(BPF_SOURCE).encode(), cflags=[f"-DPAYLOAD_MAX={PAYLOAD_MAX}", f"-DRING_PAGES={RING_PAGES}", "-w"])
        program = compiled.load_func(b"dns_trace", BPF.SOCKET_FILTER)
    except Exception as err:  # bcc raises bare Exception for compile and verifier errors
        raise CaptureError(f"compiling {BPF_SOURCE.name} failed: {err}") from None
    return Loaded("bcc", program.fd, {name: compiled[name.encode()].map_fd for name in MAPS},
                  compiled[b"events"].max_entries, compiled, str(BPF_SOURCE))


def object_name(source: Path = BPF_SOURCE) -> str:
    """The file `bpf/build.sh` compiles `source` into: keyed by its content, so a changed source never runs an older object."""
    return f"dns_trace-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}.bpf.o"


def object_dirs() -> list[Path]:
    """Where the compiled tracer is looked for, in order: $DNSCORRELATE_TRACER_DIR, the agent images' place, the
    cache `make cluster` builds it into, the checkout's bpf/build."""
    cache = Path(os.environ.get("DNSCORRELATE_CACHE", "/var/cache/dnscorrelate")) / "kind" / "tracer"
    dirs = [Path(os.environ[TRACER_DIR_ENV])] if os.environ.get(TRACER_DIR_ENV) else []
    return [*dirs, Path("/opt/dnscorrelate/tracer"), cache, BPF_SOURCE.parent / "build"]


def core_object() -> Path:
    """The compiled object of this checkout's `bpf/dns_trace.c`, or an error saying how to build it."""
    name = object_name()
    for directory in object_dirs():
        try:
            if (directory / name).is_file():
                return directory / name
        except PermissionError:  # a directory this user may not read: as good as absent
            continue
    raise CaptureError(f"no compiled tracer {name} (from {BPF_SOURCE}) in {', '.join(map(str, object_dirs()))}: build it "
                       "with `bpf/build.sh DIR` (clang and libbpf-dev; `make cluster` builds it into the cache) and set "
                       f"{TRACER_DIR_ENV}=DIR if DIR is not one of these")


class _OpenOpts(ct.Structure):
    """libbpf 1.x's struct bpf_object_open_opts."""

    _fields_ = [("sz", ct.c_size_t), ("object_name", ct.c_char_p), ("relaxed_maps", ct.c_bool),
                ("pin_root_path", ct.c_char_p), ("_removed_attach_prog_fd", ct.c_uint32), ("kconfig", ct.c_char_p),
                ("btf_custom_path", ct.c_char_p), ("kernel_log_buf", ct.c_char_p), ("kernel_log_size", ct.c_size_t),
                ("kernel_log_level", ct.c_uint32)]


_PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)  # level, format, va_list
_libbpf_messages: list[str] = []  # what libbpf said while loading (the verifier's log on a failure)


@_PRINT_FN
def _keep_libbpf_message(level: int, fmt: bytes, args: int) -> int:
    if level <= 1 and len(_libbpf_messages) < 400:  # warnings and information, not debug
        text = ct.create_string_buffer(1024)
        _libc.vsnprintf(text, len(text), fmt, args)
        _libbpf_messages.append(text.value.decode(errors="replace").rstrip())
    return 0


@functools.cache
def _libbpf() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        raise CaptureError("libbpf is missing: install libbpf 1.x (Debian and Ubuntu: libbpf1)") from None
    lib.bpf_object__open_file.restype = ct.c_void_p
    lib.bpf_object__open_file.argtypes = [ct.c_char_p, ct.POINTER(_OpenOpts)]
    lib.bpf_object__load.argtypes = [ct.c_void_p]
    lib.bpf_object__close.argtypes = [ct.c_void_p]
    lib.bpf_object__find_map_by_name.restype = ct.c_void_p
    lib.bpf_object__find_map_by_name.argtypes = [ct.c_void_p, ct.c_char_p]
    lib.bpf_object__find_map_fd_by_name.argtypes = [ct.c_void_p, ct.c_char_p]
    lib.bpf_map__set_max_entries.argtypes = [ct.c_void_p, ct.c_uint32]
    lib.bpf_map__max_entries.restype = ct.c_uint32
    lib.bpf_map__max_entries.argtypes = [ct.c_void_p]
    lib.libbpf_strerror.argtypes = [ct.c_int, ct.c_char_p, ct.c_size_t]
    lib.bpf_object__find_program_by_name.restype = ct.c_void_p
    lib.bpf_object__find_program_by_name.argtypes = [ct.c_void_p, ct.c_char_p]
    lib.bpf_program__fd.argtypes = [ct.c_void_p]
    _libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]
    lib.libbpf_set_print(_keep_libbpf_message)
    return lib


def load_failure(path: Path, error: str, kernel: str, btf_present: bool, btf_file: str | None, said: list[str]) -> str:
    """Why loading the compiled tracer failed, naming the kernel, with what libbpf said and what to do."""
    lines = [f"loading the tracer {path.name} on kernel {kernel} failed: {error}"]
    lines += [f"  libbpf: {line.removeprefix('libbpf: ')}" for line in said[-12:] if line]
    if not btf_present and not btf_file:
        lines.append(f"kernel {kernel} has no BTF ({KERNEL_BTF} is absent), which libbpf needs to relocate the object: use "
                     "a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4), or give a BTF "
                     f"file for exactly this kernel in {BTF_ENV} (BTFHub publishes them for older distribution kernels)")
    lines.append("what the tracer needs: Linux 5.8 or later (the BPF ring buffer, bpf_ktime_get_boot_ns) and CAP_SYS_ADMIN "
                 "(or CAP_BPF with CAP_PERFMON); no kernel headers")
    return "\n".join(lines)


def libbpf_error(code: int) -> str:
    """libbpf's words for an error code: errno values and its own (4000 and up, e.g. not an ELF object)."""
    text = ct.create_string_buffer(256)
    _libbpf().libbpf_strerror(code, text, len(text))
    return text.value.decode(errors="replace")


def load_with_libbpf() -> Loaded:
    """Load the object `bpf/build.sh` compiled ahead of time (`core_object`) with libbpf: no compiler, no headers."""
    path = core_object()
    lib = _libbpf()
    btf_file = os.environ.get(BTF_ENV) or None
    opts = _OpenOpts(sz=ct.sizeof(_OpenOpts), btf_custom_path=btf_file.encode() if btf_file else None)
    del _libbpf_messages[:]
    owner = lib.bpf_object__open_file(str(path).encode(), ct.byref(opts))
    if not owner:
        raise CaptureError(f"libbpf cannot open {path}: {libbpf_error(ct.get_errno())}; "
                           + " ".join(_libbpf_messages[-3:]) + " (rebuild it with bpf/build.sh)")
    ring = lib.bpf_object__find_map_by_name(owner, b"events")
    if not ring or lib.bpf_map__set_max_entries(ring, RING_PAGES * mmap.PAGESIZE) != 0:
        lib.bpf_object__close(owner)
        raise CaptureError(f"{path} has no ring buffer `events` of a settable size: rebuild it with bpf/build.sh")
    error = -lib.bpf_object__load(owner)
    if error:
        lib.bpf_object__close(owner)
        raise CaptureError(load_failure(path, libbpf_error(error), os.uname().release, KERNEL_BTF.exists(), btf_file,
                                        _libbpf_messages))
    ring_bytes = lib.bpf_map__max_entries(ring)  # libbpf rounds a ring buffer's size up to a power-of-two of pages
    program_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(owner, b"dns_trace"))
    return Loaded("core", program_fd, {name: lib.bpf_object__find_map_fd_by_name(owner, name.encode()) for name in MAPS},
                  ring_bytes, owner, str(path))


@functools.cache
def possible_cpus() -> int:
    """How many values a per-CPU map holds per key: the kernel's possible CPUs (`0-3`, `0,2-5`, ...)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def map_update(map_fd: int, key: ct._SimpleCData, value: ct._SimpleCData) -> None:
    attr = struct.pack("<IIQQQ", map_fd, 0, ct.addressof(key), ct.addressof(value), 0)
    _bpf_syscall(BPF_MAP_UPDATE_ELEM, attr)


def map_lookup(map_fd: int, key: ct._SimpleCData, value: ct.Array | ct._SimpleCData) -> None:
    attr = struct.pack("<IIQQQ", map_fd, 0, ct.addressof(key), ct.addressof(value), 0)
    _bpf_syscall(BPF_MAP_LOOKUP_ELEM, attr)


def tracer_choice() -> str:
    """How this process loads the tracer: $DNSCORRELATE_TRACER, `bcc` by default."""
    how = os.environ.get(TRACER_ENV, "bcc")
    if how not in TRACERS:
        raise CaptureError(f"{TRACER_ENV}={how!r}: choose one of {', '.join(TRACERS)}")
    return how


class Tracer:
    """The loaded tracer of this process: attach points, ring buffer, counters."""

    def __init__(self, how: str = "bcc") -> None:
        if os.geteuid() != 0:
            raise CaptureError("eBPF capture needs root")
        self.loaded = load_with_libbpf() if how == "core" else load_with_bcc()
        self.how = how
        self.maps = self.loaded.map_fds
        map_update(self.maps["progs"], ct.c_uint32(0), ct.c_uint32(self.loaded.program_fd))
        self._sink: list[bytes] | None = None
        self._ports: list[int] = []
        self.ring = RingReader(self.maps["events"], self.loaded.ring_bytes)

    def set_ports(self, ports: list[int]) -> None:
        # an array indexed by port: unset the previous ones, set these
        for port, traced in [*((p, 0) for p in self._ports), *((p, 1) for p in ports)]:
            map_update(self.maps["dns_ports"], ct.c_uint32(port), ct.c_uint8(traced))
        self._ports = list(ports)

    def reset(self) -> None:
        """Forget queries seen by an earlier capture in this process (they no longer match any response)."""
        generation = ct.c_uint32()
        map_lookup(self.maps["generation"], ct.c_uint32(0), generation)
        map_update(self.maps["generation"], ct.c_uint32(0), ct.c_uint32(generation.value + 1))

    def counters(self) -> dict[str, int]:
        per_cpu = (ct.c_uint64 * possible_cpus())()
        totals = {}
        for index, name in enumerate(COUNTERS):
            map_lookup(self.maps["counters"], ct.c_uint32(index), per_cpu)
            totals[name] = int(sum(per_cpu))
        return totals

    def attach(self, netns_path: str, capture_id: int, receive_only: bool = False) -> socket.socket:
        """Trace every packet of the namespace at `netns_path` as `capture_id` (with `receive_only`, only those that
        arrive there: the kernel skips the socket for packets the namespace sends); close the socket to stop."""
        with nsenter.entered_path(netns_path):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            if receive_only:  # before the filter: no packet the namespace sent is ever traced
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.skip_outgoing(sock, capture_id, ())
        except BaseException:
            sock.close()
            raise
        return sock

    def skip_outgoing(self, sock: socket.socket, capture_id: int, interfaces: tuple[int, ...]) -> None:
        """Attach to `sock` (again: the kernel swaps the filter whole) a dispatcher that skips the packets its namespace
        sends out of `interfaces` (ifindexes) and hands every other to the tracer as `capture_id`."""
        fd = load_socket_filter(dispatcher_instructions(capture_id, self.maps["progs"], tuple(interfaces)))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)
        finally:
            os.close(fd)  # the socket holds its own reference to the program

    def start(self, sink: list[bytes]) -> None:
        self._sink = sink

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
            "<IIIIQQIIIIQQ", self.loaded.program_fd, 0, len(frame), 0, ct.addressof(data), 0, 1, 0, len(ctx), 0,
            ct.addressof(ctx_buf), 0,
        )
        _bpf_syscall(BPF_PROG_TEST_RUN, attr)


def tracer(how: str | None = None) -> Tracer:
    """The process's one loaded tracer of each kind (`how`, else $DNSCORRELATE_TRACER): bcc compiles for about a second,
    libbpf loads in milliseconds; attaching costs microseconds."""
    return _loaded_tracer(how or tracer_choice())


@functools.cache
def _loaded_tracer(how: str) -> Tracer:
    return Tracer(how)
