"""Datagram flows: the decoder's non-TCP IP rows (UDP, ICMP, ICMPv6, other IP protocols) grouped into flows
with Zeek's conn.log semantics (Zeek 9.x), vectorized with numpy.

``datagram_flows(pk, idle_timeout_ns, server_ports)`` takes the decoder columns of the status UDP / ICMP /
ICMP6 / OTHER_IP rows in frame order (frame, ts, status, vlan, ip_version, src, dst, ip_proto, sport, dport,
ip_len, payload_len; see docs/design.md) and returns one row per flow, in order of first packet.

The Zeek rules reproduced, and the Zeek source each comes from (github.com/zeek/zeek, src/ unless noted):

* Connection key (packet_analysis/protocol/ip/conn_key/IPBasedConnKey.cc ``InitTuple``): the addresses and
  "ports" of a packet plus the IP protocol number, made symmetric (the lower (address, port) first) except for
  one-way ICMP messages, whose key keeps the sender first, so that the same message type in the other direction
  is another connection. As for TCP, the outermost VLAN id joins the key only with ``vlan_aware`` (Zeek's
  default key, conn_key/fivetuple, has no VLAN; its vlan_fivetuple key is optional).
* Ports: UDP ports; ICMP (packet_analysis/protocol/icmp/ICMP.cc ``InitConnKey``, ``ICMP4_counterpart``,
  ``ICMP6_counterpart``): the source "port" is the message type and the destination "port" the counterpart
  type for request/reply types (echo request 8 <-> echo reply 0, timestamp 13 <-> 14, information 15 <-> 16,
  router solicitation 10 <-> advertisement 9, address mask 17 <-> 18; ICMPv6 128 <-> 129, 133 <-> 134,
  135 <-> 136, 130 <-> 131, 139 <-> 140, 144 <-> 145), else the message code (and the message is one-way).
  An echo request from A and the echo reply from B therefore share one key: A:8 -> B:0.
  Other IP protocols (packet_analysis/protocol/unknown_ip_transport, logged as proto ``unknown_transport``):
  both ports 0; the protocol number separates flows.
* Originator (packet_analysis/protocol/ip/IPBasedAnalyzer.cc ``NewConn``): the sender of the connection's first
  packet, except that UDP flips the roles when the first packet's source port is a likely server port and its
  destination port is not (udp/UDP.cc ``WantConnection``), unless the destination is the IPv4 broadcast address
  255.255.255.255. ICMP and other protocols never flip: an echo reply seen without its request makes a flow
  whose originator is the replier, logged with orig_p 0, resp_p 8 (Zeek does not look at request/reply types to
  choose the originator; only the key pairs them). A packet is from the originator when its source address and
  source "port" are the originator's (``AnalyzePacket``), so every packet of a one-way ICMP flow is.
* Timeouts (session/Session.cc ``InactivityTimer``; src/RunState.cc ``dispatch_packet`` expires timers before
  it processes each packet; scripts/base/init-bare.zeek: udp_inactivity_timeout, icmp_inactivity_timeout and
  unknown_ip_inactivity_timeout, all 1 min): a connection is removed when ``last_time + timeout <=
  network_time``, where last_time is the timestamp of its last packet (in capture order, not the largest) and
  network_time the largest timestamp seen so far in the capture. So a packet starts a new flow when the
  largest timestamp up to and including it is at least ``timeout`` past the previous packet of the flow (an
  exact gap of 60 s splits). A timeout of 0 never expires (Zeek: "If 0 secs, then don't time it out").
  network_time advances with every packet of the capture, TCP and non-IP ones too; pass pk["network_time"]
  (int64 ns, running maximum over all packets, per row) to follow that exactly, otherwise it is the running
  maximum of pk["ts"] (identical unless the capture's clock steps backwards). UDP, ICMP and unknown transports
  never detect reuse (analyzer/Analyzer.h ``IsReuse``: TCP only).
* Bytes: UDP counts the UDP length field minus 8 per packet (udp/UDP.cc ``DeliverPacket`` ->
  UDPSessionAdapter.cc ``UpdateLength``), ICMP the IP payload length minus 8 (icmp/ICMP.cc ``DeliverPacket``);
  the decoder puts these in payload_len. Other protocols count nothing (0). conn.log's orig_bytes/resp_bytes
  are these sums, written only when duration > 0 (scripts/base/protocols/conn/main.zeek ``set_conn``);
  orig_payload_bytes/resp_payload_bytes are the same sums, always present.
* Packets and IP bytes (analyzer/protocol/conn-size/ConnSize.cc): one per packet, plus the IP length fields
  (IPv4 total length, IPv6 40 + payload length).
* Duration (Conn.cc ``ConnVal``): last_time - start_time, the last packet's timestamp (capture order) minus the
  first's. ts_start / ts_end are the smallest / largest timestamps.
* conn_state (scripts/base/protocols/conn/main.zeek ``conn_state``): UDP SF (both sides sent), S0 (originator
  only), SHR (responder only; a flipped one-packet flow); ICMP and other protocols always OTH. An endpoint is
  active once it sent a packet (UDPSessionAdapter.cc / ICMPSessionAdapter.cc: length >= 0).
* history: UDP 'D' at the originator's first packet, 'd' at the responder's (udp/UDP.cc ``CheckHistory``), after
  '^' when the roles were flipped (Conn.cc ``FlipRoles``); so a flipped flow reads '^d' or '^dD'. ICMP and other
  protocols add no letters: history is '' (conn.log writes '-').
* Not connections: Zeek makes no connection of IP-in-IP (4, 41) and GRE (47) packets (tunnel analyzers, which
  analyse the inner packets; scripts/base/packet-protocols/ip/main.zeek), ESP (50, analysis stops there),
  no-next-header (59) and mobility (135) packets (packet_analysis/protocol/ip/IP.cc), nor, since the IGMP packet
  analyzer joined the default scripts (zeek/zeek PR #5095, Zeek 8.1: "It is not considered a transport
  analyzer. This means it does not generate conn.log entries"), of IGMP (2). Every other IP protocol goes to the
  unknown-transport analyzer. These rows get flow_of_row -1 (``NOT_A_CONNECTION_IP_PROTOS``).

Known differences from Zeek (each needs bytes the decoder does not read or columns not passed here):

* checksums are not verified (as ``zeek -C``): Zeek drops packets with a bad IPv4 header checksum, and keeps a
  UDP datagram with a bad checksum in the packet counts but not in bytes, history ('C') or last_time, and drops
  an ICMP message with a bad checksum altogether;
* an ICMP message captured shorter than its IP length is counted in bytes but not in pkts / ip_bytes by Zeek
  (ICMP.cc forwards it to ConnSize only when fully captured);
* Zeek drops packets whose IP length exceeds the wire length (IP.cc "truncated_IP_len"; the decoder flags them
  IP_LEN_EXCEEDS_WIRE) and reassembles IP fragments (the decoder keeps the first fragment, with the first
  fragment's ip_len, and drops the others; UDP bytes still match since they come from the UDP length field);
* a UDP length field below 8 makes Zeek add a negative length (and can leave the endpoint inactive); the decoder
  counts 0;
* application analyzers can change conn.log beyond this (service, and roles flipped by an analyzer).
"""

