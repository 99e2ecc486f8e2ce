# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Walk pcap and pcapng records and decode link/IP/TCP headers into preallocated columns.

The loop runs without the GIL and never raises: it stops with a STOP_* code and the byte offset where it
stopped, and fastflow/decode.py turns that into exceptions or damage reports. Payload bytes are never read.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from decode_defs cimport *
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp

cnp.import_array()


# ---------------------------------------------------------------------------------------------- byte loads
# Shifts on bytes are alignment-safe and compile to a single load + bswap.

cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])

cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline uint16_t le16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[1] << 8) | p[0])

cdef inline uint32_t le32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]

cdef inline uint16_t rd16(const uint8_t *p, bint big) noexcept nogil:
    return be16(p) if big else le16(p)

cdef inline uint32_t rd32(const uint8_t *p, bint big) noexcept nogil:
    return be32(p) if big else le32(p)


# ---------------------------------------------------------------------------------------------- packets

cdef inline void decode_tcp(const uint8_t *p, uint32_t avail, int64_t l4len, Columns *c,
                            Py_ssize_t i) noexcept nogil:
    """TCP header at p; avail captured bytes from p; l4len bytes of segment by the IP length fields."""
    cdef uint32_t hlen, optend, k, kind, olen
    if avail < 4:
        c.status[i] = ST_TRUNCATED
        return
    c.sport[i] = be16(p)
    c.dport[i] = be16(p + 2)
    if avail < 20:
        # keep the fields that did parse (tshark shows them too); the segment cannot join a connection
        if avail >= 8:
            c.seq[i] = be32(p + 4)
        if avail >= 12:
            c.ack[i] = be32(p + 8)
        if avail >= 14:
            c.tcp_hlen[i] = (p[12] >> 4) * 4
            c.tcp_flags[i] = ((p[12] & 0x0f) << 8) | p[13]
        c.status[i] = ST_TRUNCATED
        return
    c.seq[i] = be32(p + 4)
    c.ack[i] = be32(p + 8)
    hlen = (p[12] >> 4) * 4
    c.tcp_hlen[i] = <uint8_t>hlen
    c.tcp_flags[i] = ((p[12] & 0x0f) << 8) | p[13]
    c.window[i] = be16(p + 14)
    if hlen < 20 or hlen > l4len:
        c.status[i] = ST_BAD_HEADER
        return
    c.payload_len[i] = <uint32_t>(l4len - hlen)
    c.claimed_len[i] = c.payload_len[i]
    optend = hlen
    if avail < hlen:
        optend = avail
        c.pflags[i] |= PF_OPTS_TRUNCATED
    k = 20
    while k < optend:
        kind = p[k]
        if kind == 0:
            break
        if kind == 1:
            k += 1
            continue
        if k + 1 >= optend:
            break
        olen = p[k + 1]
        if olen < 2 or k + olen > optend:
            break
        if kind == 2 and olen == 4:
            c.mss[i] = be16(p + k + 2)
        elif kind == 3 and olen == 3:
            c.wscale[i] = p[k + 2]
        elif kind == 4 and olen == 2:
            c.sack_ok[i] = 1
        elif kind == 8 and olen == 10:
            c.tsval[i] = be32(p + k + 2)
            c.tsecr[i] = be32(p + k + 6)
            c.pflags[i] |= PF_HAS_TS
        k += olen
    c.status[i] = ST_TCP


cdef inline bint eight_byte_header(const uint8_t *p, uint32_t avail, int64_t l4len, uint16_t sport,
                                   uint16_t dport, bint have_ports, Columns *c, Py_ssize_t i) noexcept nogil:
    """UDP and ICMP: ports (or type and code) when captured; then, as Zeek, the whole 8-byte header must be
    in the IP payload (BAD_HEADER otherwise) and captured (TRUNCATED otherwise)."""
    if not have_ports:
        c.status[i] = ST_TRUNCATED
        return False
    c.sport[i] = sport
    c.dport[i] = dport
    if l4len < 8:
        c.status[i] = ST_BAD_HEADER
        return False
    if avail < 8:
        c.status[i] = ST_TRUNCATED
        return False
    return True


cdef inline void decode_l4(const uint8_t *p, uint32_t avail, int64_t l4len, uint8_t proto,
                           Columns *c, Py_ssize_t i) noexcept nogil:
    c.ip_proto[i] = proto
    if proto == IPPROTO_TCP:
        decode_tcp(p, avail, l4len, c, i)
    elif proto == IPPROTO_UDP:
        # Zeek (packet_analysis/protocol/udp/UDP.cc) takes a datagram only with its whole 8-byte header
        # captured and an IP payload of at least 8 bytes, and counts the UDP length field minus the header
        # as payload (conn.log orig_bytes/resp_bytes), whatever the IP lengths say
        if not eight_byte_header(p, avail, l4len, be16(p) if avail >= 4 else 0,
                                 be16(p + 2) if avail >= 4 else 0, avail >= 4, c, i):
            return
        c.payload_len[i] = <uint32_t>be16(p + 4) - 8 if be16(p + 4) >= 8 else 0
        c.status[i] = ST_UDP
    elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        # type and code stand in the port columns, as Zeek keys ICMP flows. Zeek
        # (packet_analysis/protocol/icmp/ICMP.cc) takes a message only with its 8-byte header captured and
        # an IP payload of at least 8 bytes, and counts the IP payload minus that header as its bytes
        if not eight_byte_header(p, avail, l4len, p[0] if avail >= 2 else 0, p[1] if avail >= 2 else 0,
                                 avail >= 2, c, i):
            return
        c.payload_len[i] = <uint32_t>(l4len - 8)
        c.status[i] = ST_ICMP6 if proto == IPPROTO_ICMPV6 else ST_ICMP
    else:
        c.status[i] = ST_OTHER_IP


