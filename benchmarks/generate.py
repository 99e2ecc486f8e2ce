"""Write a large, realistic, seeded pcap for benchmarks.

    python3 benchmarks/generate.py --packets 3000000 --seed 1 -o out.pcap [--snaplen 128]
                                   [--ipv6-share 0.2] [--vlan-share 0.1]

Many short TCP connections (handshake with options, request/response data of mixed sizes, ACKs,
FIN close from either side, some RSTs, refused connections, SYN retransmissions, occasional client
port reuse), IPv4/IPv6, some VLAN-tagged, interleaved in time like a busy link, plus a little
UDP/ICMP noise. Same seed, same arguments -> same bytes.

Connections are simulated per connection in Python (cheap: a few list appends per packet); the
bytes are then assembled with numpy, one header template per packet shape, fields and checksums
filled column-wise. Payload bytes are zeros (they add nothing to the checksums); lengths are real.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastflow import synth as s  # noqa: E402

START_NS = 1_717_200_000_000_000_000  # 2024-06-01 00:00:00 UTC
PACKETS_PER_SECOND = 150_000  # arrival rate of a busy link
SERVER_PORTS = [80, 443, 443, 443, 8080, 22, 25, 993]

KIND_TCP, KIND_UDP, KIND_ICMP = 0, 1, 2
SYN_OPTIONS = s.opt_mss(1460) + s.opt_sack_permitted() + s.opt_timestamps(0, 0) + s.OPT_NOP + s.opt_wscale(7)
assert len(SYN_OPTIONS) == 20


class Rows:
    """Per-packet fields, appended column by column."""

    COLUMNS = ("t", "conn", "from_client", "flags", "seq", "ack", "window", "payload", "kind", "syn_options")

    def __init__(self):
        for c in self.COLUMNS:
            setattr(self, c, [])

    def add(self, t, conn, from_client, flags, seq, ack, window, payload, kind=KIND_TCP, syn_options=False):
        self.t.append(t)
        self.conn.append(conn)
        self.from_client.append(from_client)
        self.flags.append(flags)
        self.seq.append(seq & 0xFFFFFFFF)
        self.ack.append(ack & 0xFFFFFFFF)
        self.window.append(window)
        self.payload.append(payload)
        self.kind.append(kind)
        self.syn_options.append(syn_options)

    def __len__(self):
        return len(self.t)


def simulate_connection(rows: Rows, rng: random.Random, conn: int, t: float, mss: int) -> None:
    """Append one connection's packets starting at time t (seconds)."""
    rtt = rng.uniform(0.0005, 0.15)
    c_isn, s_isn = rng.getrandbits(32), rng.getrandbits(32)
    c_win, s_win = rng.choice([502, 1024, 2048, 64240]), rng.choice([227, 509, 1026, 65160])
    S, A, F, R, P = s.SYN, s.ACK, s.FIN, s.RST, s.PSH

    for retry in range(rng.choices([0, 1, 2], [0.94, 0.05, 0.01])[0]):  # lost SYNs, retransmitted after 1 s, 2 s
        rows.add(t, conn, True, S, c_isn, 0, 64240, 0, syn_options=True)
        t += 1.0 * (retry + 1)
    rows.add(t, conn, True, S, c_isn, 0, 64240, 0, syn_options=True)
    t += rtt / 2
    if rng.random() < 0.05:  # refused: RST-ACK to the SYN
        rows.add(t, conn, False, R | A, 0, c_isn + 1, 0, 0)
        return
    rows.add(t, conn, False, S | A, s_isn, c_isn + 1, 65160, 0, syn_options=True)
    t += rtt / 2
    c_seq, s_seq = c_isn + 1, s_isn + 1
    rows.add(t, conn, True, A, c_seq, s_seq, c_win, 0)

    for _ in range(rng.choices([1, 2, 3, 5], [0.6, 0.2, 0.15, 0.05])[0]):
        request = int(rng.choice([40, 80, 200, 350, 520, 900, 1300]) + rng.randrange(40))
        t += rng.uniform(0.00001, 0.002)
        rows.add(t, conn, True, P | A, c_seq, s_seq, c_win, request)
        c_seq += request
        t += rtt / 2 + rng.uniform(0.00005, 0.02)
        response = min(int(rng.lognormvariate(7.0, 1.6)), 400_000)
        unacked = 0
        while response > 0:
            size = min(mss, response)
            response -= size
            rows.add(t, conn, False, (P | A) if response == 0 else A, s_seq, c_seq, s_win, size)
            s_seq += size
            unacked += 1
            t += rng.uniform(0.000005, 0.0003)
            if unacked == 2 or response == 0:  # delayed ACK: every second segment
                rows.add(t + rtt / 2, conn, True, A, c_seq, s_seq, c_win, 0)
                unacked = 0
        t += rtt / 2

    t += rng.uniform(0.0001, 0.5)
    ending = rng.random()
    if ending < 0.06:  # abort
        client_resets = rng.random() < 0.5
        rows.add(t, conn, client_resets, R | A, c_seq if client_resets else s_seq,
                 s_seq if client_resets else c_seq, 0, 0)
        return
    client_closes = ending < 0.53
    first, second = (c_seq, s_seq) if client_closes else (s_seq, c_seq)
    wins = (c_win, s_win) if client_closes else (s_win, c_win)
    rows.add(t, conn, client_closes, F | A, first, second, wins[0], 0)
    t += rtt / 2
    rows.add(t, conn, not client_closes, F | A, second, first + 1, wins[1], 0)
    t += rtt / 2
    rows.add(t, conn, client_closes, A, first + 1, second + 1, wins[0], 0)


