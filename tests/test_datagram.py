"""Datagram flows (fastflow/datagram.py) against Zeek's conn.log, and the decoder's UDP/ICMP payload lengths.

(a) Every non-TCP row (udp, icmp, unknown_transport) of the corpus's complete Zeek conn.log baselines is
    reproduced, and no non-TCP flow of ours is missing from them; the one legitimate difference is listed in
    EXPECTED_DIFFERENCES with its reason.
(b) Unit tests on small column tables: orientation flips on likely server ports, idle splits, S0 / SF / SHR,
    durations of 0 (bytes unset), ICMP request/reply pairing, unknown transports, ordering and the row map.
(c) The decoder: UDP payload_len from the UDP length field, ICMP from the IP payload length, and the header
    checks Zeek makes before it takes a datagram.
"""
from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from fastflow import synth
from fastflow.datagram import (DEFAULT_IDLE_TIMEOUT_NS, NOT_A_CONNECTION_IP_PROTOS, ST_ICMP, ST_ICMP6,
                               ST_OTHER_IP, ST_UDP, datagram_flows)
from fastflow.decode import CaptureReader, Status
from fastflow.source import Source
from tests.corpus import CAPTURES, ZEEK_REF, requires_corpus

try:  # Zeek's default likely_server_ports (kept by fastflow/server_ports.py)
    from fastflow.server_ports import ZEEK_LIKELY_SERVER_PORTS_UDP
except ImportError:  # pragma: no cover - the ports these captures need
    ZEEK_LIKELY_SERVER_PORTS_UDP = (53, 137, 4789, 5353, 5355)

PK_COLUMNS = ("frame", "ts", "status", "vlan", "ip_version", "src", "dst", "ip_proto", "sport", "dport",
              "ip_len", "payload_len")
S = 10**9


# ---------------------------------------------------------------------------------------------------------------
# helpers

def decode_file(path) -> dict:
    with Source(str(path)) as source:
        parts = list(CaptureReader(source, batch_size=1 << 16).batches())
    return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}


def datagram_rows(cols: dict) -> dict:
    st = cols["status"]
    keep = (st >= Status.UDP) & (st <= Status.OTHER_IP)
    return {k: cols[k][keep] for k in PK_COLUMNS}


def addr16(text: str) -> np.ndarray:
    ip = ipaddress.ip_address(text)
    raw = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
    return np.frombuffer(raw, dtype=np.uint8)


def fmt_addr(raw, version: int) -> str:
    b = bytes(np.asarray(raw, dtype=np.uint8))
    return str(ipaddress.ip_address(b[12:] if version == 4 else b))


PROTO_OF_STATUS = {ST_UDP: 17, ST_ICMP: 1, ST_ICMP6: 58}


def table(packets) -> dict:
    """pk columns from (ts_s, status, src, sport, dst, dport, ip_len, payload_len[, vlan[, ip_proto]]) tuples."""
    cols = {k: [] for k in PK_COLUMNS}
    for i, p in enumerate(packets):
        ts, status, src, sport, dst, dport, ip_len, plen = p[:8]
        vlan = p[8] if len(p) > 8 else -1
        proto = p[9] if len(p) > 9 else PROTO_OF_STATUS[status]
        cols["frame"].append(i + 1)
        cols["ts"].append(round(ts * S))
        cols["status"].append(status)
        cols["vlan"].append(vlan)
        cols["ip_version"].append(ipaddress.ip_address(src).version)
        cols["src"].append(addr16(src))
        cols["dst"].append(addr16(dst))
        cols["ip_proto"].append(proto)
        cols["sport"].append(sport)
        cols["dport"].append(dport)
        cols["ip_len"].append(ip_len)
        cols["payload_len"].append(plen)
    dtypes = {"frame": np.uint64, "ts": np.int64, "status": np.uint8, "vlan": np.int32, "ip_version": np.uint8,
              "src": np.uint8, "dst": np.uint8, "ip_proto": np.uint8, "sport": np.uint16, "dport": np.uint16,
              "ip_len": np.uint32, "payload_len": np.uint32}
    out = {k: np.array(v, dtype=dtypes[k]) for k, v in cols.items()}
    for k in ("src", "dst"):
        out[k] = out[k].reshape(-1, 16)
    return out


def flows_of(packets, timeouts=None, server_ports=(), vlan_aware=False):
    return datagram_flows(table(packets), timeouts or DEFAULT_IDLE_TIMEOUT_NS, np.array(server_ports, np.uint16),
                          vlan_aware=vlan_aware)