from __future__ import annotations

import numpy as np

from .flows import addr_words, group_rows, number_blocks
from .server_ports import is_likely_server_port

# decoder status codes of the rows this stage takes (fastflow.decode.Status)
ST_UDP, ST_ICMP, ST_ICMP6, ST_OTHER_IP = 1, 2, 3, 4
PROTO_NAMES = ("udp", "icmp", "icmp6", "other")

DEFAULT_IDLE_TIMEOUT_NS = {"udp": 60 * 10**9, "icmp": 60 * 10**9, "other": 60 * 10**9}

# IP protocols of which Zeek makes no connection (see the module docstring).
NOT_A_CONNECTION_IP_PROTOS = np.array([2, 4, 41, 47, 50, 59, 135], dtype=np.uint8)


def _counterparts(pairs) -> np.ndarray:
    table = np.full(256, -1, dtype=np.int16)
    for a, b in pairs:
        table[a], table[b] = b, a
    return table


# ICMP4_counterpart / ICMP6_counterpart of packet_analysis/protocol/icmp/ICMP.cc; -1: one-way
ICMP4_COUNTERPART = _counterparts([(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)])
ICMP6_COUNTERPART = _counterparts([(128, 129), (133, 134), (135, 136), (130, 131), (139, 140), (144, 145)])

