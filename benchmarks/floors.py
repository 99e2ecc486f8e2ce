"""The costs no program in fastflow's stack can avoid on a capture, measured beside `fastflow process` itself.

    .venv/bin/python benchmarks/floors.py CAPTURE [--runs 5] [--target-pps 5000000]

Everything runs pinned to one core (taskset -c 0), round-robin over --runs rounds, each in a fresh child:

- fastflow: `fastflow process CAPTURE -o flows.parquet`, wall time of the child;
- startup: a child that only imports what `fastflow process` imports (the interpreter, numpy, pyarrow.parquet,
  fastflow's modules) and exits, wall time;
- map: the capture mapped 16 MB at a time (as fastflow's Source does) and one byte of every 4 KiB page read,
  timed inside a child (its interpreter start not counted): what the kernel charges to make every page of the
  file readable, whatever reads it afterwards;
- write: fastflow's own flows table of the capture (made once beforehand, read into memory untimed) written
  again by pyarrow, timed inside a child around the write alone: with pyarrow's defaults
  (`pq.write_table(table, path)`) and with fastflow's choices (write.ParquetStream, as `fastflow process`
  writes it). The smaller of the two is the floor: the flows file has to be written, and pyarrow is the
  writer fastflow is built on.

The sum startup + map + write is a lower bound on `fastflow process` on one core in this stack: it leaves out
decoding and the TCP logic entirely. The script prints it beside the end-to-end time that --target-pps
packets/s would need, and what is left of that budget for decoding and connection tracking.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from run import ROOT, compile_bytecode, measure, pinned  # benchmarks/run.py, beside this file

IMPORTS = "import numpy, pyarrow.parquet, fastflow, fastflow.cli, fastflow.pipeline, fastflow.write"

# one byte of every page of the file, window by window; no numpy, so that the interpreter's start is small
MAP = r"""
import mmap, os, sys, time
path = sys.argv[1]
window = 16 << 20
size = os.path.getsize(path)
start = time.perf_counter()
with open(path, "rb") as f:
    for offset in range(0, size, window):
        m = mmap.mmap(f.fileno(), min(window, size - offset), offset=offset, access=mmap.ACCESS_READ)
        m.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(m)
        bytes(view[::4096])
        view.release()
        m.close()
print(time.perf_counter() - start)
"""

WRITE = r"""
import os, sys, time
import pyarrow.parquet as pq
from fastflow.write import ParquetStream
source, out, how = sys.argv[1:4]
table = pq.read_table(source).combine_chunks()
start = time.perf_counter()
if how == "defaults":
    pq.write_table(table, out)
else:
    stream = ParquetStream(out, table.schema)
    for offset in range(0, table.num_rows, 1 << 14):    # the flows come in tables of 16 Ki rows
        stream.write(table.slice(offset, 1 << 14))
    stream.commit()
print(time.perf_counter() - start)
os.remove(out)
"""


def timed_inside(cmd: list[str], out: str) -> float:
    """Run cmd (it prints its own seconds as its last line) and return them."""
    o = measure(pinned(cmd, 1), 600, stdout_path=out)
    if o.status != "ok":
        sys.exit(f"floors: {' '.join(cmd[:3])}: {o.status}")
    with open(out) as f:
        return float(f.read().split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target-pps", type=float, default=5e6)
    args = parser.parse_args()
    py = sys.executable
    compile_bytecode(ROOT)
    with tempfile.TemporaryDirectory(prefix="fastflow-floors-") as tmp:
        flows = os.path.join(tmp, "flows.parquet")
        summary = os.path.join(tmp, "summary.json")
        process = [py, "-m", "fastflow", "process", args.capture, "-o", flows, "-q", "--overwrite"]
        subprocess.run([*process, "--summary-json", summary], check=True, cwd=ROOT)
        with open(summary) as f:
            counts = json.load(f)["counts"]
        packets, rows = counts["packets"], counts["connections"]
        with open(args.capture, "rb", buffering=0) as f:    # from the page cache from now on
            while f.read(1 << 20):
                pass
        printed = os.path.join(tmp, "stdout.txt")
        again = os.path.join(tmp, "again.parquet")
        runs: dict[str, list[float]] = {}
        for _ in range(args.runs):
            for name, take in (
                    ("fastflow process", lambda: measure(pinned(process, 1), 600).seconds),
                    ("startup", lambda: measure(pinned([py, "-c", IMPORTS], 1), 60).seconds),
                    ("map", lambda: timed_inside([py, "-c", MAP, args.capture], printed)),
                    ("write, pyarrow defaults", lambda: timed_inside([py, "-c", WRITE, flows, again, "defaults"],
                                                                     printed)),
                    ("write, ParquetStream", lambda: timed_inside([py, "-c", WRITE, flows, again, "stream"],
                                                                  printed))):
                runs.setdefault(name, []).append(take())
    median = {name: statistics.median(values) for name, values in runs.items()}
    print(f"{args.capture}: {packets:,} packets, {rows:,} flows rows; one core (taskset -c 0), "
          f"{args.runs} runs each, round-robin")
    print(f"| what | median s | fastest s | runs (s) |\n|---|---:|---:|---|")
    for name, values in runs.items():
        print(f"| {name} | {median[name]:.3f} | {min(values):.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    floor = median["startup"] + median["map"] + min(median["write, pyarrow defaults"],
                                                    median["write, ParquetStream"])
    budget = packets / args.target_pps
    print(f"\nfloor (startup + map + the faster write, medians): {floor:.3f} s; "
          f"{args.target_pps / 1e6:g} M packets/s end to end would need {budget:.3f} s, "
          f"which leaves {budget - floor:.3f} s ({(budget - floor) / packets * 1e9:.0f} ns a packet) "
          f"for decoding and TCP; fastflow process took {median['fastflow process']:.3f} s, "
          f"{median['fastflow process'] - floor:.3f} s above the floor "
          f"({(median['fastflow process'] - floor) / packets * 1e9:.0f} ns a packet)")


if __name__ == "__main__":
    main()
