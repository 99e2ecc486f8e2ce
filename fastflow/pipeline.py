"""Orchestration: source -> decoded batches -> TCP segments -> connections and tags -> tables.

Decoded batches are reduced at once to the TCP rows and the columns the connection stage reads, so the
per-packet columns of a batch are freed before the next one is decoded."""
from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import __version__, _decode, tcpflows
from .community_id import community_id
from .datagram import DatagramStream, datagram_flows
from .decode import BatchMemory, CaptureReader, Damage, check_filter
from .errors import OutputError
from .schema import (
    FLOWS_SCHEMA,
    address_columns,
    category_codes,
    file_metadata,
    fixed_width_array,
    fixed_width_values,
    flows_table,
    repeated_string,
    segments_table,
    string_array,
    take_rows,
)
from .segment_stream import SegmentStream
from .server_ports import ZEEK_LIKELY_SERVER_PORTS_TCP, ZEEK_LIKELY_SERVER_PORTS_UDP
from .source import Source
from .summary import (
    PROTO_VALUES,
    analyse,
    combine_flows,
    summary_counts,
    table_counts,
)
from .tcpflows import (
    NO_OPEN_CONNECTION,
    PartedTcpFlows,
    TcpFlows,
    concat_packed,
    datagram_records,
    packet_parts,
    record_columns,
    rows_to_arrays,
    take_packed,
    tcp_part_rows,
)

# the decoder columns the connection stage and the segments table need
SEGMENT_INPUT_COLUMNS = ("frame", "ts", "vlan", "ip_version", "src", "dst", "sport", "dport", "seq", "ack",
                         "tcp_flags", "window", "payload_len", "claimed_len", "ip_len", "mss", "wscale", "sack_ok",
                         "pflags", "network_time")
# ... and those the UDP / ICMP / other-IP flows need
DATAGRAM_INPUT_COLUMNS = ("frame", "ts", "status", "vlan", "ip_version", "src", "dst", "ip_proto", "sport",
                          "dport", "ip_len", "payload_len", "network_time")

#: Zeek's inactivity timeouts (init-bare.zeek: tcp_inactivity_timeout, udp_, icmp_, unknown_ip_)
DEFAULT_IDLE_TIMEOUTS_S = {"tcp": 300.0, "udp": 60.0, "icmp": 60.0, "other": 60.0}


@dataclass
class Result:
    flows: pa.Table
    segments: pa.Table | None
    stats: dict = field(default_factory=dict)
    damage: Damage | None = None

    def metadata(self) -> dict[bytes, bytes]:
        return file_metadata({"fastflow_version": __version__, "inputs": [self.stats["source"]],
                              "counts": self.stats["counts"],
                              "damage": self.stats["damage"]})


def add_network_time(batch: dict, previous: int) -> int:
    """Zeek's network time per row: the largest timestamp seen so far in the capture, every packet counted
    (timeouts are measured on it), as batch["network_time"] (_decode.batch_rows). Returns the network time
    at the end of the batch."""
    batch["network_time"], previous = _decode.batch_rows(batch["status"], batch["pflags"], batch["ts"],
                                                         previous)[:2]
    return previous


def _concat(parts: list[dict], columns) -> dict:
    if not parts:
        empty = _decode.Decoder(1).take()  # zero rows with the decoder's dtypes
        return {name: empty[name] if name in empty else np.zeros(0, np.int64) for name in columns}
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in columns}


def _settings(filter_expr, idle_timeouts_s, server_ports):
    """Check the filter; the idle timeouts in ns by protocol (Zeek's where not given) and the likely server
    ports (TCP, UDP)."""
    if filter_expr:
        check_filter(filter_expr)
    timeouts = dict(DEFAULT_IDLE_TIMEOUTS_S, **(idle_timeouts_s or {}))
    timeouts_ns = {proto: int(seconds * 1e9) for proto, seconds in timeouts.items()}
    tcp_ports, udp_ports = server_ports or (ZEEK_LIKELY_SERVER_PORTS_TCP, ZEEK_LIKELY_SERVER_PORTS_UDP)
    return timeouts_ns, tcp_ports, udp_ports


