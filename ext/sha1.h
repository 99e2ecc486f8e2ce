/* SHA-1 (FIPS 180-4) of many short rows, for Community ID (ext/_sha1.pyx, fastflow/community_id.py).
 * In C for two reasons: the x86 SHA extensions (one instruction per four rounds) are reached through compiler
 * intrinsics, which Cython cannot call, and the per-row loop must not touch Python. Portable code runs where
 * the CPU lacks them; tests/test_community_id.py checks both against hashlib. */
#ifndef FASTFLOW_SHA1_H
#define FASTFLOW_SHA1_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t ff_rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void ff_sha1_block_portable(uint32_t h[5], const uint8_t *block) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], t;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    for (i = 16; i < 80; i++)
        w[i] = ff_rotl32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
#define FF_SHA1_ROUND(f, k) \
    t = ff_rotl32(a, 5) + (f) + e + (k) + w[i]; e = d; d = c; c = ff_rotl32(b, 30); b = a; a = t;
    for (i = 0; i < 20; i++) { FF_SHA1_ROUND((b & c) | (~b & d), 0x5A827999u) }
    for (; i < 40; i++) { FF_SHA1_ROUND(b ^ c ^ d, 0x6ED9EBA1u) }
    for (; i < 60; i++) { FF_SHA1_ROUND((b & c) | (b & d) | (c & d), 0x8F1BBCDCu) }
    for (; i < 80; i++) { FF_SHA1_ROUND(b ^ c ^ d, 0xCA62C1D6u) }
#undef FF_SHA1_ROUND
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define FF_SHA1_X86 1

/* CPUID: SHA extensions (leaf 7 EBX bit 29), SSSE3 (leaf 1 ECX bit 9), SSE4.1 (leaf 1 ECX bit 19) */
static int ff_sha1_cpu_has_sha(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 9)) || !(ecx & (1u << 19)))
        return 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ebx >> 29) & 1;
}

/* four rounds with the schedule's step: cur is this group's message words, next / after / last the groups'
 * words it feeds (sha1msg2 finishes next; sha1msg1 starts last; after takes the xor in between) */
#define FF_SHA1_4ROUNDS(e_in, e_out, cur, next, after, last, f) \
    e_in = _mm_sha1nexte_epu32(e_in, cur); \
    e_out = abcd; \
    next = _mm_sha1msg2_epu32(next, cur); \
    abcd = _mm_sha1rnds4_epu32(abcd, e_in, f); \
    last = _mm_sha1msg1_epu32(last, cur); \
    after = _mm_xor_si128(after, cur);

/* Intel's SHA extensions, laid out as in Intel's "New Instructions Supporting the Secure Hash Algorithm on
 * Intel Architecture Processors" (2013): the state as ABCD in one register and E in another, four rounds per
 * sha1rnds4, the message schedule by sha1msg1 / xor / sha1msg2 four words at a time. */