# (flipped, pattern) -> history; pattern 0 none, 1 orig only, 2 resp only, 3 orig first, 4 resp first
_UDP_HISTORY = np.array(["", "D", "d", "Dd", "dD", "^", "^D", "^d", "^Dd", "^dD"])
# (orig active, resp active) -> conn_state (main.zeek conn_state, trans == udp)
_UDP_STATE = np.array(["OTH", "SHR", "S0", "SF"])  # index 2 * orig + resp


def _masked(values, present):
    return np.ma.masked_array(values, mask=~np.asarray(present, dtype=bool))


def _empty(n_rows: int) -> dict:
    z64 = np.zeros(0, np.uint64)
    return {
        "ts_start": np.zeros(0, np.int64), "ts_end": np.zeros(0, np.int64), "duration": np.zeros(0),
        "orig_addr": np.zeros((0, 16), np.uint8), "resp_addr": np.zeros((0, 16), np.uint8),
        "orig_p": np.zeros(0, np.uint16), "resp_p": np.zeros(0, np.uint16),
        "ip_version": np.zeros(0, np.uint8), "vlan": _masked(np.zeros(0, np.int32), np.zeros(0, bool)),
        "proto": np.zeros(0, "<U5"), "ip_proto": np.zeros(0, np.uint8),
        **{k: z64.copy() for k in ("orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes",
                                   "orig_payload_bytes", "resp_payload_bytes")},
        "orig_bytes": _masked(z64.copy(), np.zeros(0, bool)), "resp_bytes": _masked(z64.copy(), np.zeros(0, bool)),
        "conn_state": np.zeros(0, "<U3"), "history": np.zeros(0, "<U3"),
        "first_frame": z64.copy(), "last_frame": z64.copy(),
        "first_index": np.zeros(0, np.int64), "flow_of_row": np.full(n_rows, -1, np.int64),
    }


