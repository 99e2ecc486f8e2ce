"""Per-connection summary (the flows table), vectorized over connections.

``summarize(seg, conn, tags)`` returns one row per connection in conn_id
order: a dict of numpy arrays; nullable columns are ``np.ma`` masked arrays
(mask True = null), categorical columns are arrays of str.

Choices worth knowing:

* ``ts_start`` / ``ts_end`` are the minimum / maximum timestamp of the
  connection's segments (robust to clocks stepping backwards);
  ``first_frame`` / ``last_frame`` follow frame order.  ``duration`` is
  Zeek's: from the first packet to the last one sent before both sides had
  closed (so not the final ACK of a FIN exchange).
* ``handshake`` follows the number-checked steps of tagging.py: ``complete``
  (steps 1-3), ``syn_synack`` (1-2), ``refused`` (step 1, no step 2, and the
  responder's first segment after the SYN is a RST), ``syn_only`` (step 1
  only), ``partial`` (no SYN
  from the originator: the capture started after it).
* ``rtt_syn_synack`` is measured from the LAST originator SYN sent before the
  step-2 SYN-ACK (a retransmitted SYN with the same ISN restarts the clock,
  since the SYN-ACK most likely answers it); ``rtt_synack_ack`` likewise from
  the last responder SYN-ACK before the step-3 ACK.  Both are masked (data NaN)
  when not measurable.
* MSS / window scale / SACK-permitted come from the originator's step-1 SYN and
  the responder SYN-ACK that gave its ISN.
* ``close``: refused (handshake refused) > fin / simultaneous_fin (a FIN from
  each side before any RST; a RST after both FINs does not change it) > rst >
  half_closed (one side's FIN only) > none.  ``teardown_segments`` is set only
  for a fin / simultaneous_fin close whose four steps were all seen.
* ``conn_state``, ``history``, ``orig_bytes`` / ``resp_bytes`` (Zeek's
  sequence-number sizes, null unless duration > 0) and the orientation come
  from tcpstate.py, Zeek's state machine.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .decode import PFlag
from .flows import (
    ACK,
    DEFAULT_IDLE_TIMEOUT_NS,
    RST,
    SYN,
    assign_connections,
    canonical_key,
    first_in_group,
    last_before,
)
from .schema import fixed_width_array, fixed_width_values, null_mask, string_array
from .server_ports import ZEEK_LIKELY_SERVER_PORTS_TCP
from .tagging import SEGMENT_COLUMNS, tag_segments
from .tcpstate import ANALYSIS_TAGS, CONN_STATES, history_strings, tcp_state

HANDSHAKE_VALUES = ("complete", "syn_synack", "syn_only", "refused", "partial")
CLOSE_VALUES = ("fin", "simultaneous_fin", "half_closed", "rst", "refused", "none")


def _choose(conds, names, default):
    """First matching name per row (like np.select) as a '<U' array; selects
    small integer codes and looks them up, avoiding per-row Python strings."""
    codes = np.select(conds, np.arange(len(names), dtype=np.int8), default=len(names))
    return np.array(list(names) + [default])[codes]


def _masked(values, present):
    return np.ma.masked_array(values, mask=~np.asarray(present, dtype=bool))


def _at(grouped, positions, fill=0):
    """grouped[positions] with ``fill`` where position is -1."""
    return np.where(positions >= 0, grouped[np.maximum(positions, 0)], fill)


def summarize(seg: dict, conn: dict, tags: dict, state: dict) -> dict:
    order = conn["order"]
    offsets = conn["offsets"]
    n_conns = conn["n_conns"]
    ev = tags["conn_events"]
    starts = offsets[:-1]

    g = np.asarray(conn["conn_id"])[order].astype(np.int64)
    fo = np.asarray(conn["from_orig"])[order]
    flags = np.asarray(seg["tcp_flags"], dtype=np.uint16)[order]
    ts = np.asarray(seg["ts"], dtype=np.int64)[order]
    plen = np.asarray(seg["payload_len"], dtype=np.uint32)[order]
    pos = np.arange(order.size, dtype=np.int64)

    if n_conns == 0:
        return _empty_flows()

    is_syn = (flags & SYN) != 0
    has_ack = (flags & ACK) != 0
    is_rst = (flags & RST) != 0
    pure_syn = is_syn & ~has_ack
    synack = is_syn & has_ack

    def per_conn_sum(values):  # prefix-sum differences: faster than reduceat on many small groups
        cs = np.zeros(order.size + 1, dtype=np.uint64)
        np.cumsum(values, dtype=np.uint64, out=cs[1:])
        return cs[offsets[1:]] - cs[starts]

    out = {"conn_id": np.arange(n_conns, dtype=np.uint64)}
    out["ts_start"] = np.minimum.reduceat(ts, starts)
    out["ts_end"] = np.maximum.reduceat(ts, starts)
    out["duration"] = (state["last_time"] - ts[starts]) / 1e9

    first = order[starts]
    first_fo = fo[starts]
    src = np.asarray(seg["src"], dtype=np.uint8)[first]
    dst = np.asarray(seg["dst"], dtype=np.uint8)[first]
    sport = np.asarray(seg["sport"], dtype=np.uint16)[first]
    dport = np.asarray(seg["dport"], dtype=np.uint16)[first]
    out["orig_addr"] = np.where(first_fo[:, None], src, dst)
    out["resp_addr"] = np.where(first_fo[:, None], dst, src)
    out["orig_p"] = np.where(first_fo, sport, dport).astype(np.uint16)
    out["resp_p"] = np.where(first_fo, dport, sport).astype(np.uint16)
    out["ip_version"] = np.asarray(seg["ip_version"], dtype=np.uint8)[first]
    out["proto"] = np.full(n_conns, "tcp")
    out["ip_proto"] = np.full(n_conns, 6, dtype=np.uint8)
    vlan = np.asarray(seg["vlan"], dtype=np.int32)[first]
    out["vlan"] = _masked(vlan, vlan >= 0)

    # Zeek's counts leave out packets dropped for a bad checksum (only found with verify_checksums)
    counted = (np.asarray(seg["pflags"], dtype=np.uint8)[order] & PFlag.BAD_CHECKSUM) == 0
    out["orig_pkts"] = per_conn_sum(fo & counted)
    out["resp_pkts"] = per_conn_sum(~fo & counted)
    out["orig_payload_bytes"] = per_conn_sum(np.where(fo, plen, 0))
    out["resp_payload_bytes"] = per_conn_sum(np.where(fo, 0, plen))
    ip_len = np.asarray(seg["ip_len"], dtype=np.uint32)[order]
    out["orig_ip_bytes"] = per_conn_sum(np.where(fo & counted, ip_len, 0))
    out["resp_ip_bytes"] = per_conn_sum(np.where(~fo & counted, ip_len, 0))
    productive = out["duration"] > 0     # Zeek's set_conn logs the sizes only then
    out["orig_bytes"] = _masked(state["orig_size"], productive)
    out["resp_bytes"] = _masked(state["resp_size"], productive)

    # --- handshake -------------------------------------------------------------
    s1, s2, s3 = ev["syn"], ev["synack"], ev["handshake_ack"]
    has_s1, has_s2, has_s3 = s1 >= 0, s2 >= 0, s3 >= 0
    s1_at = np.where(has_s1, s1, np.iinfo(np.int64).max)
    # Refused: the responder's first segment after the SYN is a RST.
    resp_answer = first_in_group(g, ~fo & (pos > s1_at[g]), n_conns)
    resp_rst_after_syn = _at(is_rst, resp_answer, False)
    out["handshake"] = _choose([~has_s1, has_s3, has_s2, resp_rst_after_syn],
                               ["partial", "complete", "syn_synack", "refused"], "syn_only")
    out["syn_ts"] = _masked(_at(ts, s1), has_s1)
    out["synack_ts"] = _masked(_at(ts, s2), has_s2)
    out["handshake_ack_ts"] = _masked(_at(ts, s3), has_s3)
    out["orig_isn"] = _masked(ev["orig_isn"].astype(np.uint32), ev["has_orig_isn"])
    out["resp_isn"] = _masked(ev["resp_isn"].astype(np.uint32), ev["has_resp_isn"])
    orig_syn_mask = pure_syn & fo
    resp_synack_mask = synack & ~fo
    out["syn_count"] = per_conn_sum(orig_syn_mask).astype(np.uint32)
    out["synack_count"] = per_conn_sum(resp_synack_mask).astype(np.uint32)

    # RTTs from the last SYN (SYN-ACK) sent before the answer.
    last_syn = last_before(orig_syn_mask)
    last_synack = last_before(resp_synack_mask)
    syn_before_s2 = _at(last_syn, s2, -1)
    ok1 = has_s2 & (syn_before_s2 >= starts)
    rtt1 = np.where(ok1, (_at(ts, s2) - _at(ts, syn_before_s2)) / 1e9, np.nan)
    synack_before_s3 = _at(last_synack, s3, -1)
    ok2 = has_s3 & (synack_before_s3 >= starts)
    rtt2 = np.where(ok2, (_at(ts, s3) - _at(ts, synack_before_s3)) / 1e9, np.nan)
    out["rtt_syn_synack"] = _masked(rtt1, ok1)
    out["rtt_synack_ack"] = _masked(rtt2, ok2)
    out["irtt"] = _masked(rtt1 + rtt2, ok1 & ok2)

    # TCP options of each side's opening segment.
    mss = np.asarray(seg["mss"], dtype=np.uint16)[order]
    wscale = np.asarray(seg["wscale"], dtype=np.int16)[order]
    sack_ok = np.asarray(seg["sack_ok"], dtype=np.uint8)[order] != 0
    r_open = ev["resp_isn_segment"]
    for side, p in (("orig", s1), ("resp", r_open)):
        m = _at(mss, p).astype(np.uint16)
        w = _at(wscale, p, -1).astype(np.int16)
        out[f"{side}_mss"] = _masked(m, (p >= 0) & (m > 0))
        out[f"{side}_wscale"] = _masked(w, (p >= 0) & (w >= 0))
        out[f"{side}_sack_ok"] = _at(sack_ok, p, False).astype(bool)

    # --- close -----------------------------------------------------------------
    t1, t3, t4 = ev["fin1"], ev["fin2"], ev["fin2_ack"]
    t2, combined = ev["fin1_ack"], ev["fin_combined"]
    has_t1, has_t3 = t1 >= 0, t3 >= 0
    first_rst = first_in_group(g, is_rst, n_conns)
    has_rst = first_rst >= 0
    orig_rst = per_conn_sum(is_rst & fo) > 0
    resp_rst = per_conn_sum(is_rst & ~fo) > 0
    fins_before_rst = has_t3 & (~has_rst | (first_rst > t3))
    refused = has_s1 & ~has_s2 & resp_rst_after_syn  # handshake == "refused"
    out["close"] = _choose([refused, fins_before_rst & ev["simultaneous_fin"], fins_before_rst, has_rst, has_t1],
                           ["refused", "simultaneous_fin", "fin", "rst", "half_closed"], "none")
    fin_first = has_t1 & (~has_rst | (t1 < first_rst))
    initiator_is_orig = np.where(fin_first, ev["closer_is_orig"], _at(fo, first_rst, False))
    out["close_initiator"] = _masked(np.where(initiator_is_orig, "orig", "resp"), fin_first | has_rst)
    out["rst_by"] = _masked(
        np.where(orig_rst & resp_rst, "both", np.where(orig_rst, "orig", "resp")), has_rst)
    out["fin1_ts"] = _masked(_at(ts, t1), has_t1)
    out["fin2_ts"] = _masked(_at(ts, t3), has_t3)
    out["rst_ts"] = _masked(_at(ts, first_rst), has_rst)
    # Only a FIN close counts (a RST before the second FIN makes it an abort).
    fin_close = fins_before_rst & ~refused
    teardown_done = fin_close & has_t1 & has_t3 & (t4 >= 0) & ((t2 >= 0) | combined)
    out["teardown_segments"] = _masked(np.where(combined, 3, 4).astype(np.uint8), teardown_done)

    # --- Zeek's state machine ----------------------------------------------------
    out["conn_state"] = np.asarray(CONN_STATES)[state["conn_state"]]
    out["history"] = history_strings(state)
    analysis = state["analysis"][order]
    for side, mask in (("orig", fo), ("resp", ~fo)):
        out[f"{side}_retransmissions"] = per_conn_sum(
            mask & ((analysis & ANALYSIS_TAGS["retransmission"]) != 0)).astype(np.uint32)

    frame = np.asarray(seg["frame"], dtype=np.uint64)[order]
    out["first_frame"] = frame[starts]
    out["last_frame"] = frame[offsets[1:] - 1]
    return out


def _empty_flows():
    e = np.zeros(0)
    return {"conn_id": np.zeros(0, np.uint64), "ts_start": np.zeros(0, np.int64),
            "ts_end": np.zeros(0, np.int64), "duration": e,
            "orig_addr": np.zeros((0, 16), np.uint8), "resp_addr": np.zeros((0, 16), np.uint8),
            "orig_p": np.zeros(0, np.uint16), "resp_p": np.zeros(0, np.uint16),
            "ip_version": np.zeros(0, np.uint8), "proto": np.zeros(0, "<U3"), "ip_proto": np.zeros(0, np.uint8),
            "vlan": _masked(np.zeros(0, np.int32), np.zeros(0, bool)),
            **{k: np.zeros(0, np.uint64) for k in ("orig_pkts", "resp_pkts", "orig_payload_bytes",
                                                   "resp_payload_bytes", "orig_ip_bytes", "resp_ip_bytes")},
            "handshake": np.zeros(0, "<U1"),
            **{k: _masked(np.zeros(0, np.int64), np.zeros(0, bool))
               for k in ("syn_ts", "synack_ts", "handshake_ack_ts", "fin1_ts", "fin2_ts", "rst_ts")},
            "orig_isn": _masked(np.zeros(0, np.uint32), np.zeros(0, bool)),
            "resp_isn": _masked(np.zeros(0, np.uint32), np.zeros(0, bool)),
            "syn_count": np.zeros(0, np.uint32), "synack_count": np.zeros(0, np.uint32),
            **{k: _masked(e, np.zeros(0, bool)) for k in ("rtt_syn_synack", "rtt_synack_ack", "irtt")},
            **{k: _masked(np.zeros(0, np.uint64), np.zeros(0, bool)) for k in ("orig_bytes", "resp_bytes")},
            "orig_retransmissions": np.zeros(0, np.uint32), "resp_retransmissions": np.zeros(0, np.uint32),
            **{f"{s}_mss": _masked(np.zeros(0, np.uint16), np.zeros(0, bool)) for s in ("orig", "resp")},
            **{f"{s}_wscale": _masked(np.zeros(0, np.int16), np.zeros(0, bool)) for s in ("orig", "resp")},
            "orig_sack_ok": np.zeros(0, bool), "resp_sack_ok": np.zeros(0, bool),
            "close": np.zeros(0, "<U1"),
            "close_initiator": _masked(np.zeros(0, "<U4"), np.zeros(0, bool)),
            "rst_by": _masked(np.zeros(0, "<U4"), np.zeros(0, bool)),
            "teardown_segments": _masked(np.zeros(0, np.uint8), np.zeros(0, bool)),
            "conn_state": np.zeros(0, "<U1"), "history": np.zeros(0, "<U1"),
            "first_frame": np.zeros(0, np.uint64), "last_frame": np.zeros(0, np.uint64)}


PROTO_VALUES = ("tcp", "udp", "icmp", "icmp6", "other")


def summary_counts(flows: dict) -> dict:
    """Connection counts by protocol, and TCP's by handshake and by close outcome (CLI summary)."""
    def counts(values, names):
        values = np.ma.filled(np.ma.asarray(values), "") if np.ma.isMaskedArray(values) else np.asarray(values)
        return {name: int(np.count_nonzero(values == name)) for name in names}
    return {"connections": int(np.asarray(flows["conn_id"]).size),
            "by_proto": counts(flows["proto"], PROTO_VALUES),
            "handshake": counts(flows["handshake"], HANDSHAKE_VALUES),
            "close": counts(flows["close"], CLOSE_VALUES)}