def row(f, i) -> dict:
    """Flow i in Zeek's notation (unset as None)."""
    v = int(f["ip_version"][i])
    get = lambda k: None if np.ma.is_masked(f[k][i]) else int(f[k][i])  # noqa: E731
    return {"orig_h": fmt_addr(f["orig_addr"][i], v), "orig_p": int(f["orig_p"][i]),
            "resp_h": fmt_addr(f["resp_addr"][i], v), "resp_p": int(f["resp_p"][i]), "proto": str(f["proto"][i]),
            "duration": float(f["duration"][i]), "orig_bytes": get("orig_bytes"), "resp_bytes": get("resp_bytes"),
            "conn_state": str(f["conn_state"][i]), "history": str(f["history"][i]),
            "orig_pkts": int(f["orig_pkts"][i]), "orig_ip_bytes": int(f["orig_ip_bytes"][i]),
            "resp_pkts": int(f["resp_pkts"][i]), "resp_ip_bytes": int(f["resp_ip_bytes"][i]),
            "ip_proto": int(f["ip_proto"][i])}


# ---------------------------------------------------------------------------------------------------------------
# (a) Zeek conn.log baselines

# The complete conn.log baselines of the corpus that have non-TCP rows (the .cut files hold TCP rows only).
BASELINE_CAPTURES = ("zeek__wikipedia.pcap", "zeek__pcapng-multi-interface.pcapng", "zeek__cisco-fabric-path.pcap",
                     "zeek__ssh__ssh.pcap", "zeek__tunnels__vxlan-encapsulated-http.pcap")
ZEEK_PROTO = {"udp": "udp", "icmp": "icmp", "icmp6": "icmp", "other": "unknown_transport"}
COMPARED = ("duration", "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
            "resp_pkts", "resp_ip_bytes")

# (capture, (orig_h, orig_p, resp_h, resp_p, zeek proto, ip_proto), column) -> (zeek, ours, reason); none left
# since the decoder counts an IPv6 payload length of 0 (without a jumbo option) as 40 IP bytes, as Zeek
EXPECTED_DIFFERENCES: dict = {}


def zeek_rows(capture: str) -> list[dict]:
    fields, rows = None, []
    with open(ZEEK_REF / f"{capture}.conn.log", encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith("#fields\t"):
                fields = line.split("\t")[1:]
            elif line and not line.startswith("#"):
                rows.append(dict(zip(fields, line.split("\t"))))
    return [r for r in rows if r["proto"] != "tcp"]


def zeek_key(r: dict) -> tuple:
    return (str(ipaddress.ip_address(r["id.orig_h"])), int(r["id.orig_p"]), str(ipaddress.ip_address(r["id.resp_h"])),
            int(r["id.resp_p"]), r["proto"], int(r["ip_proto"]))


def as_zeek_text(column: str, value) -> str:
    if value is None or value == "":
        return "-"
    if column == "duration":
        return "-" if value <= 0 else "%.6f" % value
    return str(value)


def same(column: str, zeek: str, ours: str) -> bool:
    if column == "duration" and zeek != "-" and ours != "-":
        return abs(float(zeek) - float(ours)) <= 1e-6 + 1e-9
    return zeek == ours


@requires_corpus
@pytest.mark.parametrize("capture", BASELINE_CAPTURES)
def test_zeek_non_tcp_rows_reproduced(capture):
    flows = datagram_flows(datagram_rows(decode_file(CAPTURES / capture)), DEFAULT_IDLE_TIMEOUT_NS,
                           np.array(ZEEK_LIKELY_SERVER_PORTS_UDP, dtype=np.uint16))
    ours = {}
    for i in range(len(flows["ts_start"])):
        r = row(flows, i)
        key = (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], ZEEK_PROTO[r["proto"]], r["ip_proto"])
        assert key not in ours, f"two flows with key {key}"
        ours[key] = r
    zeek = {zeek_key(r): r for r in zeek_rows(capture)}
    assert zeek, "the baseline has non-TCP rows"
    assert set(ours) == set(zeek), (sorted(set(zeek) - set(ours)), sorted(set(ours) - set(zeek)))
    found = {}
    for key, z in zeek.items():
        for col in COMPARED:
            mine = as_zeek_text(col, ours[key][col])
            if not same(col, z[col], mine):
                found[(capture, key, col)] = (z[col], mine)
    expected = {k: v[:2] for k, v in EXPECTED_DIFFERENCES.items() if k[0] == capture}
    assert found == expected