def datagram_flows(pk: dict, idle_timeout_ns: dict | None = None, server_ports=None,
                   vlan_aware: bool = False) -> dict:
    """One row per UDP / ICMP / ICMPv6 / other-IP flow, in order of first packet (see the module docstring).

    ``pk``: decoder columns of the non-TCP IP rows in frame order (optionally ``network_time``, see above).
    ``idle_timeout_ns``: {"udp": ns, "icmp": ns, "other": ns} (ICMPv6 uses "icmp"); missing keys take Zeek's
    60 s. ``server_ports``: UDP likely server ports (a tuple, set or array, e.g.
    fastflow.server_ports.ZEEK_LIKELY_SERVER_PORTS_UDP) or a dict {"udp": ports}; None: no port flips.

    Returns a dict of numpy arrays (nullable columns as np.ma masked arrays), plus ``first_index`` (int64,
    the pk row of each flow's first packet) and ``flow_of_row`` (int64 per pk row, -1 for rows of which Zeek
    makes no connection)."""
    timeouts = dict(DEFAULT_IDLE_TIMEOUT_NS)
    timeouts.update(idle_timeout_ns or {})
    status_all = np.asarray(pk["status"], dtype=np.uint8)
    n_all = status_all.size
    ip_proto_all = np.asarray(pk["ip_proto"], dtype=np.uint8)
    taken = (status_all >= ST_UDP) & (status_all <= ST_OTHER_IP)
    taken &= ~((status_all == ST_OTHER_IP) & np.isin(ip_proto_all, NOT_A_CONNECTION_IP_PROTOS))
    rows = np.flatnonzero(taken)
    if rows.size == 0:
        return _empty(n_all)
    n = rows.size

    status = status_all[rows]
    ip_proto = ip_proto_all[rows]
    ts = np.asarray(pk["ts"], dtype=np.int64)[rows]
    vlan = np.asarray(pk["vlan"], dtype=np.int32)[rows]
    src_all = np.asarray(pk["src"], dtype=np.uint8).reshape(-1, 16)
    dst_all = np.asarray(pk["dst"], dtype=np.uint8).reshape(-1, 16)
    sport = np.asarray(pk["sport"], dtype=np.uint16)[rows].astype(np.int32)
    dport = np.asarray(pk["dport"], dtype=np.uint16)[rows].astype(np.int32)
    if "network_time" in pk:
        net_time = np.asarray(pk["network_time"], dtype=np.int64)[rows]
    else:
        net_time = np.maximum.accumulate(np.asarray(pk["ts"], dtype=np.int64))[rows]

    is_udp = status == ST_UDP
    is_icmp4 = status == ST_ICMP
    is_icmp6 = status == ST_ICMP6
    is_other = status == ST_OTHER_IP

    # --- Zeek's connection tuple per packet -----------------------------------------------------------------
    icmp_type = sport & 0xFF
    counterpart = np.where(is_icmp4, ICMP4_COUNTERPART[icmp_type],
                           np.where(is_icmp6, ICMP6_COUNTERPART[icmp_type], -1)).astype(np.int32)
    one_way = (is_icmp4 | is_icmp6) & (counterpart < 0)
    kp_src = np.where(is_other, 0, sport)
    kp_dst = np.where(is_other, 0, np.where(is_icmp4 | is_icmp6, np.where(one_way, dport, counterpart), dport))

    s_hi, s_lo = addr_words(src_all)
    d_hi, d_lo = addr_words(dst_all)
    if n < n_all:
        s_hi, s_lo, d_hi, d_lo = s_hi[rows], s_lo[rows], d_hi[rows], d_lo[rows]
    src_first = one_way | (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (kp_src <= kp_dst))))
    keys = (vlan if vlan_aware else np.zeros(n, np.int32), ip_proto,
            np.where(src_first, s_hi, d_hi), np.where(src_first, s_lo, d_lo), np.where(src_first, kp_src, kp_dst),
            np.where(src_first, d_hi, s_hi), np.where(src_first, d_lo, s_lo), np.where(src_first, kp_dst, kp_src))
    order, key_start = group_rows(keys)

    # --- connections: a key's packets, split where the inactivity timer expired -----------------------------
    timeout = np.select([is_udp, is_icmp4 | is_icmp6], [timeouts["udp"], timeouts["icmp"]],
                        timeouts["other"]).astype(np.int64)
    ts_o = ts[order]
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = net_time[order][1:] - ts_o[:-1]   # network time now minus the flow's last_time
    t_o = timeout[order]
    conn_start = key_start | ((t_o > 0) & (gap >= t_o))
    flow, g, offsets, first = number_blocks(order, conn_start)    # g: rows grouped by flow, frame order inside
    counts = np.diff(offsets)
    starts, ends = offsets[:-1], offsets[1:]
    last = g[ends - 1]

    # --- roles ------------------------------------------------------------------------------------------
    if isinstance(server_ports, dict):  # {"udp": ports}: Zeek's ICMP and unknown transports never flip
        server_ports = server_ports.get("udp")
    ports = () if server_ports is None else server_ports
    broadcast = (d_hi[first] == 0) & (d_lo[first] == np.uint64(0x0000FFFFFFFFFFFF))
    flipped = (is_udp[first] & is_likely_server_port(sport[first], ports)
               & ~is_likely_server_port(dport[first], ports) & ~broadcast)
    src_first_pk, dst_first_pk = src_all[rows[first]], dst_all[rows[first]]
    orig_addr = np.where(flipped[:, None], dst_first_pk, src_first_pk)
    resp_addr = np.where(flipped[:, None], src_first_pk, dst_first_pk)
    orig_p = np.where(flipped, kp_dst[first], kp_src[first])
    resp_p = np.where(flipped, kp_src[first], kp_dst[first])
    o_hi = np.where(flipped, d_hi[first], s_hi[first])
    o_lo = np.where(flipped, d_lo[first], s_lo[first])
    gf = flow[g]
    fo = (s_hi[g] == o_hi[gf]) & (s_lo[g] == o_lo[gf]) & (kp_src[g] == orig_p[gf])   # AnalyzePacket's is_orig

    def per_flow_sum(values):
        cs = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(values, dtype=np.uint64, out=cs[1:])
        return cs[ends] - cs[starts]

    ip_len = np.asarray(pk["ip_len"], dtype=np.uint32)[rows][g]
    plen = np.asarray(pk["payload_len"], dtype=np.uint32)[rows][g]
    plen = np.where(is_other[g], 0, plen)
    ts_g = ts[g]
    frame = np.asarray(pk["frame"], dtype=np.uint64)[rows]

    out = {}
    out["ts_start"] = np.minimum.reduceat(ts_g, starts)
    out["ts_end"] = np.maximum.reduceat(ts_g, starts)
    duration_ns = ts[last] - ts[first]
    out["duration"] = duration_ns / 1e9
    out["orig_addr"] = orig_addr
    out["resp_addr"] = resp_addr
    out["orig_p"] = orig_p.astype(np.uint16)
    out["resp_p"] = resp_p.astype(np.uint16)
    out["ip_version"] = np.asarray(pk["ip_version"], dtype=np.uint8)[rows][first]
    out["vlan"] = _masked(vlan[first], vlan[first] >= 0)
    proto_code = status[first].astype(np.int64) - ST_UDP
    out["proto"] = np.array(PROTO_NAMES)[proto_code]
    out["ip_proto"] = ip_proto[first]
    out["orig_pkts"] = per_flow_sum(fo)
    out["resp_pkts"] = counts.astype(np.uint64) - out["orig_pkts"]
    out["orig_ip_bytes"] = per_flow_sum(np.where(fo, ip_len, 0))
    out["resp_ip_bytes"] = per_flow_sum(np.where(fo, 0, ip_len))
    out["orig_payload_bytes"] = per_flow_sum(np.where(fo, plen, 0))
    out["resp_payload_bytes"] = per_flow_sum(np.where(fo, 0, plen))
    has_duration = duration_ns > 0
    out["orig_bytes"] = _masked(out["orig_payload_bytes"].copy(), has_duration)
    out["resp_bytes"] = _masked(out["resp_payload_bytes"].copy(), has_duration)

    orig_active = out["orig_pkts"] > 0
    resp_active = out["resp_pkts"] > 0
    udp_flow = is_udp[first]
    out["conn_state"] = np.where(udp_flow, _UDP_STATE[2 * orig_active + resp_active], "OTH")
    # first packet of each side, as a position in the flow-grouped rows
    big = np.iinfo(np.int64).max
    pos = np.arange(n, dtype=np.int64)
    first_o = np.minimum.reduceat(np.where(fo, pos, big), starts)
    first_r = np.minimum.reduceat(np.where(fo, big, pos), starts)
    pattern = np.select([orig_active & resp_active & (first_o < first_r), orig_active & resp_active,
                         orig_active, resp_active], [3, 4, 1, 2], 0)
    out["history"] = np.where(udp_flow, _UDP_HISTORY[5 * flipped + pattern], "")
    out["first_frame"] = frame[first]
    out["last_frame"] = frame[last]
    out["first_index"] = rows[first].astype(np.int64)
    flow_of_row = np.full(n_all, -1, dtype=np.int64)
    flow_of_row[rows] = flow
    out["flow_of_row"] = flow_of_row
    return out


