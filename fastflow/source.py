"""Open an input (plain file, compressed stream or standard input) and yield large byte blocks.

Plain files are mapped whole (zero-copy); compressed inputs are read as streams, the compression
found by magic bytes, never by file name."""
from __future__ import annotations

import bz2
import gzip
import lzma
import mmap
import os
import sys
import zlib
from typing import BinaryIO, Iterator

from .errors import InputError

BLOCK_SIZE = 8 << 20
#: bytes of a plain file mapped at once; a window moves on to where the decoder stopped. Its pages count in
#: the peak RSS and the decoder reads each once: 16 MB rather than 64 took the peak of a 3.08 M-packet real
#: capture from 348-398 to 333-337 MB, in the same time (a window costs about 20 us to map and unmap)
WINDOW_SIZE = 16 << 20

# magic bytes at offset 0 -> compression name
_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
)


def sniff_compression(head: bytes) -> str | None:
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return None


class _Prefixed:
    """A read-only stream that first replays bytes already read from another (for sniffing stdin)."""

    def __init__(self, prefix: bytes, rest: BinaryIO):
        self._prefix = prefix
        self._rest = rest
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                out = self._prefix + self._rest.read()
                self._prefix = b""
            else:
                out, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            out = self._rest.read(n)
        self.consumed += len(out)
        return out

    def read1(self, n: int = -1) -> bytes:
        if self._prefix:
            return self.read(n)
        out = self._rest.read1(n) if hasattr(self._rest, "read1") else self._rest.read(n)
        self.consumed += len(out)
        return out

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


class _ZstdFrames:
    """A zstd stream's raw bytes, passed through while their frame structure is followed (frame and block
    headers, checksums, skippable frames; block contents are skipped, not decoded), so that the end of the
    input is known to fall between frames or inside one: zstandard's stream_reader ends silently in both."""

    _ZSTD_MAGIC = 0xFD2FB528

    def __init__(self, raw):
        self._raw = raw
        self._state = "magic"   # what the next `_need` bytes are
        self._need = 4
        self._head = b""        # bytes of that header so far
        self._skip = 0          # content bytes to pass over first
        self._checksum = False
        self._lost = False      # not a frame we know: the decompressor reports it

    @property
    def between_frames(self) -> bool:
        return self._lost or (self._state == "magic" and not self._head and not self._skip)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        pos = 0
        while pos < len(data) and not self._lost:
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._head), len(data) - pos)
            self._head += data[pos:pos + take]
            pos += take
            if len(self._head) == self._need:
                head, self._head = self._head, b""
                self._advance(head)
        return data

    def _advance(self, head: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == self._ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skippable", 4
            else:
                self._lost = True
        elif state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._need = "magic", 4
        elif state == "descriptor":
            fhd = head[0]
            single = (fhd >> 5) & 1
            self._checksum = bool(fhd & 4)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
            self._state, self._need = ("header", rest) if rest else ("block", 3)
        elif state == "header":
            self._state, self._need = "block", 3
        elif state == "block":
            h = int.from_bytes(head, "little")
            kind = (h >> 1) & 3
            if kind == 3:
                self._lost = True
                return
            self._skip = 1 if kind == 1 else h >> 3      # an RLE block holds one byte
            if not h & 1:
                self._state, self._need = "block", 3
            elif self._checksum:
                self._state, self._need = "checksum", 4
            else:
                self._state, self._need = "magic", 4
        else:   # checksum
            self._state, self._need = "magic", 4


class _ZstdReader:
    """zstd frames one after another (as `zstd -d`), decompressed a bounded piece at a time; input that ends
    inside a frame is an EOFError, as gzip, bz2 and lzma raise."""

    def __init__(self, raw):
        import zstandard

        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(self._frames, read_across_frames=True,
                                                                  closefd=False)

    def read1(self, n: int = -1) -> bytes:
        out = self._reader.read1(n)
        if not out and not self._frames.between_frames:
            raise EOFError("input ends inside a frame")
        return out

    def close(self) -> None:
        self._reader.close()


def _decompressor(kind: str, raw):
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    return _ZstdReader(raw)


class StreamDamage(Exception):
    """The compressed stream is corrupt or ends early; everything before it was delivered."""


def is_url(name: str) -> bool:
    """A filesystem URI other than a local path (file:// URIs are opened through fsspec too)."""
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.isidentifier()


def url_filesystem(url: str):
    """(fsspec filesystem, path within it) for a URI; InputError when fsspec or the scheme's backend is missing."""
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{url}: reading URIs needs fsspec (pip install 'fastflow[dask]')") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: {exc}") from None


