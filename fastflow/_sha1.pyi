"""ext/_sha1.pyx (ext/sha1.h): Community IDs in C, and SHA-1 of many short rows at once."""
import numpy as np

HAVE_SHA_EXTENSIONS: bool

def sha1_rows(rows: np.ndarray, digests: np.ndarray, use_sha: bool | None = None) -> None: ...

def community_ids(orig_addr: np.ndarray, resp_addr: np.ndarray, ip_version: np.ndarray, ip_proto: np.ndarray,
                  orig_p: np.ndarray, resp_p: np.ndarray, icmp4_counterpart: np.ndarray,
                  icmp6_counterpart: np.ndarray, port_protos: np.ndarray, seed: int, out: np.ndarray,
                  use_sha: bool | None = None) -> None: ...
