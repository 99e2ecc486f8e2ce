"""Zeek's default ``likely_server_ports``, and user overrides of it.

Zeek flips a connection's originator and responder when the first packet's
source port is in ``likely_server_ports`` and its destination port is not
(``IPBasedAnalyzer::IsLikelyServerPort``). ``scripts/base/init-bare.zeek``
declares the set empty (``const likely_server_ports: set[port] &redef;``); the
scripts ``zeek -r file.pcap`` loads by default fill it.

Since Zeek 8.1 (zeek/zeek PR #5093) a protocol script no longer does
``redef likely_server_ports += {...}``: ``Analyzer::register_for_ports(tag,
server_ports, non_server_ports)`` (base/frameworks/analyzer/main.zeek) and
``PacketAnalyzer::register_for_ports(parent, child, server_ports,
non_server_ports)`` (base/packet-protocols/main.zeek) add ``server_ports`` to
it at ``zeek_init``. The ``non_server_ports`` and ports registered by the
singular ``register_for_port`` (also the ports of Spicy ``.evt`` files) are not
added. The lists below are the server ports of every such call in the scripts
of base/init-bare.zeek and base/init-default.zeek (not policy/, not
site/local.zeek) of a Zeek master snapshot from after March 2026 (8.2 era; it
has PR #5291, 465/tcp for SMTPS). Ports of the ``&redef`` constants' defaults:

  script (under scripts/base/)         constant                 tcp / udp
  protocols/dce-rpc/main.zeek          DCE_RPC::ports           135
  protocols/dhcp/main.zeek             DHCP::server_ports       - / 67, 4011
                                       (DHCP::client_ports 68/udp: non-server)
  protocols/dnp3/main.zeek             DNP3::ports              20000 / 20000
  protocols/dns/main.zeek              DNS::ports               53 / 53, 137, 5353, 5355
  protocols/finger/main.zeek           Finger::ports            79
  protocols/ftp/main.zeek              FTP::ports               21, 2811
  protocols/http/main.zeek             HTTP::ports              80, 81, 631, 1080, 3128,
                                                                8000, 8080, 8888
  protocols/imap/main.zeek             IMAP::ports              143
  protocols/irc/main.zeek              IRC::ports               6666-6669
  protocols/krb/main.zeek              KRB::tcp_ports/udp_ports 88 / 88
  protocols/ldap/main.zeek             LDAP::ports_tcp/udp      389, 3268 / 389
  protocols/modbus/main.zeek           Modbus::ports            502
  protocols/mqtt/main.zeek             MQTT::ports              1883
  protocols/mysql/main.zeek            MySQL::ports             1434, 3306
  protocols/ntp/main.zeek              NTP::ports               - / 123
  protocols/postgresql/main.zeek       PostgreSQL::ports        5432
  protocols/quic/main.zeek             QUIC::quic_ports         - / 443
                                       (QUIC::doq_ports 784, 853/udp: non-server)
  protocols/radius/main.zeek           RADIUS::ports            - / 1812
  protocols/rdp/main.zeek              RDP::rdp_ports/rdpeudp   3389 / 3389
  protocols/redis/main.zeek            Redis::ports             6379
  protocols/sip/main.zeek              SIP::ports               - / 5060
  protocols/smb/main.zeek              SMB::ports               139, 445
  protocols/smtp/main.zeek             SMTP::ports              25, 587
  protocols/snmp/main.zeek             SNMP::ports              - / 161, 162
  protocols/socks/main.zeek            SOCKS::ports             1080
  protocols/ssh/main.zeek              SSH::ports               22
  protocols/ssl/main.zeek              SSL::ssl_ports           443, 465, 563, 585, 614,
                                                                636, 989, 990, 992, 993,
                                                                995, 5223
                                       SSL::dtls_ports          - / 443
  protocols/syslog/main.zeek           Syslog::tcp_ports/ports  514 / 514
  protocols/xmpp/main.zeek             XMPP::ports              5222, 5269
  packet-protocols/ayiya/main.zeek     ayiya_ports              - / 5072
  packet-protocols/geneve/main.zeek    geneve_ports             - / 6081
  packet-protocols/gtpv1/main.zeek     gtpv1_ports              - / 2123, 2152
  packet-protocols/teredo/main.zeek    teredo_ports             - / 3544
  packet-protocols/vxlan/main.zeek     vxlan_ports              - / 4789

Loaded by default but registering no ports: conn, ntlm, pop3, rfb, tunnels,
websocket (and the igmp packet analyzer). Zeek 8.0 and older used per-script
``redef likely_server_ports`` instead, with some differences (e.g. QUIC added
nothing, DHCP only 67/udp, SSL had no 465/tcp).
"""

from __future__ import annotations

import re

import numpy as np

ZEEK_LIKELY_SERVER_PORTS_TCP: tuple[int, ...] = (
    21, 22, 25, 53, 79, 80, 81, 88, 135, 139, 143, 389, 443, 445, 465, 502, 514,
    563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995, 1080, 1434, 1883,
    2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432, 6379, 6666, 6667,
    6668, 6669, 8000, 8080, 8888, 20000,
)

ZEEK_LIKELY_SERVER_PORTS_UDP: tuple[int, ...] = (
    53, 67, 88, 123, 137, 161, 162, 389, 443, 514, 1812, 2123, 2152, 3389, 3544,
    4011, 4789, 5060, 5072, 5353, 5355, 6081, 20000,
)

_ITEM = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp))?", re.ASCII | re.IGNORECASE)


def parse_ports(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """Parse a port list like ``"22,80,443/tcp,53/udp,8000-8010"`` into (tcp, udp).

    Items are separated by commas; an item is a port or an inclusive range
    ``lo-hi``, optionally followed by ``/tcp`` or ``/udp`` (without a suffix it
    counts for both). Ports are 0-65535. Raises ValueError on a bad item.
    """
    tcp: set[int] = set()
    udp: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty item in port list {text!r}")
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"bad port item {item!r} in {text!r} (expected N, N-M, optionally /tcp or /udp)")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if max(lo, hi) > 65535:
            raise ValueError(f"port {max(lo, hi)} > 65535 in item {item!r}")
        if hi < lo:
            raise ValueError(f"reversed range {item!r} ({lo} > {hi})")
        proto = (m.group(3) or "").lower()
        ports = range(lo, hi + 1)
        if proto != "udp":
            tcp.update(ports)
        if proto != "tcp":
            udp.update(ports)
    return frozenset(tcp), frozenset(udp)


def is_likely_server_port(ports: np.ndarray, table: frozenset[int] | tuple[int, ...]) -> np.ndarray:
    """Boolean array: which of ``ports`` (e.g. uint16) are in ``table`` (one protocol's set)."""
    values = np.fromiter(table, dtype=np.int64, count=len(table))
    return np.isin(np.asarray(ports), values)