def _input_counts(path: str, reader: CaptureReader, source: Source, bad_ip_checksum: int, tcp_segments: int):
    return {
        "packets": int(reader.frames),
        "filtered": int(reader.filtered),
        "bad_ip_checksum": int(bad_ip_checksum),
        "tcp_segments": int(tcp_segments),
        "by_status": reader.status_counts,
        "format": reader.file_format,
        "linktypes": reader.linktypes,
        "compression": source.compression,
        "input_bytes": source.raw_consumed if source.compression or path == "-" else (source.size or 0),
    }


def _damage_stats(damage: Damage | None) -> dict | None:
    return None if damage is None else {"kind": damage.kind, "offset": damage.offset, "message": damage.message}


def process(path: str, *, filter_expr: str | None = None, idle_timeouts_s: dict | None = None,
            want_segments: bool = False, batch_size: int = 1 << 18, community_id_seed: int = 0,
            vlan_aware: bool = False, server_ports: tuple | None = None, verify_checksums: bool = False,
            progress: Callable[[int, int | None], None] | None = None) -> Result:
    """Decode one capture and analyse its connections. Raises FastflowError subclasses.

    idle_timeouts_s: seconds by protocol ("tcp", "udp", "icmp", "other"), missing ones Zeek's defaults;
    server_ports: (TCP ports, UDP ports) Zeek takes as likely servers when it orients a connection;
    verify_checksums: as Zeek without -C, drop packets with a bad IPv4 header checksum and note bad TCP
    checksums in history (C) instead of analysing those segments."""
    started = time.perf_counter()
    timeouts_ns, tcp_ports, udp_ports = _settings(filter_expr, idle_timeouts_s, server_ports)
    tcp_parts, datagram_parts = [], []
    with Source(path) as source:
        reader = CaptureReader(source, filter_expr=filter_expr, batch_size=batch_size,
                               verify_checksums=verify_checksums)
        bad_ip_checksum = 0
        network_time = np.iinfo(np.int64).min
        for batch in reader.batches():
            batch["network_time"], network_time, tcp, datagram, bad = _decode.batch_rows(
                batch["status"], batch["pflags"], batch["ts"], network_time)
            bad_ip_checksum += bad
            tcp_parts.append({name: batch[name][tcp] for name in SEGMENT_INPUT_COLUMNS})
            if datagram.size:
                datagram_parts.append({name: batch[name][datagram] for name in DATAGRAM_INPUT_COLUMNS})
            del batch, tcp, datagram
            if progress is not None:
                progress(source.raw_consumed, source.size)
        decoded_at = time.perf_counter()
        seg = _concat(tcp_parts, SEGMENT_INPUT_COLUMNS)
        del tcp_parts
        segments, tcp_flows = analyse(seg, timeouts_ns["tcp"], tcp_ports, vlan_aware)
        other = datagram_flows(_concat(datagram_parts, DATAGRAM_INPUT_COLUMNS), timeouts_ns, udp_ports, vlan_aware)
        del datagram_parts
        flows, tcp_conn_id = combine_flows(tcp_flows, other)
        segments["conn_id"] = tcp_conn_id[segments["conn_id"]]
        flows["community_id"] = community_id(flows["orig_addr"], flows["resp_addr"], flows["ip_version"],
                                             flows["ip_proto"], flows["orig_p"], flows["resp_p"],
                                             seed=community_id_seed)
        analysed_at = time.perf_counter()
        flows_tab = flows_table(flows, path)
        segments_tab = segments_table(seg, segments) if want_segments else None
        counts = _input_counts(path, reader, source, bad_ip_checksum, len(seg["frame"]))
        counts.update(summary_counts(flows))
        damage = reader.damage
    finished = time.perf_counter()
    stats = {
        "source": path,
        "counts": counts,
        "damage": _damage_stats(damage),
        "seconds": {"decode": decoded_at - started, "connections": analysed_at - decoded_at,
                    "tables": finished - analysed_at, "total": finished - started},
    }
    return Result(flows_tab, segments_tab, stats, damage)


#: finished flows are written once this many are ready (and all older connections have finished)
FLUSH_ROWS = 1 << 14


