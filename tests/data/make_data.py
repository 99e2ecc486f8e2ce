"""Regenerate the small test captures in tests/data and their expected decode (expected.json).

Run from the repository root:  python3 tests/data/make_data.py
Output is deterministic (fixed timestamps, no randomness, compressors without mtimes).

Every record is built together with what a decoder must report for it (status, and the TCP
fields for status TCP), so expected.json follows from what was written, not from a parser.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import struct
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import zstandard  # noqa: E402

from fastflow import synth as s  # noqa: E402

# Status codes as in docs/design.md.
STATUSES = ["TCP", "UDP", "ICMP", "ICMP6", "OTHER_IP", "NON_IP", "UNSUPPORTED_LINK", "TRUNCATED", "FRAGMENT", "BAD_HEADER"]

BASE_TS_NS = 1_704_164_645_000_000_000  # 2024-01-02 03:04:05 UTC
CLIENT4, SERVER4 = "192.0.2.10", "198.51.100.20"
CLIENT6, SERVER6 = "2001:db8::10", "2001:db8:1::20"
CLIENT_PORT, SERVER_PORT = 49152, 443


@dataclass
class Segment:
    """One TCP segment of an exchange, before encapsulation."""

    from_client: bool
    flags: int
    seq: int
    ack: int
    window: int
    payload_len: int
    options: bytes = b""


def exchange() -> list[Segment]:
    """Handshake with options, one request, one response, FIN close from the client: 8 segments."""
    c, v = 1_000_000, 3_000_000_000  # client / server ISN (server one above 2^31 on purpose)
    syn_opts = s.opt_mss(1460) + s.opt_sack_permitted() + s.opt_timestamps(1000, 0) + s.OPT_NOP + s.opt_wscale(7)
    synack_opts = s.opt_mss(1400) + s.opt_sack_permitted() + s.opt_timestamps(5000, 1000) + s.OPT_NOP + s.opt_wscale(9)
    return [
        Segment(True, s.SYN, c, 0, 64240, 0, syn_opts),
        Segment(False, s.SYN | s.ACK, v, c + 1, 65160, 0, synack_opts),
        Segment(True, s.ACK, c + 1, v + 1, 502, 0),
        Segment(True, s.PSH | s.ACK, c + 1, v + 1, 502, 120),
        Segment(False, s.PSH | s.ACK, v + 1, c + 121, 128, 300),
        Segment(True, s.FIN | s.ACK, c + 121, v + 301, 500, 0),
        Segment(False, s.FIN | s.ACK, v + 301, c + 122, 128, 0),
        Segment(True, s.ACK, c + 122, v + 302, 500, 0),
    ]


def payload_bytes(n: int) -> bytes:
    return bytes((i * 7 + 13) & 0xFF for i in range(n))


def endpoints(seg: Segment, ipv6: bool):
    client, server = (CLIENT6, SERVER6) if ipv6 else (CLIENT4, SERVER4)
    if seg.from_client:
        return client, server, CLIENT_PORT, SERVER_PORT
    return server, client, SERVER_PORT, CLIENT_PORT


def tcp_bytes(seg: Segment, ipv6: bool, data_offset: int | None = None) -> bytes:
    src, dst, sport, dport = endpoints(seg, ipv6)
    return s.tcp_segment(src, dst, sport, dport, seg.seq, seg.ack, seg.flags, seg.window,
                         options=seg.options, payload=payload_bytes(seg.payload_len), data_offset=data_offset)


def ip_bytes(seg: Segment, ipv6: bool = False, **ip_kwargs) -> bytes:
    src, dst, _, _ = endpoints(seg, ipv6)
    return s.ip_packet(src, dst, s.PROTO_TCP, tcp_bytes(seg, ipv6), **ip_kwargs)


@dataclass
class Record:
    """A record to write plus what a decoder must report for it."""

    ts_ns: int
    data: bytes
    status: str
    orig_len: int | None = None
    interface: int = 0
    block: str = "epb"
    tcp: list | None = None  # [src, dst, sport, dport, seq, ack, flags, window, payload_len, vlan]
    first_fragment: bool = False
    opts_truncated: bool = False

    def packet(self) -> s.Packet:
        return s.Packet(self.ts_ns, self.data, self.orig_len, self.interface, self.block)


def tcp_fields(seg: Segment, ipv6: bool, vlan: int = -1, payload_len: int | None = None) -> list:
    src, dst, sport, dport = endpoints(seg, ipv6)
    return [src, dst, sport, dport, seg.seq, seg.ack, seg.flags, seg.window,
            seg.payload_len if payload_len is None else payload_len, vlan]


def tcp_records(frame_of, ipv6: bool = False, vlan: int = -1, step_ns: int = 1_000_000, start_ns: int = BASE_TS_NS,
                ip_kwargs: dict | None = None) -> list[Record]:
    """The standard exchange, each segment wrapped by ``frame_of(ip_packet_bytes)``."""
    records = []
    for i, seg in enumerate(exchange()):
        ip = ip_bytes(seg, ipv6, **(ip_kwargs or {}))
        records.append(Record(start_ns + i * step_ns, frame_of(ip), "TCP", tcp=tcp_fields(seg, ipv6, vlan)))
    return records


def eth(ip: bytes) -> bytes:
    return s.ethernet_frame(ip)


# ---------------------------------------------------------------------------------------
# expected.json bookkeeping

EXPECTED: dict[str, dict] = {}


def expect(name: str, records: list[Record], fmt: str, linktype, damage=None, ts_of=None, note: str = "") -> None:
    """Record the expected decode of ``records`` (all of them are complete records in the file)."""
    counts = {k: 0 for k in STATUSES}
    tcp, first_fragments, opts_truncated = [], [], []
    for frame, rec in enumerate(records, start=1):
        counts[rec.status] += 1
        if rec.status == "TCP":
            ts = ts_of(rec) if ts_of else rec.ts_ns
            tcp.append([frame, ts] + rec.tcp)
            if rec.first_fragment:
                first_fragments.append(frame)
            if rec.opts_truncated:
                opts_truncated.append(frame)
    EXPECTED[name] = {
        "format": fmt,
        "linktype": linktype,
        "packets": len(records),
        "status_counts": counts,
        "damage": damage,
        "tcp": tcp,
        "first_fragment_frames": first_fragments,
        "opts_truncated_frames": opts_truncated,
        "note": note,
    }


def path(name: str) -> str:
    return os.path.join(HERE, name)


def save(name: str, data: bytes) -> None:
    with open(path(name), "wb") as f:
        f.write(data)


def pcap_file(name: str, records: list[Record], linktype: int, nanosecond=False, big_endian=False,
              snaplen=262144, note="") -> bytes:
    data = s.pcap_bytes([r.packet() for r in records], linktype, nanosecond, big_endian, snaplen)
    save(name, data)
    expect(name, records, "pcap", linktype, note=note)
    return data


# ---------------------------------------------------------------------------------------
# the files


def make_pcap_variants() -> bytes:
    us_records = tcp_records(eth)
    plain = pcap_file("pcap_us_le.pcap", us_records, s.LINKTYPE_ETHERNET, note="pcap usec little-endian, Ethernet, plain IPv4")
    pcap_file("pcap_us_be.pcap", us_records, s.LINKTYPE_ETHERNET, big_endian=True, note="pcap usec big-endian")
    # Sub-microsecond timestamps so a reader that drops nanoseconds is caught.
    ns_records = tcp_records(eth, start_ns=BASE_TS_NS + 123, step_ns=1_000_001)
    pcap_file("pcap_ns_le.pcap", ns_records, s.LINKTYPE_ETHERNET, nanosecond=True, note="pcap nsec little-endian")
    pcap_file("pcap_ns_be.pcap", ns_records, s.LINKTYPE_ETHERNET, nanosecond=True, big_endian=True, note="pcap nsec big-endian")
    return plain


def make_pcapng_variants() -> None:
    records = tcp_records(eth)
    for name, big in (("pcapng_le.pcapng", False), ("pcapng_be.pcapng", True)):
        s.write_pcapng(path(name), [r.packet() for r in records], s.LINKTYPE_ETHERNET, big_endian=big)
        expect(name, records, "pcapng", s.LINKTYPE_ETHERNET, note=f"one section, {'big' if big else 'little'}-endian, EPBs")

    # Two sections of different byte order; the second has its own interface list (RAW IPv6).
    first = tcp_records(eth)[:4]
    second = tcp_records(lambda ip: ip, ipv6=True)[4:]
    sections = [
        s.Section([s.Interface(s.LINKTYPE_ETHERNET)], [r.packet() for r in first], big_endian=False),
        s.Section([s.Interface(s.LINKTYPE_RAW, tsresol=s.TSRESOL_NS)], [r.packet() for r in second], big_endian=True),
    ]
    s.write_pcapng(path("pcapng_two_sections.pcapng"), sections=sections)
    expect("pcapng_two_sections.pcapng", first + second, "pcapng", [s.LINKTYPE_ETHERNET, s.LINKTYPE_RAW],
           note="section 1 LE Ethernet IPv4 (frames 1-4), section 2 BE RAW IPv6 ns (frames 5-8)")

    # Three interfaces: Ethernet usec (default), RAW nsec, SLL2 at 2^-20 s. Segments rotate over them.
    interfaces = [
        s.Interface(s.LINKTYPE_ETHERNET, name="eth0"),
        s.Interface(s.LINKTYPE_RAW, tsresol=s.TSRESOL_NS, name="tun0"),
        s.Interface(s.LINKTYPE_LINUX_SLL2, tsresol=0x80 | 20, name="any"),
    ]
    wrappers = [eth, lambda ip: ip, lambda ip: s.sll2_frame(ip)]
    multi = []
    for i, rec in enumerate(tcp_records(eth)):
        iface = i % 3
        seg_ip = rec.data[14:]
        ts = BASE_TS_NS + i * 1_000_000 + [0, 777, 0][iface]
        if iface == 2:  # exactly representable at 2^-20 s: a multiple of 10^9 / 2^9 ns
            ts = ts // 1_953_125 * 1_953_125
        multi.append(Record(ts, wrappers[iface](seg_ip), "TCP", interface=iface, tcp=rec.tcp))
    s.write_pcapng(path("pcapng_interfaces.pcapng"), sections=[s.Section(interfaces, [r.packet() for r in multi])])
    for r in multi:  # the writer floors to interface units; assert nothing was lost
        res = interfaces[r.interface].tsresol
        assert s.ticks_to_ts(s.ts_to_ticks(r.ts_ns, res), res) == r.ts_ns
    expect("pcapng_interfaces.pcapng", multi, "pcapng", [1, 101, 276],
           note="3 interfaces: Ethernet usec, RAW if_tsresol=9, SLL2 if_tsresol=0x94 (2^-20 s); frame i on interface (i-1)%3")

    # Simple packet blocks: no timestamp (expected ts is null), interface 0 only.
    spb = [Record(r.ts_ns, r.data, "TCP", block="spb", tcp=r.tcp) for r in tcp_records(eth)]
    s.write_pcapng(path("pcapng_spb.pcapng"), [r.packet() for r in spb], s.LINKTYPE_ETHERNET)
    expect("pcapng_spb.pcapng", spb, "pcapng", 1, ts_of=lambda r: None,
           note="simple packet blocks only; SPBs carry no timestamp so expected ts_ns is null")

    # Obsolete packet blocks (type 2) mixed with EPBs, with a comment option.
    opb = tcp_records(eth)
    for i, r in enumerate(opb):
        r.block = "opb" if i % 2 == 0 else "epb"
    packets = [r.packet() for r in opb]
    packets[0].comment = "obsolete packet block with a comment"
    s.write_pcapng(path("pcapng_opb.pcapng"), packets, s.LINKTYPE_ETHERNET)
    expect("pcapng_opb.pcapng", opb, "pcapng", 1, note="odd frames are obsolete packet blocks (type 2), even frames EPBs")

    # Unknown block types between packets must be skipped; also a comment option needing padding.
    unknown = tcp_records(eth)
    items: list = []
    for i, r in enumerate(unknown):
        if i in (0, 3, 7):
            items.append(s.RawBlock(0x0BAD0000 + i, b"unknown block body" + bytes(i)))
        p = r.packet()
        p.comment = "x" * (i + 1)  # lengths 1..8 exercise every option padding
        items.append(p)
    items.append(s.RawBlock(0x0000ABCD, b""))  # empty body, at the end
    s.write_pcapng(path("pcapng_unknown_blocks.pcapng"), sections=[s.Section([s.Interface(1)], items)])
    expect("pcapng_unknown_blocks.pcapng", unknown, "pcapng", 1,
           note="unknown block types before frames 1, 4, 8 and at the end; EPB comment options of 1..8 bytes")


def make_link_types() -> None:
    def vlan_file(name, vlans, note):
        recs = tcp_records(lambda ip: s.ethernet_frame(ip, vlans=vlans), vlan=vlans[0][1])
        pcap_file(name, recs, s.LINKTYPE_ETHERNET, note=note)

    vlan_file("link_vlan_8021q.pcap", [(s.TPID_8021Q, 100)], "one 802.1Q tag, vlan 100")
    vlan_file("link_qinq.pcap", [(s.TPID_8021AD, 200), (s.TPID_8021Q, 100)], "802.1ad 200 outer + 802.1Q 100 inner; vlan=200")
    vlan_file("link_triple_vlan.pcap", [(s.TPID_9100, 300), (s.TPID_8021AD, 200), (s.TPID_8021Q, 100)],
              "0x9100 300, 0x88a8 200, 0x8100 100; outermost id 300 reported")
    pcap_file("link_sll.pcap", tcp_records(lambda ip: s.sll_frame(ip, packet_type=4)), s.LINKTYPE_LINUX_SLL,
              note="Linux cooked v1")
    pcap_file("link_sll2.pcap", tcp_records(lambda ip: s.sll2_frame(ip, packet_type=4)), s.LINKTYPE_LINUX_SLL2,
              note="Linux cooked v2")
    pcap_file("link_raw_v4.pcap", tcp_records(lambda ip: ip), s.LINKTYPE_RAW, note="LINKTYPE_RAW (101) IPv4")
    pcap_file("link_raw_v6.pcap", tcp_records(lambda ip: ip, ipv6=True), s.LINKTYPE_RAW, note="LINKTYPE_RAW (101) IPv6")
    pcap_file("link_ipv4.pcap", tcp_records(lambda ip: ip), s.LINKTYPE_IPV4, note="LINKTYPE_IPV4 (228)")
    pcap_file("link_ipv6.pcap", tcp_records(lambda ip: ip, ipv6=True), s.LINKTYPE_IPV6, note="LINKTYPE_IPV6 (229)")

    # NULL: the family is in the writer's host byte order; alternate both orders in one file.
    flip = iter(range(100))
    pcap_file("link_null.pcap", tcp_records(lambda ip: s.null_frame(ip, s.AF_INET, big_endian=next(flip) % 2 == 1)),
              s.LINKTYPE_NULL, note="BSD loopback IPv4, AF_INET=2 in little-endian (odd frames) and big-endian (even frames)")
    families = iter([s.AF_INET6_BSD, s.AF_INET6_FREEBSD, s.AF_INET6_DARWIN] * 3)
    flip6 = iter(range(100))
    pcap_file("link_null_v6.pcap",
              tcp_records(lambda ip: s.null_frame(ip, next(families), big_endian=next(flip6) % 2 == 1), ipv6=True),
              s.LINKTYPE_NULL, big_endian=True,
              note="big-endian pcap, BSD loopback IPv6, family cycling 24/28/30, alternating byte order")

    unsupported = [Record(r.ts_ns, r.data, "UNSUPPORTED_LINK") for r in tcp_records(eth)]
    pcap_file("link_unsupported.pcap", unsupported, s.LINKTYPE_USER0,
              note="LINKTYPE_USER0 (147) holding Ethernet frames: every record UNSUPPORTED_LINK")


def make_ip_variants() -> None:
    options = s.ipv4_option_router_alert() + s.ipv4_option_record_route(2)
    pcap_file("ip_v4_options.pcap", tcp_records(eth, ip_kwargs={"options": options}), 1,
              note="IPv4 IHL 9: router alert + record route (2 slots)")
    chain = [s.hop_by_hop(), s.routing_header(), s.destination_options(b"\x01\x02\x00\x00"), s.auth_header()]
    pcap_file("ip_v6_ext_chain.pcap", tcp_records(eth, ipv6=True, ip_kwargs={"extensions": chain}), 1,
              note="IPv6 hop-by-hop, routing (type 0, 1 address), destination options, AH, then TCP")

    # IPv4 fragments: the request (frame 4) split into a first fragment holding the TCP header
    # plus 76 payload bytes, then a later fragment; the response (frames 6, 7) into a 16-byte first
    # fragment, too short for the 20-byte TCP header, and the rest.
    segs = exchange()
    records: list[Record] = []
    ts = BASE_TS_NS
    for i, seg in enumerate(segs):
        whole = ip_bytes(seg, ident=0x4000 + i)
        if i == 3:
            first, *rest = s.fragment_ipv4(whole, 96)
            records.append(Record(ts, eth(first), "TCP", tcp=tcp_fields(seg, False, payload_len=96 - 20),
                                  first_fragment=True))
            records += [Record(ts + 10 + j, eth(f), "FRAGMENT") for j, f in enumerate(rest)]
        elif i == 4:
            records += [Record(ts + j, eth(f), "FRAGMENT") for j, f in enumerate(s.fragment_ipv4(whole, 1480, first_payload=16))]
        else:
            records.append(Record(ts, eth(whole), "TCP", tcp=tcp_fields(seg, False)))
        ts += 1_000_000
    ts_us = [Record(r.ts_ns // 1000 * 1000, r.data, r.status, tcp=r.tcp, first_fragment=r.first_fragment) for r in records]
    pcap_file("ip_v4_fragments.pcap", ts_us, 1,
              note="request: first fragment (TCP header + 76 bytes; payload_len 76 by its IP length) + 1 later fragment; "
                   "response: 16-byte first fragment (too short for the TCP header -> FRAGMENT) + the rest")

    # IPv6: the request split with Fragment headers.
    records = []
    for i, seg in enumerate(segs):
        ts = BASE_TS_NS + i * 1_000_000
        if i == 3:
            src, dst, _, _ = endpoints(seg, True)
            tcp = tcp_bytes(seg, True)
            head, tail = tcp[:64], tcp[64:]
            first = s.ipv6_packet(src, dst, s.PROTO_TCP, head, extensions=[s.fragment_header(0, True, 77)])
            later = s.ipv6_packet(src, dst, s.PROTO_TCP, tail, extensions=[s.fragment_header(64, False, 77)])
            records.append(Record(ts, eth(first), "TCP", tcp=tcp_fields(seg, True, payload_len=64 - 20), first_fragment=True))
            records.append(Record(ts + 1000, eth(later), "FRAGMENT"))
        else:
            records.append(Record(ts, eth(ip_bytes(seg, True)), "TCP", tcp=tcp_fields(seg, True)))
    pcap_file("ip_v6_fragment.pcap", records, 1,
              note="IPv6 request split by Fragment headers: first (TCP header + 44 bytes, payload_len 44) + later fragment")

    # TSO: IPv4 total length 0 on the two data segments; lengths then come from caplen.
    records = []
    for i, seg in enumerate(segs):
        kw = {"total_length": 0} if seg.payload_len else {}
        records.append(Record(BASE_TS_NS + i * 1_000_000, eth(ip_bytes(seg, **kw)), "TCP", tcp=tcp_fields(seg, False)))
    pcap_file("ip_v4_tso_len0.pcap", records, 1, note="IPv4 total length 0 on frames 4 and 5 (TSO); payload_len from caplen")

    pcap_file("eth_padding.pcap", tcp_records(lambda ip: s.ethernet_frame(ip, pad_to_minimum=True)), 1,
              note="short frames padded to 60 bytes; payload_len must come from IP length (0), not caplen")


def make_statuses() -> None:
    base = tcp_records(eth)[:3]  # SYN, SYN-ACK, ACK so the file has TCP too
    t = BASE_TS_NS + 10_000_000
    others = [
        Record(t, eth(s.ipv4_packet(CLIENT4, "192.0.2.53", s.PROTO_UDP, s.udp_datagram(CLIENT4, "192.0.2.53", 5353, 53, b"q" * 30))), "UDP"),
        Record(t + 1000, eth(s.ipv6_packet(CLIENT6, SERVER6, s.PROTO_UDP, s.udp_datagram(CLIENT6, SERVER6, 5353, 53, b"q" * 30))), "UDP"),
        Record(t + 2000, eth(s.ipv4_packet(CLIENT4, SERVER4, s.PROTO_ICMP, s.icmp_message(payload=b"ping" * 8))), "ICMP"),
        Record(t + 3000, eth(s.ipv6_packet(CLIENT6, SERVER6, s.PROTO_ICMPV6, s.icmpv6_message(CLIENT6, SERVER6, payload=b"ping" * 8))), "ICMP6"),
        Record(t + 4000, eth(s.ipv4_packet(CLIENT4, SERVER4, s.PROTO_GRE, s.gre_packet(s.ETH_IPV4, b"\0" * 20))), "OTHER_IP"),
        Record(t + 5000, s.ethernet_frame(s.arp_request(s.MAC_CLIENT, CLIENT4, SERVER4), s.ETH_ARP,
                                           dst_mac=b"\xff" * 6, pad_to_minimum=True), "NON_IP"),
    ]
    pcap_file("status_other.pcap", base + others, 1,
              note="3 TCP, then UDP v4, UDP v6, ICMP, ICMPv6, GRE (OTHER_IP), ARP (NON_IP)")

    # snaplen 44 = Ethernet 14 + IPv4 20 + 10 bytes of TCP: flags not captured -> TRUNCATED.
    cut = [Record(r.ts_ns, r.data, "TRUNCATED") for r in tcp_records(eth)]
    pcap_file("truncated_tcp_header.pcap", cut, 1, snaplen=44, note="snaplen 44 cuts every TCP header after 10 bytes")
    # snaplen 60 = 14 + 20 + 20 + 6: base header complete, SYN/SYN-ACK options cut, payloads cut.
    recs = tcp_records(eth)
    for r in recs[:2]:
        r.opts_truncated = True
    pcap_file("truncated_tcp_options.pcap", recs, 1, snaplen=60,
              note="snaplen 60: SYN and SYN-ACK options cut (OPTS_TRUNCATED), data cut; payload_len from IP length")

    good, ihl3, doff2, version_mismatch = tcp_records(eth)[:4]
    seg = exchange()[1]
    ip = ip_bytes(seg)
    ihl3.data = eth(s.ipv4_packet(SERVER4, CLIENT4, s.PROTO_TCP, tcp_bytes(seg, False), ihl=3))
    ihl3.status, ihl3.tcp = "BAD_HEADER", None
    seg = exchange()[2]
    doff2.data = eth(s.ipv4_packet(CLIENT4, SERVER4, s.PROTO_TCP, tcp_bytes(seg, False, data_offset=2)))
    doff2.status, doff2.tcp = "BAD_HEADER", None
    # Ethertype IPv4 around an IPv6 packet.
    version_mismatch.data = s.ethernet_frame(ip_bytes(exchange()[3], ipv6=True), s.ETH_IPV4)
    version_mismatch.status, version_mismatch.tcp = "BAD_HEADER", None
    pcap_file("bad_header.pcap", [good, ihl3, doff2, version_mismatch], 1,
              note="frame 1 good SYN; 2 IPv4 IHL 3; 3 TCP data offset 2; 4 ethertype IPv4 carrying an IPv6 packet")
    del ip


def make_compressed(plain: bytes) -> None:
    source = EXPECTED["pcap_us_le.pcap"]
    outputs = {
        "compressed.pcap.gz": gzip.compress(plain, mtime=0),
        "compressed.pcap.zst": zstandard.ZstdCompressor(level=3).compress(plain),
        "compressed.pcap.xz": lzma.compress(plain),
        "compressed.pcap.bz2": bz2.compress(plain),
        "gzip_named_plain.pcap": gzip.compress(plain, mtime=0),
    }
    for name, data in outputs.items():
        save(name, data)
        EXPECTED[name] = dict(source, note=f"pcap_us_le.pcap compressed ({name}); detect by magic bytes")


def pcap_record_offsets(data: bytes) -> list[int]:
    """Byte offset of every record header of a little-endian pcap."""
    offsets, pos = [], 24
    while pos + 16 <= len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return offsets


def make_damaged(plain: bytes) -> None:
    records = tcp_records(eth)
    offsets = pcap_record_offsets(plain)

    # Cut 10 bytes into the data of record 6: five complete records.
    cut_at = offsets[5] + 16 + 10
    save("damaged_cut_record.pcap", plain[:cut_at])
    expect("damaged_cut_record.pcap", records[:5], "pcap", 1, damage={"kind": "truncated_record", "offset": offsets[5], "fatal": True},
           note="file ends 10 bytes into record 6's data")

    def patched(record_index: int, field_offset: int, value: int) -> bytes:
        out = bytearray(plain)
        struct.pack_into("<I", out, offsets[record_index] + field_offset, value)
        return bytes(out)

    save("damaged_huge_caplen.pcap", patched(2, 8, 262144 + 1000))
    expect("damaged_huge_caplen.pcap", records[:2], "pcap", 1, damage={"kind": "bad_caplen", "offset": offsets[2], "fatal": True},
           note="record 3 header caplen 263144 > 262144")
    wire = struct.unpack_from("<I", plain, offsets[3] + 12)[0]
    save("damaged_caplen_gt_len.pcap", patched(3, 12, wire - 10))
    expect("damaged_caplen_gt_len.pcap", records, "pcap", 1,
           damage={"kind": "caplen_exceeds_wirelen", "offset": offsets[3], "fatal": False},
           note="record 4 original length 10 bytes below its caplen; reported, not fatal (tcpdump and tshark read all 8)")

    ng = s.pcapng_section_bytes(s.Section([s.Interface(1)], [r.packet() for r in records]))
    block_offsets, pos = [], 0
    while pos < len(ng):
        block_offsets.append(pos)
        pos += struct.unpack_from("<I", ng, pos + 4)[0]
    # Blocks: SHB, IDB, EPB x 8. Break the trailing length of the 3rd EPB (frame 3).
    bad = bytearray(ng)
    epb3 = block_offsets[4]
    total = struct.unpack_from("<I", ng, epb3 + 4)[0]
    struct.pack_into("<I", bad, epb3 + total - 4, total + 4)
    save("damaged_block_length.pcapng", bytes(bad))
    expect("damaged_block_length.pcapng", records[:2], "pcapng", 1,
           damage={"kind": "block_length_mismatch", "offset": epb3, "fatal": True},
           note="EPB of frame 3: trailing total length = leading + 4")
    epb6 = block_offsets[7]
    save("damaged_cut_block.pcapng", ng[: epb6 + 20])
    expect("damaged_cut_block.pcapng", records[:5], "pcapng", 1, damage={"kind": "truncated_block", "offset": epb6, "fatal": True},
           note="file ends 20 bytes into the EPB of frame 6")

    save("not_a_capture.txt", b"This is a text file, not a packet capture.\n" * 3)
    expect("not_a_capture.txt", [], None, None, damage={"kind": "not_a_capture", "offset": 0, "fatal": True}, note="plain text")
    save("empty.pcap", b"")
    expect("empty.pcap", [], None, None, damage={"kind": "empty", "offset": 0, "fatal": True}, note="0 bytes")
    pcap_file("header_only.pcap", [], 1, note="24-byte pcap header, no records: valid and empty")


def main() -> None:
    plain = make_pcap_variants()
    make_pcapng_variants()
    make_link_types()
    make_ip_variants()
    make_statuses()
    make_compressed(plain)
    make_damaged(plain)
    with open(path("expected.json"), "w") as f:
        json.dump(EXPECTED, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(EXPECTED)} captures and expected.json to {HERE}")


if __name__ == "__main__":
    main()