@requires_corpus
def test_expected_differences_are_real_rows():
    for (capture, key, _), _ in EXPECTED_DIFFERENCES.items():
        assert capture in BASELINE_CAPTURES
        assert key in {zeek_key(r) for r in zeek_rows(capture)}


@requires_corpus
def test_vxlan_outer_flow_and_decoder_udp_lengths():
    """The VXLAN capture's 12 datagrams: UDP length field - 8 each, summed as Zeek's orig_bytes (10203)."""
    cols = decode_file(CAPTURES / "zeek__tunnels__vxlan-encapsulated-http.pcap")
    pk = datagram_rows(cols)
    assert len(pk["frame"]) == 12
    # the IP lengths agree with the UDP lengths here: payload = IP length - 20 (IPv4 header) - 8 (UDP header)
    assert np.array_equal(pk["payload_len"], pk["ip_len"] - 28)
    assert int(pk["payload_len"].sum()) == 10203


# ---------------------------------------------------------------------------------------------------------------
# (b) unit tests on column tables

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def test_flip_on_likely_server_port():
    # the reply is seen first: source port 53 is a server port, 40000 is not -> Zeek flips the roles
    f = flows_of([(0.0, ST_UDP, B, 53, A, 40000, 128, 100),
                  (0.5, ST_UDP, A, 40000, B, 53, 56, 28)], server_ports=[53])
    r = row(f, 0)
    assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == (A, 40000, B, 53)
    assert r["history"] == "^dD"
    assert r["conn_state"] == "SF"
    assert (r["orig_pkts"], r["orig_bytes"], r["orig_ip_bytes"]) == (1, 28, 56)
    assert (r["resp_pkts"], r["resp_bytes"], r["resp_ip_bytes"]) == (1, 100, 128)
    # a lone reply: the responder is the only sender
    r = row(flows_of([(0.0, ST_UDP, B, 53, A, 40000, 128, 100)], server_ports=[53]), 0)
    assert (r["orig_h"], r["orig_p"], r["history"], r["conn_state"]) == (A, 40000, "^d", "SHR")
    assert (r["orig_pkts"], r["resp_pkts"]) == (0, 1)


@pytest.mark.parametrize("case", ["no_server_ports", "both_server_ports", "broadcast", "icmp"])
def test_no_flip(case):
    if case == "no_server_ports":
        pkts, ports = [(0.0, ST_UDP, B, 53, A, 40000, 128, 100)], []
    elif case == "both_server_ports":
        pkts, ports = [(0.0, ST_UDP, B, 137, A, 53, 128, 100)], [53, 137]
    elif case == "broadcast":  # Zeek never flips towards 255.255.255.255
        pkts, ports = [(0.0, ST_UDP, B, 67, "255.255.255.255", 40000, 328, 300)], [67]
    else:  # ICMP has no WantConnection flip; its "ports" are no server ports
        pkts, ports = [(0.0, ST_ICMP, B, 0, A, 0, 84, 56)], [0, 8]
    r = row(flows_of(pkts, server_ports=ports), 0)
    assert r["orig_h"] == B
    assert r["history"] in ("D", "")
    assert r["orig_pkts"] == 1


def test_server_ports_forms():
    pkts = [(0.0, ST_UDP, B, 53, A, 40000, 128, 100)]
    for ports in ({53}, [53], np.array([53], np.uint16), {"udp": [53]}):
        f = datagram_flows(table(pkts), DEFAULT_IDLE_TIMEOUT_NS, ports)
        assert row(f, 0)["orig_h"] == A
    f = datagram_flows(table(pkts), DEFAULT_IDLE_TIMEOUT_NS, None)
    assert row(f, 0)["orig_h"] == B


def test_idle_split_at_60s():
    base = [(0.0, ST_UDP, A, 1000, B, 2000, 40, 12)]
    # a gap just under 60 s stays in the flow; exactly 60 s expires it (last_time + timeout <= network_time)
    f = flows_of(base + [(60.0 - 1e-9, ST_UDP, B, 2000, A, 1000, 40, 12)])
    assert len(f["ts_start"]) == 1 and row(f, 0)["history"] == "Dd"
    f = flows_of(base + [(60.0, ST_UDP, B, 2000, A, 1000, 40, 12)])
    assert len(f["ts_start"]) == 2
    # the second flow starts with B's packet: B is its originator
    r0, r1 = row(f, 0), row(f, 1)
    assert (r0["orig_h"], r0["conn_state"], r0["history"]) == (A, "S0", "D")
    assert (r1["orig_h"], r1["conn_state"], r1["history"]) == (B, "S0", "D")
    assert list(f["flow_of_row"]) == [0, 1]
    # silence is measured from the flow's last packet, not its first
    f = flows_of([(t, ST_UDP, A, 1000, B, 2000, 40, 12) for t in (0.0, 50.0, 100.0, 150.0)])
    assert len(f["ts_start"]) == 1 and f["duration"][0] == 150.0
    assert int(f["orig_pkts"][0]) == 4