def _concat_flows(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name in parts[0]:
        cols = [p[name] for p in parts]
        out[name] = np.ma.concatenate(cols) if any(np.ma.isMaskedArray(c) for c in cols) else np.concatenate(cols)
    return out


def _take(flows: dict, rows) -> dict:
    return {name: take_rows(col, rows) for name, col in flows.items()}


def _sorted_flows(flows: dict) -> dict:
    first = flows["first_frame"]
    if len(first) > 1 and np.any(first[1:] < first[:-1]):
        return _take(flows, np.argsort(first, kind="stable"))
    return flows


#: finished rows waiting in memory for an older connection to finish before they go to a sorted run file
WAIT_IN_MEMORY = 1 << 20


def _first_frames(table: pa.Table) -> np.ndarray:
    return fixed_width_values(table.column("first_frame"))


def _sorted_by_first_frame(table: pa.Table) -> pa.Table:
    order = np.argsort(_first_frames(table), kind="stable")
    return table.take(fixed_width_array(order, pa.int64()))


class _MemoryRows:
    """Ready rows held in memory, turned into tables a slice at a time in first-frame order. The TCP rows come
    with the order that sorts them (None: they are), applied a slice at a time: one gather of all the rows at
    once would be a second copy of them, made by reading them out of order."""

    def __init__(self, writer: _FlowWriter, tcp: tuple[np.ndarray, bytes, np.ndarray | None], datagram: dict):
        rows, text, self.order = tcp
        self.writer, self.tcp, self.datagram = writer, (rows, text), datagram
        tcp_first = rows["first_frame"] if self.order is None else rows["first_frame"][self.order]
        dg_first = datagram["first_frame"]
        bounds = np.sort(np.concatenate([tcp_first, dg_first]))[FLUSH_ROWS::FLUSH_ROWS]
        self.t_cuts = np.concatenate([[0], np.searchsorted(tcp_first, bounds), [len(tcp_first)]])
        self.d_cuts = np.concatenate([[0], np.searchsorted(dg_first, bounds), [len(dg_first)]])
        self.next = 0
        self.table: pa.Table | None = None

    def head(self, limit=None) -> pa.Table | None:
        while (self.table is None or not self.table.num_rows) and self.next < len(self.t_cuts) - 1:
            k = self.next
            self.next += 1
            which = slice(self.t_cuts[k], self.t_cuts[k + 1])
            self.table = self.writer.to_table(
                take_packed(*self.tcp, which if self.order is None else self.order[which]),
                _take(self.datagram, slice(self.d_cuts[k], self.d_cuts[k + 1])))
        return self.table if self.table is not None and self.table.num_rows else None

    def consume(self, n: int) -> None:
        self.table = self.table.slice(n)


class _RunFile:
    """Rows that waited too long in memory: sorted by first frame in a temporary Arrow IPC file, read back a
    batch at a time. Dictionary columns are plain strings there (the IPC file format wants one dictionary)."""

    def __init__(self, tables):
        """tables: sorted tables, each starting at or after the previous one's last row."""
        self.schema = FLOWS_SCHEMA
        plain = pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type,
                                    f.nullable, f.metadata) for f in self.schema])
        rows = 0
        self.firsts: list[int] = []     # each record batch's first first_frame
        try:
            self.file = tempfile.TemporaryFile(prefix="fastflow-waiting-rows-")
            with pa.ipc.new_file(self.file, plain) as writer:
                for table in tables:
                    for batch in table.cast(plain).to_batches(max_chunksize=FLUSH_ROWS):
                        if batch.num_rows:
                            writer.write_batch(batch)
                            self.firsts.append(batch.column("first_frame")[0].as_py())
                    rows += table.num_rows
            self.file.flush()
            self.reader = pa.ipc.open_file(self.file)
        except OSError as exc:
            raise OutputError(f"cannot keep finished rows in a temporary file in {tempfile.gettempdir()}: "
                              f"{exc.strerror or exc}") from None
        self.rows = rows
        self.next = 0
        self.table: pa.Table | None = None

    def head(self, limit=None) -> pa.Table | None:
        """The rows read back and not consumed yet; None when none is left, or when the next batch starts
        at or after `limit` (it stays on disk: while a long-lived connection holds the watermark back, each
        run file would otherwise keep a batch in memory)."""
        while (self.table is None or not self.table.num_rows) and self.next < self.reader.num_record_batches:
            if limit is not None and self.firsts[self.next] >= limit:
                return None
            batch = self.reader.get_batch(self.next)
            self.next += 1
            self.table = pa.Table.from_batches([batch]).cast(self.schema)
        return self.table if self.table is not None and self.table.num_rows else None

    def consume(self, n: int) -> None:
        self.table = self.table.slice(n)
        self.rows -= n
        if self.rows == 0:
            self.close()

    def close(self) -> None:
        self.file.close()


