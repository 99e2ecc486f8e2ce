"""Capture archives: `fastflow batch` turns directories of rotated captures into one Hive-partitioned
Parquet dataset, incrementally, from cron.

Files are grouped into streams (by default one per folder) and ordered by their first packet. A stream's
files go through the same streaming engines as `fastflow process`, one after the other, so connections cross
file boundaries exactly as if the stream were one capture; the connections still open at the end of a run are
saved with the dataset (the engines' snapshots) and continued by the next run. Streams run in parallel worker
processes (-j). docs/batch.md describes the dataset, the manifest and the guarantees.

Crash safety: every file goes in whole (a temporary name renamed into place; on an object store, an upload:
dataset_store.py); the manifest (rewritten atomically) is the only record of which outputs and which saved state belong to the dataset, and a run first
removes whatever a killed run left that the manifest does not name."""
from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import hashlib
import io
import json
import multiprocessing
import os
import re
import signal
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import __version__, tcpflows
from .datagram import DatagramStream
from .dataset_store import META_DIR, modified_time, open_store
from .decode import CaptureReader, Status
from .errors import FastflowError, InputError, OutputError, UsageError
from .pipeline import _finished, _settings, finished_table
from .schema import (
    BATCH_FLOWS_SCHEMA,
    BATCH_SEGMENTS_SCHEMA,
    file_metadata,
    fixed_width_array,
    fixed_width_values,
    segments_table,
    string_array,
)
from .segment_stream import SegmentStream
from .source import Source, is_url, sniff_compression, url_filesystem
from .tcpflows import TcpFlows, concat_packed, packet_parts
from .write import ParquetStream

MANIFEST = "manifest.json"
FRAME_BITS = 32                 # frame numbers in the engines: the file's number in its stream << 32 | frame
MAX_FRAMES_PER_FILE = (1 << FRAME_BITS) - 1
STATE_MAGIC = b"FASTFLOW-STATE\n"
CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
                  b"\x0a\x0d\x0d\x0a")


@dataclass
class Settings:
    filter_expr: str | None = None
    idle_timeouts_s: dict | None = None
    community_id_seed: int = 0
    vlan_aware: bool = False
    server_ports: tuple | None = None
    verify_checksums: bool = False
    compression: str = "zstd"
    segments: bool = False      # also the segments table (DATASET/segments/)

    def key(self) -> dict:
        """What must not change between the runs of one dataset (the saved connections depend on it)."""
        ports = self.server_ports
        key = {"filter": self.filter_expr, "idle_timeouts_s": self.idle_timeouts_s,
               "community_id_seed": self.community_id_seed, "vlan_aware": self.vlan_aware,
               "server_ports": None if ports is None else [sorted(map(int, p)) for p in ports],
               "verify_checksums": self.verify_checksums}
        if self.segments:     # the segments of open connections are saved with them
            key["segments"] = True
        return key


def _crash_point(label: str) -> None:
    """Where tests kill the run (FASTFLOW_TEST_KILL_AT=label or label:N for the N-th time, from 1), to show
    that a run killed at any moment leaves a dataset the next run completes."""
    want = os.environ.get("FASTFLOW_TEST_KILL_AT")
    if not want or want.partition(":")[0] != label:
        return
    _crash_counts[label] = _crash_counts.get(label, 0) + 1
    if _crash_counts[label] == int(want.partition(":")[2] or 1):
        os.kill(os.getpid(), 9)


_crash_counts: dict[str, int] = {}


# --- finding the inputs -------------------------------------------------------------------------------------

def _open(path: str):
    """A local path, or a URI through fsspec (source.is_url)."""
    if is_url(path):
        fs, inner = url_filesystem(path)
        return fs.open(inner, "rb")
    return open(path, "rb")


def _stat(path: str) -> tuple[int, int | None]:
    """Size and modification time (ns; None where a URI's filesystem does not keep one)."""
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    fs, inner = url_filesystem(path)
    info = fs.info(inner)
    stamp = modified_time(info)
    return int(info["size"]), None if stamp is None else int(stamp * 1e9)


def _exists(path: str) -> bool:
    try:
        _stat(path)
        return True
    except (OSError, FastflowError):
        return False


def looks_like_capture(path: str) -> bool:
    """pcap / pcapng magic, or a compressed stream (checked when decoded)."""
    try:
        with _open(path) as f:
            head = f.read(8)
    except OSError:
        return False
    return head[:4] in CAPTURE_MAGICS or sniff_compression(head) is not None


def _discover_url(source: str, found: dict, ignored: list, store) -> None:
    """discover() for a URI: a file, a folder (every file below it) or a glob pattern."""
    fs, inner = url_filesystem(source)
    if fs.isdir(inner):
        names = fs.find(inner)
    elif fs.isfile(inner):
        names = [inner]
    elif glob.has_magic(inner):
        names = []
        for match in fs.glob(inner):
            names += fs.find(match) if fs.isdir(match) else [match]
    else:
        raise UsageError(f"{source}: no such file or folder")
    for name in sorted(names):
        url = fs.unstrip_protocol(name)
        if any(part.startswith(".") for part in name.split("/")) or store.contains(url):
            continue
        if url == source or looks_like_capture(url):
            found[url] = None
        else:
            ignored.append(url)


