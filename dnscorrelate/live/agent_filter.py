"""What a node agent sends for `trace pod/NAME --agent`: the records of that pod's lookups and of what they caused
on this node (the legs the correlator stitches into its traces), and counters for the rest.

The agent sees every DNS packet of its node; a trace needs a handful. It keeps the tracer's records for
HOLD_NS, and sends those that belong to a followed exchange:

- an exchange is told by its DNS id, its client port and its question (`exchange_keys`: DNAT changes the
  addresses, not these); once followed, also by its DNS id and question alone, for its copies after a
  masquerade that also changed the port (kind's nodes do: 10.244.1.2:47909 leaves as 172.23.0.3:7359);
- the traced pod's exchanges are followed from any record that has one of its addresses, on either side
  (the client leg, the same query after DNAT at the node and at the server, its responses; ICMP errors and
  TCP handshakes of its connections too);
- a server's forward is followed when a query of the same question leaves a followed query's server, from
  the address that query was sent to, at the same vantage, after the query arrived and before the server
  answered it (at most SERVER_WAIT_NS): the rule `correlate/upstream.py`'s `link_parents` links a leg to its
  parent by. The forward's own forwards follow in turn (CoreDNS -> NodeLocal DNS -> upstream).

A record's whole question is hashed only when it could matter (`Batch.hash`): when it has the pod's address, a
DNS id some followed exchange has, or the first PREFIX bytes of its question at an address a followed query
reached or left from (`hash_probed`). The other records of a busy node (other pods' lookups) are counted from their
fixed fields alone: at 10k qps they are nearly all of them.

Records older than HOLD_NS that no followed exchange claimed are dropped and counted by kind
(`filtered_queries`, `filtered_responses`, `filtered_other`): the CLI shows them as records of other lookups,
not as loss. Followed exchanges are forgotten FOLLOW_NS after their last record.

What it cannot see: a forward sent from another address than the one the query reached (NodeLocal DNS
listening on a link-local address and asking from the node's) is not followed, nor the forward of a lookup
another client asked first and the server then answered both from (the traced pod's query is then answered
without a forward of its own, as the full stream shows too).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from dnscorrelate.sources.bpf import EVENT_DTYPE, PAYLOAD_MAX

HOLD_NS = 10_000_000  # a record waits this long for one written before it on another CPU that makes its exchange followed
SERVER_WAIT_NS = 10 * 10**9  # as correlate/upstream.py: how long after a query arrives its forwards may start
FOLLOW_NS = 30 * 10**9  # an exchange is followed this long after its last record (slow upstreams, retries)
FORGET_EVERY_NS = 10**9  # what is past FOLLOW_NS is forgotten at most this late: a thirtieth more held
KIND_DNS, KIND_ICMP_ERROR, KIND_TCP_CONTROL = 0, 1, 2
DNS_HEADER = 12
QUESTION_WINDOW = 128  # bytes of the question looked at (a multiple of 8): the name, type and class of most lookups
PREFIX = 8  # bytes of the question a record's cheap probe reads (one 64-bit word)
_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**63, size=PAYLOAD_MAX + 8, dtype=np.uint64) | np.uint64(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)
RECORD_BYTES = np.dtype((np.void, EVENT_DTYPE.itemsize))  # a record as its bytes, to copy it whole


def packed(address: str) -> bytes:
    """An address as the tracer's records hold it: 16 bytes, IPv4 in the first four."""
    raw = ipaddress.ip_address(address).packed
    return raw.ljust(16, b"\0")


def address_words(addresses: np.ndarray) -> np.ndarray:
    """(N, 16) address bytes as (N, 2) 64-bit words, to compare whole addresses at once."""
    return np.ascontiguousarray(addresses).view("<u8").reshape(-1, 2)