def open_url(url: str):
    """An open binary file object for a URI, and its size (None when the filesystem does not say)."""
    fs, path = url_filesystem(url)
    if fs.isdir(path):
        raise InputError(f"{url}: is a directory, not a capture file")
    try:
        size = fs.size(path)
    except OSError:
        size = None
    return fs.open(path, "rb"), size


class Source:
    """One input. `blocks()` yields bytes-like blocks in order; `raw_consumed` counts input bytes read."""

    def __init__(self, name: str, block_size: int = BLOCK_SIZE):
        self.name = name
        self.block_size = block_size
        self.compression: str | None = None
        self.size: int | None = None
        self._file = None
        self._raw = None
        self._map = None
        self._position = 0
        self._window_size = WINDOW_SIZE
        self._stream = None
        try:
            if name == "-":
                self._file = sys.stdin.buffer
                head = self._file.read(8)
                self._raw = _Prefixed(head, self._file)
            elif is_url(name):
                # s3://, http(s)://, ... through fsspec (optional: fastflow[dask]), read as a stream
                self._file, self.size = open_url(name)
                head = self._file.read(8)
                self._raw = _Prefixed(head, self._file)
            else:
                if os.path.isdir(name):
                    raise InputError(f"{name}: is a directory, not a capture file")
                self._file = open(name, "rb")
                self.size = os.fstat(self._file.fileno()).st_size
                head = self._file.read(8)
                self._file.seek(0)
        except FileNotFoundError:
            raise InputError(f"{name}: no such file") from None
        except PermissionError:
            raise InputError(f"{name}: permission denied") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, not a capture file") from None
        except OSError as exc:
            raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None
        self.compression = sniff_compression(head)
        if self.compression is not None:
            raw = self._raw if self._raw is not None else self._file
            self._stream = _decompressor(self.compression, raw)

    @property
    def raw_consumed(self) -> int:
        if self._raw is not None:
            return self._raw.consumed
        if self._stream is None and self._raw is None:
            return self._position
        try:
            return self._file.tell()
        except (OSError, ValueError):
            return 0

    @property
    def mappable(self) -> bool:
        """A plain file: read through window(), not blocks()."""
        return self._stream is None and self._raw is None

    def window(self, position: int) -> tuple[memoryview, bool]:
        """The file from byte `position` on, up to the window size, mapped read-only; and whether it reaches
        the end of the file. The previous window is unmapped first: drop every view into it before."""
        self._unmap()
        self._position = position
        size = self.size or 0
        if position >= size:
            return memoryview(b""), True
        start = position - position % mmap.ALLOCATIONGRANULARITY
        length = min(size - start, self._window_size + (position - start))
        self._map = mmap.mmap(self._file.fileno(), length, offset=start, access=mmap.ACCESS_READ)
        self._map.madvise(mmap.MADV_SEQUENTIAL)
        return memoryview(self._map)[position - start:], start + length >= size

    def widen_window(self) -> None:
        """A record larger than the window: map twice as much next time."""
        self._window_size *= 2

    def blocks(self) -> Iterator[memoryview | bytes]:
        """Blocks of a compressed stream or standard input. A damaged stream raises StreamDamage after the
        block of everything decompressed before the damage."""
        stream = self._stream if self._stream is not None else self._raw
        while True:
            block, damage = self._read_block(stream)
            if block:
                yield block
            if damage is not None:
                raise damage
            if not block:
                return

    def _read_block(self, stream) -> tuple[bytes, StreamDamage | None]:
        """Up to about block_size bytes, joined from read1() pieces: read() drops what it decompressed when
        the stream turns out damaged, so the packets before a cut would be lost with the error."""
        parts, size = [], 0
        try:
            while size < self.block_size:
                piece = stream.read1(self.block_size - size)
                if not piece:
                    break
                parts.append(piece)
                size += len(piece)
        except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as exc:
            # zlib.error: gzip's inflate on corrupt data (found by the fuzzer: fuzz/crashes-found/)
            return b"".join(parts), StreamDamage(f"{self.compression or 'input'} stream damaged: {exc}")
        except Exception as exc:  # zstandard.ZstdError has no common base with the others
            if type(exc).__module__.startswith("zstandard"):
                return b"".join(parts), StreamDamage(f"zstd stream damaged: {exc}")
            raise
        return b"".join(parts), None

    def _unmap(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a memoryview still refers to it; the mapping goes with the last reference
            self._map = None

    def close(self) -> None:
        self._unmap()
        if self._stream is not None:
            self._stream.close()
        if self._file is not None and self._file is not sys.stdin.buffer:
            self._file.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
