"""Tests for fastflow/synth.py, the bundled test captures and the benchmark generator."""

from __future__ import annotations

import decimal
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from fastflow import synth as s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
with open(os.path.join(DATA, "expected.json")) as _f:
    EXPECTED = json.load(_f)


# ---------------------------------------------------------------------------------------
# builders


def test_tcp_checksum_verifies_over_pseudo_header():
    for src, dst in (("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")):
        seg = s.tcp_segment(src, dst, 1234, 80, 7, 9, s.PSH | s.ACK, 1000, payload=b"abc")
        assert s.internet_checksum(s._pseudo_header(src, dst, s.PROTO_TCP, len(seg)) + seg) == 0


def test_tcp_flags_and_options_layout():
    opts = s.opt_mss(1460) + s.OPT_NOP + s.opt_wscale(7) + s.opt_sack_permitted()
    seg = s.tcp_segment("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, s.SYN | s.ECE | s.CWR | s.AE, 5, options=opts)
    offset_flags = struct.unpack_from("!H", seg, 12)[0]
    assert offset_flags >> 12 == 5 + 3  # 10 option bytes padded to 12
    assert offset_flags & 0xFFF == 0x1C2
    assert seg[13] == 0xC2 and seg[12] & 0x01 == 1  # AE is the low bit of the data-offset byte
    assert seg[20:24] == b"\x02\x04\x05\xb4"
    assert len(seg) == 32 and seg[-2:] == b"\x00\x00"


def test_ipv4_header_checksum_and_fragments():
    packet = s.ipv4_packet("10.0.0.1", "10.0.0.2", s.PROTO_TCP, bytes(100), options=s.ipv4_option_router_alert())
    assert packet[0] == 0x46 and s.internet_checksum(packet[:24]) == 0
    frags = s.fragment_ipv4(packet, 48, first_payload=16)
    assert [len(f) - 24 for f in frags] == [16, 48, 36]
    offsets = [struct.unpack_from("!H", f, 6)[0] for f in frags]
    assert offsets == [0x2000 | 0, 0x2000 | 2, 8]  # MF set on all but the last; offsets in 8-byte units
    assert all(s.internet_checksum(f[:24]) == 0 for f in frags)


def test_ipv6_extension_chain_lengths():
    pkt = s.ipv6_packet("::1", "::2", s.PROTO_TCP, b"", extensions=[
        s.hop_by_hop(), s.routing_header(), s.fragment_header(8, True), s.destination_options(), s.auth_header()])
    assert pkt[6] == s.PROTO_HOPOPTS
    pos, nh = 40, pkt[6]
    seen = []
    while nh != s.PROTO_TCP:
        seen.append(nh)
        nxt = pkt[pos]
        if nh == s.PROTO_FRAGMENT:
            size = 8
        elif nh == s.PROTO_AH:
            size = (pkt[pos + 1] + 2) * 4
        else:
            size = (pkt[pos + 1] + 1) * 8
        assert size % 8 == 0
        pos, nh = pos + size, nxt
    assert seen == [0, 43, 44, 60, 51] and pos == len(pkt)
    assert struct.unpack_from("!H", pkt, 4)[0] == len(pkt) - 40


def test_link_layers():
    ip = s.ipv4_packet("10.0.0.1", "10.0.0.2", s.PROTO_TCP, b"")
    frame = s.ethernet_frame(ip, vlans=[(s.TPID_9100, 5), (s.TPID_8021AD, 6), (s.TPID_8021Q, 7)], pad_to_minimum=True)
    assert frame[12:26] == bytes.fromhex("9100 0005 88a8 0006 8100 0007 0800".replace(" ", ""))
    assert len(frame) == 60
    assert len(s.sll_frame(ip)) == 16 + len(ip) and s.sll_frame(ip)[14:16] == b"\x08\x00"
    assert len(s.sll2_frame(ip)) == 20 + len(ip) and s.sll2_frame(ip)[:2] == b"\x08\x00"
    assert s.null_frame(ip)[:4] == b"\x02\0\0\0" and s.null_frame(ip, big_endian=True)[:4] == b"\0\0\0\x02"


# ---------------------------------------------------------------------------------------
# writers


def test_pcap_writer_header_snaplen_and_endianness(tmp_path):
    pkt = s.Packet(1_500_000_123_456_789_012, bytes(range(100)))
    for ns, big in ((False, False), (False, True), (True, False), (True, True)):
        out = tmp_path / "x.pcap"
        s.write_pcap(str(out), [pkt], s.LINKTYPE_ETHERNET, nanosecond=ns, big_endian=big, snaplen=64)
        data = out.read_bytes()
        e = ">" if big else "<"
        magic, major, minor, _, _, snaplen, linktype = struct.unpack_from(e + "IHHiIII", data)
        assert magic == (s.PCAP_MAGIC_NS if ns else s.PCAP_MAGIC_US) and (major, minor) == (2, 4)
        assert (snaplen, linktype) == (64, 1)
        sec, frac, caplen, wirelen = struct.unpack_from(e + "IIII", data, 24)
        assert sec == 1_500_000_123 and frac == (456_789_012 if ns else 456_789)
        assert (caplen, wirelen) == (64, 100) and len(data) == 24 + 16 + 64


def _pcapng_blocks(data: bytes):
    """(byte order, type, body) of every block; byte order switches at each SHB."""
    pos, e = 0, "<"
    while pos < len(data):
        if struct.unpack_from("<I", data, pos)[0] == s.BT_SHB:
            e = "<" if struct.unpack_from("<I", data, pos + 8)[0] == s.BYTE_ORDER_MAGIC else ">"
        btype, total = struct.unpack_from(e + "II", data, pos)
        assert total % 4 == 0 and struct.unpack_from(e + "I", data, pos + total - 4)[0] == total
        yield e, btype, data[pos + 8 : pos + total - 4]
        pos += total
    assert pos == len(data)


def test_pcapng_writer_sections_and_resolutions(tmp_path):
    ts = 1_700_000_000_123_456_789
    sections = [
        s.Section([s.Interface(1), s.Interface(101, tsresol=9), s.Interface(276, tsresol=0x80 | 10)],
                  [s.Packet(ts, b"a" * 5), s.Packet(ts, b"b" * 6, interface=1, comment="c"),
                   s.Packet(ts, b"c" * 7, interface=2), s.RawBlock(0x0BAD0001, b"zz"),
                   s.Packet(ts, b"d" * 9, block="opb"), s.Packet(ts, b"e" * 3, block="spb")]),
        s.Section([s.Interface(1)], [s.Packet(ts, b"f" * 4)], big_endian=True),
    ]
    out = tmp_path / "x.pcapng"
    s.write_pcapng(str(out), sections=sections)
    blocks = list(_pcapng_blocks(out.read_bytes()))
    assert [(e, t) for e, t, _ in blocks] == [
        ("<", s.BT_SHB), ("<", s.BT_IDB), ("<", s.BT_IDB), ("<", s.BT_IDB), ("<", s.BT_EPB), ("<", s.BT_EPB),
        ("<", s.BT_EPB), ("<", 0x0BAD0001), ("<", s.BT_OPB), ("<", s.BT_SPB), (">", s.BT_SHB), (">", s.BT_IDB),
        (">", s.BT_EPB)]
    ticks = []
    for e, t, body in blocks:
        if t == s.BT_EPB:
            hi, lo = struct.unpack_from(e + "II", body, 4)
            ticks.append(hi << 32 | lo)
    assert ticks[:3] == [ts // 1000, ts, ts * 1024 // 10**9]
    assert s.ticks_to_ts(ticks[2], 0x8A) <= ts < s.ticks_to_ts(ticks[2] + 1, 0x8A)


# ---------------------------------------------------------------------------------------
# bundled data


def test_expected_json_covers_every_data_file():
    files = {f for f in os.listdir(DATA) if f not in ("make_data.py", "expected.json", "README.md")}
    assert files == set(EXPECTED)
    for name, exp in EXPECTED.items():
        assert sum(exp["status_counts"].values()) == exp["packets"], name
        assert len(exp["tcp"]) == exp["status_counts"]["TCP"], name


def test_make_data_is_deterministic(tmp_path):
    """Regenerating into a copy of the generator's directory gives identical bytes."""
    work = tmp_path / "data"
    work.mkdir()
    shutil.copy(os.path.join(DATA, "make_data.py"), work / "make_data.py")
    script = (work / "make_data.py").read_text().replace(
        'os.path.join(HERE, "..", "..")', repr(ROOT))
    (work / "make_data.py").write_text(script)
    subprocess.run([sys.executable, str(work / "make_data.py")], check=True, capture_output=True)
    for name in list(EXPECTED) + ["expected.json"]:
        with open(os.path.join(DATA, name), "rb") as f:
            assert (work / name).read_bytes() == f.read(), name


TSHARK = shutil.which("tshark")
TSHARK_FIELDS = ["frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport",
                 "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.window_size_value", "tcp.len"]


def _tshark_rows(path: str) -> dict[int, list[str]]:
    cmd = [TSHARK, "-r", path, "-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "occurrence=f", "-E", "separator=\t"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rows = {}
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        rows[int(cols[0])] = cols
    return rows


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed: cannot cross-check the generated TCP fields")
def test_tcp_fields_agree_with_tshark():
    checked = 0
    for name, exp in EXPECTED.items():
        if not exp["tcp"] or name.endswith((".xz", ".bz2")):  # tshark 4.0 reads neither compression
            continue
        if exp["damage"] and exp["damage"]["fatal"]:
            # tshark's pcap reader guesses another pcap variant for some damaged files and then
            # misparses even the good records; their counts are checked with capinfos below.
            continue
        rows = _tshark_rows(os.path.join(DATA, name))
        first_fragments = set(exp["first_fragment_frames"])
        for frame, ts, src, dst, sport, dport, seq, ack, flags, window, payload_len, _vlan in exp["tcp"]:
            cols = rows[frame]
            got = dict(zip(TSHARK_FIELDS, cols))
            where = f"{name} frame {frame}"
            if ts is not None:
                assert int(decimal.Decimal(got["frame.time_epoch"]) * 10**9) == ts, where
            assert ipaddress.ip_address(got["ip.src"] or got["ipv6.src"]) == ipaddress.ip_address(src), where
            assert ipaddress.ip_address(got["ip.dst"] or got["ipv6.dst"]) == ipaddress.ip_address(dst), where
            assert (int(got["tcp.srcport"]), int(got["tcp.dstport"])) == (sport, dport), where
            assert (int(got["tcp.seq_raw"]), int(got["tcp.ack_raw"])) == (seq, ack), where
            assert int(got["tcp.flags"], 16) == flags, where
            assert int(got["tcp.window_size_value"]) == window, where
            if frame not in first_fragments:  # tshark gives no tcp.len for an undefragmented fragment
                assert int(got["tcp.len"]) == payload_len, where
            checked += 1
    assert checked > 250


CAPINFOS = shutil.which("capinfos")


@pytest.mark.skipif(CAPINFOS is None, reason="capinfos not installed: cannot cross-check packet counts")
def test_packet_counts_agree_with_capinfos():
    """capinfos reports the complete records before damage ("error occurred after reading N packets")."""
    for name, exp in EXPECTED.items():
        if name.endswith((".xz", ".bz2")) or exp["format"] is None:
            continue
        proc = subprocess.run([CAPINFOS, "-c", os.path.join(DATA, name)], capture_output=True, text=True)
        text = proc.stdout + proc.stderr
        if exp["damage"] and exp["damage"]["fatal"]:
            assert f"error occurred after reading {exp['packets']} packets" in text, (name, text)
        else:
            assert proc.returncode == 0, (name, text)
            count = int(text.split("Number of packets:")[1].split()[0])
            assert count == exp["packets"], name


# ---------------------------------------------------------------------------------------
# benchmark generator


def test_benchmark_generator_is_deterministic_and_coherent(tmp_path):
    import dpkt

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import generate

    data, connections = generate.generate(2000, seed=7)
    again, _ = generate.generate(2000, seed=7)
    assert data == again and connections > 20
    assert generate.generate(2000, seed=8)[0] != data

    out = tmp_path / "g.pcap"
    out.write_bytes(data)
    syn_seq, synacks, tcp_count = {}, [], 0
    with open(out, "rb") as f:
        for _ts, frame in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(frame)  # dpkt strips 802.1Q tags
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            tcp_count += 1
            ip_payload = ip.len - ip.hl * 4 if isinstance(ip, dpkt.ip.IP) else ip.plen
            assert ip_payload == tcp.off * 4 + len(tcp.data)
            key = (bytes(ip.src), tcp.sport, bytes(ip.dst), tcp.dport)
            if tcp.flags & 0x12 == 0x02:
                syn_seq.setdefault(key, set()).add(tcp.seq)  # a reused 4-tuple has several ISNs
            elif tcp.flags & 0x12 == 0x12:
                synacks.append(((bytes(ip.dst), tcp.dport, bytes(ip.src), tcp.sport), tcp.ack))
    assert tcp_count > 1800 and synacks
    for key, ack in synacks:
        assert (ack - 1) & 0xFFFFFFFF in syn_seq[key]


def test_benchmark_generator_chunking_and_port_reuse_after_close():
    """The chunk size does not change the bytes; packets are in time order; a reused 4-tuple's new
    connection starts only after the earlier connection's last packet, some with the TIME_WAIT ISN."""
    import numpy as np

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import generate

    assert generate.generate(5000, seed=3, chunk=1000) == generate.generate(5000, seed=3, chunk=50_000)
    assert generate.generate(5000, seed=3, snaplen=128, chunk=1234) == generate.generate(5000, seed=3, snaplen=128)

    chunks = list(generate.simulate(60_000, seed=3, chunk=7000))
    assert len(chunks) > 3
    rows = np.concatenate(chunks)
    assert len(rows) == 60_000 and np.all(np.diff(rows["t"]) >= 0)
    tcp = rows[rows["kind"] == generate.KIND_TCP]
    spans = {}  # conn -> [key, first t, last t, first SYN seq]
    for r in tcp:
        conn, t = int(r["conn"]), float(r["t"])
        if conn not in spans:
            key = (int(r["client"]), int(r["server"]), int(r["cport"]), int(r["sport"]), bool(r["v6"]))
            spans[conn] = [key, t, t, int(r["seq"])]
        spans[conn][2] = t
    by_key = {}
    for conn, (key, first, last, isn) in sorted(spans.items()):
        by_key.setdefault(key, []).append((first, last, isn, conn))
    reuses = tw_isn = 0
    for conns in by_key.values():
        for (_, last, _, c1), (first, _, isn, c2) in zip(conns, conns[1:]):
            reuses += 1
            assert last < first, (c1, c2)  # the earlier connection had ended
            tw_isn += any(isn == (int(r["seq"]) + generate.TW_REUSE_ISN_STEP) & 0xFFFFFFFF
                          for r in tcp[(tcp["conn"] == c1) & tcp["from_client"]])
    n_conns = len(spans)
    assert 0.005 * n_conns < reuses < 0.04 * n_conns
    assert 0 < tw_isn < reuses
