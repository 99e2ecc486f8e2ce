"""Damage: captures cut short at many byte offsets (plain and compressed), and header fields corrupted one at
a time on real packets, each with the outcome it must have.

The expected outcome of a cut never comes from fastflow's decoder: `walk()` below finds the record and block
boundaries from the files' own length fields, and the recoverable part of a cut compressed stream comes from
the reference decompressors. The rules the expectations follow (README "Exit codes"):

- a cut exactly at a record or block boundary is not damage (a capture may legitimately end there): exit 0,
  every packet before it;
- a cut anywhere else is damage `cut_short` at the offset of the record or block it falls in, every packet
  before that record processed, exit 1. That holds for pcapng blocks that carry no packet too (a section
  header, an interface description, statistics, name resolution): the file is incomplete, and the part that is
  missing might have held packets, so it is damage even after the last packet block (capinfos says the same);
- a file of 1 to 3 bytes cannot be told from any other file: "not a pcap or pcapng capture", exit 2 (0 bytes:
  "empty file"); from 4 bytes on (a pcap magic, or a pcapng block type) it is a capture cut inside its file
  header: damage at offset 0 with no packets, exit 1;
- a compressed input cut short: every packet whose bytes were fully decompressed before the cut is processed,
  the damage is `stream_damaged` at the decompressed offset where the first incomplete record starts, exit 1
  (a cut inside the compression magic itself is not recognisably compressed: exit 2 as above).

Header fields corrupted one at a time (record and block lengths; IPv4, TCP and IPv6 length fields) each state
their outcome: a packet counted under the reason the summary prints, or decoded with lengths from the frame,
or the capture damaged from that record on; tshark's expert information and capinfos' packet counts are the
references, each in one run.
"""
from __future__ import annotations

import bisect
import bz2
import gzip
import io
import lzma
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fastflow import source as source_module
from fastflow.decode import CaptureReader, PFlag, Status
from fastflow.errors import InputError
from fastflow.pipeline import stream_flows
from fastflow.source import Source
from tests.corpus import CAPTURES, capture_names, requires_corpus

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

#: captures up to this size are cut at every byte offset; larger ones at a few hundred offsets
EVERY_OFFSET_MAX = 4 << 10
#: batch sizes the cuts rotate through, so batch ends fall everywhere relative to the cut (larger ones for
#: captures of many packets)
BATCH_SIZES = (5, 64, 4096)
LARGE_BATCH_SIZES = (999, 4096, 1 << 16)


# ---------------------------------------------------------------------------------------------- reference walk

@dataclass(frozen=True)
class Unit:
    """The file header, a pcap record or a pcapng block: [start, end) in the file."""

    start: int
    end: int
    packet: bool             # a record that is a packet (pcap record, pcapng EPB / SPB / OPB)
    caplen_over_len: bool = False


PCAPNG_PACKET_BLOCKS = {2, 3, 6}     # obsolete packet, simple packet, enhanced packet


def walk(data: bytes) -> list[Unit]:
    """Every complete unit of a pcap or pcapng file, by the files' own length fields (pcap record headers,
    pcapng block total lengths and section byte-order magics), without fastflow. Stops at the first unit that
    the data does not hold in full."""
    units = []
    magic = data[:4]
    if len(magic) < 4:
        return units
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = "<" if magic[0] in (0xd4, 0x4d) else ">"
        if len(data) < 24:
            return units
        units.append(Unit(0, 24, False))
        pos = 24
        while pos + 16 <= len(data):
            caplen, wirelen = struct.unpack_from(order + "II", data, pos + 8)
            end = pos + 16 + caplen
            if end > len(data):
                break
            units.append(Unit(pos, end, True, caplen > wirelen))
            pos = end
        return units
    assert magic == b"\x0a\x0d\x0d\x0a", "walk() reads pcap and pcapng only"
    order = "<"
    pos = 0
    while pos + 12 <= len(data):
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(order + "II", data, pos)
        end = pos + blen
        if end > len(data):
            break
        over = False
        if btype in (2, 6):
            caplen, wirelen = struct.unpack_from(order + "II", data, pos + 20)
            over = caplen > wirelen
        units.append(Unit(pos, end, btype in PCAPNG_PACKET_BLOCKS, over))
        pos = end
    return units


@dataclass(frozen=True)
class Expect:
    packets: int             # records the reader must deliver
    damage: tuple | None     # (kind, offset) or None
    fatal: str | None = None  # InputError message part, when the prefix is not a capture at all


class Layout:
    """The units of a file, indexed for `expect`."""

    def __init__(self, units: list[Unit]):
        self.units = units
        self.ends = [u.end for u in units]
        self.packets = [0]          # packets among the first k units
        for u in units:
            self.packets.append(self.packets[-1] + u.packet)
        self.first_over = next((k for k, u in enumerate(units) if u.caplen_over_len), len(units))

    def expect(self, cut: int) -> Expect:
        """What reading the first `cut` bytes of the file must give."""
        if cut == 0:
            return Expect(0, None, "empty file")
        if cut < 4:
            return Expect(0, None, "not a pcap or pcapng capture")
        k = bisect.bisect_right(self.ends, cut)     # units complete before the cut
        if k and self.ends[k - 1] == cut:
            over = self.first_over < k
            return Expect(self.packets[k], ("caplen_exceeds_wirelen", self.units[self.first_over].start)
                          if over else None)
        return Expect(self.packets[k], ("cut_short", self.ends[k - 1] if k else 0))


