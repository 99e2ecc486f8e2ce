"""Community ID v1 flow hashes (https://github.com/corelight/community-id-spec), vectorized over numpy columns.

Hash input per row, all in network byte order: seed (2 bytes), source address, destination address (4 bytes
each for IPv4, 16 for IPv6), IP protocol (1 byte), a zero byte, and for TCP, UDP, SCTP, ICMP and ICMPv6 the
source and destination port (2 bytes each). The result is "1:" + base64(SHA-1(input)).

numpy builds the fixed-length inputs (one length per IP version and port/no-port), the _sha1 extension hashes them
without a Python call per row (with the x86 SHA extensions where the CPU has them), and the base64 and string
assembly are vectorized again.
"""

from __future__ import annotations

import binascii

import numpy as np

from ._sha1 import sha1_rows

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_SCTP = 132
PORT_PROTOS = (PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6, PROTO_SCTP)

# Request/reply type pairs, as pycommunityid's icmp.py and icmp6.py (which the spec names as normative) and
# Zeek's ICMP4_counterpart / ICMP6_counterpart. Types not listed are one-way.
ICMP4_COUNTERPART = {
    0: 8, 8: 0,  # echo reply / echo request
    9: 10, 10: 9,  # router advertisement / solicitation
    13: 14, 14: 13,  # timestamp / reply
    15: 16, 16: 15,  # information request / reply
    17: 18, 18: 17,  # address mask request / reply
}
ICMP6_COUNTERPART = {
    128: 129, 129: 128,  # echo request / reply
    130: 131, 131: 130,  # MLD listener query / report
    133: 134, 134: 133,  # router solicitation / advertisement
    135: 136, 136: 135,  # neighbor solicitation / advertisement
    139: 140, 140: 139,  # node information query / response
    144: 145, 145: 144,  # home agent address discovery request / reply
}

PREFIX = "1:"
DIGEST_LEN = 20
ID_LEN = len(PREFIX) + 28  # base64 of 20 bytes is 28 characters, the last one '='
CHUNK_ROWS = 1 << 16  # bounds the temporaries (record bytes, digests) to a few MB


def _counterpart_table(pairs: dict[int, int]) -> np.ndarray:
    # Indexed by any uint16 type value, so lookups need no bounds check; -1 marks one-way types.
    table = np.full(1 << 16, -1, dtype=np.int32)
    table[list(pairs)] = list(pairs.values())
    return table


_ICMP4_TABLE = _counterpart_table(ICMP4_COUNTERPART)
_ICMP6_TABLE = _counterpart_table(ICMP6_COUNTERPART)


def community_id(
    orig_addr: np.ndarray,
    resp_addr: np.ndarray,
    ip_version: np.ndarray,
    ip_proto: np.ndarray,
    orig_p: np.ndarray,
    resp_p: np.ndarray,
    seed: int = 0,
    as_bytes: bool = False,
) -> np.ndarray:
    """Community ID v1 strings, one per row, as a numpy str array (U30) like "1:wCb3OG7yAFWelaUydu0D+125CLM=";
    with as_bytes, as ASCII bytes (S30: what the flows table is built from, without the round trip through
    four-byte characters).

    orig_addr, resp_addr: uint8 [n, 16]; IPv4 as IPv4-mapped IPv6 (only the last 4 bytes are used for IPv4).
    ip_version: 4 or 6 per row; decides 4- or 16-byte address encoding.
    ip_proto: IP protocol number. TCP, UDP, SCTP, ICMP and ICMPv6 hash ports; other protocols hash none
    (orig_p and resp_p are then ignored).
    orig_p, resp_p: ports of the originator and responder. For ICMP (1) and ICMPv6 (58) rows pass
    orig_p = ICMP type and resp_p = ICMP code of the originator's packets (as Zeek's conn.log does). As the spec
    says, the type becomes the source port; a type with a request/reply counterpart (echo, timestamp, neighbor
    solicitation, ...) takes the counterpart type as destination port and the code is ignored, so both
    directions get the same ID; any other type is one-way: the code becomes the destination port and the
    endpoints are never swapped.
    seed: 0..65535.

    Endpoints are ordered so the smaller (address, port) comes first, comparing the address bytes, then the
    ports, as the spec says.
    """
    orig_addr = np.asarray(orig_addr)
    resp_addr = np.asarray(resp_addr)
    ip_version = np.asarray(ip_version)
    ip_proto = np.asarray(ip_proto)
    orig_p = np.asarray(orig_p)
    resp_p = np.asarray(resp_p)
    n = len(ip_version)
    for name, col, shape in (("orig_addr", orig_addr, (n, 16)), ("resp_addr", resp_addr, (n, 16)),
                             ("ip_proto", ip_proto, (n,)), ("orig_p", orig_p, (n,)), ("resp_p", resp_p, (n,))):
        if col.shape != shape:
            raise ValueError(f"{name} has shape {col.shape}, expected {shape}")
    if ip_version.ndim != 1:
        raise ValueError(f"ip_version has shape {ip_version.shape}, expected ({n},)")
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"seed {seed} does not fit in 16 bits")
    bad = (ip_version != 4) & (ip_version != 6)
    if bad.any():
        raise ValueError(f"ip_version must be 4 or 6; row {int(np.argmax(bad))} has {ip_version[bad][0]}")

    out = np.empty(n, dtype=f"S{ID_LEN}" if as_bytes else f"U{ID_LEN}")
    seed_bytes = np.frombuffer(int(seed).to_bytes(2, "big"), dtype=np.uint8)
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        digests = _digests(orig_addr[rows], resp_addr[rows], ip_version[rows], ip_proto[rows], orig_p[rows],
                           resp_p[rows], seed_bytes)
        out[rows] = _render(digests)
    return out