def discover(sources: list[str], store) -> tuple[list[str], list[str]]:
    """The input files named by sources (files, folders walked recursively, glob patterns), absolute and
    without duplicates; and the files of folders that are not captures (left alone). A named file or folder
    that does not exist is a usage error; a pattern that matches nothing is not (an archive may be empty)."""
    found: dict[str, None] = {}
    ignored: list[str] = []
    skip = store.root if not store.remote else None

    def add_tree(folder: str) -> None:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(root, d) != skip)
            for name in sorted(files):
                path = os.path.join(root, name)
                if name.startswith(".") or not os.path.isfile(path):
                    continue
                if looks_like_capture(path):
                    found[path] = None
                else:
                    ignored.append(path)

    for source in sources:
        if is_url(source):
            _discover_url(source, found, ignored, store)
            continue
        path = os.path.abspath(source)
        if os.path.isdir(path):
            add_tree(path)
        elif os.path.isfile(path):
            found[path] = None
        elif glob.has_magic(source):
            for match in sorted(glob.glob(source, recursive=True)):
                match = os.path.abspath(match)
                if os.path.isdir(match):
                    add_tree(match)
                elif os.path.isfile(match):
                    found[match] = None
        else:
            raise UsageError(f"{source}: no such file or folder")
    return list(found), ignored


def stream_of(path: str, pattern: re.Pattern | None) -> str:
    """The stream a file belongs to: --stream-pattern's first group (or whole match) on its path, else its
    folder."""
    if pattern is not None:
        m = pattern.search(path)
        if m:
            return m.group(1) if m.re.groups else m.group(0)
    return path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


def fingerprint(path: str, size: int) -> str:
    """A content fingerprint cheap enough for thousands of files: BLAKE2b of the size and of the first and
    last MiB (a capture that changes is appended to or rewritten, which changes one of them)."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with _open(path) as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
        h.update(f.read(1 << 20))
    return h.hexdigest()


def first_packet_time(path: str) -> int | None:
    """The first packet's timestamp (ns), None for a capture without packets. Raises FastflowError."""
    # small blocks: a compressed file is decompressed only as far as its first packet
    with Source(path, block_size=1 << 16) as source:
        reader = CaptureReader(source, batch_size=1)
        for batch in reader.batches():
            if len(batch["ts"]):
                return int(batch["ts"][0])
        return None


# --- one stream: its files through the engines, in order -------------------------------------------------

def _write_state(store, rel: str, tcp: TcpFlows, datagram: DatagramStream, network_time: int,
                 segments: SegmentStream | None = None) -> None:
    """The open connections of both engines: a JSON header line, then length-prefixed snapshot blocks (and
    with segments, one block of the segments held for them, as numpy's .npz)."""
    header = {"fastflow_version": __version__, "tcp_record_layout": tcpflows.RECORD_LAYOUT,
              "network_time": int(network_time),
              "tcp_open": tcp.open_count, "datagram_open": datagram.open_count}
    path = store.local_path(rel)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(STATE_MAGIC + json.dumps(header).encode() + b"\n")
        for kind, engine in ((b"T", tcp), (b"D", datagram)):
            for block in engine.snapshot_blocks():
                f.write(kind + struct.pack("<Q", len(block)))
                f.write(block)
        held = segments.held() if segments is not None else None
        if held is not None:
            buffer = io.BytesIO()
            np.savez(buffer, **held)
            f.write(b"S" + struct.pack("<Q", buffer.getbuffer().nbytes))
            f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    store.publish(rel, path)


def _read_state(store, rel: str, tcp: TcpFlows, datagram: DatagramStream, part: int = 0, parts: int = 1,
                segments: SegmentStream | None = None) -> int:
    """Restore the engines (and the segments held) from a state file: the connections of part `part` of
    `parts`; returns the network time saved with it."""
    path = store.path(rel)
    with store.open(rel) as f:
        if f.read(len(STATE_MAGIC)) != STATE_MAGIC:
            raise InputError(f"{path}: not a fastflow state file")
        header = json.loads(f.readline())
        if header.get("fastflow_version") != __version__:
            raise UsageError(f"{path}: saved by fastflow {header.get('fastflow_version')}, this is {__version__}: "
                             "finish the dataset's open connections with that version's --flush first")
        if header.get("tcp_record_layout") != tcpflows.RECORD_LAYOUT:
            raise UsageError(f"{path}: saved by another build of fastflow {__version__} (open connections "
                             f"stored as {header.get('tcp_record_layout')}, this build's are "
                             f"{tcpflows.RECORD_LAYOUT}): finish the dataset's open connections with that "
                             "build's --flush first")
        while kind := f.read(1):
            (length,) = struct.unpack("<Q", f.read(8))
            block = f.read(length)
            if len(block) != length or kind not in (b"T", b"D", b"S"):
                raise InputError(f"{path}: state file cut short")
            if kind == b"S":
                if segments is not None:
                    segments.add(_held_segments(block, part, parts))
                continue
            (tcp if kind == b"T" else datagram).restore_blocks([block], part, parts)
    return int(header["network_time"])


def _held_segments(block: bytes, part: int, parts: int) -> dict:
    """Saved segments (a state file's S block), those of part `part` of `parts` when parts > 1."""
    with np.load(io.BytesIO(block)) as saved:
        rows = {name: saved[name] for name in saved.files}
    if parts > 1:
        n = len(rows["frame"])
        mine = packet_parts({"status": np.full(n, Status.TCP, np.uint8), "src": rows["src"], "dst": rows["dst"],
                             "sport": rows["sport"], "dport": rows["dport"]}, parts) == part
        rows = {name: values[mine] for name, values in rows.items()}
    return rows