def test_idle_timeouts_per_protocol_and_zero():
    pkts = [(0.0, ST_UDP, A, 1000, B, 2000, 40, 12), (30.0, ST_UDP, A, 1000, B, 2000, 40, 12),
            (0.0, ST_ICMP, A, 8, B, 0, 84, 56), (30.0, ST_ICMP, A, 8, B, 0, 84, 56),
            (0.0, ST_OTHER_IP, A, 0, B, 0, 40, 0, -1, 99), (30.0, ST_OTHER_IP, A, 0, B, 0, 40, 0, -1, 99)]
    pkts.sort(key=lambda p: p[0])
    f = flows_of(pkts, {"udp": 20 * S, "icmp": 40 * S, "other": 20 * S})
    assert sorted(map(str, f["proto"])) == ["icmp", "other", "other", "udp", "udp"]
    f = flows_of(pkts, {"udp": 0, "icmp": 0, "other": 0})  # 0: never time out
    assert len(f["ts_start"]) == 3
    f = flows_of(pkts, {"udp": 40 * S})  # missing keys: Zeek's 60 s
    assert len(f["ts_start"]) == 3


def test_idle_split_follows_network_time():
    # X at 100 s, other traffic at 200 s, X again at 101 s (the clock stepped back): Zeek's timer for X fired at
    # network time 200 (>= 100 + 60), so the late X packet opens a new flow
    pkts = [(100.0, ST_UDP, A, 1000, B, 2000, 40, 12), (200.0, ST_UDP, C, 1, B, 2, 40, 12),
            (101.0, ST_UDP, A, 1000, B, 2000, 40, 12)]
    f = flows_of(pkts)
    assert list(f["flow_of_row"]) == [0, 1, 2]
    # without the other traffic it stays one flow
    f = flows_of([pkts[0], pkts[2]])
    assert list(f["flow_of_row"]) == [0, 0]
    # a network_time column supplied by the caller (all packets of the capture) takes precedence
    pk = table([pkts[0], pkts[2]])
    pk["network_time"] = np.array([100 * S, 200 * S], dtype=np.int64)
    assert list(datagram_flows(pk, DEFAULT_IDLE_TIMEOUT_NS, None)["flow_of_row"]) == [0, 1]


def test_one_way_flow_is_s0():
    f = flows_of([(0.0, ST_UDP, A, 5000, B, 6000, 40, 12), (0.25, ST_UDP, A, 5000, B, 6000, 60, 32)])
    r = row(f, 0)
    assert (r["conn_state"], r["history"]) == ("S0", "D")
    assert (r["orig_pkts"], r["orig_ip_bytes"], r["orig_bytes"]) == (2, 100, 44)
    assert (r["resp_pkts"], r["resp_ip_bytes"], r["resp_bytes"]) == (0, 0, 0)
    assert r["duration"] == 0.25


def test_both_directions_sf():
    f = flows_of([(1.0, ST_UDP, A, 5000, B, 6000, 40, 12), (1.5, ST_UDP, B, 6000, A, 5000, 100, 72),
                  (2.0, ST_UDP, A, 5000, B, 6000, 30, 2)])
    r = row(f, 0)
    assert (r["orig_h"], r["conn_state"], r["history"]) == (A, "SF", "Dd")
    assert (r["orig_pkts"], r["orig_bytes"], r["orig_ip_bytes"]) == (2, 14, 70)
    assert (r["resp_pkts"], r["resp_bytes"], r["resp_ip_bytes"]) == (1, 72, 100)
    assert r["duration"] == 1.0
    assert (int(f["ts_start"][0]), int(f["ts_end"][0])) == (1 * S, 2 * S)
    assert (int(f["first_frame"][0]), int(f["last_frame"][0])) == (1, 3)


