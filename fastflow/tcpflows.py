"""Streaming TCP flows: ext/_tcpflows.pyx behind the interface the pipeline feeds chunk by chunk.

The engine gives the flows table's TCP rows (summary.summarize's columns, same values) as connections
finish, holding state only for the open ones; this module sets it up, maps its status codes to exceptions
and turns its packed rows into summary.py's column dict.
"""
from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from . import _tcpflows
from .decode import Status
from .errors import OutputError
from .schema import TS, category_codes, coded_category, fixed_width_array, string_array, take_rows
from .flows import DEFAULT_IDLE_TIMEOUT_NS
from .server_ports import ZEEK_LIKELY_SERVER_PORTS_TCP, is_likely_server_port
from .summary import CLOSE_VALUES, HANDSHAKE_VALUES, PROTO_VALUES
from .tcpstate import CONN_STATES

#: the decoder columns the engine reads (contiguous arrays; src/dst as (n, 16) uint8)
INPUT_COLUMNS = ("frame", "ts", "network_time", "vlan", "ip_version", "src", "dst", "sport", "dport", "seq", "ack",
                 "tcp_flags", "window", "payload_len", "claimed_len", "ip_len", "mss", "wscale", "sack_ok", "pflags")
_DTYPES = {"frame": np.uint64, "ts": np.int64, "network_time": np.int64, "vlan": np.int32, "ip_version": np.uint8,
           "src": np.uint8, "dst": np.uint8, "sport": np.uint16, "dport": np.uint16, "seq": np.uint32,
           "ack": np.uint32, "tcp_flags": np.uint16, "window": np.uint16, "payload_len": np.uint32,
           "claimed_len": np.uint32, "ip_len": np.uint32, "mss": np.uint16, "wscale": np.int16, "sack_ok": np.uint8,
           "pflags": np.uint8}

NO_OPEN_CONNECTION = 2**64 - 1

#: open connections whose records stay in memory; beyond that the ones idle longest wait in a temporary file
#: (their records come back when a packet arrives or when they finish). 262,144 records are about 170 MB.
MAX_IN_MEMORY = 1 << 18
#: how snapshot_blocks() stores an open connection (batch state files record it)
RECORD_LAYOUT = _tcpflows.RECORD_LAYOUT

#: open connections beyond which PartedTcpFlows shares them out among its engines: their records (43 MB) are
#: past the CPU's caches. Captures of short connections stay below (the real 1 M-packet capture of
#: benchmarks/RESULTS.md peaks at 14,112 open), where two engines cost CPU time and gained nothing.
SPLIT_AT = 1 << 16


def _masked(values, present):
    return np.ma.masked_array(values, mask=~np.asarray(present, dtype=bool))


def _check(status: int) -> None:
    if status == _tcpflows.STATUS_SPILL_FAILED:
        raise OutputError(f"cannot keep open connections in a temporary file in {tempfile.gettempdir()} "
                          "(disk full?); set TMPDIR to a folder with room")
    if status != _tcpflows.STATUS_OK:
        raise MemoryError("out of memory while tracking open TCP connections")


