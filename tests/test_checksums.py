"""Checksum verification (--verify-checksums) and Zeek's segment length, in the decoder and in the state machine.

Synthetic packets from fastflow.synth have correct checksums; each test breaks one. The corpus test compares
the decoder's verdicts with tshark's own checksum validation, capture by capture."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fastflow import synth
from fastflow.decode import CaptureReader, PFlag, Status
from fastflow.pipeline import process
from fastflow.source import Source
from tests.corpus import CAPTURES, capture_names, requires_corpus

C4, S4 = "10.0.0.1", "10.0.0.2"
C6, S6 = "2001:db8::1", "2001:db8::2"


def frame(ip: bytes) -> bytes:
    return synth.ethernet_frame(ip)


def tcp_ip(src, dst, flags=synth.ACK, payload=b"hello", seq=1000):
    return synth.ip_packet(src, dst, synth.PROTO_TCP, synth.tcp_segment(src, dst, 40000, 80, seq, 1, flags, payload=payload))


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


def decode_path(path, verify=True) -> dict:
    with Source(str(path)) as source:
        parts = list(CaptureReader(source, verify_checksums=verify).batches())
    return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}


def decode(tmp_path, frames, verify=True):
    path = tmp_path / "c.pcap"
    synth.write_pcap(path, [synth.Packet(10**9 * (i + 1), f) for i, f in enumerate(frames)], synth.LINKTYPE_ETHERNET)
    return decode_path(path, verify)


def test_good_and_bad_checksums_are_told_apart(tmp_path):
    good4 = tcp_ip(C4, S4)
    good6 = tcp_ip(C6, S6)
    bad_tcp4 = flip_byte(good4, 20 + 16)          # TCP checksum field
    bad_tcp6 = flip_byte(good6, 40 + 16)
    bad_ip4 = flip_byte(good4, 10)                # IPv4 header checksum field
    udp_none = synth.ipv4_packet(C4, S4, synth.PROTO_UDP, synth.udp_datagram(C4, S4, 1, 53, b"q")[:6] + b"\0\0" + b"q")
    bad_udp6 = flip_byte(synth.ipv6_packet(C6, S6, synth.PROTO_UDP, synth.udp_datagram(C6, S6, 1, 53, b"q")), 40 + 6)
    cols = decode(tmp_path, [frame(p) for p in (good4, good6, bad_tcp4, bad_tcp6, bad_ip4, udp_none, bad_udp6)])
    bad = (cols["pflags"] & PFlag.BAD_CHECKSUM) != 0
    bad_ip = (cols["pflags"] & PFlag.BAD_IP_CHECKSUM) != 0
    assert bad.tolist() == [False, False, True, True, False, False, True]   # IPv4 UDP checksum 0: none sent
    assert bad_ip.tolist() == [False, False, False, False, True, False, False]
    # nothing is flagged unless asked
    cols = decode(tmp_path, [frame(p) for p in (bad_tcp4, bad_ip4)], verify=False)
    assert not (cols["pflags"] & (PFlag.BAD_CHECKSUM | PFlag.BAD_IP_CHECKSUM)).any()


def test_routing_header_final_hop_is_the_checksum_destination(tmp_path):
    # RFC 8200 8.1: with a routing header the pseudo-header holds the final destination
    final = "2001:db8::99"
    seg = synth.tcp_segment(C6, final, 40000, 80, 1000, 1, synth.ACK, payload=b"x")
    ip = synth.ipv6_packet(C6, S6, synth.PROTO_TCP, seg,
                           extensions=[synth.routing_header([final], routing_type=0, segments_left=1)])
    cols = decode(tmp_path, [frame(ip)])
    assert cols["status"].tolist() == [Status.TCP] and not (cols["pflags"] & PFlag.BAD_CHECKSUM).any()


def test_segment_cut_by_the_snaplen_is_not_verified(tmp_path):
    bad = flip_byte(tcp_ip(C4, S4, payload=b"x" * 100), 20 + 16)
    path = tmp_path / "c.pcap"
    f = frame(bad)
    synth.write_pcap(path, [synth.Packet(10**9, f[:80], orig_len=len(f))], synth.LINKTYPE_ETHERNET)
    result = process(str(path), verify_checksums=True)
    assert result.flows.column("history").to_pylist() == ["D"]   # analysed: Zeek needs caplen >= len


def test_bad_tcp_checksum_gives_c_and_drops_the_segment(tmp_path):
    syn = tcp_ip(C4, S4, synth.SYN, b"")
    path = tmp_path / "c.pcap"
    synth.write_pcap(path, [synth.Packet(10**9, frame(flip_byte(syn, 20 + 16)))], synth.LINKTYPE_ETHERNET)
    f = process(str(path), verify_checksums=True).flows.to_pylist()[0]
    # Zeek's bad-checksum-syn baseline: history C, OTH, no packets counted
    assert (f["history"], f["conn_state"], f["orig_pkts"], f["resp_pkts"]) == ("C", "OTH", 0, 0)
    f = process(str(path)).flows.to_pylist()[0]
    assert (f["history"], f["conn_state"], f["orig_pkts"]) == ("S", "S0", 1)


def test_bad_ip_checksum_drops_the_packet(tmp_path):
    good, bad = tcp_ip(C4, S4, synth.SYN, b""), flip_byte(tcp_ip(S4, C4, synth.SYN | synth.ACK, b""), 10)
    path = tmp_path / "c.pcap"
    synth.write_pcap(path, [synth.Packet(10**9, frame(good)), synth.Packet(2 * 10**9, frame(bad))],
                     synth.LINKTYPE_ETHERNET)
    result = process(str(path), verify_checksums=True)
    assert result.stats["counts"]["bad_ip_checksum"] == 1
    assert result.flows.column("history").to_pylist() == ["S"]


def test_zeek_sizes_segments_by_the_ip_header(tmp_path):
    # The IPv4 total length claims 6 bytes the frame does not hold: Wireshark's payload is 0 (payload_len),
    # Zeek's is 6 (claimed_len), so a second such ACK is a retransmission for Zeek (pppoe-over-qinq baseline).
    ack = synth.tcp_segment(S4, C4, 80, 40000, 500, 1, synth.ACK)
    ip = synth.ipv4_packet(S4, C4, synth.PROTO_TCP, ack, total_length=20 + len(ack) + 6)
    cols = decode(tmp_path, [frame(ip)])
    assert (cols["payload_len"][0], cols["claimed_len"][0]) == (0, 6)
    assert cols["pflags"][0] & PFlag.IP_LEN_EXCEEDS_WIRE


TSHARK = shutil.which("tshark")


def tshark_bad_tcp_frames(path) -> set[int]:
    out = subprocess.run([TSHARK, "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-Y", "tcp.checksum.status==0",
                          "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=False)
    return {int(x) for x in out.stdout.split()}


# captures where fastflow or tshark finds bad TCP checksums, and some where neither does
CHECKED = [n for n in capture_names() if n.startswith(("zeek__tls", "zeek__tcp__syn-bad", "zeek__chksums",
                                                        "zeek__ipv6-http", "tcpdump__whois", "zeek__http__get",
                                                        "suricata__bug-7657", "zeek__mixed-vlan",
                                                        "zeek__tcp__retransmit-fast009", "zeek__ftp"))]


@requires_corpus
@pytest.mark.skipif(TSHARK is None, reason="tshark not installed (scripts/setup.sh --test installs it)")
@pytest.mark.parametrize("name", CHECKED)
def test_tcp_checksum_verdicts_equal_tsharks(name):
    cols = decode_path(CAPTURES / name)
    tcp = cols["status"] == Status.TCP
    ours = set(cols["frame"][tcp & ((cols["pflags"] & PFlag.BAD_CHECKSUM) != 0)].tolist())
    assert ours == tshark_bad_tcp_frames(CAPTURES / name)

