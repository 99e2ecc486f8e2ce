"""Sum up libFuzzer logs of fuzz/run.sh: executions, exec/s, coverage, findings.

    python fuzz/campaign_summary.py LOG...
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

FINDINGS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "Uncaught Python exception",
            "ERROR: libFuzzer", "SUMMARY: UndefinedBehaviorSanitizer", "==ERROR:", "deadly signal")


def parse(text: str) -> dict:
    """The figures of one libFuzzer log; the last status line's when the run stopped early."""
    stats = {k: int(v) for k, v in re.findall(r"^stat::(\w+):\s+(\d+)", text, re.MULTILINE)}
    status = re.findall(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)", text, re.MULTILINE)
    out = {"runs": stats.get("number_of_executed_units"), "exec_per_sec": stats.get("average_exec_per_sec"),
           "new_units": stats.get("new_units_added"), "peak_rss_mb": stats.get("peak_rss_mb"),
           "cov": None, "ft": None, "corpus": None, "done": bool(re.search(r"^Done \d+ runs", text, re.MULTILINE)),
           "findings": [line.strip() for line in text.splitlines() if any(f in line for f in FINDINGS)]}
    lines = [line for line in text.splitlines() if not line.startswith("INFO: Instrumenting")]
    first = next((i for i, line in enumerate(lines) if any(f in line for f in FINDINGS)), None)
    # the first finding with what precedes it (a Python traceback comes after its header line)
    out["excerpt"] = "" if first is None else "\n".join(lines[max(0, first - 2):first + 45])
    if status:
        runs, _, cov, ft, corp, eps = status[-1]
        out.update(cov=int(cov), ft=int(ft), corpus=int(corp))
        if out["runs"] is None:
            out["runs"], out["exec_per_sec"] = int(runs), int(eps)
    return out


def main() -> int:
    parts = [(path, parse(Path(path).read_text(errors="replace"))) for path in sys.argv[1:]]
    for path, p in parts:
        print(f"{path}: {p['runs']} executions, {p['exec_per_sec']} exec/s, cov {p['cov']} ft {p['ft']}, "
              f"corpus {p['corpus']}, {p['new_units']} new units, peak RSS {p['peak_rss_mb']} MB"
              f"{'' if p['done'] else ', did not finish'}")
        for line in p["findings"][:5]:
            print(f"    {line}")
    runs = sum(p["runs"] or 0 for _, p in parts)
    eps = sum(p["exec_per_sec"] or 0 for _, p in parts)
    cov = max((p["cov"] or 0 for _, p in parts), default=0)
    ft = max((p["ft"] or 0 for _, p in parts), default=0)
    print(f"total: {runs} executions, {eps} exec/s, cov {cov} ft {ft} (the best process's), "
          f"findings {sum(len(p['findings']) for _, p in parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