def test_zero_duration_leaves_bytes_unset():
    f = flows_of([(5.0, ST_UDP, A, 5000, B, 6000, 40, 12), (5.0, ST_UDP, B, 6000, A, 5000, 40, 12)])
    r = row(f, 0)
    assert r["duration"] == 0.0
    assert r["orig_bytes"] is None and r["resp_bytes"] is None
    assert (int(f["orig_payload_bytes"][0]), int(f["resp_payload_bytes"][0])) == (12, 12)
    assert (r["conn_state"], r["history"]) == ("SF", "Dd")


def test_duration_is_last_minus_first_packet():
    # Zeek's duration is last_time - start_time (capture order), ts_end the largest timestamp
    f = flows_of([(10.0, ST_UDP, A, 5000, B, 6000, 40, 12), (12.0, ST_UDP, A, 5000, B, 6000, 40, 12),
                  (11.0, ST_UDP, A, 5000, B, 6000, 40, 12)])
    assert f["duration"][0] == 1.0
    assert int(f["ts_end"][0]) == 12 * S


def test_icmp_echo_request_reply_pairing():
    f = flows_of([(0.0, ST_ICMP, A, 8, B, 0, 84, 56), (0.001, ST_ICMP, B, 0, A, 0, 84, 56),
                  (1.0, ST_ICMP, A, 8, B, 0, 84, 56), (1.001, ST_ICMP, B, 0, A, 0, 84, 56)])
    assert len(f["ts_start"]) == 1
    r = row(f, 0)
    assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["proto"]) == (A, 8, B, 0, "icmp")
    assert (r["orig_pkts"], r["resp_pkts"], r["orig_bytes"], r["resp_bytes"]) == (2, 2, 112, 112)
    assert (r["orig_ip_bytes"], r["resp_ip_bytes"]) == (168, 168)
    assert (r["conn_state"], r["history"]) == ("OTH", "")


def test_icmp_reply_without_request_keeps_first_sender():
    # Zeek does not choose the originator by message type: the replier is the originator, ports 0 -> 8
    r = row(flows_of([(0.0, ST_ICMP, B, 0, A, 0, 84, 56)]), 0)
    assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == (B, 0, A, 8)
    assert (r["orig_pkts"], r["resp_pkts"], r["conn_state"]) == (1, 0, "OTH")


def test_icmp_one_way_messages():
    # destination unreachable (3/3): ports are type and code; the key is not made symmetric, so the same
    # message type in the other direction is another flow
    f = flows_of([(0.0, ST_ICMP, B, 3, A, 3, 56, 28), (0.1, ST_ICMP, A, 3, B, 3, 56, 28),
                  (0.2, ST_ICMP, B, 3, A, 3, 56, 28), (0.3, ST_ICMP, B, 11, A, 0, 56, 28)])
    assert list(f["flow_of_row"]) == [0, 1, 0, 2]
    r = row(f, 0)
    assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["orig_pkts"], r["resp_pkts"]) == (B, 3, A, 3, 2, 0)
    assert (row(f, 2)["orig_p"], row(f, 2)["resp_p"]) == (11, 0)


def test_icmp_timestamp_and_icmpv6_pairs():
    f = flows_of([(0.0, ST_ICMP, A, 13, B, 0, 40, 12), (0.1, ST_ICMP, B, 14, A, 0, 40, 12)])
    assert list(f["flow_of_row"]) == [0, 0]
    assert (row(f, 0)["orig_p"], row(f, 0)["resp_p"]) == (13, 14)
    x, y = "2001:db8::1", "2001:db8::2"
    f = flows_of([(0.0, ST_ICMP6, x, 128, y, 0, 104, 56), (0.1, ST_ICMP6, y, 129, x, 0, 104, 56),
                  (0.2, ST_ICMP6, x, 135, y, 0, 72, 24), (0.3, ST_ICMP6, y, 136, x, 0, 72, 24),
                  (0.4, ST_ICMP6, y, 1, x, 4, 120, 72)])
    assert list(f["flow_of_row"]) == [0, 0, 1, 1, 2]
    r0, r1, r2 = row(f, 0), row(f, 1), row(f, 2)
    assert (r0["orig_h"], r0["orig_p"], r0["resp_p"], r0["proto"], r0["ip_proto"]) == (x, 128, 129, "icmp6", 58)
    assert (r0["orig_pkts"], r0["resp_pkts"]) == (1, 1)
    assert (r1["orig_p"], r1["resp_p"]) == (135, 136)
    assert (r2["orig_h"], r2["orig_p"], r2["resp_p"]) == (y, 1, 4)  # unreachable: type, code