def table_counts(table: pa.Table) -> dict:
    """summary_counts() of a flows table, from its dictionary columns' indices."""
    def counts(name, names):
        column = table.column(name)
        found = dict.fromkeys(names, 0)
        for chunk in column.chunks:
            codes = fixed_width_values(chunk.indices).astype(np.intp)
            null = null_mask(chunk.indices)     # not drop_null(): pyarrow.compute's import alone is 25 ms
            if null is not None:
                codes = codes[~null]
            for value, k in zip(chunk.dictionary.to_pylist(), np.bincount(codes, minlength=len(chunk.dictionary))):
                if value in found:
                    found[value] += int(k)
        return found
    return {"connections": table.num_rows,
            "by_proto": counts("proto", PROTO_VALUES),
            "handshake": counts("handshake", HANDSHAKE_VALUES),
            "close": counts("close", CLOSE_VALUES)}


def combine_flows(tcp: dict, datagram: dict) -> tuple[dict, np.ndarray]:
    """TCP flows and datagram.datagram_flows rows as one table in order of first packet.

    Columns only TCP has are null on datagram rows. Returns the table (conn_id dense from 0) and each TCP
    connection's new conn_id, to renumber the segments."""
    n_tcp, n_dg = len(tcp["conn_id"]), len(datagram["first_frame"])
    first = np.concatenate([tcp["first_frame"], datagram["first_frame"]])
    # rows already in order (one kind only, as on a capture without UDP or ICMP) are not reordered
    order = None if np.all(first[1:] >= first[:-1]) else np.argsort(first, kind="stable")
    out = {}
    if n_dg == 0 and order is None:     # TCP rows alone, in order (most of a capture's end): as they are
        out = {name: a for name, a in tcp.items() if name != "conn_id"}
        out["conn_id"] = np.arange(n_tcp, dtype=np.uint64)
        return out, out["conn_id"].copy()
    for name, a in tcp.items():
        if name == "conn_id":
            continue
        b = datagram.get(name)
        if isinstance(a, pa.Array) or isinstance(b, pa.Array):    # the streaming engine's histories
            out[name] = _combined_arrow(a, b, n_dg, order)
            continue
        # values and masks apart: numpy's masked concatenate and take cost more than the work itself
        a_values = np.ma.getdata(a)
        if b is None:   # a TCP-only column: null on the datagram rows
            b = np.ma.masked_array(np.zeros((n_dg,) + a_values.shape[1:], a_values.dtype), True)
        values = np.concatenate([a_values, np.ma.getdata(b)])
        if order is not None:
            values = values[order]
        if not (np.ma.isMaskedArray(a) or np.ma.isMaskedArray(b)):
            out[name] = values
            continue
        mask = np.concatenate([np.ma.getmaskarray(a), np.ma.getmaskarray(b)])
        out[name] = np.ma.masked_array(values, mask if order is None else mask[order])
    out["conn_id"] = np.arange(n_tcp + n_dg, dtype=np.uint64)
    if order is None:
        return out, out["conn_id"][:n_tcp].copy()
    new_id = np.empty(n_tcp + n_dg, dtype=np.uint64)
    new_id[order] = out["conn_id"]
    return out, new_id[:n_tcp]


