# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Streaming datagram flows: fastflow.datagram.datagram_flows, one packet at a time without the GIL.

The rules (connection key, originator, timeouts, counts, conn_state, history) are those of
fastflow/datagram.py, whose docstring cites Zeek for each; this module keeps only the flows that are still
open, so that a capture can be fed in chunks:

* an open-addressing hash table (linear probing, backward-shift deletion, grown by rehash) maps Zeek's
  connection key to a flow record in a pool with a free list;
* a binary min-heap of the open flows with a timeout holds a lower bound of each flow's deadline
  (last_time + timeout): a packet that moves the deadline later leaves the heap alone, one that moves it
  earlier (the clock stepped back) sifts it up, and expire() refreshes a stale bound when it reaches the top;
* a doubly linked list of the open flows in order of first packet gives the smallest open first_frame;
* a finalized flow is copied to the output buffer (which drain() hands over and empties) and leaves the
  table, the heap, the list and the pool, so memory follows the open flows (the pool and the table shrink
  again when they become sparse).

The per-packet pass never raises: running out of memory comes back as a status code (with the number of
rows done, the state staying consistent up to there). The output buffer is grown by the caller, with the
GIL, before each pass: a pass finalizes at most one flow per datagram row (feed) or per open flow
(expire, finish).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t, INT64_MAX
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy
from partition cimport bytes_pair_part

import os

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef enum:
    ST_OK = 0
    ST_NO_MEMORY = 1

STATUS_OK = ST_OK
STATUS_NO_MEMORY = ST_NO_MEMORY

# decoder status codes (fastflow.decode.Status)
cdef enum:
    S_UDP = 1
    S_ICMP = 2
    S_ICMP6 = 3
    S_OTHER = 4

# Flow.bits
cdef enum:
    F_ORIG_IS_A = 1         # the originator is the key's first endpoint
    F_FLIPPED = 2           # UDP roles flipped by the likely-server-port rule
    F_FIRST_FROM_ORIG = 4   # the flow's first packet came from the originator

cdef enum:
    MIN_POOL = 64
    MIN_TABLE = 128


cdef struct Flow:
    # Zeek's connection key: (kvlan, ip_proto, (a, a_p), (b, b_p)), a <= b except for one-way ICMP
    uint8_t a[16]
    uint8_t b[16]
    uint64_t hash
    int32_t kvlan           # the vlan id with vlan_aware, else 0
    uint16_t a_p
    uint16_t b_p
    uint8_t ip_proto
    # the first packet's
    uint8_t status
    uint8_t ip_version
    uint8_t bits
    int32_t vlan
    uint16_t orig_p
    uint16_t resp_p
    int64_t timeout         # of the first packet's protocol; > 0 keeps the flow in the heap
    uint64_t first_frame
    uint64_t last_frame
    int64_t ts_first
    int64_t ts_last         # last_time: the timestamp of the flow's last packet in capture order
    int64_t ts_min
    int64_t ts_max
    uint64_t orig_pkts
    uint64_t resp_pkts
    uint64_t orig_ip_bytes
    uint64_t resp_ip_bytes
    uint64_t orig_payload
    uint64_t resp_payload
    Py_ssize_t heap_pos     # -1: not in the heap
    Py_ssize_t prev         # open list (first-packet order); next is also the free list's link
    Py_ssize_t next


cdef struct Slot:
    uint64_t hash
    Py_ssize_t flow         # -1: empty


cdef struct HeapEntry:
    int64_t key             # <= the flow's deadline
    Py_ssize_t flow


cdef struct Engine:
    Flow *pool
    Py_ssize_t pool_cap
    Py_ssize_t pool_top     # records [0, pool_top) have been handed out at least once
    Py_ssize_t free_head
    Py_ssize_t n_open
    Slot *table
    Py_ssize_t table_cap    # a power of two, or 0
    HeapEntry *heap         # heap_cap == pool_cap: the heap never needs its own growth
    Py_ssize_t heap_len
    Py_ssize_t head         # open list: oldest first packet first
    Py_ssize_t tail
    Flow *out
    Py_ssize_t out_len
    Py_ssize_t out_cap
    int64_t timeout[5]      # by decoder status
    bint vlan_aware
    uint64_t seed           # of the key hash
    uint8_t likely_server[65536]
    int16_t cp4[256]
    int16_t cp6[256]
    uint8_t not_conn[256]


# --- small helpers ------------------------------------------------------------------------------------

cdef inline uint64_t load64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint64_t mix(uint64_t h, uint64_t v) noexcept nogil:
    h = (h ^ v) * <uint64_t>0x9E3779B97F4A7C15ULL
    return h ^ (h >> 29)


