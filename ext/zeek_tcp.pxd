# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Zeek's TCP state machine (TCPSessionAdapter.cc, TCP_Endpoint.cc, Conn.cc, conn/main.zeek) as inline
functions on a per-connection struct, shared by the whole-capture pass (_tcpstate.pyx) and the streaming
engine (_tcpflows.pyx). Names follow Zeek's source; docs/zeek.md lists the rules and deviations."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy, memset

cdef enum:
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    ACK = 0x10

# Zeek's TCP_ENDPOINT_* values (the order conn_state relies on)
cdef enum:
    INACTIVE = 0
    SYN_SENT = 1
    SYN_ACK_SENT = 2
    PARTIAL = 3
    ESTABLISHED = 4
    CLOSED = 5
    RESET = 6

# history bits (Session.h); the responder's are these shifted left by 16
cdef enum:
    HIST_SYN_PKT = 0x1
    HIST_FIN_PKT = 0x2
    HIST_RST_PKT = 0x4
    HIST_FIN_RST_PKT = 0x8
    HIST_DATA_PKT = 0x10
    HIST_ACK_PKT = 0x20
    HIST_MULTI_FLAG_PKT = 0x40

# per-segment analysis bits (fastflow's segment tags, docs/schema.md)
cdef enum:
    A_RETRANSMISSION = 1
    A_KEEPALIVE = 2
    A_ZERO_WINDOW = 4
    A_DUP_ACK = 8

cdef enum:
    TOO_LARGE_SEQ_DELTA = 1048576

cdef enum:
    CS_S0 = 0
    CS_S1
    CS_SF
    CS_REJ
    CS_S2
    CS_S3
    CS_RSTO
    CS_RSTR
    CS_RSTOS0
    CS_RSTRH
    CS_SH
    CS_SHR
    CS_OTH

cdef enum:
    ST_OK = 0
    ST_NO_MEMORY = 1

cdef struct Endpoint:        # widest fields first: one Endpoint per side of every open connection
    uint64_t hist_last_syn
    uint64_t hist_last_fin
    uint64_t hist_last_rst
    uint32_t start_seq
    uint32_t last_seq
    uint32_t ack_seq
    uint32_t seq_wraps
    uint32_t ack_wraps
    uint32_t fin_cnt
    uint32_t rxmt_cnt
    uint32_t rxmt_thresh
    uint32_t win0_cnt
    uint32_t win0_thresh
    uint32_t chk_cnt
    uint32_t chk_thresh
    # fastflow's dup-ACK test: the previous ACK this endpoint sent
    uint32_t last_ack
    uint16_t last_win
    uint8_t state
    uint8_t prev_state
    uint8_t did_close
    uint8_t sent_ack


cdef struct Conn:
    Endpoint ep[2]          # by sender: ep[0] sent the connection's first packet
    int orig                # index of the current originator
    uint32_t hist_seen
    int64_t last_time


cdef struct Text:
    char *data
    Py_ssize_t len
    Py_ssize_t cap
    bint failed


cdef inline void text_add(Text *t, char c) noexcept nogil:
    cdef char *grown
    if t.len == t.cap:
        grown = <char *>realloc(t.data, <size_t>(t.cap * 2 if t.cap else 16))
        if grown == NULL:
            t.failed = True
            return
        t.data = grown
        t.cap = t.cap * 2 if t.cap else 16
    t.data[t.len] = c
    t.len += 1


cdef inline void text_extend(Text *t, const char *s, Py_ssize_t n) noexcept nogil:
    """text_add of n characters: one check for room and one copy (a connection's history, appended to the
    engine's text as it finishes, took a call a character: 2.5% of a one-core run in perf)."""
    cdef Py_ssize_t cap = t.cap if t.cap else 16
    cdef char *grown
    if n <= 0:
        return
    if t.len + n > t.cap:
        while cap < t.len + n:
            cap *= 2
        grown = <char *>realloc(t.data, <size_t>cap)
        if grown == NULL:
            t.failed = True
            return
        t.data = grown
        t.cap = cap
    memcpy(t.data + t.len, s, <size_t>n)
    t.len += n


