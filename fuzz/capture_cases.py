"""What a fuzz input means and how it is run: the logic of fuzz/fuzz_capture.py, without atheris, so that
tests replay inputs (tests/test_fuzz.py: fuzz/crashes-found/) and fuzz_capture.py --explain describes them.

A fuzz input is

    byte 0   container: bits 0-2 how the capture bytes reach fastflow (CONTAINERS below: a file read through
             mmap windows, standard input, or a file compressed with gzip/zstd/xz/bz2); bit 3 damage the
             compressed stream (cut it short or flip a byte, at the place byte 3 gives); bit 4 two
             compressed members/frames instead of one
    byte 1   options: bits 0-2 the path (PATHS below), bit 3 --vlan-aware, bit 4 --verify-checksums and a
             BPF filter, bits 5-7 the decoder's batch size (BATCH_SIZES)
    byte 2   bits 0-2 the stream block size / mmap window size (BLOCK_SIZES)
    byte 3   where a damaged stream is cut or flipped (a fraction of its length, /256)
    rest     the capture bytes (raw: fed as they are, so compressed seeds fuzz the decompressors directly)

The paths, from cheap to dear: "decode" (the decoder alone, behind fastflow's reader); "engines" (decoder and
both streaming engines as stream_flows drives them, rows drained, no tables; also with tiny memory limits
and timeouts); "stream" (pipeline.stream_flows whole, tables built; also with tiny limits, and with its
background thread); "process-vs-stream" (pipeline.process with the segments table, and stream_flows: both
must give the same rows, counts and damage). Under the sanitizers they cost about 0.3, 2.5, 15 and 45 ms on
a 16 KB input, so the path in byte 1 is the dearest an input may take: a deterministic share of inputs,
by a hash of their bytes, takes it (1 in 8 for engines, 1 in 64 for the table-building paths), the others
the next cheaper tier (TIER_SHARES). A campaign then runs about 850 inputs a second on one core (measured
on a shared 2-core machine; 60-80 with every input on its own path), about half of the time decoding, a
quarter in the engines and a fifth building tables. FUZZ_EXACT_PATH=1 turns the sharing off.

fastflow's own errors (FastflowError) are expected outcomes; any other exception (warnings included, as in
the test suite), a sanitizer report, a hang or a crash is a finding.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import zlib

import numpy as np
import pyarrow as pa
import zstandard

import fastflow  # noqa: F401  (the package first: fuzz_capture.py imports this module under atheris's hook)
from fastflow import datagram, pipeline, segment_stream, server_ports, source, tcpflows
from fastflow.decode import CaptureReader
from fastflow.errors import FastflowError

HEADER = 4
CONTAINERS = ("file", "stdin", "gzip", "zstd", "xz", "bz2", "gzip-stdin", "zstd-stdin")
PATHS = ("decode", "engines", "engines", "engines-small-limits", "stream", "stream-small-limits", "stream-threaded",
         "process-vs-stream")
TIER = {"decode": 0, "engines": 1, "engines-small-limits": 1, "stream": 2, "stream-small-limits": 2,
        "stream-threaded": 2, "process-vs-stream": 2}
#: an input whose crc32 is divisible by TIER_SHARES[t] may take a tier-t path (t=0 always)
TIER_SHARES = (1, 8, 64)
EXACT_PATH = os.environ.get("FUZZ_EXACT_PATH") == "1"
# small batches test the decoder and the engines across batches, but each batch costs a take() of 26 arrays
# (and the engines path ~0.3 ms under ASan): from 3 up
BATCH_SIZES = (3, 7, 16, 64, 64, 256, 1024, 4096)
# stream block size (compressed / stdin inputs) and mmap window size (plain files). None: fastflow's (8 MB
# blocks, 64 MB windows); 64 KB holds any fuzz input whole too, without an 8 MB buffer for every read
# (about 2 ms under ASan); below that records straddle blocks and windows, at a cost (a 61-byte block is
# ~270 Python iterations on a 16 KB input)
BLOCK_SIZES = (None, 1 << 16, 1 << 16, 1 << 16, 1 << 16, 4093, 509, 61)
FILTER = "tcp or udp"


def _compress(kind: str, data: bytes, members: int) -> bytes:
    parts = [data] if members == 1 else [data[: len(data) // 2], data[len(data) // 2:]]
    if kind == "gzip":
        return b"".join(gzip.compress(p, compresslevel=1, mtime=0) for p in parts)
    if kind == "zstd":
        return b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts)
    if kind == "xz":
        # a 64 KB dictionary (fuzz inputs are smaller): preset 0's 256 KB costs a large allocation under ASan
        return b"".join(lzma.compress(p, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}])
                        for p in parts)
    return b"".join(bz2.compress(p, compresslevel=1) for p in parts)


def build_case(data: bytes) -> dict:
    """The fuzz input as what fastflow is given: the bytes, where they come from and the options."""
    if len(data) < HEADER:
        data = data + bytes(HEADER - len(data))
    mode, opts, cut, where = data[0], data[1], data[2], data[3]
    payload = data[HEADER:]
    container = CONTAINERS[mode & 7]
    kind = container.split("-")[0]
    if kind in ("gzip", "zstd", "xz", "bz2"):
        payload = _compress(kind, payload, 2 if mode & 16 else 1)
        if mode & 8 and payload:
            at = len(payload) * where // 256
            if where & 1:   # flip a byte: a corrupt stream
                payload = payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1:]
            else:           # cut short
                payload = payload[:at]
    return {
        "bytes": payload,
        "container": container,
        "stdin": container.endswith("stdin"),
        "path": _path(PATHS[opts & 7], zlib.crc32(data)),
        "vlan_aware": bool(opts & 8),
        "verify_checksums": bool(opts & 16),
        "filter_expr": FILTER if opts & 16 else None,
        "batch_size": BATCH_SIZES[opts >> 5],
        "block_size": BLOCK_SIZES[cut & 7],
    }


def _path(requested: str, crc: int) -> str:
    """The path an input takes: the requested one if its share allows, else the dearest cheaper tier's
    (engines for a table-building path; decode for engines)."""
    if EXACT_PATH:
        return requested
    tier = TIER[requested]
    while tier > 0 and crc % TIER_SHARES[tier]:
        tier -= 1
    if tier == TIER[requested]:
        return requested
    if tier == 1:
        return "engines-small-limits" if requested == "stream-small-limits" else "engines"
    return "decode"


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def _source_class(block_size):
    """pipeline's Source, reading compressed streams and stdin in blocks of block_size and mapping plain
    files block_size bytes at a time (records then straddle blocks and windows)."""
    if block_size is None:
        return source.Source

    class SmallBlocks(source.Source):
        def __init__(self, name):
            super().__init__(name, block_size=block_size)
            self._window_size = block_size
    return SmallBlocks


class _Input:
    """The case's bytes as a path fastflow opens: '-' with sys.stdin replaced, or an in-memory file
    (memfd, nothing written to disk) named by its /proc/self/fd path."""

    def __init__(self, case: dict):
        self.case = case
        self.fd = None

    def __enter__(self) -> str:
        if self.case["stdin"]:
            self.saved = sys.stdin
            sys.stdin = _Stdin(self.case["bytes"])
            return "-"
        self.fd = os.memfd_create("fuzz-capture", os.MFD_CLOEXEC)
        view = memoryview(self.case["bytes"])
        while view:
            view = view[os.write(self.fd, view):]
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc):
        if self.fd is None:
            sys.stdin = self.saved
        else:
            os.close(self.fd)


def _options(case: dict) -> dict:
    return {"filter_expr": case["filter_expr"], "vlan_aware": case["vlan_aware"],
            "verify_checksums": case["verify_checksums"], "batch_size": case["batch_size"]}


def _stream(case: dict, segments: list | None = None, **extra):
    """stream_flows' flows tables and result (and with a list for segments, the segments tables in it)."""
    tables = []
    with _Input(case) as path:
        result = pipeline.stream_flows(path, tables.append, **_options(case),
                                       segments_sink=None if segments is None else segments.append, **extra)
    return tables, result


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings (a dictionary's order follows each chunk's rows); without the
    source column (each run opens the input under its own /proc/self/fd name)."""
    if "source" in table.column_names:
        table = table.drop_columns(["source"])
    fields = [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type, f.nullable)
              for f in table.schema]
    return table.cast(pa.schema(fields))


def _process_vs_stream(case: dict, timeouts: dict | None = None, **extra) -> None:
    """process() (whole capture, with the segments table) and stream_flows (with the segments streamed)
    must agree on everything: the rows of both tables, the counts, the damage, or the error."""
    try:
        with _Input(case) as path:
            whole = pipeline.process(path, want_segments=True, idle_timeouts_s=timeouts, **_options(case))
    except FastflowError as exc:
        try:
            _stream(case, idle_timeouts_s=timeouts, **extra)
        except FastflowError as again:
            if type(again) is not type(exc):
                raise AssertionError(f"process raised {exc!r}, stream_flows {again!r}") from None
            return
        raise AssertionError(f"process raised {exc!r}, stream_flows did not") from None
    segments: list[pa.Table] = []
    tables, streamed = _stream(case, segments, idle_timeouts_s=timeouts, **extra)
    got = pa.concat_tables(tables) if tables else whole.flows.slice(0, 0)
    if not _plain(got).equals(_plain(whole.flows)):
        raise AssertionError(f"stream_flows rows differ from process(): {got.num_rows} vs "
                             f"{whole.flows.num_rows} rows")
    if streamed.stats["counts"] != whole.stats["counts"]:
        raise AssertionError(f"counts differ: {streamed.stats['counts']} vs {whole.stats['counts']}")
    if streamed.stats["damage"] != whole.stats["damage"]:
        raise AssertionError(f"damage differs: {streamed.stats['damage']} vs {whole.stats['damage']}")
    got = pa.concat_tables(segments) if segments else whole.segments.slice(0, 0)
    if not _plain(got).equals(_plain(whole.segments)):
        raise AssertionError(f"streamed segments differ from process(): {got.num_rows} vs "
                             f"{whole.segments.num_rows} rows")


SMALL_TIMEOUTS_S = {"tcp": 1.0, "udp": 0.5, "icmp": 0.5, "other": 0.5}


def _small_limits(case: dict) -> None:
    """Tiny engine limits and timeouts: open connections spill to a file, finished rows and segments wait in
    temporary files, flushes after every few rows, connections expire within the capture; and the rows must
    still be process()'s."""
    saved = (tcpflows.MAX_IN_MEMORY, pipeline.WAIT_IN_MEMORY, pipeline.FLUSH_ROWS, segment_stream.SEGMENTS_IN_MEMORY)
    (tcpflows.MAX_IN_MEMORY, pipeline.WAIT_IN_MEMORY, pipeline.FLUSH_ROWS, segment_stream.SEGMENTS_IN_MEMORY) = (
        2, 4, 3, 5)
    try:
        _process_vs_stream(case, SMALL_TIMEOUTS_S, overlap=False)
    finally:
        (tcpflows.MAX_IN_MEMORY, pipeline.WAIT_IN_MEMORY, pipeline.FLUSH_ROWS,
         segment_stream.SEGMENTS_IN_MEMORY) = saved