cdef inline uint64_t key_hash(const uint8_t *a, const uint8_t *b, uint16_t a_p, uint16_t b_p, uint8_t proto,
                              int32_t kvlan, uint64_t seed) noexcept nogil:
    # seeded per engine (from os.urandom): the mixing steps are invertible, so without a secret start
    # addresses can be chosen that all hash alike, and every lookup walks one probe run holding all of them
    cdef uint64_t h = 0x243F6A8885A308D3ULL ^ seed
    h = mix(h, load64(a))
    h = mix(h, load64(a + 8))
    h = mix(h, load64(b))
    h = mix(h, load64(b + 8))
    h = mix(h, <uint64_t>a_p | (<uint64_t>b_p << 16) | (<uint64_t>proto << 32))
    h = mix(h, <uint64_t><uint32_t>kvlan)
    # murmur3's finalizer: every input bit reaches the low bits the table uses
    h ^= h >> 33
    h *= <uint64_t>0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= <uint64_t>0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


cdef inline bint key_equal(const Flow *f, const uint8_t *a, const uint8_t *b, uint16_t a_p, uint16_t b_p,
                           uint8_t proto, int32_t kvlan) noexcept nogil:
    return (f.a_p == a_p and f.b_p == b_p and f.ip_proto == proto and f.kvlan == kvlan
            and memcmp(f.a, a, 16) == 0 and memcmp(f.b, b, 16) == 0)


cdef inline int64_t deadline(int64_t last, int64_t timeout) noexcept nogil:
    """last + timeout (timeout > 0), saturated."""
    if last > INT64_MAX - timeout:
        return INT64_MAX
    return last + timeout


cdef inline bint is_broadcast4(const uint8_t *addr) noexcept nogil:
    """255.255.255.255 as a 16-byte address (::ffff:255.255.255.255 in datagram_flows' words)."""
    cdef int k
    for k in range(10):
        if addr[k] != 0:
            return False
    for k in range(10, 16):
        if addr[k] != 0xFF:
            return False
    return True


# --- hash table -------------------------------------------------------------------------------------

cdef inline void table_put(Slot *table, Py_ssize_t mask, uint64_t h, Py_ssize_t fi) noexcept nogil:
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>mask)
    while table[i].flow >= 0:
        i = (i + 1) & mask
    table[i].hash = h
    table[i].flow = fi


cdef inline Py_ssize_t table_find(Engine *e, uint64_t h, const uint8_t *a, const uint8_t *b, uint16_t a_p,
                                  uint16_t b_p, uint8_t proto, int32_t kvlan) noexcept nogil:
    cdef Py_ssize_t mask, i, fi
    if e.table_cap == 0:
        return -1
    mask = e.table_cap - 1
    i = <Py_ssize_t>(h & <uint64_t>mask)
    while True:
        fi = e.table[i].flow
        if fi < 0:
            return -1
        if e.table[i].hash == h and key_equal(&e.pool[fi], a, b, a_p, b_p, proto, kvlan):
            return fi
        i = (i + 1) & mask


cdef inline void table_delete(Engine *e, Py_ssize_t fi) noexcept nogil:
    """Remove flow fi (present) and shift the following entries of its run back (no tombstones)."""
    cdef Py_ssize_t mask = e.table_cap - 1
    cdef Py_ssize_t i = <Py_ssize_t>(e.pool[fi].hash & <uint64_t>mask)
    cdef Py_ssize_t j, home
    cdef bint stays
    while e.table[i].flow != fi:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if e.table[j].flow < 0:
            break
        home = <Py_ssize_t>(e.table[j].hash & <uint64_t>mask)
        # the entry at j stays when its home lies cyclically in (i, j]
        if i <= j:
            stays = i < home and home <= j
        else:
            stays = i < home or home <= j
        if not stays:
            e.table[i] = e.table[j]
            i = j
    e.table[i].flow = -1


cdef int table_resize(Engine *e, Py_ssize_t cap) noexcept nogil:
    """Rehash the open flows into a table of cap slots (a power of two)."""
    cdef Slot *t = <Slot *>malloc(<size_t>cap * sizeof(Slot))
    cdef Py_ssize_t i
    if t == NULL:
        return ST_NO_MEMORY
    for i in range(cap):
        t[i].flow = -1
    i = e.head
    while i >= 0:
        table_put(t, cap - 1, e.pool[i].hash, i)
        i = e.pool[i].next
    free(e.table)
    e.table = t
    e.table_cap = cap
    return ST_OK


cdef inline int table_reserve(Engine *e, Py_ssize_t count) noexcept nogil:
    """Room for count entries at a load of at most 1/2."""
    cdef Py_ssize_t cap
    if count * 2 <= e.table_cap:
        return ST_OK
    cap = e.table_cap * 2 if e.table_cap else MIN_TABLE
    while count * 2 > cap:
        cap *= 2
    return table_resize(e, cap)


# --- pool -------------------------------------------------------------------------------------------