def expect_cut(units: list[Unit], cut: int) -> Expect:
    return Layout(units).expect(cut)


# ---------------------------------------------------------------------------------------------- running fastflow

def read(source: Source, batch_size: int):
    """All rows the library's reader gives for a source (concatenated), and the reader."""
    with source:
        reader = CaptureReader(source, batch_size=batch_size)
        parts = list(reader.batches())
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else None
    return cols, reader


def check(cols, reader, want: Expect, full: dict | None, where: str, rows: bool = True) -> None:
    """The reader's result against the expectation; the rows delivered equal the uncut file's first rows
    (every column compared, when `rows`)."""
    assert reader.frames == want.packets, where
    got = None if reader.damage is None else (reader.damage.kind, reader.damage.offset)
    assert got == want.damage, where
    n = 0 if cols is None else len(cols["frame"])
    assert n == want.packets, where
    if n and rows:
        for name, column in cols.items():
            assert np.array_equal(column, full[name][:n]), (where, name)


def cut_offsets(units: list[Unit], size: int, rng: random.Random) -> list[int]:
    """Every offset of a small file; for a larger one every record boundary (a sample of 120 when there are
    more than 1,000 records), every offset inside the first record and inside one in the middle, and 50
    random offsets."""
    if size <= EVERY_OFFSET_MAX:
        return list(range(size + 1))
    ends = [u.end for u in units]
    offsets = set(range(min(size, 40)))          # inside the file header and the first record header
    offsets.update(ends if len(ends) <= 1000 else ends[:30] + ends[-30:] + rng.sample(ends, 60))
    packets = [u for u in units if u.packet]
    for unit in (packets[0], packets[len(packets) // 2]):
        if unit.end - unit.start <= 2048:
            offsets.update(range(unit.start, unit.end + 1))
        else:                                       # a 64 KB record: both ends and a sample in between
            offsets.update(range(unit.start, unit.start + 256))
            offsets.update(range(unit.end - 256, unit.end + 1))
            offsets.update(rng.sample(range(unit.start, unit.end), 50))
    offsets.update(rng.randrange(size + 1) for _ in range(50))
    return sorted(offsets)


def plain_captures() -> list[Path]:
    """The corpus captures, and the tests/data captures of every pcap and pcapng layout (byte orders, time
    units, interfaces, sections, block types; their link types and headers add nothing to cutting)."""
    paths = [CAPTURES / name for name in capture_names()]
    return paths + sorted(DATA.glob("pcap_*.pcap")) + sorted(DATA.glob("pcapng_*.pcapng"))


@pytest.mark.parametrize("path", plain_captures(), ids=lambda p: p.name)
def test_cut_at_every_offset(path, tmp_path, monkeypatch):
    """In-process, through the reader over a mapped file: no crash, the packets before the cut exactly as in
    the whole file, the damage and its offset as the walk says. Batch sizes and the mapped window's size
    (small windows: records across window ends, and records larger than a window) rotate over the cuts."""
    data = path.read_bytes()
    units = walk(data)
    if path.name == "derived__zeek__http__get__truncated-mid-record.pcap":
        data = data[:units[-1].end]       # already cut: its complete part is cut further
    assert units and units[-1].end == len(data), "the walk must cover the whole file"
    full, _ = read(Source(str(path)), 1 << 16)
    cut_path = tmp_path / path.name
    cut_path.write_bytes(data)
    rng = random.Random(path.name)
    offsets = cut_offsets(units, len(data), rng)
    layout = Layout(units)
    many = len(units) >= 500
    batch_sizes = LARGE_BATCH_SIZES if many else BATCH_SIZES
    windows = ((source_module.WINDOW_SIZE, 256, 1500) if len(data) <= EVERY_OFFSET_MAX
               else (source_module.WINDOW_SIZE, 1 << 20 if many else 8192))
    # largest first: each cut is a truncate of the same file
    compared = None
    for k, cut in enumerate(reversed(offsets)):
        os.truncate(cut_path, cut)
        monkeypatch.setattr(source_module, "WINDOW_SIZE", windows[k // 3 % len(windows)])
        want = layout.expect(cut)
        where = f"{path.name} cut at {cut}"
        if want.fatal:
            with pytest.raises(InputError, match=want.fatal):
                read(Source(str(cut_path)), batch_sizes[k % 3])
            continue
        cols, reader = read(Source(str(cut_path)), batch_sizes[k % 3])
        # every column of the rows is compared once per packet count and on every 8th cut (for speed)
        check(cols, reader, want, full, where, rows=want.packets != compared or k % 8 == 0)
        compared = want.packets


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos not installed: cannot check the walk")
@requires_corpus
def test_walk_agrees_with_capinfos(tmp_path):
    """The reference walk against capinfos on a sample of cuts (one run): the same packet count, and an error
    exactly where the walk expects damage (inside a packet record, or inside a block that holds none)."""
    rng = random.Random(6)
    cuts = []
    for name in ("zeek__wikipedia.pcap", "tcpdump__pptp.pcap", "derived__two-sections.pcapng",
                 "zeek__ldap__modify-request.pcapng", "tcpdump__empty.pcapng"):
        data = (CAPTURES / name).read_bytes()
        units = walk(data)
        # past the first records: Wireshark guesses the pcap variant from them
        for unit in rng.sample(units[4:], 4) if len(units) > 8 else units[1:]:
            for cut in (unit.end, rng.randrange(unit.start + 1, unit.end)):
                path = tmp_path / f"{len(cuts)}{Path(name).suffix}"
                path.write_bytes(data[:cut])
                cuts.append((path, expect_cut(units, cut)))
    proc = subprocess.run(["capinfos", "-c", *(str(p) for p, _ in cuts)], capture_output=True, text=True,
                          timeout=120)
    counts = {}
    for block in proc.stdout.split("File name:")[1:]:
        name, _, rest = block.partition("\n")
        counts[name.strip()] = int(rest.split("Number of packets:")[1].split()[0])
    errors = {line.split('"')[1] for line in proc.stderr.splitlines() if "appears to have been cut short" in line}
    for path, want in cuts:
        assert counts.get(str(path), 0) == want.packets, path
        assert (str(path) in errors) == (want.damage is not None), path
    assert len(errors) >= 10 and len(cuts) - len(errors) >= 10


@requires_corpus
@pytest.mark.parametrize("name", ["zeek__http__get.pcap", "derived__two-sections.pcapng",
                                  "zeek__ldap__modify-request.pcapng", "zeek__wikipedia.pcap"])
def test_cut_read_from_a_stream(name, monkeypatch):
    """The same cuts read from standard input (blocks of 7 bytes to 1 MB, the tail of a record carried from
    block to block), not from a mapped file."""
    data = (CAPTURES / name).read_bytes()
    units = walk(data)
    full, _ = read(Source(str(CAPTURES / name)), 1 << 16)
    rng = random.Random(name)
    offsets = cut_offsets(units, len(data), rng)
    if len(offsets) > 600:
        offsets = sorted(rng.sample(offsets, 600))
    layout = Layout(units)
    for k, cut in enumerate(offsets):
        want = layout.expect(cut)
        monkeypatch.setattr(sys, "stdin", _Stdin(data[:cut]))
        source = Source("-", block_size=(7, 100, 1 << 20)[k % 3])
        if want.fatal:
            with pytest.raises(InputError, match=want.fatal):
                read(source, BATCH_SIZES[k % 3])
            continue
        cols, reader = read(source, BATCH_SIZES[k % 3])
        check(cols, reader, want, full, f"{name} cut at {cut} (stdin)")


class _Stdin:
    """sys.stdin for Source("-"): bytes in .buffer."""

    def __init__(self, data: bytes):
        self.buffer = io.BufferedReader(io.BytesIO(data))


# ---------------------------------------------------------------------------------------------- compressed

def _compressors():
    """name -> compress(bytes), the command-line tools where installed (the formats as people make them)."""
    import zstandard

    def tool(argv, fallback):
        if shutil.which(argv[0]) is None:
            return fallback
        return lambda data: subprocess.run(argv, input=data, capture_output=True, check=True).stdout

    return {
        "gzip": tool(["gzip", "-c", "-n"], lambda d: gzip.compress(d, mtime=0)),
        "zstd": tool(["zstd", "-c", "-q"], lambda d: zstandard.ZstdCompressor().compress(d)),
        "xz": tool(["xz", "-c"], lzma.compress),
        "bz2": tool(["bzip2", "-c"], bz2.compress),
    }


def available(kind: str, stream: bytes) -> bytes:
    """The bytes a reference decompressor gives for a possibly cut single stream: everything it can decode
    before the input ends (zstd: zstandard's streaming reader, which also stops quietly at a cut)."""
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(stream)
    if kind == "xz":
        return lzma.LZMADecompressor().decompress(stream)
    if kind == "bz2":
        return bz2.BZ2Decompressor().decompress(stream)
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stream)).read()


MAGIC_LEN = {"gzip": 2, "zstd": 4, "xz": 6, "bz2": 3}


def expect_stream(plain: bytes, complete: bool) -> Expect:
    """What a compressed input must give, from what its decompression yields: a complete stream is read as a
    plain file of those bytes; a damaged one gives the complete records, then stream_damaged where the first
    incomplete one starts."""
    units = walk(plain)
    if complete:
        return expect_cut(units, len(plain))
    return Expect(sum(u.packet for u in units), ("stream_damaged", units[-1].end if units else 0))


@requires_corpus
@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "bz2"])
@pytest.mark.parametrize("name, members", [("zeek__http__get.pcap", 1), ("derived__two-sections.pcapng", 2)])
def test_compressed_cut_at_every_offset(kind, name, members, tmp_path):
    """A compressed capture (one stream, or two concatenated streams split inside a record: gzip members, zstd
    frames, xz and bz2 streams) cut at every offset: every packet fully decompressed before the cut is kept,
    the damage is stream_damaged at the decompressed offset of the first incomplete record. A cut between two
    streams is a complete compressed file whose capture ends inside a record: cut_short there."""
    data = (CAPTURES / name).read_bytes()
    compress = _compressors()[kind]
    split = len(data) // 2 + 3 if members == 2 else len(data)
    streams = [compress(data[:split])] + ([compress(data[split:])] if members == 2 else [])
    packed = b"".join(streams)
    full, _ = read(Source(str(CAPTURES / name)), 1 << 16)
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(packed)
    first = len(streams[0])
    for k, cut in enumerate(range(len(packed), -1, -1)):
        os.truncate(path, cut)
        where = f"{name}.{kind} cut at {cut}"
        if cut < MAGIC_LEN[kind]:
            fatal = "empty file" if cut == 0 else "not a pcap or pcapng capture"
            with pytest.raises(InputError, match=fatal):
                read(Source(str(path)), 64)
            continue
        if cut <= first:
            plain, complete = available(kind, packed[:cut]), cut == first
        else:
            plain, complete = data[:split] + available(kind, packed[first:cut]), cut == len(packed)
        want = expect_stream(plain, complete)
        cols, reader = read(Source(str(path)), BATCH_SIZES[k % 3])
        check(cols, reader, want, full, where)
        if reader.damage is not None:
            assert reader.damage.describe("x").endswith(f"at byte offset {want.damage[1]} of the decompressed data")


