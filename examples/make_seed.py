"""Write examples/seed.pcap: the ten-segment HTTP exchange from the seed blog post.

A Windows client (166.111.1.2:57245) fetches http://github.com/ (192.30.252.153:80) and
gets a 301 redirect to https; the server closes first after its 10 s keep-alive timeout.
Run from the repository root:  python3 examples/make_seed.py
"""

import calendar
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastflow.synth import (  # noqa: E402
    ACK, FIN, LINKTYPE_ETHERNET, OPT_NOP, PROTO_TCP, PSH, SYN, Packet, ethernet_frame, ipv4_packet,
    opt_mss, opt_sack_permitted, opt_wscale, tcp_segment, write_pcap,
)

CLIENT, CLIENT_PORT = "166.111.1.2", 57245
SERVER, SERVER_PORT = "192.30.252.153", 80
DAY = calendar.timegm((2014, 6, 15, 0, 0, 0))  # 2014-06-15 UTC

# Windows 7 SYN options: MSS, NOP, WS, NOP, NOP, SACK_PERM.
CLIENT_SYN_OPTIONS = opt_mss(1460) + OPT_NOP + opt_wscale(8) + OPT_NOP + OPT_NOP + opt_sack_permitted()
# Linux SYN-ACK without timestamps (the client offered none): MSS, NOP, NOP, SACK_PERM, NOP, WS.
SERVER_SYNACK_OPTIONS = opt_mss(1436) + OPT_NOP + OPT_NOP + opt_sack_permitted() + OPT_NOP + opt_wscale(10)


def exact_length(text: str, length: int, filler_header: str, alphabet: str) -> bytes:
    """Insert one header before the blank line whose value (cycled from ``alphabet``) makes
    the message exactly ``length`` bytes."""
    missing = length - len(text.encode()) - len(f"{filler_header}: \r\n")
    assert missing > 0, missing
    value = (alphabet * (missing // len(alphabet) + 1))[:missing]
    return (text[:-2] + f"{filler_header}: {value}\r\n\r\n").encode()


REQUEST = exact_length(
    "GET / HTTP/1.1\r\n"
    "Host: github.com\r\n"
    "Connection: keep-alive\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8\r\n"
    "User-Agent: Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/35.0.1916.153 Safari/537.36\r\n"
    "Accept-Encoding: gzip,deflate,sdch\r\n"
    "Accept-Language: zh-CN,zh;q=0.8,en;q=0.6\r\n"
    "\r\n",
    361,
    "Cookie",
    "_gat=1",
)
RESPONSE = exact_length(
    "HTTP/1.1 301 Moved Permanently\r\n"
    "Server: GitHub.com\r\n"
    "Date: Sun, 15 Jun 2014 16:17:59 GMT\r\n"
    "Content-Type: text/html\r\n"
    "Content-length: 0\r\n"
    "Location: https://github.com/\r\n"
    "Connection: close\r\n"
    "\r\n",
    223,
    "X-GitHub-Request-Id",
    "A6F1E2D35B7C2F1A9E0539DC6B6",
)

# (time of day, from client?, flags, seq, ack, window, payload)
SEGMENTS = [
    ("16:17:58.813323", True, SYN, 1337949936, 0, 65535, b""),
    ("16:17:59.103384", False, SYN | ACK, 3859825850, 1337949937, 14360, b""),
    ("16:17:59.103465", True, ACK, 1337949937, 3859825851, 1024, b""),
    ("16:17:59.103634", True, PSH | ACK, 1337949937, 3859825851, 1024, REQUEST),
    ("16:17:59.393901", False, PSH | ACK, 3859825851, 1337950298, 16, RESPONSE),
    ("16:17:59.444259", True, ACK, 1337950298, 3859826074, 1023, b""),
    ("16:18:09.393241", False, FIN | ACK, 3859826074, 1337950298, 16, b""),
    ("16:18:09.393290", True, ACK, 1337950298, 3859826075, 1023, b""),
    ("16:18:32.768012", True, FIN | ACK, 1337950298, 3859826075, 1023, b""),
    ("16:18:33.057948", False, ACK, 3859826075, 1337950299, 16, b""),
]


def timestamp_ns(time_of_day: str) -> int:
    hms, micros = time_of_day.split(".")
    h, m, s = (int(x) for x in hms.split(":"))
    return (DAY + h * 3600 + m * 60 + s) * 1_000_000_000 + int(micros) * 1000


def build_packets() -> list[Packet]:
    packets = []
    client_ip_id, server_ip_id = 0x1F2A, 0x0000
    for time_of_day, from_client, flags, seq, ack, window, payload in SEGMENTS:
        options = b""
        if flags == SYN:
            options = CLIENT_SYN_OPTIONS
        elif flags == SYN | ACK:
            options = SERVER_SYNACK_OPTIONS
        if from_client:
            src, dst, sport, dport, ttl, ident = CLIENT, SERVER, CLIENT_PORT, SERVER_PORT, 128, client_ip_id
            client_ip_id += 1
            src_mac, dst_mac = bytes.fromhex("f0def1a2b3c4"), bytes.fromhex("00005e000101")
        else:
            src, dst, sport, dport, ttl, ident = SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, 51, server_ip_id
            src_mac, dst_mac = bytes.fromhex("00005e000101"), bytes.fromhex("f0def1a2b3c4")
        segment = tcp_segment(src, dst, sport, dport, seq, ack, flags, window, options=options, payload=payload)
        frame = ethernet_frame(ipv4_packet(src, dst, PROTO_TCP, segment, ttl=ttl, ident=ident),
                               src_mac=src_mac, dst_mac=dst_mac, pad_to_minimum=True)
        packets.append(Packet(timestamp_ns(time_of_day), frame))
    return packets


def main() -> None:
    assert len(REQUEST) == 361 and len(RESPONSE) == 223
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed.pcap")
    write_pcap(out, build_packets(), LINKTYPE_ETHERNET)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
