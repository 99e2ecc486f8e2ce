"""ext/_sha1.pyx (ext/sha1.h): SHA-1 of many short rows at once, for Community ID."""
import numpy as np

HAVE_SHA_EXTENSIONS: bool

def sha1_rows(rows: np.ndarray, digests: np.ndarray, use_sha: bool | None = None) -> None: ...
