"""Time the streaming TCP engine's feed() alone: decode a capture's first N packets once, then feed their TCP
rows to a fresh engine (no spill file) three times and print the median.

    python3 benchmarks/engine_feed.py CAPTURE [--packets N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastflow.decode import CaptureReader, Status  # noqa: E402
from fastflow.pipeline import SEGMENT_INPUT_COLUMNS, add_network_time  # noqa: E402
from fastflow.source import Source  # noqa: E402
from fastflow.tcpflows import TcpFlows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    parser.add_argument("--packets", type=int, default=1_000_000, help="decode about this many packets")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batches, decoded = [], 0
    with Source(args.capture) as source:
        network_time = np.iinfo(np.int64).min
        for batch in CaptureReader(source).batches():
            network_time = add_network_time(batch, network_time)
            keep = batch["status"] == Status.TCP
            batches.append({k: np.ascontiguousarray(batch[k][keep]) for k in SEGMENT_INPUT_COLUMNS})
            decoded += len(batch["frame"])
            if decoded >= args.packets:
                break
    times = []
    for _ in range(args.runs):
        engine = TcpFlows(max_in_memory=None)
        started = time.perf_counter()
        for batch in batches:
            engine.feed(batch)
        times.append(time.perf_counter() - started)
        still_open = engine.open_count
        engine.finish()
        engine.drain_packed()
    segments = sum(len(b["frame"]) for b in batches)
    median = statistics.median(times)
    print(f"{segments} TCP segments, {still_open} open at the end; feed median of {args.runs}: "
          f"{median:.3f} s, {median / segments * 1e9:.0f} ns a segment")


if __name__ == "__main__":
    main()