class DatagramStream:
    """``datagram_flows`` over a capture fed in chunks, keeping only the open flows (ext/_dgram.pyx).

    ``DatagramStream(idle_timeout_ns, server_ports, vlan_aware)`` takes datagram_flows' arguments.

    * ``feed(pk)``: the next rows in frame order (any status; the rows datagram_flows ignores are ignored),
      with ``network_time`` (int64 per row, the running maximum of ts over all packets; without it the
      running maximum of the ts fed so far stands in, as in datagram_flows).
    * ``expire(net_time)``: finalize every open flow that no packet at network time >= net_time can join
      (``last_time + timeout <= net_time``, timeout > 0).
    * ``finish()``: finalize every open flow (end of input).
    * ``drain()``: the flows finalized since the last drain, sorted by first_frame, with datagram_flows'
      columns except first_index and flow_of_row.
    * ``open_count``, ``min_open_first_frame()`` (2**64-1 when no flow is open).

    Whatever the split into chunks and the expire() calls between them, the drained rows sorted by
    first_frame equal datagram_flows over all the rows (tests/test_dgram_engine.py)."""

    def __init__(self, idle_timeout_ns: dict | None = None, server_ports=None, vlan_aware: bool = False):
        from . import _dgram

        timeouts = dict(DEFAULT_IDLE_TIMEOUT_NS)
        timeouts.update(idle_timeout_ns or {})
        if isinstance(server_ports, dict):
            server_ports = server_ports.get("udp")
        ports = () if server_ports is None else server_ports
        likely = is_likely_server_port(np.arange(65536, dtype=np.int32), ports).astype(np.uint8)
        not_conn = np.zeros(256, dtype=np.uint8)
        not_conn[NOT_A_CONNECTION_IP_PROTOS] = 1
        self._ok = _dgram.STATUS_OK
        self._engine = _dgram.DgramEngine(
            np.array([timeouts["udp"], timeouts["icmp"], timeouts["other"]]).astype(np.int64), likely,
            ICMP4_COUNTERPART, ICMP6_COUNTERPART, not_conn, bool(vlan_aware))
        self._net_time = np.iinfo(np.int64).min    # for feeds without network_time

    def _check(self, status) -> None:
        if status != self._ok:
            raise MemoryError("out of memory in the datagram flow table")

    def feed(self, pk: dict) -> None:
        ts = np.ascontiguousarray(pk["ts"], dtype=np.int64)
        if ts.size == 0:
            return
        if "network_time" in pk:
            net_time = np.ascontiguousarray(pk["network_time"], dtype=np.int64)
        else:
            net_time = np.maximum.accumulate(np.maximum(ts, self._net_time))
        self._net_time = max(self._net_time, int(net_time[-1]))
        status, _ = self._engine.feed(
            np.ascontiguousarray(pk["frame"], dtype=np.uint64), ts,
            np.ascontiguousarray(pk["status"], dtype=np.uint8),
            np.ascontiguousarray(pk["vlan"], dtype=np.int32),
            np.ascontiguousarray(pk["ip_version"], dtype=np.uint8),
            np.ascontiguousarray(pk["src"], dtype=np.uint8).reshape(-1),
            np.ascontiguousarray(pk["dst"], dtype=np.uint8).reshape(-1),
            np.ascontiguousarray(pk["ip_proto"], dtype=np.uint8),
            np.ascontiguousarray(pk["sport"], dtype=np.uint16),
            np.ascontiguousarray(pk["dport"], dtype=np.uint16),
            np.ascontiguousarray(pk["ip_len"], dtype=np.uint32),
            np.ascontiguousarray(pk["payload_len"], dtype=np.uint32), net_time)
        self._check(status)

    def expire(self, net_time: int) -> None:
        self._check(self._engine.expire(int(net_time)))

    def finish(self) -> None:
        self._check(self._engine.finish())

    @property
    def open_count(self) -> int:
        return self._engine.open_count

    def min_open_first_frame(self) -> int:
        return self._engine.min_open_first_frame()

    def snapshot_blocks(self):
        """The open flows as blocks of bytes in first-packet order (restore_blocks() takes them back, in a
        DatagramStream of the same fastflow build and settings); this engine is not changed."""
        yield from self._engine.snapshot_blocks()

    def restore_blocks(self, blocks, part: int = 0, parts: int = 1) -> None:
        """Open flows saved by snapshot_blocks(), in order, before the first feed(); only those of part
        `part` of `parts` (tcpflows.packet_parts) when parts > 1."""
        for block in blocks:
            self._check(self._engine.restore(np.frombuffer(block, dtype=np.uint8), part, parts))

    def drain(self) -> dict:
        raw = self._engine.drain()
        first_frame = raw["first_frame"]
        if first_frame.size > 1 and np.any(first_frame[1:] < first_frame[:-1]):
            order = np.argsort(first_frame, kind="stable")
            raw = {k: v[order] for k, v in raw.items()}
        duration_ns = raw["duration_ns"]
        has_duration = duration_ns > 0
        out = {"ts_start": raw["ts_start"], "ts_end": raw["ts_end"], "duration": duration_ns / 1e9}
        for k in ("orig_addr", "resp_addr", "orig_p", "resp_p", "ip_version"):
            out[k] = raw[k]
        out["vlan"] = _masked(raw["vlan"], raw["vlan"] >= 0)
        out["proto"] = np.array(PROTO_NAMES)[raw["status"].astype(np.int64) - ST_UDP]
        out["ip_proto"] = raw["ip_proto"]
        for k in ("orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes", "orig_payload_bytes",
                  "resp_payload_bytes"):
            out[k] = raw[k]
        out["orig_bytes"] = _masked(raw["orig_payload_bytes"].copy(), has_duration)
        out["resp_bytes"] = _masked(raw["resp_payload_bytes"].copy(), has_duration)
        out["conn_state"] = _UDP_STATE[raw["state_code"]]
        out["history"] = _UDP_HISTORY[raw["history_code"]]
        out["first_frame"] = raw["first_frame"]
        out["last_frame"] = raw["last_frame"]
        return out