class _PartWriter:
    """A file's finished connections (or their segments), one Parquet part per UTC day of ts_start (of ts)
    in DATASET/flows (DATASET/segments), Hive style: date=YYYY-MM-DD."""

    def __init__(self, store, stem: str, compression: str, table: str = "flows"):
        self.store, self.stem, self.compression = store, stem, compression
        self.table = table
        self.schema, self.time_column = ((BATCH_FLOWS_SCHEMA, "ts_start") if table == "flows"
                                         else (BATCH_SEGMENTS_SCHEMA, "ts"))
        self.parts: dict[str, tuple[str, ParquetStream]] = {}     # day -> (name in the dataset, writer)

    def write(self, table: pa.Table) -> None:
        ts = fixed_width_values(table.column(self.time_column).cast(pa.int64())).astype("datetime64[ns]")
        ts = ts.astype("datetime64[D]")
        days, where = np.unique(ts, return_inverse=True)
        for k, day in enumerate(days):
            part = self.parts.get(str(day))
            if part is None:
                rel = f"{self.table}/date={day}/{self.stem}.parquet"
                part = self.parts[str(day)] = (rel, ParquetStream(self.store.local_path(rel), self.schema,
                                                                  self.compression))
            part = part[1]
            rows = np.flatnonzero(where == k)
            part.write(table if rows.size == table.num_rows else table.take(fixed_width_array(rows, pa.int64())))

    def commit(self, metadata: dict[bytes, bytes]) -> list[str]:
        names = []
        while self.parts:
            rel, part = self.parts.popitem()[1]
            part.commit(metadata)
            self.store.publish(rel, part.path)
            names.append(rel)
        return sorted(names)

    def discard(self) -> None:
        for _, part in self.parts.values():
            part._discard()
        self.parts = {}


def _file_paths(frames: np.ndarray, files: dict[int, str]) -> pa.Array:
    """The file of each engine frame number (file number << 32 | frame)."""
    used, where = np.unique(frames >> np.uint64(FRAME_BITS), return_inverse=True)
    names = np.array([files[int(k)] for k in used], dtype=object)
    return string_array(names[where.reshape(-1)] if len(frames) else np.array([], dtype=object))


def _provenance(table: pa.Table, first: np.ndarray, last: np.ndarray, files: dict[int, str],
                stream: str) -> pa.Table:
    """Engine frame numbers (file number << 32 | frame) as file paths and frame numbers in those files."""
    def paths(frames):
        return _file_paths(frames, files)

    mask = np.uint64(MAX_FRAMES_PER_FILE)
    columns = {
        "conn_id": fixed_width_array(first, pa.uint64()),
        "source": paths(first),
        "first_frame": fixed_width_array(first & mask, pa.uint64()),
        "last_frame": fixed_width_array(last & mask, pa.uint64()),
    }
    for name, column in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, BATCH_FLOWS_SCHEMA.field(name), column)
    table = table.append_column(BATCH_FLOWS_SCHEMA.field("last_source"), paths(last))
    return table.append_column(BATCH_FLOWS_SCHEMA.field("stream"), string_array(np.full(table.num_rows, stream,
                                                                                         dtype=object)))


def _segments_rows(rows: dict, result: dict, files: dict[int, str], stream: str) -> pa.Table:
    """Analysed segments (SegmentStream.pop_finished) as dataset rows: the frame in its file, the file, the
    stream; conn_id is the connection's first frame in the engines, as the flows' conn_id."""
    frames = rows["frame"]
    table = segments_table(dict(rows, frame=frames & np.uint64(MAX_FRAMES_PER_FILE)), result)
    columns = table.columns + [_file_paths(frames, files),
                               string_array(np.full(len(frames), stream, dtype=object))]
    return pa.Table.from_arrays(columns, schema=BATCH_SEGMENTS_SCHEMA)


def process_stream(job: dict) -> dict:
    """Run one stream's new files (job: see run()). Returns, per file, its status, counts and outputs, and
    the new state file. Runs in a worker process: every error is returned, never raised.

    Files whose time ranges overlap are merged in time order, as mergecap would. An overlap shows when a file
    starts before the previous one ended; the stream's work of this run is then started again with every
    file's time range known (a decode-only pass) and the overlapping files read together."""
    settings: Settings = job["settings"]
    store = open_store(job["dataset"])
    stream, run_id = job["stream"], job["run_id"]
    files = {int(k): v for k, v in job["all_files"].items()}     # file number -> path, the whole stream
    part, parts = job["part"], job["parts"]
    label = f"{job['stream_no']}-{{}}-{part}of{parts}-{run_id}"      # part and state file names
    out: dict = {"stream": stream, "part": part, "files": [], "state": None, "error": None, "merged": []}
    entries = job["files"]
    groups: list[list[dict]] | None = None          # overlapping files read together, once known
    tcp = None
    try:
        while True:
            timeouts_ns, tcp_ports, udp_ports = _settings(settings.filter_expr, settings.idle_timeouts_s,
                                                          settings.server_ports)
            tcp = TcpFlows(timeouts_ns["tcp"], tcp_ports, settings.vlan_aware,
                           max_in_memory=tcpflows.MAX_IN_MEMORY)
            datagram = DatagramStream(timeouts_ns, udp_ports, settings.vlan_aware)
            segments = SegmentStream(None, tcp_ports, settings.vlan_aware) if settings.segments else None
            tally = {"network_time": np.iinfo(np.int64).min}
            for name in job["state"]:
                tally["network_time"] = _read_state(store, name, tcp, datagram, part, parts, segments)
            end_ts = job.get("end_ts")
            units = groups if groups is not None else [[e] for e in entries]
            results: list[dict] = []
            overlap = False
            for k, unit in enumerate(units):
                results += _process_unit(unit, store, stream, label, settings, tcp, datagram, tally, files,
                                         part, parts, segments)
                if job.get("report") is not None and part == 0 and groups is None:
                    job["report"].put((stream, sum(e["candidate"].size for e in unit)))
                ends = [r["end_ts"] for r in results[-len(unit):] if r.get("end_ts") is not None]
                end_ts = max(ends) if ends else end_ts
                following = units[k + 1][0]["candidate"].first_ts if k + 1 < len(units) else None
                if groups is None and following is not None and end_ts is not None and following < end_ts:
                    overlap = True
                    break
            if not overlap:
                break
            # start again: this pass's outputs go, the files are grouped by their time ranges
            for r in results:
                for name in r["outputs"]:
                    store.delete(name)
            tcp.close()
            groups = _overlapping(entries, settings)
        out["files"] = results
        out["end_ts"] = end_ts
        out["merged"] = [[e["path"] for e in g] for g in (groups or []) if len(g) > 1]
        if job["flush"]:
            # the open connections written as they are; the next run starts the stream with none open
            writer = _PartWriter(store, "part-" + label.format("flush"), settings.compression)
            seg_writer = _PartWriter(store, "part-" + label.format("flush"), settings.compression, "segments")
            try:
                datagram.finish()
                tcp.finish()
                tcp_rows = tcp.drain_packed()
                written = 0
                if segments is not None:
                    written = _write_segments(seg_writer, segments, tcp_rows[0]["first_frame"], files, stream)
                counts = _write_rows(writer, [tcp_rows], [datagram.drain()], settings, files, stream, None)
                metadata = file_metadata({"fastflow_version": __version__, "stream": stream, "flushed": True})
                out["flushed"] = {"flows": counts["connections"], "segments": written,
                                  "outputs": sorted(writer.commit(metadata) + seg_writer.commit(metadata))}
            finally:
                writer.discard()
                seg_writer.discard()
        else:
            state = f"{META_DIR}/state/stream-" + label.format("open") + ".state"
            _write_state(store, state, tcp, datagram, tally["network_time"], segments)
            _crash_point("state-written")
            out["state"] = state
            out["open"] = {"tcp": tcp.open_count, "other": datagram.open_count}
    except FastflowError as exc:
        out["error"] = str(exc)
    except OSError as exc:
        out["error"] = f"{exc.filename or store.name}: {exc.strerror or exc}"
    finally:
        if tcp is not None:
            tcp.close()
        store.close()
    return out


