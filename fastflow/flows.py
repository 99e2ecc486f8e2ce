"""Connection stage: group TCP segments into connections and orient them.

Input is the dict of TCP packet columns fixed in docs/design.md (frame order).
Everything is vectorized with numpy; the only Python loop runs over
"ambiguous" SYNs (see ``_resolve_ambiguous_syns``), which real captures almost
never contain.

Definition of a connection (the product's fixed rules):

* Segments of one unordered {(addr, port), (addr, port)} pair, both
  directions, as Zeek's default connection key (with ``vlan_aware``, one
  pair per outermost VLAN id as Zeek's vlan_fivetuple key).  The key is symmetric like gopacket's ``Flow.FastHash``.
* On a pair, a new connection starts
    - on a pure SYN (SYN without ACK) that arrives after the current connection
      closed (a FIN from each side, or any RST),
    - on a pure SYN whose sequence number differs from the current
      connection's SYN (a retransmitted SYN with the same ISN stays in the
      connection).  A connection with no pure SYN yet takes its expected ISN
      from a SYN-ACK sent towards the new SYN's sender (``ack - 1``); with no
      SYN-ACK either, the SYN starts a new connection,
    - on *any* segment that arrives when more than ``idle_timeout_ns`` of
      network time has passed since the latest timestamp seen on the pair
      (Zeek expires idle connections the same way; the next segment then opens
      a fresh, usually midstream, connection).  Network time is Zeek's: the
      largest timestamp seen so far in the capture (``seg["network_time"]``,
      a running maximum over every packet; without it, over these segments),
      so a capture whose clock steps backwards does not invent gaps, and
      whether a connection is still open depends only on what came before:
      the streaming engine (ext/_tcpflows.pyx) can close it for good.
  Known limitation: a simultaneous open (both sides send a pure SYN with
  different ISNs) is split into two connections by the ISN rule.
* ``from_orig`` here means "sent by the sender of the connection's first
  segment": Zeek's orientation before its flips.  tcpstate.py applies
  Zeek's flips (port heuristics, SYN-ACK first, SYN/SYN-ACK reversal) and
  gives the final orientation.

``assign_connections`` returns per-segment ``conn_id`` (uint64, dense, in
order of each connection's first segment) and ``from_orig`` (bool), plus the
grouping the later stages reuse so that nothing is sorted twice:

* ``order``   (int64[n]): segment indices grouped by conn_id, frame order
  inside each connection,
* ``offsets`` (int64[n_conns + 1]): connection k owns
  ``order[offsets[k]:offsets[k + 1]]``,
* ``n_conns`` (int).
"""

from __future__ import annotations

import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

DEFAULT_IDLE_TIMEOUT_NS = 300 * 10**9

# ---------------------------------------------------------------------------
# small vectorized helpers shared by tagging.py and summary.py
# ---------------------------------------------------------------------------

def first_in_group(group: np.ndarray, mask: np.ndarray, n_groups: int) -> np.ndarray:
    """Position of the first True of ``mask`` in each group, -1 if none.

    ``group`` must be non-decreasing (rows grouped, e.g. by conn_id)."""
    idx = np.flatnonzero(mask)
    out = np.full(n_groups, -1, dtype=np.int64)
    if idx.size:
        g = group[idx]
        keep = np.empty(idx.size, dtype=bool)
        keep[0] = True
        np.not_equal(g[1:], g[:-1], out=keep[1:])
        out[g[keep]] = idx[keep]
    return out


def last_before(mask: np.ndarray) -> np.ndarray:
    """For each position i, the last position j <= i with mask[j], else -1.

    Callers check the result against their group's start position."""
    pos = np.where(mask, np.arange(mask.size, dtype=np.int64), -1)
    return np.maximum.accumulate(pos) if pos.size else pos


def seq_geq(a, b) -> np.ndarray:
    """a >= b in TCP's modular uint32 sequence space (arrays)."""
    diff = np.atleast_1d(np.asarray(a, dtype=np.uint32) - np.asarray(b, dtype=np.uint32))
    return diff.astype(np.uint32).view(np.int32) >= 0


# ---------------------------------------------------------------------------