cdef inline uint64_t ones_sum(uint64_t total, const uint8_t *p, uint64_t n) noexcept nogil:
    """Add n bytes as big-endian 16-bit words (a last odd byte padded) to a ones-complement sum."""
    cdef uint64_t k = 0
    while k + 1 < n:
        total += (<uint64_t>p[k] << 8) | p[k + 1]
        k += 2
    if k < n:
        total += <uint64_t>p[k] << 8
    return total


cdef inline bint ones_sum_ok(uint64_t total) noexcept nogil:
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total == 0xffff


cdef inline void check_l4_checksum(const uint8_t *l4, uint32_t avail, int64_t l4len, uint64_t pseudo,
                                   Columns *c, Py_ssize_t i) noexcept nogil:
    """TCP/UDP checksum over a fully captured segment (Zeek's ValidChecksum; caplen >= len)."""
    cdef uint8_t st = c.status[i]
    if (st != ST_TCP and st != ST_UDP) or avail < l4len or (c.pflags[i] & PF_IP_LEN_EXCEEDS_WIRE):
        return
    if st == ST_UDP and be16(l4 + 6) == 0 and c.ip_version[i] == 4:
        return  # IPv4 UDP without a checksum
    if not ones_sum_ok(ones_sum(pseudo + <uint64_t>l4len, l4, <uint64_t>l4len)):
        c.pflags[i] |= PF_BAD_CHECKSUM


cdef inline void decode_ipv4(const uint8_t *p, uint32_t avail, uint32_t wire_avail, Columns *c,
                             Py_ssize_t i) noexcept nogil:
    cdef uint32_t ihl, total, claimed
    cdef uint16_t frag
    cdef uint8_t *a
    c.ip_version[i] = 4
    if avail < 20:
        c.status[i] = ST_TRUNCATED
        return
    if (p[0] >> 4) != 4:
        c.status[i] = ST_BAD_HEADER
        return
    ihl = (p[0] & 0x0f) * 4
    a = c.src + 16 * i
    a[10] = 0xff
    a[11] = 0xff
    memcpy(a + 12, p + 12, 4)
    a = c.dst + 16 * i
    a[10] = 0xff
    a[11] = 0xff
    memcpy(a + 12, p + 16, 4)
    c.ip_proto[i] = p[9]
    total = be16(p + 2)
    if total == 0:
        # segmentation offload writes 0: the packet is what was on the wire
        total = wire_avail
    c.ip_len[i] = total
    if ihl < 20 or total < ihl:
        c.status[i] = ST_BAD_HEADER
        return
    if avail < ihl:
        c.status[i] = ST_TRUNCATED
        return
    if ihl > 20:
        c.pflags[i] |= PF_IPV4_OPTIONS
    frag = be16(p + 6)
    if frag & 0x1fff:
        c.status[i] = ST_FRAGMENT
        return
    if frag & 0x2000:
        c.pflags[i] |= PF_FIRST_FRAGMENT
    if c.verify_checksums and not ones_sum_ok(ones_sum(0, p, ihl)):
        c.pflags[i] |= PF_BAD_IP_CHECKSUM
    claimed = total
    if total > wire_avail:
        # the header claims more than was on the wire: lengths come from what was there (as Wireshark)
        c.pflags[i] |= PF_IP_LEN_EXCEEDS_WIRE
        total = wire_avail if wire_avail > ihl else ihl
    decode_l4(p + ihl, avail - ihl, <int64_t>total - ihl, p[9], c, i)
    if c.status[i] == ST_TCP and claimed > total:
        c.claimed_len[i] += claimed - total     # Zeek sizes segments by the IP header alone
    if c.verify_checksums:
        check_l4_checksum(p + ihl, avail - ihl, <int64_t>total - ihl,
                          ones_sum(<uint64_t>p[9], p + 12, 8), c, i)
    if (frag & 0x2000) and c.status[i] != ST_TCP and c.status[i] != ST_UDP \
            and c.status[i] != ST_ICMP and c.status[i] != ST_OTHER_IP:
        # a first fragment too short for its transport header
        c.status[i] = ST_FRAGMENT
        c.pflags[i] &= ~PF_FIRST_FRAGMENT