def _time_range(path: str, settings: Settings) -> tuple[int | None, int | None]:
    """A file's first and last packet times (decode only); (None, None) if it has none or cannot be read."""
    first = last = None
    try:
        with Source(path) as source:
            reader = CaptureReader(source, filter_expr=settings.filter_expr)
            for batch in reader.batches():
                if len(batch["ts"]):
                    first = int(batch["ts"][0]) if first is None else first
                    last = int(batch["ts"][-1])
    except FastflowError:
        pass
    return first, last


def _overlapping(entries: list[dict], settings: Settings) -> list[list[dict]]:
    """The files in runs whose time ranges overlap (each run read as one, merged in time order)."""
    groups: list[list[dict]] = []
    group_end = None
    for entry in entries:
        first, last = _time_range(entry["path"], settings)
        if groups and first is not None and group_end is not None and first < group_end:
            groups[-1].append(entry)
        else:
            groups.append([entry])
            group_end = None
        if last is not None:
            group_end = last if group_end is None else max(group_end, last)
    return groups


class _Opened:
    """One file of a unit: its source and reader, its batches numbered with the file's number."""

    def __init__(self, entry: dict, settings: Settings):
        self.entry = entry
        self.source = Source(entry["path"])
        self.reader = CaptureReader(self.source, filter_expr=settings.filter_expr, batch_size=1 << 18,
                                    verify_checksums=settings.verify_checksums)
        self.end_ts: int | None = None

    def batches(self):
        high = np.uint64(self.entry["seq"] << FRAME_BITS)
        for batch in self.reader.batches():
            if self.reader.frames > MAX_FRAMES_PER_FILE:
                raise InputError(f"{self.entry['path']}: more than {MAX_FRAMES_PER_FILE} packets in one file")
            if len(batch["ts"]):
                self.end_ts = int(batch["ts"][-1])
            batch["frame"] = batch["frame"] | high
            yield batch


class _Merged:
    """Several files' batches merged in time order, as mergecap does with time-ordered files: rows up to the
    earliest of the files' current batch ends go out together, sorted by time (ties: earlier file first)."""

    def __init__(self, opened: list[_Opened]):
        self.opened = opened

    def batches(self):
        streams = [o.batches() for o in self.opened]
        heads: list[dict | None] = [next(s, None) for s in streams]
        while any(h is not None for h in heads):
            live = [k for k, h in enumerate(heads) if h is not None]
            cutoff = min(int(heads[k]["ts"][-1]) for k in live)
            taken = []
            for k in live:
                ts = heads[k]["ts"]
                n = int(np.argmax(ts > cutoff)) if ts[-1] > cutoff else len(ts)
                if n:
                    taken.append({c: v[:n] for c, v in heads[k].items()})
                    heads[k] = {c: v[n:] for c, v in heads[k].items()} if n < len(ts) else None
                if heads[k] is None:
                    heads[k] = next(streams[k], None)
                    while heads[k] is not None and not len(heads[k]["ts"]):
                        heads[k] = next(streams[k], None)
            if not taken:
                continue
            batch = {c: np.concatenate([t[c] for t in taken]) for c in taken[0]}
            order = np.argsort(batch["ts"], kind="stable")
            yield {c: v[order] for c, v in batch.items()}


