# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Streaming TCP connection engine: segments in, one row per finished connection out, state only for the
connections still open.

It computes, segment by segment, what the whole-capture numpy stages compute from all the segments at once
(fastflow/flows.py's connection rules, ext/zeek_tcp.pxd's Zeek state machine, fastflow/tagging.py's
handshake and teardown steps and fastflow/summary.py's columns); tests/test_tcpflows.py holds it to their
output on every corpus capture and on random ones, at any chunk size. What needs the final orientation
(Zeek may flip it late) is kept for both orientations and chosen when the connection is written.

A connection is finished when a new one starts on its address/port pair, or when network time (the largest
timestamp so far) is more than the idle timeout past the latest timestamp on the pair: no later packet can
join it then. Its row goes to an output buffer and its state is freed, so memory follows the open
connections, not the input.

Nothing here raises inside the per-segment loop; allocation failures come back as status codes.
"""
from libc.stdint cimport uint8_t, uint16_t, int16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
from posix.unistd cimport pread, pwrite
from posix.mman cimport mmap, munmap, madvise, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

import os

import numpy as np
cimport numpy as cnp

from zeek_tcp cimport *
from partition cimport bytes_pair_part, load_be64, pair_part

cnp.import_array()

cdef enum:
    ST_SPILL_FAILED = 2         # the spill file could not be written or read back

STATUS_OK = ST_OK
STATUS_NO_MEMORY = ST_NO_MEMORY
STATUS_SPILL_FAILED = ST_SPILL_FAILED

# summary.HANDSHAKE_VALUES and summary.CLOSE_VALUES order
cdef enum:
    HS_COMPLETE = 0
    HS_SYN_SYNACK = 1
    HS_SYN_ONLY = 2
    HS_REFUSED = 3
    HS_PARTIAL = 4

cdef enum:
    CL_FIN = 0
    CL_SIMULTANEOUS = 1
    CL_HALF_CLOSED = 2
    CL_RST = 3
    CL_REFUSED = 4
    CL_NONE = 5


cdef enum:
    PREFETCH_TABLE = 16         # rows ahead whose table slot is fetched
    PREFETCH_RECORD = 8         # rows ahead whose record is fetched
    STAGED_RECORDS = 1024       # records per write to the spill file
    DEFER_LIMIT = 64            # SYN-ACKs held back while a flip is pending; then both orientations run
    READ_CACHE_BYTES = 1 << 18  # bytes per read from it
cdef uint64_t NO_FRAME = 0xFFFFFFFFFFFFFFFF

cdef enum:
    BAD_CHECKSUM_FLAG = 32      # decode.PFlag.BAD_CHECKSUM
    BAD_IP_CHECKSUM_FLAG = 64   # decode.PFlag.BAD_IP_CHECKSUM
    STATUS_TCP = 0              # decode.Status.TCP
    EMPTY = -1
    COLD_BASE = -2              # table entry of cold[k]: COLD_BASE - k
    MAX_ENTRIES = 0x7FFFFFF0    # pool slots and Cold entries: table entries are 32-bit


cdef struct Opening:            # TCP options of an opening segment
    uint16_t mss
    int16_t wscale
    uint8_t sack_ok
    uint8_t present


cdef struct Handshake:          # tagging.py's handshake steps, supposing side `orig` is the originator
    uint8_t has_s1              # the flags first: all a segment after the handshake reads
    uint8_t answer_pending      # the responder has not sent a segment since step 1
    uint8_t answered_rst        # ... and its first one was a RST
    uint8_t has_s2
    uint8_t has_first_synack
    uint8_t has_s3
    int64_t s1_ts
    int64_t s2_ts
    int64_t s3_ts
    int64_t syn_clock           # the originator's latest pure SYN until step 2, then rtt_syn_synack
    int64_t synack_clock        # the responder's latest SYN-ACK until step 3, then rtt_synack_ack
    uint32_t isn
    uint32_t s2_seq
    uint32_t first_synack_seq
    Opening s1_opt
    Opening s2_opt
    Opening first_synack_opt


cdef struct Teardown:           # tagging.py's teardown steps (sides: 0 sent the first segment)
    int64_t t1_ts
    int64_t t3_ts
    int64_t rst_ts
    uint32_t fin1_end
    uint32_t fin2_end
    uint8_t closer
    uint8_t rst_side
    uint8_t has_t1
    uint8_t t1_before_rst
    uint8_t has_t2              # the other side's first segment acknowledging FIN 1 (step 2, or 2+3)
    uint8_t has_t3
    uint8_t combined
    uint8_t simultaneous
    uint8_t fins_before_rst
    uint8_t has_t4
    uint8_t has_rst
    uint8_t rst_from[2]


cdef struct Deferred:           # a segment held back until Zeek's SYN-ACK-first flip is decided
    int64_t ts
    uint32_t seq
    uint32_t ack
    uint32_t length
    uint16_t flags
    uint16_t window
    uint8_t k
    uint8_t bad


cdef struct Alt:                # Zeek's state under the flipped orientation, while a SYN-ACK-first flip is pending
    Conn zc
    Text hist
    uint32_t retx[2]


cdef struct Key:
    uint64_t a_hi
    uint64_t a_lo
    uint64_t b_hi
    uint64_t b_lo
    int32_t vlan
    uint16_t a_p
    uint16_t b_p


cdef struct Flow:               # one open connection (docs/design.md: its size)
    # what a segment reads or writes, in the fields before hist (prefetched for the segments ahead): with a
    # million open connections each record is a cache miss, and so is each of its lines
    Key key                     # the address/port pair; its first sender's addresses and ports too
    uint64_t hash
    int64_t seen_max            # the pair's latest timestamp (flows.py's idle rule)
    uint64_t last_frame
    int64_t ts_min
    int64_t ts_max
    uint64_t pkts[2]            # side 0 sent the connection's first segment
    uint64_t payload[2]
    uint64_t ip_bytes[2]
    Conn zc
    Teardown td
    uint64_t first_frame
    uint32_t ep_syn_seq         # in the current idle epoch: the latest pure SYN
    uint32_t ep_synack_ack      # ... and the latest SYN-ACK
    uint8_t used
    uint8_t first_src_is_a
    uint8_t flip_pending
    uint8_t ep_has_syn
    uint8_t ep_has_synack
    uint8_t ep_synack_from_a
    uint8_t ev_rst              # close events since the connection started
    uint8_t ev_fin_a
    uint8_t ev_fin_b
    Handshake hs[2]             # their flags lead
    # what only some segments touch
    Text hist
    Deferred *deferred
    Alt *alt                    # beyond DEFER_LIMIT deferred SYN-ACKs: both orientations followed at once
    int64_t next_free
    int64_t first_ts
    int64_t heap_pos            # of its entry in the engine's deadline heap
    uint32_t n_deferred
    uint32_t cap_deferred
    uint32_t retx[2]
    uint32_t syns[2]
    uint32_t synacks[2]
    int32_t vlan
    uint8_t ip_version


cdef struct Cold:               # an open connection whose record waits in the spill file
    Key key
    uint64_t hash
    int64_t seen_max
    uint64_t first_frame
    int64_t offset              # of its Flow record in the spill file; -1: this entry is free (next_free)
    int64_t next_free
    char *hist_data             # heap memory the record points to, freed with the engine if never read back
    Deferred *deferred
    Alt *alt
    int64_t heap_pos


cdef struct Pending:            # a spilled record finish() has still to read, once the Cold entries are let go
    int64_t offset              # of its Flow record in the spill file; -1 once read (or listed again as Cold)
    uint64_t first_frame
    char *hist_data             # heap memory the record points to, freed with the engine if never read back
    Deferred *deferred
    Alt *alt


cdef struct Place:              # a hash table place: an entry and the low 32 bits of its hash, in one 8-byte
    int32_t entry               # load (with a million open connections each lookup is a cache miss); the
    uint32_t tag                # tag is compared first and gives the entry's home without reading its record


cdef struct HeapEntry:          # an open connection's place in the deadline heap
    int64_t key                 # <= its latest timestamp (the pair's seen_max): a lower bound of its deadline
    int64_t entry               # its table entry: a pool slot, or COLD_BASE - cold index


cdef struct Row:                # one finished connection (orientation applied)
    uint64_t first_frame
    uint64_t last_frame
    int64_t ts_start
    int64_t ts_end
    int64_t first_ts
    int64_t last_time
    uint64_t orig_pkts
    uint64_t resp_pkts
    uint64_t orig_payload_bytes
    uint64_t resp_payload_bytes
    uint64_t orig_ip_bytes
    uint64_t resp_ip_bytes
    uint64_t orig_size
    uint64_t resp_size
    int64_t syn_ts
    int64_t synack_ts
    int64_t handshake_ack_ts
    int64_t rtt1
    int64_t rtt2
    int64_t fin1_ts
    int64_t fin2_ts
    int64_t rst_ts
    int64_t hist_offset
    int64_t hist_len
    uint32_t orig_isn
    uint32_t resp_isn
    uint32_t syn_count
    uint32_t synack_count
    uint32_t orig_retransmissions
    uint32_t resp_retransmissions
    int32_t vlan
    uint16_t orig_p
    uint16_t resp_p
    uint16_t orig_mss
    uint16_t resp_mss
    int16_t orig_wscale
    int16_t resp_wscale
    uint8_t orig_addr[16]
    uint8_t resp_addr[16]
    uint8_t ip_version
    uint8_t orig_opt            # the opening segment exists
    uint8_t resp_opt
    uint8_t orig_sack_ok
    uint8_t resp_sack_ok
    uint8_t has_syn
    uint8_t has_synack
    uint8_t has_handshake_ack
    uint8_t has_orig_isn
    uint8_t has_resp_isn
    uint8_t has_fin1
    uint8_t has_fin2
    uint8_t has_rst
    uint8_t handshake
    uint8_t close
    uint8_t close_initiator     # 0 orig, 1 resp, 2 none
    uint8_t rst_by              # bit 0 orig, bit 1 resp
    uint8_t teardown_segments   # 0: none
    uint8_t conn_state


cdef inline void store_be64(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = <uint8_t>(v & 0xFF)
        v >>= 8


cdef extern from *:
    void __builtin_prefetch(const void *address) nogil

cdef extern from *:
    """
    #include <string.h>
    #include <sys/mman.h>
    /* Linux's; elsewhere no advice (0 is MADV_NORMAL), and a mapping grows by a new one and a copy */
    #ifndef MADV_HUGEPAGE
    #define MADV_HUGEPAGE 0
    #endif
    static void *ff_mremap(void *old, size_t old_size, size_t new_size) {
    #ifdef MREMAP_MAYMOVE
        return mremap(old, old_size, new_size, MREMAP_MAYMOVE);
    #else
        void *p = mmap(NULL, new_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            memcpy(p, old, old_size);
            munmap(old, old_size);
        }
        return p;
    #endif
    }
    """
    int MADV_HUGEPAGE
    void *ff_mremap(void *old, size_t old_size, size_t new_size) nogil


cdef inline void prefetch_hot(const Flow *f) noexcept nogil:
    """The lines of the fields a segment touches (those before hist: see Flow). Their span is a constant
    the compiler sees, so the loop unrolls: with a bound read at run time it cost a branch miss a segment."""
    cdef const char *line = <const char *>f
    cdef const char *end = <const char *>&f.hist
    while line < end:
        __builtin_prefetch(line)
        line += 64
    __builtin_prefetch(end - 1)


cdef inline bint make_key(Key *key, const uint8_t *src, const uint8_t *dst, uint16_t sp, uint16_t dp,
                          int32_t vlan) noexcept nogil:
    """The pair's key, lower (address, port) first; True when the source is that lower end."""
    cdef uint64_t s_hi = load_be64(src), s_lo = load_be64(src + 8)
    cdef uint64_t d_hi = load_be64(dst), d_lo = load_be64(dst + 8)
    # without branches (& and | evaluate both sides): which end is lower is a coin toss per segment, and a
    # mispredicted branch costs more than the selects
    cdef bint a_is_src = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
    key.a_hi = s_hi if a_is_src else d_hi
    key.a_lo = s_lo if a_is_src else d_lo
    key.b_hi = d_hi if a_is_src else s_hi
    key.b_lo = d_lo if a_is_src else s_lo
    key.vlan = vlan
    key.a_p = sp if a_is_src else dp
    key.b_p = dp if a_is_src else sp
    return a_is_src


cdef inline uint64_t mix64(uint64_t h, uint64_t v) noexcept nogil:
    h ^= v
    h *= <uint64_t>0xBF58476D1CE4E5B9
    h ^= h >> 31
    return h


cdef inline uint64_t key_hash(Key *k, uint64_t seed) noexcept nogil:
    # seeded per engine (from os.urandom): without a secret start, addresses can be chosen so that every
    # key lands in one probe run (the mixing steps are invertible), and each lookup walks all of them
    cdef uint64_t h = <uint64_t>0x9E3779B97F4A7C15 ^ seed
    h = mix64(h, k.a_hi)
    h = mix64(h, k.a_lo)
    h = mix64(h, k.b_hi)
    h = mix64(h, k.b_lo)
    h = mix64(h, (<uint64_t><uint32_t>k.vlan << 32) | (<uint64_t>k.a_p << 16) | k.b_p)
    h *= <uint64_t>0x94D049BB133111EB
    h ^= h >> 29
    return h


cdef inline bint key_eq(Key *x, Key *y) noexcept nogil:
    return (x.a_hi == y.a_hi and x.a_lo == y.a_lo and x.b_hi == y.b_hi and x.b_lo == y.b_lo
            and x.a_p == y.a_p and x.b_p == y.b_p and x.vlan == y.vlan)


cdef inline bint seq_geq(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) >= 0


cdef inline void set_opening(Opening *o, uint16_t mss, int16_t wscale, uint8_t sack_ok) noexcept nogil:
    o.present = 1
    o.mss = mss
    o.wscale = wscale
    o.sack_ok = sack_ok


cdef void handshake_step(Handshake *h, bint from_orig, uint16_t flags, uint32_t seq, uint32_t ack, int64_t ts,
                         uint16_t mss, int16_t wscale, uint8_t sack_ok) noexcept nogil:
    cdef bint syn = (flags & SYN) != 0
    cdef bint has_ack = (flags & ACK) != 0
    if from_orig:
        if syn and not has_ack:
            if not h.has_s1:
                h.has_s1 = True
                h.isn = seq
                h.s1_ts = ts
                set_opening(&h.s1_opt, mss, wscale, sack_ok)
                h.answer_pending = True
            if not h.has_s2:
                h.syn_clock = ts
        elif (h.has_s2 and not h.has_s3 and has_ack and not syn and not (flags & RST)
              and ack == h.s2_seq + <uint32_t>1):
            h.has_s3 = True
            h.s3_ts = ts
            h.synack_clock = ts - h.synack_clock
    else:
        if h.answer_pending:
            h.answer_pending = False
            h.answered_rst = (flags & RST) != 0
        if syn and has_ack:
            if not h.has_first_synack:
                h.has_first_synack = True
                h.first_synack_seq = seq
                set_opening(&h.first_synack_opt, mss, wscale, sack_ok)
            if h.has_s1 and not h.has_s2 and ack == h.isn + <uint32_t>1:
                h.has_s2 = True
                h.s2_seq = seq
                h.s2_ts = ts
                h.syn_clock = ts - h.syn_clock
                set_opening(&h.s2_opt, mss, wscale, sack_ok)
            if not h.has_s3:
                h.synack_clock = ts


cdef void teardown_step(Teardown *t, int k, uint16_t flags, uint32_t seq, uint32_t ack, uint32_t plen,
                        int64_t ts) noexcept nogil:
    cdef bint is_rst = (flags & RST) != 0
    cdef bint is_fin = (flags & FIN) != 0 and not is_rst and not (flags & SYN)
    cdef bint acking = (flags & ACK) != 0 and not is_rst
    cdef bint acks_fin1, other, this_is_t2 = False
    if t.has_t1:
        other = k != t.closer
        acks_fin1 = acking and seq_geq(ack, t.fin1_end)
        if other and acks_fin1 and not t.has_t2:
            t.has_t2 = True
            this_is_t2 = True
        if t.has_t3:
            if not other and not t.has_t4 and acking and seq_geq(ack, t.fin2_end):
                t.has_t4 = True
        elif is_fin and other:
            t.has_t3 = True
            t.t3_ts = ts
            t.fin2_end = seq + plen + <uint32_t>1
            t.combined = this_is_t2
            t.simultaneous = not acks_fin1
            t.fins_before_rst = not t.has_rst
    elif is_fin:
        t.has_t1 = True
        t.closer = k
        t.fin1_end = seq + plen + <uint32_t>1
        t.t1_ts = ts
        t.t1_before_rst = not t.has_rst
    if is_rst:
        t.rst_from[k] = True
        if not t.has_rst:
            t.has_rst = True
            t.rst_ts = ts
            t.rst_side = k


cdef inline void zeek_step_on(Conn *zc, Text *hist, uint32_t *retx, int k, uint16_t flags, uint32_t seq,
                              uint32_t ack, uint32_t length, uint16_t window, int64_t ts, bint bad) noexcept nogil:
    cdef uint8_t a = 0
    if bad:
        # TCPAnalyzer::ValidateChecksum: counted as C/c, then the packet goes no further
        scaled_history(zc, k, b'C', &zc.ep[k].chk_cnt, &zc.ep[k].chk_thresh, hist)
        return
    process(zc, k, flags, seq, ack, length, window, ts, &a, hist)
    if a & A_RETRANSMISSION:
        retx[k] += 1


cdef inline void zeek_step(Flow *f, int k, uint16_t flags, uint32_t seq, uint32_t ack, uint32_t length,
                           uint16_t window, int64_t ts, bint bad) noexcept nogil:
    zeek_step_on(&f.zc, &f.hist, f.retx, k, flags, seq, ack, length, window, ts, bad)


cdef inline void free_alt(Flow *f) noexcept nogil:
    if f.alt != NULL:
        free(f.alt.hist.data)
        free(f.alt)
        f.alt = NULL


cdef void replay_deferred(Flow *f) noexcept nogil:
    """The flip is decided (or the connection ends): the held-back SYN-ACKs go through Zeek's state machine
    in the orientation f.zc now has; the other orientation's state, if followed, is dropped."""
    cdef Py_ssize_t i
    cdef Deferred *d
    for i in range(f.n_deferred):
        d = &f.deferred[i]
        zeek_step(f, d.k, d.flags, d.seq, d.ack, d.length, d.window, d.ts, d.bad)
    f.n_deferred = 0
    f.flip_pending = False
    free_alt(f)


cdef int follow_both(Flow *f) noexcept nogil:
    """Too many SYN-ACKs held back (one pair flooded with them): from now on Zeek's state machine runs in
    both orientations at once, the flipped one in f.alt, so memory stays bounded; the deferred ones go
    through both now. Same result as replaying them once the flip is decided."""
    cdef Alt *alt = <Alt *>malloc(sizeof(Alt))
    cdef Py_ssize_t i
    cdef Deferred *d
    if alt == NULL:
        return ST_NO_MEMORY
    alt.zc = f.zc
    alt.retx[0] = f.retx[0]
    alt.retx[1] = f.retx[1]
    alt.hist = f.hist
    alt.hist.data = NULL
    alt.hist.cap = 0
    if f.hist.len:
        alt.hist.data = <char *>malloc(f.hist.len)
        if alt.hist.data == NULL:
            free(alt)
            return ST_NO_MEMORY
        memcpy(alt.hist.data, f.hist.data, f.hist.len)
        alt.hist.cap = f.hist.len
    flip_roles(&alt.zc, &alt.hist)
    for i in range(f.n_deferred):
        d = &f.deferred[i]
        zeek_step(f, d.k, d.flags, d.seq, d.ack, d.length, d.window, d.ts, d.bad)
        zeek_step_on(&alt.zc, &alt.hist, alt.retx, d.k, d.flags, d.seq, d.ack, d.length, d.window, d.ts, d.bad)
    f.n_deferred = 0
    free(f.deferred)
    f.deferred = NULL
    f.cap_deferred = 0
    f.alt = alt
    return ST_OK


cdef void adopt_alt(Flow *f) noexcept nogil:
    """The flip is decided: the flipped orientation's state becomes the connection's (the unflipped one is
    left in f.alt, dropped by replay_deferred)."""
    cdef Conn zc = f.zc
    cdef Text hist = f.hist
    cdef uint32_t r0 = f.retx[0], r1 = f.retx[1]
    f.zc = f.alt.zc
    f.hist = f.alt.hist
    f.retx[0] = f.alt.retx[0]
    f.retx[1] = f.alt.retx[1]
    f.alt.zc = zc
    f.alt.hist = hist
    f.alt.retx[0] = r0
    f.alt.retx[1] = r1


cdef int defer(Flow *f, int k, uint16_t flags, uint32_t seq, uint32_t ack, uint32_t length, uint16_t window,
               int64_t ts, bint bad) noexcept nogil:
    cdef Deferred *grown
    cdef Py_ssize_t cap
    if f.n_deferred == f.cap_deferred:
        cap = f.cap_deferred * 2 if f.cap_deferred else 4
        grown = <Deferred *>realloc(f.deferred, cap * sizeof(Deferred))
        if grown == NULL:
            return ST_NO_MEMORY
        f.deferred = grown
        f.cap_deferred = cap
    f.deferred[f.n_deferred] = Deferred(ts, seq, ack, length, flags, window, k, bad)
    f.n_deferred += 1
    return ST_OK


cdef enum:
    BIG_BYTES = 2 << 20         # from here on an array is a mapping of its own, in huge pages (see big_alloc)


cdef inline size_t mapped_bytes(size_t nbytes) noexcept nogil:
    """The size of big_alloc()'s mapping for nbytes: whole 2 MiB pages, so that the kernel places it on a 2 MiB
    boundary (it does so for anonymous mappings of such sizes) and every page of it can be a huge one."""
    return nbytes if nbytes < BIG_BYTES else (nbytes + BIG_BYTES - 1) & ~(<size_t>BIG_BYTES - 1)


cdef void *big_alloc(size_t nbytes) noexcept nogil:
    """Memory for the engine's arrays (grow_array). The records, the hash table and the heap are read at
    random, a segment at a time: with hundreds of MB of them each access misses the cache and, in 4 KiB
    pages, the TLB too. From BIG_BYTES on an array gets a mapping of its own with transparent huge pages asked
    for (THP is commonly in madvise mode, so glibc's heap never gets them); smaller ones come from the heap.
    big_free() must get the same size."""
    cdef void *p
    if nbytes < BIG_BYTES:
        return malloc(nbytes)
    p = mmap(NULL, mapped_bytes(nbytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if p == MAP_FAILED:
        return NULL
    madvise(p, mapped_bytes(nbytes), MADV_HUGEPAGE)    # advice: without THP the pages stay small
    return p


cdef void big_free(void *p, size_t nbytes) noexcept nogil:
    if p == NULL:
        return
    if nbytes < BIG_BYTES:
        free(p)
    else:
        munmap(p, mapped_bytes(nbytes))


cdef int grow_array(void **data, Py_ssize_t *capacity, size_t item_size) noexcept nogil:
    """Double a big_alloc() array's capacity (1024 items at first; from BIG_BYTES on, up to the end of the
    mapping's last 2 MiB page); non-zero when memory ran out (the array stays). A mapping grows in place or
    moves without a copy (mremap keeps its huge pages and its advice)."""
    cdef Py_ssize_t cap = capacity[0] * 2 if capacity[0] else 1024
    cdef size_t was = capacity[0] * item_size, nbytes = cap * item_size
    cdef void *grown
    if nbytes < BIG_BYTES:
        grown = realloc(data[0], nbytes)
        if grown == NULL:
            return 1
    else:
        cap = mapped_bytes(nbytes) // item_size
        if was >= BIG_BYTES:
            grown = ff_mremap(data[0], mapped_bytes(was), mapped_bytes(nbytes))
            if grown == MAP_FAILED:
                return 1
        else:
            grown = big_alloc(nbytes)
            if grown == NULL:
                return 1
            if was:
                memcpy(grown, data[0], was)
            free(data[0])
    data[0] = grown
    capacity[0] = cap
    return 0


cdef int write_all(int fd, const char *data, int64_t length, int64_t offset) noexcept nogil:
    cdef ssize_t done
    while length > 0:
        done = pwrite(fd, data, length, offset)
        if done <= 0:
            return ST_SPILL_FAILED
        data += done
        length -= done
        offset += done
    return ST_OK


cdef inline void free_spilled_memory(char *hist_data, Deferred *deferred, Alt *alt) noexcept nogil:
    """The heap memory a spilled record points to, when it is never read back."""
    free(hist_data)
    free(deferred)
    if alt != NULL:
        free(alt.hist.data)
        free(alt)


cdef inline void free_flow_memory(Flow *f) noexcept nogil:
    free(f.hist.data)
    f.hist.data = NULL
    free(f.deferred)
    f.deferred = NULL
    free_alt(f)


cdef class Engine:
    """Open connections in a hash table (linear probing) over a pool of Flow records; finished
    connections as Rows plus their history text, handed over by drain()."""
    cdef Flow *pool
    cdef Py_ssize_t pool_cap
    cdef Py_ssize_t pool_top          # records ever used (the free list holds the released ones)
    cdef int64_t free_head
    cdef Place *table
    cdef uint64_t table_mask
    cdef Py_ssize_t n_open
    cdef Row *rows
    cdef Py_ssize_t n_rows
    cdef Py_ssize_t cap_rows
    cdef Text out_hist
    cdef uint8_t server_port[65536]
    cdef bint vlan_aware
    cdef int64_t timeout_ns
    cdef uint64_t hash_seed
    # the spill tier: table entries <= COLD_BASE are cold[COLD_BASE - entry]
    cdef Cold *cold
    cdef Py_ssize_t cold_cap
    cdef Py_ssize_t cold_top
    cdef int64_t cold_free_head
    cdef Py_ssize_t n_cold
    cdef int spill_fd
    cdef int64_t spill_end          # bytes of the spill file, the staged records included
    cdef int64_t spill_written      # bytes on disk; records past it wait in the staging buffer
    cdef int64_t *free_offsets      # places in the file whose record came back: reused before the file grows
    cdef Py_ssize_t n_free_offsets
    cdef Py_ssize_t free_offsets_cap
    cdef Flow *staged               # records written to the file together (one pwrite for many)
    cdef char *read_cache           # a stretch of the file read at once: records spilled together come back together
    cdef int64_t read_cache_start
    cdef int64_t read_cache_len
    cdef Flow scratch
    # every open connection once, keyed by a lower bound of its seen_max: expiry pops the due ones instead of
    # scanning the table (keys are refreshed when they come up, not on every packet)
    cdef HeapEntry *heap
    cdef Py_ssize_t heap_len
    cdef Py_ssize_t heap_cap
    # shortcuts: the smallest open first frame while known, and the order finish() releases connections in
    cdef uint64_t min_first
    cdef bint min_first_known
    cdef object finish_order
    cdef Py_ssize_t finish_next
    # finish() releases the open connections straight from its order, without the table and the heap (the
    # lookups, probe shifts and heap sifts cost more than finishing the record); index_open() lists the rest
    # again before anything else needs them. Meanwhile the table, the heap and the Cold entries are let go
    # (at the end of a capture with a million open connections, over 100 MB an engine, held while every row
    # and segment is written): the spilled records left are listed in `pending`, in the order's terms
    # (COLD_BASE - k is pending[k])
    cdef bint unindexed
    cdef Pending *pending
    cdef Py_ssize_t n_pending

    def __cinit__(self, int64_t timeout_ns, const uint8_t[::1] server_port not None, bint vlan_aware):
        cdef Py_ssize_t i
        if server_port.shape[0] != 65536:
            raise ValueError("server_port: a 65536-entry table")
        for i in range(65536):
            self.server_port[i] = server_port[i]
        self.timeout_ns = timeout_ns
        self.vlan_aware = vlan_aware
        self.hash_seed = int.from_bytes(os.urandom(8), "little")
        self.free_head = EMPTY
        self.cold_free_head = EMPTY
        self.spill_fd = -1
        self.min_first = NO_FRAME
        self.min_first_known = True
        self.table_mask = 1023
        self.table = <Place *>big_alloc(1024 * sizeof(Place))
        if self.table == NULL:
            raise MemoryError()
        for i in range(1024):
            self.table[i].entry = EMPTY

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.pool != NULL:
            for i in range(self.pool_top):
                if self.pool[i].used:
                    free_flow_memory(&self.pool[i])
        big_free(self.pool, self.pool_cap * sizeof(Flow))
        if self.cold != NULL:
            for i in range(self.cold_top):
                if self.cold[i].offset >= 0:
                    free_spilled_memory(self.cold[i].hist_data, self.cold[i].deferred, self.cold[i].alt)
        big_free(self.cold, self.cold_cap * sizeof(Cold))
        if self.pending != NULL:
            for i in range(self.n_pending):
                if self.pending[i].offset >= 0:
                    free_spilled_memory(self.pending[i].hist_data, self.pending[i].deferred, self.pending[i].alt)
        free(self.pending)
        free(self.staged)
        big_free(self.free_offsets, self.free_offsets_cap * sizeof(int64_t))
        free(self.read_cache)
        big_free(self.table, (self.table_mask + 1) * sizeof(Place))
        big_free(self.heap, self.heap_cap * sizeof(HeapEntry))
        free(self.rows)
        free(self.out_hist.data)

    @property
    def open_count(self):
        return self.n_open

    @property
    def cold_count(self):
        """Open connections whose record is in the spill file."""
        return self.n_cold

    @property
    def spill_bytes(self):
        return self.spill_end

    def memory_areas(self):
        """{name: (address, bytes)} of the arrays big_alloc() gives out (records, hash table, deadline heap):
        for tests that check where huge pages are asked for."""
        return {"records": (<size_t>self.pool, self.pool_cap * sizeof(Flow)),
                "table": (<size_t>self.table, (self.table_mask + 1) * sizeof(Place)),
                "heap": (<size_t>self.heap, self.heap_cap * sizeof(HeapEntry))}

    def set_spill_file(self, int fd):
        """A file descriptor (read/write, positioned anywhere) the engine may write records to."""
        self.spill_fd = fd

    def reserve_rows(self, Py_ssize_t extra):
        """Room for `extra` more finished rows (called with the GIL before feed/expire/finish)."""
        cdef Py_ssize_t need = self.n_rows + extra
        cdef Row *grown
        if need <= self.cap_rows:
            return
        need = max(need, 2 * self.cap_rows, 1024)
        grown = <Row *>realloc(self.rows, need * sizeof(Row))
        if grown == NULL:
            raise MemoryError("out of memory for finished connections")
        self.rows = grown
        self.cap_rows = need

    # --- the hash table --------------------------------------------------------------------------------

    cdef inline uint64_t entry_hash(self, int64_t entry) noexcept nogil:
        return self.pool[entry].hash if entry >= 0 else self.cold[COLD_BASE - entry].hash

    cdef inline int64_t entry_seen_max(self, int64_t entry) noexcept nogil:
        return self.pool[entry].seen_max if entry >= 0 else self.cold[COLD_BASE - entry].seen_max

    cdef inline Key *entry_key(self, int64_t entry) noexcept nogil:
        return &self.pool[entry].key if entry >= 0 else &self.cold[COLD_BASE - entry].key

    cdef Py_ssize_t find(self, Key *key, uint64_t h) noexcept nogil:
        """Table position of key's flow, or of the empty place where it would go."""
        cdef uint64_t pos = h & self.table_mask
        cdef uint32_t tag = <uint32_t>h
        cdef int64_t entry
        while True:
            entry = self.table[pos].entry
            if entry == EMPTY:
                return <Py_ssize_t>pos
            if self.table[pos].tag == tag and self.entry_hash(entry) == h and key_eq(self.entry_key(entry), key):
                return <Py_ssize_t>pos
            pos = (pos + 1) & self.table_mask

    cdef int grow_table(self) noexcept nogil:
        cdef uint64_t new_size = (self.table_mask + 1) * 2
        cdef Place *fresh
        cdef uint64_t i, pos
        if new_size > (<uint64_t>1 << 32):
            return ST_NO_MEMORY
        fresh = <Place *>big_alloc(new_size * sizeof(Place))
        if fresh == NULL:
            return ST_NO_MEMORY
        for i in range(new_size):
            fresh[i].entry = EMPTY
        for i in range(self.table_mask + 1):
            if self.table[i].entry != EMPTY:
                pos = self.table[i].tag & (new_size - 1)
                while fresh[pos].entry != EMPTY:
                    pos = (pos + 1) & (new_size - 1)
                fresh[pos] = self.table[i]
        big_free(self.table, (self.table_mask + 1) * sizeof(Place))
        self.table = fresh
        self.table_mask = new_size - 1
        return ST_OK

    cdef void remove_at(self, Py_ssize_t i) noexcept nogil:
        """Backward-shift deletion: later entries of the probe run move up, so no tombstones."""
        cdef uint64_t hole = <uint64_t>i, j = <uint64_t>i, home
        while True:
            j = (j + 1) & self.table_mask
            if self.table[j].entry == EMPTY:
                break
            home = self.table[j].tag & self.table_mask
            # leave the entry when its home lies cyclically in (hole, j]
            if (hole <= j and hole < home and home <= j) or (hole > j and (hole < home or home <= j)):
                continue
            self.table[hole] = self.table[j]
            hole = j
        self.table[hole].entry = EMPTY

    cdef int64_t new_slot(self) noexcept nogil:
        cdef int64_t slot
        if self.free_head != EMPTY:
            slot = self.free_head
            self.free_head = self.pool[slot].next_free
            return slot
        if self.pool_top == MAX_ENTRIES:
            return EMPTY
        if self.pool_top == self.pool_cap and grow_array(<void **>&self.pool, &self.pool_cap, sizeof(Flow)):
            return EMPTY
        slot = self.pool_top
        self.pool_top += 1
        return slot

    # --- the deadline heap ---------------------------------------------------------------------------------

    cdef inline void heap_set(self, Py_ssize_t i, HeapEntry e) noexcept nogil:
        self.heap[i] = e
        if e.entry >= 0:
            self.pool[e.entry].heap_pos = i
        else:
            self.cold[COLD_BASE - e.entry].heap_pos = i

    cdef void heap_sift_up(self, Py_ssize_t i) noexcept nogil:
        cdef HeapEntry e = self.heap[i]
        cdef Py_ssize_t parent
        while i > 0:
            parent = (i - 1) >> 1
            if self.heap[parent].key <= e.key:
                break
            self.heap_set(i, self.heap[parent])
            i = parent
        self.heap_set(i, e)

    cdef void heap_sift_down(self, Py_ssize_t i) noexcept nogil:
        cdef HeapEntry e = self.heap[i]
        cdef Py_ssize_t child
        while True:
            child = 2 * i + 1
            if child >= self.heap_len:
                break
            if child + 1 < self.heap_len and self.heap[child + 1].key < self.heap[child].key:
                child += 1
            if self.heap[child].key >= e.key:
                break
            self.heap_set(i, self.heap[child])
            i = child
        self.heap_set(i, e)

    cdef int heap_push(self, int64_t entry, int64_t key) noexcept nogil:
        if self.heap_len == self.heap_cap and grow_array(<void **>&self.heap, &self.heap_cap, sizeof(HeapEntry)):
            return ST_NO_MEMORY
        self.heap_set(self.heap_len, HeapEntry(key, entry))
        self.heap_len += 1
        self.heap_sift_up(self.heap_len - 1)
        return ST_OK

    cdef int add_open(self, Py_ssize_t pos, int64_t slot, int64_t seen) noexcept nogil:
        """A new open connection's record (in pool slot `slot`) at table position pos: in the heap, counted,
        the table grown when half full. Out of memory for the heap: the slot is given back (not what the
        record points to: the caller's to free) and the table left as it was."""
        if self.heap_push(slot, seen) != ST_OK:
            self.free_slot(slot)
            return ST_NO_MEMORY
        self.table[pos] = Place(<int32_t>slot, <uint32_t>self.entry_hash(slot))
        self.n_open += 1
        if <uint64_t>self.n_open * 2 > self.table_mask:
            return self.grow_table()
        return ST_OK

    cdef void heap_remove(self, Py_ssize_t i) noexcept nogil:
        cdef int64_t key
        self.heap_len -= 1
        if i == self.heap_len:
            return
        key = self.heap[i].key
        self.heap_set(i, self.heap[self.heap_len])
        if self.heap[i].key < key:
            self.heap_sift_up(i)
        else:
            self.heap_sift_down(i)

    # --- the spill tier: records of idle open connections wait in a file -----------------------------------

    cdef int64_t new_cold(self) noexcept nogil:
        cdef int64_t c
        if self.cold_free_head != EMPTY:
            c = self.cold_free_head
            self.cold_free_head = self.cold[c].next_free
            return c
        if self.cold_top == MAX_ENTRIES:
            return EMPTY
        if self.cold_top == self.cold_cap and grow_array(<void **>&self.cold, &self.cold_cap, sizeof(Cold)):
            return EMPTY
        c = self.cold_top
        self.cold_top += 1
        return c

    cdef void free_slot(self, int64_t slot) noexcept nogil:
        self.pool[slot].used = False
        self.pool[slot].next_free = self.free_head
        self.free_head = slot

    cdef void free_offset(self, int64_t offset) noexcept nogil:
        # the record's place in the file is free again (staged places are always written by then); when the
        # list cannot grow the place is only lost, the file stays correct
        if offset < self.spill_written and (
                self.n_free_offsets < self.free_offsets_cap
                or not grow_array(<void **>&self.free_offsets, &self.free_offsets_cap, sizeof(int64_t))):
            self.free_offsets[self.n_free_offsets] = offset
            self.n_free_offsets += 1

    cdef void free_cold(self, int64_t c) noexcept nogil:
        self.free_offset(self.cold[c].offset)
        self.cold[c].offset = -1
        self.cold[c].next_free = self.cold_free_head
        self.cold_free_head = c
        self.n_cold -= 1

    cdef int write_staged(self) noexcept nogil:
        if write_all(self.spill_fd, <char *>self.staged, self.spill_end - self.spill_written,
                     self.spill_written) != ST_OK:
            return ST_SPILL_FAILED
        self.spill_written = self.spill_end
        return ST_OK

    cdef int spill(self, Py_ssize_t pos) noexcept nogil:
        """Stage the hot record at table position pos for the spill file; the table keeps a Cold entry."""
        cdef int64_t slot = self.table[pos].entry
        cdef int64_t c, offset
        cdef Flow *f = &self.pool[slot]
        cdef int status
        if self.spill_fd < 0:
            return ST_SPILL_FAILED
        if self.staged == NULL:
            self.staged = <Flow *>malloc(STAGED_RECORDS * sizeof(Flow))
            if self.staged == NULL:
                return ST_NO_MEMORY
        if self.spill_end - self.spill_written == STAGED_RECORDS * sizeof(Flow):
            status = self.write_staged()
            if status != ST_OK:
                return status
        c = self.new_cold()
        if c == EMPTY:
            return ST_NO_MEMORY
        if self.n_free_offsets:
            # a place freed by a record that came back: connections that go cold and come back again and
            # again (more open than fit in memory, visited in turn) would otherwise grow the file without end
            offset = self.free_offsets[self.n_free_offsets - 1]
            if write_all(self.spill_fd, <char *>f, sizeof(Flow), offset) != ST_OK:
                self.cold[c].offset = -1
                self.cold[c].next_free = self.cold_free_head
                self.cold_free_head = c
                return ST_SPILL_FAILED
            self.n_free_offsets -= 1
            if (offset < self.read_cache_start + self.read_cache_len
                    and offset + <int64_t>sizeof(Flow) > self.read_cache_start):
                self.read_cache_len = 0     # the read cache held the record that was there
        else:
            offset = self.spill_end
            memcpy(&self.staged[(self.spill_end - self.spill_written) // sizeof(Flow)], f, sizeof(Flow))
            self.spill_end += sizeof(Flow)
        self.cold[c] = Cold(f.key, f.hash, f.seen_max, f.first_frame, offset, EMPTY, f.hist.data, f.deferred,
                            f.alt, f.heap_pos)
        self.heap[f.heap_pos].entry = COLD_BASE - c
        self.n_cold += 1
        self.table[pos].entry = <int32_t>(COLD_BASE - c)
        self.free_slot(slot)
        return ST_OK

    cdef int read_cold(self, int64_t c, Flow *into) noexcept nogil:
        return self.read_record(self.cold[c].offset, into)

    cdef int read_record(self, int64_t offset, Flow *into) noexcept nogil:
        cdef int64_t length, cached_end
        cdef ssize_t got
        if offset >= self.spill_written:       # still staged
            memcpy(into, <char *>self.staged + (offset - self.spill_written), sizeof(Flow))
            return ST_OK
        if not (self.read_cache_start <= offset
                and offset + <int64_t>sizeof(Flow) <= self.read_cache_start + self.read_cache_len):
            if self.read_cache == NULL:
                self.read_cache = <char *>malloc(READ_CACHE_BYTES)
                if self.read_cache == NULL:
                    return ST_NO_MEMORY
            # a whole stretch only when reading on from the last one (records spilled together coming back
            # in order); one record otherwise, or scattered reads would each copy 256 KB for 648 bytes
            cached_end = self.read_cache_start + self.read_cache_len
            if cached_end <= offset < cached_end + READ_CACHE_BYTES:
                length = min(<int64_t>READ_CACHE_BYTES, self.spill_written - offset)
            else:
                length = sizeof(Flow)
            got = pread(self.spill_fd, self.read_cache, length, offset)
            if got < <ssize_t>sizeof(Flow):
                self.read_cache_len = 0
                return ST_SPILL_FAILED
            self.read_cache_start = offset
            self.read_cache_len = got
        memcpy(into, self.read_cache + (offset - self.read_cache_start), sizeof(Flow))
        return ST_OK

    cdef int revive(self, Py_ssize_t pos) noexcept nogil:
        """Bring the cold record at table position pos back into the pool."""
        cdef int64_t c = COLD_BASE - self.table[pos].entry
        cdef int64_t slot = self.new_slot()
        if slot == EMPTY:
            return ST_NO_MEMORY
        if self.read_cold(c, &self.pool[slot]) != ST_OK:
            self.free_slot(slot)
            return ST_SPILL_FAILED
        self.pool[slot].heap_pos = self.cold[c].heap_pos     # the copy in the file has an old one
        self.heap[self.cold[c].heap_pos].entry = slot
        self.table[pos].entry = <int32_t>slot
        self.free_cold(c)
        return ST_OK

    cdef int spill_slots(self, const int64_t *slots, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, pos
        cdef int status
        for i in range(n):
            if not self.pool[slots[i]].used:
                continue
            pos = self.find(&self.pool[slots[i]].key, self.pool[slots[i]].hash)
            status = self.spill(pos)
            if status != ST_OK:
                return status
        return self.write_staged()

    def spill_oldest(self, Py_ssize_t keep):
        """Spill the records of the open connections idle longest until at most `keep` stay in memory;
        returns a status code."""
        cdef Py_ssize_t n_hot = self.n_open - self.n_cold, i, k = 0
        cdef int status = self.indexed()
        if status != ST_OK or n_hot <= keep:
            return status
        self.finish_order = None
        seen = np.empty(n_hot, dtype=np.int64)
        slots = np.empty(n_hot, dtype=np.int64)
        firsts = np.empty(n_hot, dtype=np.uint64)
        cdef int64_t[::1] sv = seen
        cdef int64_t[::1] sl = slots
        cdef uint64_t[::1] fv = firsts
        for i in range(self.pool_top):
            if self.pool[i].used:
                sv[k] = self.pool[i].seen_max
                sl[k] = i
                fv[k] = self.pool[i].first_frame
                k += 1
        picked = np.argpartition(seen, n_hot - keep - 1)[:n_hot - keep]
        # written in first-frame order, the order finish() and snapshot_blocks() read them back in
        picked = picked[np.argsort(firsts[picked], kind="stable")]
        cdef int64_t[::1] chosen = np.ascontiguousarray(slots[picked])
        with nogil:
            status = self.spill_slots(&chosen[0], chosen.shape[0])
        return status

    # --- connections -----------------------------------------------------------------------------------

    cdef void start_connection(self, Flow *f, bint a_is_src, uint64_t frame, int64_t ts, uint16_t sport,
                               uint16_t dport, uint8_t ip_version, int32_t vlan, uint16_t flags) noexcept nogil:
        cdef bint src_srv, dst_srv, flip = False
        # everything of the connection starts from zero; the pair's fields are kept by the caller
        f.ev_rst = False
        f.ev_fin_a = False
        f.ev_fin_b = False
        f.first_frame = frame
        f.last_frame = frame
        if self.min_first_known and frame < self.min_first:
            self.min_first = frame
        f.first_ts = ts
        f.ts_min = ts
        f.ts_max = ts
        f.first_src_is_a = a_is_src
        f.ip_version = ip_version
        f.vlan = vlan
        memset(f.pkts, 0, sizeof(f.pkts))
        memset(f.payload, 0, sizeof(f.payload))
        memset(f.ip_bytes, 0, sizeof(f.ip_bytes))
        memset(f.retx, 0, sizeof(f.retx))
        memset(f.syns, 0, sizeof(f.syns))
        memset(f.synacks, 0, sizeof(f.synacks))
        memset(f.hs, 0, sizeof(f.hs))
        memset(&f.td, 0, sizeof(Teardown))
        reset_conn(&f.zc)
        f.hist.data = NULL
        f.hist.len = 0
        f.hist.cap = 0
        f.hist.failed = False
        f.deferred = NULL
        f.alt = NULL
        f.n_deferred = 0
        f.cap_deferred = 0
        f.flip_pending = False
        # IPBasedAnalyzer::NewConn with TCPAnalyzer::WantConnection (tcpstate.py, _tcpstate.run): anything
        # but a pure SYN first flips by ports; a SYN-ACK first flips once ACKs or data follow it.
        if not ((flags & SYN) and not (flags & ACK)):
            src_srv = self.server_port[sport] != 0
            dst_srv = self.server_port[dport] != 0
            flip = src_srv and (not (flags & SYN) and sport < dport if dst_srv else True)
            if not flip and (flags & SYN) and (flags & ACK):
                f.flip_pending = True
        if flip:
            flip_roles(&f.zc, &f.hist)
        f.zc.last_time = ts

    cdef int finish_connection(self, Flow *f) noexcept nogil:
        """Write f's row (orientation decided now) and free its per-connection memory."""
        cdef Row *r = &self.rows[self.n_rows]
        cdef int o, p
        cdef Handshake *h
        cdef Teardown *t = &f.td
        cdef Endpoint *oe
        cdef Endpoint *re
        cdef Py_ssize_t i
        cdef bint refused, fin_first
        cdef Opening *ro
        cdef uint8_t first_addr[16]
        cdef uint8_t other_addr[16]
        cdef uint16_t first_port, other_port
        if f.flip_pending:
            replay_deferred(f)
        if f.first_frame == self.min_first:
            self.min_first_known = False
        o = f.zc.orig
        p = 1 - o
        h = &f.hs[o]
        memset(r, 0, sizeof(Row))
        r.first_frame = f.first_frame
        r.last_frame = f.last_frame
        r.ts_start = f.ts_min
        r.ts_end = f.ts_max
        r.first_ts = f.first_ts
        r.last_time = f.zc.last_time
        # the first sender's end of the key, then the other
        if f.first_src_is_a:
            store_be64(first_addr, f.key.a_hi)
            store_be64(first_addr + 8, f.key.a_lo)
            store_be64(other_addr, f.key.b_hi)
            store_be64(other_addr + 8, f.key.b_lo)
            first_port, other_port = f.key.a_p, f.key.b_p
        else:
            store_be64(first_addr, f.key.b_hi)
            store_be64(first_addr + 8, f.key.b_lo)
            store_be64(other_addr, f.key.a_hi)
            store_be64(other_addr + 8, f.key.a_lo)
            first_port, other_port = f.key.b_p, f.key.a_p
        if o == 0:
            memcpy(r.orig_addr, first_addr, 16)
            memcpy(r.resp_addr, other_addr, 16)
            r.orig_p = first_port
            r.resp_p = other_port
        else:
            memcpy(r.orig_addr, other_addr, 16)
            memcpy(r.resp_addr, first_addr, 16)
            r.orig_p = other_port
            r.resp_p = first_port
        r.ip_version = f.ip_version
        r.vlan = f.vlan
        r.orig_pkts = f.pkts[o]
        r.resp_pkts = f.pkts[p]
        r.orig_payload_bytes = f.payload[o]
        r.resp_payload_bytes = f.payload[p]
        r.orig_ip_bytes = f.ip_bytes[o]
        r.resp_ip_bytes = f.ip_bytes[p]
        r.orig_retransmissions = f.retx[o]
        r.resp_retransmissions = f.retx[p]
        r.syn_count = f.syns[o]
        r.synack_count = f.synacks[p]
        oe = &f.zc.ep[o]
        re = &f.zc.ep[p]
        r.orig_size = endpoint_size(oe, re)
        r.resp_size = endpoint_size(re, oe)
        if f.hist.failed:
            return ST_NO_MEMORY
        r.conn_state = conn_state(oe, re, r.orig_size, r.resp_size, f.hist.data, f.hist.len)
        r.hist_offset = self.out_hist.len
        r.hist_len = f.hist.len
        text_extend(&self.out_hist, f.hist.data, f.hist.len)
        if self.out_hist.failed:
            return ST_NO_MEMORY

        # handshake (summary.py)
        refused = h.has_s1 and not h.has_s2 and h.answered_rst
        if not h.has_s1:
            r.handshake = HS_PARTIAL
        elif h.has_s3:
            r.handshake = HS_COMPLETE
        elif h.has_s2:
            r.handshake = HS_SYN_SYNACK
        elif h.answered_rst:
            r.handshake = HS_REFUSED
        else:
            r.handshake = HS_SYN_ONLY
        r.has_syn = h.has_s1
        r.syn_ts = h.s1_ts
        r.has_synack = h.has_s2
        r.synack_ts = h.s2_ts
        r.rtt1 = h.syn_clock
        r.has_handshake_ack = h.has_s3
        r.handshake_ack_ts = h.s3_ts
        r.rtt2 = h.synack_clock
        r.has_orig_isn = h.has_s1
        r.orig_isn = h.isn
        r.has_resp_isn = h.has_s2 or h.has_first_synack
        r.resp_isn = h.s2_seq if h.has_s2 else h.first_synack_seq
        r.orig_opt = h.s1_opt.present
        r.orig_mss = h.s1_opt.mss
        r.orig_wscale = h.s1_opt.wscale if h.s1_opt.present else -1
        r.orig_sack_ok = h.s1_opt.sack_ok
        ro = &h.s2_opt if h.has_s2 else &h.first_synack_opt
        r.resp_opt = ro.present
        r.resp_mss = ro.mss
        r.resp_wscale = ro.wscale if ro.present else -1
        r.resp_sack_ok = ro.sack_ok

        # close
        if refused:
            r.close = CL_REFUSED
        elif t.fins_before_rst and t.simultaneous:
            r.close = CL_SIMULTANEOUS
        elif t.fins_before_rst:
            r.close = CL_FIN
        elif t.has_rst:
            r.close = CL_RST
        elif t.has_t1:
            r.close = CL_HALF_CLOSED
        else:
            r.close = CL_NONE
        fin_first = t.has_t1 and (not t.has_rst or t.t1_before_rst)
        if fin_first:
            r.close_initiator = 0 if t.closer == o else 1
        elif t.has_rst:
            r.close_initiator = 0 if t.rst_side == o else 1
        else:
            r.close_initiator = 2
        r.rst_by = (1 if t.rst_from[o] else 0) | (2 if t.rst_from[p] else 0)
        r.has_fin1 = t.has_t1
        r.fin1_ts = t.t1_ts
        r.has_fin2 = t.has_t3
        r.fin2_ts = t.t3_ts
        r.has_rst = t.has_rst
        r.rst_ts = t.rst_ts
        if t.fins_before_rst and not refused and t.has_t3 and t.has_t4 and t.has_t2:
            r.teardown_segments = 3 if t.combined else 4
        self.n_rows += 1
        free_flow_memory(f)
        return ST_OK

    cdef int finish_entry(self, int64_t entry) noexcept nogil:
        """Finish an open connection's record and give it back; its table place and heap entry are the
        caller's (release(), or none while finish() has let the table and heap go)."""
        cdef int status
        if entry >= 0:
            status = self.finish_connection(&self.pool[entry])
            self.free_slot(entry)
        else:
            status = self.read_cold(COLD_BASE - entry, &self.scratch)
            if status != ST_OK:
                return status
            status = self.finish_connection(&self.scratch)
            self.free_cold(COLD_BASE - entry)
        self.n_open -= 1
        return status

    cdef int finish_listed(self, int64_t entry) noexcept nogil:
        """finish_entry() while unindexed, where a spilled record is pending[COLD_BASE - entry]."""
        cdef Pending *p
        cdef int status
        if entry >= 0:
            return self.finish_entry(entry)
        p = &self.pending[COLD_BASE - entry]
        status = self.read_record(p.offset, &self.scratch)
        if status != ST_OK:
            return status
        status = self.finish_connection(&self.scratch)
        self.free_offset(p.offset)
        p.offset = -1
        self.n_cold -= 1
        self.n_open -= 1
        return status

    cdef int unindex(self, int64_t[::1] order) noexcept nogil:
        """Let the table, the heap and the Cold entries go for finish(), which releases the open connections
        in `order` (pool slots, or COLD_BASE - k for cold[k], rewritten to COLD_BASE - k for pending[k])."""
        cdef Py_ssize_t i, k = 0
        cdef int64_t c
        cdef Pending *pending = NULL
        cdef Place *table = <Place *>big_alloc(1024 * sizeof(Place))
        if self.n_cold:
            pending = <Pending *>malloc(self.n_cold * sizeof(Pending))
        if table == NULL or (self.n_cold and pending == NULL):
            big_free(table, 1024 * sizeof(Place))
            free(pending)
            return ST_NO_MEMORY
        for i in range(order.shape[0]):
            if order[i] < 0:
                c = COLD_BASE - order[i]
                pending[k] = Pending(self.cold[c].offset, self.cold[c].first_frame, self.cold[c].hist_data,
                                     self.cold[c].deferred, self.cold[c].alt)
                order[i] = COLD_BASE - k
                k += 1
        self.pending = pending
        self.n_pending = k
        big_free(self.cold, self.cold_cap * sizeof(Cold))
        self.cold = NULL
        self.cold_cap = self.cold_top = 0
        self.cold_free_head = EMPTY
        big_free(self.table, (self.table_mask + 1) * sizeof(Place))
        self.table, self.table_mask = table, 1023
        for i in range(1024):
            self.table[i].entry = EMPTY
        big_free(self.heap, self.heap_cap * sizeof(HeapEntry))
        self.heap = NULL
        self.heap_cap = self.heap_len = 0
        self.unindexed = True
        return ST_OK

    cdef int index_open(self) noexcept nogil:
        """The table, the heap and the Cold entries again list every open connection (after finish() let
        them go)."""
        cdef Py_ssize_t i, pos
        cdef int64_t entry, c
        cdef Pending *p
        cdef uint64_t j
        for i in range(self.n_pending):
            p = &self.pending[i]
            if p.offset < 0:
                continue
            if self.read_record(p.offset, &self.scratch) != ST_OK:
                return ST_SPILL_FAILED
            c = self.new_cold()
            if c == EMPTY:
                return ST_NO_MEMORY
            self.cold[c] = Cold(self.scratch.key, self.scratch.hash, self.scratch.seen_max, p.first_frame,
                                p.offset, EMPTY, p.hist_data, p.deferred, p.alt, 0)
            p.offset = -1       # the Cold entry's now
        free(self.pending)
        self.pending = NULL
        self.n_pending = 0
        for j in range(self.table_mask + 1):
            self.table[j].entry = EMPTY
        self.heap_len = 0
        while <uint64_t>self.n_open * 2 > self.table_mask:
            if self.grow_table() != ST_OK:
                return ST_NO_MEMORY
        self.unindexed = False
        for i in range(self.pool_top + self.cold_top):
            if i < self.pool_top:
                if not self.pool[i].used:
                    continue
                entry = i
            else:
                if self.cold[i - self.pool_top].offset < 0:
                    continue
                entry = COLD_BASE - (i - self.pool_top)
            pos = self.find(self.entry_key(entry), self.entry_hash(entry))
            if self.heap_push(entry, self.entry_seen_max(entry)) != ST_OK:
                return ST_NO_MEMORY
            self.table[pos] = Place(<int32_t>entry, <uint32_t>self.entry_hash(entry))
        return ST_OK

    cdef int indexed(self):
        """index_open() if finish() left the table and heap; a status code."""
        cdef int status = ST_OK
        if self.unindexed:
            with nogil:
                status = self.index_open()
            self.finish_order = None
        return status

    cdef int release(self, Py_ssize_t table_pos) noexcept nogil:
        """Finish the flow at table_pos and give its record back."""
        cdef int64_t entry = self.table[table_pos].entry
        cdef Py_ssize_t was_open = self.n_open
        cdef int status
        self.heap_remove(self.pool[entry].heap_pos if entry >= 0 else self.cold[COLD_BASE - entry].heap_pos)
        status = self.finish_entry(entry)
        if self.n_open < was_open:      # given back (a spilled record that cannot be read back stays)
            self.remove_at(table_pos)
        return status

    cdef int feed_rows(self, Py_ssize_t n, const uint64_t *frame, const int64_t *ts, const int64_t *now,
                       const int32_t *vlan, const uint8_t *ip_version, const uint8_t *src, const uint8_t *dst,
                       const uint16_t *sport, const uint16_t *dport, const uint32_t *seq, const uint32_t *ack,
                       const uint16_t *tcp_flags, const uint16_t *window, const uint32_t *payload_len,
                       const uint32_t *claimed_len, const uint32_t *ip_len, const uint16_t *mss,
                       const int16_t *wscale, const uint8_t *sack_ok, const uint8_t *pflags,
                       const int64_t *rows, uint64_t *conn_first) noexcept nogil:
        cdef Py_ssize_t i, j
        cdef Key key
        cdef int status
        # the hashes first, so that the table slot and the record of a segment a few rows ahead can be
        # fetched from memory while this one is processed (with many open connections both are cache misses)
        cdef uint64_t *hashes = <uint64_t *>malloc(n * sizeof(uint64_t))
        if hashes == NULL:
            return ST_NO_MEMORY
        for j in range(n):
            i = rows[j] if rows != NULL else j
            make_key(&key, src + 16 * i, dst + 16 * i, sport[i], dport[i], vlan[i] if self.vlan_aware else 0)
            hashes[j] = key_hash(&key, self.hash_seed)
        status = self.feed_hashed(n, hashes, frame, ts, now, vlan, ip_version, src, dst, sport, dport, seq, ack,
                                  tcp_flags, window, payload_len, claimed_len, ip_len, mss, wscale, sack_ok, pflags,
                                  rows, conn_first)
        free(hashes)
        return status

    cdef int feed_hashed(self, Py_ssize_t n, const uint64_t *hashes, const uint64_t *frame, const int64_t *ts,
                         const int64_t *now, const int32_t *vlan, const uint8_t *ip_version, const uint8_t *src,
                         const uint8_t *dst, const uint16_t *sport, const uint16_t *dport, const uint32_t *seq,
                         const uint32_t *ack, const uint16_t *tcp_flags, const uint16_t *window,
                         const uint32_t *payload_len, const uint32_t *claimed_len, const uint32_t *ip_len,
                         const uint16_t *mss, const int16_t *wscale, const uint8_t *sack_ok,
                         const uint8_t *pflags, const int64_t *rows, uint64_t *conn_first) noexcept nogil:
        """Segment j is row rows[j] of the columns (row j when rows is NULL); hashes and conn_first go by j."""
        cdef Py_ssize_t i, j, pos
        cdef Key key
        cdef uint64_t h
        cdef bint a_is_src, pure_syn, synack, new_conn, new_epoch, same_isn, bad
        cdef uint16_t flags, sp, dp
        cdef int64_t slot, ahead
        cdef int k, o, status
        cdef Flow *f
        for j in range(n):
            i = rows[j] if rows != NULL else j
            if j + PREFETCH_TABLE < n:
                __builtin_prefetch(&self.table[hashes[j + PREFETCH_TABLE] & self.table_mask])
            if j + PREFETCH_RECORD < n:
                ahead = self.table[hashes[j + PREFETCH_RECORD] & self.table_mask].entry
                if ahead >= 0:
                    prefetch_hot(&self.pool[ahead])
            sp = sport[i]
            dp = dport[i]
            a_is_src = make_key(&key, src + 16 * i, dst + 16 * i, sp, dp, vlan[i] if self.vlan_aware else 0)
            h = hashes[j]
            flags = tcp_flags[i]
            pure_syn = (flags & SYN) != 0 and (flags & ACK) == 0
            synack = (flags & SYN) != 0 and (flags & ACK) != 0

            pos = self.find(&key, h)
            slot = self.table[pos].entry
            if slot < EMPTY:
                status = self.revive(pos)
                if status != ST_OK:
                    return status
                slot = self.table[pos].entry
            new_epoch = slot == EMPTY
            new_conn = new_epoch
            if slot != EMPTY:
                f = &self.pool[slot]
                if now[i] - f.seen_max > self.timeout_ns:
                    new_epoch = new_conn = True
                elif pure_syn:
                    # flows.py: the expected ISN is the epoch's latest pure SYN's, else the latest SYN-ACK's
                    # (ack - 1) when that came from the other side; a same-ISN SYN splits only after a close
                    if f.ep_has_syn:
                        same_isn = seq[i] == f.ep_syn_seq
                    elif f.ep_has_synack and f.ep_synack_from_a != a_is_src:
                        same_isn = seq[i] == f.ep_synack_ack - <uint32_t>1
                    else:
                        same_isn = False
                    new_conn = not same_isn or f.ev_rst or (f.ev_fin_a and f.ev_fin_b)
                if new_conn:
                    status = self.finish_connection(f)
                    if status != ST_OK:
                        return status
            else:
                slot = self.new_slot()
                if slot == EMPTY:
                    return ST_NO_MEMORY
                f = &self.pool[slot]
                f.key = key
                f.hash = h
                f.used = True
                f.seen_max = ts[i]
                if self.add_open(pos, slot, ts[i]) != ST_OK:
                    return ST_NO_MEMORY
            if new_epoch:
                f.ep_has_syn = False
                f.ep_has_synack = False
            if new_conn:
                self.start_connection(f, a_is_src, frame[i], ts[i], sp, dp, ip_version[i], vlan[i], flags)
            if conn_first != NULL:
                conn_first[j] = f.first_frame

            # the pair
            if ts[i] > f.seen_max:
                f.seen_max = ts[i]
            if pure_syn:
                f.ep_has_syn = True
                f.ep_syn_seq = seq[i]
            elif synack:
                f.ep_has_synack = True
                f.ep_synack_from_a = a_is_src
                f.ep_synack_ack = ack[i]
            if flags & RST:
                f.ev_rst = True
            if flags & FIN:
                if a_is_src:
                    f.ev_fin_a = True
                else:
                    f.ev_fin_b = True

            # the connection
            k = 0 if a_is_src == f.first_src_is_a else 1
            bad = (pflags[i] & BAD_CHECKSUM_FLAG) != 0
            f.last_frame = frame[i]
            if ts[i] < f.ts_min:
                f.ts_min = ts[i]
            if ts[i] > f.ts_max:
                f.ts_max = ts[i]
            if not bad:
                f.pkts[k] += 1
                f.ip_bytes[k] += ip_len[i]
            f.payload[k] += payload_len[i]
            if pure_syn:
                f.syns[k] += 1
            elif synack:
                f.synacks[k] += 1
            for o in range(2):
                handshake_step(&f.hs[o], k == o, flags, seq[i], ack[i], ts[i], mss[i], wscale[i], sack_ok[i])
            teardown_step(&f.td, k, flags, seq[i], ack[i], payload_len[i], ts[i])
            if f.flip_pending:
                if (flags & (SYN | ACK)) == (SYN | ACK):
                    if f.alt != NULL:
                        zeek_step(f, k, flags, seq[i], ack[i], claimed_len[i], window[i], ts[i], bad)
                        zeek_step_on(&f.alt.zc, &f.alt.hist, f.alt.retx, k, flags, seq[i], ack[i],
                                     claimed_len[i], window[i], ts[i], bad)
                        continue
                    if defer(f, k, flags, seq[i], ack[i], claimed_len[i], window[i], ts[i], bad) != ST_OK:
                        return ST_NO_MEMORY
                    if f.n_deferred >= DEFER_LIMIT and follow_both(f) != ST_OK:
                        return ST_NO_MEMORY
                    continue
                if (flags & (SYN | RST)) == 0:
                    if f.alt != NULL:
                        adopt_alt(f)
                    else:
                        flip_roles(&f.zc, &f.hist)
                replay_deferred(f)
            zeek_step(f, k, flags, seq[i], ack[i], claimed_len[i], window[i], ts[i], bad)
        return ST_OK

    def feed(self, dict seg, conn_first=None, rows=None):
        """Feed TCP segments (decoder columns, frame order, with network_time); returns a status code.
        rows: int64 indices (increasing) of the segments among the columns' rows, or None for every row.
        conn_first: a uint64 array with a slot per segment, or None; gets each segment's connection (the
        frame of its first segment), for the segments table (pipeline.py analyses those once it has finished)."""
        cdef Py_ssize_t n = seg["frame"].shape[0]
        cdef Py_ssize_t n_rows = n, j
        cdef const int64_t[::1] row_index
        cdef const int64_t *rows_ptr = NULL
        cdef const uint64_t[::1] frame = seg["frame"]
        cdef const int64_t[::1] ts = seg["ts"]
        cdef const int64_t[::1] now = seg["network_time"]
        cdef const int32_t[::1] vlan = seg["vlan"]
        cdef const uint8_t[::1] ip_version = seg["ip_version"]
        cdef const uint8_t[:, ::1] src = seg["src"]
        cdef const uint8_t[:, ::1] dst = seg["dst"]
        cdef const uint16_t[::1] sport = seg["sport"]
        cdef const uint16_t[::1] dport = seg["dport"]
        cdef const uint32_t[::1] seq = seg["seq"]
        cdef const uint32_t[::1] ack = seg["ack"]
        cdef const uint16_t[::1] flags = seg["tcp_flags"]
        cdef const uint16_t[::1] window = seg["window"]
        cdef const uint32_t[::1] payload_len = seg["payload_len"]
        cdef const uint32_t[::1] claimed_len = seg["claimed_len"]
        cdef const uint32_t[::1] ip_len = seg["ip_len"]
        cdef const uint16_t[::1] mss = seg["mss"]
        cdef const int16_t[::1] wscale = seg["wscale"]
        cdef const uint8_t[::1] sack_ok = seg["sack_ok"]
        cdef const uint8_t[::1] pflags = seg["pflags"]
        cdef uint64_t[::1] first_out
        cdef uint64_t *first_ptr = NULL
        cdef int status
        for name in ("ts", "network_time", "vlan", "ip_version", "src", "dst", "sport", "dport", "seq", "ack",
                     "tcp_flags", "window", "payload_len", "claimed_len", "ip_len", "mss", "wscale", "sack_ok",
                     "pflags"):
            if seg[name].shape[0] != n:
                raise ValueError("feed: column lengths disagree")
        if rows is not None:
            row_index = rows
            n_rows = row_index.shape[0]
            # in range and increasing (frame order), checked here: the loop reads the columns without bounds
            # checks
            for j in range(n_rows):
                if row_index[j] >= n or row_index[j] < (row_index[j - 1] + 1 if j else 0):
                    raise ValueError("feed: rows must be increasing indices of the columns' rows")
            if n_rows:
                rows_ptr = &row_index[0]
        if n_rows == 0:
            return ST_OK
        if src.shape[1] != 16 or dst.shape[1] != 16:
            raise ValueError("feed: addresses must be 16 bytes")
        if conn_first is not None:
            first_out = conn_first
            if first_out.shape[0] != n_rows:
                raise ValueError("feed: conn_first has the wrong length")
            first_ptr = &first_out[0]
        status = self.indexed()
        if status != ST_OK:
            return status
        self.reserve_rows(n_rows)
        self.finish_order = None
        with nogil:
            status = self.feed_rows(n_rows, &frame[0], &ts[0], &now[0], &vlan[0], &ip_version[0], &src[0, 0],
                                    &dst[0, 0], &sport[0], &dport[0], &seq[0], &ack[0], &flags[0], &window[0],
                                    &payload_len[0], &claimed_len[0], &ip_len[0], &mss[0], &wscale[0],
                                    &sack_ok[0], &pflags[0], rows_ptr, first_ptr)
        return status

    cdef int expire_flows(self, int64_t now, bint everything) noexcept nogil:
        cdef Py_ssize_t pos = 0
        cdef int64_t entry, seen
        cdef int status
        if everything:
            # a removal shifts later entries back into pos, so pos advances only past kept entries
            while pos <= <Py_ssize_t>self.table_mask:
                if self.table[pos].entry != EMPTY:
                    status = self.release(pos)
                    if status != ST_OK:
                        return status
                    continue
                pos += 1
            return ST_OK
        # the heap's keys are lower bounds: a key that comes due is checked against the latest timestamp and
        # either finishes its connection or moves up to that timestamp
        while self.heap_len and now - self.heap[0].key > self.timeout_ns:
            entry = self.heap[0].entry
            seen = self.entry_seen_max(entry)
            if now - seen > self.timeout_ns:
                status = self.release(self.find(self.entry_key(entry), self.entry_hash(entry)))
                if status != ST_OK:
                    return status
            else:
                self.heap[0].key = seen
                self.heap_sift_down(0)
        return ST_OK

    def expire(self, int64_t now):
        """Finish the connections no packet at network time >= now can join; returns a status code."""
        cdef int status = self.indexed()
        if status != ST_OK:
            return status
        self.reserve_rows(self.n_open)
        self.finish_order = None
        with nogil:
            status = self.expire_flows(now, False)
        return status

    def finish(self, Py_ssize_t max_rows=-1):
        """End of input: finish the open connections, oldest first (by first frame), at most max_rows of
        them (all when negative) so that the caller can write them in portions; returns a status code.
        The order is taken once, at the first call after the last feed()."""
        cdef int status = ST_OK
        cdef Py_ssize_t i, count, pos, end
        cdef int64_t entry
        cdef int64_t[::1] chosen
        if (max_rows < 0 or max_rows >= self.n_open) and self.n_cold == 0 and not self.unindexed:
            self.reserve_rows(self.n_open)
            with nogil:
                status = self.expire_flows(0, True)
            self.finish_order = None
            return status
        if max_rows < 0 or max_rows > self.n_open:
            # spilled records in first-frame order too: read back in the order they were written, not in
            # the table's (hash) order, which would cost a read for each
            max_rows = self.n_open
        if max_rows == 0:
            return ST_OK
        if self.finish_order is None:
            order = self._open_entries_by_first_frame()
            # from here on connections only finish, in this order: the table, the heap and the Cold entries
            # are let go
            status = self.unindex(order)
            if status != ST_OK:
                return status
            self.finish_order = order
            self.finish_next = 0
        order = self.finish_order
        end = min(self.finish_next + max_rows, len(order))
        portion = order[self.finish_next:end]
        self.finish_next = end
        # the rows are sorted by first frame when drained, so the records can be read in any order: the
        # spilled ones by their place in the file, which makes the reads sequential (in first-frame order
        # they hop between the stretches written by successive spills, one pread per record)
        cold = portion < 0
        if cold.any():
            offsets = np.full(len(portion), -1, dtype=np.int64)
            offsets[cold] = self._pending_offsets(COLD_BASE - portion[cold])
            portion = portion[np.argsort(offsets, kind="stable")]
        chosen = np.ascontiguousarray(portion)
        self.reserve_rows(chosen.shape[0])
        with nogil:
            for i in range(chosen.shape[0]):
                status = self.finish_listed(chosen[i])
                if status != ST_OK:
                    break
            if self.n_open == 0:
                self.unindexed = False
                free(self.pending)
                self.pending = NULL
                self.n_pending = 0
        if status == ST_OK:
            # the oldest open connection is the next one in the order
            if self.finish_next < len(order):
                entry = order[self.finish_next]
                self.min_first = self.pool[entry].first_frame if entry >= 0 else self.pending[COLD_BASE - entry].first_frame
            else:
                self.min_first = NO_FRAME
            self.min_first_known = True
        return status

    def _pending_offsets(self, const int64_t[::1] which):
        out = np.empty(which.shape[0], dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef Py_ssize_t i
        for i in range(which.shape[0]):
            o[i] = self.pending[which[i]].offset
        return out

    def _open_entries_by_first_frame(self):
        cdef Py_ssize_t i, count = 0
        firsts = np.empty(self.n_open, dtype=np.uint64)
        entries = np.empty(self.n_open, dtype=np.int64)
        cdef uint64_t[::1] f = firsts
        cdef int64_t[::1] e = entries
        for i in range(self.pool_top):
            if self.pool[i].used:
                f[count] = self.pool[i].first_frame
                e[count] = i
                count += 1
        for i in range(self.cold_top):
            if self.cold[i].offset >= 0:
                f[count] = self.cold[i].first_frame
                e[count] = COLD_BASE - i
                count += 1
        return np.ascontiguousarray(entries[np.argsort(firsts, kind="stable")])

    def min_open_first_frame(self):
        """The first frame of the oldest open connection (2**64 - 1 when none is open)."""
        cdef uint64_t low = NO_FRAME
        cdef Py_ssize_t i
        if self.min_first_known:
            return self.min_first
        with nogil:
            for i in range(self.pool_top):
                if self.pool[i].used and self.pool[i].first_frame < low:
                    low = self.pool[i].first_frame
            for i in range(self.cold_top):
                if self.cold[i].offset >= 0 and self.cold[i].first_frame < low:
                    low = self.cold[i].first_frame
            for i in range(self.n_pending):
                if self.pending[i].offset >= 0 and self.pending[i].first_frame < low:
                    low = self.pending[i].first_frame
        self.min_first = low
        self.min_first_known = True
        return low

    # --- saving and restoring the open connections (fastflow batch carries them across files and runs) ----

    def snapshot_blocks(self, Py_ssize_t per_block=1024):
        """The open connections, oldest first, as blocks of bytes (each whole records: the Flow record,
        then its history text and its deferred segments), for restore() in an engine of the same build.
        A generator, so that a million open connections are never all copied at once; the engine is not
        changed. Raises OSError if a record cannot be read back from the spill file."""
        cdef Flow rec
        cdef int64_t entry
        cdef Py_ssize_t i, n
        if self.indexed() != ST_OK:
            raise OSError("cannot read an open connection back from the spill file")
        order = self._open_entries_by_first_frame()
        n = len(order)
        for start in range(0, n, per_block):
            parts = []
            for i in range(start, min(start + per_block, n)):
                entry = order[i]
                if entry >= 0:
                    rec = self.pool[entry]
                elif self.read_cold(COLD_BASE - entry, &rec) != ST_OK:
                    raise OSError("cannot read an open connection back from the spill file")
                parts.append((<char *>&rec)[:sizeof(Flow)])
                if rec.hist.len:
                    parts.append(rec.hist.data[:rec.hist.len])
                if rec.n_deferred:
                    parts.append((<char *>rec.deferred)[:rec.n_deferred * sizeof(Deferred)])
                if rec.alt != NULL:
                    parts.append((<char *>rec.alt)[:sizeof(Alt)])
                    if rec.alt.hist.len:
                        parts.append(rec.alt.hist.data[:rec.alt.hist.len])
            yield b"".join(parts)

    def restore(self, const uint8_t[::1] block not None, uint32_t part=0, uint32_t nparts=1):
        """Add the open connections of one snapshot block, those of part `part` of `nparts` (see
        packet_parts); returns a status code. Raises ValueError for a block this build did not write
        (truncated, or a key that is already open)."""
        cdef Py_ssize_t at = 0, n = block.shape[0], pos
        cdef int64_t slot
        cdef Flow *f
        cdef Flow rec
        cdef Alt alt
        cdef size_t hist_bytes, deferred_bytes, alt_at
        cdef bint has_alt
        cdef int status = self.indexed()
        if status != ST_OK:
            return status
        while at < n:
            if n - at < <Py_ssize_t>sizeof(Flow):
                raise ValueError("snapshot block: truncated record")
            memcpy(&rec, &block[at], sizeof(Flow))
            at += sizeof(Flow)
            hist_bytes = <size_t>rec.hist.len
            deferred_bytes = <size_t>rec.n_deferred * sizeof(Deferred)
            if rec.hist.len < 0 or <size_t>(n - at) < hist_bytes + deferred_bytes:
                raise ValueError("snapshot block: truncated record")
            # the flipped orientation's state follows when the record had one (its pointer was not NULL)
            has_alt = rec.alt != NULL
            alt_at = at + hist_bytes + deferred_bytes
            if has_alt:
                if <size_t>n < alt_at + sizeof(Alt):
                    raise ValueError("snapshot block: truncated record")
                memcpy(&alt, &block[alt_at], sizeof(Alt))
                if alt.hist.len < 0 or <size_t>n < alt_at + sizeof(Alt) + <size_t>alt.hist.len:
                    raise ValueError("snapshot block: truncated record")
            if nparts > 1 and pair_part(rec.key.a_hi, rec.key.a_lo, rec.key.a_p, rec.key.b_hi, rec.key.b_lo,
                                        rec.key.b_p, nparts) != part:
                at = alt_at + ((sizeof(Alt) + <size_t>alt.hist.len) if has_alt else 0)
                continue
            rec.hash = key_hash(&rec.key, self.hash_seed)
            pos = self.find(&rec.key, rec.hash)
            if self.table[pos].entry != EMPTY:
                raise ValueError("snapshot block: a connection that is already open")
            rec.hist.data = NULL
            rec.hist.cap = 0
            rec.deferred = NULL
            rec.cap_deferred = 0
            rec.alt = NULL
            if has_alt:
                rec.alt = <Alt *>malloc(sizeof(Alt))
                if rec.alt == NULL:
                    return ST_NO_MEMORY
                rec.alt[0] = alt
                rec.alt.hist.data = NULL
                rec.alt.hist.cap = 0
                if alt.hist.len:
                    rec.alt.hist.data = <char *>malloc(<size_t>alt.hist.len)
                    if rec.alt.hist.data == NULL:
                        free(rec.alt)
                        return ST_NO_MEMORY
                    memcpy(rec.alt.hist.data, &block[alt_at + sizeof(Alt)], <size_t>alt.hist.len)
                    rec.alt.hist.cap = alt.hist.len
            if hist_bytes:
                rec.hist.data = <char *>malloc(hist_bytes)
                if rec.hist.data == NULL:
                    free_alt(&rec)
                    return ST_NO_MEMORY
                memcpy(rec.hist.data, &block[at], hist_bytes)
                rec.hist.cap = rec.hist.len
            at += hist_bytes
            if deferred_bytes:
                rec.deferred = <Deferred *>malloc(deferred_bytes)
                if rec.deferred == NULL:
                    free(rec.hist.data)
                    free_alt(&rec)
                    return ST_NO_MEMORY
                memcpy(rec.deferred, &block[at], deferred_bytes)
                rec.cap_deferred = rec.n_deferred
            at += deferred_bytes
            if has_alt:
                at += sizeof(Alt) + <size_t>alt.hist.len
            slot = self.new_slot()
            if slot == EMPTY:
                free(rec.hist.data)
                free(rec.deferred)
                free_alt(&rec)
                return ST_NO_MEMORY
            rec.used = True
            rec.next_free = EMPTY
            self.pool[slot] = rec
            if self.add_open(pos, slot, rec.seen_max) != ST_OK:
                if self.table[pos].entry != slot:      # not in the table: the record's memory is still ours
                    free(rec.hist.data)
                    free(rec.deferred)
                    free_alt(&rec)
                return ST_NO_MEMORY
        self.min_first_known = False
        self.finish_order = None
        return ST_OK

    def drain(self):
        """The finished connections since the last drain: (structured array of ROW_DTYPE, history bytes)."""
        rows = np.empty(self.n_rows, dtype=ROW_DTYPE)
        if self.n_rows:
            memcpy(<void *>cnp.PyArray_DATA(rows), self.rows, self.n_rows * sizeof(Row))
        text = self.out_hist.data[:self.out_hist.len] if self.out_hist.len else b""
        self.n_rows = 0
        self.out_hist.len = 0
        return rows, text


def packet_parts(const uint8_t[:, ::1] src not None, const uint8_t[:, ::1] dst not None,
                 const uint16_t[::1] sport not None, const uint16_t[::1] dport not None,
                 const uint8_t[::1] with_ports not None, uint32_t nparts):
    """Each packet's part of nparts: by its address pair, with the ports where with_ports (TCP, UDP: the
    ports are in those engines' keys; ICMP and other IP are keyed otherwise)."""
    cdef Py_ssize_t n = src.shape[0], i
    if dst.shape[0] != n or sport.shape[0] != n or dport.shape[0] != n or with_ports.shape[0] != n or nparts < 1:
        raise ValueError("packet_parts: column lengths disagree")
    out = np.empty(n, dtype=np.uint32)
    cdef uint32_t[::1] parts = out
    with nogil:
        for i in range(n):
            if with_ports[i]:
                parts[i] = bytes_pair_part(&src[i, 0], sport[i], &dst[i, 0], dport[i], nparts)
            else:
                parts[i] = bytes_pair_part(&src[i, 0], 0, &dst[i, 0], 0, nparts)
    return out


def tcp_part_rows(const uint8_t[:, ::1] src not None, const uint8_t[:, ::1] dst not None,
                  const uint16_t[::1] sport not None, const uint16_t[::1] dport not None,
                  const uint8_t[::1] status not None, const uint8_t[::1] pflags not None, uint32_t nparts):
    """The rows of TCP segments whose IPv4 header checksum is right, split by their part of nparts (as
    packet_parts gives it): a list of nparts increasing int64 arrays. One pass, where packet_parts and numpy
    made seven over each batch in the decoder's thread."""
    cdef Py_ssize_t n = src.shape[0], i
    if (dst.shape[0] != n or sport.shape[0] != n or dport.shape[0] != n or status.shape[0] != n
            or pflags.shape[0] != n or nparts < 1):
        raise ValueError("tcp_part_rows: column lengths disagree")
    rows = [np.empty(n, dtype=np.int64) for _ in range(nparts)]
    cdef int64_t **out = <int64_t **>malloc(nparts * sizeof(int64_t *))
    cdef Py_ssize_t *counts = <Py_ssize_t *>calloc(nparts, sizeof(Py_ssize_t))
    cdef uint32_t k
    if out == NULL or counts == NULL:
        free(out)
        free(counts)
        raise MemoryError("tcp_part_rows")
    try:
        for k in range(nparts):
            out[k] = <int64_t *>cnp.PyArray_DATA(rows[k])
        with nogil:
            for i in range(n):
                if status[i] != STATUS_TCP or (pflags[i] & BAD_IP_CHECKSUM_FLAG):
                    continue
                k = bytes_pair_part(&src[i, 0], sport[i], &dst[i, 0], dport[i], nparts)
                out[k][counts[k]] = i
                counts[k] += 1
        return [rows[k][:counts[k]] for k in range(nparts)]
    finally:
        free(out)
        free(counts)


def history_buffers(const int64_t[::1] starts not None, const int64_t[::1] lengths not None,
                    const uint8_t[::1] text not None):
    """The histories at text[starts[i]:starts[i] + lengths[i]], one after the other, as an Arrow string
    column's buffers: (int32 offsets, n + 1; data). Raises ValueError for a slice outside text or a total
    past 2 GiB (an Arrow string column's limit)."""
    cdef Py_ssize_t n = starts.shape[0], i, total = 0, size = text.shape[0]
    if lengths.shape[0] != n:
        raise ValueError("history_buffers: column lengths disagree")
    for i in range(n):
        if starts[i] < 0 or lengths[i] < 0 or starts[i] > size - lengths[i]:
            raise ValueError("history_buffers: a history lies outside the text")
        total += lengths[i]
    if total > 0x7FFFFFFF:
        raise ValueError("history_buffers: more than 2 GiB of histories")
    offsets = np.empty(n + 1, dtype=np.int32)
    data = np.empty(total, dtype=np.uint8)
    cdef int32_t[::1] o = offsets
    cdef uint8_t *out = <uint8_t *>cnp.PyArray_DATA(data)
    cdef const uint8_t *src = &text[0] if size else NULL
    cdef int32_t at = 0
    with nogil:
        for i in range(n):
            o[i] = at
            if lengths[i]:
                memcpy(out + at, src + starts[i], lengths[i])
            at += <int32_t>lengths[i]
        o[n] = at
    return offsets, data


cdef Row _probe
cdef Py_ssize_t _base = <Py_ssize_t>&_probe


def _field(name, fmt, Py_ssize_t address):
    return name, fmt, address - _base


_fields = [
        _field("first_frame", "u8", <Py_ssize_t>&_probe.first_frame),
        _field("last_frame", "u8", <Py_ssize_t>&_probe.last_frame),
        _field("ts_start", "i8", <Py_ssize_t>&_probe.ts_start),
        _field("ts_end", "i8", <Py_ssize_t>&_probe.ts_end),
        _field("first_ts", "i8", <Py_ssize_t>&_probe.first_ts),
        _field("last_time", "i8", <Py_ssize_t>&_probe.last_time),
        _field("orig_pkts", "u8", <Py_ssize_t>&_probe.orig_pkts),
        _field("resp_pkts", "u8", <Py_ssize_t>&_probe.resp_pkts),
        _field("orig_payload_bytes", "u8", <Py_ssize_t>&_probe.orig_payload_bytes),
        _field("resp_payload_bytes", "u8", <Py_ssize_t>&_probe.resp_payload_bytes),
        _field("orig_ip_bytes", "u8", <Py_ssize_t>&_probe.orig_ip_bytes),
        _field("resp_ip_bytes", "u8", <Py_ssize_t>&_probe.resp_ip_bytes),
        _field("orig_size", "u8", <Py_ssize_t>&_probe.orig_size),
        _field("resp_size", "u8", <Py_ssize_t>&_probe.resp_size),
        _field("syn_ts", "i8", <Py_ssize_t>&_probe.syn_ts),
        _field("synack_ts", "i8", <Py_ssize_t>&_probe.synack_ts),
        _field("handshake_ack_ts", "i8", <Py_ssize_t>&_probe.handshake_ack_ts),
        _field("rtt1", "i8", <Py_ssize_t>&_probe.rtt1),
        _field("rtt2", "i8", <Py_ssize_t>&_probe.rtt2),
        _field("fin1_ts", "i8", <Py_ssize_t>&_probe.fin1_ts),
        _field("fin2_ts", "i8", <Py_ssize_t>&_probe.fin2_ts),
        _field("rst_ts", "i8", <Py_ssize_t>&_probe.rst_ts),
        _field("hist_offset", "i8", <Py_ssize_t>&_probe.hist_offset),
        _field("hist_len", "i8", <Py_ssize_t>&_probe.hist_len),
        _field("orig_isn", "u4", <Py_ssize_t>&_probe.orig_isn),
        _field("resp_isn", "u4", <Py_ssize_t>&_probe.resp_isn),
        _field("syn_count", "u4", <Py_ssize_t>&_probe.syn_count),
        _field("synack_count", "u4", <Py_ssize_t>&_probe.synack_count),
        _field("orig_retransmissions", "u4", <Py_ssize_t>&_probe.orig_retransmissions),
        _field("resp_retransmissions", "u4", <Py_ssize_t>&_probe.resp_retransmissions),
        _field("vlan", "i4", <Py_ssize_t>&_probe.vlan),
        _field("orig_p", "u2", <Py_ssize_t>&_probe.orig_p),
        _field("resp_p", "u2", <Py_ssize_t>&_probe.resp_p),
        _field("orig_mss", "u2", <Py_ssize_t>&_probe.orig_mss),
        _field("resp_mss", "u2", <Py_ssize_t>&_probe.resp_mss),
        _field("orig_wscale", "i2", <Py_ssize_t>&_probe.orig_wscale),
        _field("resp_wscale", "i2", <Py_ssize_t>&_probe.resp_wscale),
        _field("orig_addr", ("u1", (16,)), <Py_ssize_t>&_probe.orig_addr[0]),
        _field("resp_addr", ("u1", (16,)), <Py_ssize_t>&_probe.resp_addr[0]),
        _field("ip_version", "u1", <Py_ssize_t>&_probe.ip_version),
        _field("orig_opt", "u1", <Py_ssize_t>&_probe.orig_opt),
        _field("resp_opt", "u1", <Py_ssize_t>&_probe.resp_opt),
        _field("orig_sack_ok", "u1", <Py_ssize_t>&_probe.orig_sack_ok),
        _field("resp_sack_ok", "u1", <Py_ssize_t>&_probe.resp_sack_ok),
        _field("has_syn", "u1", <Py_ssize_t>&_probe.has_syn),
        _field("has_synack", "u1", <Py_ssize_t>&_probe.has_synack),
        _field("has_handshake_ack", "u1", <Py_ssize_t>&_probe.has_handshake_ack),
        _field("has_orig_isn", "u1", <Py_ssize_t>&_probe.has_orig_isn),
        _field("has_resp_isn", "u1", <Py_ssize_t>&_probe.has_resp_isn),
        _field("has_fin1", "u1", <Py_ssize_t>&_probe.has_fin1),
        _field("has_fin2", "u1", <Py_ssize_t>&_probe.has_fin2),
        _field("has_rst", "u1", <Py_ssize_t>&_probe.has_rst),
        _field("handshake", "u1", <Py_ssize_t>&_probe.handshake),
        _field("close", "u1", <Py_ssize_t>&_probe.close),
        _field("close_initiator", "u1", <Py_ssize_t>&_probe.close_initiator),
        _field("rst_by", "u1", <Py_ssize_t>&_probe.rst_by),
        _field("teardown_segments", "u1", <Py_ssize_t>&_probe.teardown_segments),
        _field("conn_state", "u1", <Py_ssize_t>&_probe.conn_state),
]
ROW_DTYPE = np.dtype({
    "names": [f[0] for f in _fields],
    "formats": [f[1] for f in _fields],
    "offsets": [f[2] for f in _fields],
    "itemsize": sizeof(Row),
})

#: bytes of state per open connection, and per finished row waiting for drain() (docs/design.md)
FLOW_STATE_BYTES = sizeof(Flow)
ROW_BYTES = sizeof(Row)
#: what snapshot_blocks() writes records as: a state file saved by another layout cannot be read back. The
#: number goes up with any change to the order of Flow's fields or of the structs inside it.
RECORD_LAYOUT = f"2:{sizeof(Flow)}:{sizeof(Deferred)}:{sizeof(Alt)}"
