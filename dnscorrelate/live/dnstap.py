"""CoreDNS's dnstap, live: a sink that CoreDNS connects to, and a follower that reads what it received.

CoreDNS's `dnstap unix://SOCKET full` is a Frame Streams *writer* that connects to a listening socket:
it sends READY (offering `protobuf:dnstap.Dnstap`), waits for ACCEPT, sends START, then data frames
(flushed at least once a second), and STOP on shutdown, to which the reader answers FINISH. When the
socket is not there it drops its messages and dials again only every 10 seconds (plugin/dnstap/io.go,
CoreDNS 1.14). So the listener must be up before CoreDNS starts and stay up: the lab runs a `Sink`
(`python -m dnscorrelate.live.dnstap DIR NAME...`) before its replicas, one socket per replica
`DIR/NAME.sock`, appending every data frame to `DIR/NAME.fstrm`, a Frame Streams file (START, data
frames) that `correlate --dnstap` also reads. A session's `DnstapFollower` reads the frames appended
to those files since it started, and decodes them as `dnstap.read_dnstap` does, at the replica.

The `fstrm` package is a codec only (frame encoding and decoding, no sockets), so the reader's side
of the bidirectional handshake is written here on top of it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import fstrm
import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError

import dnstap_pb
from dnscorrelate import events
from dnscorrelate.senders import sent_from, vantage_names
from dnscorrelate.sources.dnstap import CONTENT_TYPE, message_row, replica_vantage
from dnscorrelate.sources.pcap import frame_of_rows

FLUSH_S = 1.0  # CoreDNS flushes its Frame Streams writer on this tick (plugin/dnstap/io.go flushTimeout)
RECV_BYTES = 16384


class HandshakeError(Exception):
    """The writer broke the Frame Streams bidirectional protocol."""


def control_frames(connection: socket.socket, codec: fstrm.FstrmCodec):
    """(kind, content types, payload) of each frame arriving on `connection`, until it closes."""
    while True:
        chunk = connection.recv(RECV_BYTES)
        if not chunk:
            return
        codec.append(chunk)
        while codec.process():
            try:
                yield codec.decode()
            except Exception as err:  # the codec raises bare Exceptions on malformed control frames
                raise HandshakeError(f"bad control frame: {err}") from None


def receive_stream(connection: socket.socket, on_data) -> str:
    """Be the reader of one bidirectional Frame Streams connection: READY -> ACCEPT, START, data frames
    (each handed to `on_data`), STOP -> FINISH. Returns "finished" after STOP, "closed" when the writer
    went away without it; raises HandshakeError when it offers no dnstap or sends frames out of order."""
    codec = fstrm.FstrmCodec()
    state = "ready"
    for kind, content_types, payload in control_frames(connection, codec):
        if state == "ready":
            if kind != fstrm.FSTRM_CONTROL_READY:
                raise HandshakeError(f"expected READY, got frame type {kind}")
            if content_types and CONTENT_TYPE not in content_types:
                raise HandshakeError(f"the writer offers {[c.decode(errors='replace') for c in content_types]}, not dnstap")
            connection.sendall(codec.encode_ctrlaccept(CONTENT_TYPE))
            state = "accepted"
        elif state == "accepted":
            if kind != fstrm.FSTRM_CONTROL_START:
                raise HandshakeError(f"expected START, got frame type {kind}")
            state = "started"
        elif kind == fstrm.FSTRM_DATA_FRAME:
            on_data(payload)
        elif kind == fstrm.FSTRM_CONTROL_STOP:
            connection.sendall(codec.encode(ctrl=fstrm.FSTRM_CONTROL_FINISH))
            return "finished"
        else:
            raise HandshakeError(f"unexpected control frame type {kind} in the data")
    return "closed"


class Sink:
    """Listen on DIR/NAME.sock for each name; append the data frames every connection sends to
    DIR/NAME.fstrm (one file per name, begun with a START frame). Several connections per name are
    fine (CoreDNS opens one per server block with dnstap, and a new one after a reload)."""

    def __init__(self, directory: str | Path, names: list[str]) -> None:
        self.directory = Path(directory)
        self.names = list(names)
        self.stats: Counter = Counter()
        self.listeners: list[socket.socket] = []
        self.connections: set[socket.socket] = set()
        self.files: dict[str, int] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.closed = threading.Event()

    def socket_path(self, name: str) -> Path:
        return self.directory / f"{name}.sock"

    def file_path(self, name: str) -> Path:
        return self.directory / f"{name}.fstrm"

    def start(self) -> Sink:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            fd = os.open(self.file_path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if os.fstat(fd).st_size == 0:
                os.write(fd, fstrm.FstrmCodec().encode_ctrlstart(CONTENT_TYPE))
            self.files[name], self.locks[name] = fd, threading.Lock()
            path, bound = self.socket_path(name), self.directory / f".{name}.sock"
            bound.unlink(missing_ok=True)  # left by a sink that was killed
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(bound))
            listener.listen(8)
            bound.replace(path)  # the socket appears only once it accepts: a writer never finds it refusing
            self.listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, name), daemon=True, name=f"dnstap-{name}").start()
        return self

    def _accept(self, listener: socket.socket, name: str) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            self.connections.add(connection)
            self.stats["connections"] += 1
            threading.Thread(target=self._serve, args=(connection, name), daemon=True).start()

    def _serve(self, connection: socket.socket, name: str) -> None:
        def append(payload: bytes) -> None:
            with self.locks[name]:  # one write per frame, so the file only ever holds whole frames
                os.write(self.files[name], len(payload).to_bytes(4, "big") + payload)
            self.stats["frames"] += 1

        try:
            self.stats[receive_stream(connection, append)] += 1
        except HandshakeError as err:
            self.stats["handshake_errors"] += 1
            print(f"dnstap sink {name}: {err}", file=sys.stderr, flush=True)
        except OSError:
            self.stats["closed"] += 1
        finally:
            self.connections.discard(connection)
            connection.close()

    def close(self) -> None:
        """Stop listening, drop the connections, remove the sockets (the frame files stay)."""
        self.closed.set()
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections):
            connection.close()
        for name in self.names:
            self.socket_path(name).unlink(missing_ok=True)
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()


class DnstapFollower:
    """The dnstap messages appended to sink files since `start`, as packet events at each file's replica.

        follower = DnstapFollower([("coredns-0", "/run/.../dnstap/coredns-0.fstrm")]).start()
        follower.new_events()        # rows decoded since the last call
        follower.events()            # every row since start, latencies matched across calls
        follower.stats               # frames, client_query, ..., bad_frames, not_messages, undecodable
    """

    def __init__(self, sources: list[tuple[str, str | Path]], logs: list[tuple[str, str | Path]] = ()) -> None:
        self.sources = [(replica, Path(path)) for replica, path in sources]
        followed = {replica for replica, _ in self.sources}
        self.logs = [Path(path) for replica, path in logs if replica in followed]  # where CoreDNS says what it dropped
        self.offsets: dict[Path, int] = {}
        self.codecs: dict[Path, fstrm.FstrmCodec] = {}
        self.names = [(*replica_vantage(replica, b"", path), "dnstap") for replica, path in self.sources]
        self.rows: list = []
        self.read_rows = 0
        self.counts: Counter = Counter()
        self.undecodable = 0  # messages whose DNS bytes did not decode, as of the last events()
        self.stopped = False
        self.window = (0, 2**63 - 1)  # ns: messages timed outside it (sent late by CoreDNS's 1 s flush) are counted, not kept
        self.alignment: dict = {}
        self.recent: list[pd.DataFrame] = []  # the replicas' packets of the last seconds, for new_with_packets

    def start(self, since_ns: int | None = None) -> DnstapFollower:
        """Follow from the files' current ends, keeping messages timed from `since_ns` (now by default) on."""
        self.window = (time.time_ns() if since_ns is None else since_ns, self.window[1])
        for _, path in self.sources:
            self.offsets[path] = path.stat().st_size if path.exists() else 0
            self.codecs[path] = fstrm.FstrmCodec()
        return self

    def settle(self, quiet_s: float = 0.3, limit_s: float = 3.0) -> None:
        """Wait for CoreDNS's next flush (FLUSH_S), then until the files stop growing for `quiet_s` (a loaded
        machine writes late), `limit_s` at most: what was sent before a session stops should be in it."""
        time.sleep(FLUSH_S)
        deadline = time.monotonic() + limit_s
        sizes = self._sizes()
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            sizes, before = self._sizes(), sizes
            if sizes == before:
                return

    def _sizes(self) -> list[int]:
        return [path.stat().st_size if path.exists() else 0 for _, path in self.sources]

    def stop(self) -> None:
        """Read what has arrived, and nothing after: the session's window ends here."""
        self.window = (self.window[0], time.time_ns())
        self._read()
        self.stopped = True

    def _read(self) -> None:
        if self.stopped or not self.offsets:  # not started, or stopped
            return
        for index, (_, path) in enumerate(self.sources):
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[path])
                    data = f.read()
            except FileNotFoundError:
                continue
            self.offsets[path] += len(data)
            codec = self.codecs[path]
            codec.append(data)
            while codec.process():
                try:
                    kind, _, payload = codec.decode()
                except Exception:  # the codec raises bare Exceptions on malformed control frames
                    self.counts["bad_control_frames"] += 1
                    continue
                if kind == fstrm.FSTRM_DATA_FRAME:
                    self._add(payload, index)
                else:
                    self.counts["control_frames"] += 1

    def _add(self, payload: bytes, vantage: int) -> None:
        self.counts["frames"] += 1
        tap = dnstap_pb.Dnstap()
        try:
            tap.ParseFromString(payload)
        except DecodeError:
            self.counts["bad_frames"] += 1
            return
        if tap.type != dnstap_pb.Dnstap.Type.MESSAGE or not tap.HasField("message"):
            self.counts["not_messages"] += 1
            return
        row = message_row(tap.message, vantage, self.counts)
        if row is None:
            return
        if not self.window[0] <= row.ts_ns <= self.window[1]:
            self.counts["outside_session"] += 1
            return
        self.rows.append(row)

    def _frame(self, rows: list) -> pd.DataFrame:
        if not rows:
            return events.empty_events()
        frame = frame_of_rows(rows, self.names, Counter())  # its counts are taken once, in `stats`
        return events.conform(frame.sort_values("ts_ns", kind="stable"))

    def new_events(self) -> pd.DataFrame:
        self._read()
        rows, self.read_rows = self.rows[self.read_rows :], len(self.rows)
        return self._frame(rows)

    def events(self) -> pd.DataFrame:
        self._read()
        self.read_rows = len(self.rows)
        frame = self._frame(self.rows)
        self.undecodable = int((~frame["decoded"]).sum())
        return frame

    def new_with_packets(self, packets: pd.DataFrame) -> pd.DataFrame:
        """New `packets` and the dnstap rows received since the last call, for live views: forwarder rows are
        aligned against the replicas' and nodes' packets of the last RECENT_NS (dnstap arrives up to a second late)."""
        tap = self.new_events()
        now = time.time_ns()
        # the replicas' packets, and the nodes' (a replica captured receive-only: its forwards are seen there)
        replicas = packets[packets["role"].isin(["coredns", "node"]).to_numpy()] if len(packets) else packets
        self.recent = [f for f in self.recent if f["ts_ns"].max() >= now - RECENT_NS] + ([replicas] if len(replicas) else [])
        if not len(tap):
            return packets
        aligned, _ = align_forwarder_ids(events.concat([*self.recent, tap]))
        return events.concat([packets, aligned[(aligned["ifname"] == "dnstap").to_numpy()]])

    def with_packets(self, packets: pd.DataFrame) -> pd.DataFrame:
        """`packets` and every dnstap row since start as one table, the forwarder rows given the DNS id their
        packets carried (`align_forwarder_ids`), so that they join their packets' upstream exchange."""
        frame = events.concat([packets, self.events()])
        frame, self.alignment = align_forwarder_ids(frame)
        return frame

    @property
    def stats(self) -> dict:
        """What was read: frames, each message type, what could not be used (`undecodable` as of the last
        `events()`), and bytes of a frame not yet whole. Nothing is dropped here; CoreDNS itself drops
        messages while no sink listens or its queue is full, and logs how many."""
        partial = sum(len(c.buf) + (4 if c.df_length is not None else 0) for c in self.codecs.values())
        dropped = dropped_by_coredns(self.logs, self.window[0]) if self.logs else {}
        return {**self.counts, "rows": len(self.rows), "undecodable": self.undecodable, "pending_bytes": partial,
                **self.alignment, **dropped}


