"""Tests for fastflow/community_id.py: the spec's published vectors and a per-row reference."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct

import numpy as np
import pytest

from fastflow import community_id as cid

# ---------------------------------------------------------------------------------------
# published vectors: (proto, saddr, daddr, sport, dport, community id); for ICMP and ICMPv6 sport and dport are
# the message type and code, None for port-less protocols

V4_SRC, V4_DST = "1.2.3.4", "5.6.7.8"
V6_SRC, V6_DST = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D"

# corelight/community-id-spec baseline/README.md, "Default settings" table (made by baseline/make-tables.py).
SPEC_TABLE_SEED0 = [
    (6, V4_SRC, V4_DST, 1122, 3344, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
    (6, V4_DST, V4_SRC, 3344, 1122, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
    (17, V4_SRC, V4_DST, 1122, 3344, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
    (17, V4_DST, V4_SRC, 3344, 1122, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
    (132, V4_SRC, V4_DST, 1122, 3344, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8="),
    (132, V4_DST, V4_SRC, 3344, 1122, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8="),
    (1, V4_SRC, V4_DST, 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
    (1, V4_DST, V4_SRC, 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
    (1, V4_SRC, V4_DST, 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk="),
    (58, V6_SRC, V6_DST, 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
    (58, V6_DST, V6_SRC, 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
    (58, V6_SRC, V6_DST, 146, 0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10="),
    (46, V4_SRC, V4_DST, None, None, "1:ikv3kmf89luf73WPz1jOs49S768="),
    (46, V4_DST, V4_SRC, None, None, "1:ikv3kmf89luf73WPz1jOs49S768="),
    (46, V6_SRC, V6_DST, None, None, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0="),
    (46, V6_DST, V6_SRC, None, None, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0="),
]

# Same file, "A custom seed=1 value" table.
SPEC_TABLE_SEED1 = [
    (6, V4_SRC, V4_DST, 1122, 3344, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
    (6, V4_DST, V4_SRC, 3344, 1122, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
    (17, V4_SRC, V4_DST, 1122, 3344, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
    (17, V4_DST, V4_SRC, 3344, 1122, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
    (132, V4_SRC, V4_DST, 1122, 3344, "1:uitchpn5MMGAQKBJh7bIr/bAr7s="),
    (132, V4_DST, V4_SRC, 3344, 1122, "1:uitchpn5MMGAQKBJh7bIr/bAr7s="),
    (1, V4_SRC, V4_DST, 8, 0, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    (1, V4_DST, V4_SRC, 0, 0, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    (1, V4_SRC, V4_DST, 11, 0, "1:1DD7cWGC/Yg91YGsQeni8du3pIA="),
    (58, V6_SRC, V6_DST, 128, 0, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    (58, V6_DST, V6_SRC, 129, 0, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    (58, V6_SRC, V6_DST, 146, 0, "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s="),
    (46, V4_SRC, V4_DST, None, None, "1:/buhqeOmaRCopOZFy9HnoJd5XW8="),
    (46, V4_DST, V4_SRC, None, None, "1:/buhqeOmaRCopOZFy9HnoJd5XW8="),
    (46, V6_SRC, V6_DST, None, None, "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM="),
    (46, V6_DST, V6_SRC, None, None, "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM="),
]

# corelight/community-id-spec baseline/baseline_deflt.json and baseline_seed1.json (pycommunityid's
# community-id-pcap on pcaps/combined.pcap.gz), rows as (proto, saddr, daddr, sport, dport, seed 0 id, seed 1 id).
# For ICMP the files print the mapped ports (type, counterpart type) of two-way types and (type, code) of
# one-way types; a two-way type ignores its code, so both read correctly as (type, code) here.
SPEC_PCAP_BASELINE = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 135,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", "1:lVEtCZpYu84Xqaa++3lXFyuu2n4="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134,
     "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133,
     "1:pkvHqCL88/tg1k4cPigmZXUtL00=", "1:K/ee5UCqAMAQXDorP5nSa2CGLjc="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0,
     "1:YHxtAirCG//0OzkcVAukqKQN9xM=", "1:XjUibYHaafLQ3pxQeiMI8g25q20="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.12.1", "10.1.12.2", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
    (46, "10.1.12.2", "10.1.12.1", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
]

# corelight/pycommunityid tests/communityid_test.py (the reference implementation's unit tests), rows as
# (proto, saddr, daddr, sport, dport, seed 0 id, seed 1 id).
PYCOMMUNITYID_TESTS = [
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    # type 20 has no counterpart: one-way, so the code is hashed and tells the two apart
    (1, "192.168.0.89", "192.168.0.1", 20, 0, "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=", "1:lCXHHxavE1Vq3oX9NH5ladQg02o="),
    (1, "192.168.0.89", "192.168.0.1", 20, 1, "1:tz/fHIDUHs19NkixVVoOZywde+I=", "1:Ie3wmFyxiEyikbsbcO03d2nh+PM="),
    # echo reply ignores its code
    (1, "192.168.0.1", "192.168.0.89", 0, 20, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    # time exceeded is one-way: the two directions differ
    (58, "3ffe:507:0:1:260:97ff:fe07:69ea", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=", "1:OlOWx9psIbBFi7lOCw/4MhlKR9M="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:507:0:1:260:97ff:fe07:69ea", 3, 0,
     "1:/OGBt9BN1ofenrmSPWYicpij2Vc=", "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE="),
    (132, "192.168.170.8", "192.168.170.56", 7, 80, "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
    (132, "192.168.170.56", "192.168.170.8", 80, 7, "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    # pycommunityid issue 3: TCP port 10 must not go through the ICMP mapping (10 is router solicitation)
    (6, "10.0.0.1", "10.0.0.2", 10, 11569, "1:SXBGMX1lBOwhhoDrZynfROxnhnM=", "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.24.4", "10.1.12.1", None, None, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
    (46, "10.1.12.1", "10.1.24.4", None, None, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
]


# ---------------------------------------------------------------------------------------
# helpers


def _addr16(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed).packed
    return addr.packed


def _columns(rows):
    """Columns for community_id() from (proto, saddr, daddr, sport, dport) tuples; None ports become 0."""
    return dict(
        orig_addr=np.frombuffer(b"".join(_addr16(r[1]) for r in rows), dtype=np.uint8).reshape(-1, 16),
        resp_addr=np.frombuffer(b"".join(_addr16(r[2]) for r in rows), dtype=np.uint8).reshape(-1, 16),
        ip_version=np.array([ipaddress.ip_address(r[1]).version for r in rows], dtype=np.uint8),
        ip_proto=np.array([r[0] for r in rows], dtype=np.uint8),
        orig_p=np.array([r[3] or 0 for r in rows], dtype=np.uint16),
        resp_p=np.array([r[4] or 0 for r in rows], dtype=np.uint16),
    )


# pycommunityid communityid/icmp.py and icmp6.py, written out again so the reference does not share the module's
# tables.
REF_ICMP4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
REF_ICMP6 = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
             139: 140, 140: 139, 144: 145, 145: 144}


def reference_id(proto, saddr: bytes, daddr: bytes, sport, dport, seed=0) -> str:
    """One row the way pycommunityid's CommunityID.calc does it; addresses packed (4 or 16 bytes)."""
    one_way = False
    if proto in (1, 58):
        table = REF_ICMP4 if proto == 1 else REF_ICMP6
        if sport in table:
            dport = table[sport]
        else:
            one_way = True
    has_ports = proto in (1, 6, 17, 58, 132)
    if not has_ports:
        sport = dport = None
    ordered = one_way or saddr < daddr or (saddr == daddr and has_ports and sport < dport)
    if not ordered:
        saddr, daddr, sport, dport = daddr, saddr, dport, sport
    data = struct.pack("!H", seed) + saddr + daddr + struct.pack("BB", proto, 0)
    if has_ports:
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


