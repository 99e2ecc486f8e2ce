# Declarations for the capture decoder: on-disk constants with their registry prefixes, and the
# C structs the nogil loop works on. Loops live in _decode.pyx.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t

cdef extern from "pcap/pcap.h":
    struct bpf_insn:
        pass
    struct bpf_program:
        unsigned int bf_len
        bpf_insn *bf_insns
    void pcap_freecode(bpf_program *) nogil
    int PCAP_ERRBUF_SIZE

cdef extern from "bpf_shim.h":
    int ff_bpf_compile(int linktype, const char *expr, bpf_program *prog, char *errbuf) nogil
    int ff_bpf_match(const bpf_program *prog, const unsigned char *pkt,
                     unsigned int wirelen, unsigned int caplen) nogil

# Link types as written in pcap/pcapng files (tcpdump.org/linktypes.html), not DLT_* values.
cdef enum:
    LINKTYPE_NULL = 0
    LINKTYPE_ETHERNET = 1
    LINKTYPE_RAW = 101
    LINKTYPE_LOOP = 108
    LINKTYPE_LINUX_SLL = 113
    LINKTYPE_IPV4 = 228
    LINKTYPE_IPV6 = 229
    LINKTYPE_LINUX_SLL2 = 276

cdef enum:
    ETHERTYPE_IPV4 = 0x0800
    ETHERTYPE_ARP = 0x0806
    ETHERTYPE_VLAN = 0x8100
    ETHERTYPE_IPV6 = 0x86dd
    ETHERTYPE_MPLS = 0x8847
    ETHERTYPE_MPLS_MCAST = 0x8848
    ETHERTYPE_PPPOE_SESSION = 0x8864
    ETHERTYPE_QINQ = 0x88a8
    ETHERTYPE_FABRICPATH = 0x8903
    ETHERTYPE_QINQ_OLD = 0x9100

cdef enum:
    IPPROTO_HOPOPTS = 0
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ROUTING = 43
    IPPROTO_FRAGMENT = 44
    IPPROTO_AH = 51
    IPPROTO_ICMPV6 = 58
    IPPROTO_DSTOPTS = 60

# Per-packet status (mirrored by fastflow.decode.Status).
cdef enum:
    ST_TCP = 0
    ST_UDP = 1
    ST_ICMP = 2
    ST_ICMP6 = 3
    ST_OTHER_IP = 4
    ST_NON_IP = 5
    ST_UNSUPPORTED_LINK = 6
    ST_TRUNCATED = 7
    ST_FRAGMENT = 8
    ST_BAD_HEADER = 9
    N_STATUS = 10

# pflags bits
cdef enum:
    PF_FIRST_FRAGMENT = 1
    PF_OPTS_TRUNCATED = 2
    PF_HAS_TS = 4
    PF_IPV4_OPTIONS = 8
    PF_IP_LEN_EXCEEDS_WIRE = 16
    PF_BAD_CHECKSUM = 32         # TCP/UDP checksum wrong (computed only when asked and fully captured)
    PF_BAD_IP_CHECKSUM = 64      # IPv4 header checksum wrong (computed only when asked)

# What feed() stopped on (mirrored by fastflow.decode.Stop).
cdef enum:
    STOP_NEED_MORE = 0        # the next record is incomplete; call again with more bytes
    STOP_FULL = 1             # the output columns are full; take() them and call again
    STOP_END = 2              # clean end of input
    STOP_NOT_CAPTURE = 3      # unknown magic at offset 0 (fatal)
    STOP_EMPTY = 4            # zero bytes of input (fatal)
    STOP_CUT_SHORT = 5        # input ends inside a header or record (damage)
    STOP_BAD_RECORD = 6       # a record/block header that cannot be right (damage)
    STOP_FILTER_ERROR = 7     # the BPF expression does not compile for a link type met in the file (fatal)
    STOP_BAD_FILE_HEADER = 8  # a file/section header that cannot be right (fatal at offset 0, damage later)

cdef enum:
    FMT_UNKNOWN = 0
    FMT_PCAP = 1
    FMT_PCAPNG = 2

cdef enum:
    MAX_CAPLEN = 262144        # libpcap's MAXIMUM_SNAPLEN: a larger captured length is corruption
    MAX_BLOCK = 16777216       # Wireshark's cap on a pcapng block; larger means a lying length
    MAX_IFACES = 256
    MAX_FILTERS = 16

cdef struct Iface:
    int32_t linktype
    uint64_t units_per_sec     # timestamp resolution
    int64_t offset_sec         # if_tsoffset
    int32_t filter_slot        # index into the compiled filters, -1 when unfiltered

cdef struct Columns:
    uint64_t *frame
    int64_t *ts
    uint32_t *caplen
    uint32_t *wirelen
    uint8_t *status
    uint8_t *pflags
    uint8_t *ip_version
    int32_t *vlan
    uint8_t *src
    uint8_t *dst
    uint8_t *ip_proto
    uint32_t *ip_len
    uint16_t *sport
    uint16_t *dport
    uint32_t *seq
    uint32_t *ack
    uint16_t *tcp_flags
    uint16_t *window
    uint8_t *tcp_hlen
    uint32_t *payload_len
    uint32_t *claimed_len
    uint16_t *mss
    int16_t *wscale
    uint8_t *sack_ok
    uint32_t *tsval
    uint32_t *tsecr
    bint verify_checksums
