"""The fuzz harness (fuzz/, docs/fuzzing.md): a short campaign under ASan + UBSan + LSan ends clean, and the
inputs it once crashed on (fuzz/crashes-found/) run clean."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
sys.path.insert(0, str(FUZZ))

#: seconds of fuzzing (libFuzzer's -max_total_time, the seeds' first pass included); the sanitized build
#: before it takes about 26 s on 2 cores
CAMPAIGN_SECONDS = 90
FOUND = sorted(FUZZ.glob("crashes-found/*.fuzz"))


@pytest.mark.parametrize("path", FOUND, ids=[p.name for p in FOUND])
def test_found_crashes_stay_fixed(path):
    """Each saved reproducer, replayed on the path and with the options its header gives (normal build):
    nothing but fastflow's own errors may come out (capture_cases.run_case lets only those through)."""
    import capture_cases

    case = capture_cases.build_case(path.read_bytes())
    capture_cases.run_case(case)


def _toolchain_missing() -> str | None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the sanitized fuzz build needs Linux x86_64 (atheris's wheels), not {platform.platform()}"
    if shutil.which("clang") is None:
        return "clang is not installed (scripts/setup.sh --test installs it: apt-get install clang)"
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "atheris is not installed (scripts/setup.sh --test installs it: pip install atheris)"
    return None


def test_short_fuzz_campaign(tmp_path):
    """fuzz/run.sh builds the sanitized extensions and fuzzes for CAMPAIGN_SECONDS: it must end clean (no
    crash, no uncaught exception, no sanitizer or leak report, no timeout), with the sanitized, coverage-
    instrumented extensions loaded and every tier of paths run."""
    reason = _toolchain_missing()
    if reason:
        pytest.skip(reason)
    from campaign_summary import parse

    crashes, logs = tmp_path / "crashes", tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k not in ("FUZZ_KNOWN", "FUZZ_EXACT_PATH")}
    env["PYTHON"] = sys.executable      # the interpreter whose atheris was found above
    done = subprocess.run(["bash", str(FUZZ / "run.sh"), "--time", str(CAMPAIGN_SECONDS),
                           "--corpus", str(tmp_path / "corpus"), "--crashes", str(crashes), "--logs", str(logs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=CAMPAIGN_SECONDS + 600,
                          check=False)
    log = (logs / "job0.log").read_text(errors="replace") if (logs / "job0.log").exists() else ""
    stats = parse(log)
    tail = "\n".join(line for line in (log or done.stderr).splitlines()
                     if not line.startswith("INFO: Instrumenting"))[-3000:]
    found = sorted(p.name for p in crashes.iterdir()) if crashes.exists() else []
    assert done.returncode == 0 and not found, (
        f"fuzz/run.sh exit {done.returncode}, reproducers {found} in {crashes} (replay: bash fuzz/run.sh "
        f"--repro FILE; describe: python fuzz/fuzz_capture.py --explain FILE)\n"
        f"{stats['excerpt'] or done.stderr[-3000:]}")
    assert stats["done"] and not stats["findings"], tail
    assert stats["runs"] >= 1000, f"only {stats['runs']} executions in {CAMPAIGN_SECONDS} s\n{tail}"
    # the extensions came from build/fuzz with libFuzzer's counters (_decode, _tcpflows, _dgram at import)
    modules = re.search(r"INFO: Loaded (\d+) modules", log)
    assert modules and int(modules.group(1)) >= 3, tail
    assert "fuzz_capture: fastflow from" in log and "WITHOUT the sanitizers" not in log, tail
    by_path = re.findall(r"^fuzz_capture: \d+ executions by path: (.*)$", log, re.MULTILINE)
    assert by_path, tail
    ran = set(re.findall(r"([a-z-]+) \d+ \(", by_path[-1]))
    assert {"decode", "engines"} <= ran and ran & {"stream", "stream-small-limits", "stream-threaded",
                                                   "process-vs-stream"}, by_path[-1]