cdef inline int pool_reserve(Engine *e) noexcept nogil:
    """One free record (and heap room to match)."""
    cdef Py_ssize_t cap
    cdef Flow *p
    cdef HeapEntry *hp
    if e.free_head >= 0 or e.pool_top < e.pool_cap:
        return ST_OK
    cap = e.pool_cap * 2 if e.pool_cap else MIN_POOL
    hp = <HeapEntry *>realloc(e.heap, <size_t>cap * sizeof(HeapEntry))
    if hp == NULL:
        return ST_NO_MEMORY
    e.heap = hp
    p = <Flow *>realloc(e.pool, <size_t>cap * sizeof(Flow))
    if p == NULL:
        return ST_NO_MEMORY
    e.pool = p
    e.pool_cap = cap
    return ST_OK


cdef inline Py_ssize_t pool_take(Engine *e) noexcept nogil:
    cdef Py_ssize_t fi
    if e.free_head >= 0:
        fi = e.free_head
        e.free_head = e.pool[fi].next
    else:
        fi = e.pool_top
        e.pool_top += 1
    return fi


cdef inline void pool_give(Engine *e, Py_ssize_t fi) noexcept nogil:
    e.pool[fi].next = e.free_head
    e.free_head = fi


# --- open list (first-packet order) -------------------------------------------------------------------

cdef inline void list_append(Engine *e, Py_ssize_t fi) noexcept nogil:
    e.pool[fi].prev = e.tail
    e.pool[fi].next = -1
    if e.tail >= 0:
        e.pool[e.tail].next = fi
    else:
        e.head = fi
    e.tail = fi


cdef inline void list_unlink(Engine *e, Py_ssize_t fi) noexcept nogil:
    cdef Py_ssize_t p = e.pool[fi].prev, n = e.pool[fi].next
    if p >= 0:
        e.pool[p].next = n
    else:
        e.head = n
    if n >= 0:
        e.pool[n].prev = p
    else:
        e.tail = p


# --- deadline heap ----------------------------------------------------------------------------------

cdef inline void heap_place(Engine *e, Py_ssize_t pos, HeapEntry entry) noexcept nogil:
    e.heap[pos] = entry
    e.pool[entry.flow].heap_pos = pos


cdef inline void heap_sift_up(Engine *e, Py_ssize_t pos) noexcept nogil:
    cdef HeapEntry entry = e.heap[pos]
    cdef Py_ssize_t parent
    while pos > 0:
        parent = (pos - 1) >> 1
        if e.heap[parent].key <= entry.key:
            break
        heap_place(e, pos, e.heap[parent])
        pos = parent
    heap_place(e, pos, entry)


cdef inline void heap_sift_down(Engine *e, Py_ssize_t pos) noexcept nogil:
    cdef HeapEntry entry = e.heap[pos]
    cdef Py_ssize_t child, n = e.heap_len
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and e.heap[child + 1].key < e.heap[child].key:
            child += 1
        if e.heap[child].key >= entry.key:
            break
        heap_place(e, pos, e.heap[child])
        pos = child
    heap_place(e, pos, entry)


cdef inline void heap_set_key(Engine *e, Py_ssize_t pos, int64_t key) noexcept nogil:
    cdef int64_t old = e.heap[pos].key
    e.heap[pos].key = key
    if key < old:
        heap_sift_up(e, pos)
    elif key > old:
        heap_sift_down(e, pos)


cdef inline void heap_push(Engine *e, Py_ssize_t fi, int64_t key) noexcept nogil:
    cdef HeapEntry entry
    entry.key = key
    entry.flow = fi
    heap_place(e, e.heap_len, entry)
    e.heap_len += 1
    heap_sift_up(e, e.heap_len - 1)


cdef inline void heap_remove(Engine *e, Py_ssize_t fi) noexcept nogil:
    cdef Py_ssize_t pos = e.pool[fi].heap_pos
    cdef int64_t key
    if pos < 0:
        return
    e.pool[fi].heap_pos = -1
    e.heap_len -= 1
    if pos == e.heap_len:
        return
    key = e.heap[pos].key
    heap_place(e, pos, e.heap[e.heap_len])
    if e.heap[pos].key < key:
        heap_sift_up(e, pos)
    else:
        heap_sift_down(e, pos)


# --- flows ------------------------------------------------------------------------------------------

cdef inline void emit(Engine *e, const Flow *f) noexcept nogil:
    e.out[e.out_len] = f[0]
    e.out_len += 1


cdef inline void finalize(Engine *e, Py_ssize_t fi) noexcept nogil:
    """Move an open flow to the output and release it."""
    emit(e, &e.pool[fi])
    table_delete(e, fi)
    heap_remove(e, fi)
    list_unlink(e, fi)
    pool_give(e, fi)
    e.n_open -= 1