# ---------------------------------------------------------------------------------------
# published vectors


@pytest.mark.parametrize("seed, table", [(0, SPEC_TABLE_SEED0), (1, SPEC_TABLE_SEED1)])
def test_spec_readme_tables(seed, table):
    got = cid.community_id(**_columns(table), seed=seed)
    assert got.tolist() == [r[5] for r in table]


@pytest.mark.parametrize("seed", [0, 1])
def test_spec_pcap_baselines(seed):
    got = cid.community_id(**_columns(SPEC_PCAP_BASELINE), seed=seed)
    assert got.tolist() == [r[5 + seed] for r in SPEC_PCAP_BASELINE]


@pytest.mark.parametrize("seed", [0, 1])
def test_pycommunityid_unit_vectors(seed):
    got = cid.community_id(**_columns(PYCOMMUNITYID_TESTS), seed=seed)
    assert got.tolist() == [r[5 + seed] for r in PYCOMMUNITYID_TESTS]


def test_single_tcp_flow_both_directions():
    got = cid.community_id(**_columns([(6, "1.2.3.4", "5.6.7.8", 1122, 3344), (6, "5.6.7.8", "1.2.3.4", 3344, 1122)]))
    assert got.dtype == np.dtype("U30")   # fixed width: Arrow takes it without a Python object per row
    assert got.tolist() == ["1:wCb3OG7yAFWelaUydu0D+125CLM="] * 2


