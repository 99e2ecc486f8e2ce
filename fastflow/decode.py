"""Thin wrapper around the decoder extension: allocate, feed blocks, turn stop codes into typed errors.

This is the one place where the extension's status codes become Python exceptions or damage reports."""
from __future__ import annotations

import enum
import mmap
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import _decode
from .errors import FilterError, InputError
from .source import Source, StreamDamage

COLUMN_NAMES = _decode.COLUMN_NAMES


class Status(enum.IntEnum):
    """Per-packet decode status (ext/decode_defs.pxd ST_*)."""

    TCP = 0
    UDP = 1
    ICMP = 2
    ICMP6 = 3
    OTHER_IP = 4
    NON_IP = 5
    UNSUPPORTED_LINK = 6
    TRUNCATED = 7
    FRAGMENT = 8
    BAD_HEADER = 9


class PFlag(enum.IntFlag):
    FIRST_FRAGMENT = 1
    OPTS_TRUNCATED = 2
    HAS_TS = 4
    IPV4_OPTIONS = 8
    IP_LEN_EXCEEDS_WIRE = 16
    BAD_CHECKSUM = 32        # TCP/UDP checksum wrong (verify_checksums only)
    BAD_IP_CHECKSUM = 64     # IPv4 header checksum wrong (verify_checksums only)


class Stop(enum.IntEnum):
    """Why Decoder.feed() returned (ext/decode_defs.pxd STOP_*)."""

    NEED_MORE = 0
    FULL = 1
    END = 2
    NOT_CAPTURE = 3
    EMPTY = 4
    CUT_SHORT = 5
    BAD_RECORD = 6
    FILTER_ERROR = 7
    BAD_FILE_HEADER = 8