def test_zstd_end_inside_a_frame_or_between(tmp_path):
    """fastflow follows a zstd input's frame structure to tell a cut inside a frame (damage) from an end
    between frames: frames with and without checksum and content size, raw, RLE and compressed blocks, a
    skippable frame; cut at and next to every frame boundary, and at random offsets."""
    import zstandard

    rng = random.Random(7)
    records = [struct.pack("<IIII", 1_700_000_000 + k, 0, len(body), len(body)) + body
               for k, body in enumerate((bytes(150000), rng.randbytes(150000), b"ab" * 40000, rng.randbytes(99)))]
    capture = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + b"".join(records)
    splits = [0, 24 + len(records[0]) + 5, len(capture) - 150, len(capture)]     # frames end inside records
    options = [dict(level=1, write_checksum=True, write_content_size=True),
               dict(level=19, write_checksum=False, write_content_size=False),
               dict(level=3, write_checksum=True, write_content_size=False)]
    frames = [zstandard.ZstdCompressor(**options[k]).compress(capture[a:b])
              for k, (a, b) in enumerate(zip(splits, splits[1:]))]
    skippable = struct.pack("<II", 0x184D2A5A, 7) + b"ignored"
    frames.insert(1, skippable)
    packed = b"".join(frames)
    ends = [sum(map(len, frames[:k + 1])) for k in range(len(frames))]
    path = tmp_path / "c.zst"
    path.write_bytes(packed)
    full, _ = read(Source(str(path)), 1 << 16)
    assert len(full["frame"]) == len(records)
    cuts = {e + d for e in ends for d in (-1, 0, 1) if 4 <= e + d <= len(packed)} | {4, 5, 8}
    cuts |= {rng.randrange(4, len(packed)) for _ in range(150)}
    for cut in sorted(cuts, reverse=True):
        os.truncate(path, cut)
        plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed[:cut]), read_across_frames=True).read()
        want = expect_stream(plain, cut in ends)
        cols, reader = read(Source(str(path)), 2)
        check(cols, reader, want, full, f"zstd cut at {cut}")


