"""Community ID v1 flow hashes (https://github.com/corelight/community-id-spec), vectorized over numpy columns.

Hash input per row, all in network byte order: seed (2 bytes), source address, destination address (4 bytes
each for IPv4, 16 for IPv6), IP protocol (1 byte), a zero byte, and for TCP, UDP, SCTP, ICMP and ICMPv6 the
source and destination port (2 bytes each). The result is "1:" + base64(SHA-1(input)).

The _sha1 extension builds each row's input, hashes it (with the x86 SHA extensions where the CPU has them) and
writes its text, in one loop without the GIL; this module checks the columns and holds the rules' tables.
"""

from __future__ import annotations

import numpy as np

from ._sha1 import community_ids

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
ID_LEN = len(PREFIX) + 28  # base64 of 20 bytes is 28 characters, the last one '='


def _counterpart_table(pairs: dict[int, int]) -> np.ndarray:
    # Indexed by any uint16 type value, so lookups need no bounds check; -1 marks one-way types.
    table = np.full(1 << 16, -1, dtype=np.int32)
    table[list(pairs)] = list(pairs.values())
    return table


_ICMP4_TABLE = _counterpart_table(ICMP4_COUNTERPART)
_ICMP6_TABLE = _counterpart_table(ICMP6_COUNTERPART)
_PORT_PROTOS = np.zeros(256, dtype=np.uint8)   # indexed by IP protocol: 1 where the ports are hashed
_PORT_PROTOS[list(PORT_PROTOS)] = 1


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

    out = np.empty((n, ID_LEN), dtype=np.uint8)
    community_ids(np.ascontiguousarray(orig_addr, dtype=np.uint8), np.ascontiguousarray(resp_addr, dtype=np.uint8),
                  np.ascontiguousarray(ip_version, dtype=np.uint8), np.ascontiguousarray(ip_proto, dtype=np.uint8),
                  np.ascontiguousarray(orig_p, dtype=np.uint16), np.ascontiguousarray(resp_p, dtype=np.uint16),
                  _ICMP4_TABLE, _ICMP6_TABLE, _PORT_PROTOS, int(seed), out)
    text = out.view(f"S{ID_LEN}").reshape(n)
    return text if as_bytes else text.astype(f"U{ID_LEN}")
