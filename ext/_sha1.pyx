# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""SHA-1 of many short rows at once, for Community ID (fastflow/community_id.py); the code is in sha1.h.

hashlib costs a Python call, a hash object and a bytes object per row: with one Community ID per flow, that
was the largest per-flow cost of building the flows table."""
from libc.stdint cimport uint8_t

cdef extern from "sha1.h" nogil:
    int ff_sha1_cpu_has_sha()
    void ff_sha1_rows(const uint8_t *rows, size_t n, size_t length, uint8_t *digests, int use_sha)

#: whether this CPU has the x86 SHA extensions (then they are used unless use_sha=False)
HAVE_SHA_EXTENSIONS = bool(ff_sha1_cpu_has_sha())


def sha1_rows(const uint8_t[:, ::1] rows, uint8_t[:, ::1] digests, use_sha=None):
    """digests[i] = SHA-1(rows[i]) for every row; digests has shape (len(rows), 20). use_sha=False forces the
    portable code (tests compare both)."""
    if digests.shape[0] != rows.shape[0] or digests.shape[1] != 20:
        raise ValueError(f"digests has shape ({digests.shape[0]}, {digests.shape[1]}), "
                         f"expected ({rows.shape[0]}, 20)")
    cdef int sha = HAVE_SHA_EXTENSIONS if use_sha is None else (bool(use_sha) and HAVE_SHA_EXTENSIONS)
    cdef size_t n = rows.shape[0], length = rows.shape[1]
    cdef uint8_t empty = 0
    if n == 0:
        return
    # a (n, 0) view has no element to take the address of: every row is then b""
    with nogil:
        ff_sha1_rows(&rows[0, 0] if length else &empty, n, length, &digests[0, 0], sha)
