# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Zeek's TCP connection state machine, run connection by connection without the GIL.

Zeek decides conn_state, history, orig_bytes/resp_bytes and duration packet by packet from per-endpoint
state (TCPSessionAdapter.cc, TCP_Endpoint.cc, Conn.cc, conn/main.zeek). Those decisions depend on the
order of events inside a connection, so this stage is a sequential pass over each connection's segments
(grouped by connections.py, frame order inside) rather than numpy logic. Names follow Zeek's source so
that each function can be read beside its Zeek counterpart; docs/zeek.md lists the rules and deviations.

The pass never raises: running out of memory for the history text comes back as a status code.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport realloc, free

import numpy as np
cimport numpy as cnp

from zeek_tcp cimport *

cnp.import_array()

STATE_NAMES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")
CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")

STATUS_OK = ST_OK
STATUS_NO_MEMORY = ST_NO_MEMORY


cdef int run(Py_ssize_t n_conns, const int64_t *offsets, const uint16_t *flags, const uint32_t *seq,
             const uint32_t *ack, const uint32_t *length, const uint16_t *window, const int64_t *ts,
             const uint8_t *from_first, const uint8_t *bad_checksum, const uint8_t *port_flip,
             uint8_t *analysis, uint8_t *orig_is_first, uint8_t *state_code, uint8_t *orig_state,
             uint8_t *resp_state, uint64_t *orig_size, uint64_t *resp_size, int64_t *last_time,
             int64_t *hist_offsets, Text *h) noexcept nogil:
    cdef Conn c
    cdef Py_ssize_t ci, i, j, start, end
    cdef int k
    cdef bint flip
    cdef uint16_t f0
    cdef Endpoint *o
    cdef Endpoint *r
    hist_offsets[0] = 0
    for ci in range(n_conns):
        start = offsets[ci]
        end = offsets[ci + 1]
        reset_conn(&c)
        # IPBasedAnalyzer::NewConn with TCPAnalyzer::WantConnection: anything but a pure SYN first may
        # flip by ports; Zeek >= 5.1 also flips a SYN-ACK-first connection once ACKs or data follow it.
        f0 = flags[start]
        flip = False
        if not ((f0 & SYN) and not (f0 & ACK)):
            flip = port_flip[ci] != 0
            if not flip and (f0 & SYN) and (f0 & ACK):
                j = start + 1
                while j < end and (flags[j] & (SYN | ACK)) == (SYN | ACK):
                    j += 1
                flip = j < end and (flags[j] & (SYN | RST)) == 0
        if flip:
            flip_roles(&c, h)
        c.last_time = ts[start]     # a Session starts with start_time = last_time = its first packet's
        for i in range(start, end):
            k = 0 if from_first[i] else 1
            if bad_checksum[i]:
                # TCPAnalyzer::ValidateChecksum: counted as C/c, then the packet goes no further
                scaled_history(&c, k, b'C', &c.ep[k].chk_cnt, &c.ep[k].chk_thresh, h)
                continue
            process(&c, k, flags[i], seq[i], ack[i], length[i], window[i], ts[i], &analysis[i], h)
        o = &c.ep[c.orig]
        r = &c.ep[1 - c.orig]
        orig_is_first[ci] = c.orig == 0
        orig_state[ci] = o.state
        resp_state[ci] = r.state
        orig_size[ci] = endpoint_size(o, r)
        resp_size[ci] = endpoint_size(r, o)
        last_time[ci] = c.last_time
        if h.failed:
            return ST_NO_MEMORY
        state_code[ci] = conn_state(o, r, orig_size[ci], resp_size[ci], h.data + hist_offsets[ci],
                                    h.len - hist_offsets[ci])
        hist_offsets[ci + 1] = h.len
    return ST_OK


def zeek_tcp(const int64_t[::1] offsets not None, const uint16_t[::1] flags not None,
             const uint32_t[::1] seq not None, const uint32_t[::1] ack not None,
             const uint32_t[::1] length not None, const uint16_t[::1] window not None,
             const int64_t[::1] ts not None, const uint8_t[::1] from_first not None,
             const uint8_t[::1] bad_checksum not None, const uint8_t[::1] port_flip not None):
    """Run the state machine over segments grouped by connection.

    offsets: connection k owns rows offsets[k]:offsets[k+1] (frame order inside); length: the payload
    length by the IP length fields (Zeek's); from_first: the row's sender sent the connection's first
    packet; bad_checksum: the row failed checksum verification (Zeek drops it after noting C); port_flip (per connection): Zeek's port heuristic would
    flip a connection that does not start with a pure SYN. Returns (status, dict of arrays)."""
    cdef Py_ssize_t n_conns = offsets.shape[0] - 1
    cdef Py_ssize_t n = flags.shape[0]
    cdef Text h
    cdef int status
    if n_conns < 0 or offsets[n_conns] != n or seq.shape[0] != n or ack.shape[0] != n \
            or length.shape[0] != n or window.shape[0] != n or ts.shape[0] != n or from_first.shape[0] != n \
            or bad_checksum.shape[0] != n \
            or port_flip.shape[0] != n_conns:
        raise ValueError("zeek_tcp: column lengths disagree")
    out = {
        "analysis": np.zeros(n, np.uint8),
        "orig_is_first": np.zeros(n_conns, np.uint8),
        "conn_state": np.zeros(n_conns, np.uint8),
        "orig_state": np.zeros(n_conns, np.uint8),
        "resp_state": np.zeros(n_conns, np.uint8),
        "orig_size": np.zeros(n_conns, np.uint64),
        "resp_size": np.zeros(n_conns, np.uint64),
        "last_time": np.zeros(n_conns, np.int64),
        "history_offsets": np.zeros(n_conns + 1, np.int64),
    }
    cdef uint8_t[::1] analysis = out["analysis"]
    cdef uint8_t[::1] orig_is_first = out["orig_is_first"]
    cdef uint8_t[::1] state_code = out["conn_state"]
    cdef uint8_t[::1] orig_state = out["orig_state"]
    cdef uint8_t[::1] resp_state = out["resp_state"]
    cdef uint64_t[::1] orig_size = out["orig_size"]
    cdef uint64_t[::1] resp_size = out["resp_size"]
    cdef int64_t[::1] last_time = out["last_time"]
    cdef int64_t[::1] hist_offsets = out["history_offsets"]
    h.data = NULL
    h.len = 0
    h.cap = 0
    h.failed = False
    if n_conns == 0:
        out["history_data"] = b""
        return ST_OK, out
    try:
        with nogil:
            status = run(n_conns, &offsets[0], &flags[0], &seq[0], &ack[0], &length[0], &window[0], &ts[0],
                         &from_first[0], &bad_checksum[0], &port_flip[0], &analysis[0], &orig_is_first[0], &state_code[0],
                         &orig_state[0], &resp_state[0], &orig_size[0], &resp_size[0], &last_time[0],
                         &hist_offsets[0], &h)
        out["history_data"] = h.data[:h.len] if status == ST_OK and h.len else b""
    finally:
        free(h.data)
    return status, out