def test_icmp_and_icmpv6_echo_do_not_merge_with_udp():
    f = flows_of([(0.0, ST_ICMP, A, 8, B, 0, 84, 56), (0.1, ST_UDP, A, 8, B, 0, 84, 56)])
    assert list(f["flow_of_row"]) == [0, 1]


def test_unknown_transport():
    f = flows_of([(0.0, ST_OTHER_IP, A, 0, B, 0, 40, 0, -1, 99), (0.5, ST_OTHER_IP, B, 0, A, 0, 60, 0, -1, 99),
                  (0.7, ST_OTHER_IP, A, 0, B, 0, 52, 0, -1, 132)])
    assert list(f["flow_of_row"]) == [0, 0, 1]
    r = row(f, 0)
    assert (r["orig_p"], r["resp_p"], r["proto"], r["ip_proto"]) == (0, 0, "other", 99)
    assert (r["orig_pkts"], r["resp_pkts"], r["orig_ip_bytes"], r["resp_ip_bytes"]) == (1, 1, 40, 60)
    assert (r["orig_bytes"], r["resp_bytes"], r["conn_state"], r["history"]) == (0, 0, "OTH", "")


@pytest.mark.parametrize("proto", [int(p) for p in NOT_A_CONNECTION_IP_PROTOS])
def test_protocols_zeek_makes_no_connection_of(proto):
    f = flows_of([(0.0, ST_UDP, A, 1, B, 2, 40, 12), (0.1, ST_OTHER_IP, A, 0, B, 0, 40, 0, -1, proto)])
    assert list(f["flow_of_row"]) == [0, -1]
    assert len(f["ts_start"]) == 1


def test_vlan_joins_the_key_only_when_vlan_aware():
    pkts = [(0.0, ST_UDP, A, 1, B, 2, 40, 12, 10), (0.1, ST_UDP, B, 2, A, 1, 40, 12, 20),
            (0.2, ST_UDP, B, 2, A, 1, 40, 12, 10), (0.3, ST_UDP, A, 1, B, 2, 40, 12)]
    f = flows_of(pkts, vlan_aware=True)
    assert list(f["flow_of_row"]) == [0, 1, 0, 2]
    assert list(np.ma.getdata(f["vlan"])[:2]) == [10, 20]
    assert list(np.ma.getmaskarray(f["vlan"])) == [False, False, True]
    # Zeek's default key: one flow, the first packet's VLAN
    f = flows_of(pkts)
    assert list(f["flow_of_row"]) == [0, 0, 0, 0] and list(f["vlan"]) == [10]


def test_order_first_index_and_row_map():
    pkts = [(0.0, ST_UDP, C, 9, B, 9, 40, 12), (0.1, ST_UDP, A, 5, B, 6, 40, 12), (0.2, ST_UDP, B, 9, C, 9, 40, 12),
            (0.3, ST_ICMP, A, 8, C, 0, 84, 56), (0.4, ST_UDP, B, 6, A, 5, 40, 12)]
    f = flows_of(pkts)
    assert list(f["flow_of_row"]) == [0, 1, 0, 2, 1]
    assert list(f["first_index"]) == [0, 1, 3]
    assert list(f["first_frame"]) == [1, 2, 4] and list(f["last_frame"]) == [3, 5, 4]
    assert np.all(np.diff(f["first_frame"].astype(np.int64)) > 0)
    # self-talk on one endpoint: every packet is from the originator
    r = row(flows_of([(0.0, ST_UDP, A, 7, A, 7, 40, 12), (0.1, ST_UDP, A, 7, A, 7, 40, 12)]), 0)
    assert (r["orig_pkts"], r["resp_pkts"], r["conn_state"]) == (2, 0, "S0")