def question_window(records: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each record's first `width` bytes after the DNS header (after TCP's two length bytes), cut after the question
    (a name ends at its first zero byte: label lengths are never zero, and a compressed name never starts a
    question; then type and class) and case folded on every byte (a length byte is below 64, never a capital
    letter); and the question's length in it. A question longer than the window is the part in it."""
    payload = records["payload"]
    window = payload[:, DNS_HEADER:DNS_HEADER + width].copy()
    tcp = records["dns_at"] == 2
    if tcp.any():
        window[tcp] = payload[tcp, DNS_HEADER + 2:DNS_HEADER + 2 + width]
    zero = window == 0
    length = np.minimum(np.where(zero.any(axis=1), zero.argmax(axis=1) + 5, width), width)  # the root label, type, class
    window[np.arange(width)[None, :] >= length[:, None]] = 0
    window[(window >= 65) & (window <= 90)] += 32
    return window, length


def question_hashes(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each record's question (name lower-cased, type, class) hashed to 64 bits, and whether it has one, for all
    records at once from its `question_window` of QUESTION_WINDOW bytes."""
    window, length = question_window(records, QUESTION_WINDOW)
    captured = records["captured"].astype(np.int64) - records["dns_at"].astype(np.int64) - DNS_HEADER
    valid = (records["kind"] != KIND_TCP_CONTROL) & (records["qdcount"] >= 1) & (length <= captured)
    words = window.view("<u8")
    hashes = (words * _WEIGHTS[:words.shape[1]]).sum(axis=1, dtype=np.uint64) + length.astype(np.uint64)
    return np.where(valid, hashes, np.uint64(0)), valid


def question_prefixes(records: np.ndarray) -> np.ndarray:
    """Each record's `question_window` of PREFIX bytes as one 64-bit word: the first bytes `question_hashes` reads,
    so records of equal questions have equal prefixes."""
    return question_window(records, PREFIX)[0].view("<u8")[:, 0]


def exchange_keys(records: np.ndarray, questions: np.ndarray) -> np.ndarray:
    """A 64-bit key per record for its exchange: question, DNS id and the client's port (a response's destination
    port, a query's source port)."""
    response = (records["dns_flags"] >> 15).astype(bool)
    client_port = np.where(response, records["dport"], records["sport"]).astype(np.uint64)
    return questions * _MIX + (records["dns_id"].astype(np.uint64) << np.uint64(16)) + client_port


def among(rows: np.ndarray, values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """`rows` (a mask) whose value is one of `known` (distinct values): looked up in a hash table, and only for those rows (numpy's
    isin sorts every value, and at a busy node nearly every row is another pod's)."""
    out = np.zeros(len(values), dtype=bool)
    at = np.flatnonzero(rows)
    if len(at) and len(known):
        out[at] = pd.Index(known).get_indexer(values[at]) >= 0
    return out


def mix(*columns: np.ndarray) -> np.ndarray:
    """Columns of integers hashed together into one 64-bit key a row."""
    out = np.zeros(len(columns[0]), dtype=np.uint64)
    for column in columns:
        out = (out ^ column.astype(np.uint64)) * _MIX
    return out


class Batch:
    """The records a `take` decides, in time order (`f`: one column per feature), reaching back to their bytes (the
    held records, then each new batch, in `order`) to hash a row's question the first time it is needed, or to send
    or hold it: the records themselves are never joined into one array (at 10k qps, joining them cost a fifth of
    the agent's CPU)."""

    def __init__(self, parts: list[np.ndarray], order: np.ndarray, features: dict[str, np.ndarray]) -> None:
        self.parts, self.order, self.f = parts, order, features
        self.starts = np.cumsum([0] + [len(part) for part in parts[:-1]])  # each part's first row
        self.probes_seen: set[int] = set()  # the filter's probes its rows were looked up by

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """The records of the rows in `mask`, in time order (a copy, byte for byte: assigning EVENT_DTYPE rows would
        copy field by field and leave the padding between them as it was, uninitialised memory)."""
        at = self.order[mask]
        out = np.empty(len(at), dtype=RECORD_BYTES)
        part_of = np.searchsorted(self.starts, at, side="right") - 1
        for index in np.unique(part_of).tolist():
            mine = part_of == index
            out[mine] = self.parts[index].view(RECORD_BYTES)[at[mine] - self.starts[index]]
        return out.view(EVENT_DTYPE)

    def hash(self, rows: np.ndarray) -> None:
        """Work out the question and what depends on it for `rows` (a mask) not hashed yet."""
        f = self.f
        todo = np.flatnonzero(rows & ~f["hashed"])
        if not len(todo):
            return
        chosen = self.rows(todo)
        questions, valid = question_hashes(chosen)
        source, destination = address_words(chosen["saddr"]), address_words(chosen["daddr"])
        vantage = f["vantage"][todo]
        f["has_question"][todo] = valid
        f["keys"][todo] = exchange_keys(chosen, questions)
        f["translated"][todo] = mix(questions, chosen["dns_id"])  # the exchange once NAT changed its client port too
        f["arrival"][todo] = mix(vantage, destination[:, 0], destination[:, 1], questions)  # a query reaching an address
        f["asked_from"][todo] = mix(vantage, source[:, 0], source[:, 1], questions)  # a query leaving one
        f["hashed"][todo] = True

    def queries(self) -> tuple[np.ndarray, np.ndarray]:
        """(queries, responses) among the hashed rows with a question."""
        f = self.f
        asked = f["hashed"] & f["has_question"] & f["dns"]
        return asked & ~f["qr"], asked & f["qr"]


class LookupFilter:
    """One node's records in, those of the traced pod's lookups out (`take`), the rest counted (`counts`)."""

    def __init__(self, clients: Iterable[str], hold_ns: int = HOLD_NS) -> None:
        self.clients = np.frombuffer(b"".join(packed(a) for a in clients), dtype="<u8").reshape(-1, 2)
        self.hold_ns = hold_ns
        self.pending = np.empty(0, dtype=EVENT_DTYPE)  # records not decided yet, and their features
        self.held: dict[str, np.ndarray] = {}
        self.followed: dict[int, tuple[int, int]] = {}  # exchange key -> (last record's time, its DNS id)
        self.asked: dict[int, list[list]] = {}  # (vantage, server address, question) -> [[arrived, answered, followed], ...]
        self.probes: dict[int, int] = {}  # each of `asked`'s keys -> (vantage, server address, question's prefix)
        self.asked_by_key: dict[tuple[int, int], list] = {}  # (vantage, followed exchange key) -> its window there
        self.counts: Counter = Counter()
        self.forgotten_at = 0  # the record time `forget` last looked at

    def take(self, batches: Iterable[bytes | np.ndarray] | bytes, final: bool = False) -> bytes:
        """The records of followed exchanges among those held and the new `batches` (buffers of whole records or
        EVENT_DTYPE rows, or one buffer); with `final`, what is held is decided now. Each record's fixed features are
        worked out once, when it arrives, its question when it is first needed; held ones keep theirs. Records are
        never copied whole but to be sent, held or hashed, and nothing refers to a batch after the call (rows may be
        read in place from the ring buffer)."""
        if isinstance(batches, (bytes, bytearray, memoryview)):
            batches = [batches]
        new = [batch if isinstance(batch, np.ndarray) else np.frombuffer(batch, dtype=EVENT_DTYPE)
               for batch in batches if len(batch)]
        if not len(self.pending) + sum(map(len, new)):
            return b""
        parts = [self.pending, *new]
        columns = [self.held] if len(self.pending) else []
        columns += [self.features(records) for records in new]
        f = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]} if len(columns) > 1 else columns[0]
        order = np.argsort(f["ts"], kind="stable")
        f = {name: column[order] for name, column in f.items()}
        batch = Batch(parts, order, f)
        keep = f["mine"].copy()
        batch.hash(keep)
        self.follow(f, keep & f["has_question"])
        keep |= self.forwards(batch)
        batch.hash(self.with_followed_ids(f))
        followed = self.followed_keys()
        has_question = f["hashed"] & f["has_question"]
        keep |= among(has_question, f["keys"], followed) | among(has_question, f["translated"], followed)
        self.follow(f, keep & has_question)
        newest = int(f["ts"][-1])
        decided = keep | final | (f["ts"] < newest - self.hold_ns)
        self.count_dropped(f, decided & ~keep)
        self.pending = batch.rows(~decided)
        self.held = {name: column[~decided] for name, column in f.items()}
        self.forget(newest)
        self.counts["records_kept"] += int(keep.sum())
        return batch.rows(keep).tobytes()

    def features(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """What the filter looks records up by, one column each: time, vantage, DNS id, query or response, whether
        it has the pod's address, cheap probes of where a query goes to and comes from; then what depends on the
        question (its exchange keys...), empty until `Batch.hash` works it out."""
        n = len(records)
        source, destination = address_words(records["saddr"]), address_words(records["daddr"])
        vantage = records["capture_id"].astype(np.uint64)
        prefix = question_prefixes(records)
        return {"ts": records["ts_ns"].astype(np.int64), "vantage": vantage, "dns_id": records["dns_id"].astype(np.int64),
                "dns": records["kind"] == KIND_DNS, "qr": (records["dns_flags"] >> 15).astype(bool),
                "mine": self.mine(source, destination),
                "to_probe": mix(vantage, destination[:, 0], destination[:, 1], prefix),
                "from_probe": mix(vantage, source[:, 0], source[:, 1], prefix),
                "hashed": np.zeros(n, dtype=bool), "has_question": np.zeros(n, dtype=bool),
                **{name: np.zeros(n, dtype=np.uint64) for name in ("keys", "translated", "arrival", "asked_from")}}

    def mine(self, source: np.ndarray, destination: np.ndarray) -> np.ndarray:
        """Records with one of the traced pod's addresses, on either side."""
        found = np.zeros(len(source), dtype=bool)
        for words in (source, destination):
            for client in self.clients:
                found |= (words[:, 0] == client[0]) & (words[:, 1] == client[1])
        return found

    def follow(self, f: dict[str, np.ndarray], rows: np.ndarray) -> None:
        """Follow the exchanges of `rows` by both their keys."""
        times, ids = f["ts"][rows].tolist(), f["dns_id"][rows].tolist()
        for keys in (f["keys"][rows].tolist(), f["translated"][rows].tolist()):
            for key, ts, dns_id in zip(keys, times, ids):
                self.followed[key] = (max(ts, self.followed.get(key, (0, 0))[0]), dns_id)

    def followed_keys(self) -> np.ndarray:
        return np.fromiter(self.followed, dtype=np.uint64, count=len(self.followed))

    def with_followed_ids(self, f: dict[str, np.ndarray]) -> np.ndarray:
        """Rows whose DNS id a followed exchange has: only they can be one (every key holds its id)."""
        ids = np.zeros(1 << 16, dtype=bool)
        ids[[dns_id for _, dns_id in self.followed.values()]] = True
        return ids[f["dns_id"]]

    def hash_probed(self, batch: Batch) -> None:
        """Hash the queries that may reach, or leave from, an address a followed query reached, with its question:
        of the probes not yet looked for in this batch (they only grow while it is decided)."""
        probes = set(self.probes.values()) - batch.probes_seen
        if not probes:
            return
        batch.probes_seen |= probes
        f, probes = batch.f, np.fromiter(probes, dtype=np.uint64)
        queries = f["dns"] & ~f["qr"]
        batch.hash(among(queries, f["to_probe"], probes) | among(queries, f["from_probe"], probes))

    def forwards(self, batch: Batch) -> np.ndarray:
        """Queries a server sent on behalf of a followed query (and theirs, in turn): marked and followed. As
        `link_parents` does, a forward belongs to the latest query of its question that reached the server before
        it, whoever asked it: a forward of another client's query is not taken for the pod's."""
        f = batch.f
        keys, ts, vantage = f["keys"], f["ts"], f["vantage"]
        marked = np.zeros(len(keys), dtype=bool)
        for _ in range(4):  # a forward's forward: CoreDNS -> NodeLocal DNS -> upstream is two
            batch.hash(self.with_followed_ids(f))
            self.hash_probed(batch)
            query, _ = batch.queries()
            followed = among(f["hashed"], keys, self.followed_keys())
            reached = query & followed
            for where, probe in zip(f["arrival"][reached].tolist(), f["to_probe"][reached].tolist()):
                self.asked.setdefault(where, [])
                self.probes[where] = probe
            self.hash_probed(batch)  # the questions of those the new server addresses see
            query, response = batch.queries()
            arrival, asked_from = f["arrival"], f["asked_from"]
            watched = np.fromiter(self.asked, dtype=np.uint64, count=len(self.asked))
            arrivals = among(query, arrival, watched)
            candidates = among(query & ~followed & ~marked, asked_from, watched)
            answers = response & followed
            new = []
            for i in np.flatnonzero(arrivals | candidates | answers).tolist():
                if arrivals[i]:
                    self.note_arrival(int(arrival[i]), int(ts[i]), bool(followed[i]), int(vantage[i]), int(keys[i]))
                if candidates[i] and self.asked_for(int(asked_from[i]), int(ts[i])):
                    new.append(i)
                if answers[i]:
                    window = self.asked_by_key.get((int(vantage[i]), int(keys[i])))
                    if window is not None and window[0] <= ts[i] < window[1]:
                        window[1] = int(ts[i])
            if not new:
                break
            marked[new] = True
            rows = np.zeros(len(keys), dtype=bool)
            rows[new] = True
            self.follow(f, rows)
        return marked

    def note_arrival(self, where: int, ts: int, followed: bool, vantage: int, key: int) -> None:
        """A query of a watched question reached a server: [arrived, answered (or the wait's end), followed]."""
        history = self.asked[where]
        at = bisect.bisect_left(history, ts, key=lambda w: w[0])
        if at < len(history) and history[at][0] == ts:  # a held record seen again
            return
        window = [ts, ts + SERVER_WAIT_NS, followed]
        history.insert(at, window)
        if followed:
            self.asked_by_key.setdefault((vantage, key), window)

    def asked_for(self, where: int, ts: int) -> bool:
        """Whether the latest query of this question to reach the forward's address before it is followed, and still
        unanswered when the forward left."""
        history = self.asked.get(where, [])
        at = bisect.bisect_right(history, ts, key=lambda w: w[0])
        return at > 0 and history[at - 1][2] and ts <= history[at - 1][1]

    def forget(self, now: int) -> None:
        """Exchanges and server windows past their time, once every FORGET_EVERY_NS (each look goes through all)."""
        if now < self.forgotten_at + FORGET_EVERY_NS:
            return
        self.forgotten_at = now
        self.followed = {k: seen for k, seen in self.followed.items() if seen[0] >= now - FOLLOW_NS}
        self.asked_by_key = {k: w for k, w in self.asked_by_key.items() if w[0] >= now - FOLLOW_NS}
        cutoff = now - SERVER_WAIT_NS - self.hold_ns
        for where in list(self.asked):
            history = self.asked[where]
            del history[:bisect.bisect_left(history, cutoff, key=lambda w: w[0])]
            if not history:
                del self.asked[where], self.probes[where]

    def count_dropped(self, f: dict[str, np.ndarray], dropped: np.ndarray) -> None:
        self.counts["filtered_queries"] += int((dropped & f["dns"] & ~f["qr"]).sum())
        self.counts["filtered_responses"] += int((dropped & f["dns"] & f["qr"]).sum())
        self.counts["filtered_other"] += int((dropped & ~f["dns"]).sum())

    def stats(self) -> dict:
        """Counters for the stream: records of other lookups dropped here, by kind, and those kept."""
        return {name: int(self.counts[name]) for name in ("records_kept", "filtered_queries", "filtered_responses", "filtered_other")}