cdef inline void start_flow(Engine *e, Py_ssize_t fi, uint8_t status, uint16_t sport, uint16_t dport,
                            uint16_t ksrc, uint16_t kdst, bint src_first, const uint8_t *dst, uint64_t frame,
                            int64_t ts, uint8_t ip_version, int32_t vlan, int64_t timeout) noexcept nogil:
    """Fill a flow's first-packet fields (its key is set) and put it in the list and the heap."""
    cdef Flow *f = &e.pool[fi]
    # udp/UDP.cc WantConnection: a UDP flow from a likely server port to another port is flipped, unless it
    # goes to the IPv4 broadcast address
    cdef bint flipped = (status == S_UDP and e.likely_server[sport] != 0 and e.likely_server[dport] == 0
                         and not is_broadcast4(dst))
    f.status = status
    f.ip_version = ip_version
    f.vlan = vlan
    f.bits = (F_FLIPPED if flipped else 0) | (F_ORIG_IS_A if src_first != flipped else 0)
    f.orig_p = kdst if flipped else ksrc
    f.resp_p = ksrc if flipped else kdst
    f.timeout = timeout
    f.first_frame = frame
    f.ts_first = ts
    f.ts_last = ts
    f.ts_min = ts
    f.ts_max = ts
    f.orig_pkts = 0
    f.resp_pkts = 0
    f.orig_ip_bytes = 0
    f.resp_ip_bytes = 0
    f.orig_payload = 0
    f.resp_payload = 0
    list_append(e, fi)
    if timeout > 0:
        if f.heap_pos >= 0:
            heap_set_key(e, f.heap_pos, deadline(ts, timeout))
        else:
            heap_push(e, fi, deadline(ts, timeout))
    elif f.heap_pos >= 0:
        heap_remove(e, fi)


cdef inline void add_packet(Engine *e, Py_ssize_t fi, const uint8_t *src, uint16_t ksrc, uint64_t frame,
                            int64_t ts, uint32_t ip_len, uint32_t payload, bint first) noexcept nogil:
    cdef Flow *f = &e.pool[fi]
    cdef const uint8_t *orig_addr = &f.a[0] if f.bits & F_ORIG_IS_A else &f.b[0]
    # IPBasedAnalyzer AnalyzePacket's is_orig: the source address and "port" are the originator's
    cdef bint from_orig = ksrc == f.orig_p and memcmp(src, orig_addr, 16) == 0
    cdef int64_t key
    if from_orig:
        f.orig_pkts += 1
        f.orig_ip_bytes += ip_len
        f.orig_payload += payload
        if first:
            f.bits |= F_FIRST_FROM_ORIG
    else:
        f.resp_pkts += 1
        f.resp_ip_bytes += ip_len
        f.resp_payload += payload
    if not first:
        f.ts_last = ts
        f.last_frame = frame
        if ts < f.ts_min:
            f.ts_min = ts
        if ts > f.ts_max:
            f.ts_max = ts
        if f.heap_pos >= 0:
            # the heap holds a lower bound: only a deadline moving earlier (clock stepping back) needs a sift
            key = deadline(ts, f.timeout)
            if key < e.heap[f.heap_pos].key:
                heap_set_key(e, f.heap_pos, key)
    else:
        f.last_frame = frame