def addr_words(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte addresses as (high, low) uint64 words in network byte order,
    so that integer comparison is address comparison."""
    words = np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16).view(">u8")
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def canonical_key(seg, vlan_aware=False):
    """Endpoints as (lower, higher) by (address, port); ``a_is_src`` tells
    whether the segment's source is the lower endpoint.  The VLAN id joins
    the key only when ``vlan_aware`` (Zeek's default key ignores it, so that
    a capture whose two directions carry different tags keeps its
    connections whole)."""
    s_hi, s_lo = addr_words(seg["src"])
    d_hi, d_lo = addr_words(seg["dst"])
    sp = np.asarray(seg["sport"], dtype=np.uint16)
    dp = np.asarray(seg["dport"], dtype=np.uint16)
    a_is_src = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
    a_hi = np.where(a_is_src, s_hi, d_hi)
    a_lo = np.where(a_is_src, s_lo, d_lo)
    a_p = np.where(a_is_src, sp, dp)
    b_hi = np.where(a_is_src, d_hi, s_hi)
    b_lo = np.where(a_is_src, d_lo, s_lo)
    b_p = np.where(a_is_src, dp, sp)
    vlan = np.asarray(seg["vlan"], dtype=np.int32) if vlan_aware else np.zeros(a_p.size, dtype=np.int32)
    return (vlan, a_hi, a_lo, a_p, b_hi, b_lo, b_p), a_is_src


def _key_hash(keys) -> np.ndarray:
    """64-bit mix of a tuple of integer key columns (splitmix-style rounds)."""
    h = np.full(keys[0].shape, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for k in keys:
        h = h ^ np.asarray(k).astype(np.int64).view(np.uint64)
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(31))
    return h


def _key_changes(keys, order):
    """Rows (in ``order``) whose key differs from the previous row's."""
    change = np.zeros(order.size, dtype=bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    return change


def group_rows(keys):
    """Stable grouping permutation by a tuple of key columns, plus a group-start mask.

    Fast path: pack the high bits of a 64-bit hash of the key above the row
    index and ``np.sort`` the packed words (a plain sort is much faster than
    an argsort, and the index bits keep frame order inside a group).  Two
    different keys sharing a hash prefix show up as a key change between rows
    of equal prefix; then retry with the full hash, then an exact lexsort."""
    n = keys[0].size
    h = _key_hash(keys)
    idx_bits = max(1, (n - 1).bit_length())
    idx_mask = np.uint64((1 << idx_bits) - 1)
    packed = np.sort((h & ~idx_mask) | np.arange(n, dtype=np.uint64))
    order = (packed & idx_mask).astype(np.int64)
    prefix = packed & ~idx_mask
    change = _key_changes(keys, order)
    if not np.any(change[1:] & (prefix[1:] == prefix[:-1])):
        return order, change
    order = np.argsort(h, kind="stable")
    change = _key_changes(keys, order)
    hs = h[order]
    if not np.any(change[1:] & (hs[1:] == hs[:-1])):
        return order, change
    order = np.lexsort((np.arange(n),) + tuple(reversed(keys)))
    return order, _key_changes(keys, order)


def number_blocks(order: np.ndarray, block_start: np.ndarray):
    """Number the blocks of ``order`` (rows grouped by key, frame order inside; a block starts where
    ``block_start``) densely in order of each block's first row, and regroup the rows by that number without
    another sort. Returns (id per row, rows grouped by id, offsets (id k owns grouped[offsets[k]:offsets[k+1]]),
    first row of each id)."""
    n = order.size
    block = np.cumsum(block_start) - 1            # block of each sorted position
    start = np.flatnonzero(block_start)
    length = np.diff(np.append(start, n))
    perm = np.argsort(order[start], kind="stable")
    id_of_block = np.empty(start.size, dtype=np.int64)
    id_of_block[perm] = np.arange(start.size, dtype=np.int64)
    sorted_id = id_of_block[block]
    ids = np.empty(n, dtype=np.int64)
    ids[order] = sorted_id
    offsets = np.zeros(start.size + 1, dtype=np.int64)
    np.cumsum(length[perm], out=offsets[1:])
    grouped = np.empty(n, dtype=np.int64)
    grouped[offsets[sorted_id] + (np.arange(n, dtype=np.int64) - start[block])] = order
    return ids, grouped, offsets, order[start][perm]


def _running_max_in_groups(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Running maximum of int64 ``values`` restarted at each group start."""
    n = values.size
    gid = np.cumsum(group_start) - 1
    if n < 2 or not np.any((values[1:] < values[:-1]) & ~group_start[1:]):
        return values.copy()  # already monotonic inside every group
    # Replace values by their ranks and lift each group above the previous
    # one, so one global maximum.accumulate cannot leak across groups.
    rank = np.empty(n, dtype=np.int64)
    srt = np.argsort(values, kind="stable")
    rank[srt] = np.arange(n, dtype=np.int64)
    lifted = np.maximum.accumulate(gid.astype(np.int64) * n + rank)
    return values[srt][lifted - gid.astype(np.int64) * n]


class _CloseEvents:
    """Positions (sorted order) of RSTs and of FINs from each endpoint, to ask
    whether a range [lo, hi) holds a close: a RST, or a FIN from each side.
    Close events are rare, so binary search beats full-length prefix sums."""

    def __init__(self, flags, src_a):
        fin = (flags & FIN) != 0
        self.rst = np.flatnonzero((flags & RST) != 0)
        self.fin_a = np.flatnonzero(fin & src_a)
        self.fin_b = np.flatnonzero(fin & ~src_a)

    def closed(self, lo, hi):
        def any_in(events):
            return np.searchsorted(events, hi) > np.searchsorted(events, lo)
        return any_in(self.rst) | (any_in(self.fin_a) & any_in(self.fin_b))


def _resolve_ambiguous_syns(amb, boundary, events):
    """Sequential pass over SYNs whose split depends on earlier decisions.

    A same-ISN SYN splits only if the connection closed since it started, and
    where the connection started can depend on the previous ambiguous SYN.
    Only SYNs with a close event between the last certain boundary and them
    but none since the previous SYN get here (one-sided FIN before a SYN
    retransmission, other side's FIN after it): a handful per capture."""
    certain = np.flatnonzero(boundary)
    last_certain = certain[np.searchsorted(certain, amb) - 1]
    last_amb_boundary = -1
    for i, c in zip(amb.tolist(), last_certain.tolist()):
        if events.closed(max(c, last_amb_boundary), i):
            boundary[i] = True
            last_amb_boundary = i


def assign_connections(seg: dict, idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS, vlan_aware: bool = False) -> dict:
    n = int(np.asarray(seg["frame"]).shape[0])
    if n == 0:
        return {"conn_id": np.zeros(0, np.uint64), "from_orig": np.zeros(0, bool),
                "order": np.zeros(0, np.int64), "offsets": np.zeros(1, np.int64),
                "n_conns": 0}
    keys, a_is_src = canonical_key(seg, vlan_aware)
    order, pair_start = group_rows(keys)

    # Columns in pair-grouped order (frame order inside each pair).
    flags = np.asarray(seg["tcp_flags"], dtype=np.uint16)[order]
    seq = np.asarray(seg["seq"], dtype=np.uint32)[order]
    ack = np.asarray(seg["ack"], dtype=np.uint32)[order]
    ts = np.asarray(seg["ts"], dtype=np.int64)[order]
    src_a = a_is_src[order]

    is_syn = (flags & SYN) != 0
    has_ack = (flags & ACK) != 0
    pure_syn = is_syn & ~has_ack
    synack = is_syn & has_ack

    # Idle split: silence measured from the latest timestamp seen on the pair.
    if "network_time" in seg:
        now = np.asarray(seg["network_time"], dtype=np.int64)[order]
    else:
        now = np.maximum.accumulate(np.asarray(seg["ts"], dtype=np.int64))[order]
    seen_max = _running_max_in_groups(ts, pair_start)
    epoch_start = pair_start.copy()
    epoch_start[1:] |= (now[1:] - seen_max[:-1]) > idle_timeout_ns
    epochs = np.flatnonzero(epoch_start)
    boundary = epoch_start.copy()

    # The SYN rules only need the pure SYN positions (few compared to n).
    syns = np.flatnonzero(pure_syn)
    synacks = np.flatnonzero(synack)
    epoch_first = epochs[np.searchsorted(epochs, syns, side="right") - 1]
    # Expected ISN: the previous pure SYN in the epoch, else the last SYN-ACK
    # sent towards this SYN's sender in the epoch (its ack - 1).
    prev_syn = np.empty_like(syns)
    prev_syn[:1] = -1
    prev_syn[1:] = syns[:-1]
    use_syn = prev_syn >= epoch_first
    k = np.searchsorted(synacks, syns) - 1
    prev_synack = np.where(k >= 0, synacks[np.maximum(k, 0)] if synacks.size else -1, -1)
    use_synack = ~use_syn & (prev_synack >= epoch_first)
    use_synack &= src_a[np.maximum(prev_synack, 0)] != src_a[syns]
    expected = np.where(use_syn, seq[np.maximum(prev_syn, 0)], ack[np.maximum(prev_synack, 0)] - np.uint32(1))
    same_isn = (use_syn | use_synack) & (seq[syns] == expected) & ~epoch_start[syns]
    boundary[syns[~same_isn]] = True

    # A same-ISN SYN splits only if the connection closed before it.  The
    # connection started at or before the previous SYN (or at the epoch start
    # when the evidence was a SYN-ACK), so a close since then always splits.
    events = _CloseEvents(flags, src_a)
    cand = syns[same_isn]
    ref = np.where(use_syn, prev_syn, epoch_first)[same_isn]
    definite = events.closed(ref, cand)
    boundary[cand[definite]] = True
    # A close only since the last certain boundary might split: decide in order.
    cand = cand[~definite]
    certain = np.flatnonzero(boundary)
    maybe = events.closed(certain[np.searchsorted(certain, cand) - 1], cand)
    if maybe.any():
        _resolve_ambiguous_syns(cand[maybe], boundary, events)

    conn, conn_order, offsets, first = number_blocks(order, boundary)
    n_conns = offsets.size - 1
    conn_id = conn.astype(np.uint64)
    # Pre-orientation: the first segment's sender (tcpstate.py applies Zeek's flips).
    from_orig = a_is_src == a_is_src[first][conn]

    return {"conn_id": conn_id, "from_orig": from_orig, "order": conn_order,
            "offsets": offsets, "n_conns": n_conns}
