"""Per-segment tags: handshake and teardown steps, roles, relative numbers.

``tag_segments(seg, conn)`` works on the grouping made by
``flows.assign_connections`` (``conn["order"]``/``conn["offsets"]``) and is
fully vectorized: every "first segment of a connection that ..." is one
boolean mask plus ``flows.first_in_group``.

Handshake (checked by numbers):
  step 1  the originator's first pure SYN (seq = x)
  step 2  the first SYN-ACK from the responder after it with ack = x + 1 (seq = y)
  step 3  the first originator segment after step 2 with ACK, without SYN or
          RST, and ack = y + 1 (it may carry data)
  Later pure SYNs from the originator with seq = x are ``syn_retransmit`` and
  later responder SYN-ACKs repeating the responder ISN are
  ``syn_ack_retransmit``; retransmissions get no step (step 1 / 2 only on the
  first).  Any other SYN / SYN-ACK is tagged ``syn`` / ``syn_ack``, no step.

Teardown (FIN segments with RST or SYN do not count as FINs here):
  step 1  the first FIN; its sender is the active closer (end E1 = seq + len + 1)
  step 2  the first later segment from the other side with ACK and ack >= E1
  step 3  the other side's first FIN after step 1 (end E2)
  step 4  the first later closer segment with ACK and ack >= E2
  When the step-3 FIN is itself the first segment acknowledging E1 it is step
  3 only, tagged ``fin+fin_ack`` (steps 2 and 3 in one segment).  A step-3 FIN
  that does not acknowledge E1 crossed the first FIN (simultaneous close).
  Comparisons are modular uint32 (``flows.seq_geq``); RST segments are never
  teardown steps.

Tag roles (uint8 codes, names in ``TAG_NAMES``), highest priority first:
  rst > syn / syn_retransmit > syn_ack / syn_ack_retransmit > fin+fin_ack >
  fin (any FIN, e.g. on data or a retransmission) > fin_ack (teardown step 2
  or 4) > handshake_ack > data (payload) > ack.

``rel_seq`` / ``rel_ack`` are relative to the sender's / receiver's ISN as
Wireshark shows them (SYN = 0, first data byte = 1), uint32 modular, -1 when
that ISN was not seen (originator ISN: its step-1 SYN; responder ISN: its
step-2 SYN-ACK, else its first SYN-ACK).  ``rel_ack`` is also -1 on segments
without the ACK flag (their ack field is meaningless).

``acks_fin`` marks the segments that first acknowledge a FIN (teardown steps
2 and 4, and a ``fin+fin_ack`` step 3).

The returned dict also holds ``conn_events``: per-connection positions (in
``conn["order"]``, -1 if absent) of the steps and ISNs, reused by summary.py.
"""

from __future__ import annotations

import numpy as np

from .flows import ACK, FIN, RST, SYN, first_in_group, seq_geq

TAG_NAMES = ("syn", "syn_ack", "handshake_ack", "syn_retransmit", "syn_ack_retransmit",
             "fin", "fin_ack", "fin+fin_ack", "rst", "data", "ack")
(TAG_SYN, TAG_SYN_ACK, TAG_HANDSHAKE_ACK, TAG_SYN_RETRANSMIT, TAG_SYN_ACK_RETRANSMIT,
 TAG_FIN, TAG_FIN_ACK, TAG_FIN_FIN_ACK, TAG_RST, TAG_DATA, TAG_ACK) = range(len(TAG_NAMES))

#: per-segment columns produced by tag_segments (in frame order)
SEGMENT_COLUMNS = ("handshake_step", "teardown_step", "tag", "rel_seq", "rel_ack", "acks_fin")


def tag_names(codes: np.ndarray) -> np.ndarray:
    """Tag codes -> array of names."""
    return np.asarray(TAG_NAMES, dtype=object)[np.asarray(codes)]


def _set(arr, positions, value):
    p = positions[positions >= 0]
    arr[p] = value


