# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Community IDs in C (fastflow/community_id.py), and SHA-1 of many short rows at once; the SHA-1 code is in
sha1.h.

hashlib costs a Python call, a hash object and a bytes object per row: with one Community ID per flow, that
was the largest per-flow cost of building the flows table. Building each row's hash input and its base64
text in numpy then cost four times the hashing (a dozen passes over temporaries): all of it is one loop here."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from libc.string cimport memcmp, memcpy

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


cdef const char *BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def community_ids(const uint8_t[:, ::1] orig_addr not None, const uint8_t[:, ::1] resp_addr not None,
                  const uint8_t[::1] ip_version not None, const uint8_t[::1] ip_proto not None,
                  const uint16_t[::1] orig_p not None, const uint16_t[::1] resp_p not None,
                  const int32_t[::1] icmp4_counterpart not None, const int32_t[::1] icmp6_counterpart not None,
                  const uint8_t[::1] port_protos not None, uint16_t seed, uint8_t[:, ::1] out not None,
                  use_sha=None):
    """out[i] = the Community ID v1 text of row i ("1:" + base64 of the SHA-1, 30 ASCII bytes), the whole
    spec per row in C (fastflow/community_id.py has the rules and checks the arguments: ip_version 4 or 6,
    addresses 16 bytes with IPv4 in the last 4). icmp*_counterpart: 65,536 entries, the request/reply type
    of each ICMP type, -1 for one-way types; port_protos: 256 entries, 1 for the protocols whose ports are
    hashed."""
    cdef Py_ssize_t n = ip_version.shape[0], i
    if (orig_addr.shape[0] != n or resp_addr.shape[0] != n or ip_proto.shape[0] != n or orig_p.shape[0] != n
            or resp_p.shape[0] != n or out.shape[0] != n or orig_addr.shape[1] != 16 or resp_addr.shape[1] != 16
            or out.shape[1] != 30 or icmp4_counterpart.shape[0] != 65536 or icmp6_counterpart.shape[0] != 65536
            or port_protos.shape[0] != 256):
        raise ValueError("community_ids: shapes disagree")
    cdef int sha = HAVE_SHA_EXTENSIONS if use_sha is None else (bool(use_sha) and HAVE_SHA_EXTENSIONS)
    cdef uint8_t record[40]
    cdef uint8_t digest[21]
    cdef uint8_t proto
    cdef uint16_t sport, dport, t
    cdef int32_t counterpart
    cdef bint ports, one_way, swap
    cdef int alen, start, order, k, length
    cdef const uint8_t *src
    cdef const uint8_t *dst
    cdef uint8_t *text
    cdef uint32_t triple
    with nogil:
        for i in range(n):
            proto = ip_proto[i]
            sport = orig_p[i]
            dport = resp_p[i]
            one_way = False
            if proto == 1 or proto == 58:
                counterpart = icmp4_counterpart[sport] if proto == 1 else icmp6_counterpart[sport]
                if counterpart >= 0:
                    dport = <uint16_t>counterpart
                else:
                    one_way = True
            ports = port_protos[proto] != 0
            if not ports:   # absent ports must not decide the order between equal addresses
                sport = 0
                dport = 0
            alen = 4 if ip_version[i] == 4 else 16
            start = 16 - alen
            src = &orig_addr[i, start]
            dst = &resp_addr[i, start]
            # the smaller (address, port) endpoint first, comparing the address bytes, then the ports
            order = memcmp(dst, src, alen)
            swap = (order < 0 or (order == 0 and dport < sport)) and not one_way
            if swap:
                src, dst = dst, src
                t = sport
                sport = dport
                dport = t
            record[0] = seed >> 8
            record[1] = seed & 0xFF
            memcpy(&record[2], src, alen)
            memcpy(&record[2 + alen], dst, alen)
            length = 2 + 2 * alen
            record[length] = proto
            record[length + 1] = 0
            length += 2
            if ports:
                record[length] = sport >> 8
                record[length + 1] = sport & 0xFF
                record[length + 2] = dport >> 8
                record[length + 3] = dport & 0xFF
                length += 4
            ff_sha1_rows(record, 1, length, digest, sha)
            # base64 of the 20 bytes and a zero byte: 28 characters, the last one the padding '='
            digest[20] = 0
            text = &out[i, 0]
            text[0] = b'1'
            text[1] = b':'
            for k in range(7):
                triple = (<uint32_t>digest[3 * k] << 16) | (<uint32_t>digest[3 * k + 1] << 8) | digest[3 * k + 2]
                text[2 + 4 * k] = BASE64[(triple >> 18) & 63]
                text[3 + 4 * k] = BASE64[(triple >> 12) & 63]
                text[4 + 4 * k] = BASE64[(triple >> 6) & 63]
                text[5 + 4 * k] = BASE64[triple & 63]
            text[29] = b'='
