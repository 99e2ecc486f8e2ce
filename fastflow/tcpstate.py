"""Zeek's view of each TCP connection: orientation, conn_state, history, orig/resp bytes, duration;
and the per-segment analysis tags (retransmission, keepalive, zero window, duplicate ACK).

The per-packet rules live in ext/_tcpstate.pyx (a sequential pass, see its docstring); this module
prepares its grouped columns, decides Zeek's port heuristic per connection, and maps its status code to
an exception. docs/zeek.md describes every rule and where fastflow deviates from Zeek.
"""
from __future__ import annotations

import numpy as np

from . import _tcpstate
from .decode import PFlag
from .flows import SYN
from .server_ports import ZEEK_LIKELY_SERVER_PORTS_TCP, is_likely_server_port

CONN_STATES = _tcpstate.CONN_STATES
ENDPOINT_STATES = _tcpstate.STATE_NAMES

#: bits of the per-segment ``analysis`` byte, by tag name (docs/schema.md defines each)
ANALYSIS_TAGS = {"retransmission": 1, "keepalive": 2, "zero_window": 4, "dup_ack": 8}


def tcp_state(seg: dict, conn: dict, server_ports=ZEEK_LIKELY_SERVER_PORTS_TCP) -> dict:
    """Run Zeek's state machine over the connections of ``flows.assign_connections``.

    ``conn["from_orig"]`` must mean "sent by the connection's first sender" (as assign_connections gives
    it). Returns per-segment ``from_orig`` (final, frame order) and ``analysis`` (bits of ANALYSIS_TAGS),
    and per-connection arrays (conn_id order): ``flipped``, ``conn_state`` (codes into CONN_STATES),
    ``orig_state``/``resp_state`` (codes into ENDPOINT_STATES), ``orig_size``/``resp_size`` (Zeek's
    orig_bytes/resp_bytes), ``last_time`` (ns, Zeek's end of the connection for its duration) and
    ``history_offsets``/``history_data`` (connection k's history is data[offsets[k]:offsets[k+1]])."""
    order, offsets = conn["order"], conn["offsets"]
    from_first = np.asarray(conn["from_orig"])[order]
    flags = np.ascontiguousarray(np.asarray(seg["tcp_flags"], dtype=np.uint16)[order])

    # TCPAnalyzer::WantConnection: a connection that does not open with a pure SYN is flipped when
    # its first packet comes from a likely server port (both likely: the lower port, never on a SYN-ACK)
    first = order[offsets[:-1]]
    sport = np.asarray(seg["sport"], dtype=np.uint16)[first]
    dport = np.asarray(seg["dport"], dtype=np.uint16)[first]
    first_is_syn = (flags[offsets[:-1]] & SYN) != 0
    src_srv = is_likely_server_port(sport, server_ports)
    dst_srv = is_likely_server_port(dport, server_ports)
    port_flip = src_srv & np.where(dst_srv, ~first_is_syn & (sport < dport), True)

    status, out = _tcpstate.zeek_tcp(
        np.ascontiguousarray(offsets, dtype=np.int64), flags,
        np.ascontiguousarray(np.asarray(seg["seq"], dtype=np.uint32)[order]),
        np.ascontiguousarray(np.asarray(seg["ack"], dtype=np.uint32)[order]),
        np.ascontiguousarray(np.asarray(seg["claimed_len"], dtype=np.uint32)[order]),
        np.ascontiguousarray(np.asarray(seg["window"], dtype=np.uint16)[order]),
        np.ascontiguousarray(np.asarray(seg["ts"], dtype=np.int64)[order]),
        np.ascontiguousarray(from_first, dtype=np.uint8),
        np.ascontiguousarray((np.asarray(seg["pflags"], dtype=np.uint8)[order] & PFlag.BAD_CHECKSUM) != 0, dtype=np.uint8),
        np.ascontiguousarray(port_flip, dtype=np.uint8))
    if status != _tcpstate.STATUS_OK:
        raise MemoryError("out of memory while building connection histories")

    flipped = out.pop("orig_is_first") == 0
    n = order.size
    from_orig = np.empty(n, dtype=bool)
    gid = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    from_orig[order] = from_first != flipped[gid]
    analysis = np.empty(n, dtype=np.uint8)
    analysis[order] = out.pop("analysis")
    out.update(from_orig=from_orig, analysis=analysis, flipped=flipped)
    return out


def history_strings(state: dict) -> np.ndarray:
    """The per-connection history texts as an array of str."""
    data = np.frombuffer(state["history_data"], dtype=np.uint8)
    offsets = state["history_offsets"]
    lengths = np.diff(offsets)
    n = lengths.size
    width = int(lengths.max()) if n else 1
    if width > 64:  # a pathological history (e.g. a RST storm): one row each rather than a wide matrix
        raw = state["history_data"]
        return np.array([raw[a:b].decode("ascii") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())],
                        dtype=object)
    # scatter into a fixed-width byte matrix: no per-row Python
    matrix = np.zeros((n, max(width, 1)), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    matrix[rows, np.arange(data.size) - np.repeat(offsets[:-1], lengths)] = data
    return matrix.view(f"S{max(width, 1)}").ravel().astype(str)