cdef inline char lower(char c) noexcept nogil:
    return c + 32 if c >= 65 and c <= 90 else c


cdef inline void set_state(Endpoint *e, int new_state) noexcept nogil:
    if new_state != e.state:
        e.prev_state = e.state
        e.state = new_state


cdef inline uint64_t full_seq(uint32_t seq, uint32_t wraps) noexcept nogil:
    return (<uint64_t>wraps << 32) | seq


cdef inline void update_last_seq_value(Endpoint *e, uint32_t seq) noexcept nogil:
    if seq < e.last_seq:
        e.seq_wraps += 1
    e.last_seq = seq


cdef inline void update_ack_seq_value(Endpoint *e, uint32_t seq) noexcept nogil:
    if seq < e.ack_seq:
        e.ack_wraps += 1
    e.ack_seq = seq


cdef inline void init_seqs(Endpoint *e, uint32_t start, uint32_t last) noexcept nogil:
    e.start_seq = start
    e.ack_seq = start
    e.last_seq = last


# --- history (Conn.cc / TCP_Endpoint.cc) ---------------------------------------------------------

cdef inline bint is_orig(Conn *c, int k) noexcept nogil:
    return c.orig == k


cdef inline bint check_history(Conn *c, int k, uint32_t mask, char code, Text *h) noexcept nogil:
    """Zeek's CheckHistory: add the letter the first time; True if it was seen before."""
    if not is_orig(c, k):
        mask <<= 16
        code = lower(code)
    if (c.hist_seen & mask) == 0:
        c.hist_seen |= mask
        text_add(h, code)
        return False
    return True


cdef inline void add_history(Conn *c, int k, char code, Text *h) noexcept nogil:
    text_add(h, code if is_orig(c, k) else lower(code))


cdef inline void scaled_history(Conn *c, int k, char code, uint32_t *counter, uint32_t *threshold,
                                Text *h) noexcept nogil:
    """Zeek's ScaledHistoryEntry: the letter again at 1, 10, 100, ... occurrences."""
    cdef uint32_t grown
    counter[0] += 1
    if counter[0] == threshold[0]:
        add_history(c, k, code, h)
        grown = threshold[0] * 10
        if grown <= threshold[0]:
            counter[0] = 0
        else:
            threshold[0] = grown


cdef inline void flip_roles(Conn *c, Text *h) noexcept nogil:
    # Connection::FlipRoles swaps the endpoints but not the history bits already seen, then adds '^'
    c.orig = 1 - c.orig
    text_add(h, b'^')


cdef inline void update_history(Conn *c, int k, uint16_t flags, uint64_t rel_seq, int64_t length,
                         Text *h) noexcept nogil:
    cdef Endpoint *e = &c.ep[k]
    cdef int bits = ((flags & SYN) != 0) + ((flags & FIN) != 0) + ((flags & RST) != 0)
    cdef char code
    if bits > 1:
        if (flags & FIN) and (flags & RST):
            check_history(c, k, HIST_FIN_RST_PKT, b'I', h)
        else:
            check_history(c, k, HIST_MULTI_FLAG_PKT, b'Q', h)
    elif bits == 1:
        if flags & SYN:
            code = b'H' if flags & ACK else b'S'
            if check_history(c, k, HIST_SYN_PKT, code, h) and rel_seq != e.hist_last_syn:
                add_history(c, k, code, h)
            e.hist_last_syn = rel_seq
        if flags & FIN:
            # a FIN's number is at the end of its data
            if check_history(c, k, HIST_FIN_PKT, b'F', h) and rel_seq + <uint64_t>length != e.hist_last_fin:
                add_history(c, k, b'F', h)
            e.hist_last_fin = rel_seq + <uint64_t>length
        if flags & RST:
            if check_history(c, k, HIST_RST_PKT, b'R', h) and rel_seq != e.hist_last_rst:
                add_history(c, k, b'R', h)
            e.hist_last_rst = rel_seq
    else:
        if length:
            check_history(c, k, HIST_DATA_PKT, b'D', h)
        elif flags & ACK:
            check_history(c, k, HIST_ACK_PKT, b'A', h)


