"""Transparent huge pages as the kernel reports them for this process: which mappings asked for them."""
from __future__ import annotations

from pathlib import Path

import pytest


def thp_eligible(address: int) -> bool | None:
    """The kernel's THPeligible for the mapping holding address (/proc/self/smaps); None where it says none."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    inside = False
    for line in smaps.read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    return None


def _thp_mode() -> str | None:
    try:
        modes = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return modes[modes.index("[") + 1:modes.index("]")] if "[" in modes else None


requires_thp_madvise = pytest.mark.skipif(
    _thp_mode() != "madvise",
    reason="transparent huge pages are not in madvise mode here (then eligibility does not follow MADV_HUGEPAGE)")
