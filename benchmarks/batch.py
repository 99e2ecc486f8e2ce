"""Time `fastflow batch` against `fastflow process` on the same packets.

    python3 benchmarks/batch.py [--input FILE] [--files 10] [--runs 3]

The input (default: the benchmark suite's real 1 M-packet loopback capture, benchmarks/data/real-nginx-*)
is split with editcap into --files pieces of equal packet count, cached in benchmarks/data/. Then, round-robin
--runs times, each a child process whose wall time and peak RSS (ru_maxrss from os.wait4) are taken:

- process:        fastflow process INPUT (1 core, taskset -c 0)
- batch -j 1:     fastflow batch PIECES --flush -j 1 into a fresh dataset (1 core)
- batch -j 2:     the same, -j 2 on 2 cores: one stream split in two parts by address/port pair
- batch 2 streams -j 2: the pieces twice (hard links in two folders, two streams), on 2 cores; its packet
                  rate counts both copies

It prints a markdown table: medians, packets/s, and each batch run's time as a ratio to process's.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = os.path.join(ROOT, ".venv", "bin", "python") if os.path.exists(os.path.join(ROOT, ".venv")) else sys.executable


def timed(cmd: list[str], cores: str) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in KiB, exit code of cmd pinned to cores."""
    started = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", cores] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {code}: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss, code


def packets_of(path: str) -> int:
    out = subprocess.run(["capinfos", "-c", "-M", path], capture_output=True, text=True, check=True).stdout
    return int(out.split("Number of packets:")[1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", help="capture to split (default: benchmarks/data/real-nginx-*-1000000.pcap)")
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    capture = args.input or next(iter(sorted(glob.glob(os.path.join(HERE, "data", "real-nginx-*-1000000.pcap")))), None)
    if capture is None:
        sys.exit("no input: give --input, or run benchmarks/run.py first to make the real capture")
    packets = packets_of(capture)
    pieces = os.path.join(HERE, "data", f"split-{os.path.basename(capture)}-{args.files}")
    if not os.path.isdir(pieces):
        tmp = pieces + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        per = -(-packets // args.files)
        subprocess.run(["editcap", "-c", str(per), capture, os.path.join(tmp, "piece.pcap")], check=True)
        old = time.time() - 3600
        for name in os.listdir(tmp):
            os.utime(os.path.join(tmp, name), (old, old))
        os.rename(tmp, pieces)
    work = tempfile.mkdtemp(prefix="fastflow-batch-bench-")
    twice = os.path.join(work, "twice")
    for k in range(2):
        os.makedirs(os.path.join(twice, f"s{k}"))
        for name in os.listdir(pieces):
            os.link(os.path.join(pieces, name), os.path.join(twice, f"s{k}", name))
    fastflow = [PYTHON, "-m", "fastflow"]
    cases = {
        "process (1 core)": (lambda out: fastflow + ["process", "-q", capture, "-o", out + ".parquet"], "0", packets),
        "batch -j 1 (1 core)": (lambda out: fastflow + ["batch", "-q", "--flush", "-j", "1", pieces, "-o", out], "0",
                                packets),
        "batch -j 2 (2 cores)": (lambda out: fastflow + ["batch", "-q", "--flush", "-j", "2", pieces, "-o", out],
                                 "0,1", packets),
        "batch 2 streams -j 2 (2 cores)": (lambda out: fastflow + ["batch", "-q", "--flush", "-j", "2", twice, "-o",
                                                                   out], "0,1", 2 * packets),
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
    try:
        for run in range(args.runs):
            for name, (make, cores, _) in cases.items():
                out = os.path.join(work, f"out-{run}-{len(results[name])}")
                seconds, rss, _ = timed(make(out), cores)
                results[name].append((seconds, rss))
                shutil.rmtree(out, ignore_errors=True)
                with_suffix = out + ".parquet"
                if os.path.exists(with_suffix):
                    os.unlink(with_suffix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(s for s, _ in results["process (1 core)"])
    print(f"input: {capture} ({packets} packets), {args.files} pieces; medians of {args.runs} runs\n")
    print("| run | seconds | packets/s | peak RSS | time / process |")
    print("|---|---|---|---|---|")
    for name, (_, _, count) in cases.items():
        med = statistics.median(s for s, _ in results[name])
        rss = max(r for _, r in results[name])
        print(f"| {name} | {med:.2f} | {count / med / 1e6:.2f} M | {rss / 1024:.0f} MiB | {med / base:.2f} |")


if __name__ == "__main__":
    main()