cdef int feed_rows(Engine *e, Py_ssize_t n, const uint64_t *frame, const int64_t *ts, const uint8_t *status,
                   const int32_t *vlan, const uint8_t *ip_version, const uint8_t *src, const uint8_t *dst,
                   const uint8_t *ip_proto, const uint16_t *sport, const uint16_t *dport,
                   const uint32_t *ip_len, const uint32_t *payload_len, const int64_t *net_time,
                   Py_ssize_t *done) noexcept nogil:
    """The per-packet pass of datagram_flows (see fastflow/datagram.py for each rule)."""
    cdef Py_ssize_t i, fi
    cdef uint8_t st, proto
    cdef uint16_t sp, dp, ksrc, kdst, a_p, b_p
    cdef int16_t cp
    cdef bint one_way, src_first, split
    cdef int c
    cdef int32_t kvlan
    cdef int64_t timeout, gap
    cdef uint64_t h
    cdef const uint8_t *s
    cdef const uint8_t *d
    cdef const uint8_t *a
    cdef const uint8_t *b
    cdef Flow *f
    for i in range(n):
        st = status[i]
        if st < S_UDP or st > S_OTHER:
            continue
        proto = ip_proto[i]
        if st == S_OTHER and e.not_conn[proto]:
            continue
        sp = sport[i]
        dp = dport[i]
        one_way = False
        if st == S_OTHER:
            ksrc = 0
            kdst = 0
        elif st == S_UDP:
            ksrc = sp
            kdst = dp
        else:
            # ICMP: the type, and the counterpart type (request/reply) or the code (one-way message)
            cp = e.cp4[sp & 0xFF] if st == S_ICMP else e.cp6[sp & 0xFF]
            one_way = cp < 0
            ksrc = sp
            kdst = dp if one_way else <uint16_t>cp
        s = src + 16 * i
        d = dst + 16 * i
        c = memcmp(s, d, 16)
        src_first = one_way or c < 0 or (c == 0 and ksrc <= kdst)
        if src_first:
            a, a_p, b, b_p = s, ksrc, d, kdst
        else:
            a, a_p, b, b_p = d, kdst, s, ksrc
        kvlan = vlan[i] if e.vlan_aware else 0
        timeout = e.timeout[st]
        h = key_hash(a, b, a_p, b_p, proto, kvlan, e.seed)
        fi = table_find(e, h, a, b, a_p, b_p, proto, kvlan)
        if fi < 0:
            if pool_reserve(e) != ST_OK or table_reserve(e, e.n_open + 1) != ST_OK:
                done[0] = i
                return ST_NO_MEMORY
            fi = pool_take(e)
            f = &e.pool[fi]
            memcpy(f.a, a, 16)
            memcpy(f.b, b, 16)
            f.a_p = a_p
            f.b_p = b_p
            f.ip_proto = proto
            f.kvlan = kvlan
            f.hash = h
            f.heap_pos = -1
            table_put(e.table, e.table_cap - 1, h, fi)
            e.n_open += 1
            split = True
        else:
            # the inactivity timer: network time now minus the flow's last_time (numpy's wrapping int64)
            gap = <int64_t>(<uint64_t>net_time[i] - <uint64_t>e.pool[fi].ts_last)
            split = timeout > 0 and gap >= timeout
            if split:
                emit(e, &e.pool[fi])
                list_unlink(e, fi)
        if split:
            start_flow(e, fi, st, sp, dp, ksrc, kdst, src_first, d, frame[i], ts[i], ip_version[i], vlan[i],
                       timeout)
        add_packet(e, fi, s, ksrc, frame[i], ts[i], ip_len[i], 0 if st == S_OTHER else payload_len[i], split)
    done[0] = n
    return ST_OK


cdef void expire_flows(Engine *e, int64_t net_time) noexcept nogil:
    """Finalize every open flow with last_time + timeout <= net_time (timeout > 0)."""
    cdef Py_ssize_t fi
    cdef int64_t due
    while e.heap_len > 0 and e.heap[0].key <= net_time:
        fi = e.heap[0].flow
        due = deadline(e.pool[fi].ts_last, e.pool[fi].timeout)
        if due <= net_time:
            finalize(e, fi)
        else:
            heap_set_key(e, 0, due)


cdef void finish_flows(Engine *e) noexcept nogil:
    cdef Py_ssize_t fi = e.head
    while fi >= 0:
        emit(e, &e.pool[fi])
        fi = e.pool[fi].next


cdef void compact(Engine *e) noexcept nogil:
    """Shrink the pool, heap and table of a sparse engine to its open flows (skipped without memory)."""
    cdef Py_ssize_t cap = MIN_POOL, tcap = MIN_TABLE, i, j, k
    cdef Flow *p
    cdef HeapEntry *hp
    cdef Slot *t
    while cap < 2 * e.n_open:
        cap *= 2
    while tcap < 4 * e.n_open:
        tcap *= 2
    if cap >= e.pool_cap:
        return
    p = <Flow *>malloc(<size_t>cap * sizeof(Flow))
    hp = <HeapEntry *>malloc(<size_t>cap * sizeof(HeapEntry))
    t = <Slot *>malloc(<size_t>tcap * sizeof(Slot))
    if p == NULL or hp == NULL or t == NULL:
        free(p)
        free(hp)
        free(t)
        return
    for k in range(tcap):
        t[k].flow = -1
    memcpy(hp, e.heap, <size_t>e.heap_len * sizeof(HeapEntry))
    i = e.head
    j = 0
    while i >= 0:
        p[j] = e.pool[i]
        p[j].prev = j - 1
        p[j].next = j + 1
        if p[j].heap_pos >= 0:
            hp[p[j].heap_pos].flow = j
        table_put(t, tcap - 1, p[j].hash, j)
        i = e.pool[i].next
        j += 1
    if j > 0:
        p[j - 1].next = -1
    free(e.pool)
    free(e.heap)
    free(e.table)
    e.pool = p
    e.heap = hp
    e.table = t
    e.pool_cap = cap
    e.table_cap = tcap
    e.pool_top = j
    e.free_head = -1
    e.head = 0 if j > 0 else -1
    e.tail = j - 1


