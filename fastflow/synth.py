"""Write packet captures byte by byte: packet builders and pcap / pcapng writers.

Used by the tests, the bundled example and the benchmark generator. Everything here is
plain ``struct``; nothing is parsed back. Builders return ``bytes`` so that callers can
corrupt them on purpose (wrong lengths, cut headers) before writing.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Sequence

# TCP flag bits as in the 12-bit flags field (AE is the low bit of the reserved nibble).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, AE = 0x001, 0x002, 0x004, 0x008, 0x010, 0x020, 0x040, 0x080, 0x100

# IP protocol / IPv6 next-header numbers.
PROTO_HOPOPTS, PROTO_ICMP, PROTO_TCP, PROTO_UDP = 0, 1, 6, 17
PROTO_ROUTING, PROTO_FRAGMENT, PROTO_GRE, PROTO_AH = 43, 44, 47, 51
PROTO_ICMPV6, PROTO_NONE, PROTO_DSTOPTS = 58, 59, 60

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
TPID_8021Q, TPID_8021AD, TPID_9100 = 0x8100, 0x88A8, 0x9100

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_USER0 = 147
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

AF_INET = 2
AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN = 24, 28, 30

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

# pcapng block types.
BT_SHB, BT_IDB, BT_OPB, BT_SPB, BT_EPB = 0x0A0D0D0A, 0x00000001, 0x00000002, 0x00000003, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D


# ---------------------------------------------------------------------------------------
# checksums and addresses


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum, returned ready to store (already complemented)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_bytes(address: str | bytes) -> bytes:
    """'1.2.3.4' -> 4 bytes, '2001:db8::1' -> 16 bytes; bytes pass through."""
    if isinstance(address, bytes):
        return address
    return ipaddress.ip_address(address).packed


def _pseudo_header(src: str | bytes, dst: str | bytes, proto: int, length: int) -> bytes:
    s, d = ip_bytes(src), ip_bytes(dst)
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def _with_checksum(segment: bytes, offset: int, pseudo: bytes) -> bytes:
    csum = internet_checksum(pseudo + segment)
    return segment[:offset] + struct.pack("!H", csum) + segment[offset + 2 :]


# ---------------------------------------------------------------------------------------
# transport layer

OPT_NOP = b"\x01"
OPT_EOL = b"\x00"


def opt_mss(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def opt_wscale(shift: int) -> bytes:
    return struct.pack("!BBB", 3, 3, shift)


def opt_sack_permitted() -> bytes:
    return b"\x04\x02"


def opt_sack(blocks: Sequence[tuple[int, int]]) -> bytes:
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(struct.pack("!II", l, r) for l, r in blocks)


def opt_timestamps(tsval: int, tsecr: int) -> bytes:
    return struct.pack("!BBII", 8, 10, tsval, tsecr)


def tcp_options(*options: bytes) -> bytes:
    """Concatenate options and pad with EOL to a multiple of 4 bytes."""
    raw = b"".join(options)
    return raw + OPT_EOL * (-len(raw) % 4)


def tcp_segment(
    src: str | bytes,
    dst: str | bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    urgent: int = 0,
    data_offset: int | None = None,
) -> bytes:
    """TCP header + payload with a correct checksum over the pseudo-header of src/dst.

    ``options`` is padded to a 4-byte multiple; ``data_offset`` (in 32-bit words)
    overrides the computed one to build bad headers.
    """
    options = tcp_options(options)
    if data_offset is None:
        data_offset = 5 + len(options) // 4
    # Data offset in the high nibble, AE (0x100) in the low bit of the reserved nibble.
    offset_and_flags = (data_offset << 12) | (flags & 0xFFF)
    header = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         offset_and_flags, window, 0, urgent)
    segment = header + options + payload
    return _with_checksum(segment, 16, _pseudo_header(src, dst, PROTO_TCP, len(segment)))


def udp_datagram(src: str | bytes, dst: str | bytes, sport: int, dport: int, payload: bytes = b"") -> bytes:
    datagram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    datagram = _with_checksum(datagram, 6, _pseudo_header(src, dst, PROTO_UDP, len(datagram)))
    if datagram[6:8] == b"\0\0":  # a computed zero is sent as all ones (zero means "no checksum")
        datagram = datagram[:6] + b"\xff\xff" + datagram[8:]
    return datagram


def icmp_message(icmp_type: int = 8, code: int = 0, rest: bytes = b"\0\x01\0\x01", payload: bytes = b"") -> bytes:
    """ICMPv4 (default: echo request id 1 seq 1)."""
    message = struct.pack("!BBH", icmp_type, code, 0) + rest + payload
    return _with_checksum(message, 2, b"")


def icmpv6_message(src: str | bytes, dst: str | bytes, icmp_type: int = 128, code: int = 0,
                   rest: bytes = b"\0\x01\0\x01", payload: bytes = b"") -> bytes:
    """ICMPv6 (default: echo request); its checksum covers the IPv6 pseudo-header."""
    message = struct.pack("!BBH", icmp_type, code, 0) + rest + payload
    return _with_checksum(message, 2, _pseudo_header(src, dst, PROTO_ICMPV6, len(message)))


def gre_packet(protocol: int = ETH_IPV4, payload: bytes = b"") -> bytes:
    return struct.pack("!HH", 0, protocol) + payload


def arp_request(sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    return struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, 1) + sender_mac + ip_bytes(sender_ip) + b"\0" * 6 + ip_bytes(target_ip)


# ---------------------------------------------------------------------------------------
# network layer


def ipv4_packet(
    src: str | bytes,
    dst: str | bytes,
    proto: int,
    payload: bytes,
    ttl: int = 64,
    ident: int = 0,
    dont_fragment: bool = True,
    more_fragments: bool = False,
    fragment_offset: int = 0,
    options: bytes = b"",
    tos: int = 0,
    total_length: int | None = None,
    ihl: int | None = None,
) -> bytes:
    """IPv4 header + payload. ``fragment_offset`` is in bytes (multiple of 8).

    ``total_length`` / ``ihl`` override the computed values (0 imitates TSO; IHL < 5 is
    a bad header); the header checksum is computed over whatever was written.
    """
    options = options + b"\0" * (-len(options) % 4)
    header_len = 20 + len(options)
    if ihl is None:
        ihl = header_len // 4
    if total_length is None:
        total_length = header_len + len(payload)
    flags_frag = (0x4000 if dont_fragment else 0) | (0x2000 if more_fragments else 0) | (fragment_offset // 8)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, total_length, ident, flags_frag, ttl, proto, 0,
                         ip_bytes(src), ip_bytes(dst)) + options
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv4_option_router_alert() -> bytes:
    return b"\x94\x04\x00\x00"


def ipv4_option_record_route(slots: int = 2) -> bytes:
    return struct.pack("!BBB", 7, 3 + 4 * slots, 4) + b"\0" * (4 * slots)


def fragment_ipv4(packet: bytes, fragment_payload: int, first_payload: int | None = None) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying ``fragment_payload`` bytes each (the first
    one ``first_payload`` if given); sizes are rounded down to multiples of 8. Options are
    copied into every fragment for simplicity."""
    ihl = (packet[0] & 0x0F) * 4
    header, payload = packet[:ihl], packet[ihl:]
    _, tos, _, ident, _, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", header[:20])
    options = header[20:]
    step = max(8, fragment_payload // 8 * 8)
    first = step if first_payload is None else max(8, first_payload // 8 * 8)
    bounds = [0] + list(range(first, len(payload), step)) + [len(payload)]
    fragments = []
    for start, end in zip(bounds, bounds[1:]):
        fragments.append(ipv4_packet(src, dst, proto, payload[start:end], ttl=ttl, ident=ident, dont_fragment=False,
                                     more_fragments=end < len(payload), fragment_offset=start, options=options, tos=tos))
    return fragments


@dataclass(frozen=True)
class Ipv6Extension:
    """One extension header; ``body`` is everything after its next-header (and length) byte(s)."""

    header_type: int
    body: bytes


def _pad_options(body: bytes) -> bytes:
    """Pad a hop-by-hop / destination-options body so the whole header is a multiple of 8."""
    need = -(len(body) + 2) % 8
    if need == 1:
        return body + b"\0"  # Pad1
    if need:
        return body + bytes([1, need - 2]) + b"\0" * (need - 2)  # PadN
    return body


def hop_by_hop(options: bytes = b"\x05\x02\x00\x00") -> Ipv6Extension:
    """Hop-by-hop header; default option is Router Alert (MLD)."""
    return Ipv6Extension(PROTO_HOPOPTS, _pad_options(options))


def destination_options(options: bytes = b"") -> Ipv6Extension:
    return Ipv6Extension(PROTO_DSTOPTS, _pad_options(options))


def routing_header(addresses: Sequence[str] = ("2001:db8::fe",), routing_type: int = 0, segments_left: int = 0) -> Ipv6Extension:
    return Ipv6Extension(PROTO_ROUTING, struct.pack("!BB4x", routing_type, segments_left)
                         + b"".join(ip_bytes(a) for a in addresses))


def fragment_header(offset: int = 0, more: bool = False, ident: int = 0x12345678) -> Ipv6Extension:
    """``offset`` in bytes (multiple of 8)."""
    return Ipv6Extension(PROTO_FRAGMENT, struct.pack("!xHI", (offset // 8) << 3 | int(more), ident))


def auth_header(spi: int = 0x100, seq: int = 1, icv: bytes = b"\0" * 12) -> Ipv6Extension:
    return Ipv6Extension(PROTO_AH, struct.pack("!xxII", spi, seq) + icv)


def _encode_extension(ext: Ipv6Extension, next_header: int) -> bytes:
    if ext.header_type == PROTO_FRAGMENT:
        return bytes([next_header]) + ext.body
    total = 2 + len(ext.body)
    if ext.header_type == PROTO_AH:  # length in 4-octet units minus 2
        return bytes([next_header, total // 4 - 2]) + ext.body
    return bytes([next_header, total // 8 - 1]) + ext.body  # 8-octet units, first 8 not counted


def ipv6_packet(
    src: str | bytes,
    dst: str | bytes,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
    extensions: Sequence[Ipv6Extension] = (),
    traffic_class: int = 0,
    flow_label: int = 0,
    payload_length: int | None = None,
) -> bytes:
    """IPv6 header, extension headers in the given order, then ``payload`` of protocol ``next_header``."""
    chain = b""
    following = next_header
    for ext in reversed(extensions):
        chain = _encode_extension(ext, following) + chain
        following = ext.header_type
    body = chain + payload
    if payload_length is None:
        payload_length = len(body)
    first_word = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first_word, payload_length, following, hop_limit, ip_bytes(src), ip_bytes(dst)) + body


def ip_packet(src: str, dst: str, proto: int, payload: bytes, **kwargs) -> bytes:
    """IPv4 or IPv6 by the address family of ``src``."""
    if len(ip_bytes(src)) == 4:
        return ipv4_packet(src, dst, proto, payload, **kwargs)
    return ipv6_packet(src, dst, proto, payload, **kwargs)


def ethertype_of(ip: bytes) -> int:
    return ETH_IPV6 if ip[0] >> 4 == 6 else ETH_IPV4


# ---------------------------------------------------------------------------------------
# link layer

MAC_CLIENT = bytes.fromhex("001122334455")
MAC_SERVER = bytes.fromhex("66778899aabb")


def ethernet_frame(
    payload: bytes,
    ethertype: int | None = None,
    src_mac: bytes = MAC_CLIENT,
    dst_mac: bytes = MAC_SERVER,
    vlans: Sequence[tuple[int, int]] = (),
    pad_to_minimum: bool = False,
) -> bytes:
    """Ethernet II; ``vlans`` is (tpid, vlan_id) from outermost to innermost.
    ``pad_to_minimum`` pads to 60 bytes as a NIC does for short frames (FCS not included)."""
    if ethertype is None:
        ethertype = ethertype_of(payload)
    tags = b"".join(struct.pack("!HH", tpid, vid & 0x0FFF) for tpid, vid in vlans)
    frame = dst_mac + src_mac + tags + struct.pack("!H", ethertype) + payload
    if pad_to_minimum and len(frame) < 60:
        frame += b"\0" * (60 - len(frame))
    return frame


def sll_frame(payload: bytes, protocol: int | None = None, packet_type: int = 0, address: bytes = MAC_CLIENT,
              arphrd: int = 1) -> bytes:
    """Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 16-byte header)."""
    if protocol is None:
        protocol = ethertype_of(payload)
    return struct.pack("!HHH8sH", packet_type, arphrd, len(address), address.ljust(8, b"\0"), protocol) + payload


def sll2_frame(payload: bytes, protocol: int | None = None, interface_index: int = 2, packet_type: int = 0,
               address: bytes = MAC_CLIENT, arphrd: int = 1) -> bytes:
    """Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 20-byte header)."""
    if protocol is None:
        protocol = ethertype_of(payload)
    return struct.pack("!HHIHBB8s", protocol, 0, interface_index, arphrd, packet_type, len(address),
                       address.ljust(8, b"\0")) + payload


def null_frame(payload: bytes, family: int | None = None, big_endian: bool = False) -> bytes:
    """BSD loopback (LINKTYPE_NULL): 4-byte address family in the writer's host byte order."""
    if family is None:
        family = AF_INET6_BSD if payload[0] >> 4 == 6 else AF_INET
    return struct.pack(">I" if big_endian else "<I", family) + payload


# ---------------------------------------------------------------------------------------
# capture records and writers


@dataclass
class Packet:
    """One captured packet. ``orig_len`` defaults to len(data); ``interface`` indexes the
    section's interfaces (pcapng); ``block`` picks the pcapng block: "epb", "spb" or "opb"."""

    ts_ns: int
    data: bytes
    orig_len: int | None = None
    interface: int = 0
    block: str = "epb"
    comment: str | None = None

    @property
    def wire_len(self) -> int:
        return len(self.data) if self.orig_len is None else self.orig_len


def _open_for_write(path_or_file):
    if hasattr(path_or_file, "write"):
        return path_or_file, False
    return open(path_or_file, "wb"), True


def pcap_header(linktype: int, nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144) -> bytes:
    e = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    return struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(packet: Packet, nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144) -> bytes:
    """Record header + data cut to ``snaplen``; the original length is kept."""
    e = ">" if big_endian else "<"
    seconds, rest_ns = divmod(packet.ts_ns, 1_000_000_000)
    fraction = rest_ns if nanosecond else rest_ns // 1000
    data = packet.data[:snaplen]
    return struct.pack(e + "IIII", seconds, fraction, len(data), packet.wire_len) + data


def pcap_bytes(packets: Iterable[Packet], linktype: int, nanosecond: bool = False, big_endian: bool = False,
               snaplen: int = 262144) -> bytes:
    parts = [pcap_header(linktype, nanosecond, big_endian, snaplen)]
    parts += [pcap_record(p, nanosecond, big_endian, snaplen) for p in packets]
    return b"".join(parts)


def write_pcap(path_or_file: str | BinaryIO, packets: Iterable[Packet], linktype: int, nanosecond: bool = False,
               big_endian: bool = False, snaplen: int = 262144) -> None:
    out, close = _open_for_write(path_or_file)
    try:
        out.write(pcap_bytes(packets, linktype, nanosecond, big_endian, snaplen))
    finally:
        if close:
            out.close()


# pcapng -------------------------------------------------------------------------------

OPT_ENDOFOPT, OPT_COMMENT = 0, 1
IF_NAME, IF_TSRESOL = 2, 9
SHB_USERAPPL = 4
EPB_FLAGS = 2

TSRESOL_US = 6  # 10^-6 s, the default when if_tsresol is absent
TSRESOL_NS = 9


@dataclass
class Interface:
    """An interface description block. ``tsresol`` is the raw if_tsresol byte (None: option
    omitted, meaning microseconds); high bit set means 2^-n seconds instead of 10^-n."""

    linktype: int
    snaplen: int = 0
    tsresol: int | None = None
    name: str | None = None


@dataclass
class RawBlock:
    """Any block written as given (e.g. an unknown type that readers must skip)."""

    block_type: int
    body: bytes


@dataclass
class Section:
    interfaces: list[Interface]
    records: list  # Packet or RawBlock, in file order
    big_endian: bool = False
    application: str | None = "fastflow.synth"


def ticks_per_second(tsresol: int | None) -> int:
    if tsresol is None:
        return 10**6
    if tsresol & 0x80:
        return 2 ** (tsresol & 0x7F)
    return 10**tsresol


def ts_to_ticks(ts_ns: int, tsresol: int | None) -> int:
    """Timestamp in interface units (floor)."""
    return ts_ns * ticks_per_second(tsresol) // 1_000_000_000


def ticks_to_ts(ticks: int, tsresol: int | None) -> int:
    """Inverse of ts_to_ticks (floor), i.e. the nanoseconds a reader gets back."""
    return ticks * 1_000_000_000 // ticks_per_second(tsresol)


def _pcapng_options(e: str, options: Sequence[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    out = b""
    for code, value in options:
        out += struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack(e + "HH", OPT_ENDOFOPT, 0)


def pcapng_block(e: str, block_type: int, body: bytes) -> bytes:
    """Type, total length, body padded to 4 bytes, total length again."""
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(e + "II", block_type, total) + body + struct.pack(e + "I", total)


def _section_header(e: str, section: Section) -> bytes:
    opts = [(SHB_USERAPPL, section.application.encode())] if section.application else []
    body = struct.pack(e + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _pcapng_options(e, opts)
    return pcapng_block(e, BT_SHB, body)


def _interface_block(e: str, interface: Interface) -> bytes:
    opts = []
    if interface.name:
        opts.append((IF_NAME, interface.name.encode()))
    if interface.tsresol is not None:
        opts.append((IF_TSRESOL, bytes([interface.tsresol])))
    body = struct.pack(e + "HHI", interface.linktype, 0, interface.snaplen) + _pcapng_options(e, opts)
    return pcapng_block(e, BT_IDB, body)


def _packet_block(e: str, packet: Packet, interfaces: list[Interface]) -> bytes:
    interface = interfaces[packet.interface]
    data = packet.data[: interface.snaplen] if interface.snaplen else packet.data
    padded = data + b"\0" * (-len(data) % 4)
    if packet.block == "spb":  # no interface id (always 0), no timestamp, no caplen
        return pcapng_block(e, BT_SPB, struct.pack(e + "I", packet.wire_len) + padded)
    ticks = ts_to_ticks(packet.ts_ns, interface.tsresol)
    opts = [(OPT_COMMENT, packet.comment.encode())] if packet.comment else []
    if packet.block == "opb":  # obsolete packet block: 16-bit interface id + 16-bit drops count
        head = struct.pack(e + "HHIIII", packet.interface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), packet.wire_len)
        return pcapng_block(e, BT_OPB, head + padded + _pcapng_options(e, opts))
    if packet.block != "epb":
        raise ValueError(f"unknown block kind {packet.block!r}")
    head = struct.pack(e + "IIIII", packet.interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), packet.wire_len)
    return pcapng_block(e, BT_EPB, head + padded + _pcapng_options(e, opts))


def pcapng_section_bytes(section: Section) -> bytes:
    e = ">" if section.big_endian else "<"
    parts = [_section_header(e, section)]
    parts += [_interface_block(e, i) for i in section.interfaces]
    for record in section.records:
        if isinstance(record, RawBlock):
            parts.append(pcapng_block(e, record.block_type, record.body))
        else:
            parts.append(_packet_block(e, record, section.interfaces))
    return b"".join(parts)


def write_pcapng(
    path_or_file: str | BinaryIO,
    packets: Iterable[Packet] = (),
    linktype: int = LINKTYPE_ETHERNET,
    big_endian: bool = False,
    snaplen: int = 0,
    tsresol: int | None = None,
    interfaces: list[Interface] | None = None,
    sections: Sequence[Section] | None = None,
) -> None:
    """Write one section of ``packets`` on ``interfaces`` (default: a single interface of
    ``linktype``), or, when ``sections`` is given, those sections in order."""
    if sections is None:
        if interfaces is None:
            interfaces = [Interface(linktype, snaplen, tsresol)]
        sections = [Section(interfaces, list(packets), big_endian)]
    out, close = _open_for_write(path_or_file)
    try:
        for section in sections:
            out.write(pcapng_section_bytes(section))
    finally:
        if close:
            out.close()