# --- sequence space (TCPSessionAdapter.cc) ---------------------------------------------------------

cdef inline void init_endpoint(Endpoint *e, uint16_t flags, uint32_t first_seg_seq,
                               uint32_t last_seq) noexcept nogil:
    if e.state == INACTIVE:
        if flags & SYN:
            e.ack_seq = first_seg_seq
            e.start_seq = first_seg_seq
        else:
            # a partial connection: number as though a SYN had been seen
            e.ack_seq = first_seg_seq - 1
            e.start_seq = first_seg_seq - 1
            last_seq = first_seg_seq
        e.last_seq = last_seq
    elif e.state == SYN_SENT or e.state == SYN_ACK_SENT:
        if (flags & SYN) and first_seg_seq != e.start_seq:
            init_seqs(e, first_seg_seq, last_seq)
    elif e.state == ESTABLISHED or e.state == PARTIAL:
        if flags & SYN:
            init_seqs(e, first_seg_seq, last_seq)
    elif e.state == RESET:
        if (flags & SYN) and e.prev_state == INACTIVE:
            init_seqs(e, first_seg_seq, last_seq)


cdef inline uint64_t relative_seq(Endpoint *e, uint32_t cur, uint32_t last, uint32_t wraps,
                                  bint *underflow) noexcept nogil:
    cdef int32_t delta = <int32_t>(cur - last)
    if delta < 0:
        if wraps and cur > last:
            wraps -= 1
    elif delta > 0:
        if cur < last:
            wraps += 1
    if wraps == 0:
        delta = <int32_t>(cur - e.start_seq)
        if delta < 0:
            underflow[0] = True
        return <uint64_t><int64_t>delta     # C++ converts the int32 to uint64 (sign-extended)
    return full_seq(cur, wraps) - <uint64_t>e.start_seq


cdef inline int32_t update_last_seq(Conn *c, int k, uint32_t last_seq, uint16_t flags, int64_t length,
                                    bint *rxmit, Text *h) noexcept nogil:
    cdef Endpoint *e = &c.ep[k]
    cdef int32_t delta_last = <int32_t>(last_seq - e.last_seq)
    if (flags & (SYN | RST)) and (delta_last > TOO_LARGE_SEQ_DELTA or delta_last < -TOO_LARGE_SEQ_DELTA):
        pass
    elif (flags & FIN) and e.last_seq == e.start_seq + 1:
        update_last_seq_value(e, last_seq)
    elif e.state == RESET:
        pass
    elif delta_last > 0:
        update_last_seq_value(e, last_seq)
    elif length > 0:
        rxmit[0] = True
        scaled_history(c, k, b'T', &e.rxmt_cnt, &e.rxmt_thresh, h)
    return delta_last


cdef inline uint64_t endpoint_size(Endpoint *e, Endpoint *peer) noexcept nogil:
    """TCP_Endpoint::Size: payload bytes from sequence numbers."""
    cdef uint64_t size, last64, ack64
    cdef uint64_t ack_full = full_seq(e.ack_seq, e.ack_wraps)
    cdef bint no_data_acked = ack_full == <uint64_t>e.start_seq or ack_full == <uint64_t>e.start_seq + 1
    if e.prev_state == SYN_SENT and e.state == RESET and peer.state == INACTIVE and not no_data_acked:
        return 0
    last64 = full_seq(e.last_seq, e.seq_wraps)
    ack64 = ack_full
    size = (last64 if last64 > ack64 else ack64) - <uint64_t>e.start_seq
    if size != 0:
        size -= 1
    if e.fin_cnt > 0 and size != 0:
        size -= 1
    return size


# --- the state machine (TCPSessionAdapter::UpdateStateMachine) -------------------------------------