def _reader(case: dict, path: str):
    src = pipeline.Source(path)
    return src, CaptureReader(src, filter_expr=case["filter_expr"], batch_size=case["batch_size"],
                              verify_checksums=case["verify_checksums"])


def _decode(case: dict) -> None:
    with _Input(case) as path:
        src, reader = _reader(case, path)
        with src:
            for _ in reader.batches():
                pass


def _engines(case: dict, small: bool) -> None:
    """Decoder and both engines, driven as stream_flows drives them (pipeline._finished), rows drained
    after each batch and at the end; no tables. small: tiny timeouts, and open TCP connections spill to
    the temporary file beyond 2 in memory."""
    timeouts_ns, tcp_ports, udp_ports = pipeline._settings(case["filter_expr"], SMALL_TIMEOUTS_S if small else None,
                                                           None)
    tcp = tcpflows.TcpFlows(timeouts_ns["tcp"], tcp_ports, case["vlan_aware"],
                            max_in_memory=2 if small else tcpflows.MAX_IN_MEMORY)
    dgram = datagram.DatagramStream(timeouts_ns, udp_ports, case["vlan_aware"])
    try:
        with _Input(case) as path:
            src, reader = _reader(case, path)
            with src:
                for _ in pipeline._finished(reader, tcp, dgram, {"bad_ip_checksum": 0, "tcp_segments": 0},
                                            {"decode": 0.0, "connections": 0.0}):
                    pass
    finally:
        tcp.close()


