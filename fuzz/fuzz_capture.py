"""Fuzz harness (atheris / libFuzzer): the decoder and the whole flows path on arbitrary input bytes.

Run it through fuzz/run.sh, which builds the sanitized extensions (fuzz/build_sanitized.sh), preloads
atheris's ASan + libFuzzer runtime and sets the sanitizers' options; docs/fuzzing.md has the details. What
an input means and the paths it runs are in fuzz/capture_cases.py.

    python fuzz/fuzz_capture.py [LIBFUZZER_FLAGS] CORPUS_DIR... | FILE...
    python fuzz/fuzz_capture.py --explain FILE [CAPTURE_OUT]   what FILE feeds fastflow (no sanitizers needed)
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import atheris

# Only fastflow's Python code gets atheris's bytecode coverage (the extensions get theirs from clang), and
# without atheris's comparison tracing: that calls `a == b` again on numpy arrays and leaks the result array
# (atheris 3.0 _trace_cmp), which LeakSanitizer then reports on every input that compares arrays.
try:
    from atheris.import_hook import HookManager
    _instrumented = HookManager({"fastflow"}, set(), True, trace_dataflow=False)
except (ImportError, TypeError):   # another atheris: its public API (comparisons traced; leaks reported)
    _instrumented = atheris.instrument_imports(include=["fastflow"])
with _instrumented:
    import capture_cases as cases

    import fastflow

_STATS: dict[str, list] = {name: [0, 0.0] for name in cases.TIER}    # path -> [executions, seconds]
_RUNS = [0]


def _report() -> None:
    total = sum(n for n, _ in _STATS.values())
    seconds = sum(t for _, t in _STATS.values()) or 1e-9
    parts = ", ".join(f"{name} {n} ({100 * t / seconds:.0f}% of the time, {1000 * t / n:.1f} ms)"
                      for name, (n, t) in _STATS.items() if n)
    known = "".join(f"; known {name} let through {n} times" for name, n in cases.KNOWN_SEEN.items())
    print(f"fuzz_capture: {total} executions by path: {parts}{known}", file=sys.stderr, flush=True)


def TestOneInput(data: bytes) -> None:
    case = cases.build_case(data)
    started = time.perf_counter()
    try:
        cases.run_case(case)
    finally:
        entry = _STATS[case["path"]]
        entry[0] += 1
        entry[1] += time.perf_counter() - started
        _RUNS[0] += 1
        if (_RUNS[0] & (_RUNS[0] - 1)) == 0 and _RUNS[0] >= 1024 or _RUNS[0] % 100000 == 0:
            _report()


def _explain(path: str, out: str | None) -> None:
    """Print what a fuzz input (a crash file) feeds fastflow; write the capture bytes to `out`."""
    with open(path, "rb") as f:
        case = cases.build_case(f.read())
    shown = {k: v for k, v in case.items() if k != "bytes"}
    print(f"{path}: {len(case['bytes'])} capture bytes; {shown}")
    if out:
        with open(out, "wb") as f:
            f.write(case["bytes"])
        print(f"capture written to {out}")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--explain":
        _explain(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
        return
    with open("/proc/self/maps") as maps:
        sanitized = "asan_with_fuzzer" in maps.read()
    print(f"fuzz_capture: fastflow from {os.path.dirname(fastflow.__file__)}"
          f"{'' if sanitized else ' WITHOUT the sanitizers (run through fuzz/run.sh): Python coverage only'}",
          file=sys.stderr)
    # as the test suite: a warning (numpy overflow, a deprecation) is a finding, not noise
    warnings.simplefilter("error")
    cases.memoize_port_tables()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