cdef inline void decode_ipv6(const uint8_t *p, uint32_t avail, uint32_t wire_avail, Columns *c,
                             Py_ssize_t i) noexcept nogil:
    cdef uint32_t off = 40, hlen, k, optend
    cdef int64_t l4len
    cdef uint32_t plen
    cdef uint8_t nh
    cdef uint16_t fo
    cdef bint first_fragment = False, jumbo = False
    cdef uint32_t claimed
    cdef uint64_t pkt_end
    cdef const uint8_t *final_dst = p + 24    # the checksum's destination: a routing header's last hop
    c.ip_version[i] = 6
    if avail < 40:
        c.status[i] = ST_TRUNCATED
        return
    if (p[0] >> 4) != 6:
        c.status[i] = ST_BAD_HEADER
        return
    memcpy(c.src + 16 * i, p + 8, 16)
    memcpy(c.dst + 16 * i, p + 24, 16)
    plen = be16(p + 4)
    nh = p[6]
    if plen == 0:
        plen = wire_avail - 40 if wire_avail > 40 else 0  # jumbogram or offload; refined by a jumbo option
    # extension headers: a loop over the key set; each step moves on by at least 8 bytes
    while nh == IPPROTO_HOPOPTS or nh == IPPROTO_ROUTING or nh == IPPROTO_FRAGMENT \
            or nh == IPPROTO_DSTOPTS or nh == IPPROTO_AH:
        # the packet ends where its length fields say (within what was on the wire): a header chain that runs
        # past that contradicts them (BAD_HEADER); past a snaplen cut only, it is TRUNCATED; a first fragment's
        # chain may go on in the next fragment (FRAGMENT, as a first fragment too short for its TCP header)
        pkt_end = <uint64_t>plen + 40
        if pkt_end > wire_avail:
            pkt_end = wire_avail
        if off + 8 > pkt_end or avail < off + 8:
            c.ip_proto[i] = nh
            c.ip_len[i] = 40 + plen
            if first_fragment:
                c.status[i] = ST_FRAGMENT
            else:
                c.status[i] = ST_BAD_HEADER if off + 8 > pkt_end else ST_TRUNCATED
            return
        if nh == IPPROTO_FRAGMENT:
            hlen = 8
            fo = be16(p + off + 2)
            if fo & 0xfff8:
                c.ip_proto[i] = p[off]
                c.ip_len[i] = 40 + plen
                c.status[i] = ST_FRAGMENT
                return
            if fo & 1:
                first_fragment = True
        elif nh == IPPROTO_AH:
            hlen = (<uint32_t>p[off + 1] + 2) * 4
        else:
            hlen = (<uint32_t>p[off + 1] + 1) * 8
            if nh == IPPROTO_ROUTING and (p[off + 2] == 0 or p[off + 2] == 2) and p[off + 3] > 0 \
                    and p[off + 1] >= 2 and avail >= off + hlen:
                final_dst = p + off + 8 + 16 * (p[off + 1] // 2 - 1)
            if nh == IPPROTO_HOPOPTS and be16(p + 4) == 0 and avail >= off + hlen:
                # RFC 2675 jumbo payload option (type 0xC2, length 4)
                k = off + 2
                optend = off + hlen
                while k + 1 < optend:
                    if p[k] == 0:
                        k += 1
                        continue
                    if p[k] == 0xC2 and p[k + 1] == 4 and k + 6 <= optend:
                        plen = be32(p + k + 2)
                        jumbo = True
                        break
                    k += 2 + p[k + 1]
        nh = p[off]
        off += hlen
    # a payload length of 0 without a jumbo option counts 40 bytes, as Zeek's IP_Hdr::TotalLen (the payload
    # itself is still taken from the frame)
    c.ip_len[i] = 40 + (plen if jumbo or be16(p + 4) != 0 else 0)
    claimed = plen
    if 40 + plen > wire_avail:
        c.pflags[i] |= PF_IP_LEN_EXCEEDS_WIRE
        plen = wire_avail - 40
    l4len = <int64_t>plen + 40 - off
    if l4len < 0:
        c.ip_proto[i] = nh
        c.status[i] = ST_BAD_HEADER
        return
    if avail < off:
        c.ip_proto[i] = nh
        c.status[i] = ST_TRUNCATED
        return
    if first_fragment:
        c.pflags[i] |= PF_FIRST_FRAGMENT
    decode_l4(p + off, avail - off, l4len, nh, c, i)
    if c.status[i] == ST_TCP and claimed > plen:
        c.claimed_len[i] += claimed - plen
    if c.verify_checksums:
        check_l4_checksum(p + off, avail - off, l4len,
                          ones_sum(ones_sum(<uint64_t>nh, p + 8, 16), final_dst, 16), c, i)
    if first_fragment and (c.status[i] == ST_TRUNCATED or c.status[i] == ST_BAD_HEADER):
        c.status[i] = ST_FRAGMENT
        c.pflags[i] &= ~PF_FIRST_FRAGMENT


cdef inline void decode_ethertype(const uint8_t *p, uint32_t caplen, uint32_t wirelen, uint32_t off,
                                  uint32_t etype, Columns *c, Py_ssize_t i) noexcept nogil:
    """Follow VLAN tags, MPLS labels, PPPoE and LLC/SNAP from the ethertype at p[off-2] to IP."""
    cdef int guard = 0
    cdef uint8_t ver
    while guard < 64:
        guard += 1
        if etype == ETHERTYPE_VLAN or etype == ETHERTYPE_QINQ or etype == ETHERTYPE_QINQ_OLD:
            if caplen < off + 4:
                c.status[i] = ST_TRUNCATED
                return
            if c.vlan[i] < 0:
                c.vlan[i] = be16(p + off) & 0x0fff
            etype = be16(p + off + 2)
            off += 4
        elif etype == ETHERTYPE_MPLS or etype == ETHERTYPE_MPLS_MCAST:
            # pop labels to the bottom of the stack, then the first nibble says which IP follows
            while True:
                if caplen < off + 4:
                    c.status[i] = ST_TRUNCATED
                    return
                off += 4
                if p[off - 2] & 0x01:
                    break
            if caplen < off + 1:
                c.status[i] = ST_TRUNCATED
                return
            ver = p[off] >> 4
            if ver == 4:
                etype = ETHERTYPE_IPV4
            elif ver == 6:
                etype = ETHERTYPE_IPV6
            else:
                c.status[i] = ST_NON_IP
                return
        elif etype == ETHERTYPE_PPPOE_SESSION:
            if caplen < off + 8:
                c.status[i] = ST_TRUNCATED
                return
            etype = be16(p + off + 6)
            # the PPPoE length bounds the PPP frame: bytes past it are padding, not IP
            if wirelen > off + 6 + be16(p + off + 4):
                wirelen = off + 6 + be16(p + off + 4)
            off += 8
            if etype == 0x0021:
                etype = ETHERTYPE_IPV4
            elif etype == 0x0057:
                etype = ETHERTYPE_IPV6
            else:
                c.status[i] = ST_NON_IP
                return
        elif etype == ETHERTYPE_FABRICPATH:
            # Cisco FabricPath: a 2-byte FTag/TTL, then the original Ethernet frame
            if caplen < off + 2 + 14:
                c.status[i] = ST_TRUNCATED
                return
            etype = be16(p + off + 2 + 12)
            off += 2 + 14
        elif etype < 0x0600:
            # 802.3 length field: LLC, and SNAP carries an ethertype
            if caplen < off + 8:
                c.status[i] = ST_TRUNCATED
                return
            if p[off] == 0xAA and p[off + 1] == 0xAA and p[off + 2] == 0x03:
                etype = be16(p + off + 6)
                off += 8
            else:
                c.status[i] = ST_NON_IP
                return
        else:
            break
    if etype == ETHERTYPE_IPV4:
        decode_ipv4(p + off, caplen - off if caplen > off else 0, wirelen - off if wirelen > off else 0, c, i)
    elif etype == ETHERTYPE_IPV6:
        decode_ipv6(p + off, caplen - off if caplen > off else 0, wirelen - off if wirelen > off else 0, c, i)
    else:
        c.status[i] = ST_NON_IP


cdef inline void decode_ip_by_version(const uint8_t *p, uint32_t caplen, uint32_t wirelen, uint32_t off,
                                      Columns *c, Py_ssize_t i) noexcept nogil:
    if caplen < off + 1:
        c.status[i] = ST_TRUNCATED
        return
    if (p[off] >> 4) == 4:
        decode_ipv4(p + off, caplen - off, wirelen - off if wirelen > off else 0, c, i)
    elif (p[off] >> 4) == 6:
        decode_ipv6(p + off, caplen - off, wirelen - off if wirelen > off else 0, c, i)
    else:
        c.status[i] = ST_NON_IP


cdef void decode_packet(const uint8_t *p, uint32_t caplen, uint32_t wirelen, int32_t linktype,
                        Columns *c, Py_ssize_t i) noexcept nogil:
    cdef uint32_t family
    c.caplen[i] = caplen
    c.wirelen[i] = wirelen
    c.status[i] = ST_UNSUPPORTED_LINK
    c.pflags[i] = 0
    c.ip_version[i] = 0
    c.vlan[i] = -1
    memset(c.src + 16 * i, 0, 16)
    memset(c.dst + 16 * i, 0, 16)
    c.ip_proto[i] = 0
    c.ip_len[i] = 0
    c.sport[i] = 0
    c.dport[i] = 0
    c.seq[i] = 0
    c.ack[i] = 0
    c.tcp_flags[i] = 0
    c.window[i] = 0
    c.tcp_hlen[i] = 0
    c.payload_len[i] = 0
    c.claimed_len[i] = 0
    c.mss[i] = 0
    c.wscale[i] = -1
    c.sack_ok[i] = 0
    c.tsval[i] = 0
    c.tsecr[i] = 0
    if wirelen < caplen:
        wirelen = caplen  # a damaged original length: the captured bytes were on the wire at least
    if linktype == LINKTYPE_ETHERNET:
        if caplen < 14:
            c.status[i] = ST_TRUNCATED
            return
        decode_ethertype(p, caplen, wirelen, 14, be16(p + 12), c, i)
    elif linktype == LINKTYPE_LINUX_SLL:
        if caplen < 16:
            c.status[i] = ST_TRUNCATED
            return
        decode_ethertype(p, caplen, wirelen, 16, be16(p + 14), c, i)
    elif linktype == LINKTYPE_LINUX_SLL2:
        if caplen < 20:
            c.status[i] = ST_TRUNCATED
            return
        decode_ethertype(p, caplen, wirelen, 20, be16(p), c, i)
    elif linktype == LINKTYPE_RAW:
        decode_ip_by_version(p, caplen, wirelen, 0, c, i)
    elif linktype == LINKTYPE_IPV4:
        decode_ipv4(p, caplen, wirelen, c, i)
    elif linktype == LINKTYPE_IPV6:
        decode_ipv6(p, caplen, wirelen, c, i)
    elif linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        # address family in the capturing host's byte order (NULL) or network order (LOOP)
        if caplen < 4:
            c.status[i] = ST_TRUNCATED
            return
        family = le32(p)
        if family > 0xffff:
            family = be32(p)
        if family == 2:
            decode_ipv4(p + 4, caplen - 4, wirelen - 4 if wirelen > 4 else 0, c, i)
        elif family == 24 or family == 28 or family == 30:
            decode_ipv6(p + 4, caplen - 4, wirelen - 4 if wirelen > 4 else 0, c, i)
        else:
            c.status[i] = ST_NON_IP


# ---------------------------------------------------------------------------------------------- records

_COLUMN_DTYPES = (
    ("frame", np.uint64), ("ts", np.int64), ("caplen", np.uint32), ("wirelen", np.uint32),
    ("status", np.uint8), ("pflags", np.uint8), ("ip_version", np.uint8), ("vlan", np.int32),
    ("src", np.uint8), ("dst", np.uint8), ("ip_proto", np.uint8), ("ip_len", np.uint32),
    ("sport", np.uint16), ("dport", np.uint16), ("seq", np.uint32), ("ack", np.uint32),
    ("tcp_flags", np.uint16), ("window", np.uint16), ("tcp_hlen", np.uint8), ("payload_len", np.uint32),
    ("claimed_len", np.uint32), ("mss", np.uint16), ("wscale", np.int16), ("sack_ok", np.uint8), ("tsval", np.uint32),
    ("tsecr", np.uint32),
)
COLUMN_NAMES = tuple(name for name, _ in _COLUMN_DTYPES)
#: each column's dtype and the shape of one row
COLUMN_LAYOUT = tuple((name, np.dtype(dtype), (16,) if name in ("src", "dst") else ()) for name, dtype in _COLUMN_DTYPES)


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


cdef class Decoder:
    """Incremental decoder: feed() consumes whole records from successive byte blocks."""
    cdef Columns cols
    cdef dict arrays
    cdef object allocate
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t n
    cdef readonly int fmt
    cdef bint big                       # byte order of the current pcap file or pcapng section
    cdef uint64_t pcap_units            # pcap: 10**6 or 10**9 fraction units
    cdef int32_t pcap_linktype
    cdef int32_t pcap_filter
    cdef Iface ifaces[MAX_IFACES]
    cdef int n_ifaces
    cdef readonly uint64_t frames       # records seen (filtered or not)
    cdef readonly uint64_t filtered     # records rejected by the BPF filter
    cdef readonly uint64_t consumed     # bytes consumed so far, the offset of the next record
    cdef readonly int sections
    cdef uint64_t counts[N_STATUS]
    cdef bytes filter_expr
    cdef const char *filter_c           # points into filter_expr, which self keeps alive
    cdef bpf_program filters[MAX_FILTERS]
    cdef int32_t filter_linktypes[MAX_FILTERS]
    cdef int n_filters
    cdef char errbuf[512]
    cdef readonly int stop
    cdef readonly uint64_t stop_offset
    cdef readonly int bad_linktype      # link type a filter failed to compile for
    cdef readonly object linktypes      # every link type met, in order
    cdef readonly uint64_t bad_length_records   # records whose captured length exceeds the original
    cdef readonly uint64_t bad_length_offset    # offset of the first of them

    def __cinit__(self, Py_ssize_t capacity=1 << 18, filter_expr=None, bint verify_checksums=False, allocate=None):
        """allocate(capacity), when given, makes each batch's arrays (a dict of COLUMN_NAMES, each of its
        dtype and shape, C-contiguous and writable)."""
        cdef str name
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.n = 0
        self.fmt = FMT_UNKNOWN
        self.n_ifaces = 0
        self.n_filters = 0
        self.frames = 0
        self.filtered = 0
        self.consumed = 0
        self.sections = 0
        self.stop = STOP_NEED_MORE
        self.stop_offset = 0
        self.bad_linktype = -1
        self.bad_length_records = 0
        self.bad_length_offset = 0
        self.linktypes = []
        memset(self.counts, 0, sizeof(self.counts))
        self.errbuf[0] = 0
        self.filter_expr = filter_expr.encode() if filter_expr else None
        self.filter_c = NULL
        if self.filter_expr is not None:
            self.filter_c = self.filter_expr
        self.arrays = {}
        self.allocate = allocate
        self._allocate()
        self.cols.verify_checksums = verify_checksums

    def __dealloc__(self):
        cdef int k
        for k in range(self.n_filters):
            pcap_freecode(&self.filters[k])

    cdef _allocate(self):
        cdef object a, shape
        if self.allocate is None:
            arrays = {}
            for name, dtype in _COLUMN_DTYPES:
                shape = [self.capacity, 16] if name in ("src", "dst") else [self.capacity]
                arrays[name] = np.empty(shape, dtype=dtype)
        else:
            made = self.allocate(self.capacity)
            arrays = {name: made[name] for name in COLUMN_NAMES}
            for name, dtype, tail in COLUMN_LAYOUT:     # the decoder writes through raw pointers: check first
                a = arrays[name]
                shape = (self.capacity,) + tail
                if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous or not a.flags.writeable:
                    raise ValueError(f"allocate: column {name} must be a writable C-contiguous {dtype} "
                                     f"array of shape {shape}")
        self.arrays = arrays
        c = &self.cols
        c.frame = <uint64_t *>_ptr(arrays["frame"])
        c.ts = <int64_t *>_ptr(arrays["ts"])
        c.caplen = <uint32_t *>_ptr(arrays["caplen"])
        c.wirelen = <uint32_t *>_ptr(arrays["wirelen"])
        c.status = <uint8_t *>_ptr(arrays["status"])
        c.pflags = <uint8_t *>_ptr(arrays["pflags"])
        c.ip_version = <uint8_t *>_ptr(arrays["ip_version"])
        c.vlan = <int32_t *>_ptr(arrays["vlan"])
        c.src = <uint8_t *>_ptr(arrays["src"])
        c.dst = <uint8_t *>_ptr(arrays["dst"])
        c.ip_proto = <uint8_t *>_ptr(arrays["ip_proto"])
        c.ip_len = <uint32_t *>_ptr(arrays["ip_len"])
        c.sport = <uint16_t *>_ptr(arrays["sport"])
        c.dport = <uint16_t *>_ptr(arrays["dport"])
        c.seq = <uint32_t *>_ptr(arrays["seq"])
        c.ack = <uint32_t *>_ptr(arrays["ack"])
        c.tcp_flags = <uint16_t *>_ptr(arrays["tcp_flags"])
        c.window = <uint16_t *>_ptr(arrays["window"])
        c.tcp_hlen = <uint8_t *>_ptr(arrays["tcp_hlen"])
        c.payload_len = <uint32_t *>_ptr(arrays["payload_len"])
        c.claimed_len = <uint32_t *>_ptr(arrays["claimed_len"])
        c.mss = <uint16_t *>_ptr(arrays["mss"])
        c.wscale = <int16_t *>_ptr(arrays["wscale"])
        c.sack_ok = <uint8_t *>_ptr(arrays["sack_ok"])
        c.tsval = <uint32_t *>_ptr(arrays["tsval"])
        c.tsecr = <uint32_t *>_ptr(arrays["tsecr"])

    def take(self):
        """Hand over the rows decoded since the last take() as a dict of arrays."""
        cdef Py_ssize_t n = self.n
        if n == 0:
            return {name: np.empty((0,) + tail, dtype) for name, dtype, tail in COLUMN_LAYOUT}
        # the arrays are given away, no copy: a short batch (the input's last rows) as slices of them (a copy
        # was half the page faults of decoding a 1 M-packet capture). The next rows get fresh arrays, made
        # when feed() needs them: after the last rows, none are
        out = self.arrays if n == self.capacity else {name: a[:n] for name, a in self.arrays.items()}
        self.arrays = None
        self.n = 0
        return out

    @property
    def status_counts(self):
        return [self.counts[k] for k in range(N_STATUS)]

    @property
    def error_message(self):
        return self.errbuf.decode("utf-8", "replace")

    def feed(self, const uint8_t[::1] data not None, bint eof=False):
        """Consume whole records from data (which starts at byte offset self.consumed of the input).

        Returns the number of bytes consumed; self.stop says why it stopped."""
        cdef const uint8_t *p = NULL
        cdef Py_ssize_t length = data.shape[0]
        cdef Py_ssize_t used = 0
        cdef int stop
        if self.stop >= STOP_END:
            return 0
        if self.arrays is None:
            self._allocate()
        if length > 0:
            p = &data[0]
        with nogil:
            stop = self._run(p, length, eof, &used)
        self.consumed += used
        self.stop = stop
        return used

    cdef int _filter_slot(self, int32_t linktype) noexcept nogil:
        """Compiled filter for this link type (compiled on first use); -1 unfiltered, -2 on error."""
        cdef int k
        if self.filter_c == NULL:
            return -1
        for k in range(self.n_filters):
            if self.filter_linktypes[k] == linktype:
                return k
        if self.n_filters >= MAX_FILTERS:
            self.bad_linktype = linktype
            return -2
        if ff_bpf_compile(linktype, self.filter_c, &self.filters[self.n_filters], self.errbuf) != 0:
            self.bad_linktype = linktype
            return -2
        self.filter_linktypes[self.n_filters] = linktype
        self.n_filters += 1
        return self.n_filters - 1

    cdef inline bint _emit(self, const uint8_t *pkt, uint32_t caplen, uint32_t wirelen, int64_t ts,
                           int32_t linktype, int slot) noexcept nogil:
        """One packet record: filter, decode into row n. Returns True when it was kept."""
        cdef Py_ssize_t i
        self.frames += 1
        if slot >= 0 and not ff_bpf_match(&self.filters[slot], pkt, wirelen, caplen):
            self.filtered += 1
            return False
        i = self.n
        self.cols.frame[i] = self.frames
        self.cols.ts[i] = ts
        decode_packet(pkt, caplen, wirelen, linktype, &self.cols, i)
        self.counts[self.cols.status[i]] += 1
        self.n = i + 1
        return True

    cdef inline void _note_bad_length(self, Py_ssize_t pos) noexcept nogil:
        # captured length over the original length: the record boundary still holds, so the packet is
        # kept (as libpcap and tshark do) and the damage is reported
        if self.bad_length_records == 0:
            self.bad_length_offset = self.consumed + pos
        self.bad_length_records += 1

    cdef void _note_linktype(self, int32_t linktype) noexcept nogil:
        with gil:
            if linktype not in self.linktypes:
                self.linktypes.append(linktype)

    cdef int _run(self, const uint8_t *p, Py_ssize_t length, bint eof, Py_ssize_t *used) noexcept nogil:
        cdef Py_ssize_t pos = 0, rem
        cdef uint32_t magic, caplen, wirelen, btype, blen, ifid, opt_code, opt_len, k
        cdef uint64_t units, ups, sec, frac
        cdef int64_t ts
        cdef int slot
        cdef Iface *iface
        cdef uint8_t res
        while True:
            used[0] = pos
            rem = length - pos
            if self.fmt == FMT_UNKNOWN:
                if rem < 4:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    if self.consumed + length == 0:
                        return STOP_EMPTY
                    return STOP_NOT_CAPTURE if self.consumed + pos == 0 else STOP_CUT_SHORT
                magic = le32(p + pos)
                if magic == 0x0a0d0d0a:
                    self.fmt = FMT_PCAPNG
                    continue
                if magic == 0xa1b2c3d4U or magic == 0xa1b23c4dU:
                    self.big = False
                elif magic == 0xd4c3b2a1U or magic == 0x4d3cb2a1U:
                    self.big = True
                else:
                    self.stop_offset = self.consumed + pos
                    return STOP_NOT_CAPTURE
                if rem < 24:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    return STOP_CUT_SHORT
                self.fmt = FMT_PCAP
                self.sections = 1
                self.pcap_units = 1000000000 if (magic == 0xa1b23c4dU or magic == 0x4d3cb2a1U) else 1000000
                # the link type is the low 16 bits; the high bits may carry FCS information
                self.pcap_linktype = rd32(p + pos + 20, self.big) & 0xffff
                self._note_linktype(self.pcap_linktype)
                self.pcap_filter = self._filter_slot(self.pcap_linktype)
                if self.pcap_filter == -2:
                    self.stop_offset = self.consumed + pos
                    return STOP_FILTER_ERROR
                pos += 24
            elif self.fmt == FMT_PCAP:
                if self.n >= self.capacity:
                    return STOP_FULL
                if rem < 16:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    return STOP_END if rem == 0 else STOP_CUT_SHORT
                caplen = rd32(p + pos + 8, self.big)
                wirelen = rd32(p + pos + 12, self.big)
                if caplen > MAX_CAPLEN:
                    self.stop_offset = self.consumed + pos
                    return STOP_BAD_RECORD
                if caplen > wirelen:
                    self._note_bad_length(pos)
                if rem < 16 + <Py_ssize_t>caplen:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    return STOP_CUT_SHORT
                # seconds are signed 32-bit in practice (tshark prints pre-1970 times that way)
                ts = <int64_t>(<int32_t>rd32(p + pos, self.big)) * 1000000000
                if self.pcap_units == 1000000:
                    ts += <int64_t>rd32(p + pos + 4, self.big) * 1000
                else:
                    ts += <int64_t>rd32(p + pos + 4, self.big)
                self._emit(p + pos + 16, caplen, wirelen, ts, self.pcap_linktype, self.pcap_filter)
                pos += 16 + caplen
            else:
                if self.n >= self.capacity:
                    return STOP_FULL
                if rem < 12:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    return STOP_END if rem == 0 else STOP_CUT_SHORT
                btype = le32(p + pos)
                if btype == 0x0a0d0d0a:
                    # Section Header Block: its byte-order magic sets the order for the whole section
                    magic = le32(p + pos + 8)
                    if magic == 0x1a2b3c4d:
                        self.big = False
                    elif magic == 0x4d3c2b1a:
                        self.big = True
                    else:
                        self.stop_offset = self.consumed + pos
                        return STOP_BAD_FILE_HEADER
                else:
                    btype = rd32(p + pos, self.big)
                blen = rd32(p + pos + 4, self.big)
                if blen < 12 or (blen & 3) or blen > MAX_BLOCK or (btype == 0x0a0d0d0a and blen < 28):
                    self.stop_offset = self.consumed + pos
                    return STOP_BAD_RECORD
                if rem < <Py_ssize_t>blen:
                    if not eof:
                        return STOP_NEED_MORE
                    self.stop_offset = self.consumed + pos
                    return STOP_CUT_SHORT
                if rd32(p + pos + blen - 4, self.big) != blen:
                    self.stop_offset = self.consumed + pos
                    return STOP_BAD_RECORD
                if btype == 0x0a0d0d0a:
                    self.n_ifaces = 0       # interface ids start again in each section
                    self.sections += 1
                elif btype == 1:
                    if blen < 20 or self.n_ifaces >= MAX_IFACES:
                        self.stop_offset = self.consumed + pos
                        return STOP_BAD_RECORD
                    iface = &self.ifaces[self.n_ifaces]
                    iface.linktype = rd16(p + pos + 8, self.big)
                    iface.units_per_sec = 1000000
                    iface.offset_sec = 0
                    k = 16
                    while k + 4 <= blen - 4:
                        opt_code = rd16(p + pos + k, self.big)
                        opt_len = rd16(p + pos + k + 2, self.big)
                        if opt_code == 0 or k + 4 + opt_len > blen - 4:
                            break
                        if opt_code == 9 and opt_len >= 1:
                            res = p[pos + k + 4]
                            if res & 0x80:
                                if (res & 0x7f) > 63:
                                    self.stop_offset = self.consumed + pos
                                    return STOP_BAD_RECORD
                                iface.units_per_sec = (<uint64_t>1) << (res & 0x7f)
                            else:
                                if res > 19:
                                    self.stop_offset = self.consumed + pos
                                    return STOP_BAD_RECORD
                                iface.units_per_sec = 1
                                while res > 0:
                                    iface.units_per_sec *= 10
                                    res -= 1
                        elif opt_code == 14 and opt_len == 8:
                            iface.offset_sec = <int64_t>((<uint64_t>rd32(p + pos + k + 4 + (0 if self.big else 4), self.big) << 32)
                                                         | rd32(p + pos + k + 4 + (4 if self.big else 0), self.big))
                        k += 4 + ((opt_len + 3) & ~3u)
                    self._note_linktype(iface.linktype)
                    iface.filter_slot = self._filter_slot(iface.linktype)
                    if iface.filter_slot == -2:
                        self.stop_offset = self.consumed + pos
                        return STOP_FILTER_ERROR
                    self.n_ifaces += 1
                elif btype == 6 or btype == 2 or btype == 3:
                    if btype == 3:
                        if blen < 16 or self.n_ifaces < 1:
                            self.stop_offset = self.consumed + pos
                            return STOP_BAD_RECORD
                        ifid = 0
                        units = 0
                        wirelen = rd32(p + pos + 8, self.big)
                        caplen = blen - 16
                        if caplen > wirelen:
                            caplen = wirelen
                        k = 12
                    else:
                        if blen < 32:
                            self.stop_offset = self.consumed + pos
                            return STOP_BAD_RECORD
                        ifid = rd32(p + pos + 8, self.big) if btype == 6 else rd16(p + pos + 8, self.big)
                        units = (<uint64_t>rd32(p + pos + 12, self.big) << 32) | rd32(p + pos + 16, self.big)
                        caplen = rd32(p + pos + 20, self.big)
                        wirelen = rd32(p + pos + 24, self.big)
                        k = 28
                        if ifid >= <uint32_t>self.n_ifaces or caplen > MAX_CAPLEN or k + caplen > blen - 4:
                            self.stop_offset = self.consumed + pos
                            return STOP_BAD_RECORD
                        if caplen > wirelen:
                            self._note_bad_length(pos)
                    iface = &self.ifaces[ifid]
                    ups = iface.units_per_sec
                    if ups == 1000000000:
                        ts = <int64_t>units
                    elif ups == 1000000:
                        ts = <int64_t>units * 1000
                    else:
                        sec = units // ups
                        frac = units % ups
                        if ups <= 1000000000:
                            ts = <int64_t>(sec * 1000000000 + frac * (1000000000 // ups)) \
                                if 1000000000 % ups == 0 else \
                                <int64_t>(sec * 1000000000 + (frac * 1000000000) // ups)
                        else:
                            ts = <int64_t>(sec * 1000000000 + <uint64_t>(<double>frac * 1e9 / <double>ups))
                    ts += iface.offset_sec * 1000000000
                    self._emit(p + pos + k, caplen, wirelen, ts, iface.linktype, iface.filter_slot)
                # any other block type is skipped whole
                pos += blen


def check_filter(str expr, int linktype=LINKTYPE_ETHERNET):
    """Compile expr for a link type and throw it away: None if it compiles, else libpcap's message."""
    cdef bpf_program prog
    cdef char errbuf[512]
    cdef bytes raw = expr.encode()
    if ff_bpf_compile(linktype, raw, &prog, errbuf) != 0:
        return errbuf.decode("utf-8", "replace")
    pcap_freecode(&prog)
    return None


def batch_rows(const uint8_t[::1] status not None, const uint8_t[::1] pflags not None,
               const int64_t[::1] ts not None, int64_t previous, const uint8_t[::1] keep=None):
    """What the pipeline needs of a decoded batch before its engines, in one pass (numpy's ten took about a
    fifth of the decoder's own time on the scale input of benchmarks/RESULTS.md): Zeek's network time per row (the largest timestamp so
    far, from `previous`, every packet counted), the rows of TCP segments and of datagrams (UDP, ICMP,
    ICMPv6, other IP) whose IPv4 header checksum is right (and that `keep`, when given, keeps), and how many
    rows have a wrong one. Returns (network time per row, network time at the end, TCP rows, datagram rows,
    bad IP checksums); the rows are int64 indices, increasing."""
    cdef Py_ssize_t n = status.shape[0], i, n_tcp = 0, n_dgram = 0, bad = 0
    if pflags.shape[0] != n or ts.shape[0] != n or (keep is not None and keep.shape[0] != n):
        raise ValueError("batch_rows: column lengths disagree")
    now = np.empty(n, dtype=np.int64)
    tcp = np.empty(n, dtype=np.int64)
    dgram = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] nv = now
    cdef int64_t[::1] tv = tcp
    cdef int64_t[::1] dv = dgram
    cdef const uint8_t *kv = &keep[0] if keep is not None and n else NULL
    cdef uint8_t st
    with nogil:
        for i in range(n):
            if ts[i] > previous:
                previous = ts[i]
            nv[i] = previous
            if pflags[i] & PF_BAD_IP_CHECKSUM:
                bad += 1
                continue
            if kv != NULL and not kv[i]:
                continue
            st = status[i]
            if st == ST_TCP:
                tv[n_tcp] = i
                n_tcp += 1
            elif st == ST_UDP or st == ST_ICMP or st == ST_ICMP6 or st == ST_OTHER_IP:
                dv[n_dgram] = i
                n_dgram += 1
    return now, previous, tcp[:n_tcp], dgram[:n_dgram].copy(), bad