def _combined_arrow(a, b, n_dg: int, order) -> pa.Array:
    """combine_flows for a column that one side holds as an Arrow array (strings on the other side)."""
    parts = []
    for values in (a, b):
        if values is None:
            values = pa.nulls(n_dg, parts[0].type)
        elif not isinstance(values, pa.Array):
            values = string_array(np.ma.getdata(values), np.ma.getmaskarray(values) if np.ma.isMaskedArray(values)
                                  else None)
        parts.append(values)
    joined = pa.concat_arrays(parts) if len(parts[1]) else parts[0]
    return joined if order is None else joined.take(fixed_width_array(order, pa.int64()))


def analyse(seg: dict, idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
            server_ports=ZEEK_LIKELY_SERVER_PORTS_TCP, vlan_aware: bool = False):
    """Run connections, Zeek's state machine, tagging and summary: returns (segment columns, flows).

    Segment columns are in the input (frame) order: conn_id, from_orig, the
    tagging columns (``tag`` as uint8 codes, names in tagging.TAG_NAMES) and
    ``analysis`` (bits named in tcpstate.ANALYSIS_TAGS)."""
    conn = assign_connections(seg, idle_timeout_ns, vlan_aware)
    state = tcp_state(seg, conn, server_ports)
    conn["from_orig"] = state["from_orig"]
    tags = tag_segments(seg, conn)
    segments = {"conn_id": conn["conn_id"], "from_orig": conn["from_orig"], "analysis": state["analysis"]}
    segments.update({k: tags[k] for k in SEGMENT_COLUMNS})
    return segments, summarize(seg, conn, tags, state)


