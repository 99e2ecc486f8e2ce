# Which of n parts of a stream's connections a packet or an open connection belongs to (fastflow batch
# splits a stream's work by it). A function of the address/port pair alone, so that every packet and
# every record of one connection key lands in the same part whatever the engine; symmetric in the two ends.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from *:
    """
    #include <string.h>
    /* one load and a byte swap: gcc does not always merge the byte-by-byte version */
    static inline uint64_t ff_load_be64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    """
    uint64_t load_be64 "ff_load_be64" (const uint8_t *p) nogil


cdef inline uint64_t _end_hash(uint64_t hi, uint64_t lo, uint16_t port) noexcept nogil:
    cdef uint64_t h = hi * <uint64_t>0x9E3779B97F4A7C15ULL
    h ^= h >> 32
    h = (h ^ lo) * <uint64_t>0xBF58476D1CE4E5B9ULL
    h ^= h >> 29
    h = (h ^ port) * <uint64_t>0x94D049BB133111EBULL
    return h ^ (h >> 31)


cdef inline uint32_t pair_part(uint64_t a_hi, uint64_t a_lo, uint16_t a_p, uint64_t b_hi, uint64_t b_lo,
                               uint16_t b_p, uint32_t nparts) noexcept nogil:
    """The part (0 .. nparts - 1) of the pair of ends (address as two big-endian halves, port or 0)."""
    cdef uint64_t h = _end_hash(a_hi, a_lo, a_p) + _end_hash(b_hi, b_lo, b_p)
    h ^= h >> 33
    h *= <uint64_t>0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    return <uint32_t>((h >> 16) % nparts)


cdef inline uint32_t bytes_pair_part(const uint8_t *a, uint16_t a_p, const uint8_t *b, uint16_t b_p,
                                     uint32_t nparts) noexcept nogil:
    return pair_part(load_be64(a), load_be64(a + 8), a_p, load_be64(b), load_be64(b + 8), b_p, nparts)