def test_output_columns_and_types():
    f = flows_of([(0.0, ST_UDP, A, 1, B, 2, 40, 12)])
    want = {"ts_start": np.int64, "ts_end": np.int64, "duration": np.float64, "orig_addr": np.uint8,
            "resp_addr": np.uint8, "orig_p": np.uint16, "resp_p": np.uint16, "ip_version": np.uint8,
            "vlan": np.int32, "ip_proto": np.uint8, "orig_pkts": np.uint64, "resp_pkts": np.uint64,
            "orig_ip_bytes": np.uint64, "resp_ip_bytes": np.uint64, "orig_payload_bytes": np.uint64,
            "resp_payload_bytes": np.uint64, "orig_bytes": np.uint64, "resp_bytes": np.uint64,
            "first_frame": np.uint64, "last_frame": np.uint64, "first_index": np.int64, "flow_of_row": np.int64}
    for k, dt in want.items():
        assert f[k].dtype == dt, k
    for k in ("proto", "conn_state", "history"):
        assert f[k].dtype.kind == "U", k
    for k in ("vlan", "orig_bytes", "resp_bytes"):
        assert isinstance(f[k], np.ma.MaskedArray), k
    assert f["orig_addr"].shape == (1, 16)
    empty = flows_of([])
    assert set(empty) == set(f)
    assert all(len(v) == 0 for v in empty.values())
    only_excluded = flows_of([(0.0, ST_OTHER_IP, A, 0, B, 0, 40, 0, -1, 47)])
    assert len(only_excluded["ts_start"]) == 0 and list(only_excluded["flow_of_row"]) == [-1]


def test_many_flows_against_a_loop():
    """Random traffic: the vectorized grouping equals a per-packet loop of the same rules."""
    rng = np.random.default_rng(7)
    hosts = ["10.0.0.%d" % i for i in range(1, 5)]
    pkts, t = [], 0.0
    for _ in range(600):
        t += float(rng.exponential(8.0))
        a, b = rng.choice(4, 2, replace=False)
        kind = rng.integers(3)
        if kind == 0:
            p = (t, ST_UDP, hosts[a], int(rng.choice([53, 1000, 1001])), hosts[b], int(rng.choice([53, 1000])),
                 40, 12)
        elif kind == 1:
            p = (t, ST_ICMP, hosts[a], int(rng.choice([8, 0, 3])), hosts[b], int(rng.choice([0, 1])), 84, 56)
        else:
            p = (t, ST_OTHER_IP, hosts[a], 0, hosts[b], 0, 40, 0, -1, int(rng.choice([99, 132])))
        pkts.append(p)
    f = flows_of(pkts, server_ports=[53])
    # reference: a dict of open connections keyed as Zeek does, expired by the 60 s timer
    cp = {8: 0, 0: 8}
    conns, ids = {}, []
    for ts, st, src, sp, dst, dp, *rest in pkts:
        proto = rest[3] if len(rest) > 3 else PROTO_OF_STATUS[st]
        if st == ST_ICMP:
            one_way = sp not in cp
            sp, dp = sp, (dp if one_way else cp[sp])
        elif st == ST_OTHER_IP:
            one_way, sp, dp = False, 0, 0
        else:
            one_way = False
        a_, b_ = (src, sp), (dst, dp)
        ka = (ipaddress.ip_address(src).packed, sp)
        kb = (ipaddress.ip_address(dst).packed, dp)
        key = (proto, a_, b_) if one_way or ka <= kb else (proto, b_, a_)
        c = conns.get(key)
        if c is None or ts - c["last"] >= 60.0 - 1e-9:
            c = conns[key] = {"id": len({*ids}), "last": ts}
        c["last"] = ts
        ids.append(c["id"])
    # ids in first-packet order
    remap, dense = {}, []
    for i in ids:
        remap.setdefault(i, len(remap))
        dense.append(remap[i])
    assert list(f["flow_of_row"]) == dense
    assert int(f["orig_pkts"].sum() + f["resp_pkts"].sum()) == len(pkts)


# ---------------------------------------------------------------------------------------------------------------
# (c) the decoder's UDP / ICMP rows

def decode_packets(tmp_path, packets, snaplen=262144):
    path = tmp_path / "d.pcap"
    synth.write_pcap(path, [synth.Packet(i * 1000, p) for i, p in enumerate(packets)], synth.LINKTYPE_RAW,
                     snaplen=snaplen)
    return decode_file(path)


def test_decoder_udp_payload_from_udp_length(tmp_path):
    good = synth.ipv4_packet(A, B, synth.PROTO_UDP, synth.udp_datagram(A, B, 1000, 53, b"x" * 30))
    # a UDP length field of 20 (12 payload) in a 38-byte IP payload: Zeek counts the UDP length (weird
    # UDP_datagram_length_mismatch), so do we
    dgram = bytearray(synth.udp_datagram(A, B, 1000, 53, b"y" * 30))
    dgram[4:6] = (20).to_bytes(2, "big")
    mismatch = synth.ipv4_packet(A, B, synth.PROTO_UDP, bytes(dgram))
    v6 = synth.ipv6_packet("2001:db8::1", "2001:db8::2", synth.PROTO_UDP,
                           synth.udp_datagram("2001:db8::1", "2001:db8::2", 5353, 5353, b"z" * 9))
    cols = decode_packets(tmp_path, [good, mismatch, v6])
    assert list(cols["status"]) == [Status.UDP] * 3
    assert list(cols["payload_len"]) == [30, 12, 9]
    assert list(cols["ip_len"]) == [58, 58, 57]