cdef void export(const Flow *flows, Py_ssize_t n, int64_t *ts_start, int64_t *ts_end, int64_t *duration_ns,
                 uint8_t *orig_addr, uint8_t *resp_addr, uint16_t *orig_p, uint16_t *resp_p,
                 uint8_t *ip_version, int32_t *vlan, uint8_t *status, uint8_t *ip_proto,
                 uint64_t *orig_pkts, uint64_t *resp_pkts, uint64_t *orig_ip_bytes, uint64_t *resp_ip_bytes,
                 uint64_t *orig_payload, uint64_t *resp_payload, uint8_t *state_code, uint8_t *history_code,
                 uint64_t *first_frame, uint64_t *last_frame) noexcept nogil:
    """Finalized flows to columns; conn_state and history as codes into datagram.py's _UDP_STATE /
    _UDP_HISTORY (0 for ICMP and other protocols: "OTH" and "")."""
    cdef Py_ssize_t k
    cdef const Flow *f
    cdef bint oa, ra
    cdef int pattern
    for k in range(n):
        f = &flows[k]
        ts_start[k] = f.ts_min
        ts_end[k] = f.ts_max
        duration_ns[k] = <int64_t>(<uint64_t>f.ts_last - <uint64_t>f.ts_first)
        if f.bits & F_ORIG_IS_A:
            memcpy(orig_addr + 16 * k, f.a, 16)
            memcpy(resp_addr + 16 * k, f.b, 16)
        else:
            memcpy(orig_addr + 16 * k, f.b, 16)
            memcpy(resp_addr + 16 * k, f.a, 16)
        orig_p[k] = f.orig_p
        resp_p[k] = f.resp_p
        ip_version[k] = f.ip_version
        vlan[k] = f.vlan
        status[k] = f.status
        ip_proto[k] = f.ip_proto
        orig_pkts[k] = f.orig_pkts
        resp_pkts[k] = f.resp_pkts
        orig_ip_bytes[k] = f.orig_ip_bytes
        resp_ip_bytes[k] = f.resp_ip_bytes
        orig_payload[k] = f.orig_payload
        resp_payload[k] = f.resp_payload
        first_frame[k] = f.first_frame
        last_frame[k] = f.last_frame
        if f.status == S_UDP:
            oa = f.orig_pkts > 0
            ra = f.resp_pkts > 0
            state_code[k] = 2 * oa + ra
            if oa and ra:
                pattern = 3 if f.bits & F_FIRST_FROM_ORIG else 4
            elif oa:
                pattern = 1
            elif ra:
                pattern = 2
            else:
                pattern = 0
            history_code[k] = 5 * ((f.bits & F_FLIPPED) != 0) + pattern
        else:
            state_code[k] = 0
            history_code[k] = 0