class TcpFlows:
    """feed() segments in frame order (chunks of any size), expire() with the network time reached, finish()
    at the end; drain() returns the rows of the connections finished so far, ordered by first frame."""

    _spill_file = None

    def __init__(self, idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS, server_ports=ZEEK_LIKELY_SERVER_PORTS_TCP,
                 vlan_aware: bool = False, max_in_memory: int | None = MAX_IN_MEMORY):
        table = is_likely_server_port(np.arange(65536), server_ports).astype(np.uint8)
        self._engine = _tcpflows.Engine(int(idle_timeout_ns), np.ascontiguousarray(table), bool(vlan_aware))
        self._max_in_memory = max_in_memory
        self._spill_file = None

    @property
    def spilled(self) -> int:
        """Open connections whose records are in the temporary file now."""
        return self._engine.cold_count

    @property
    def spill_bytes(self) -> int:
        """Bytes written to the temporary file so far."""
        return self._engine.spill_bytes

    def _spill_if_needed(self) -> None:
        limit = self._max_in_memory
        if limit is None or self._engine.open_count - self._engine.cold_count <= limit:
            return
        if self._spill_file is None:
            try:
                self._spill_file = tempfile.TemporaryFile(prefix="fastflow-open-connections-")
            except OSError as exc:
                raise OutputError(f"cannot create a temporary file in {tempfile.gettempdir()}: "
                                  f"{exc.strerror or exc}") from None
            self._engine.set_spill_file(self._spill_file.fileno())
        # down to three quarters of the limit, so that the next batches do not spill a few at a time
        _check(self._engine.spill_oldest(limit - limit // 4))

    def close(self) -> None:
        """Remove the temporary file (done by finish() once no connection is open)."""
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None

    def __del__(self):
        self.close()

    @property
    def open_count(self) -> int:
        return self._engine.open_count

    def min_open_first_frame(self) -> int:
        return self._engine.min_open_first_frame()

    def feed(self, seg: dict, conn_first: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        """Feed the segments: every row of seg's columns, or those at `rows` (increasing indices; the columns
        are not gathered). conn_first (uint64, one per segment) gets each segment's connection: its first
        frame."""
        cols = {}
        for name in INPUT_COLUMNS:
            a = np.ascontiguousarray(seg[name], dtype=_DTYPES[name])
            cols[name] = a.reshape(-1, 16) if name in ("src", "dst") else a
        if rows is not None:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
        _check(self._engine.feed(cols, conn_first, rows))

    #: steps whose rows collect() may leave for later: none, this engine works in the caller's thread
    lag = 0

    def step(self, seg: dict, network_time: int, conn_first: np.ndarray | None = None,
             rows: np.ndarray | None = None):
        """One batch: feed(), expire(network_time), then the rows finished and the oldest open connection's
        first frame, as collect(step) gives them."""
        self.feed(seg, conn_first, rows)
        self.expire(network_time)
        return self.drain_packed(), self.min_open_first_frame()

    @staticmethod
    def collect(stepped) -> tuple[tuple[np.ndarray, bytes], int]:
        """A step's (packed rows, min_open_first_frame())."""
        return stepped

    def expire(self, network_time: int) -> None:
        """Finish what no later packet can join, then move the records idle longest out of memory if more
        than max_in_memory connections are open."""
        _check(self._engine.expire(int(network_time)))
        self._spill_if_needed()

    def finish(self, max_rows: int = -1) -> None:
        """Finish the open connections, the oldest first, at most max_rows of them (all when negative)."""
        _check(self._engine.finish(max_rows))
        if self._engine.open_count == 0:
            self.close()

    def snapshot_blocks(self):
        """The open connections as blocks of bytes, oldest first (restore_blocks() takes them back, in a
        TcpFlows of the same fastflow build and settings); this engine is not changed."""
        try:
            yield from self._engine.snapshot_blocks()
        except OSError as exc:
            raise OutputError(f"cannot read open connections back from a temporary file: {exc}") from None

    def restore_blocks(self, blocks, part: int = 0, parts: int = 1) -> None:
        """Open connections saved by snapshot_blocks(), before the first feed(); only those of part `part`
        of `parts` (packet_parts) when parts > 1."""
        for block in blocks:
            _check(self._engine.restore(np.frombuffer(block, dtype=np.uint8), part, parts))
            self._spill_if_needed()

    def drain(self) -> dict:
        return rows_to_flows(*self.drain_packed())

    def drain_packed(self) -> tuple[np.ndarray, bytes]:
        """drain() before the conversion: the engine's rows (ROW_DTYPE, about 300 bytes each, ordered by
        first frame) and their history text; rows_to_flows() converts them."""
        return _by_first_frame(*self._engine.drain())


def _by_first_frame(rows: np.ndarray, text: bytes) -> tuple[np.ndarray, bytes]:
    first = rows["first_frame"]
    if len(rows) > 1 and np.any(first[1:] < first[:-1]):
        rows = np.take(_opaque(rows), np.argsort(rows["first_frame"], kind="stable")).view(rows.dtype)
    return rows, text


class PartedTcpFlows:
    """TcpFlows' interface over several engines, each holding the connections of one part of the key space
    (packet_parts: every packet of an address/port pair goes to the same part), fed side by side, each in a
    thread of its own (the engines release the GIL). Each connection lives whole in one engine, so the rows
    are the same as one engine's, merged in first-frame order; the spill limit is shared out between the
    parts. feed() and step() read seg["tcp_part"] (packet_parts of the same rows) when present, and
    seg["tcp_part_rows"] (the rows to feed, split by part) instead of rows: the pipeline's decoder thread
    computes both ahead once `split`.

    It starts as one engine, and splits (its open connections shared out through snapshot_blocks() and
    restore()) once more than split_at connections are open: below that the engine's records stay in the
    CPU's caches and it is not what a run waits for (a capture of short connections), while the split and
    the threads cost CPU time.

    step() does not wait for the engines: collect() of a step waits, and the caller collects each step one
    step later (lag), so that an engine that fell behind on one batch (the threads share the cores with the
    decoder) catches up during the next instead of holding the others at every batch, and the caller's own
    work on a batch (its datagrams) runs beside the engines'."""

    def __init__(self, parts: int, idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
                 server_ports=ZEEK_LIKELY_SERVER_PORTS_TCP, vlan_aware: bool = False,
                 max_in_memory: int | None = MAX_IN_MEMORY, split_at: int | None = None):
        if parts < 2:
            raise ValueError("PartedTcpFlows: two parts at least (use TcpFlows)")
        self.parts = parts
        self.split_at = SPLIT_AT if split_at is None else split_at
        self._settings = (idle_timeout_ns, server_ports, vlan_aware)
        self._max_in_memory = max_in_memory
        self._engines = [TcpFlows(*self._settings, max_in_memory)]
        self._threads: list[ThreadPoolExecutor] = []
        self._held: list[tuple[np.ndarray, bytes]] = []     # rows finished before the split, not drained yet
        self.split = False
        if self.split_at <= 0:
            self._split()

    @property
    def lag(self) -> int:
        return 1 if self.split else 0

    def _split(self) -> None:
        """One engine's open connections shared out among `parts` engines, each with a thread past the
        first."""
        old = self._engines[0]
        self._held.append(old._engine.drain())
        share = None if self._max_in_memory is None else max(1, self._max_in_memory // self.parts)
        engines = [TcpFlows(*self._settings, share) for _ in range(self.parts)]
        try:
            for block in old.snapshot_blocks():
                for i, engine in enumerate(engines):
                    engine.restore_blocks([block], i, self.parts)
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        old.close()
        self._engines = engines
        # one thread per engine: an engine's work runs in order, one batch after the other
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"fastflow-tcp-part{i}")
                         for i in range(self.parts)]
        self.split = True

    def _start(self, work) -> list:
        """work(i, engine) for every part, each in its engine's thread (after the split): their futures."""
        return [self._threads[i].submit(work, i, engine) for i, engine in enumerate(self._engines)]

    @staticmethod
    def _results(futures) -> list:
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:      # none left running on an engine once an error is raised
                future.cancel()
                if not future.cancelled():
                    future.exception()

    def _each(self, work) -> list:
        """work(i, engine) for every part, as _start() (before the split, in this thread), waiting for all."""
        if not self._threads:
            return [work(0, engine) for engine in self._engines]
        return self._results(self._start(work))

    @property
    def spilled(self) -> int:
        return sum(engine.spilled for engine in self._engines)

    @property
    def spill_bytes(self) -> int:
        return sum(engine.spill_bytes for engine in self._engines)

    @property
    def open_count(self) -> int:
        return sum(engine.open_count for engine in self._engines)

    def min_open_first_frame(self) -> int:
        return min(engine.min_open_first_frame() for engine in self._engines)

    def _picked(self, seg: dict, rows: np.ndarray | None):
        """Each part's rows of seg, and where they are among the rows fed (None: split ahead)."""
        if seg.get("tcp_part_rows") is not None:     # the rows fed, split ahead by the decoder's thread
            return seg["tcp_part_rows"], None
        part = seg.get("tcp_part")
        if part is None:
            part = packet_parts({**seg, "status": np.zeros(len(seg["frame"]), np.uint8)}, self.parts)
        if rows is None:
            slots = [np.flatnonzero(part == i) for i in range(self.parts)]
            return slots, slots
        rows = np.asarray(rows, dtype=np.int64)
        of_rows = part[rows]
        slots = [np.flatnonzero(of_rows == i) for i in range(self.parts)]
        return [rows[index] for index in slots], slots

    def feed(self, seg: dict, conn_first: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        """TcpFlows.feed, each segment to its part's engine."""
        self.collect(self.step(seg, None, conn_first, rows))

    def step(self, seg: dict, network_time: int | None, conn_first: np.ndarray | None = None,
             rows: np.ndarray | None = None):
        """TcpFlows.step in every engine (feed only when network_time is None); the first engine's runs now,
        the others' in their threads: collect() waits for them."""
        if not self.split and self._engines[0].open_count > self.split_at:
            self._split()
        if not self.split:
            engine = self._engines[0]
            if network_time is None:
                engine.feed(seg, conn_first, rows)
                return None
            return engine.step(seg, network_time, conn_first, rows)
        picked, slots = self._picked(seg, rows)
        if conn_first is not None and slots is None:
            raise ValueError("PartedTcpFlows.step: conn_first needs the rows split here")
        # conn_first has a slot per segment fed: each engine fills its own, put back in place by collect()
        firsts = None if conn_first is None else [np.empty(len(index), np.uint64) for index in picked]

        def work(i, engine):
            engine.feed(seg, None if firsts is None else firsts[i], rows=picked[i])
            if network_time is None:
                return None
            engine.expire(network_time)
            return engine._engine.drain(), engine.min_open_first_frame()
        # every engine in its own thread: the caller goes on with the batch's datagrams meanwhile
        return self._start(work), conn_first, slots, firsts

    def collect(self, stepped) -> tuple[tuple[np.ndarray, bytes], int] | None:
        if stepped is None or len(stepped) == 2:    # made by one engine: as it is, after the rows held
            return stepped if stepped is None else (self._with_held([stepped[0]]), stepped[1])
        futures, conn_first, slots, firsts = stepped
        results = self._results(futures)
        if conn_first is not None:
            for i in range(self.parts):
                conn_first[slots[i]] = firsts[i]
        if results[0] is None:
            return None
        return self._with_held([rows for rows, _ in results]), min(low for _, low in results)

    def _with_held(self, drained: list) -> tuple[np.ndarray, bytes]:
        """Drained rows (and those held since the split) as one part, sorted by first frame."""
        drained = self._held + drained
        self._held = []
        if len(drained) == 1:
            return _by_first_frame(*drained[0])
        return _by_first_frame(*concat_packed([part for part in drained if len(part[0])] or drained[:1]))

    def expire(self, network_time: int) -> None:
        self._each(lambda i, engine: engine.expire(network_time))

    def finish(self, max_rows: int = -1) -> None:
        """Finish the open connections, each part's oldest first, at most max_rows of them (all when
        negative), shared between the parts."""
        share = max_rows if max_rows < 0 else max(1, -(-max_rows // len(self._engines)))
        self._each(lambda i, engine: engine.finish(share))

    def close(self) -> None:
        for thread in self._threads:    # its work done before the engine's spill file goes
            thread.shutdown(wait=True)
        for engine in self._engines:
            engine.close()

    def drain(self) -> dict:
        return rows_to_flows(*self.drain_packed())

    def drain_packed(self) -> tuple[np.ndarray, bytes]:
        # the engines' rows as they come, sorted once: a connection's first frame is its own, so the order
        # is the one engine's
        return self._with_held([engine._engine.drain() for engine in self._engines])


def packet_parts(pk: dict, parts: int) -> np.ndarray:
    """Each decoded packet's part of `parts`: every packet and every open connection of one connection key,
    TCP or not, fall in the same part (a hash of the address pair, and of the ports for TCP and UDP), so
    the parts can be analysed apart (fastflow batch -j on one stream)."""
    status = np.asarray(pk["status"])
    with_ports = ((status == Status.TCP) | (status == Status.UDP)).astype(np.uint8)
    return _tcpflows.packet_parts(np.ascontiguousarray(pk["src"], dtype=np.uint8).reshape(-1, 16),
                                  np.ascontiguousarray(pk["dst"], dtype=np.uint8).reshape(-1, 16),
                                  np.ascontiguousarray(pk["sport"], dtype=np.uint16),
                                  np.ascontiguousarray(pk["dport"], dtype=np.uint16), with_ports, int(parts))


def tcp_part_rows(pk: dict, parts: int) -> list[np.ndarray]:
    """The decoded packets' TCP rows with a right IPv4 header checksum (what the pipeline feeds the engines),
    split by packet_parts' part: one int64 array of rows for each part."""
    return _tcpflows.tcp_part_rows(np.ascontiguousarray(pk["src"], dtype=np.uint8).reshape(-1, 16),
                                   np.ascontiguousarray(pk["dst"], dtype=np.uint8).reshape(-1, 16),
                                   np.ascontiguousarray(pk["sport"], dtype=np.uint16),
                                   np.ascontiguousarray(pk["dport"], dtype=np.uint16),
                                   np.ascontiguousarray(pk["status"], dtype=np.uint8),
                                   np.ascontiguousarray(pk["pflags"], dtype=np.uint8), int(parts))


def concat_packed(parts: list[tuple[np.ndarray, bytes]]) -> tuple[np.ndarray, bytes]:
    """Packed rows of several drains as one (history offsets moved onto the joined text)."""
    if len(parts) == 1:
        return parts[0]
    shift = np.cumsum([0] + [len(text) for _, text in parts[:-1]])
    rows = np.concatenate([_opaque(r) for r, _ in parts]).view(parts[0][0].dtype)
    rows["hist_offset"] += np.repeat(shift, [len(r) for r, _ in parts])
    return rows, b"".join(text for _, text in parts)


def _opaque(rows: np.ndarray) -> np.ndarray:
    """The rows as fixed-size blobs: numpy copies those with memcpy, a structured dtype field by field."""
    return rows.view(np.dtype((np.void, rows.dtype.itemsize)))


def take_packed(rows: np.ndarray, text: bytes, which) -> tuple[np.ndarray, bytes]:
    """Some of the packed rows; their history offsets still point into `text`, which is shared."""
    return take_rows(_opaque(rows), which).view(rows.dtype), text


def _history_column(rows: np.ndarray | dict[str, np.ndarray], text: bytes) -> pa.Array:
    """The rows' histories as an Arrow string column, gathered in C from the text the engine wrote them to
    (in its own order): no Python or numpy string per row."""
    offsets, data = _tcpflows.history_buffers(np.ascontiguousarray(rows["hist_offset"]),
                                              np.ascontiguousarray(rows["hist_len"]),
                                              np.frombuffer(text, dtype=np.uint8))
    return pa.Array.from_buffers(pa.string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def rows_to_flows(r: np.ndarray, text: bytes) -> dict:
    """The engine's packed rows as summary.summarize's columns, history as an Arrow string array (not a
    numpy one); conn_id numbers these rows only (the pipeline numbers all flows once it knows their order)."""
    n = len(r)
    out = {"conn_id": np.arange(n, dtype=np.uint64)}
    out["ts_start"] = r["ts_start"].copy()
    out["ts_end"] = r["ts_end"].copy()
    out["duration"] = (r["last_time"] - r["first_ts"]) / 1e9
    out["orig_addr"] = np.ascontiguousarray(r["orig_addr"])
    out["resp_addr"] = np.ascontiguousarray(r["resp_addr"])
    out["orig_p"] = r["orig_p"].copy()
    out["resp_p"] = r["resp_p"].copy()
    out["ip_version"] = r["ip_version"].copy()
    out["proto"] = np.full(n, "tcp")
    out["ip_proto"] = np.full(n, 6, dtype=np.uint8)
    out["vlan"] = _masked(r["vlan"].copy(), r["vlan"] >= 0)
    for name in ("orig_pkts", "resp_pkts", "orig_payload_bytes", "resp_payload_bytes", "orig_ip_bytes",
                 "resp_ip_bytes"):
        out[name] = r[name].copy()
    productive = out["duration"] > 0
    out["orig_bytes"] = _masked(r["orig_size"].copy(), productive)
    out["resp_bytes"] = _masked(r["resp_size"].copy(), productive)

    out["handshake"] = np.array(HANDSHAKE_VALUES)[r["handshake"]]
    out["syn_ts"] = _masked(r["syn_ts"].copy(), r["has_syn"])
    out["synack_ts"] = _masked(r["synack_ts"].copy(), r["has_synack"])
    out["handshake_ack_ts"] = _masked(r["handshake_ack_ts"].copy(), r["has_handshake_ack"])
    out["orig_isn"] = _masked(r["orig_isn"].copy(), r["has_orig_isn"])
    out["resp_isn"] = _masked(r["resp_isn"].copy(), r["has_resp_isn"])
    out["syn_count"] = r["syn_count"].copy()
    out["synack_count"] = r["synack_count"].copy()
    ok1, ok2 = r["has_synack"] != 0, r["has_handshake_ack"] != 0
    rtt1 = np.where(ok1, r["rtt1"] / 1e9, np.nan)
    rtt2 = np.where(ok2, r["rtt2"] / 1e9, np.nan)
    out["rtt_syn_synack"] = _masked(rtt1, ok1)
    out["rtt_synack_ack"] = _masked(rtt2, ok2)
    out["irtt"] = _masked(rtt1 + rtt2, ok1 & ok2)
    for side in ("orig", "resp"):
        present = r[f"{side}_opt"] != 0
        mss, wscale = r[f"{side}_mss"], r[f"{side}_wscale"]
        out[f"{side}_mss"] = _masked(mss.copy(), present & (mss > 0))
        out[f"{side}_wscale"] = _masked(wscale.copy(), present & (wscale >= 0))
        out[f"{side}_sack_ok"] = r[f"{side}_sack_ok"] != 0

    out["close"] = np.array(CLOSE_VALUES)[r["close"]]
    initiator = r["close_initiator"]
    out["close_initiator"] = _masked(np.where(initiator == 0, "orig", "resp"), initiator < 2)
    rst_by = r["rst_by"]
    out["rst_by"] = _masked(np.where(rst_by == 3, "both", np.where(rst_by == 1, "orig", "resp")), rst_by != 0)
    out["fin1_ts"] = _masked(r["fin1_ts"].copy(), r["has_fin1"])
    out["fin2_ts"] = _masked(r["fin2_ts"].copy(), r["has_fin2"])
    out["rst_ts"] = _masked(r["rst_ts"].copy(), r["has_rst"])
    teardown = r["teardown_segments"]
    out["teardown_segments"] = _masked(teardown.copy(), teardown > 0)

    out["conn_state"] = np.asarray(CONN_STATES)[r["conn_state"]]
    out["history"] = _history_column(r, text)
    out["orig_retransmissions"] = r["orig_retransmissions"].copy()
    out["resp_retransmissions"] = r["resp_retransmissions"].copy()
    out["first_frame"] = r["first_frame"].copy()
    out["last_frame"] = r["last_frame"].copy()
    return out


#: packed rows turned into columns this many at a time (record_columns): 1.1 MB of them, within the CPU's cache
COLUMN_BLOCK_ROWS = 4096


def record_columns(rows: np.ndarray) -> dict[str, np.ndarray]:
    """The fields of packed rows as contiguous arrays. Taken field by field over all the rows, each pass reads
    every row's cache lines for a few bytes of each (the flows table needs all 58 fields); a block of rows at
    a time, all passes but the first find the block in the cache. pipeline.finished_table on rows of the scale
    input of benchmarks/RESULTS.md: 603 ns a row field by field, 357 like this."""
    n = len(rows)
    out = {name: np.empty((n,) + rows.dtype[name].shape, rows.dtype[name].base) for name in rows.dtype.names}
    for start in range(0, n, COLUMN_BLOCK_ROWS):
        block = rows[start:start + COLUMN_BLOCK_ROWS]
        for name, column in out.items():
            column[start:start + COLUMN_BLOCK_ROWS] = block[name]
    return out


#: rst_by's engine code (bit 1 orig, bit 2 resp) as a position in RST_BY_VALUES (0: no RST, null)
RST_BY_VALUES = ("orig", "resp", "both")
CLOSE_INITIATOR_VALUES = ("orig", "resp")
_RST_BY_CODE = np.array([0, 0, 1, 2], np.int8)


def rows_to_arrays(r: dict[str, np.ndarray], text: bytes, proto: np.ndarray | None = None,
                   ip_proto: np.ndarray | None = None, duration: np.ndarray | None = None) -> dict[str, pa.Array]:
    """The engine's packed rows, as record_columns() gives them, as the flows table's Arrow columns: what
    flows_table(rows_to_flows(rows, text)) gives, without numpy masked arrays or a string per row in between.
    Leaves out conn_id, source and the columns made from the endpoints (orig_h, resp_h, community_id).

    Rows of other protocols (datagram_records) come with their proto (PROTO_VALUES codes, 0 = TCP), ip_proto
    and duration (seconds) per row: the columns only TCP has are null on them."""
    def column(name, arrow_type, present=None, values=None):
        return fixed_width_array(r[name] if values is None else values, arrow_type,
                                 None if present is None else ~np.asarray(present, bool))

    n = len(r["first_frame"])
    is_tcp = None if proto is None else proto == 0

    def tcp_only(present=None):
        if is_tcp is None:
            return present
        return is_tcp if present is None else (np.asarray(present, bool) & is_tcp)

    out = {"ts_start": column("ts_start", TS), "ts_end": column("ts_end", TS)}
    if duration is None:
        duration = (r["last_time"] - r["first_ts"]) / 1e9
    out["duration"] = column(None, pa.float64(), values=duration)
    for name, arrow_type in (("orig_p", pa.uint16()), ("resp_p", pa.uint16()), ("ip_version", pa.uint8())):
        out[name] = column(name, arrow_type)
    out["proto"] = coded_category(np.zeros(n, np.int8) if proto is None else proto, PROTO_VALUES)
    out["ip_proto"] = column(None, pa.uint8(), values=np.full(n, 6, np.uint8) if ip_proto is None else ip_proto)
    out["vlan"] = column("vlan", pa.int32(), r["vlan"] >= 0)
    for name in ("orig_pkts", "resp_pkts", "orig_payload_bytes", "resp_payload_bytes", "orig_ip_bytes",
                 "resp_ip_bytes"):
        out[name] = column(name, pa.uint64())
    productive = duration > 0
    out["orig_bytes"] = column("orig_size", pa.uint64(), productive)
    out["resp_bytes"] = column("resp_size", pa.uint64(), productive)
    out["handshake"] = coded_category(r["handshake"], HANDSHAKE_VALUES, tcp_only())
    out["syn_ts"] = column("syn_ts", TS, tcp_only(r["has_syn"]))
    out["synack_ts"] = column("synack_ts", TS, tcp_only(r["has_synack"]))
    out["handshake_ack_ts"] = column("handshake_ack_ts", TS, tcp_only(r["has_handshake_ack"]))
    out["orig_isn"] = column("orig_isn", pa.uint32(), tcp_only(r["has_orig_isn"]))
    out["resp_isn"] = column("resp_isn", pa.uint32(), tcp_only(r["has_resp_isn"]))
    out["syn_count"] = column("syn_count", pa.uint32(), tcp_only())
    out["synack_count"] = column("synack_count", pa.uint32(), tcp_only())
    ok1, ok2 = r["has_synack"] != 0, r["has_handshake_ack"] != 0
    rtt1, rtt2 = r["rtt1"] / 1e9, r["rtt2"] / 1e9
    out["rtt_syn_synack"] = column(None, pa.float64(), tcp_only(ok1), rtt1)
    out["rtt_synack_ack"] = column(None, pa.float64(), tcp_only(ok2), rtt2)
    out["irtt"] = column(None, pa.float64(), tcp_only(ok1 & ok2), rtt1 + rtt2)
    for side in ("orig", "resp"):
        present = r[f"{side}_opt"] != 0
        mss, wscale = r[f"{side}_mss"], r[f"{side}_wscale"]
        out[f"{side}_mss"] = column(None, pa.uint16(), tcp_only(present & (mss > 0)), mss)
        out[f"{side}_wscale"] = column(None, pa.int16(), tcp_only(present & (wscale >= 0)), wscale)
        out[f"{side}_sack_ok"] = column(None, pa.bool_(), tcp_only(), r[f"{side}_sack_ok"] != 0)
    out["close"] = coded_category(r["close"], CLOSE_VALUES, tcp_only())
    initiator = r["close_initiator"]
    out["close_initiator"] = coded_category(initiator, CLOSE_INITIATOR_VALUES, tcp_only(initiator < 2))
    rst_by = r["rst_by"]
    out["rst_by"] = coded_category(_RST_BY_CODE[np.minimum(rst_by, 3)], RST_BY_VALUES, tcp_only(rst_by != 0))
    out["fin1_ts"] = column("fin1_ts", TS, tcp_only(r["has_fin1"]))
    out["fin2_ts"] = column("fin2_ts", TS, tcp_only(r["has_fin2"]))
    out["rst_ts"] = column("rst_ts", TS, tcp_only(r["has_rst"]))
    teardown = r["teardown_segments"]
    out["teardown_segments"] = column("teardown_segments", pa.uint8(), tcp_only(teardown > 0))
    for name in ("orig_retransmissions", "resp_retransmissions"):
        out[name] = column(name, pa.uint32(), tcp_only())
    out["conn_state"] = coded_category(r["conn_state"], CONN_STATES)
    out["history"] = _history_column(r, text)
    out["first_frame"] = column("first_frame", pa.uint64())
    out["last_frame"] = column("last_frame", pa.uint64())
    return out


#: the fields datagram flows share with TCP's records, copied as they are
_SHARED_FIELDS = ("first_frame", "last_frame", "ts_start", "ts_end", "orig_p", "resp_p", "ip_version", "orig_addr",
                  "resp_addr", "orig_pkts", "resp_pkts", "orig_payload_bytes", "resp_payload_bytes", "orig_ip_bytes",
                  "resp_ip_bytes")


def datagram_records(flows: dict, dtype: np.dtype, text_start: int) -> tuple[np.ndarray, bytes]:
    """Datagram flows (DatagramStream.drain) as packed records of the TCP engine's dtype, so that both turn
    into columns together (rows_to_arrays, given each row's proto, ip_proto and duration): the fields they
    share, orig/resp_bytes as orig/resp_size, conn_state's code, and the histories in the text returned (their
    offsets counted from text_start). The fields only TCP has stay zero; rows_to_arrays makes them null."""
    n = len(flows["first_frame"])
    r = np.zeros(n, dtype)
    for name in _SHARED_FIELDS:
        r[name] = flows[name]
    r["vlan"] = np.ma.filled(flows["vlan"], -1)
    r["orig_size"] = np.ma.getdata(flows["orig_bytes"])
    r["resp_size"] = np.ma.getdata(flows["resp_bytes"])
    r["conn_state"] = category_codes(flows["conn_state"], CONN_STATES)
    history = string_array(np.asarray(flows["history"]))
    offsets = np.frombuffer(history.buffers()[1], np.int32, n + 1, history.offset).astype(np.int64)
    r["hist_offset"] = text_start + offsets[:-1] - offsets[0]
    r["hist_len"] = np.diff(offsets)
    data = history.buffers()[2]
    return r, b"" if data is None else data.to_pybytes()[offsets[0]:offsets[-1]]
