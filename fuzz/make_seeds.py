"""Write the fuzz seeds: every capture of the shared corpus and of tests/data, cut after the last whole
record or block within --max-bytes, behind the harness's 4 header bytes (fuzz/fuzz_capture.py).

Each capture gives four seeds: as a plain file on the decode, engines and process-vs-stream paths, and in
one of the other containers (stdin, gzip/zstd/xz/bz2, as a file or on stdin) on a path and with options
that rotate from capture to capture, so that every container, path, batch size and block size starts with
real captures.
The compressed files of tests/data go in as they are too: their mutations fuzz the decompressors.

    python fuzz/make_seeds.py OUT_DIR [--max-bytes N] [--corpus DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = Path(os.environ.get("FASTFLOW_CORPUS", ROOT.parent / "shared" / "corpus"))
SKIP = {"make_data.py", "README.md", "expected.json"}


def record_cut(data: bytes, limit: int) -> int:
    """Length of the longest prefix within limit that ends on a record (pcap) or block (pcapng) boundary;
    a plain cut at limit for anything else."""
    if len(data) <= limit:
        return len(data)
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        pos = 24
        while pos + 16 <= len(data):
            caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
            if pos + 16 + caplen > limit:
                break
            pos += 16 + caplen
        return pos
    if magic == b"\x0a\x0d\x0d\x0a":
        pos, order = 0, "<"
        while pos + 12 <= len(data):
            if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
                order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack_from(order + "I", data, pos + 4)[0]
            if blen < 12 or pos + blen > limit:
                break
            pos += blen
        return pos if pos else limit
    return limit


def header(container: int, path: int, batch: int, block: int, flags: int = 0, where: int = 0) -> bytes:
    """The harness's header bytes (see fuzz/fuzz_capture.py); flags: 1 vlan-aware, 2 checksums and filter."""
    return bytes([container & 0x1F, (path & 7) | ((flags & 3) << 3) | ((batch & 7) << 5), block & 7, where & 0xFF])


def inputs(corpus: Path) -> list[Path]:
    files = sorted((corpus / "captures").iterdir()) if (corpus / "captures").is_dir() else []
    if not files:
        print(f"make_seeds: no corpus at {corpus}; tests/data only", file=sys.stderr)
    files += sorted(p for p in (ROOT / "tests" / "data").iterdir() if p.is_file() and p.name not in SKIP)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-bytes", type=int, default=16 << 10)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = set()
    for i, path in enumerate(inputs(args.corpus)):
        data = path.read_bytes()
        data = data[:record_cut(data, args.max_bytes)]
        # paths 0 decode, 1 engines, 7 process-vs-stream (batch sizes 64 and 16, default block size);
        # then another container, path and options, rotating
        seeds = [header(0, 0, 5, 0) + data, header(0, 1, 5, 0) + data, header(0, 7, 4, 0) + data,
                 header(1 + i % 7, i % 8, (i // 3) % 8, (i // 2) % 8, flags=i % 4) + data]
        for seed in seeds:
            name = hashlib.sha1(seed).hexdigest()
            if name not in written:
                (args.out / name).write_bytes(seed)
                written.add(name)
    print(f"make_seeds: {len(written)} seeds in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