class _FlowWriter:
    """Finished flows of both engines, written in order of first packet with their final conn_id: a flow
    waits until every connection that started before it has finished (the watermark), so the rows come out
    in the same order and with the same numbers as the whole-capture run. Waiting TCP rows stay in the
    engine's packed form (288 bytes each); beyond WAIT_IN_MEMORY waiting rows (one connection open for hours
    holds back all that started after it) they go to sorted run files, merged back in order."""

    def __init__(self, sink, source: str, community_id_seed: int, empty: tuple[tuple, dict], on_emit=None):
        self.sink = sink
        self.on_emit = on_emit      # (first frames, conn_ids, last frames) of the rows written
        self.source = source
        self.seed = community_id_seed
        self.empty = empty          # zero rows of each engine, as templates
        # waiting parts, each with the smallest first frame of its rows not written yet: a part that starts at or
        # after the watermark is passed over without looking at its rows
        self.tcp: list[tuple[np.ndarray, bytes, np.ndarray, int]] = []   # packed rows, their text, written, low
        self.datagram: list[tuple[dict, int]] = []
        self.runs: list[_RunFile] = []
        self.waiting = 0
        self.next_conn_id = 0
        self.counts = finished_table(empty[0], empty[1], 0, source)[1]
        self._attempt_at = FLUSH_ROWS

    def add(self, tcp: tuple[np.ndarray, bytes], datagram: dict) -> None:
        if len(tcp[0]):
            self.tcp.append((tcp[0], tcp[1], np.zeros(len(tcp[0]), bool), int(tcp[0]["first_frame"].min())))
        if len(datagram["first_frame"]):
            self.datagram.append((datagram, int(datagram["first_frame"].min())))
        self.waiting += len(tcp[0]) + len(datagram["first_frame"])

    def _take_waiting(self, limit: np.uint64) -> tuple[tuple[np.ndarray, bytes, np.ndarray | None], dict]:
        """The waiting rows that started before limit (all of them for 2**64 - 1), out of memory: the TCP rows
        with the order that sorts them by first frame (None: they are), the datagram flows sorted."""
        ready_tcp, kept_tcp = [], []
        for part in self.tcp:
            rows, text, written, low = part
            if low >= limit:
                kept_tcp.append(part)
                continue
            first = rows["first_frame"]
            ready = np.flatnonzero((first < limit) & ~written)
            # a part ready whole is taken as it is, and a run of its rows as a view (a part is sorted by first
            # frame, and written from its start): copies here are what the peak memory is made of
            if ready.size == len(rows):
                ready_tcp.append((rows, text))
            elif ready.size:
                run = ready[-1] - ready[0] + 1 == ready.size
                ready_tcp.append(take_packed(rows, text, slice(ready[0], ready[-1] + 1) if run else ready))
            written[ready] = True
            left = np.flatnonzero(~written)
            if left.size == 0:
                continue
            if 2 * left.size < len(rows):   # compact once half of a part is written
                rows, written = take_packed(rows, text, left)[0], np.zeros(left.size, bool)
                first = rows["first_frame"]
            kept_tcp.append((rows, text, written, int(first[~written].min())))
        # the datagram parts that hold ready rows become one part sorted by first frame, split at the limit: its
        # rest is a slice, split again by the next flushes without a copy
        mixed = [flows for flows, low in self.datagram if low < limit]
        kept_dg = [part for part in self.datagram if part[1] >= limit]
        ready_dg = []
        if mixed:
            flows = _sorted_flows(_concat_flows(mixed))
            k = int(np.searchsorted(flows["first_frame"], limit))
            ready_dg.append(_take(flows, slice(0, k)))
            if k < len(flows["first_frame"]):
                kept_dg.append((_take(flows, slice(k, None)), int(flows["first_frame"][k])))
        self.tcp, self.datagram = kept_tcp, kept_dg
        self.waiting = (sum(len(w) - int(np.count_nonzero(w)) for _, _, w, _ in kept_tcp)
                        + sum(len(f["first_frame"]) for f, _ in kept_dg))
        rows, text = concat_packed(ready_tcp) if ready_tcp else self.empty[0]
        del ready_tcp
        datagram = _concat_flows(ready_dg) if ready_dg else self.empty[1]
        first = rows["first_frame"]
        order = np.argsort(first, kind="stable") if len(first) > 1 and np.any(first[1:] < first[:-1]) else None
        return (rows, text, order), _sorted_flows(datagram)

    def flush(self, watermark: int, force: bool = False) -> bool:
        """Write the waiting flows that started before `watermark` (the first frame of the oldest open one);
        False when that waits for more rows (unless force)."""
        if not force and self.waiting < self._attempt_at and not self.runs:
            return False
        limit = np.uint64(watermark)
        tcp, datagram = self._take_waiting(limit)
        # a long-lived connection holds the watermark back: try again once as many more have finished
        self._attempt_at = self.waiting + FLUSH_ROWS
        sources = [_MemoryRows(self, tcp, datagram)] + self.runs
        while True:
            heads = [(source, source.head(limit)) for source in sources]
            heads = [(source, head) for source, head in heads if head is not None]
            if not heads:
                break
            # every row up to the smallest last first frame of the heads is in order across the sources
            cut = min(min(int(_first_frames(head)[-1]) for _, head in heads), int(limit) - 1)
            pieces = []
            for source, head in heads:
                k = int(np.searchsorted(_first_frames(head), cut, side="right"))
                if k:
                    pieces.append(head.slice(0, k))
                    source.consume(k)
            if not pieces:
                break
            self._emit(pieces[0] if len(pieces) == 1 else _sorted_by_first_frame(pa.concat_tables(pieces)))
        self.runs = [run for run in self.runs if run.rows]
        if self.waiting > WAIT_IN_MEMORY:
            rows = _MemoryRows(self, *self._take_waiting(np.uint64(NO_OPEN_CONNECTION)))

            def slices():
                while (head := rows.head()) is not None:
                    rows.consume(head.num_rows)
                    yield head
            self.runs.append(_RunFile(slices()))
            self._attempt_at = FLUSH_ROWS
        return True

    def to_table(self, tcp: tuple[np.ndarray, bytes], datagram: dict) -> pa.Table:
        """Rows of both engines as one flows table in first-frame order (conn_id set when written)."""
        table, counts = finished_table(tcp, datagram, self.seed, self.source)
        _add_counts(self.counts, counts)
        return table

    def _emit(self, table: pa.Table) -> None:
        n = table.num_rows
        ids = fixed_width_array(np.arange(self.next_conn_id, self.next_conn_id + n, dtype=np.uint64), pa.uint64())
        self.next_conn_id += n
        self.sink(table.set_column(table.schema.get_field_index("conn_id"), table.schema.field("conn_id"), ids))
        if self.on_emit is not None:
            self.on_emit(_first_frames(table), np.arange(self.next_conn_id - n, self.next_conn_id, dtype=np.uint64),
                         fixed_width_values(table.column("last_frame")))

    def close(self) -> None:
        for run in self.runs:
            run.close()
        self.runs = []


