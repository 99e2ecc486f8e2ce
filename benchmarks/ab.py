"""Before and after: `fastflow process` of two commits on the same captures, interleaved, in CPU time.

    .venv/bin/python benchmarks/ab.py --base REV [--runs 7] CAPTURE... [-- PROCESS_OPTIONS...]

REV is checked out into a git worktree under benchmarks/out/ab-REV/ and its extensions built there (reused
while it exists); the working tree is the other side. Each capture is processed by both, one after the other,
--runs times (round-robin, so load changes on a shared machine hit both alike), each run in a fresh child
process as the command line runs it. For each side it prints the median user + system CPU seconds of the
child (os.wait4: more stable than wall time when other jobs share the cores), the median wall seconds, the
largest peak RSS, and the CPU ratio base / working tree (above 1: the working tree is faster), of the medians and
of the minima (other jobs on the machine only ever add time, so the fastest run of each side is the least
disturbed; on a busy machine the medians of a few runs swing by 15%, the minima much less). Both outputs
of the last run are read back and compared (every column); a difference is reported and the exit code is 1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from run import compile_bytecode  # benchmarks/run.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "out")


def base_tree(rev: str) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    tree = os.path.join(OUT, f"ab-{commit}")
    if not os.path.isdir(tree):
        os.makedirs(OUT, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, commit], cwd=ROOT, check=True)
    if not any(name.startswith("_decode") and name.endswith(".so") for name in os.listdir(os.path.join(tree, "fastflow"))):
        print(f"ab: building {commit}'s extensions in {tree}", file=sys.stderr)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                       stdout=subprocess.DEVNULL)
    return tree


def run_once(tree: str, capture: str, output: str, options: list[str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, peak RSS MB) of one `python -m fastflow process` run from `tree`."""
    env = dict(os.environ, PYTHONPATH=tree)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "fastflow", "process", capture, "-o", output, "-q",
                              "--overwrite", *options], env=env, cwd=OUT)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):      # 1: a damaged capture, processed as far as it goes
        sys.exit(f"ab: {tree} exited {code} on {capture}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss // 1024


def same_table(a: str, b: str) -> bool:
    """Whether two Parquet files hold equal tables, read in a child: Linux keeps a process's RSS high-water
    mark across exec, so tables read here would become the floor of every later run's peak RSS."""
    check = ("import sys, pyarrow.parquet as pq\n"
             "sys.exit(0 if pq.read_table(sys.argv[1]).equals(pq.read_table(sys.argv[2])) else 3)")
    code = subprocess.run([sys.executable, "-c", check, a, b]).returncode
    if code not in (0, 3):
        sys.exit(f"ab: could not compare {a} and {b}")
    return code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("captures", nargs="+")
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    sides = {"base": base_tree(args.base), "working tree": ROOT}
    for tree in sides.values():
        compile_bytecode(tree)
    differ = False
    for capture in args.captures:
        cpu = {side: [] for side in sides}
        wall = {side: [] for side in sides}
        rss = dict.fromkeys(sides, 0)
        outputs = {side: os.path.join(OUT, f"ab-{i}.parquet") for i, side in enumerate(sides)}
        for _ in range(args.runs):
            for side, tree in sides.items():
                c, w, r = run_once(tree, os.path.abspath(capture), outputs[side], options)
                cpu[side].append(c)
                wall[side].append(w)
                rss[side] = max(rss[side], r)
        print(f"{capture} ({args.runs} runs each, interleaved; options: {' '.join(options) or 'none'})")
        for side in sides:
            label = f"{side} ({args.base})" if side == "base" else side
            print(f"  {label:24s} CPU {statistics.median(cpu[side]):.3f} s  wall {statistics.median(wall[side]):.3f} s"
                  f"  peak RSS {rss[side]} MB  CPU runs {', '.join(f'{x:.2f}' for x in cpu[side])}")
        print(f"  CPU ratio base / working tree: {statistics.median(cpu['base']) / statistics.median(cpu['working tree']):.3f}"
              f" (medians), {min(cpu['base']) / min(cpu['working tree']):.3f} (minima)")
        if not same_table(outputs["base"], outputs["working tree"]):
            print("  the flows tables DIFFER")
            differ = True
        for path in outputs.values():
            os.remove(path)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
