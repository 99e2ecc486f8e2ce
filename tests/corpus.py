"""Access to ../shared/corpus (real captures with tshark and Zeek references), shared by the tests."""
from __future__ import annotations

import csv
import gzip
import ipaddress
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from fastflow.decode import CaptureReader
from fastflow.source import Source

CORPUS = Path(os.environ.get("FASTFLOW_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
CAPTURES = CORPUS / "captures"
TSHARK_REF = CORPUS / "reference" / "tshark"
ZEEK_REF = CORPUS / "baselines" / "zeek"

requires_corpus = pytest.mark.skipif(not CAPTURES.is_dir(), reason=f"shared corpus not found at {CORPUS}")


def capture_names() -> list[str]:
    return sorted(p.name for p in CAPTURES.iterdir()) if CAPTURES.is_dir() else []


def decode_all(path, filter_expr=None, batch_size=1 << 16):
    """Every packet row of a capture as one dict of arrays, and the reader (for counts and damage)."""
    with Source(str(path)) as source:
        reader = CaptureReader(source, filter_expr=filter_expr, batch_size=batch_size)
        parts = list(reader.batches())
    if not parts:
        return {}, reader
    return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}, reader


def tshark_rows(name: str) -> list[dict]:
    with gzip.open(TSHARK_REF / f"{name}.tcp.csv.gz", "rt", newline="") as f:
        return list(csv.DictReader(f))


def format_addr(raw: np.ndarray, version: int) -> str:
    b = bytes(raw)
    return str(ipaddress.IPv4Address(b[12:])) if version == 4 else str(ipaddress.IPv6Address(b))


def default_sigint() -> None:
    """preexec_fn for a child the test interrupts with SIGINT: the terminal's default disposition. A shell
    starts a background job (CI run with &) with SIGINT ignored, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