# ---------------------------------------------------------------------------------------------- flows and CLI

def stream(path: Path, batch_size: int = 64):
    """stream_flows (the main job) on a capture: the flows table and the run's stats."""
    tables = []
    result = stream_flows(str(path), tables.append, batch_size=batch_size, overlap=False)
    table = pa.concat_tables(tables) if tables else None
    if table is not None:    # the input's name differs between the files compared
        assert set(table.column("source").to_pylist()) <= {str(path)}
        table = table.drop_columns(["source"])
    counts = {k: v for k, v in result.stats["counts"].items() if k != "input_bytes"}
    return table, counts, result.damage


@requires_corpus
@pytest.mark.parametrize("name", ["zeek__http__get.pcap", "derived__two-sections.pcapng",
                                  "zeek__tcp__handshake-reorder.pcap", "zeek__pop3__pop3.pcap"])
def test_cut_flows_equal_those_of_the_packets_before(name, tmp_path):
    """Through stream_flows: a capture cut inside a record gives the same flows and counts as the capture cut
    at that record's start (which is not damage), and the damage on top."""
    data = (CAPTURES / name).read_bytes()
    units = walk(data)
    rng = random.Random(name)
    inside = [u for u in units if u.end - u.start > 1]
    for unit in inside if len(inside) <= 30 else rng.sample(inside, 30):
        if unit.start == 0:       # the file header: cut at its start, the file is empty (not a capture)
            continue
        at = _write(tmp_path / f"at{unit.start}{Path(name).suffix}", data[:unit.start])
        mid = _write(tmp_path / f"mid{unit.start}{Path(name).suffix}",
                     data[:rng.randrange(unit.start + 1, unit.end)])
        want_table, want_counts, no_damage = stream(at)
        got_table, got_counts, damage = stream(mid, batch_size=rng.choice(BATCH_SIZES))
        assert no_damage is None
        assert (damage.kind, damage.offset) == ("cut_short", unit.start), name
        assert got_counts == want_counts, (name, unit)
        assert got_counts["packets"] == sum(u.packet for u in units if u.end <= unit.start)
        if want_table is None:
            assert got_table is None or got_table.num_rows == 0
        else:
            assert got_table.equals(want_table), (name, unit)


def cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], capture_output=True, input=stdin,
                          cwd=ROOT, timeout=120)


def one_warning(proc) -> str:
    """The single stderr line of a damaged run with -q."""
    err = proc.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: "), err
    return lines[0]