__attribute__((target("sha,ssse3,sse4.1")))
static void ff_sha1_block_shani(uint32_t h[5], const uint8_t *block) {
    const __m128i byte_swap = _mm_set_epi64x(0x0001020304050607LL, 0x08090a0b0c0d0e0fLL);
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0x1B);
    __m128i e0 = _mm_set_epi32((int)h[4], 0, 0, 0), e1;
    __m128i abcd_save = abcd, e0_save = e0;
    __m128i m0, m1, m2, m3;
    /* rounds 0-11, the message words loaded and byte-swapped, the schedule started */
    m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)block), byte_swap);
    e0 = _mm_add_epi32(e0, m0);
    e1 = abcd;
    abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);
    m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16)), byte_swap);
    e1 = _mm_sha1nexte_epu32(e1, m1);
    e0 = abcd;
    abcd = _mm_sha1rnds4_epu32(abcd, e1, 0);
    m0 = _mm_sha1msg1_epu32(m0, m1);
    m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 32)), byte_swap);
    e0 = _mm_sha1nexte_epu32(e0, m2);
    e1 = abcd;
    abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);
    m1 = _mm_sha1msg1_epu32(m1, m2);
    m0 = _mm_xor_si128(m0, m2);
    m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 48)), byte_swap);
    /* rounds 12-67, four at a time */
    FF_SHA1_4ROUNDS(e1, e0, m3, m0, m1, m2, 0)
    FF_SHA1_4ROUNDS(e0, e1, m0, m1, m2, m3, 0)
    FF_SHA1_4ROUNDS(e1, e0, m1, m2, m3, m0, 1)
    FF_SHA1_4ROUNDS(e0, e1, m2, m3, m0, m1, 1)
    FF_SHA1_4ROUNDS(e1, e0, m3, m0, m1, m2, 1)
    FF_SHA1_4ROUNDS(e0, e1, m0, m1, m2, m3, 1)
    FF_SHA1_4ROUNDS(e1, e0, m1, m2, m3, m0, 1)
    FF_SHA1_4ROUNDS(e0, e1, m2, m3, m0, m1, 2)
    FF_SHA1_4ROUNDS(e1, e0, m3, m0, m1, m2, 2)
    FF_SHA1_4ROUNDS(e0, e1, m0, m1, m2, m3, 2)
    FF_SHA1_4ROUNDS(e1, e0, m1, m2, m3, m0, 2)
    FF_SHA1_4ROUNDS(e0, e1, m2, m3, m0, m1, 2)
    FF_SHA1_4ROUNDS(e1, e0, m3, m0, m1, m2, 3)
    FF_SHA1_4ROUNDS(e0, e1, m0, m1, m2, m3, 3)
    /* rounds 68-79: the schedule's last words */
    e1 = _mm_sha1nexte_epu32(e1, m1);
    e0 = abcd;
    m2 = _mm_sha1msg2_epu32(m2, m1);
    abcd = _mm_sha1rnds4_epu32(abcd, e1, 3);
    m3 = _mm_xor_si128(m3, m1);
    e0 = _mm_sha1nexte_epu32(e0, m2);
    e1 = abcd;
    m3 = _mm_sha1msg2_epu32(m3, m2);
    abcd = _mm_sha1rnds4_epu32(abcd, e0, 3);
    e1 = _mm_sha1nexte_epu32(e1, m3);
    e0 = abcd;
    abcd = _mm_sha1rnds4_epu32(abcd, e1, 3);
    e0 = _mm_sha1nexte_epu32(e0, e0_save);
    abcd = _mm_add_epi32(abcd, abcd_save);
    _mm_storeu_si128((__m128i *)h, _mm_shuffle_epi32(abcd, 0x1B));
    h[4] = (uint32_t)_mm_extract_epi32(e0, 3);
}
#undef FF_SHA1_4ROUNDS
#else
#define FF_SHA1_X86 0
static int ff_sha1_cpu_has_sha(void) { return 0; }
static void ff_sha1_block_shani(uint32_t h[5], const uint8_t *block) { ff_sha1_block_portable(h, block); }
#endif

/* digests[i * 20 ...] = SHA-1 of rows[i * length ...], for i < n; use_sha: the x86 SHA extensions. */
static void ff_sha1_rows(const uint8_t *rows, size_t n, size_t length, uint8_t *digests, int use_sha) {
    void (*block_fn)(uint32_t *, const uint8_t *) = use_sha ? ff_sha1_block_shani : ff_sha1_block_portable;
    uint8_t tail[128];
    size_t i, done, rest, padded;
    uint64_t bits = (uint64_t)length * 8;
    int k;
    for (i = 0; i < n; i++) {
        const uint8_t *msg = rows + i * length;
        uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
        for (done = 0; length - done >= 64; done += 64)
            block_fn(h, msg + done);
        /* the last partial block, the 0x80 byte, zeros and the length in bits, big-endian: one or two blocks */
        rest = length - done;
        padded = rest < 56 ? 64 : 128;
        memset(tail, 0, padded);
        if (rest)
            memcpy(tail, msg + done, rest);
        tail[rest] = 0x80;
        for (k = 0; k < 8; k++)
            tail[padded - 1 - k] = (uint8_t)(bits >> (8 * k));
        block_fn(h, tail);
        if (padded == 128)
            block_fn(h, tail + 64);
        for (k = 0; k < 5; k++) {
            digests[20 * i + 4 * k] = (uint8_t)(h[k] >> 24);
            digests[20 * i + 4 * k + 1] = (uint8_t)(h[k] >> 16);
            digests[20 * i + 4 * k + 2] = (uint8_t)(h[k] >> 8);
            digests[20 * i + 4 * k + 3] = (uint8_t)h[k];
        }
    }
}
#endif