def test_equal_addresses_ordered_by_port():
    # equal addresses: the ports decide the order, so both directions agree
    rows = [(6, "10.0.0.1", "10.0.0.1", 80, 1234), (6, "10.0.0.1", "10.0.0.1", 1234, 80)]
    got = cid.community_id(**_columns(rows))
    assert got[0] == got[1] == reference_id(6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 1]), 1234, 80)


def test_portless_protocol_ignores_port_columns():
    rows = [(46, "10.1.12.1", "10.1.12.2", 1, 2), (46, "10.1.12.1", "10.1.12.2", 3, 4)]
    assert cid.community_id(**_columns(rows)).tolist() == ["1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="] * 2


# ---------------------------------------------------------------------------------------
# inputs


def test_ipv4_uses_only_the_last_four_address_bytes():
    cols = _columns([(6, "1.2.3.4", "5.6.7.8", 1122, 3344)])
    cols["orig_addr"] = cols["orig_addr"].copy()
    cols["orig_addr"][0, :12] = 0xAB  # not IPv4-mapped, and larger than the responder's prefix
    assert cid.community_id(**cols).tolist() == ["1:wCb3OG7yAFWelaUydu0D+125CLM="]


def test_empty_input():
    got = cid.community_id(**_columns([]))
    assert got.shape == (0,) and got.dtype == np.dtype("U30")


def test_rejects_unknown_ip_version():
    cols = _columns([(6, "1.2.3.4", "5.6.7.8", 1, 2)])
    cols["ip_version"] = np.array([0], dtype=np.uint8)
    with pytest.raises(ValueError, match="ip_version"):
        cid.community_id(**cols)


def test_rejects_bad_seed_and_shapes():
    cols = _columns([(6, "1.2.3.4", "5.6.7.8", 1, 2)])
    with pytest.raises(ValueError, match="seed"):
        cid.community_id(**cols, seed=1 << 16)
    cols["resp_p"] = np.zeros(2, dtype=np.uint16)
    with pytest.raises(ValueError, match="resp_p"):
        cid.community_id(**cols)


# ---------------------------------------------------------------------------------------
# vectorized against the per-row reference