def finished_table(tcp: tuple[np.ndarray, bytes], datagram: dict, seed: int, source: str) -> tuple[pa.Table, dict]:
    """The engines' rows (packed TCP rows, datagram flows) as one flows table in first-frame order, conn_id
    numbering these rows from 0, and its summary_counts(). The datagram flows become packed records too,
    merged with TCP's by first frame (a row copy each), and all are turned into columns at once."""
    rows, text = tcp
    n_tcp, n_dg = len(rows), len(datagram["first_frame"])
    proto = ip_proto = duration = None
    if n_dg:
        records, more_text = datagram_records(datagram, rows.dtype, len(text))
        text = text + more_text
        # where each row goes: the two sides are each in first-frame order, merged stably (TCP first on a tie)
        first = np.concatenate([rows["first_frame"], records["first_frame"]])
        place = np.empty(n_tcp + n_dg, np.int64)
        place[np.argsort(first, kind="stable")] = np.arange(n_tcp + n_dg)
        merged = np.empty(n_tcp + n_dg, rows.dtype)
        opaque = np.dtype((np.void, rows.dtype.itemsize))   # whole records: numpy copies fields one by one
        merged.view(opaque)[place[:n_tcp]] = np.ascontiguousarray(rows).view(opaque)
        merged.view(opaque)[place[n_tcp:]] = records.view(opaque)
        proto = np.zeros(n_tcp + n_dg, np.int8)
        proto[place[n_tcp:]] = category_codes(datagram["proto"], PROTO_VALUES)
        ip_proto = np.full(n_tcp + n_dg, 6, np.uint8)
        ip_proto[place[n_tcp:]] = datagram["ip_proto"]
        duration = np.empty(n_tcp + n_dg)
        duration[place[:n_tcp]] = (rows["last_time"] - rows["first_ts"]) / 1e9
        duration[place[n_tcp:]] = datagram["duration"]
        rows = merged
    n = len(rows)
    rows = record_columns(rows)
    columns = rows_to_arrays(rows, text, proto, ip_proto, duration)
    orig_addr, resp_addr = rows["orig_addr"], rows["resp_addr"]
    ip_version = rows["ip_version"]
    columns["orig_h"], columns["resp_h"] = address_columns([orig_addr, resp_addr], ip_version)
    columns["community_id"] = string_array(community_id(
        orig_addr, resp_addr, ip_version, np.full(n, 6, np.uint8) if ip_proto is None else ip_proto,
        rows["orig_p"], rows["resp_p"], seed=seed, as_bytes=True))
    columns["conn_id"] = fixed_width_array(np.arange(n, dtype=np.uint64), pa.uint64())
    columns["source"] = repeated_string(source, n)
    table = pa.Table.from_arrays([columns[name] for name in FLOWS_SCHEMA.names], schema=FLOWS_SCHEMA)
    return table, table_counts(table)


