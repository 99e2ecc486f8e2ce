"""ext/_tcpstate.pyx: Zeek's TCP state machine over segments grouped by connection (whole capture), no GIL."""
import numpy as np

STATE_NAMES: tuple[str, ...]
CONN_STATES: tuple[str, ...]
STATUS_OK: int
STATUS_NO_MEMORY: int

def zeek_tcp(offsets: np.ndarray, flags: np.ndarray, seq: np.ndarray, ack: np.ndarray, length: np.ndarray,
             window: np.ndarray, ts: np.ndarray, from_first: np.ndarray, bad_checksum: np.ndarray,
             port_flip: np.ndarray) -> tuple[int, dict[str, np.ndarray | bytes]]: ...