cdef class DgramEngine:
    """The C state of fastflow.datagram.DatagramStream (which documents the API). Every method that can
    run out of memory returns a status code (STATUS_OK / STATUS_NO_MEMORY) instead of raising."""
    cdef Engine e

    def __cinit__(self):
        self.e.pool = NULL
        self.e.table = NULL
        self.e.heap = NULL
        self.e.out = NULL
        self._reset_flows()
        self.e.out_len = 0
        self.e.out_cap = 0
        self.e.seed = int.from_bytes(os.urandom(8), "little")

    def __init__(self, const int64_t[::1] timeouts not None, const uint8_t[::1] likely_server not None,
                 const int16_t[::1] cp4 not None, const int16_t[::1] cp6 not None,
                 const uint8_t[::1] not_conn not None, bint vlan_aware):
        """timeouts: ns for udp, icmp (and icmp6), other; likely_server: 65536 flags (UDP ports);
        cp4 / cp6: 256 ICMP counterpart types (-1: one-way); not_conn: 256 flags (IP protocols of which
        Zeek makes no connection)."""
        cdef int k
        if (timeouts.shape[0] != 3 or likely_server.shape[0] != 65536 or cp4.shape[0] != 256
                or cp6.shape[0] != 256 or not_conn.shape[0] != 256):
            raise ValueError("DgramEngine: table sizes")
        self.e.timeout[0] = 0
        self.e.timeout[S_UDP] = timeouts[0]
        self.e.timeout[S_ICMP] = timeouts[1]
        self.e.timeout[S_ICMP6] = timeouts[1]
        self.e.timeout[S_OTHER] = timeouts[2]
        self.e.vlan_aware = vlan_aware
        for k in range(65536):
            self.e.likely_server[k] = likely_server[k]
        for k in range(256):
            self.e.cp4[k] = cp4[k]
            self.e.cp6[k] = cp6[k]
            self.e.not_conn[k] = not_conn[k]

    def __dealloc__(self):
        free(self.e.pool)
        free(self.e.table)
        free(self.e.heap)
        free(self.e.out)

    cdef void _reset_flows(self):
        free(self.e.pool)
        free(self.e.table)
        free(self.e.heap)
        self.e.pool = NULL
        self.e.table = NULL
        self.e.heap = NULL
        self.e.pool_cap = 0
        self.e.pool_top = 0
        self.e.free_head = -1
        self.e.n_open = 0
        self.e.table_cap = 0
        self.e.heap_len = 0
        self.e.head = -1
        self.e.tail = -1

    cdef int _reserve_out(self, Py_ssize_t more):
        cdef Py_ssize_t need = self.e.out_len + more, cap
        cdef Flow *p
        if need <= self.e.out_cap:
            return ST_OK
        cap = self.e.out_cap * 2 if self.e.out_cap else 64
        while cap < need:
            cap *= 2
        p = <Flow *>realloc(self.e.out, <size_t>cap * sizeof(Flow))
        if p == NULL:
            return ST_NO_MEMORY
        self.e.out = p
        self.e.out_cap = cap
        return ST_OK

    @property
    def open_count(self):
        return self.e.n_open

    @property
    def finalized_count(self):
        """Flows waiting for drain()."""
        return self.e.out_len

    def capacity(self):
        """(pool records, table slots, output records) allocated: for tests of memory use."""
        return self.e.pool_cap, self.e.table_cap, self.e.out_cap

    def min_open_first_frame(self):
        return self.e.pool[self.e.head].first_frame if self.e.head >= 0 else 0xFFFFFFFFFFFFFFFF

    def feed(self, const uint64_t[::1] frame not None, const int64_t[::1] ts not None,
             const uint8_t[::1] status not None, const int32_t[::1] vlan not None,
             const uint8_t[::1] ip_version not None, const uint8_t[::1] src not None,
             const uint8_t[::1] dst not None, const uint8_t[::1] ip_proto not None,
             const uint16_t[::1] sport not None, const uint16_t[::1] dport not None,
             const uint32_t[::1] ip_len not None, const uint32_t[::1] payload_len not None,
             const int64_t[::1] network_time not None):
        """Rows in frame order (src / dst: 16 bytes a row, flattened). Returns (status, rows done)."""
        cdef Py_ssize_t n = status.shape[0], i, datagrams = 0, done = 0
        cdef int st
        if (frame.shape[0] != n or ts.shape[0] != n or vlan.shape[0] != n or ip_version.shape[0] != n
                or src.shape[0] != 16 * n or dst.shape[0] != 16 * n or ip_proto.shape[0] != n
                or sport.shape[0] != n or dport.shape[0] != n or ip_len.shape[0] != n
                or payload_len.shape[0] != n or network_time.shape[0] != n):
            raise ValueError("DgramEngine.feed: column lengths disagree")
        if n == 0:
            return ST_OK, 0
        for i in range(n):
            datagrams += status[i] >= S_UDP and status[i] <= S_OTHER
        if self._reserve_out(datagrams) != ST_OK:     # at most one flow finalized per datagram row
            return ST_NO_MEMORY, 0
        with nogil:
            st = feed_rows(&self.e, n, &frame[0], &ts[0], &status[0], &vlan[0], &ip_version[0], &src[0],
                           &dst[0], &ip_proto[0], &sport[0], &dport[0], &ip_len[0], &payload_len[0],
                           &network_time[0], &done)
        return st, done

    def expire(self, int64_t net_time):
        """Finalize the flows no packet at network time >= net_time can join. Returns a status."""
        if self._reserve_out(self.e.heap_len) != ST_OK:
            return ST_NO_MEMORY
        with nogil:
            expire_flows(&self.e, net_time)
            if self.e.pool_cap > 4 * MIN_POOL and 8 * self.e.n_open < self.e.pool_cap:
                compact(&self.e)
        return ST_OK

    def finish(self):
        """Finalize every open flow. Returns a status."""
        if self._reserve_out(self.e.n_open) != ST_OK:
            return ST_NO_MEMORY
        with nogil:
            finish_flows(&self.e)
        self._reset_flows()
        return ST_OK

    # --- saving and restoring the open flows (fastflow batch carries them across files and runs) ----------

    def snapshot_blocks(self, Py_ssize_t per_block=4096):
        """The open flows in first-packet order as blocks of bytes (whole Flow records), for restore() in an
        engine of the same build and settings. A generator; the engine is not changed."""
        cdef Py_ssize_t fi = self.e.head, k
        while fi >= 0:
            parts = []
            k = 0
            while fi >= 0 and k < per_block:
                parts.append((<char *>&self.e.pool[fi])[:sizeof(Flow)])
                fi = self.e.pool[fi].next
                k += 1
            yield b"".join(parts)

    def restore(self, const uint8_t[::1] block not None, uint32_t part=0, uint32_t nparts=1):
        """Append the open flows of one snapshot block that belong to part `part` of `nparts`
        (_tcpflows.packet_parts: ports count for UDP only), after those already open: blocks in order,
        before any feed(). Returns a status code; raises ValueError for a block this build did not write."""
        cdef Py_ssize_t at = 0, n = block.shape[0], fi
        cdef Flow rec
        if n % <Py_ssize_t>sizeof(Flow):
            raise ValueError("snapshot block: truncated record")
        while at < n:
            memcpy(&rec, &block[at], sizeof(Flow))
            at += sizeof(Flow)
            if nparts > 1 and bytes_pair_part(rec.a, rec.a_p if rec.status == S_UDP else 0, rec.b,
                                              rec.b_p if rec.status == S_UDP else 0, nparts) != part:
                continue
            rec.hash = key_hash(rec.a, rec.b, rec.a_p, rec.b_p, rec.ip_proto, rec.kvlan, self.e.seed)
            if table_find(&self.e, rec.hash, rec.a, rec.b, rec.a_p, rec.b_p, rec.ip_proto, rec.kvlan) >= 0:
                raise ValueError("snapshot block: a flow that is already open")
            if pool_reserve(&self.e) != ST_OK or table_reserve(&self.e, self.e.n_open + 1) != ST_OK:
                return ST_NO_MEMORY
            fi = pool_take(&self.e)
            rec.heap_pos = -1
            self.e.pool[fi] = rec
            list_append(&self.e, fi)
            table_put(self.e.table, self.e.table_cap - 1, rec.hash, fi)
            self.e.n_open += 1
            if rec.timeout > 0:
                heap_push(&self.e, fi, deadline(rec.ts_last, rec.timeout))
        return ST_OK

    def drain(self):
        """The finalized flows as raw columns (finalization order); empties the output buffer."""
        cdef Py_ssize_t n = self.e.out_len
        out = {
            "ts_start": np.empty(n, np.int64), "ts_end": np.empty(n, np.int64),
            "duration_ns": np.empty(n, np.int64),
            "orig_addr": np.empty((n, 16), np.uint8), "resp_addr": np.empty((n, 16), np.uint8),
            "orig_p": np.empty(n, np.uint16), "resp_p": np.empty(n, np.uint16),
            "ip_version": np.empty(n, np.uint8), "vlan": np.empty(n, np.int32),
            "status": np.empty(n, np.uint8), "ip_proto": np.empty(n, np.uint8),
            "orig_pkts": np.empty(n, np.uint64), "resp_pkts": np.empty(n, np.uint64),
            "orig_ip_bytes": np.empty(n, np.uint64), "resp_ip_bytes": np.empty(n, np.uint64),
            "orig_payload_bytes": np.empty(n, np.uint64), "resp_payload_bytes": np.empty(n, np.uint64),
            "state_code": np.empty(n, np.uint8), "history_code": np.empty(n, np.uint8),
            "first_frame": np.empty(n, np.uint64), "last_frame": np.empty(n, np.uint64),
        }
        if n == 0:
            return out
        cdef int64_t[::1] ts_start = out["ts_start"]
        cdef int64_t[::1] ts_end = out["ts_end"]
        cdef int64_t[::1] duration_ns = out["duration_ns"]
        cdef uint8_t[:, ::1] orig_addr = out["orig_addr"]
        cdef uint8_t[:, ::1] resp_addr = out["resp_addr"]
        cdef uint16_t[::1] orig_p = out["orig_p"]
        cdef uint16_t[::1] resp_p = out["resp_p"]
        cdef uint8_t[::1] ip_version = out["ip_version"]
        cdef int32_t[::1] vlan = out["vlan"]
        cdef uint8_t[::1] status = out["status"]
        cdef uint8_t[::1] ip_proto = out["ip_proto"]
        cdef uint64_t[::1] orig_pkts = out["orig_pkts"]
        cdef uint64_t[::1] resp_pkts = out["resp_pkts"]
        cdef uint64_t[::1] orig_ip_bytes = out["orig_ip_bytes"]
        cdef uint64_t[::1] resp_ip_bytes = out["resp_ip_bytes"]
        cdef uint64_t[::1] orig_payload = out["orig_payload_bytes"]
        cdef uint64_t[::1] resp_payload = out["resp_payload_bytes"]
        cdef uint8_t[::1] state_code = out["state_code"]
        cdef uint8_t[::1] history_code = out["history_code"]
        cdef uint64_t[::1] first_frame = out["first_frame"]
        cdef uint64_t[::1] last_frame = out["last_frame"]
        with nogil:
            export(self.e.out, n, &ts_start[0], &ts_end[0], &duration_ns[0], &orig_addr[0, 0],
                   &resp_addr[0, 0], &orig_p[0], &resp_p[0], &ip_version[0], &vlan[0], &status[0],
                   &ip_proto[0], &orig_pkts[0], &resp_pkts[0], &orig_ip_bytes[0], &resp_ip_bytes[0],
                   &orig_payload[0], &resp_payload[0], &state_code[0], &history_code[0], &first_frame[0],
                   &last_frame[0])
        self.e.out_len = 0
        if self.e.out_cap > 4096 and self.e.out_cap > 8 * n:
            # a burst (finish of many flows, a huge chunk) does not keep its buffer
            free(self.e.out)
            self.e.out = NULL
            self.e.out_cap = 0
        return out