DROPPED_LINE = re.compile(r"^(\S+Z) \[WARNING\] plugin/dnstap: Dropped dnstap messages: (\d+)", re.M)


def dropped_by_coredns(logs: list[Path], since_ns: int) -> dict:
    """What CoreDNS says it dropped (no sink connected, or its queue full) in timestamped log lines from
    `since_ns` on. It logs the count every 10 s, so drops of a session's last seconds may come after it."""
    total = 0
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        total += sum(int(n) for stamp, n in DROPPED_LINE.findall(text) if pd.Timestamp(stamp).value >= since_ns)
    return {"dropped_by_coredns": total}


ALIGN_TOLERANCE_NS = 10**9
RECENT_NS = 5 * 10**9


def align_forwarder_ids(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """`frame` with each dnstap FORWARDER_QUERY/RESPONSE row's dns_id set to the id of the packet it describes,
    and how many were aligned or had no packet. CoreDNS's forward plugin sends upstream under a new random id,
    but logs to dnstap the client's message (id restored): left so, the row would make a second upstream
    exchange beside its packets' (the correlator keys legs on the id). Its packet is the one captured at the
    same replica, in the same direction, on the same local port, to the same upstream, asking the same
    question, nearest in time (within 1 s). A replica captured receive-only (live/capture.py) records no query it
    sends: its forward is the node's sighting of it, from the replica's address, at the other end of its veth."""
    tap = (frame["ifname"] == "dnstap").to_numpy()
    qr = frame["qr"].to_numpy()
    towards_upstream = qr == (frame["pkt_type"] == "HOST").to_numpy()  # forwarder legs; the client legs are the opposite
    forwarder = tap & towards_upstream
    places = frame["vantage"].astype("category")
    vantages = set(places[tap].astype(str))
    replicas = dict(zip(frame.loc[forwarder & ~qr, "src_ip"].astype(str), places[forwarder & ~qr].astype(str)))  # by address
    sender = sent_from(frame, replicas)  # the correlator's rule: what a node saw leave a replica, the replica sent
    left_replica = (sender != places.cat.codes.to_numpy()) & ~qr
    vantage = pd.Series(vantage_names(places, sender), index=frame.index)
    packet = ~tap & (towards_upstream | left_replica) & (frame["kind"] == "dns").to_numpy() & vantage.isin(vantages).to_numpy()
    if not forwarder.any():
        return frame, {}
    if not packet.any():
        return frame, {"forwarder_ids_aligned": 0, "forwarder_ids_without_packet": int(forwarder.sum())}

    def keyed(mask: np.ndarray) -> pd.DataFrame:
        part = frame[mask]
        response = part["qr"].to_numpy()
        return pd.DataFrame({
            "row": np.flatnonzero(mask), "ts_ns": part["ts_ns"].to_numpy(), "dns_id": part["dns_id"].to_numpy(),
            "vantage": vantage[mask].to_numpy(), "qr": response,
            "proto": part["proto"].astype(str).to_numpy(), "qname": part["qname"].astype(str).to_numpy(),
            "qtype": part["qtype"].astype(str).to_numpy(),
            "local_port": np.where(response, part["dst_port"], part["src_port"]),
            "remote": np.where(response, part["src_ip"].astype(str) + ":" + part["src_port"].astype(str),
                               part["dst_ip"].astype(str) + ":" + part["dst_port"].astype(str)),
        }).sort_values("ts_ns", kind="stable")

    keys = ["vantage", "qr", "proto", "qname", "qtype", "local_port", "remote"]
    matched = pd.merge_asof(keyed(forwarder), keyed(packet)[["ts_ns", "dns_id", *keys]], on="ts_ns", by=keys,
                            direction="nearest", tolerance=ALIGN_TOLERANCE_NS, suffixes=("", "_wire"))
    found = matched["dns_id_wire"].notna().to_numpy()
    frame = frame.copy()
    column = frame.columns.get_loc("dns_id")
    frame.iloc[matched["row"].to_numpy()[found], column] = matched["dns_id_wire"].to_numpy()[found].astype(frame["dns_id"].dtype)
    return frame, {"forwarder_ids_aligned": int(found.sum()), "forwarder_ids_without_packet": int((~found).sum())}


def main(argv: list[str]) -> int:
    """`python -m dnscorrelate.live.dnstap DIR NAME...`: run a Sink until killed."""
    if len(argv) < 2:
        print("usage: python -m dnscorrelate.live.dnstap DIR NAME...", file=sys.stderr)
        return 2
    sink = Sink(argv[0], argv[1:]).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