cdef inline bint update_inactive(Conn *c, int k, Endpoint *e, Endpoint *peer, uint32_t base_seq, uint32_t ack_seq,
                          int64_t length, bint orig, uint16_t flags, Text *h) noexcept nogil:
    cdef bint do_close = False
    cdef Endpoint *o
    if flags & SYN:
        if orig:
            set_state(e, SYN_ACK_SENT if flags & ACK else SYN_SENT)
        else:
            if flags & ACK:
                pass
            elif peer.state == SYN_ACK_SENT and base_seq == e.start_seq:
                # SYN and SYN-ACK arrived in reverse order: the SYN's sender is the originator
                flip_roles(c, h)
                set_state(peer, ESTABLISHED)
            if peer.state == SYN_SENT:
                set_state(peer, ESTABLISHED)
            set_state(e, ESTABLISHED)
    if flags & FIN:
        set_state(e, CLOSED)
        do_close = True
    if flags & RST:
        set_state(e, RESET)
        do_close = True
    if e.state == INACTIVE:
        o = &c.ep[c.orig]
        if not orig and length == 0 and o.state == SYN_SENT:
            pass    # an ACK of the SYN before the SYN-ACK does not make a partial connection
        elif (flags & ACK) and peer.state == ESTABLISHED:
            set_state(e, ESTABLISHED)
        else:
            set_state(e, PARTIAL)
    return do_close


cdef inline bint update_syn_sent(Endpoint *e, uint16_t flags) noexcept nogil:
    cdef bint do_close = False
    if flags & FIN:
        set_state(e, CLOSED)
        do_close = True
    if flags & RST:
        set_state(e, RESET)
        do_close = True
    return do_close


cdef inline bint update_established(Endpoint *e, Endpoint *peer, uint16_t flags) noexcept nogil:
    cdef bint do_close = False
    if flags & SYN:
        if e.state == PARTIAL and peer.state == INACTIVE and not (flags & ACK):
            set_state(e, SYN_SENT)
    if (flags & FIN) and not (flags & RST):
        set_state(e, CLOSED)
        if peer.state == RESET and peer.prev_state == CLOSED:
            set_state(peer, CLOSED)     # FIN then RST from the peer was a normal close
        do_close = True
    if flags & RST:
        set_state(e, RESET)
        do_close = True
    return do_close


cdef inline bint update_closed(Endpoint *e, Endpoint *peer, uint16_t flags) noexcept nogil:
    cdef bint do_close = False
    # after a FIN exchange a RST changes nothing
    if (flags & RST) and peer.state != CLOSED:
        set_state(e, RESET)
        if not e.did_close:
            do_close = True
    return do_close