def run_case(case: dict) -> None:
    saved_source = pipeline.Source
    pipeline.Source = _source_class(case["block_size"])
    try:
        path = case["path"]
        if path == "decode":
            _decode(case)
        elif path == "engines":
            _engines(case, small=False)
        elif path == "engines-small-limits":
            _engines(case, small=True)
        elif path == "stream":
            _stream(case, overlap=False)
        elif path == "stream-small-limits":
            _small_limits(case)
        elif path == "stream-threaded":
            _stream(case, overlap=True)
        else:
            _process_vs_stream(case)
    except FastflowError:
        pass    # a documented outcome: the CLI prints it as one line with its exit code
    except Exception as exc:
        name = _name(type(exc))
        if name not in KNOWN:
            raise
        KNOWN_SEEN[name] = KNOWN_SEEN.get(name, 0) + 1
    finally:
        pipeline.Source = saved_source


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: FUZZ_KNOWN=zlib.error,...: exception types taken as expected, so that a long campaign goes on past a bug
#: already reported (fuzz/crashes-found/); never set in CI
KNOWN = frozenset(filter(None, os.environ.get("FUZZ_KNOWN", "").split(",")))
KNOWN_SEEN: dict[str, int] = {}     # how often each was let through


def memoize_port_tables() -> None:
    """Both engines build a 65536-entry likely-server-port table with np.isin at every start (about half
    the cost of a small input's engines path): keep the tables of the port lists the harness uses. Same
    values; only the full-range lookups with hashable port lists are kept."""
    real = server_ports.is_likely_server_port
    full = np.arange(65536)
    cache = {}

    def is_likely_server_port(ports, table):
        if isinstance(table, (frozenset, tuple)) and len(ports) == 65536 and np.array_equal(ports, full):
            key = (table, np.asarray(ports).dtype.str)
            if key not in cache:
                cache[key] = real(ports, table)
            return cache[key].copy()
        return real(ports, table)
    tcpflows.is_likely_server_port = datagram.is_likely_server_port = is_likely_server_port