@requires_corpus
def test_cli_cuts(tmp_path):
    """The real command on a sample of cuts: exit 1 and one stderr line with the offset and the packet count,
    the flows of the packets before the cut written; exit 0 and nothing on stderr at a record boundary."""
    import pyarrow.parquet as pq

    data = (CAPTURES / "zeek__http__get.pcap").read_bytes()
    units = walk(data)
    record = [u for u in units if u.packet][6]
    before = sum(u.packet for u in units if u.end <= record.start)
    cut_short = "capture cut short inside a record at byte offset {}; the {} packets before it were processed"
    cases = [   # file bytes, exit code, the message after "Warning: NAME: "
        (data[:record.start], 0, None),
        (data[:record.start + 20], 1, cut_short.format(record.start, before)),
        (data[:10], 1, cut_short.format(0, 0)),
    ]
    ng = (CAPTURES / "derived__two-sections.pcapng").read_bytes()
    second_shb = next(u for u in walk(ng) if u.start and ng[u.start:u.start + 4] == b"\x0a\x0d\x0d\x0a")
    ng_before = sum(u.packet for u in walk(ng) if u.end <= second_shb.start)
    cases.append((ng[:second_shb.start + 30], 1, cut_short.format(second_shb.start, ng_before)))
    flows = {}
    for k, (content, code, needle) in enumerate(cases):
        capture = _write(tmp_path / f"c{k}.{_format(content)}", content)
        out = tmp_path / f"f{k}.parquet"
        proc = cli("process", capture, "-o", out, "-q")
        assert proc.returncode == code, proc.stderr
        if needle is None:
            assert proc.stderr == b""
        else:
            assert one_warning(proc) == f"Warning: {capture}: {needle}"
        flows[k] = pq.read_table(out).drop_columns(["source"])
    assert flows[1].equals(flows[0]) and flows[0].num_rows >= 1 and flows[2].num_rows == 0
    # without -q the warning is still one line, before the summary
    proc = cli("process", tmp_path / "c1.pcap", "-o", tmp_path / "g.parquet")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert sum(line.startswith(("Warning", "Error")) for line in err.splitlines()) == 1 and "Traceback" not in err
    # a compressed capture cut short, from standard input (gzip: its output comes before the end of the input)
    packed = _compressors()["gzip"](data)
    cut = packed[:len(packed) * 3 // 4]
    plain = walk(available("gzip", cut))
    assert sum(u.packet for u in plain) >= 3
    proc = cli("process", "-", "-o", tmp_path / "z.parquet", "-q", stdin=cut)
    assert proc.returncode == 1
    assert one_warning(proc) == (
        "Warning: -: gzip stream damaged: Compressed file ended before the end-of-stream marker was reached at "
        f"byte offset {plain[-1].end} of the decompressed data; the {sum(u.packet for u in plain)} packets before "
        "it were processed")
    # three bytes are not recognisably a capture: exit 2, nothing written
    proc = cli("process", "-", "-o", tmp_path / "n.parquet", stdin=data[:3])
    assert proc.returncode == 2 and not (tmp_path / "n.parquet").exists()
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: -: not a pcap or pcapng capture"), lines


# ---------------------------------------------------------------------------------------------- header fields

TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")
ETH = 14          # the frames below are Ethernet: the IP header starts here


def pcap_frames(path: Path) -> list[tuple[bytearray, int]]:
    """(frame bytes, original length) of every record of a little-endian pcap, by walk()."""
    data = path.read_bytes()
    return [(bytearray(data[u.start + 16:u.end]), struct.unpack_from("<I", data, u.start + 12)[0])
            for u in walk(data) if u.packet]


def write_pcap(path: Path, frames: list[tuple[bytes, int]]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for k, (frame, wirelen) in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000 + k, 0, len(frame), wirelen) + bytes(frame))


@dataclass
class Corrupt:
    name: str
    frame: bytes
    wirelen: int
    status: Status           # fastflow's verdict: the summary's reason when not TCP
    tshark: str              # what tshark shows (an expert message, "Malformed Packet", "Packet size limited")
    payload_len: int | None = None   # TCP verdicts: tcp.len, tshark's too
    pflags: int = 0          # bits that must be set
    tshark_len: bool = True  # tshark's tcp.len is fastflow's payload_len
    lengths: tuple | None = None     # (ip_len, claimed_len) where they tell the case apart


def _set_nibble_hi(frame: bytearray, at: int, value: int) -> bytearray:
    frame[at] = (frame[at] & 0x0F) | (value << 4)
    return frame