def simulate(n_packets: int, seed: int, ipv6_share: float, vlan_share: float):
    rng = random.Random(seed)
    rows = Rows()
    conns = {"client": [], "server": [], "cport": [], "sport": [], "v6": [], "vlan": []}
    servers4 = [rng.getrandbits(32) | 0x0A000000 for _ in range(200)]
    servers6 = [rng.getrandbits(64) for _ in range(200)]
    recent: list[tuple] = []
    t = 0.0
    mean_gap = 14.0 / PACKETS_PER_SECOND  # about 14 packets per connection
    while len(rows) < n_packets:
        conn = len(conns["client"])
        if recent and rng.random() < 0.02:  # client port reuse: same 4-tuple as an earlier connection
            client, server, cport, sport, v6, vlan = recent[rng.randrange(len(recent))]
        else:
            v6 = rng.random() < ipv6_share
            client = rng.getrandbits(64) if v6 else (0xC0A80000 | rng.getrandbits(16))
            server = rng.choice(servers6 if v6 else servers4)
            cport, sport = rng.randrange(1024, 65536), rng.choice(SERVER_PORTS)
            vlan = rng.randrange(1, 4095) if rng.random() < vlan_share else -1
            recent = (recent + [(client, server, cport, sport, v6, vlan)])[-500:]
        for key, value in zip(("client", "server", "cport", "sport", "v6", "vlan"), (client, server, cport, sport, v6, vlan)):
            conns[key].append(value)
        simulate_connection(rows, rng, conn, t, 1440 if v6 else 1460)
        if rng.random() < 0.03:  # noise: a DNS-like UDP pair or an ICMP echo, IPv4 only
            kind = rng.choice([KIND_UDP, KIND_ICMP])
            noise = len(conns["client"])
            for key, value in zip(("client", "server", "cport", "sport", "v6", "vlan"),
                                  (0xC0A80000 | rng.getrandbits(16), 0x08080808, rng.randrange(1024, 65536), 53, False, -1)):
                conns[key].append(value)
            rows.add(t + 0.0001, noise, True, 0, 0, 0, 0, rng.randrange(20, 120), kind)
            rows.add(t + 0.02, noise, False, 0, 0, 0, 0, rng.randrange(40, 500), kind)
        t += rng.expovariate(1.0 / mean_gap)
    cols = {c: np.asarray(getattr(rows, c)) for c in Rows.COLUMNS}
    return cols, conns


def _put16(h: np.ndarray, offset: int, values: np.ndarray) -> None:
    h[:, offset] = values >> 8
    h[:, offset + 1] = values


def _put32(h: np.ndarray, offset: int, values: np.ndarray) -> None:
    for i in range(4):
        h[:, offset + i] = values >> (24 - 8 * i)


def _word_sum(h: np.ndarray, start: int, stop: int) -> np.ndarray:
    block = h[:, start:stop].astype(np.uint64)
    return (block[:, 0::2] << np.uint64(8)).sum(axis=1) + block[:, 1::2].sum(axis=1)


