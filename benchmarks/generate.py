"""Write a large, realistic, seeded pcap for benchmarks, in bounded memory.

    python3 benchmarks/generate.py --packets 3000000 --seed 1 -o out.pcap [--snaplen 128]
                                   [--ipv6-share 0.2] [--vlan-share 0.1] [--chunk 100000]

Many short TCP connections (handshake with options, request/response data of mixed sizes, ACKs,
FIN close from either side, some RSTs, refused connections, SYN retransmissions, occasional client
port reuse), IPv4/IPv6, some VLAN-tagged, interleaved in time like a busy link, plus a little
UDP/ICMP noise. Same seed, same arguments -> same bytes (whatever --chunk is).

Client port reuse happens only after the earlier connection on that 4-tuple has ended (its last packet
is before the new SYN), as real stacks do: the new client ISN is either the old connection's final
client sequence number + 65537 (Linux TIME_WAIT reuse) or random. A fresh random 4-tuple is never one
that is still open.

Streaming: connections start in time order, and every packet of a connection is at or after its start,
so once the next connection's start time is known every pending packet before it is final. Packets are
simulated in Python into a pending buffer; every --chunk packets the buffer becomes a numpy structured
array, is merged (stable sort on time) with the not-yet-final packets carried from the previous chunk,
and its final prefix is assembled (one header template per packet shape, fields and checksums filled
column-wise) and written. Memory is bounded by the chunk size plus the packets of connections still in
flight, not by --packets. Payload bytes are zeros (they add nothing to the checksums); lengths are real.
"""

from __future__ import annotations

import argparse
import heapq
import io
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastflow import synth as s  # noqa: E402

START_NS = 1_717_200_000_000_000_000  # 2024-06-01 00:00:00 UTC
PACKETS_PER_SECOND = 150_000  # arrival rate of a busy link
SERVER_PORTS = [80, 443, 443, 443, 8080, 22, 25, 993]
PORT_REUSE_SHARE = 0.02  # share of connections that reuse the 4-tuple of an earlier, closed connection
REUSE_POOL = 500  # reuse picks among the most recently closed connections
TW_REUSE_ISN_STEP = 65537  # Linux: new ISN = TIME_WAIT snd_nxt + 65535 + 2
DEFAULT_CHUNK = 100_000

KIND_TCP, KIND_UDP, KIND_ICMP = 0, 1, 2
SYN_OPTIONS = s.opt_mss(1460) + s.opt_sack_permitted() + s.opt_timestamps(0, 0) + s.OPT_NOP + s.opt_wscale(7)
assert len(SYN_OPTIONS) == 20

# one row per packet; the connection's endpoints are repeated on each of its packets
ROW = np.dtype([
    ("t", "f8"), ("conn", "u8"), ("from_client", "?"), ("flags", "u2"), ("seq", "u4"), ("ack", "u4"),
    ("window", "u2"), ("payload", "u4"), ("kind", "u1"), ("syn_options", "?"), ("first", "?"),
    ("client", "u8"), ("server", "u8"), ("cport", "u2"), ("sport", "u2"), ("v6", "?"), ("vlan", "i2"),
])


class Endpoints(tuple):
    """(client, server, cport, sport, v6, vlan) of one connection."""

    @property
    def key(self):  # the 4-tuple (and family) that identifies the connection on the wire
        return self[:5]


