"""ext/_decode.pyx: pcap / pcapng records decoded into columns (link, IP, TCP/UDP/ICMP headers), no GIL."""
from typing import Callable

import numpy as np

COLUMN_NAMES: tuple[str, ...]
#: (name, dtype, shape of one row) of each column
COLUMN_LAYOUT: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]

class Decoder:
    """Incremental decoder: feed() consumes whole records from successive byte blocks."""
    capacity: int
    n: int
    fmt: int
    frames: int
    filtered: int
    consumed: int
    sections: int
    stop: int
    stop_offset: int
    bad_linktype: int
    linktypes: list[int]
    bad_length_records: int
    bad_length_offset: int
    def __init__(self, capacity: int = ..., filter_expr: str | None = None, verify_checksums: bool = False,
                 allocate: Callable[[int], dict[str, np.ndarray]] | None = None) -> None: ...
    def take(self) -> dict[str, np.ndarray]: ...
    @property
    def status_counts(self) -> list[int]: ...
    @property
    def error_message(self) -> str: ...
    def feed(self, data: bytes | memoryview | np.ndarray, eof: bool = False) -> int: ...

def check_filter(expr: str, linktype: int = ...) -> str | None: ...
def batch_rows(status: np.ndarray, pflags: np.ndarray, ts: np.ndarray, previous: int,
               keep: np.ndarray | None = None) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, int]: ...