def _process_unit(unit: list[dict], store, stream: str, label: str, settings: Settings, tcp: TcpFlows,
                  datagram: DatagramStream, tally: dict, files: dict, part: int, parts: int,
                  segments: SegmentStream | None = None) -> list[dict]:
    """One file, or files read together (merged); returns each file's result (the outputs go with the first)."""
    results = {e["path"]: {"path": e["path"], "status": "done", "error": None, "damage": None, "outputs": [],
                           "packets": 0, "flows": 0, "segments": 0, "seconds": 0.0, "end_ts": None} for e in unit}
    started = time.perf_counter()
    writer = _PartWriter(store, "part-" + label.format(unit[0]["seq"]), settings.compression)
    seg_writer = _PartWriter(store, "part-" + label.format(unit[0]["seq"]), settings.compression, "segments")
    select = None if parts == 1 else (lambda batch: packet_parts(batch, parts) == part)
    opened: list[_Opened] = []
    counts = None
    written = 0         # segments
    try:
        for entry in unit:
            try:
                opened.append(_Opened(entry, settings))
            except FastflowError as exc:
                results[entry["path"]].update(status="failed", error=str(exc))
        if opened:
            reader = opened[0] if len(opened) == 1 else _Merged(opened)
            seconds = {"decode": 0.0, "connections": 0.0}
            tally.update(bad_ip_checksum=0, tcp_segments=0)
            parts_tcp, parts_dg = [], []
            for tcp_rows, dg, _, _, seg in _finished(reader, tcp, datagram, tally, seconds, finish=False,
                                                  select=select, want_segments=segments is not None):
                if segments is not None:
                    segments.add(seg)
                    written += _write_segments(seg_writer, segments, tcp_rows[0]["first_frame"], files, stream)
                parts_tcp.append(tcp_rows)
                parts_dg.append(dg)
                if sum(len(r) for r, _ in parts_tcp) + sum(len(d["first_frame"]) for d in parts_dg) >= 1 << 16:
                    counts = _write_rows(writer, parts_tcp, parts_dg, settings, files, stream, counts)
            counts = _write_rows(writer, parts_tcp, parts_dg, settings, files, stream, counts)
        for o in opened:
            r = results[o.entry["path"]]
            r["packets"] = int(o.reader.frames)
            r["bytes"] = int(o.source.raw_consumed if o.source.compression else (o.source.size or 0))
            r["end_ts"] = o.end_ts
            if o.reader.damage is not None:
                r["status"] = "damaged"
                r["damage"] = o.reader.damage.describe(o.entry["path"])
                r["damage_stops"] = o.reader.damage.stops
        first = results[unit[0]["path"]]
        metadata = file_metadata({"fastflow_version": __version__, "stream": stream,
                                  "inputs": [e["path"] for e in unit]})
        first["outputs"] = sorted(writer.commit(metadata) + seg_writer.commit(metadata))
        _crash_point("file-written")
        first["flows"] = counts["connections"] if counts else 0
        first["segments"] = written
    except FastflowError as exc:
        for r in results.values():
            r.update(status="failed", error=str(exc))
    finally:
        writer.discard()
        seg_writer.discard()
        for o in opened:
            o.source.close()
    for r in results.values():
        r["seconds"] = (time.perf_counter() - started) / len(unit)
    return list(results.values())


def _write_segments(writer: _PartWriter, segments: SegmentStream, first_frames: np.ndarray,
                    files: dict[int, str], stream: str) -> int:
    """The segments of the connections that finished (first_frames), analysed and written; how many."""
    finished = segments.pop_finished(first_frames)
    if finished is None:
        return 0
    writer.write(_segments_rows(*finished, files, stream))
    return len(finished[0]["frame"])


def _write_rows(writer: _PartWriter, parts_tcp: list, parts_dg: list, settings: Settings, files: dict,
                stream: str, counts: dict | None) -> dict | None:
    if not parts_tcp:
        return counts
    tcp_rows = concat_packed(parts_tcp)
    dg = {k: np.ma.concatenate([d[k] for d in parts_dg]) if np.ma.isMaskedArray(parts_dg[0][k])
          else np.concatenate([d[k] for d in parts_dg]) for k in parts_dg[0]}
    parts_tcp.clear()
    parts_dg.clear()
    table, more = finished_table(tcp_rows, dg, settings.community_id_seed, "")
    if counts is None:
        counts = more
    else:
        _add(counts, more)
    if table.num_rows:
        writer.write(_provenance(table, fixed_width_values(table.column("first_frame")),
                                 fixed_width_values(table.column("last_frame")), files, stream))
    return counts