def simulate_connection(out: list, rng: random.Random, conn: int, t: float, mss: int, ends: Endpoints,
                        c_isn: int | None = None) -> tuple[float, int]:
    """Append one connection's packets starting at time t (seconds) to out as row tuples.

    Returns (time of its last packet, the client's final sequence number)."""
    rtt = rng.uniform(0.0005, 0.15)
    random_isn_c, s_isn = rng.getrandbits(32), rng.getrandbits(32)
    if c_isn is None:
        c_isn = random_isn_c
    c_win, s_win = rng.choice([502, 1024, 2048, 64240]), rng.choice([227, 509, 1026, 65160])
    S, A, F, R, P = s.SYN, s.ACK, s.FIN, s.RST, s.PSH
    client, server, cport, sport, v6, vlan = ends
    M = 0xFFFFFFFF
    last = t

    def add(t, from_client, flags, seq, ack, window, payload, syn_options=False, first=False):
        nonlocal last
        if t > last:
            last = t
        out.append((t, conn, from_client, flags, seq & M, ack & M, window, payload, KIND_TCP, syn_options, first,
                    client, server, cport, sport, v6, vlan))

    first = True
    for retry in range(rng.choices([0, 1, 2], [0.94, 0.05, 0.01])[0]):  # lost SYNs, retransmitted after 1 s, 2 s
        add(t, True, S, c_isn, 0, 64240, 0, True, first)
        first = False
        t += 1.0 * (retry + 1)
    add(t, True, S, c_isn, 0, 64240, 0, True, first)
    t += rtt / 2
    if rng.random() < 0.05:  # refused: RST-ACK to the SYN
        add(t, False, R | A, 0, c_isn + 1, 0, 0)
        return last, c_isn + 1
    add(t, False, S | A, s_isn, c_isn + 1, 65160, 0, True)
    t += rtt / 2
    c_seq, s_seq = c_isn + 1, s_isn + 1
    add(t, True, A, c_seq, s_seq, c_win, 0)

    for _ in range(rng.choices([1, 2, 3, 5], [0.6, 0.2, 0.15, 0.05])[0]):
        request = int(rng.choice([40, 80, 200, 350, 520, 900, 1300]) + rng.randrange(40))
        t += rng.uniform(0.00001, 0.002)
        add(t, True, P | A, c_seq, s_seq, c_win, request)
        c_seq += request
        t += rtt / 2 + rng.uniform(0.00005, 0.02)
        response = min(int(rng.lognormvariate(7.0, 1.6)), 400_000)
        unacked = 0
        while response > 0:
            size = min(mss, response)
            response -= size
            add(t, False, (P | A) if response == 0 else A, s_seq, c_seq, s_win, size)
            s_seq += size
            unacked += 1
            t += rng.uniform(0.000005, 0.0003)
            if unacked == 2 or response == 0:  # delayed ACK: every second segment
                add(t + rtt / 2, True, A, c_seq, s_seq, c_win, 0)
                unacked = 0
        t += rtt / 2

    t += rng.uniform(0.0001, 0.5)
    ending = rng.random()
    if ending < 0.06:  # abort
        client_resets = rng.random() < 0.5
        add(t, client_resets, R | A, c_seq if client_resets else s_seq, s_seq if client_resets else c_seq, 0, 0)
        return last, c_seq
    client_closes = ending < 0.53
    first_seq, second_seq = (c_seq, s_seq) if client_closes else (s_seq, c_seq)
    wins = (c_win, s_win) if client_closes else (s_win, c_win)
    add(t, client_closes, F | A, first_seq, second_seq, wins[0], 0)
    t += rtt / 2
    add(t, not client_closes, F | A, second_seq, first_seq + 1, wins[1], 0)
    t += rtt / 2
    add(t, client_closes, A, first_seq + 1, second_seq + 1, wins[0], 0)
    return last, c_seq + 1