def _fold(total: np.ndarray) -> np.ndarray:
    for _ in range(3):
        total = (total & np.uint64(0xFFFF)) + (total >> np.uint64(16))
    return (~total & np.uint64(0xFFFF)).astype(np.uint32)


def build_headers(kind, v6, vlan, syn_opts, src, dst, sport, dport, seq, ack, flags, window, payload, ts_ms):
    """Headers (n, hlen) for packets of one shape; src/dst are (n, 4 or 16) uint8 arrays."""
    n = len(payload)
    eth = 18 if vlan else 14
    iplen = 40 if v6 else 20
    l4len = {KIND_TCP: 40 if syn_opts else 20, KIND_UDP: 8, KIND_ICMP: 8}[kind]
    h = np.zeros((n, eth + iplen + l4len), dtype=np.uint8)
    h[:, 0:12] = np.frombuffer(s.MAC_SERVER + s.MAC_CLIENT, np.uint8)
    if vlan:
        _put16(h, 12, np.full(n, s.TPID_8021Q))
    _put16(h, eth - 2, np.full(n, s.ETH_IPV6 if v6 else s.ETH_IPV4))
    proto = {KIND_TCP: s.PROTO_TCP, KIND_UDP: s.PROTO_UDP, KIND_ICMP: s.PROTO_ICMP}[kind]
    seg_len = (l4len + payload).astype(np.uint64)
    ip = eth
    if v6:
        h[:, ip] = 0x60
        _put16(h, ip + 4, seg_len)
        h[:, ip + 6], h[:, ip + 7] = proto, 64
        h[:, ip + 8 : ip + 24], h[:, ip + 24 : ip + 40] = src, dst
    else:
        h[:, ip], h[:, ip + 8], h[:, ip + 9] = 0x45, 64, proto
        _put16(h, ip + 2, seg_len + 20)
        _put16(h, ip + 6, np.full(n, 0x4000))
        h[:, ip + 12 : ip + 16], h[:, ip + 16 : ip + 20] = src, dst
        _put16(h, ip + 10, _fold(_word_sum(h, ip, ip + 20)))
    l4 = ip + iplen
    if kind == KIND_ICMP:
        h[:, l4] = 8  # echo request (zeros payload, so the checksum covers only the header)
        _put16(h, l4 + 6, np.arange(n) & 0xFFFF)  # sequence number
        _put16(h, l4 + 2, _fold(_word_sum(h, l4, l4 + 8)))
        return h
    pseudo = _word_sum(h, ip + (8 if v6 else 12), l4) if v6 else _word_sum(h, ip + 12, ip + 20)
    pseudo = pseudo + np.uint64(proto) + seg_len
    _put16(h, l4, sport)
    _put16(h, l4 + 2, dport)
    if kind == KIND_UDP:
        _put16(h, l4 + 4, seg_len)
        csum = _fold(pseudo + _word_sum(h, l4, l4 + 8))
        _put16(h, l4 + 6, np.where(csum == 0, 0xFFFF, csum))
        return h
    _put32(h, l4 + 4, seq)
    _put32(h, l4 + 8, ack)
    _put16(h, l4 + 12, ((l4len // 4) << 12) | flags)
    _put16(h, l4 + 14, window)
    if syn_opts:
        h[:, l4 + 20 : l4 + 40] = np.frombuffer(SYN_OPTIONS, np.uint8)
        _put32(h, l4 + 28, ts_ms)  # tsval; tsecr left 0
    _put16(h, l4 + 16, _fold(pseudo + _word_sum(h, l4, l4 + l4len)))
    return h


def generate(n_packets: int, seed: int, snaplen: int = 262144, ipv6_share: float = 0.2, vlan_share: float = 0.1):
    """Return (pcap bytes, number of connections)."""
    cols, conns = simulate(n_packets, seed, ipv6_share, vlan_share)
    order = np.argsort(cols["t"], kind="stable")[:n_packets]
    cols = {k: v[order] for k, v in cols.items()}
    n = len(order)
    conn = cols["conn"]
    v6 = np.asarray(conns["v6"], dtype=bool)[conn]
    vlan = np.asarray(conns["vlan"], dtype=np.int64)[conn]
    fc = cols["from_client"].astype(bool)
    cport = np.asarray(conns["cport"], dtype=np.int64)[conn]
    sport = np.asarray(conns["sport"], dtype=np.int64)[conn]

    address_cache = {}

    def addresses(key, width):
        if (key, width) not in address_cache:
            address_cache[key, width] = _addresses(key, width)
        return address_cache[key, width]

    def _addresses(key, width):
        values = conns[key]
        if width == 4:
            return np.asarray([v if not six else 0 for v, six in zip(values, conns["v6"])], dtype=">u4").view(np.uint8).reshape(-1, 4)
        out = np.zeros((len(values), 16), dtype=np.uint8)
        out[:, 0:4] = np.frombuffer(bytes.fromhex("20010db8"), np.uint8)
        out[:, 7] = 1 if key == "server" else 2
        low = np.asarray([v if six else 0 for v, six in zip(values, conns["v6"])], dtype=">u8").view(np.uint8).reshape(-1, 8)
        out[:, 8:16] = low
        return out

    ts_ns = START_NS + np.round(cols["t"] * 1e9).astype(np.int64)
    payload = cols["payload"].astype(np.int64)
    shape_key = (cols["kind"] * 8 + v6 * 4 + (vlan >= 0) * 2 + cols["syn_options"].astype(np.int64))
    header_len = np.zeros(n, dtype=np.int64)
    headers = {}
    for key in np.unique(shape_key):
        idx = np.nonzero(shape_key == key)[0]
        kind, is6, tagged, opts = int(key) // 8, bool(key & 4), bool(key & 2), bool(key & 1)
        width = 16 if is6 else 4
        client_addr, server_addr = addresses("client", width)[conn[idx]], addresses("server", width)[conn[idx]]
        from_c = fc[idx][:, None]
        h = build_headers(kind, is6, tagged, opts,
                          np.where(from_c, client_addr, server_addr), np.where(from_c, server_addr, client_addr),
                          np.where(fc[idx], cport[idx], sport[idx]), np.where(fc[idx], sport[idx], cport[idx]),
                          cols["seq"][idx].astype(np.uint64), cols["ack"][idx].astype(np.uint64),
                          cols["flags"][idx].astype(np.int64), cols["window"][idx].astype(np.int64),
                          payload[idx], (ts_ns[idx] // 1_000_000) & 0xFFFFFFFF)
        if tagged:
            _put16(h, 14, vlan[idx])
        headers[int(key)] = (idx, h)
        header_len[idx] = h.shape[1]

    wire_len = header_len + payload
    cap_len = np.minimum(wire_len, snaplen)
    record_start = 24 + np.concatenate(([0], np.cumsum(16 + cap_len)[:-1]))
    total = int(24 + (16 + cap_len).sum())
    buf = np.zeros(total, dtype=np.uint8)
    buf[:24] = np.frombuffer(s.pcap_header(s.LINKTYPE_ETHERNET, snaplen=snaplen), np.uint8)

    record_headers = np.empty((n, 4), dtype="<u4")
    record_headers[:, 0] = ts_ns // 1_000_000_000
    record_headers[:, 1] = (ts_ns % 1_000_000_000) // 1000
    record_headers[:, 2], record_headers[:, 3] = cap_len, wire_len
    buf[record_start[:, None] + np.arange(16)] = record_headers.view(np.uint8).reshape(n, 16)
    for idx, h in headers.values():
        columns = np.arange(h.shape[1])
        inside = columns[None, :] < cap_len[idx][:, None]  # snaplen may cut into the headers
        positions = ((record_start[idx] + 16)[:, None] + columns)[inside]
        buf[positions] = h[inside]
    connections = int(np.unique(conn[cols["kind"] == KIND_TCP]).size)
    return buf.tobytes(), connections


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--snaplen", type=int, default=262144)
    parser.add_argument("--ipv6-share", type=float, default=0.2)
    parser.add_argument("--vlan-share", type=float, default=0.1)
    args = parser.parse_args(argv)
    data, connections = generate(args.packets, args.seed, args.snaplen, args.ipv6_share, args.vlan_share)
    with open(args.output, "wb") as f:
        f.write(data)
    print(f"{args.output}: {args.packets} packets, {connections} TCP connections, {len(data)} bytes")


if __name__ == "__main__":
    main()