def corrupted_packets() -> tuple[list[tuple[bytes, int]], list[Corrupt]]:
    """The real packets used, and copies with one header field changed each with the verdict fastflow must
    give."""
    http = pcap_frames(CAPTURES / "zeek__http__get.pcap")          # IPv4 TCP, full frames
    data, ack = http[3][0], http[2][0]      # 136 bytes of payload (IPv4 length 188); a bare ACK (length 52)
    assert (len(data), len(ack)) == (202, 66)
    cut = pcap_frames(CAPTURES / "zeek__tcp__truncated-header.pcap")[3]   # snaplen 68: TCP header only
    assert len(cut[0]) == 54 and cut[1] == 138
    v6 = pcap_frames(CAPTURES / "zeek__ftp__ipv6.pcap")[3][0]             # IPv6 TCP, 61 bytes of payload
    route = pcap_frames(CAPTURES / "zeek__chksums__ip6-route0-tcp-good-chksum.pcap")[0][0]   # routing header
    chain = pcap_frames(DATA / "ip_v6_ext_chain.pcap")[3][0]    # hop-by-hop, routing, dst options, AH, TCP
    assert (route[ETH + 6], chain[ETH + 6], chain[ETH + 40]) == (43, 0, 43)
    tcp4 = ETH + 20

    def c(frame):
        return bytearray(frame)

    def put16(frame, at, value):
        frame[at:at + 2] = value.to_bytes(2, "big")
        return frame

    bad, trunc, tcp = Status.BAD_HEADER, Status.TRUNCATED, Status.TCP
    over = PFlag.IP_LEN_EXCEEDS_WIRE
    originals = [(data, len(data)), (ack, len(ack)), cut, (v6, len(v6)), (route, len(route)), (chain, len(chain))]
    return originals, [
        # IPv4 header length
        Corrupt("ipv4 ihl 4", _ihl(data, 4), len(data), bad,
                "Bogus IP header length (16, must be at least 20)"),
        Corrupt("ipv4 ihl 0", _ihl(data, 0), len(data), bad, "Bogus IP header length (0, must be at least 20)"),
        Corrupt("ipv4 ihl 15 > total length 52", _ihl(ack, 15), len(ack), bad, "Bogus IP length"),
        Corrupt("ipv4 ihl 15 past the snaplen", _ihl(cut[0], 15), cut[1], trunc, "Packet size limited"),
        # IPv4 total length
        Corrupt("ipv4 total length 19 < ihl", put16(c(data), ETH + 2, 19), len(data), bad, "Bogus IP length"),
        Corrupt("ipv4 total length > caplen", put16(c(data), ETH + 2, 188 + 100), len(data), tcp,
                "IPv4 total length exceeds packet length", payload_len=136, pflags=over, lengths=(288, 236)),
        # TCP data offset
        Corrupt("tcp data offset 4", _set_nibble_hi(c(data), tcp4 + 12, 4), len(data), bad,
                "Bogus TCP header length (16, must be at least 20)"),
        Corrupt("tcp data offset 0", _set_nibble_hi(c(data), tcp4 + 12, 0), len(data), bad,
                "Bogus TCP header length (0, must be at least 20)"),
        Corrupt("tcp data offset 15 > segment", _set_nibble_hi(c(ack), tcp4 + 12, 15), len(ack), bad,
                "Malformed Packet"),
        Corrupt("tcp data offset 15 past the snaplen", _set_nibble_hi(c(cut[0]), tcp4 + 12, 15), cut[1], tcp,
                "Packet size limited during capture: TCP truncated", payload_len=124 - 20 - 60,
                pflags=PFlag.OPTS_TRUNCATED),
        # IPv6 payload length. 0 without a jumbo option: tshark takes an empty payload (its TCP is malformed),
        # fastflow takes the frame's bytes (as Zeek, for segmentation offload; ip_len 40 as Zeek's TotalLen)
        Corrupt("ipv6 payload length 0", put16(c(v6), ETH + 4, 0), len(v6), tcp,
                "IPv6 payload length equals 0", payload_len=61, tshark_len=False, lengths=(40, 61)),
        Corrupt("ipv6 payload length > captured", put16(c(v6), ETH + 4, 93 + 100), len(v6), tcp,
                "IPv6 payload length exceeds framing length", payload_len=61, pflags=over, lengths=(233, 161)),
        Corrupt("ipv6 payload length 10 < tcp header", put16(c(v6), ETH + 4, 10), len(v6), bad,
                "Malformed Packet"),
        # IPv6 extension header lengths running past the packet, or only past the snaplen
        Corrupt("ipv6 routing header length 255", _at(route, ETH + 41, 255), len(route), bad,
                "Malformed Packet: IPv6 Routing"),
        Corrupt("ipv6 hop-by-hop length 255", _at(chain, ETH + 41, 255), len(chain), bad,
                "Malformed Packet: IPv6 Hop-by-Hop"),
        Corrupt("ipv6 routing length 200 after hop-by-hop", _at(chain, ETH + 49, 200), len(chain), bad,
                "Malformed Packet: IPv6 Routing"),
        Corrupt("ipv6 header chain past the snaplen", chain[:ETH + 58], len(chain), trunc, "Packet size limited"),
    ]


def _ihl(frame, ihl: int) -> bytearray:
    """An IPv4 header length (in 32-bit words), the version nibble kept."""
    frame = bytearray(frame)
    frame[ETH] = 0x40 | ihl
    return frame


def _at(frame, at: int, value: int) -> bytearray:
    frame = bytearray(frame)
    frame[at] = value
    return frame