def simulate(n_packets: int, seed: int, ipv6_share: float = 0.2, vlan_share: float = 0.1,
             chunk: int = DEFAULT_CHUNK):
    """Yield structured arrays (dtype ROW) of final packets in time order, n_packets rows in all."""
    chunk = max(1000, min(chunk, n_packets))  # the chunk size does not change the output
    rng = random.Random(seed)
    servers4 = [rng.getrandbits(32) | 0x0A000000 for _ in range(200)]
    servers6 = [rng.getrandbits(64) for _ in range(200)]
    open_heap: list[tuple] = []  # (end time, conn, endpoints, final client seq) of connections not yet ended
    open_keys: dict[tuple, int] = {}  # 4-tuple -> number of open connections on it (0 or 1)
    closed: list[tuple] = []  # (endpoints, final client seq) of recently ended connections, oldest first
    pending: list[tuple] = []
    carry = np.empty(0, dtype=ROW)
    emitted = 0
    conn = 0
    t = 0.0
    mean_gap = 14.0 / PACKETS_PER_SECOND  # about 14 packets per connection
    while True:
        while open_heap and open_heap[0][0] < t:  # ended strictly before this start: reusable
            _, _, ends, final_seq = heapq.heappop(open_heap)
            del open_keys[ends.key]
            closed.append((ends, final_seq))
            if len(closed) > REUSE_POOL:
                del closed[0]
        c_isn = None
        ends = None
        if closed and rng.random() < PORT_REUSE_SHARE:  # client port reuse: 4-tuple of an ended connection
            old, final_seq = closed.pop(rng.randrange(len(closed)))
            if old.key not in open_keys:  # a fresh tuple may have taken it again meanwhile
                ends = old
                c_isn = (final_seq + TW_REUSE_ISN_STEP) & 0xFFFFFFFF if rng.random() < 0.5 else None
        while ends is None:
            v6 = rng.random() < ipv6_share
            client = rng.getrandbits(64) if v6 else (0xC0A80000 | rng.getrandbits(16))
            server = rng.choice(servers6 if v6 else servers4)
            cport, sport = rng.randrange(1024, 65536), rng.choice(SERVER_PORTS)
            vlan = rng.randrange(1, 4095) if rng.random() < vlan_share else -1
            ends = Endpoints((client, server, cport, sport, v6, vlan))
            if ends.key in open_keys:  # never collide with a connection still open
                ends = None
        end, final_seq = simulate_connection(pending, rng, conn, t, 1440 if ends[4] else 1460, ends, c_isn)
        heapq.heappush(open_heap, (end, conn, ends, final_seq))
        open_keys[ends.key] = 1
        conn += 1
        if rng.random() < 0.03:  # noise: a DNS-like UDP pair or an ICMP echo, IPv4 only
            kind = rng.choice([KIND_UDP, KIND_ICMP])
            client, cport = 0xC0A80000 | rng.getrandbits(16), rng.randrange(1024, 65536)
            for dt, fc, size in ((0.0001, True, rng.randrange(20, 120)), (0.02, False, rng.randrange(40, 500))):
                pending.append((t + dt, conn, fc, 0, 0, 0, 0, size, kind, False, fc, client, 0x08080808, cport, 53,
                                False, -1))
            conn += 1
        t += rng.expovariate(1.0 / mean_gap)
        if len(pending) >= chunk:
            # every packet from now on is at or after t (the next connection's start): those before are final
            rows = np.concatenate([carry, np.array(pending, dtype=ROW)])
            pending.clear()
            rows = rows[np.argsort(rows["t"], kind="stable")]
            final = int(np.searchsorted(rows["t"], t, side="left"))
            out, carry = rows[:final], rows[final:]
            if emitted + len(out) >= n_packets:
                yield out[: n_packets - emitted]
                return
            emitted += len(out)
            if len(out):
                yield out


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


def build_headers(kind, v6, vlan, syn_opts, src, dst, sport, dport, seq, ack, flags, window, payload, ts_ms, icmp_seq):
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
        _put16(h, l4 + 6, icmp_seq & 0xFFFF)  # sequence number: the packet's index in the file
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


def _addresses(values: np.ndarray, v6: bool, server: bool) -> np.ndarray:
    """(n, 4) or (n, 16) uint8 addresses from the row's integer address field."""
    if not v6:
        return values.astype(">u4").view(np.uint8).reshape(-1, 4)
    out = np.zeros((len(values), 16), dtype=np.uint8)
    out[:, 0:4] = np.frombuffer(bytes.fromhex("20010db8"), np.uint8)
    out[:, 7] = 1 if server else 2
    out[:, 8:16] = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return out