def _random_rows(rng: np.random.Generator, n: int):
    # Few distinct addresses and ports, so equal addresses and equal ports (the tie-breaks) occur often.
    v4_pool = ["10.0.0.1", "10.0.0.2", "192.168.1.1", "0.0.0.0", "255.255.255.255"]
    v6_pool = ["::", "fe80::1", "fe80::2", "2001:db8::1", "ffff::ffff", "::ffff:10.0.0.1"]
    protos = [1, 6, 17, 58, 132, 46, 0, 47, 255]
    icmp_types = [0, 3, 8, 9, 10, 11, 13, 14, 17, 18, 20, 128, 129, 130, 131, 133, 134, 135, 136, 139, 140,
                  144, 145, 146, 255, 256, 65535]
    ports = [0, 7, 53, 80, 1122, 3344, 65535]
    rows = []
    for _ in range(n):
        pool = v4_pool if rng.random() < 0.5 else v6_pool
        proto = int(rng.choice(protos))
        if proto in (1, 58):
            sport = int(rng.choice(icmp_types))
            dport = int(rng.integers(0, 4))
        else:
            sport, dport = int(rng.choice(ports)), int(rng.choice(ports))
        rows.append((proto, str(rng.choice(pool)), str(rng.choice(pool)), sport, dport))
    return rows


def _packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@pytest.mark.parametrize("seed", [0, 1, 0xBEEF])
def test_matches_per_row_reference(seed):
    rows = _random_rows(np.random.default_rng(20240611 + seed), 600)
    got = cid.community_id(**_columns(rows), seed=seed)
    want = [reference_id(p, _packed(s), _packed(d), sp, dp, seed) for p, s, d, sp, dp in rows]
    assert got.tolist() == want


def test_portable_sha1_gives_the_same_ids():
    """The x86 SHA extensions (where this CPU has them) and the portable SHA-1 give the same IDs."""
    from fastflow import _sha1
    rows = _random_rows(np.random.default_rng(7), 300)
    whole = cid.community_id(**_columns(rows))
    columns = _columns(rows)
    out = np.zeros((len(rows), cid.ID_LEN), np.uint8)
    _sha1.community_ids(columns["orig_addr"], columns["resp_addr"], columns["ip_version"], columns["ip_proto"],
                        columns["orig_p"], columns["resp_p"], cid._ICMP4_TABLE, cid._ICMP6_TABLE,
                        cid._PORT_PROTOS, 0, out, use_sha=False)
    assert [bytes(row).decode() for row in out] == whole.tolist()


# ---------------------------------------------------------------------------------------
# the SHA-1 extension (ext/sha1.h) against hashlib: the x86 SHA extensions where this CPU has them, and the
# portable code; every length where the padding changes shape (55/56 bytes: one block or two; 64: a full block)

@pytest.mark.parametrize("use_sha", [None, False])
def test_sha1_rows_match_hashlib(use_sha):
    from fastflow import _sha1
    rng = np.random.default_rng(7)
    for length in [*range(0, 140), 191, 192, 1000]:
        rows = rng.integers(0, 256, (9, length), dtype=np.uint8)
        rows[0] = 0
        rows[1] = 0xFF
        digests = np.full((9, 20), 0xAA, np.uint8)
        _sha1.sha1_rows(rows, digests, use_sha)
        assert [bytes(d) for d in digests] == [hashlib.sha1(bytes(r)).digest() for r in rows], length


def test_sha1_rows_checks_shapes_and_takes_no_rows():
    from fastflow import _sha1
    with pytest.raises(ValueError, match="expected"):
        _sha1.sha1_rows(np.zeros((3, 40), np.uint8), np.zeros((2, 20), np.uint8))
    _sha1.sha1_rows(np.zeros((0, 40), np.uint8), np.zeros((0, 20), np.uint8))


def test_as_bytes_gives_the_same_ids():
    """as_bytes (what the flows table is built from) holds the same IDs as ASCII bytes."""
    rows = _random_rows(np.random.default_rng(8), 300)
    text = cid.community_id(**_columns(rows), seed=3)
    raw = cid.community_id(**_columns(rows), seed=3, as_bytes=True)
    assert raw.dtype == np.dtype("S30")
    assert [b.decode() for b in raw.tolist()] == text.tolist()
