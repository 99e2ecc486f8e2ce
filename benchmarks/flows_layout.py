"""Flows table: what each column costs to write to Parquet with each encoding, and which one fastflow uses.

    .venv/bin/python benchmarks/flows_layout.py [--input PCAP] [--rows 1048576] [--runs 3]

The capture goes through `fastflow process` (a child process, to a file in benchmarks/out/), whose flows are
read back; the first --rows of them are written one column at a time, as fastflow.write streams them (zstd
level 1, row groups of 128 Ki rows, no statistics), with: a dictionary (Parquet's default; it falls back to
plain values once the dictionary outgrows 1 MB), plain values, DELTA_BINARY_PACKED (integers and times) and
BYTE_STREAM_SPLIT (numbers). Each variant runs --runs times, round-robin; the table gives the median seconds
and the bytes written, and marks with * the layout fastflow.write.parquet_options chooses (fastflow/schema.py:
DELTA_COLUMNS, NO_DICTIONARY_COLUMNS).

Results on 2026-12-01 (quiet machine), the columns where the choice matters, seconds / MB:

    .venv/bin/python benchmarks/flows_layout.py --input benchmarks/data/synth-26400000-seed1-snap128.pcap
      (first 1 Mi of 1,726,727 flows): ts_end, syn_ts, synack_ts, handshake_ack_ts, fin1_ts, fin2_ts and
      last_frame 0.06-0.09 s each with a dictionary, 0.013-0.022 s as deltas, in fewer bytes; community_id
      0.120/22.3 with a dictionary, 0.110/21.9 without; duration 0.057/9.1 with, 0.028/7.3 without.
    .venv/bin/python benchmarks/flows_layout.py --input benchmarks/data/real-nginx-wrk-c16-body4096-1000000.pcap
      (100,006 flows): the event times 0.006-0.007/0.5-0.6 with a dictionary, 0.002/0.1 as deltas;
      community_id 0.005/0.5 with a dictionary, 0.011/2.0 without (clients reuse ports: the same Community
      IDs come back); duration 0.002/0.2 with, 0.003/0.2 without.

So the event times and last_frame go as deltas (fastflow/schema.py, DELTA_COLUMNS), and the Community ID and
the duration keep their dictionary where their values repeat, as in real traffic: fastflow.write.ParquetStream
(every file the command line writes) drops it for the columns of write.MAYBE_DISTINCT whose values almost all
differ in the first row group (the * below marks parquet_options' choice, which that test may override).
BYTE_STREAM_SPLIT is as fast as the deltas on times, but fewer readers know it for integers.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from fastflow.schema import FLOWS_SCHEMA  # noqa: E402
from fastflow.write import parquet_options  # noqa: E402


def variants(field: pa.Field) -> dict[str, dict]:
    out = {"dictionary": {"use_dictionary": True}, "plain": {"use_dictionary": False}}
    t = field.type
    if pa.types.is_integer(t) or pa.types.is_timestamp(t):
        out["delta"] = {"use_dictionary": False, "column_encoding": {field.name: "DELTA_BINARY_PACKED"}}
    if pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_floating(t):
        out["byte_stream_split"] = {"use_dictionary": False, "column_encoding": {field.name: "BYTE_STREAM_SPLIT"}}
    return out


def chosen(field: pa.Field) -> str:
    options = parquet_options(pa.schema([field]))
    if (options.get("column_encoding") or {}).get(field.name) == "DELTA_BINARY_PACKED":
        return "delta"
    return "dictionary" if field.name in options["use_dictionary"] else "plain"


def write(table: pa.Table, options: dict) -> tuple[float, int]:
    sink = io.BytesIO()
    started = time.perf_counter()
    pq.write_table(table, sink, compression="zstd", compression_level=1, row_group_size=1 << 17,
                   write_statistics=False, **options)
    return time.perf_counter() - started, sink.getbuffer().nbytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=os.path.join(HERE, "data", "real-nginx-wrk-c16-body4096-1000000.pcap"),
                        help="a capture (default: the suite's real 1 M-packet capture, benchmarks/run.py makes it)")
    parser.add_argument("--rows", type=int, default=1 << 20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    flows = os.path.join(HERE, "out", "flows_layout.parquet")
    subprocess.run([sys.executable, "-m", "fastflow", "process", args.input, "-o", flows, "-q", "--overwrite"],
                   check=True, cwd=os.path.dirname(HERE))
    table = pq.read_table(flows).cast(FLOWS_SCHEMA).slice(0, args.rows)
    os.unlink(flows)
    print(f"{args.input}: {table.num_rows:,} flows; median seconds / MB of {args.runs} runs; * = fastflow's choice")
    for field in FLOWS_SCHEMA:
        column = table.select([field.name])
        ways = variants(field)
        times: dict[str, list[float]] = {name: [] for name in ways}
        sizes: dict[str, int] = {}
        for _ in range(args.runs):
            for name, options in ways.items():
                seconds, size = write(column, options)
                times[name].append(seconds)
                sizes[name] = size
        mine = chosen(field)
        cells = [f"{'*' if name == mine else ' '}{name} {statistics.median(times[name]):.3f}/{sizes[name] / 1e6:.1f}"
                 for name in ways]
        print(f"{field.name:22} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
