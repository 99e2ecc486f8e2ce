"""Segments table: the cost of building it and of writing it to Parquet, against pyarrow's own write.

    .venv/bin/python benchmarks/parquet_write.py [--input PCAP] [--runs 7] [--cli]

The capture is decoded once with `fastflow.pipeline.process(path, want_segments=True)`; the arguments that
process() passes to `schema.segments_table` are kept, so that building the table can be timed on its own. Then,
in this one process, every measurement below runs --runs times, round-robin (each variant once, then again ...),
so that load changes on a shared machine hit every variant alike; the table shows medians. Each write goes to a
new file in benchmarks/out/ (the old one is removed first, untimed), as the CLI writes; every file is read back
and checked against the table, then removed.

- build: `schema.segments_table(seg, segments)`; the address columns alone (`schema.address_columns`); and the
  formatting used until 2026-11 (np.unique over 16-byte keys, then Python's ipaddress per distinct address, then
  a dictionary cast to dense strings), kept here as `legacy_format_addresses` for comparison.
- (a) `pq.write_table(table, path)`: pyarrow's defaults (snappy, dictionary on every column, statistics on every
  column, row groups of 1 Mi rows), the reference of the issue's target.
- (b) `fastflow.write.write_tables([(path, table)], "zstd", metadata)`, the whole-table write (temporary file,
  fsync, rename; options from `fastflow.write.parquet_options`; what `fastflow process --segments` ran until
  it streamed, labelled "CLI" in the tables below from before then), the same options through pq.write_table
  alone, and `fastflow.write.ParquetStream` fed tables of 2**18 rows, as the streaming `fastflow process
  --segments` writes now (row groups of 128 Ki rows, each group's dictionaries encoded afresh).
- (c) variants of (b): codec and level, dictionary on every column, statistics on the string columns too, page
  and row group sizes, addresses as Arrow dictionary<int32, string> columns, the segments fields all nullable
  (the schema before 2026-11), and the writer before 2026-11 (zstd with pyarrow's other defaults).

With --cli it also times `python -m fastflow process` end to end in child processes, flows alone and with
--segments (round-robin, medians), and prints how much --segments adds.

Results on 2026-11-30, `.venv/bin/python benchmarks/parquet_write.py --runs 7 --cli`, input
benchmarks/data/synth-1000000-seed1-snap128.pcap (1,000,000 packets, 996,136 TCP segments; 2 shared, noisy cores;
pyarrow 26.0.1, numpy 2.4.6; medians of 7):

    | what                                             | median s | min s | file MB | ratio |
    |--------------------------------------------------|---------:|------:|--------:|------:|
    | segments_table (whole build)                     |    0.105 | 0.092 |         |  0.29 |
    | address_columns (src_h + dst_h)                  |    0.063 | 0.059 |         |  0.17 |
    | legacy format_addresses (src_h + dst_h)          |    0.792 | 0.755 |         |  2.21 |
    | (a) pyarrow defaults                             |    0.358 | 0.334 |   36.53 |  1.00 |
    | (b) fastflow write_tables (CLI: zstd 1, fsync)   |    0.307 | 0.302 |   24.51 |  0.86 |
    | (b) fastflow options via pq.write_table          |    0.293 | 0.284 |   24.51 |  0.82 |
    | (c) writer before 2026-11 (zstd, 1 Mi rows)      |    0.390 | 0.383 |   27.19 |  1.09 |
    | (c) fastflow options, zstd level 3               |    0.339 | 0.331 |   24.33 |  0.95 |
    | (c) fastflow options, snappy                     |    0.257 | 0.255 |   27.69 |  0.72 |
    | (c) fastflow options, lz4                        |    0.256 | 0.250 |   28.12 |  0.72 |
    | (c) fastflow options, uncompressed               |    0.211 | 0.208 |   33.56 |  0.59 |
    | (c) zstd 1, dictionary on every column           |    0.381 | 0.352 |   27.19 |  1.07 |
    | (c) fastflow options + string statistics         |    0.317 | 0.308 |   24.52 |  0.89 |
    | (c) fastflow options, 8 MB data pages            |    0.291 | 0.284 |   24.51 |  0.81 |
    | (c) fastflow options, row groups 128 Ki          |    0.307 | 0.298 |   25.01 |  0.86 |
    | (c) fastflow options, addresses dictionary       |    0.261 | 0.247 |   24.09 |  0.73 |
    | (c) fastflow options, all fields nullable        |    0.322 | 0.315 |   24.52 |  0.90 |
    | (a') pyarrow defaults, all fields nullable       |    0.372 | 0.366 |   36.55 |  1.04 |

    build + fastflow write: 0.105 + 0.307 = 0.412 s, 1.15 x pyarrow's default write (target <= 1.5)
    the same with the address formatting and writer before 2026-11: 1.224 s, 3.42 x

    end to end, child processes, medians of 7 (round-robin):
      fastflow process (flows)       1.378 s  (runs: 1.66, 1.57, 1.37, 1.38, 1.45, 1.36, 1.35)
      fastflow process --segments    1.889 s  (runs: 1.94, 1.72, 1.98, 1.89, 1.94, 1.87, 1.83)
      --segments adds 0.511 s; segments file 24.5 MB

Before this change (commit 5ebec48, same input and machine, same day): building the segments table took
0.80-0.86 s in one process (medians of 3-5), about 0.39 s of it per address column; fastflow's writer (zstd,
whose default level in pyarrow is already 1, and pyarrow's other defaults) 0.43-0.45 s for a 27.2 MB file.
End to end, the same two command lines as --cli, 7 interleaved runs each with that commit's fastflow on
PYTHONPATH: flows alone 1.569 s, with --segments 3.061 s, so --segments added 1.49 s (now 0.51 s).

What the figures say: the address text was two thirds of the cost (0.79 s -> 0.06 s now). pyarrow's
defaults spend their time on dictionaries for columns that never repeat (frame, ts, seq, ack) and on min/max
statistics of strings; DELTA_BINARY_PACKED for frame/ts/conn_id, no dictionary for seq/ack and no string
statistics make zstd level 1 faster than the defaults' snappy and the file a third smaller. zstd level 3 costs
about 15 % more time for a file 0.7 % smaller. Page size and row group size change nothing measurable. Declaring
the never-null segments columns non-nullable saves about 0.015-0.03 s (no definition levels). Writing the
addresses as Arrow dictionary columns would save another 0.03-0.04 s of writing and 0.4 MB, but pandas and polars
would then read them as categoricals instead of strings (DuckDB still reads VARCHAR), so they stay strings.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from fastflow import pipeline, schema, write  # noqa: E402 (after the sys.path line)

DEFAULT_INPUT = os.path.join(HERE, "data", "synth-1000000-seed1-snap128.pcap")
STREAM_TABLE_ROWS = 1 << 18     # rows per table handed to ParquetStream: stream_flows' default batch size
OUT = os.path.join(HERE, "out")


def legacy_format_addresses(raw: np.ndarray, version: np.ndarray) -> pa.Array:
    """schema.format_addresses as it was before 2026-11 (commit 5ebec48), for comparison."""
    if len(raw) == 0:
        return pa.array([], pa.string())
    keyed = np.ascontiguousarray(raw).view(np.dtype((np.void, 16))).ravel()
    uniq, first, inverse = np.unique(keyed, return_index=True, return_inverse=True)
    texts = []
    for u, i in zip(uniq, first):
        b = u.tobytes()
        texts.append(str(ipaddress.IPv4Address(b[12:])) if version[i] == 4 else str(ipaddress.IPv6Address(b)))
    return pa.DictionaryArray.from_arrays(pa.array(inverse.ravel().astype(np.int32)),
                                          pa.array(texts, pa.string())).cast(pa.string())


def ensure_input(path: str) -> str:
    if os.path.exists(path) or path != DEFAULT_INPUT:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "generate.py"), "--packets", "1000000", "--seed", "1",
                    "--snaplen", "128", "-o", path], check=True)
    return path


def decode(path: str):
    """process() the capture; return its Result and the arguments it passed to schema.segments_table."""
    kept = {}
    build = pipeline.segments_table

    def keep(seg, segments):
        kept["args"] = (seg, segments)
        return build(seg, segments)

    pipeline.segments_table = keep
    try:
        result = pipeline.process(path, want_segments=True)
    finally:
        pipeline.segments_table = build
    return result, kept["args"]


def with_nullable_fields(table: pa.Table) -> pa.Table:
    return pa.Table.from_arrays(table.columns, schema=pa.schema([f.with_nullable(True) for f in table.schema]))


def with_dictionary_addresses(table: pa.Table) -> pa.Table:
    for name in ("src_h", "dst_h"):
        i = table.schema.get_field_index(name)
        column = pc.dictionary_encode(table.column(name))
        table = table.set_column(i, table.schema.field(i).with_type(column.type), column)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=DEFAULT_INPUT, help="capture (default: the 1 M-packet synthetic one)")
    parser.add_argument("--runs", type=int, default=7, help="runs of every measurement (median; default 7)")
    parser.add_argument("--cli", action="store_true", help="also time `fastflow process` end to end")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    path = ensure_input(args.input)
    os.makedirs(OUT, exist_ok=True)

    result, (seg, segments) = decode(path)
    table = result.segments
    metadata = result.metadata()
    print(f"{path}: {result.stats['counts']['packets']:,} packets, {table.num_rows:,} TCP segments, "
          f"{table.num_columns} columns, {table.nbytes / 1e6:.1f} MB in memory")

    builds = {
        "segments_table (whole build)": lambda: schema.segments_table(seg, segments),
        "address_columns (src_h + dst_h)": lambda: schema.address_columns([seg["src"], seg["dst"]],
                                                                          seg["ip_version"]),
        "legacy format_addresses (src_h + dst_h)": lambda: [legacy_format_addresses(seg[c], seg["ip_version"])
                                                           for c in ("src", "dst")],
    }

    ff = write.parquet_options(table.schema, "zstd")
    nullable = with_nullable_fields(table)
    dict_addr = with_dictionary_addresses(table)

    def opts(**changes):
        return {**ff, **changes}

    # name -> (table, pq.write_table options); None options = write_tables as the CLI calls it
    writes = {
        "(a) pyarrow defaults": (table, {}),
        "(b) fastflow write_tables (zstd 1, fsync)": (table, None),
        "(b) fastflow options via pq.write_table": (table, ff),
        "(b) fastflow ParquetStream (CLI, streamed)": (table, "stream"),
        "(c) writer before 2026-11 (zstd, 1 Mi rows)": (table, {"compression": "zstd", "row_group_size": 1 << 20}),
        "(c) fastflow options, zstd level 3": (table, opts(compression_level=3)),
        "(c) fastflow options, snappy": (table, opts(compression="snappy", compression_level=None)),
        "(c) fastflow options, lz4": (table, opts(compression="lz4", compression_level=None)),
        "(c) fastflow options, uncompressed": (table, opts(compression=None, compression_level=None)),
        "(c) zstd 1, dictionary on every column": (table, {"compression": "zstd", "compression_level": 1,
                                                           "write_statistics": ff["write_statistics"]}),
        "(c) fastflow options + string statistics": (table, opts(write_statistics=True)),
        "(c) fastflow options, 8 MB data pages": (table, opts(data_page_size=8 << 20)),
        "(c) fastflow options, row groups 128 Ki": (table, opts(row_group_size=1 << 17)),
        "(c) fastflow options, addresses dictionary": (dict_addr, ff),
        "(c) fastflow options, all fields nullable": (nullable, ff),
        "(a') pyarrow defaults, all fields nullable": (nullable, {}),
    }

    times = {name: [] for name in list(builds) + list(writes)}
    sizes = {}
    for _ in range(args.runs):
        for name, build in builds.items():
            started = time.perf_counter()
            build()
            times[name].append(time.perf_counter() - started)
        for i, (name, (tab, options)) in enumerate(writes.items()):
            target = os.path.join(OUT, f"parquet_write_{i}.parquet")
            if os.path.exists(target):
                os.unlink(target)
            started = time.perf_counter()
            if options is None:
                write.write_tables([(target, tab)], compression="zstd", metadata=metadata)
            elif options == "stream":
                # as `fastflow process --segments` writes since it streams: tables of a batch's rows
                with write.ParquetStream(target, tab.schema, "zstd") as stream:
                    for start in range(0, tab.num_rows, STREAM_TABLE_ROWS):
                        stream.write(tab.slice(start, STREAM_TABLE_ROWS))
                    stream.commit(metadata)
            else:
                pq.write_table(tab, target, **options)
            times[name].append(time.perf_counter() - started)
            sizes[name] = os.path.getsize(target)

    # the files are right: fastflow's reads back as the table, every variant holds the same values
    for i, (name, (tab, options)) in enumerate(writes.items()):
        back = pq.read_table(os.path.join(OUT, f"parquet_write_{i}.parquet"))
        for column in table.column_names:
            want, got = table.column(column), back.column(column)
            if pa.types.is_dictionary(got.type):    # the streamed file's dictionaries are per row group
                got = got.cast(got.type.value_type)
            if pa.types.is_dictionary(want.type):
                want = want.cast(want.type.value_type)
            assert got.equals(want), (name, column)
        if options is None or options == "stream":
            assert back.schema.remove_metadata().equals(table.schema.remove_metadata(), check_metadata=True)
        os.unlink(os.path.join(OUT, f"parquet_write_{i}.parquet"))

    med = {name: statistics.median(v) for name, v in times.items()}
    reference = med["(a) pyarrow defaults"]
    print(f"\nmedians of {args.runs} runs (round-robin); ratio = median / (a) pyarrow defaults "
          f"({reference:.3f} s)\n")
    print(f"| {'what':48} | median s | min s | file MB | ratio |")
    print(f"|{'-' * 50}|---------:|------:|--------:|------:|")
    for name in times:
        size = f"{sizes[name] / 1e6:7.2f}" if name in sizes else " " * 7
        print(f"| {name:48} | {med[name]:8.3f} | {min(times[name]):5.3f} | {size} | {med[name] / reference:5.2f} |")
    build = med["segments_table (whole build)"]
    ours = med["(b) fastflow write_tables (zstd 1, fsync)"]
    streamed = med["(b) fastflow ParquetStream (CLI, streamed)"]
    legacy = (build - med["address_columns (src_h + dst_h)"] + med["legacy format_addresses (src_h + dst_h)"]
              + med["(c) writer before 2026-11 (zstd, 1 Mi rows)"])
    print(f"\nbuild + fastflow write: {build:.3f} + {ours:.3f} = {build + ours:.3f} s, "
          f"{(build + ours) / reference:.2f} x pyarrow's default write (target <= 1.5)")
    print(f"build + fastflow's streamed write: {build:.3f} + {streamed:.3f} = {build + streamed:.3f} s, "
          f"{(build + streamed) / reference:.2f} x pyarrow's default write (target <= 1.5)")
    print(f"the same with the address formatting and writer before 2026-11: {legacy:.3f} s, "
          f"{legacy / reference:.2f} x")

    if args.cli:
        cli(path, args.runs)
    return 0


def cli(path: str, runs: int) -> None:
    flows, segs = os.path.join(OUT, "parquet_write_flows.parquet"), os.path.join(OUT, "parquet_write_segs.parquet")
    base = [sys.executable, "-m", "fastflow", "process", path, "-o", flows, "-q", "--overwrite"]
    commands = {"fastflow process (flows)": base, "fastflow process --segments": base + ["--segments", segs]}
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT)
            times[name].append(time.perf_counter() - started)
    print(f"\nend to end, child processes, medians of {runs} (round-robin):")
    for name, values in times.items():
        print(f"  {name:30} {statistics.median(values):.3f} s  (runs: "
              + ", ".join(f"{v:.2f}" for v in values) + ")")
    extra = statistics.median(times["fastflow process --segments"]) - statistics.median(
        times["fastflow process (flows)"])
    print(f"  --segments adds {extra:.3f} s; segments file {os.path.getsize(segs) / 1e6:.1f} MB")
    for scratch in (flows, segs):
        os.unlink(scratch)


if __name__ == "__main__":
    sys.exit(main())