def _digests(orig_addr, resp_addr, ip_version, ip_proto, orig_p, resp_p, seed_bytes) -> np.ndarray:
    """SHA-1 digests of the rows' hash inputs, uint8 [n, 20]."""
    n = len(ip_version)
    proto = ip_proto.astype(np.uint8)
    sport = orig_p.astype(np.uint16)
    dport = resp_p.astype(np.uint16)

    counterpart = np.full(n, -1, dtype=np.int32)
    is_icmp4 = proto == PROTO_ICMP
    is_icmp6 = proto == PROTO_ICMP6
    counterpart[is_icmp4] = _ICMP4_TABLE[sport[is_icmp4]]
    counterpart[is_icmp6] = _ICMP6_TABLE[sport[is_icmp6]]
    two_way_icmp = counterpart >= 0
    dport[two_way_icmp] = counterpart[two_way_icmp]
    one_way = (is_icmp4 | is_icmp6) & ~two_way_icmp

    has_ports = np.isin(proto, PORT_PROTOS)
    # Absent ports must not decide the order between equal addresses.
    sport[~has_ports] = 0
    dport[~has_ports] = 0

    # Addresses compare as two big-endian 64-bit halves; IPv4 rows compare their 4 bytes only, whatever the
    # first 12 bytes hold.
    is_v4 = ip_version == 4
    o_hi, o_lo = _halves(orig_addr, is_v4)
    r_hi, r_lo = _halves(resp_addr, is_v4)
    resp_first = (r_hi < o_hi) | ((r_hi == o_hi) & ((r_lo < o_lo) | ((r_lo == o_lo) & (dport < sport))))
    swap = resp_first & ~one_way

    src_addr = np.where(swap[:, None], resp_addr, orig_addr)
    dst_addr = np.where(swap[:, None], orig_addr, resp_addr)
    src_port = np.where(swap, dport, sport)
    dst_port = np.where(swap, sport, dport)

    digests = np.empty((n, DIGEST_LEN), dtype=np.uint8)
    for v4 in (True, False):
        for ports in (True, False):
            idx = np.flatnonzero((is_v4 == v4) & (has_ports == ports))
            if len(idx) == 0:
                continue
            # np.take: fancy indexing gathers 16-byte rows element by element, 15x slower
            src, dst = np.take(src_addr, idx, axis=0), np.take(dst_addr, idx, axis=0)
            records = _records(seed_bytes, src, dst, proto[idx], src_port[idx] if ports else None,
                               dst_port[idx] if ports else None, v4)
            digests[idx] = _sha1_rows(records)
    return digests


def _halves(addr: np.ndarray, is_v4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    be = np.ascontiguousarray(addr, dtype=np.uint8).view(">u8")
    hi = np.where(is_v4, 0, be[:, 0]).astype(np.uint64)
    lo = np.where(is_v4, be[:, 1] & 0xFFFFFFFF, be[:, 1]).astype(np.uint64)
    return hi, lo


def _records(seed_bytes, src_addr, dst_addr, proto, src_port, dst_port, v4: bool) -> np.ndarray:
    """Hash inputs, one fixed-length row each: seed, src, dst, proto, 0 [, sport, dport]."""
    addr_len = 4 if v4 else 16
    length = 2 + 2 * addr_len + 2 + (4 if src_port is not None else 0)
    rec = np.empty((len(proto), length), dtype=np.uint8)
    rec[:, 0:2] = seed_bytes
    rec[:, 2:2 + addr_len] = src_addr[:, 16 - addr_len:]
    rec[:, 2 + addr_len:2 + 2 * addr_len] = dst_addr[:, 16 - addr_len:]
    pos = 2 + 2 * addr_len
    rec[:, pos] = proto
    rec[:, pos + 1] = 0
    if src_port is not None:
        rec[:, pos + 2:pos + 4] = src_port.astype(">u2").view(np.uint8).reshape(-1, 2)
        rec[:, pos + 4:pos + 6] = dst_port.astype(">u2").view(np.uint8).reshape(-1, 2)
    return rec


def _sha1_rows(records: np.ndarray) -> np.ndarray:
    digests = np.empty((len(records), DIGEST_LEN), dtype=np.uint8)
    sha1_rows(np.ascontiguousarray(records), digests)
    return digests


def _render(digests: np.ndarray) -> np.ndarray:
    """The ID strings ("1:" + base64) of the digests as ASCII bytes (S30), with one base64 call for all rows."""
    n = len(digests)
    # 21 bytes per row encode to exactly 28 characters with no carry between rows; the extra zero byte only
    # fills the last character, which for a 20-byte digest is the padding '='.
    padded = np.zeros((n, DIGEST_LEN + 1), dtype=np.uint8)
    padded[:, :DIGEST_LEN] = digests
    encoded = np.frombuffer(binascii.b2a_base64(padded, newline=False), dtype=np.uint8).reshape(n, 28)
    text = np.empty((n, ID_LEN), dtype=np.uint8)
    text[:, :len(PREFIX)] = np.frombuffer(PREFIX.encode(), dtype=np.uint8)
    text[:, len(PREFIX):ID_LEN - 1] = encoded[:, :27]
    text[:, ID_LEN - 1] = ord("=")
    return text.view(f"S{ID_LEN}").ravel()