# link types the decoder understands (on-disk LINKTYPE_* values)
SUPPORTED_LINKTYPES = {0: "NULL", 1: "ETHERNET", 101: "RAW", 108: "LOOP", 113: "LINUX_SLL",
                       228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2"}


@dataclass(frozen=True)
class Damage:
    """Where and how an input stopped being readable; every packet before `offset` was delivered."""

    kind: str          # cut_short | bad_record | bad_section_header | stream_damaged | caplen_exceeds_wirelen
    offset: int        # byte offset (in the decompressed stream for compressed inputs)
    message: str
    decompressed: bool = False   # the offset counts decompressed bytes

    @property
    def stops(self) -> bool:
        """Reading stopped at the damage (all but caplen_exceeds_wirelen, where every record was read)."""
        return self.kind != "caplen_exceeds_wirelen"

    def describe(self, name: str) -> str:
        where = " of the decompressed data" if self.decompressed else ""
        return f"{name}: {self.message} at byte offset {self.offset}{where}"


_DAMAGE = {
    Stop.CUT_SHORT: ("cut_short", "capture cut short inside a record"),
    Stop.BAD_RECORD: ("bad_record", "record header that cannot be right (bad length)"),
    Stop.BAD_FILE_HEADER: ("bad_section_header", "section header with an unknown byte-order magic"),
}


def check_filter(expr: str) -> None:
    """Raise FilterError with libpcap's message if the expression does not compile."""
    message = _decode.check_filter(expr)
    if message is not None:
        raise FilterError(f"bad filter expression {expr!r}: {message}")


#: ask for transparent huge pages for the batches' mappings (Linux; where THP is "never" it is a no-op)
HUGE_PAGES = hasattr(mmap, "MADV_HUGEPAGE")
#: input bytes from which the first batch gets huge pages too (a default batch's columns are 31 MB)
BIG_INPUT = 32 << 20


class BatchMemory:
    """The decoder's allocator: each batch's columns in one private anonymous mapping. Once every array of a
    batch is gone its mapping goes on a free list (one long), and the next batch reuses it. `layout` says
    the columns, (name, dtype, shape past the first axis), by default the decoder's; with another, the
    segment stream keeps each batch's TCP rows the same way (pipeline._finished).

    Why not numpy's allocations: the batches of 2**18 packets (31 MB) came from glibc's heaps in whichever
    thread decoded them, their columns freed at different times in other threads (a batch's TCP columns wait
    in the segment stream for as long as their connections stay open), among the engines' small long-lived
    allocations; the heaps were left with holes they could neither fill nor return. A mapping goes back
    whole, and a reused one costs no page faults. Scale input of benchmarks/RESULTS.md on two cores: peak
    RSS 943-963 -> 876-897 MB, same time."""

    #: below this many bytes a batch takes numpy's allocations (small batches: a mapping per batch would
    #: waste pages and could run into the kernel's limit on mappings)
    MIN_BYTES = 1 << 20

    def __init__(self, keep: int = 1, min_bytes: int = MIN_BYTES, layout=None, huge_from: int | None = None):
        self.layout = _decode.COLUMN_LAYOUT if layout is None else tuple(layout)
        # transparent huge pages from this mapping on (None: never). For the decoder's batches, which it
        # fills whole but for the last; a batch of rows(n) fills each column only to n, and the rest of a
        # column's last 2 MiB page would be memory too
        self.huge_from = huge_from
        # one free mapping is enough: the decoder makes a batch once the one before the last has been let go
        # (pipeline._in_background), and each mapping kept free holds a batch's worth of memory for nothing
        self.keep = keep
        self.min_bytes = min_bytes
        self.free: list[mmap.mmap] = []
        self.lock = threading.Lock()
        self.capacity = -1
        self.mappings = 0       # mappings made so far (the other batches reused one)

    def _layout(self, capacity: int) -> None:
        self.capacity, self.places, at = capacity, [], 0
        for name, dtype, tail in self.layout:
            count = capacity * int(np.prod(tail, dtype=np.int64))
            self.places.append((name, dtype, (capacity,) + tail, at, count))
            at += -(-count * dtype.itemsize // 64) * 64       # each column on a cache line of its own
        self.size = at

    def __call__(self, capacity: int) -> dict:
        if capacity != self.capacity:
            self._layout(capacity)
            with self.lock:
                self.free = []
        if self.size < self.min_bytes:
            return {name: np.empty(shape, dtype) for name, dtype, shape, _, _ in self.places}
        with self.lock:
            block = self.free.pop() if self.free else None
        if block is None:
            # private: a shared mapping would be shared with the processes fastflow batch -j forks
            block = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if HUGE_PAGES and self.huge_from is not None and self.mappings >= self.huge_from:
                # a batch is written from end to end once: 2 MiB pages fault 512 times less often than 4 KiB
                # ones (decoding a 1 M-packet capture spent about half its time in the kernel, on faults)
                block.madvise(mmap.MADV_HUGEPAGE)
            self.mappings += 1
        whole = np.frombuffer(block, np.uint8)     # every column is a view of it: its end is the batch's end
        weakref.finalize(whole, self._release, block, self.size)
        return {name: whole[at:at + count * dtype.itemsize].view(dtype).reshape(shape)
                for name, dtype, shape, at, count in self.places}

    def rows(self, n: int) -> dict:
        """Columns of n rows, for callers whose batches vary in size: the mapping is made for the next power
        of two, so that batches of about the same size reuse it."""
        return {name: values[:n] for name, values in self(1 << max(0, n - 1).bit_length()).items()}

    def _release(self, block: mmap.mmap, size: int) -> None:
        with self.lock:
            if size == self.size and len(self.free) < self.keep:
                self.free.append(block)
        # otherwise unmapped once the batch's last array has let go of it (it is still exported here)


class CaptureReader:
    """Decode one input into batches of packet columns (dicts of numpy arrays, see docs/design.md)."""

    def __init__(self, source: Source, filter_expr: str | None = None, batch_size: int = 1 << 18,
                 verify_checksums: bool = False, memory: BatchMemory | None = None):
        self.source = source
        if memory is None:
            # huge pages from the second batch on; from the first for a file larger than a batch's columns
            # (in a batch the input does not fill, each column's first page would be zeroed whole, 2 MiB)
            memory = BatchMemory(huge_from=0 if (source.size or 0) >= BIG_INPUT else 1)
        self.memory = memory
        self.decoder = _decode.Decoder(batch_size, filter_expr, verify_checksums, memory)
        self.filter_expr = filter_expr
        self.damage: Damage | None = None

    @property
    def frames(self) -> int:
        return self.decoder.frames

    @property
    def filtered(self) -> int:
        return self.decoder.filtered

    @property
    def status_counts(self) -> dict[str, int]:
        return {s.name.lower(): int(n) for s, n in zip(Status, self.decoder.status_counts)}

    @property
    def file_format(self) -> str:
        return {0: "unknown", 1: "pcap", 2: "pcapng"}[self.decoder.fmt]

    @property
    def linktypes(self) -> list[int]:
        return list(self.decoder.linktypes)

    def batches(self) -> Iterator[dict]:
        """Yield column batches; raise InputError/FilterError for fatal problems; record damage."""
        dec = self.decoder
        try:
            if self.source.mappable:
                yield from self._windows()
            else:
                yield from self._blocks()
        except StreamDamage as exc:
            self.damage = self._damage("stream_damaged", dec.consumed, str(exc))
        if self.damage is None and dec.bad_length_records:
            self.damage = self._damage("caplen_exceeds_wirelen", int(dec.bad_length_offset),
                                       f"{dec.bad_length_records} record(s) with a captured length over the "
                                       f"original length (kept), the first")
        if dec.n:
            yield dec.take()
        self._check_linktypes()

    def _windows(self):
        """A plain file, window by window: each starts where the decoder stopped, so nothing is copied."""
        dec = self.decoder
        position = 0
        while True:
            view, at_end = self.source.window(position)
            rest = yield from self._drain(view, at_end)
            self._check(dec.stop)
            used = len(view) - len(rest)
            del view, rest          # the next window() unmaps this one
            if at_end or dec.stop >= Stop.END:
                return
            if used == 0:
                self.source.widen_window()
            position += used

    def _blocks(self):
        """A stream: blocks in order, the tail of a record carried into the next block."""
        dec = self.decoder
        pending = b""
        for block in self.source.blocks():
            data = yield from self._drain(memoryview(pending + block) if pending else memoryview(block), False)
            self._check(dec.stop)
            if dec.stop >= Stop.END:
                return
            # the tail holds part of a record: keep it for the next block (a small copy)
            pending = bytes(data)
        yield from self._drain(memoryview(pending), True)
        self._check(dec.stop)

    def _drain(self, data: memoryview, eof: bool):
        """Feed data until the decoder needs more input, yielding each full batch; return the unused tail."""
        dec = self.decoder
        while True:
            data = data[dec.feed(data, eof):]
            if dec.stop != Stop.FULL:
                return data
            yield dec.take()

    def _check(self, stop: int) -> None:
        name = self.source.name
        dec = self.decoder
        if stop == Stop.EMPTY:
            raise InputError(f"{name}: empty file, not a capture")
        if stop == Stop.NOT_CAPTURE:
            raise InputError(f"{name}: not a pcap or pcapng capture (magic bytes {self._head()})")
        if stop == Stop.FILTER_ERROR:
            raise FilterError(f"bad filter expression {self.filter_expr!r} for link type "
                              f"{dec.bad_linktype}: {dec.error_message}")
        if stop == Stop.BAD_FILE_HEADER and dec.stop_offset == 0:
            raise InputError(f"{name}: pcapng section header with an unknown byte-order magic")
        if stop in _DAMAGE:
            kind, message = _DAMAGE[Stop(stop)]
            self.damage = self._damage(kind, int(dec.stop_offset), message)

    def _damage(self, kind: str, offset: int, message: str) -> Damage:
        return Damage(kind, int(offset), message, decompressed=self.source.compression is not None)

    def _check_linktypes(self) -> None:
        types = self.linktypes
        if types and not any(t in SUPPORTED_LINKTYPES for t in types):
            names = ", ".join(str(t) for t in types)
            raise InputError(f"{self.source.name}: unsupported link type {names} "
                             f"(supported: {', '.join(f'{v} {k}' for k, v in SUPPORTED_LINKTYPES.items())})")

    def _head(self) -> str:
        try:
            with open(self.source.name, "rb") as f:
                return f.read(4).hex(" ") or "none"
        except OSError:
            return "unknown"