def _add(total: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


# --- the dataset: lock, manifest, planning, committing ------------------------------------------------------

def load_manifest(store) -> dict:
    rel = f"{META_DIR}/{MANIFEST}"
    try:
        with store.open(rel) as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        return {"format": 1, "settings": None, "streams": {}, "inputs": {}}
    except (OSError, ValueError) as exc:
        raise InputError(f"{store.path(rel)}: unreadable manifest: {exc}") from None
    if manifest.get("format") != 1:
        raise InputError(f"{store.path(rel)}: manifest format {manifest.get('format')} is not one this fastflow reads")
    return manifest


def save_manifest(store, manifest: dict) -> None:
    """Atomically (dataset_store: a renamed temporary file locally, one PUT on an object store), and only
    while this run still holds the lock."""
    store.check_lock()
    try:
        store.write_atomic(f"{META_DIR}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
    except OSError as exc:
        raise OutputError(f"{store.name}: cannot write the manifest: {exc.strerror or exc}") from None


def _referenced(manifest: dict) -> set[str]:
    names = {name for s in manifest["streams"].values() for name in s.get("state") or []}
    for entry in manifest["inputs"].values():
        names.update(entry.get("outputs", []))
    for s in manifest["streams"].values():
        names.update(s.get("flushed_outputs", []))
    return names


def remove_unreferenced(store, manifest: dict) -> int:
    """Delete the outputs and state files a killed run left behind (named by no manifest entry)."""
    keep = _referenced(manifest)
    removed = 0
    for top in ("flows", "segments", f"{META_DIR}/state"):
        for rel in list(store.files(top)):
            name = rel.rsplit("/", 1)[-1]
            if rel not in keep and (name.endswith((".parquet", ".state", ".tmp")) or name.startswith(".")):
                store.delete(rel)
                removed += 1
    return removed


@dataclass
class Candidate:
    path: str
    stream: str
    size: int
    mtime_ns: int
    fingerprint: str | None = None
    first_ts: int | None = None
    error: str | None = None


def plan(paths: list[str], manifest: dict, pattern: re.Pattern | None, min_age_s: float,
         now: float) -> tuple[dict[str, list[Candidate]], dict[str, bool], list[str], int]:
    """Per stream, the files this run processes (in order) and whether the stream starts over (a file
    changed, or one arrived that sorts before files already processed); the files left for a later run
    (younger than min_age_s); and how many files were unchanged."""
    inputs = manifest["inputs"]
    young: list[str] = []
    unchanged = 0
    by_stream: dict[str, list[Candidate]] = {}
    for path in paths:
        try:
            size, mtime_ns = _stat(path)
        except (OSError, FastflowError):
            continue
        if mtime_ns is not None and now - mtime_ns / 1e9 < min_age_s:
            young.append(path)
            continue
        c = Candidate(path, stream_of(path, pattern), size, mtime_ns)
        old = inputs.get(path)
        if old is not None and old["size"] == c.size and old["mtime_ns"] == c.mtime_ns:
            unchanged += 1
            continue
        try:
            c.fingerprint = fingerprint(path, c.size)
        except OSError as exc:
            c.error = f"{path}: {exc.strerror or exc}"
        if old is not None and c.fingerprint == old.get("fingerprint") and old["stream"] == c.stream:
            old["mtime_ns"] = c.mtime_ns          # touched, not changed
            unchanged += 1
            continue
        by_stream.setdefault(c.stream, []).append(c)
    restart: dict[str, bool] = {}
    for stream, cands in by_stream.items():
        for c in cands:
            if c.error is None:
                try:
                    c.first_ts = first_packet_time(c.path)
                except FastflowError as exc:
                    c.error = str(exc)
        cands.sort(key=lambda c: (c.first_ts is None, c.first_ts or 0, c.path))
        known = manifest["streams"].get(stream)
        changed = any(c.path in inputs for c in cands)
        # a file that starts before the stream's processed files end: it sorts among them, or overlaps them
        end = None if known is None else (known.get("end_ts") if known.get("end_ts") is not None
                                          else known.get("last_first_ts"))
        late = end is not None and any(c.first_ts is not None and c.first_ts < end for c in cands)
        restart[stream] = changed or late
    return by_stream, restart, young, unchanged


def run(sources: list[str], dataset: str, *, settings: Settings, jobs: int | None = None,
        stream_pattern: str | None = None, min_age_s: float = 60.0, flush: bool = False,
        scheduler: str | None = None, progress: Callable[[int, int | None], None] | None = None) -> dict:
    """One batch run over sources into dataset (see the module's docstring). Returns the run's summary;
    summary["failed"] / ["damaged"] list the inputs that did not go through cleanly. progress(done, total)
    gets the input bytes of the streams finished so far."""
    started = time.time()
    pattern = None
    if stream_pattern:
        try:
            pattern = re.compile(stream_pattern)
        except re.error as exc:
            raise UsageError(f"--stream-pattern: {exc}") from None
    if settings.filter_expr:
        _settings(settings.filter_expr, None, None)      # a bad filter is a usage error before anything
    if dataset.startswith("memory://"):
        raise UsageError(f"{dataset}: a memory:// dataset would live only as long as this process")
    store = open_store(dataset)
    paths, ignored = discover(sources, store)
    store.prepare()
    dataset = store.name
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]
    summary = {"run_id": run_id, "dataset": dataset, "inputs_seen": len(paths), "not_captures": len(ignored),
               "processed": 0, "failed": [], "damaged": [], "young": 0, "unchanged": 0, "restarted_streams": 0,
               "packets": 0, "bytes": 0, "flows_written": 0, "segments_written": 0, "open_carried": 0, "removed_leftovers": 0,
               "total_bytes": 0, "done_bytes": 0, "merged": []}
    with store.locked(), contextlib.closing(store):
        manifest = load_manifest(store)
        if manifest["settings"] is None:
            manifest["settings"] = settings.key()
        elif manifest["settings"] != settings.key():
            raise UsageError(f"{dataset}: made with other analysis settings ({json.dumps(manifest['settings'])}); "
                             "use a new dataset for these")
        summary["removed_leftovers"] = remove_unreferenced(store, manifest)
        by_stream, restart, young, unchanged = plan(paths, manifest, pattern, min_age_s, started)
        summary["young"], summary["unchanged"] = len(young), unchanged
        summary["total_bytes"] = sum(c.size for cands in by_stream.values() for c in cands)
        if progress:
            progress(0, summary["total_bytes"])
        stream_jobs = []
        for stream, cands in sorted(by_stream.items()):
            stream_jobs.append(_job(stream, cands, restart[stream], manifest, dataset, run_id, settings, flush))
            summary["restarted_streams"] += restart[stream]
        if flush:       # also the streams with nothing new but connections still open
            for stream, info in sorted(manifest["streams"].items()):
                if stream not in by_stream and info.get("state"):
                    stream_jobs.append(_job(stream, [], False, manifest, dataset, run_id, settings, flush))
        client = _dask_client(scheduler) if scheduler else None
        workers = max(1, jobs or (sum(client.nthreads().values()) if client else os.cpu_count()) or 1)
        # fewer streams than workers: each stream's connections split into parts by address/port pair, each
        # part a task that reads every file of the stream (the output does not depend on the split)
        parts = max(1, workers // max(1, len(stream_jobs)))
        tasks = [dict(job, part=k, parts=parts) for job in stream_jobs for k in range(parts)]
        pending = {job["stream"]: [] for job in stream_jobs}
        by_name = {job["stream"]: job for job in stream_jobs}

        # the bar moves file by file: workers report each file's bytes (part 0 of each stream); a stream's
        # reports give way to its committed bytes
        reported: dict[str, int] = {}

        def on_report(stream: str, nbytes: int) -> None:
            reported[stream] = reported.get(stream, 0) + nbytes
            progress(summary["done_bytes"] + sum(reported.values()), summary["total_bytes"])

        def finished(task, result):
            pending[task["stream"]].append(result)
            if len(pending[task["stream"]]) == parts:
                reported.pop(task["stream"], None)
                _commit(store, manifest, by_name[task["stream"]], _merged(pending.pop(task["stream"])), summary,
                        progress)

        if client is not None:
            _run_on_dask(client, tasks, finished)
        elif workers == 1 or len(tasks) <= 1:
            for task in tasks:
                finished(task, process_stream(dict(task, report=_Report(on_report) if progress else None)))
        else:
            manager = multiprocessing.Manager() if progress else None
            queue = manager.Queue() if manager else None
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)), initializer=_worker_init) as pool:
                futures = {pool.submit(process_stream, dict(task, report=queue)): task for task in tasks}
                stop = _stop_workers_on_exit(pool)
                for future in stop(_completed(futures, queue, on_report)):
                    task = futures[future]
                    try:
                        result = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        # killed (out of memory?): nothing of this stream's run is kept, the next run redoes it
                        result = {"stream": task["stream"], "part": task["part"], "files": [], "state": None,
                                  "error": "a worker process died before finishing this stream (killed, or out "
                                           "of memory?)"}
                    finished(task, result)
            if manager is not None:
                manager.shutdown()
        if client is not None:
            client.close()
        save_manifest(store, manifest)        # touched-only files' new mtimes
        summary["open_carried"] = sum(info.get("open", 0) for info in manifest["streams"].values())
    summary["seconds"] = time.time() - started
    summary["packets_per_second"] = summary["packets"] / summary["seconds"] if summary["seconds"] else 0.0
    return summary