cdef inline void process(Conn *c, int k, uint16_t flags, uint32_t base_seq, uint32_t ack_seq, int64_t length,
                  uint16_t window, int64_t t, uint8_t *analysis, Text *h) noexcept nogil:
    """One packet from endpoint k: TCPSessionAdapter::Process without events and reassembly."""
    cdef Endpoint *e = &c.ep[k]
    cdef Endpoint *peer = &c.ep[1 - k]
    cdef bint orig = is_orig(c, k)
    cdef bint control = (flags & (SYN | FIN | RST)) != 0
    cdef int64_t seg_len = length + ((flags & SYN) != 0) + ((flags & FIN) != 0)
    cdef uint32_t seq_one_past
    cdef uint64_t rel
    cdef bint underflow = False, ack_underflow = False, rxmit = False, do_close = False
    cdef uint8_t a = 0
    if flags & RST:
        seg_len -= length
    seq_one_past = base_seq + <uint32_t>seg_len

    # fastflow's tags read the endpoint as it was before this packet
    if e.state != INACTIVE and not control:
        if length <= 1 and base_seq == e.last_seq - 1:
            a |= A_KEEPALIVE
        if (length == 0 and (flags & ACK) and e.sent_ack and ack_seq == e.last_ack
                and window == e.last_win and base_seq == e.last_seq):
            a |= A_DUP_ACK
    if window == 0 and not control:
        a |= A_ZERO_WINDOW
    if flags & ACK:
        e.sent_ack = True
        e.last_ack = ack_seq
        e.last_win = window

    init_endpoint(e, flags, base_seq, seq_one_past)
    rel = relative_seq(e, base_seq, e.last_seq, e.seq_wraps, &underflow)
    update_history(c, k, flags, rel, length, h)
    # window << scale is zero exactly when the raw window is
    if window == 0 and not (flags & RST) and peer.state != CLOSED and e.state != RESET:
        scaled_history(c, k, b'W', &e.win0_cnt, &e.win0_thresh, h)
    if not c.ep[0].did_close or not c.ep[1].did_close:
        c.last_time = t
    if flags & FIN:
        e.fin_cnt += 1
    if flags & ACK:
        if peer.state == INACTIVE:
            init_seqs(peer, ack_seq - 1, ack_seq - 1)
        else:
            relative_seq(peer, ack_seq, peer.ack_seq, peer.ack_wraps, &ack_underflow)
            if not ack_underflow and not (flags & RST):
                # an ack of 0 far ahead is more likely broken than a wrap
                if not (ack_seq == 0 and <int32_t>(ack_seq - peer.ack_seq) > TOO_LARGE_SEQ_DELTA) \
                        and <int32_t>(ack_seq - peer.ack_seq) > 0:
                    update_ack_seq_value(peer, ack_seq)
    update_last_seq(c, k, seq_one_past, flags, length, &rxmit, h)

    if e.state == INACTIVE:
        do_close = update_inactive(c, k, e, peer, base_seq, ack_seq, length, orig, flags, h)
    elif e.state == SYN_SENT or e.state == SYN_ACK_SENT:
        do_close = update_syn_sent(e, flags)
    elif e.state == ESTABLISHED or e.state == PARTIAL:
        do_close = update_established(e, peer, flags)
    elif e.state == CLOSED:
        do_close = update_closed(e, peer, flags)
    if do_close:
        e.did_close = True

    # Zeek's T also counts payload on a SYN or RST; the tag keeps to resent stream data
    if rxmit and not (a & A_KEEPALIVE) and not (flags & (SYN | RST)):
        a |= A_RETRANSMISSION
    analysis[0] = a


cdef inline bint history_is_rstos0(const char *hist, Py_ssize_t n) noexcept nogil:
    """Zeek's /^\\^?S[^HAFGIQ]*R.*/ == history."""
    cdef Py_ssize_t i = 0
    cdef char ch
    if i < n and hist[i] == b'^':
        i += 1
    if i >= n or hist[i] != b'S':
        return False
    i += 1
    while i < n:
        ch = hist[i]
        if ch == b'R':
            return True
        if ch == b'H' or ch == b'A' or ch == b'F' or ch == b'G' or ch == b'I' or ch == b'Q':
            return False
        i += 1
    return False


cdef inline int conn_state(Endpoint *o, Endpoint *r, uint64_t osize, uint64_t rsize, const char *hist,
                    Py_ssize_t hlen) noexcept nogil:
    """Zeek's conn_state() from base/protocols/conn/main.zeek, in its order."""
    cdef int os = o.state, rs = r.state
    cdef bint o_inactive = os == INACTIVE or os == PARTIAL
    cdef bint r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os == SYN_SENT or os == SYN_ACK_SENT or (os == RESET and osize == 0 and rsize == 0):
            return CS_REJ
        return CS_RSTRH if o_inactive else CS_RSTR
    if os == RESET:
        if r_inactive:
            return CS_RSTOS0 if history_is_rstos0(hist, hlen) else CS_OTH
        return CS_RSTO
    if rs == CLOSED and os == CLOSED:
        return CS_SF
    if os == CLOSED:
        return CS_SH if r_inactive else CS_S2
    if rs == CLOSED:
        return CS_SHR if o_inactive else CS_S3
    if os == SYN_SENT and rs == INACTIVE:
        return CS_S0
    if os == ESTABLISHED and rs == ESTABLISHED:
        return CS_S1
    return CS_OTH


cdef inline void reset_conn(Conn *c) noexcept nogil:
    cdef int k
    memset(c, 0, sizeof(Conn))          # INACTIVE is 0, as every number and flag
    for k in range(2):
        # ScaledHistoryEntry thresholds start at 1: the first occurrence adds the letter
        c.ep[k].rxmt_thresh = 1
        c.ep[k].win0_thresh = 1
        c.ep[k].chk_thresh = 1