def tag_segments(seg: dict, conn: dict) -> dict:
    order = conn["order"]
    n_conns = conn["n_conns"]
    n = order.size

    # Grouped (by conn_id, frame order inside) views of the inputs.
    g = np.asarray(conn["conn_id"])[order].astype(np.int64)
    fo = np.asarray(conn["from_orig"])[order]
    flags = np.asarray(seg["tcp_flags"], dtype=np.uint16)[order]
    seq = np.asarray(seg["seq"], dtype=np.uint32)[order]
    ack = np.asarray(seg["ack"], dtype=np.uint32)[order]
    plen = np.asarray(seg["payload_len"], dtype=np.uint32)[order]
    pos = np.arange(n, dtype=np.int64)

    is_syn = (flags & SYN) != 0
    has_ack = (flags & ACK) != 0
    is_rst = (flags & RST) != 0
    is_fin = ((flags & FIN) != 0) & ~is_rst & ~is_syn
    pure_syn = is_syn & ~has_ack
    synack = is_syn & has_ack

    def after(event):  # rows after a per-connection event position
        ev = event[g]
        return (ev >= 0) & (pos > ev)

    # --- handshake -------------------------------------------------------
    s1 = first_in_group(g, pure_syn & fo, n_conns)
    has_s1 = s1 >= 0
    orig_isn = np.where(has_s1, seq[np.maximum(s1, 0)], 0).astype(np.uint32)
    syn_retx = pure_syn & fo & after(s1) & (seq == orig_isn[g])

    resp_synack = synack & ~fo
    s2 = first_in_group(g, resp_synack & after(s1) & (ack == orig_isn[g] + np.uint32(1)), n_conns)
    first_resp_synack = first_in_group(g, resp_synack, n_conns)
    resp_isn_pos = np.where(s2 >= 0, s2, first_resp_synack)
    has_resp_isn = resp_isn_pos >= 0
    resp_isn = np.where(has_resp_isn, seq[np.maximum(resp_isn_pos, 0)], 0).astype(np.uint32)
    synack_retx = resp_synack & after(resp_isn_pos) & (seq == resp_isn[g])

    s3 = first_in_group(g, fo & has_ack & ~is_syn & ~is_rst & after(s2)
                        & (ack == resp_isn[g] + np.uint32(1)), n_conns)

    # --- teardown ----------------------------------------------------------
    t1 = first_in_group(g, is_fin, n_conns)
    has_t1 = t1 >= 0
    t1c = np.maximum(t1, 0)
    closer_is_orig = fo[t1c]
    fin1_end = (seq[t1c] + plen[t1c] + np.uint32(1)).astype(np.uint32)
    other_side = fo != closer_is_orig[g]
    acks_fin1 = has_ack & ~is_rst & seq_geq(ack, fin1_end[g])
    t2_or_combined = first_in_group(g, other_side & after(t1) & acks_fin1, n_conns)
    t3 = first_in_group(g, is_fin & other_side & after(t1), n_conns)
    has_t3 = t3 >= 0
    combined = has_t3 & (t2_or_combined == t3)
    t2 = np.where(combined, -1, t2_or_combined)
    t3c = np.maximum(t3, 0)
    simultaneous = has_t3 & ~acks_fin1[t3c]
    fin2_end = (seq[t3c] + plen[t3c] + np.uint32(1)).astype(np.uint32)
    t4 = first_in_group(g, ~other_side & after(t3) & has_ack & ~is_rst
                        & seq_geq(ack, fin2_end[g]), n_conns)

    # --- per-segment columns (grouped order) ---------------------------------
    hs_step = np.full(n, -1, dtype=np.int8)
    _set(hs_step, s1, 1)
    _set(hs_step, s2, 2)
    _set(hs_step, s3, 3)
    td_step = np.full(n, -1, dtype=np.int8)
    _set(td_step, t1, 1)
    _set(td_step, t2, 2)
    _set(td_step, t3, 3)
    _set(td_step, t4, 4)

    tag = np.full(n, TAG_ACK, dtype=np.uint8)
    tag[plen > 0] = TAG_DATA
    _set(tag, s3, TAG_HANDSHAKE_ACK)
    acks_fin = np.zeros(n, dtype=bool)
    _set(acks_fin, t2, True)
    _set(acks_fin, t4, True)
    _set(acks_fin, np.where(combined, t3, -1), True)
    tag[acks_fin] = TAG_FIN_ACK
    tag[is_fin] = TAG_FIN
    _set(tag, np.where(combined, t3, -1), TAG_FIN_FIN_ACK)
    tag[synack] = TAG_SYN_ACK
    tag[synack_retx] = TAG_SYN_ACK_RETRANSMIT
    tag[pure_syn] = TAG_SYN
    tag[syn_retx] = TAG_SYN_RETRANSMIT
    tag[is_rst] = TAG_RST

    # Relative numbers: sender's ISN for seq, receiver's ISN for ack.
    orig_known, resp_known = has_s1[g], has_resp_isn[g]
    own_isn = np.where(fo, orig_isn[g], resp_isn[g])
    peer_isn = np.where(fo, resp_isn[g], orig_isn[g])
    own_known = np.where(fo, orig_known, resp_known)
    peer_known = np.where(fo, resp_known, orig_known) & has_ack
    rel_seq = np.where(own_known, (seq - own_isn).astype(np.uint32).astype(np.int64), -1)
    rel_ack = np.where(peer_known, (ack - peer_isn).astype(np.uint32).astype(np.int64), -1)

    out = {}
    for name, grouped in (("handshake_step", hs_step), ("teardown_step", td_step),
                          ("tag", tag), ("rel_seq", rel_seq), ("rel_ack", rel_ack),
                          ("acks_fin", acks_fin)):
        col = np.empty(n, dtype=grouped.dtype)
        col[order] = grouped
        out[name] = col

    out["conn_events"] = {
        "syn": s1, "synack": s2, "handshake_ack": s3, "resp_isn_segment": resp_isn_pos,
        "orig_isn": orig_isn, "has_orig_isn": has_s1,
        "resp_isn": resp_isn, "has_resp_isn": has_resp_isn,
        "fin1": t1, "fin1_ack": t2, "fin2": t3, "fin2_ack": t4,
        "fin_combined": combined, "simultaneous_fin": simultaneous,
        "closer_is_orig": closer_is_orig & has_t1,
    }
    return out