def _job(stream: str, cands: list[Candidate], restart: bool, manifest: dict, dataset: str, run_id: str,
         settings: Settings, flush: bool) -> dict:
    info = manifest["streams"].get(stream)
    if info is None:
        # numbered once, for good: part and state file names carry the number
        info = manifest["streams"][stream] = {
            "no": 1 + max((s["no"] for s in manifest["streams"].values()), default=-1), "next_seq": 0,
            "state": [], "last_first_ts": None, "flushed_outputs": [], "open": 0}
    files = {}
    if restart:
        # everything of the stream again, from an empty state, its files renumbered in order
        old = [Candidate(p, stream, e["size"], e["mtime_ns"], e.get("fingerprint"), e.get("first_ts"))
               for p, e in manifest["inputs"].items() if e["stream"] == stream and p not in {c.path for c in cands}
               and _exists(p)]
        cands = sorted(old + cands, key=lambda c: (c.first_ts is None, c.first_ts or 0, c.path))
        next_seq, state = 0, []
    else:
        next_seq, state = info["next_seq"], info.get("state") or []
        for p, e in manifest["inputs"].items():
            if e["stream"] == stream and e.get("seq") is not None:
                files[e["seq"]] = p
    entries = []
    for c in cands:
        entries.append({"path": c.path, "seq": next_seq, "stream_no": info["no"], "candidate": c})
        files[next_seq] = c.path
        next_seq += 1
    return {"dataset": dataset, "stream": stream, "stream_no": info["no"], "run_id": run_id, "settings": settings,
            "state": state, "end_ts": None if restart else info.get("end_ts"),
            "files": [e for e in entries if e["candidate"].error is None], "all_files": files,
            "entries": entries, "restart": restart, "next_seq": next_seq, "flush": flush}


class _Report:
    """In-process stand-in for the workers' progress queue."""

    def __init__(self, on_report):
        self.on_report = on_report

    def put(self, item) -> None:
        self.on_report(*item)


def _completed(futures, queue, on_report):
    """The futures as they finish; meanwhile the workers' progress reports go to on_report."""
    waiting = set(futures)
    while waiting:
        done, waiting = concurrent.futures.wait(waiting, timeout=0.2,
                                                return_when=concurrent.futures.FIRST_COMPLETED)
        while queue is not None and not queue.empty():
            on_report(*queue.get())
        yield from done