def test_decoder_icmp_payload_is_ip_payload_minus_header(tmp_path):
    echo = synth.ipv4_packet(A, B, synth.PROTO_ICMP, synth.icmp_message(8, 0, payload=b"p" * 56))
    x, y = "2001:db8::1", "2001:db8::2"
    echo6 = synth.ipv6_packet(x, y, synth.PROTO_ICMPV6, synth.icmpv6_message(x, y, 129, 0, payload=b"q" * 10))
    cols = decode_packets(tmp_path, [echo, echo6])
    assert list(cols["status"]) == [Status.ICMP, Status.ICMP6]
    assert list(cols["payload_len"]) == [56, 10]
    assert list(cols["sport"]) == [8, 129] and list(cols["dport"]) == [0, 0]


def test_decoder_datagrams_zeek_would_not_take(tmp_path):
    # an IP payload shorter than the 8-byte UDP / ICMP header: BAD_HEADER (Zeek: truncated_header)
    short_udp = synth.ipv4_packet(A, B, synth.PROTO_UDP, b"\x03\xe8\x00\x35\x00\x06")
    short_icmp = synth.ipv4_packet(A, B, synth.PROTO_ICMP, b"\x08\x00\x00\x00")
    cols = decode_packets(tmp_path, [short_udp, short_icmp])
    assert list(cols["status"]) == [Status.BAD_HEADER, Status.BAD_HEADER]
    assert list(cols["sport"]) == [1000, 8] and list(cols["dport"]) == [53, 0]
    # the snaplen cuts the 8-byte header: TRUNCATED (Zeek: internally_truncated_header); the ports stay
    udp = synth.ipv4_packet(A, B, synth.PROTO_UDP, synth.udp_datagram(A, B, 1000, 53, b"x" * 30))
    icmp = synth.ipv4_packet(A, B, synth.PROTO_ICMP, synth.icmp_message(8, 0, payload=b"p" * 56))
    cols = decode_packets(tmp_path, [udp, icmp], snaplen=26)
    assert list(cols["status"]) == [Status.TRUNCATED, Status.TRUNCATED]
    assert list(cols["sport"]) == [1000, 8]
    assert list(cols["payload_len"]) == [0, 0]


def test_synthetic_capture_end_to_end(tmp_path):
    q = synth.ipv4_packet(A, B, synth.PROTO_UDP, synth.udp_datagram(A, B, 40000, 53, b"q" * 20))
    r = synth.ipv4_packet(B, A, synth.PROTO_UDP, synth.udp_datagram(B, A, 53, 40000, b"r" * 60))
    ping = synth.ipv4_packet(A, C, synth.PROTO_ICMP, synth.icmp_message(8, 0, payload=b"p" * 56))
    pong = synth.ipv4_packet(C, A, synth.PROTO_ICMP, synth.icmp_message(0, 0, payload=b"p" * 56))
    path = tmp_path / "e.pcap"
    synth.write_pcap(path, [synth.Packet(10**9 * 100 + i * 10**6, p) for i, p in enumerate([r, q, ping, pong])],
                     synth.LINKTYPE_RAW)
    f = datagram_flows(datagram_rows(decode_file(path)), DEFAULT_IDLE_TIMEOUT_NS,
                       np.array(ZEEK_LIKELY_SERVER_PORTS_UDP, np.uint16))
    dns, icmp = row(f, 0), row(f, 1)
    assert (dns["orig_h"], dns["orig_p"], dns["resp_h"], dns["resp_p"]) == (A, 40000, B, 53)
    assert (dns["history"], dns["conn_state"], dns["orig_bytes"], dns["resp_bytes"]) == ("^dD", "SF", 20, 60)
    assert (dns["orig_ip_bytes"], dns["resp_ip_bytes"]) == (48, 88)
    assert (icmp["orig_h"], icmp["orig_p"], icmp["resp_h"], icmp["resp_p"]) == (A, 8, C, 0)
    assert (icmp["orig_bytes"], icmp["resp_bytes"], icmp["conn_state"]) == (56, 56, "OTH")
