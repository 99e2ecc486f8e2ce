"""CPU time of the streaming path on adversarial inputs, at growing sizes: does it stay linear?

    python3 benchmarks/adversarial.py                      # every case at n, 2n, 4n, 8n (n: the test's size x 4)
    python3 benchmarks/adversarial.py --scale 40 --steps 3 --cases lone_syns_spilled,held_back
    python3 benchmarks/adversarial.py --default-limits     # the engine's and writer's own memory limits

The cases are those of tests/test_adversarial.py (LINEAR_CASES: its docstrings say what each capture holds),
written to a scratch folder (benchmarks/out/adversarial, or --dir), each run three times in this process
(median of process_time over both threads, the rows checked). Per size: packets, CPU seconds, microseconds a
packet, and the time relative to the smallest size divided by the size ratio (1.0: linear; a quadratic path
doubles it with every doubling). The machine is shared: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastflow import pipeline, tcpflows  # noqa: E402


def load_cases():
    spec = importlib.util.spec_from_file_location("test_adversarial", ROOT / "tests" / "test_adversarial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--scale", type=float, default=4.0, help="n = the test's n times this (default 4)")
    parser.add_argument("--steps", type=int, default=4, help="sizes n, 2n, 4n, ... (default 4: up to 8n)")
    parser.add_argument("--runs", type=int, default=3, help="runs per size, the median is kept (default 3)")
    parser.add_argument("--default-limits", action="store_true",
                        help="keep MAX_IN_MEMORY / WAIT_IN_MEMORY / batch size as shipped, not the test's")
    parser.add_argument("--dir", type=Path, default=ROOT / "benchmarks" / "out" / "adversarial")
    args = parser.parse_args(argv)
    t = load_cases()
    names = args.cases.split(",") if args.cases else list(t.LINEAR_CASES)
    unknown = [name for name in names if name not in t.LINEAR_CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(t.LINEAR_CASES)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"{'case':<22} {'packets':>10} {'cpu s':>8} {'us/pkt':>7} {'vs linear':>9}  rows")
    for name in names:
        make, n, expected_rows, settings = t.LINEAR_CASES[name]
        settings = {} if args.default_limits else dict(settings)
        batch_size = settings.pop("batch_size", 1 << 18)
        saved = {}
        for key, value in settings.items():
            module = tcpflows if key == "MAX_IN_MEMORY" else pipeline
            saved[key] = (module, getattr(module, key))
            setattr(module, key, value)
        try:
            base = None
            for step in range(args.steps):
                size = int(n * args.scale) << step
                capture = t.write_capture(args.dir / f"{name}-{size}.pcap", make(size))
                runs = []
                for _ in range(args.runs):
                    cpu, rows = t.cpu_seconds(capture, batch_size)
                    if rows != expected_rows(size):
                        sys.exit(f"{name} at {size} packets: {rows} rows, expected {expected_rows(size)}")
                    runs.append(cpu)
                capture.unlink()
                cpu = statistics.median(runs)
                base = base or (size, cpu)
                relative = (cpu / base[1]) / (size / base[0])
                print(f"{name:<22} {size:>10,} {cpu:>8.3f} {cpu / size * 1e6:>7.2f} {relative:>9.2f}  {rows:,}",
                      flush=True)
        finally:
            for key, (module, value) in saved.items():
                setattr(module, key, value)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