def _add_counts(total: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _add_counts(total[key], value)
        else:
            total[key] += value


def _finished(reader: CaptureReader, tcp: TcpFlows, datagram: DatagramStream, tally: dict, seconds: dict,
              finish: bool = True, frame_high: int = 0, select: Callable[[dict], np.ndarray] | None = None,
              want_segments: bool = False, decode_ahead: bool = False):
    """Decode, feed the engines; yield (TCP rows, datagram flows, watermark, last, segments) after each batch
    and at the end, where every connection finishes, the TCP ones oldest first and a portion at a time (a capture
    that ends with a million open connections is then written without holding all their rows).
    finish=False leaves the open connections in the engines (batch.py carries them to the next file);
    frame_high is or'ed into the frame numbers (batch.py: the file's number in its stream); select(batch)
    picks the rows the engines get (batch.py: one part of a stream), network time still counting every
    packet; network time starts from, and ends in, tally["network_time"] when given. With want_segments,
    segments is the batch's TCP rows (SEGMENT_INPUT_COLUMNS) with each one's connection in "conn_first"
    (else None). decode_ahead: decode in a thread of its own, a batch ahead of the engines."""
    network_time = tally.get("network_time", np.iinfo(np.int64).min)
    segment_memory = None
    batches = reader.batches()
    if isinstance(tcp, PartedTcpFlows):     # each packet's engine, found in the decoder's thread
        batches = _with_tcp_parts(batches, tcp, split=select is None and not want_segments)
    batches = _timed(batches, seconds, "decode")
    if decode_ahead:
        batches = _in_background(batches, ahead=1, name="fastflow-decode")
    # each batch's TCP rows come from tcp.collect() tcp.lag batches later (PartedTcpFlows: the other engines
    # work on meanwhile); the items still come out in batch order
    pending: deque = deque()
    while True:
        batch = next(batches, None)
        t1 = time.perf_counter()
        if batch is None:
            break
        keep = None if select is None else np.ascontiguousarray(select(batch), dtype=bool).view(np.uint8)
        status = batch["status"]
        batch["network_time"], network_time, rows, datagram_rows, bad = _decode.batch_rows(
            status, batch["pflags"], batch["ts"], network_time, keep)
        del keep
        tally["network_time"] = network_time
        tally["bad_ip_checksum"] += bad
        if frame_high:
            batch["frame"] = batch["frame"] | np.uint64(frame_high)
        tally["tcp_segments"] += rows.size
        segments = None
        every = rows.size == status.size
        if want_segments and rows.size:     # the segments table keeps the segments' rows
            if segment_memory is None:
                segment_memory = _segment_memory(batch)
            # room for the whole batch (the same size batch after batch, so that mappings are reused)
            room = segment_memory.rows(status.size)
            segments = _segment_rows(batch, None if every else rows, room)
            del room
            stepped = tcp.step(segments, network_time, segments["conn_first"])
        else:               # the engine reads them in place
            stepped = tcp.step(batch, network_time, rows=None if every else rows)
        if datagram_rows.size:
            datagram.feed({name: take_rows(batch[name], datagram_rows) for name in DATAGRAM_INPUT_COLUMNS})
        del rows, datagram_rows
        del batch
        datagram.expire(network_time)
        pending.append((stepped, datagram.drain(), datagram.min_open_first_frame(), segments))
        del stepped, segments
        seconds["connections"] += time.perf_counter() - t1
        while len(pending) > tcp.lag:
            yield _collected(tcp, pending.popleft(), seconds)
    while pending:
        yield _collected(tcp, pending.popleft(), seconds)
    if not finish:
        return
    datagram.finish()
    while True:
        t1 = time.perf_counter()
        tcp.finish(FLUSH_ROWS)
        low = tcp.min_open_first_frame()
        item = (tcp.drain_packed(), datagram.drain(), low, low == NO_OPEN_CONNECTION, None)
        seconds["connections"] += time.perf_counter() - t1
        yield item
        if low == NO_OPEN_CONNECTION:
            return


def _segment_memory(batch: dict) -> BatchMemory:
    """Where each batch's segments are kept: one mapping a batch, as the decoder's batches (decode.BatchMemory).
    Taken from glibc's heap in the engines' thread, a batch's 21 columns of 0.25 to 4 MB waited there until
    their connections finished or the batch was spilled, and left holes (scale input of
    benchmarks/RESULTS.md with --segments: about 110 MB of them, free but not returned, at the peak)."""
    return BatchMemory(layout=[(name, batch[name].dtype, batch[name].shape[1:]) for name in SEGMENT_INPUT_COLUMNS]
                       + [("conn_first", np.dtype(np.uint64), ())])


def _segment_rows(batch: dict, rows: np.ndarray | None, room: dict) -> dict:
    """The segment stream's columns of a batch's TCP rows (all of them when rows is None: views of the batch)
    and room for each one's connection ("conn_first"), in `room` (a batch's worth of those columns)."""
    n = len(batch["frame"]) if rows is None else rows.size
    segments = {"conn_first": room["conn_first"][:n]}
    for name in SEGMENT_INPUT_COLUMNS:
        if rows is None:
            segments[name] = batch[name]
        else:
            segments[name] = room[name][:n]
            np.take(batch[name], rows, axis=0, out=segments[name], mode="clip")    # clip: no buffering
    return segments


def _collected(tcp, waiting: tuple, seconds: dict) -> tuple:
    """A batch's item, once the TCP engines are done with it."""
    t0 = time.perf_counter()
    stepped, datagram_rows, datagram_low, segments = waiting
    tcp_rows, tcp_low = tcp.collect(stepped)
    seconds["connections"] += time.perf_counter() - t0
    return tcp_rows, datagram_rows, min(tcp_low, datagram_low), False, segments


def _with_tcp_parts(batches, engines: PartedTcpFlows, split: bool):
    """The batches, once the engines have split, each with "tcp_part_rows" (split): the TCP rows _finished()
    feeds (right IP checksum), split by part; else with "tcp_part": every packet's part."""
    for batch in batches:
        if engines.split:   # read as the batch is made: the batches made before find their parts then
            if split:
                batch["tcp_part_rows"] = tcp_part_rows(batch, engines.parts)
            else:
                batch["tcp_part"] = packet_parts(batch, engines.parts)
        yield batch
        del batch


def engine_parts(overlap: bool) -> int:
    """How many TCP engines stream_flows runs side by side: one per core it may use, up to two (the decoder
    and the main thread share the rest; see benchmarks/RESULTS.md), one without overlap."""
    if not overlap:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def _timed(items, seconds: dict, key: str):
    """The items, the time taken to make each added to seconds[key]."""
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        seconds[key] += time.perf_counter() - t0
        if item is None:
            return
        yield item
        del item    # before making the next one: a decoded batch is tens of MB


def _in_background(items, ahead: int, name: str):
    """Run a generator in a thread, at most `ahead` items beyond the one the caller holds: decoding and the
    engines (which release the GIL) overlap with what the caller does. An item is made only once an earlier
    one is let go (the caller asks for the next), so no more than ahead + 1 are alive at once: decoded
    batches are tens of MB. Its exceptions reach the caller; the caller stopping (an error, SIGINT) stops it."""
    results: queue.Queue = queue.Queue()
    room = threading.Semaphore(ahead + 1)
    stop = threading.Event()
    done = object()

    def work():
        try:
            while True:
                while not room.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                item = next(items, done)
                results.put((True, item))
                if item is done:
                    return
                del item
        except BaseException as exc:   # handed to the caller, which raises it
            results.put((False, exc))

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            ok, item = results.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
            del item
            room.release()
    finally:
        stop.set()
        worker.join()


def stream_flows(path: str, sink: Callable[[pa.Table], None], *, filter_expr: str | None = None,
                 idle_timeouts_s: dict | None = None, batch_size: int = 1 << 18, community_id_seed: int = 0,
                 vlan_aware: bool = False, server_ports: tuple | None = None, verify_checksums: bool = False,
                 progress: Callable[[int, int | None], None] | None = None, overlap: bool = True,
                 segments_sink: Callable[[pa.Table], None] | None = None, tcp_parts: int | None = None) -> Result:
    """process() streaming, in memory bounded by the open connections: batches are decoded, fed to the
    streaming engines (tcpflows.py, datagram.DatagramStream), and the flows of finished connections go to
    ``sink`` as Arrow tables, in conn_id order, the same rows process() gives. segments_sink, when given,
    gets the segments table's rows the same way (segment_stream.py), in frame order.
    overlap: decode and run the engines in a second thread while this one writes (same output).
    tcp_parts: TCP engines run side by side (PartedTcpFlows; same output), by default engine_parts(overlap).
    Returns a Result whose flows and segments are None."""
    started = time.perf_counter()
    timeouts_ns, tcp_ports, udp_ports = _settings(filter_expr, idle_timeouts_s, server_ports)
    tcp_parts = engine_parts(overlap) if tcp_parts is None else tcp_parts
    # with --segments, whose waiting segments share the memory, half as many open records stay in memory (scale
    # input of benchmarks/RESULTS.md: peak RSS about 60 MB lower, no slower on two cores)
    records = tcpflows.MAX_IN_MEMORY if segments_sink is None else max(1, tcpflows.MAX_IN_MEMORY // 2)
    if tcp_parts > 1:
        tcp = PartedTcpFlows(tcp_parts, timeouts_ns["tcp"], tcp_ports, vlan_aware, max_in_memory=records)
    else:
        tcp = TcpFlows(timeouts_ns["tcp"], tcp_ports, vlan_aware, max_in_memory=records)
    datagram = DatagramStream(timeouts_ns, udp_ports, vlan_aware)
    segments = None if segments_sink is None else SegmentStream(segments_sink, tcp_ports, vlan_aware)
    out = _FlowWriter(sink, path, community_id_seed, (tcp.drain_packed(), datagram.drain()),
                      on_emit=None if segments is None else segments.numbered)
    seconds = {"decode": 0.0, "connections": 0.0, "tables": 0.0}
    tally = {"bad_ip_checksum": 0, "tcp_segments": 0}
    with Source(path) as source:
        reader = CaptureReader(source, filter_expr=filter_expr, batch_size=batch_size,
                               verify_checksums=verify_checksums)
        items = _finished(reader, tcp, datagram, tally, seconds, want_segments=segments is not None,
                          decode_ahead=overlap)
        try:
            if overlap:
                items = _in_background(items, ahead=2, name="fastflow-engines")
            for tcp_rows, datagram_flows_, watermark, last, seg in items:
                t0 = time.perf_counter()
                if segments is not None:
                    segments.add(seg)
                    segments.finished(tcp_rows[0]["first_frame"])
                out.add(tcp_rows, datagram_flows_)
                if out.flush(watermark, force=last) and segments is not None:
                    # below the watermark, and below what was read: with no connection open the watermark
                    # is 2**64 - 1, while the next packets may start new ones
                    segments.write_below(min(watermark, segments.read_upto))
                seconds["tables"] += time.perf_counter() - t0
                if progress is not None:
                    progress(source.raw_consumed, source.size)
        finally:
            out.close()
            tcp.close()
            if segments is not None:
                segments.close()
        bad_ip_checksum, tcp_segments = tally["bad_ip_checksum"], tally["tcp_segments"]
        counts = _input_counts(path, reader, source, bad_ip_checksum, tcp_segments)
        counts.update(out.counts)
        damage = reader.damage
    seconds["total"] = time.perf_counter() - started
    stats = {"source": path, "counts": counts, "damage": _damage_stats(damage), "seconds": seconds}
    return Result(None, None, stats, damage)