@requires_corpus
def test_corrupted_header_fields(tmp_path):
    """Each packet with a corrupted header field gets its stated verdict (the unchanged packets are all TCP):
    decoded as TCP where the lengths can still be taken from the frame (as Wireshark), else counted under the
    reason the summary prints (bad_header: lengths that contradict each other; truncated: cut by the
    snaplen). A bad packet is not damage to the capture: no damage, exit 0."""
    originals, cases = corrupted_packets()
    path = tmp_path / "originals.pcap"
    write_pcap(path, originals)
    cols, reader = read(Source(str(path)), 64)
    assert cols["status"].tolist() == [Status.TCP] * len(originals)
    write_pcap(path, [(case.frame, case.wirelen) for case in cases])
    for batch_size in (1, 64):
        cols, reader = read(Source(str(path)), batch_size)
        assert reader.damage is None and reader.frames == len(cases)
        for i, case in enumerate(cases):
            assert Status(cols["status"][i]) == case.status, case.name
            assert cols["pflags"][i] & case.pflags == case.pflags, case.name
            if case.payload_len is not None:
                assert cols["payload_len"][i] == case.payload_len, case.name
            if case.lengths is not None:
                assert (cols["ip_len"][i], cols["claimed_len"][i]) == case.lengths, case.name
    _, counts, damage = stream(path)
    assert damage is None
    by_reason = {s.name.lower(): sum(case.status == s for case in cases) for s in Status}
    assert counts["by_status"] == by_reason
    assert counts["tcp_segments"] == by_reason["tcp"] and counts["packets"] == len(cases)
    proc = cli("process", path, "-o", tmp_path / "f.parquet")
    assert proc.returncode == 0, proc.stderr
    assert f"  not TCP:   truncated {by_reason['truncated']}, bad_header {by_reason['bad_header']}\n" in \
        proc.stderr.decode()


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed: cannot compare the verdicts on corrupted headers")
@requires_corpus
def test_corrupted_header_fields_agree_with_tshark(tmp_path):
    """tshark's verdict on each corrupted packet (one run over all of them): the expert message, malformed
    mark or snaplen note stated with the case; no malformed mark where fastflow decodes TCP, and the same
    tcp.len (the one stated exception: an IPv6 payload length of 0, see corrupted_packets)."""
    _, cases = corrupted_packets()
    path = tmp_path / "corrupted.pcap"
    write_pcap(path, [(case.frame, case.wirelen) for case in cases])
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
                           "-e", "frame.number", "-e", "tcp.len", "-e", "_ws.short", "-e", "_ws.malformed",
                           "-e", "_ws.expert.message"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [int(row[0]) for row in rows] == list(range(1, len(cases) + 1))
    for case, (_, tcp_len, *verdict) in zip(cases, rows):
        text = "|".join(verdict)
        assert case.tshark in text, (case.name, text)
        if case.status == Status.TCP and case.tshark_len:
            assert "Malformed" not in text, (case.name, text)
            assert int(tcp_len) == case.payload_len, case.name


def _u32(data: bytes, at: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, at, value & 0xFFFFFFFF)
    return bytes(out)


@dataclass
class RecordCase:
    name: str
    data: bytes
    want: Expect
    same_rows_but: tuple = ()   # all rows equal to the unchanged file's except these columns (None: not checked)


def record_corruptions() -> tuple[dict[str, bytes], list[RecordCase]]:
    """Record and block header fields corrupted one at a time in the 6th record (past the records Wireshark
    reads to recognise the pcap variant), with the outcome each must have."""
    pcap = (CAPTURES / "zeek__http__get.pcap").read_bytes()
    ng = (CAPTURES / "zeek__tcp__http-on-irc-port-missing-syn.pcapng").read_bytes()
    rec = [u for u in walk(pcap) if u.packet][5]
    blk = [u for u in walk(ng) if u.packet][5]
    n_pcap, n_ng = sum(u.packet for u in walk(pcap)), sum(u.packet for u in walk(ng))
    caplen = rec.end - rec.start - 16
    blen = blk.end - blk.start
    # caplen 0: the record is an empty packet (truncated), and the next "header" is the frame's first 16
    # bytes, whose caplen field (source MAC bytes 2-5) cannot be right
    garbage = struct.unpack_from("<I", pcap, rec.start + 16 + 8)[0]
    assert garbage > 262144
    # a leading length 28 makes the trailing copy be read from inside the block, where it does not match
    assert struct.unpack_from("<I", ng, blk.start + 24)[0] != 28
    bad_record, cut_short = ("bad_record", rec.start), ("cut_short", rec.start)
    bad_block = ("bad_record", blk.start)
    cases = [
        RecordCase("caplen 0", _u32(pcap, rec.start + 8, 0), Expect(6, ("bad_record", rec.start + 16)), None),
        # the file header's snaplen below every record's caplen: records are kept whole, as Wireshark (libpcap
        # would cut them to the snaplen): not damage
        RecordCase("caplen > snaplen", _u32(pcap, 16, 64), Expect(n_pcap, None), ()),
        RecordCase("caplen > remaining", _u32(pcap, rec.start + 8, len(pcap) - rec.start - 16 + 1),
                   Expect(5, cut_short)),
        RecordCase("caplen 262145", _u32(pcap, rec.start + 8, 262145), Expect(5, bad_record)),
        RecordCase("caplen huge", _u32(pcap, rec.start + 8, 0xFFFFFFFF), Expect(5, bad_record)),
        # an original length below the captured one: the record boundary holds, every packet is kept and the
        # damage reported (exit 1), as README's exit codes say
        RecordCase("original length < caplen", _u32(pcap, rec.start + 12, caplen - 1),
                   Expect(n_pcap, ("caplen_exceeds_wirelen", rec.start)), ("wirelen",)),
        RecordCase("original length 0", _u32(pcap, rec.start + 12, 0),
                   Expect(n_pcap, ("caplen_exceeds_wirelen", rec.start)), ("wirelen",)),
        RecordCase("original length huge", _u32(pcap, rec.start + 12, 0xFFFFFFFF), Expect(n_pcap, None),
                   ("wirelen",)),
        RecordCase("block length +4", _u32(ng, blk.start + 4, blen + 4), Expect(5, bad_block)),
        RecordCase("trailing block length +4", _u32(ng, blk.end - 4, blen + 4), Expect(5, bad_block)),
        RecordCase("block length not a multiple of 4", _u32(ng, blk.start + 4, blen + 1), Expect(5, bad_block)),
        RecordCase("trailing length not a multiple of 4", _u32(ng, blk.end - 4, blen + 1), Expect(5, bad_block)),
        RecordCase("block length 0", _u32(ng, blk.start + 4, 0), Expect(5, bad_block)),
        RecordCase("block length 8 (< 12)", _u32(ng, blk.start + 4, 8), Expect(5, bad_block)),
        RecordCase("block length 28 (< an EPB's 32)", _u32(ng, blk.start + 4, 28), Expect(5, bad_block)),
        RecordCase("block length huge", _u32(ng, blk.start + 4, 0xFFFFFFFC), Expect(5, bad_block)),
        # over fastflow's 16 MB block limit, under Wireshark's 128 MB: capinfos calls it cut short
        RecordCase("block length 32 MB", _u32(ng, blk.start + 4, 32 << 20), Expect(5, bad_block)),
        # a plausible length beyond the end of the file cannot be told from a cut: cut short
        RecordCase("block length 1 MB > remaining", _u32(ng, blk.start + 4, 1 << 20),
                   Expect(5, ("cut_short", blk.start))),
    ]
    assert n_ng == 13
    return {"pcap": pcap, "pcapng": ng}, cases