def assemble(rows: np.ndarray, first_index: int, snaplen: int) -> bytes:
    """The pcap records (no file header) of rows, the first of which is packet first_index of the file."""
    n = len(rows)
    ts_ns = START_NS + np.round(rows["t"] * 1e9).astype(np.int64)
    payload = rows["payload"].astype(np.int64)
    fc = rows["from_client"]
    vlan = rows["vlan"].astype(np.int64)
    shape_key = rows["kind"].astype(np.int64) * 8 + rows["v6"] * 4 + (vlan >= 0) * 2 + rows["syn_options"]
    header_len = np.zeros(n, dtype=np.int64)
    headers = []
    for key in np.unique(shape_key):
        idx = np.nonzero(shape_key == key)[0]
        kind, is6, tagged, opts = int(key) // 8, bool(key & 4), bool(key & 2), bool(key & 1)
        r = rows[idx]
        client_addr, server_addr = _addresses(r["client"], is6, False), _addresses(r["server"], is6, True)
        from_c = r["from_client"][:, None]
        cport, sport = r["cport"].astype(np.int64), r["sport"].astype(np.int64)
        h = build_headers(kind, is6, tagged, opts,
                          np.where(from_c, client_addr, server_addr), np.where(from_c, server_addr, client_addr),
                          np.where(fc[idx], cport, sport), np.where(fc[idx], sport, cport),
                          r["seq"].astype(np.uint64), r["ack"].astype(np.uint64),
                          r["flags"].astype(np.int64), r["window"].astype(np.int64),
                          payload[idx], (ts_ns[idx] // 1_000_000) & 0xFFFFFFFF, first_index + idx)
        if tagged:
            _put16(h, 14, vlan[idx])
        headers.append((idx, h))
        header_len[idx] = h.shape[1]

    wire_len = header_len + payload
    cap_len = np.minimum(wire_len, snaplen)
    record_start = np.concatenate(([0], np.cumsum(16 + cap_len)[:-1]))
    buf = np.zeros(int((16 + cap_len).sum()), dtype=np.uint8)
    record_headers = np.empty((n, 4), dtype="<u4")
    record_headers[:, 0] = ts_ns // 1_000_000_000
    record_headers[:, 1] = (ts_ns % 1_000_000_000) // 1000
    record_headers[:, 2], record_headers[:, 3] = cap_len, wire_len
    buf[record_start[:, None] + np.arange(16)] = record_headers.view(np.uint8).reshape(n, 16)
    for idx, h in headers:
        columns = np.arange(h.shape[1])
        inside = columns[None, :] < cap_len[idx][:, None]  # snaplen may cut into the headers
        positions = ((record_start[idx] + 16)[:, None] + columns)[inside]
        buf[positions] = h[inside]
    return buf.tobytes()


def write(f, n_packets: int, seed: int, snaplen: int = 262144, ipv6_share: float = 0.2, vlan_share: float = 0.1,
          chunk: int = DEFAULT_CHUNK) -> tuple[int, int, int]:
    """Write the pcap to the binary file f. Returns (packets, TCP connections, bytes)."""
    header = s.pcap_header(s.LINKTYPE_ETHERNET, snaplen=snaplen)
    f.write(header)
    written, connections, size = 0, 0, len(header)
    for rows in simulate(n_packets, seed, ipv6_share, vlan_share, chunk):
        data = assemble(rows, written, snaplen)
        f.write(data)
        written += len(rows)
        size += len(data)
        connections += int(np.count_nonzero(rows["first"] & (rows["kind"] == KIND_TCP)))
    return written, connections, size


def generate(n_packets: int, seed: int, snaplen: int = 262144, ipv6_share: float = 0.2, vlan_share: float = 0.1,
             chunk: int = DEFAULT_CHUNK):
    """Return (pcap bytes, number of TCP connections) -- in memory, for small captures and tests."""
    f = io.BytesIO()
    _, connections, _ = write(f, n_packets, seed, snaplen, ipv6_share, vlan_share, chunk)
    return f.getvalue(), connections


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--snaplen", type=int, default=262144)
    parser.add_argument("--ipv6-share", type=float, default=0.2)
    parser.add_argument("--vlan-share", type=float, default=0.1)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="packets simulated per chunk (memory bound)")
    args = parser.parse_args(argv)
    tmp = args.output + ".part"
    with open(tmp, "wb") as f:
        packets, connections, size = write(f, args.packets, args.seed, args.snaplen, args.ipv6_share,
                                           args.vlan_share, args.chunk)
    os.replace(tmp, args.output)
    print(f"{args.output}: {packets} packets, {connections} TCP connections, {size} bytes")


if __name__ == "__main__":
    main()