def analyse_assigned(seg: dict, conn_first: np.ndarray, server_ports=ZEEK_LIKELY_SERVER_PORTS_TCP,
                     vlan_aware: bool = False) -> dict:
    """analyse()'s segment columns for segments whose connections are already known: conn_first is each
    segment's connection (the frame of its first segment, as the streaming engine reports it), and the rows
    hold every segment of those connections, in the order they were fed. The state machine and the tags
    run per connection, so the columns are those analyse() gives on the whole capture; conn_id is
    conn_first here (the caller numbers the connections)."""
    conn_first = np.asarray(conn_first, dtype=np.uint64)
    n = conn_first.size
    firsts, conn_id = np.unique(conn_first, return_inverse=True)
    conn_id = conn_id.reshape(-1).astype(np.int64)
    order = np.argsort(conn_id, kind="stable")
    offsets = np.zeros(firsts.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(conn_id, minlength=firsts.size), out=offsets[1:])
    _, a_is_src = canonical_key(seg, vlan_aware)
    first_row = order[offsets[:-1]]
    conn = {"conn_id": conn_id.astype(np.uint64), "order": order, "offsets": offsets, "n_conns": int(firsts.size),
            "from_orig": a_is_src == a_is_src[first_row][conn_id] if n else np.zeros(0, bool)}
    state = tcp_state(seg, conn, server_ports)
    conn["from_orig"] = state["from_orig"]
    tags = tag_segments(seg, conn)
    segments = {"conn_id": conn_first, "from_orig": conn["from_orig"], "analysis": state["analysis"]}
    segments.update({k: tags[k] for k in SEGMENT_COLUMNS})
    return segments
