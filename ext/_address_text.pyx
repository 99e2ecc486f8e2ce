# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Addresses as text, in C: the flows table's orig_h / resp_h and the segments table's src / dst.

numpy formatted each distinct address through (rows, groups, characters) arrays found by dictionary-encoding
the column first: a tenth of a microsecond and more per address, and on a capture whose addresses are mostly
distinct (1.7 M flows of the benchmarks' scale input) the largest part of building the flows table. Written
here character by character, every row directly, in one pass without the GIL."""
import numpy as np
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t

cdef const char *HEX = b"0123456789abcdef"


cdef inline Py_ssize_t put_ipv4(uint8_t *out, const uint8_t *a) noexcept nogil:
    """Dotted quad of the last 4 bytes."""
    cdef Py_ssize_t p = 0
    cdef int i
    cdef unsigned v
    for i in range(4):
        if i:
            out[p] = c'.'
            p += 1
        v = a[12 + i]
        if v >= 100:
            out[p] = c'0' + v // 100
            p += 1
        if v >= 10:
            out[p] = c'0' + (v // 10) % 10
            p += 1
        out[p] = c'0' + v % 10
        p += 1
    return p


cdef inline Py_ssize_t put_ipv6(uint8_t *out, const uint8_t *a) noexcept nogil:
    """RFC 5952, as Python 3.11's ipaddress.IPv6Address prints it: lower-case hex groups without leading
    zeros, the first longest run of two or more zero groups as '::' (IPv4-mapped ones in hex too)."""
    cdef uint16_t g[8]
    cdef int j, k, best_start = 0, best_len = 0, shift
    cdef Py_ssize_t p = 0
    for j in range(8):
        g[j] = (a[2 * j] << 8) | a[2 * j + 1]
    j = 0
    while j < 8:
        if g[j] == 0:
            k = j
            while k < 8 and g[k] == 0:
                k += 1
            if k - j > best_len:
                best_len = k - j
                best_start = j
            j = k
        else:
            j += 1
    if best_len < 2:
        best_len = 0
    for j in range(8):
        if best_len and j == best_start:
            out[p] = c':'
            p += 1
            if j == 0:
                out[p] = c':'
                p += 1
        if best_len and best_start <= j < best_start + best_len:
            continue
        shift = 12
        while shift > 0 and (g[j] >> shift) == 0:
            shift -= 4
        while shift >= 0:
            out[p] = HEX[(g[j] >> shift) & 0xF]
            p += 1
            shift -= 4
        if j < 7:
            out[p] = c':'
            p += 1
    return p


def address_text(const uint8_t[:, ::1] raw not None, const uint8_t[::1] as_ipv4 not None):
    """Text of each 16-byte address (IPv4 mapped): dotted IPv4 where as_ipv4[i], RFC 5952 IPv6 elsewhere.
    Returns (offsets, data): an Arrow string array's int32 offsets (n + 1) and its characters (uint8)."""
    cdef Py_ssize_t n = raw.shape[0], i, p = 0
    if raw.shape[1] != 16:
        raise ValueError("address_text: addresses must be 16 bytes")
    if as_ipv4.shape[0] != n:
        raise ValueError("address_text: as_ipv4 must have one entry per address")
    if n > (2**31 - 1) // 39:
        raise ValueError("address_text: more addresses than int32 offsets can hold; pass them in parts")
    offsets = np.empty(n + 1, np.int32)
    data = np.empty(39 * n, np.uint8)      # the longest text: eight groups of four hex digits
    cdef int32_t[::1] off = offsets
    cdef uint8_t[::1] out = data
    off[0] = 0
    if n:
        with nogil:
            for i in range(n):
                if as_ipv4[i]:
                    p += put_ipv4(&out[p], &raw[i, 0])
                else:
                    p += put_ipv6(&out[p], &raw[i, 0])
                off[i + 1] = <int32_t>p
    return offsets, data[:p]