@requires_corpus
def test_corrupted_record_headers(tmp_path):
    """Each corrupted record or block header: the packets before it delivered unchanged, then the damage at
    the record's offset; or, where the record boundary still holds, every packet."""
    originals, cases = record_corruptions()
    full = {kind: read(Source(str(_write(tmp_path / f"orig.{kind}", data))), 1 << 16)[0]
            for kind, data in originals.items()}
    for case in cases:
        path = _write(tmp_path / "case", case.data)
        want_rows = full[_format(case.data)]
        for batch_size in (2, 1 << 16):
            cols, reader = read(Source(str(path)), batch_size)
            if case.same_rows_but is None:      # caplen 0: an empty packet after the first five
                assert reader.frames == case.want.packets == len(cols["frame"]) == 6, case.name
                assert (reader.damage.kind, reader.damage.offset) == case.want.damage
                for name, column in cols.items():
                    assert np.array_equal(column[:5], want_rows[name][:5]), name
                assert (cols["caplen"][5], Status(cols["status"][5])) == (0, Status.TRUNCATED)
                assert reader.status_counts["truncated"] == 1
                continue
            kept = {k: v for k, v in cols.items() if k not in case.same_rows_but} if cols else None
            check(kept, reader, case.want, want_rows, case.name)
            if case.same_rows_but:      # the raw original length is what the column shows
                changed = np.flatnonzero(cols["wirelen"] != want_rows["wirelen"][:len(cols["wirelen"])])
                assert changed.tolist() == [5], case.name


def _format(data: bytes) -> str:
    return "pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else "pcap"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.skipif(CAPINFOS is None, reason="capinfos not installed: cannot compare packet counts")
@requires_corpus
def test_corrupted_record_headers_agree_with_capinfos(tmp_path):
    """capinfos (one run over every case) counts the same packets before the damage, or all of them."""
    _, cases = record_corruptions()
    paths = [_write(tmp_path / f"case{k}.{_format(c.data)}", c.data) for k, c in enumerate(cases)]
    proc = subprocess.run([CAPINFOS, "-c", *map(str, paths)], capture_output=True, text=True, timeout=120)
    counts = {}
    for block in proc.stdout.split("File name:")[1:]:
        name, _, rest = block.partition("\n")
        counts[name.strip()] = int(rest.split("Number of packets:")[1].split()[0])
    for line in proc.stderr.splitlines():     # 'An error occurred after reading N packets from "PATH".'
        if "error occurred after reading" in line:
            n, _, name = line.split("after reading ")[1].partition(" packets from ")
            counts[name.strip().strip('."')] = int(n)
    assert {str(p): counts.get(str(p)) for p in paths} == {str(p): c.want.packets for p, c in zip(paths, cases)}


@requires_corpus
def test_corrupted_record_headers_cli(tmp_path):
    """Exit 1 and one stderr line naming the offset, for damage that stops reading and for a record whose
    original length is below its captured length (every packet processed)."""
    _, cases = record_corruptions()
    by_name = {c.name: c for c in cases}
    block = by_name["trailing block length +4"]
    path = _write(tmp_path / "b.pcapng", block.data)
    proc = cli("process", path, "-o", tmp_path / "b.parquet", "-q")
    assert proc.returncode == 1
    assert one_warning(proc) == (f"Warning: {path}: record header that cannot be right (bad length) at byte "
                                 f"offset {block.want.damage[1]}; the 5 packets before it were processed")
    short = by_name["original length < caplen"]
    path = _write(tmp_path / "w.pcap", short.data)
    proc = cli("process", path, "-o", tmp_path / "w.parquet", "-q")
    assert proc.returncode == 1
    assert one_warning(proc) == (f"Warning: {path}: 1 record(s) with a captured length over the original length "
                                 f"(kept), the first at byte offset {short.want.damage[1]}; all 14 packets were "
                                 f"processed")