def _worker_init() -> None:
    """Workers leave SIGINT (a Ctrl-C reaches the whole process group) and SIGTERM to the main process,
    which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_workers_on_exit(pool):
    """Wrap the loop over finished tasks: if it is left by an exception (SIGINT, SIGTERM, an error), the
    pool's workers are terminated at once instead of finishing their streams (their work is not recorded:
    the next run redoes it)."""
    def loop(items):
        try:
            yield from items
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
            raise
    return loop


def _dask_client(address: str):
    """A dask.distributed client of the scheduler at address (the optional dependency: fastflow[dask])."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--scheduler needs dask.distributed: pip install 'fastflow[dask]'") from None
    host, _, port = address.rpartition("://")[2].rpartition(":")
    if host and port.isdigit():
        # a refused connection is said at once (the client would retry until its timeout)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise UsageError(f"--scheduler {address}: cannot connect: {exc.strerror or exc}") from None
    try:
        return Client(address, timeout=30, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--scheduler {address}: cannot connect: {exc}") from None


def _run_on_dask(client, tasks: list[dict], finished) -> None:
    """The same tasks as the process pool's, on the cluster's workers: inputs and dataset must be paths
    every worker sees. A task whose worker died (dask gives up after its retries) fails its stream."""
    from distributed import as_completed

    futures = {client.submit(process_stream, task, pure=False): i for i, task in enumerate(tasks)}
    for future in as_completed(futures, loop=client.loop):
        task = tasks[futures[future]]
        try:
            result = future.result()
        except Exception as exc:       # KilledWorker, a lost connection: reported, the next run redoes it
            result = {"stream": task["stream"], "part": task["part"], "files": [], "state": None,
                      "error": f"the cluster could not run this stream: {type(exc).__name__}: {exc}"}
        finished(task, result)


def _merged(results: list[dict]) -> dict:
    """The results of a stream's parts as one: outputs and flows added up, the state files listed; the
    per-file status, packets and bytes are every part's (each read the whole file)."""
    results = sorted(results, key=lambda r: r["part"])
    errors = [r["error"] for r in results if r["error"]]
    out = {"stream": results[0]["stream"], "error": errors[0] if errors else None,
           "state": [r["state"] for r in results if r["state"]] or None,
           "open": {"connections": sum(sum((r.get("open") or {}).values()) for r in results)}}
    if errors:
        return out
    files = [dict(f) for f in results[0]["files"]]
    for r in results[1:]:
        for mine, theirs in zip(files, r["files"]):
            mine["outputs"] = sorted(mine["outputs"] + theirs["outputs"])
            mine["flows"] += theirs["flows"]
            mine["segments"] += theirs["segments"]
            if theirs["status"] == "failed" and mine["status"] != "failed":
                mine.update(status="failed", error=theirs["error"])
    out["files"] = files
    out["end_ts"], out["merged"] = results[0].get("end_ts"), results[0].get("merged", [])
    flushed = [r["flushed"] for r in results if r.get("flushed")]
    if flushed:
        out["flushed"] = {"flows": sum(f["flows"] for f in flushed), "segments": sum(f["segments"] for f in flushed),
                          "outputs": sorted(o for f in flushed for o in f["outputs"])}
    return out


def _commit(store, manifest: dict, job: dict, result: dict, summary: dict,
            progress: Callable[[int, int | None], None] | None) -> None:
    """Record one stream's results in the manifest (rewritten atomically), then delete what they replace."""
    stream = job["stream"]
    if result["error"]:
        # nothing of this stream's run is kept: its outputs are removed with the next run's leftovers
        summary["failed"].append({"stream": stream, "error": f"stream {stream}: {result['error']}"})
        summary["done_bytes"] += sum(e["candidate"].size for e in job["entries"])
        if progress:
            progress(summary["done_bytes"], summary["total_bytes"])
        return
    inputs = manifest["inputs"]
    old_info = manifest["streams"].get(stream, {})
    obsolete = set()
    if job["restart"]:
        for path, e in list(inputs.items()):
            if e["stream"] == stream:
                obsolete.update(e.get("outputs", []))
                if path not in {x["path"] for x in job["entries"]}:
                    del inputs[path]
    obsolete.update(old_info.get("state") or [])
    obsolete.update(old_info.get("flushed_outputs", []) if job["restart"] else [])
    by_path = {r["path"]: r for r in result["files"]}
    last_first_ts = None if job["restart"] else old_info.get("last_first_ts")
    for entry in job["entries"]:
        c: Candidate = entry["candidate"]
        r = by_path.get(c.path)
        previous = inputs.get(c.path)
        if previous is not None and not job["restart"]:
            obsolete.update(previous.get("outputs", []))
        record = {"stream": stream, "seq": entry["seq"], "size": c.size, "mtime_ns": c.mtime_ns,
                  "fingerprint": c.fingerprint, "first_ts": c.first_ts, "run": job["run_id"]}
        if r is None:
            record.update(status="failed", error=c.error, outputs=[], packets=0, flows=0, segments=0)
        else:
            record.update(status=r["status"], error=r["error"] or (r["damage"] if r["status"] == "damaged" else None),
                          outputs=r["outputs"], packets=r["packets"], flows=r["flows"], segments=r["segments"])
            summary["packets"] += r["packets"]
            summary["bytes"] += r.get("bytes", 0)
            summary["flows_written"] += r["flows"]
            summary["segments_written"] += r["segments"]
        inputs[c.path] = record
        summary["processed"] += 1
        if record["status"] == "failed":
            summary["failed"].append({"path": c.path, "error": record["error"]})
        elif record["status"] == "damaged":
            summary["damaged"].append({"path": c.path, "error": record["error"],
                                       "stops": r.get("damage_stops", True)})
        if c.first_ts is not None and (last_first_ts is None or c.first_ts > last_first_ts):
            last_first_ts = c.first_ts
        summary["done_bytes"] += c.size
    flushed = result.get("flushed")
    for group in result.get("merged", []):
        summary["merged"].append(group)
        for path in group:
            inputs[path]["merged_with"] = [p for p in group if p != path]
    info = {"no": job["stream_no"], "next_seq": job["next_seq"], "state": result["state"] or [],
            "last_first_ts": last_first_ts, "end_ts": result.get("end_ts"),
            "flushed_outputs": ([] if job["restart"] else old_info.get("flushed_outputs", []))
            + (flushed["outputs"] if flushed else [])}
    manifest["streams"][stream] = info
    if flushed:
        summary["flows_written"] += flushed["flows"]
        summary["segments_written"] += flushed["segments"]
    info["open"] = sum((result.get("open") or {}).values())
    save_manifest(store, manifest)
    _crash_point("manifest-saved")
    if progress:
        progress(summary["done_bytes"], summary["total_bytes"])
    for name in obsolete - _referenced(manifest):
        store.delete(name)


def read_dataset(dataset: str, table: str = "flows") -> pa.Table:
    """The dataset's flows (or segments) as one table (for tests and small datasets): pyarrow.dataset with
    Hive partitioning."""
    import pyarrow.dataset as ds

    store = open_store(str(dataset))
    fs, root = store.filesystem()
    folder = f"{root}/{table}"
    if not (fs.isdir(folder) if fs is not None else os.path.isdir(folder)):
        return (BATCH_FLOWS_SCHEMA if table == "flows" else BATCH_SEGMENTS_SCHEMA).empty_table()
    return ds.dataset(folder, format="parquet", partitioning="hive", schema=None, filesystem=fs).to_table()
