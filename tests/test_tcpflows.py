"""The streaming TCP engine (fastflow/tcpflows.py, ext/_tcpflows.pyx) against the whole-capture numpy stages
(summary.analyse): every column of every TCP flow equal, whatever the chunk size, on the corpus and on random
segment soups built to hit the rare paths (port reuse, ISN changes, idle splits, clocks stepping back,
SYN-ACK-first flips, bad checksums, RST/FIN orders)."""
from __future__ import annotations

import numpy as np
import pytest

from corpus import CAPTURES, capture_names, decode_all, requires_corpus
from fastflow.decode import PFlag, Status
from fastflow.pipeline import SEGMENT_INPUT_COLUMNS, add_network_time
from fastflow.summary import analyse
from fastflow.tcpflows import (NO_OPEN_CONNECTION, PartedTcpFlows, TcpFlows, _by_first_frame, concat_packed,
                               packet_parts, rows_to_flows)
from huge_pages import requires_thp_madvise, thp_eligible

SECOND = 10**9


def tcp_rows(pk: dict) -> dict:
    """The pipeline's TCP input from all decoded rows."""
    add_network_time(pk, np.iinfo(np.int64).min)
    keep = (pk["status"] == Status.TCP) & ((pk["pflags"] & PFlag.BAD_IP_CHECKSUM) == 0)
    return {k: pk[k][keep] for k in SEGMENT_INPUT_COLUMNS}


def concat_flows(parts: list[dict]) -> dict:
    out = {}
    for name in parts[0]:
        cols = [p[name] for p in parts]
        out[name] = np.ma.concatenate(cols) if any(np.ma.isMaskedArray(c) for c in cols) else np.concatenate(cols)
    order = np.argsort(out["first_frame"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def concat_drained(parts: list[tuple]) -> dict:
    """The engine's drains (drain_packed) as one, converted once: rows_to_flows per drain of a few rows
    cost more than the engine (about 40 masked arrays each)."""
    return rows_to_flows(*_by_first_frame(*concat_packed(parts)))


def stream(seg: dict, chunk: int, timeout_ns=300 * SECOND, vlan_aware=False, check_open=False,
           max_in_memory=None) -> dict:
    engine = TcpFlows(timeout_ns, vlan_aware=vlan_aware, max_in_memory=max_in_memory)
    parts = []
    n = len(seg["frame"])
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in seg.items()}
        engine.feed(part)
        now = int(part["network_time"][-1])
        engine.expire(now)
        parts.append(engine.drain_packed())
        if check_open:
            low = engine.min_open_first_frame()
            assert engine.open_count == 0 or low <= int(part["frame"][-1])
        if max_in_memory is not None:
            assert engine.open_count - engine.spilled <= max_in_memory
    engine.finish()
    assert engine.open_count == 0
    assert engine.min_open_first_frame() == NO_OPEN_CONNECTION
    parts.append(engine.drain_packed())
    return concat_drained(parts)


def assert_same_flows(ref: dict, got: dict, label: str) -> None:
    assert len(got["first_frame"]) == len(ref["conn_id"]), label
    for name, want in ref.items():
        if name == "conn_id":
            continue
        have = got[name]
        if np.ma.isMaskedArray(want) or np.ma.isMaskedArray(have):
            wm, hm = np.ma.getmaskarray(want), np.ma.getmaskarray(have)
            assert np.array_equal(wm, hm), f"{label}: {name} nulls differ"
            want, have = np.asarray(want)[~wm], np.asarray(have)[~hm]
        want, have = np.asarray(want), np.asarray(have)
        assert want.shape == have.shape, f"{label}: {name} shape"
        same = np.array_equal(want, have, equal_nan=want.dtype.kind == "f")
        if not same:
            bad = np.flatnonzero(want != have)[:5] if want.ndim == 1 else "rows"
            pytest.fail(f"{label}: {name} differs at {bad}: {want[bad] if want.ndim == 1 else ''} "
                        f"vs {have[bad] if have.ndim == 1 else ''}")


# --- the corpus -----------------------------------------------------------------------------------------

def corpus_tcp_captures():
    return [n for n in capture_names()]


def corpus_segments(name: str) -> dict:
    """A corpus capture's TCP input to the engines; skips the test when it has none."""
    pk, _ = decode_all(CAPTURES / name)
    if not pk:
        pytest.skip("no packets")
    seg = tcp_rows(pk)
    if len(seg["frame"]) == 0:
        pytest.skip("no TCP segments")
    return seg


@requires_corpus
@pytest.mark.parametrize("name", corpus_tcp_captures())
def test_corpus_capture_streams_to_the_same_flows(name):
    seg = corpus_segments(name)
    n = len(seg["frame"])
    for timeout in (300 * SECOND, SECOND):     # Zeek's, and one short enough to expire and split
        _, ref = analyse(seg, timeout)
        chunks = {7, 1000, n} | ({1} if n < 3000 else set())
        for chunk in sorted(chunks):
            assert_same_flows(ref, stream(seg, chunk, timeout, check_open=chunk == 7), f"{name} chunk {chunk}")
        # records of open connections through the temporary file and back
        assert_same_flows(ref, stream(seg, 5, timeout, max_in_memory=0), f"{name} spilled")


@requires_corpus
@pytest.mark.parametrize("name", ["zeek__vlan-collisions.pcap", "zeek__mpls-in-vlan.pcap",
                                  "zeek__ldap__modify-request.pcapng"])
def test_vlan_aware_keys_stream_the_same(name):
    if not (CAPTURES / name).exists():
        pytest.skip(f"{name} not in the corpus")
    pk, _ = decode_all(CAPTURES / name)
    seg = tcp_rows(pk)
    _, ref = analyse(seg, 300 * SECOND, vlan_aware=True)
    assert_same_flows(ref, stream(seg, 3, vlan_aware=True), name)


# --- random segment soups ---------------------------------------------------------------------------------

FLAG_CHOICES = np.array([0x02, 0x02, 0x12, 0x12, 0x10, 0x10, 0x18, 0x18, 0x11, 0x01, 0x04, 0x14, 0x03,
                         0x05, 0x13, 0x16], dtype=np.uint16)
ADDRS = [bytes(10) + b"\xff\xff" + bytes([10, 0, 0, i]) for i in range(1, 5)] + \
        [bytes([0x20, 0x01, 0x0d, 0xb8]) + bytes(11) + bytes([i]) for i in range(1, 3)]
PAIRS = [(0, 40000, 1, 80), (2, 40001, 3, 45000), (0, 80, 1, 443), (4, 40000, 5, 3128), (1, 5353, 0, 22),
         (0, 40000, 1, 81)]


def random_segments(rng: np.random.Generator, n: int) -> dict:
    pair = rng.integers(0, len(PAIRS), n)
    forward = rng.random(n) < 0.55
    ca = np.array([PAIRS[p][0] for p in pair])
    cp = np.array([PAIRS[p][1] for p in pair])
    sa = np.array([PAIRS[p][2] for p in pair])
    sp = np.array([PAIRS[p][3] for p in pair])
    addr = np.frombuffer(b"".join(ADDRS), dtype=np.uint8).reshape(-1, 16)
    src_i, dst_i = np.where(forward, ca, sa), np.where(forward, sa, ca)
    steps = rng.choice([0, 1, 1000, 10**6, 2 * SECOND, 9 * SECOND, -3 * SECOND], n,
                       p=[0.1, 0.3, 0.3, 0.2, 0.05, 0.03, 0.02])
    ts = (10**18 + np.cumsum(steps)).astype(np.int64)
    payload = rng.choice([0, 0, 0, 1, 100], n).astype(np.uint32)
    seg = {
        "frame": np.arange(1, n + 1, dtype=np.uint64),
        "ts": ts,
        "vlan": rng.choice([-1, -1, 7], n).astype(np.int32),
        "ip_version": np.where(np.isin(src_i, [4, 5]), 6, 4).astype(np.uint8),
        "src": addr[src_i].copy(), "dst": addr[dst_i].copy(),
        "sport": np.where(forward, cp, sp).astype(np.uint16),
        "dport": np.where(forward, sp, cp).astype(np.uint16),
        "seq": rng.choice([100, 101, 200, 201, 301, 4294967295, 0], n).astype(np.uint32),
        "ack": rng.choice([101, 201, 102, 202, 302, 0], n).astype(np.uint32),
        "tcp_flags": rng.choice(FLAG_CHOICES, n),
        "window": rng.choice([0, 1000, 1000], n).astype(np.uint16),
        "payload_len": payload,
        "claimed_len": payload + rng.choice([0, 0, 0, 7], n).astype(np.uint32),
        "ip_len": (payload + 40).astype(np.uint32),
        "mss": rng.choice([0, 1460], n).astype(np.uint16),
        "wscale": rng.choice([-1, 7], n).astype(np.int16),
        "sack_ok": rng.choice([0, 1], n).astype(np.uint8),
        "pflags": np.where(rng.random(n) < 0.03, PFlag.BAD_CHECKSUM, 0).astype(np.uint8),
    }
    seg["network_time"] = np.maximum.accumulate(ts)
    return seg


@pytest.mark.parametrize("seed", range(40))
def test_random_segments_stream_to_the_same_flows(seed):
    rng = np.random.default_rng(seed)
    seg = random_segments(rng, int(rng.integers(50, 1500)))
    timeout = int(rng.choice([5 * SECOND, 300 * SECOND]))
    vlan_aware = bool(seed % 3 == 0)
    _, ref = analyse(seg, timeout, vlan_aware=vlan_aware)
    for chunk in (1, 13, 400, len(seg["frame"])):
        assert_same_flows(ref, stream(seg, chunk, timeout, vlan_aware), f"seed {seed} chunk {chunk}")
    for chunk, limit in ((1, 0), (7, 2), (50, 5)):
        assert_same_flows(ref, stream(seg, chunk, timeout, vlan_aware, max_in_memory=limit),
                          f"seed {seed} chunk {chunk} in memory {limit}")


@pytest.mark.parametrize("seed", range(6))
def test_segments_read_in_place_among_other_rows(seed):
    """feed(batch, rows=...) (the pipeline's batches mix TCP with other packets) reads only those rows, in place:
    the same flows as the segments fed alone, whatever the other rows hold."""
    rng = np.random.default_rng(100 + seed)
    seg = random_segments(rng, 600)
    n = len(seg["frame"])
    _, ref = analyse(seg, 300 * SECOND)
    # other rows (junk values: another key, other flags) between the segments, before and after them
    slots = np.sort(rng.choice(3 * n, n, replace=False))
    mixed = {}
    for name, values in seg.items():
        junk = np.frombuffer(rng.bytes(3 * n * values[:1].nbytes), values.dtype).reshape((3 * n,) + values.shape[1:])
        junk = junk.copy()
        junk[slots] = values
        mixed[name] = junk
    for chunk in (1, 37, 3 * n):
        engine = TcpFlows(300 * SECOND, max_in_memory=8 if chunk == 37 else None)
        parts = []
        for start in range(0, 3 * n, chunk):
            part = {k: v[start:start + chunk] for k, v in mixed.items()}
            rows = np.flatnonzero((slots >= start) & (slots < start + chunk))
            engine.feed(part, rows=slots[rows] - start)
            parts.append(engine.drain())
        engine.finish()
        parts.append(engine.drain())
        assert_same_flows(ref, concat_flows(parts), f"seed {seed} chunk {chunk}")
    engine = TcpFlows(300 * SECOND)
    for bad in ([1, 1], [2, 1], [-1], [3 * n]):
        with pytest.raises(ValueError, match="increasing indices"):
            engine.feed(mixed, rows=np.array(bad))
    assert engine.open_count == 0


@pytest.mark.parametrize("parts, split_at", [(2, 0), (3, 0), (2, 3), (3, 5)])
def test_engines_side_by_side_give_one_engines_rows(parts, split_at):
    """PartedTcpFlows (the connections shared out by key among engines fed in threads, from the start or
    once split_at are open) gives one engine's rows in the same order, each segment's connection
    (conn_first) in its place, with rows read in place, spilling, expiry, and end-of-capture portions; an
    engine's error in another thread reaches the caller."""
    rng = np.random.default_rng(40 + parts)
    seg = random_segments(rng, 1500)
    n = len(seg["frame"])
    status = np.where(rng.random(n) < 0.8, Status.TCP, Status.UDP).astype(np.uint8)
    batch = {**seg, "status": status}
    tcp_rows = np.flatnonzero(status == Status.TCP)
    seen = {}
    for label, make in (("one", lambda: TcpFlows(5 * SECOND, max_in_memory=6)),
                        ("parted", lambda: PartedTcpFlows(parts, 5 * SECOND, max_in_memory=6, split_at=split_at))):
        for with_part in (False, True):
            engine = make()
            rows_out, firsts = [], []
            for start in range(0, n, 97):
                part = {k: v[start:start + 97] for k, v in batch.items()}
                if with_part:    # computed ahead, as the pipeline's decoder thread does
                    part["tcp_part"] = packet_parts(part, parts)
                rows = tcp_rows[(tcp_rows >= start) & (tcp_rows < start + 97)] - start
                conn_first = np.empty(len(rows), np.uint64)
                engine.feed(part, conn_first, rows=rows)
                firsts.append(conn_first)
                engine.expire(int(part["network_time"][-1]))
                rows_out.append(engine.drain_packed())
            assert engine.open_count > 0
            assert label == "one" or engine.split
            while engine.open_count:
                engine.finish(5)
                rows_out.append(engine.drain_packed())
            assert engine.min_open_first_frame() == NO_OPEN_CONNECTION
            engine.close()
            drained = np.concatenate([r for r, _ in rows_out])
            seen[label, with_part] = (drained["first_frame"], drained["last_frame"], drained["orig_pkts"],
                                      np.concatenate(firsts))
    want = seen["one", False]
    assert len(want[0]) > 100
    for key, got in seen.items():
        for a, b in zip(want, got):
            assert np.array_equal(a, b), key
    engine = PartedTcpFlows(parts, 5 * SECOND, split_at=0)
    with pytest.raises(ValueError, match="increasing indices"):
        engine.feed(batch, rows=np.array([0, 0, 1, 1, 2, 2, 3, 3]))
    engine.close()


@pytest.mark.parametrize("seed", range(6))
def test_feeding_again_after_a_partial_finish(seed):
    """finish() lets the hash table and the expiry heap go while it finishes connections in its own order;
    feeding again after a partial finish lists the rest again: their packets join them, expiry and spilling
    work, and the rows are those of an engine that never finished early, given the same packets (those of
    the address/port pairs finished early left out after that point, since they would start new ones)."""
    rng = np.random.default_rng(500 + seed)
    seg = random_segments(rng, 1200)
    n = len(seg["frame"])
    half = n // 2
    limit = [None, 2][seed % 2]

    def run(columns, partial):
        engine = TcpFlows(5 * SECOND, max_in_memory=limit)
        parts, early = [], None
        for start in range(0, len(columns["frame"]), 50):
            if partial and early is None and start >= half:
                engine.finish(2)
                early = engine.drain()
                parts.append(early)
            part = {k: v[start:start + 50] for k, v in columns.items()}
            engine.feed(part)
            engine.expire(int(part["network_time"][-1]))
            parts.append(engine.drain())
        engine.finish()
        parts.append(engine.drain())
        return concat_flows(parts), early

    def pair(addr_a, port_a, addr_b, port_b):
        return frozenset([(bytes(addr_a), int(port_a)), (bytes(addr_b), int(port_b))])

    _, early = run(seg, partial=True)
    assert len(early["first_frame"]) > 0
    finished = {pair(*row) for row in zip(early["orig_addr"], early["orig_p"], early["resp_addr"], early["resp_p"])}
    gone = np.array([i >= half and pair(seg["src"][i], seg["sport"][i], seg["dst"][i], seg["dport"][i]) in finished
                     for i in range(n)])
    assert gone.any()
    kept = {k: v[~gone] for k, v in seg.items()}
    want, _ = run(kept, partial=False)
    got, early = run(kept, partial=True)
    assert len(early["first_frame"]) == 2 and len(got["first_frame"]) > 100
    assert_same_flows({**want, "conn_id": want["first_frame"]}, got, f"seed {seed}")


@pytest.mark.parametrize("limit", [None, 0, 2])
def test_snapshot_and_min_first_after_a_partial_finish(limit):
    """A partial finish() lets the table, the heap and the spilled records' entries go (the rest are listed
    by their place in the file); what is still open can be saved and restored from there, the oldest open
    first frame stays right, and the rows are those of one finish() at once."""
    rng = np.random.default_rng(42)
    seg = random_segments(rng, 1500)
    want = TcpFlows(300 * SECOND)
    want.feed(seg)
    want.finish()
    want = want.drain()
    engine = TcpFlows(300 * SECOND, max_in_memory=limit)
    engine.feed(seg)
    engine.expire(int(seg["network_time"][-1]))    # spills past the limit
    if limit is not None:
        assert engine._engine.cold_count > 0
    split = engine.drain()      # connections a new one on their pair finished
    open_before = engine.open_count
    engine.finish(2)
    early = concat_flows([split, engine.drain()])
    assert engine.open_count == open_before - 2 >= 3
    unfinished = np.setdiff1d(want["first_frame"], early["first_frame"])
    later = unfinished.min()
    assert engine.min_open_first_frame() == later
    blocks = list(engine.snapshot_blocks())
    restored = TcpFlows(300 * SECOND, max_in_memory=limit)
    restored.restore_blocks(blocks)
    assert restored.open_count == engine.open_count
    assert restored.min_open_first_frame() == later
    engine.finish()
    restored.finish()
    assert_same_flows({**want, "conn_id": want["first_frame"]}, concat_flows([early, engine.drain()]), "finished")
    assert_same_flows({**want, "conn_id": want["first_frame"]}, concat_flows([early, restored.drain()]), "restored")


def test_random_segments_really_split_expire_and_flip():
    """The soups above are not vacuous: they hold idle splits, reuse splits and late (SYN-ACK-first) flips."""
    rng = np.random.default_rng(0)
    seg = random_segments(rng, 1500)
    _, ref = analyse(seg, 5 * SECOND)
    histories = ref["history"].astype(str)
    assert len(ref["conn_id"]) > 3 * len(PAIRS)
    assert any(h.startswith("^") for h in histories)
    assert len(set(ref["conn_state"].tolist())) >= 6
    assert set(ref["close"].tolist()) >= {"fin", "rst", "half_closed"}


def test_memory_follows_open_connections():
    """Connections that no packet can join any more leave the engine at expire()."""
    rng = np.random.default_rng(1)
    seg = random_segments(rng, 2000)
    engine = TcpFlows(5 * SECOND)
    engine.feed(seg)
    assert engine.open_count > 0
    engine.expire(int(seg["network_time"][-1]) + 6 * SECOND)
    assert engine.open_count == 0
    rows = engine.drain()
    _, ref = analyse(seg, 5 * SECOND)
    assert len(rows["first_frame"]) == len(ref["conn_id"])


@requires_thp_madvise
def test_big_arrays_ask_for_huge_pages():
    """With thousands of connections open, the records are read at random a segment at a time: from 2 MiB on
    they are a mapping with huge pages asked for (from the heap by a copy, then grown with mremap), as are
    the hash table and the heap at that size; and the flows stay the same. (Without the advice it fails:
    where THP is in madvise mode the mappings are then not THPeligible.)"""
    n, chunk = 40000, 1000
    seg = random_segments(np.random.default_rng(3), n)
    seg["sport"] = (1024 + np.arange(n) % 30000).astype(np.uint16)      # a pair of its own for most segments
    seg["dport"] = (1024 + np.arange(n) // 30000).astype(np.uint16)
    engine = TcpFlows(300 * SECOND, max_in_memory=None)
    record_sizes = []
    for start in range(0, n, chunk):
        engine.feed({k: v[start:start + chunk] for k, v in seg.items()})
        areas = engine._engine.memory_areas()
        record_sizes.append(areas["records"][1])
        for name, (address, size) in areas.items():
            # only the big ones: a small one lies in glibc's heap, where a numpy array that was there may
            # have asked for huge pages before (the full suite's workers showed it)
            if size >= 2 << 20:
                assert thp_eligible(address) is True, (name, size)
    assert record_sizes[0] < 2 << 20 <= record_sizes[-1] // 4       # grown past the copy, then twice more
    engine.finish()
    assert_same_flows(analyse(seg, 300 * SECOND)[1], engine.drain(), "many open connections")


def test_spilled_connections_really_go_to_the_file_and_come_back():
    rng = np.random.default_rng(5)
    seg = random_segments(rng, 3000)
    engine = TcpFlows(300 * SECOND, max_in_memory=1)
    revived = 0
    for start in range(0, 3000, 10):
        part = {k: v[start:start + 10] for k, v in seg.items()}
        before = engine.spilled
        engine.feed(part)
        revived += max(0, before - engine.spilled)
        engine.expire(int(part["network_time"][-1]))
        assert engine.open_count - engine.spilled <= 1
    assert engine.spill_bytes > 0 and engine.spilled > 0
    assert revived > 0          # packets arrived for connections whose records were in the file
    engine.finish()
    assert engine.spilled == 0 and engine.open_count == 0
    engine.close()


# --- one pair flooded with SYN-ACKs while Zeek's SYN-ACK-first flip is pending ----------------------------

def synack_flood(n: int, end_flags: int | None, seed: int = 0) -> dict:
    """A connection that starts with a SYN-ACK on ports that decide no orientation, n SYN-ACKs from both
    sides (retransmissions, new sequence numbers, some with bad checksums, a few with data), then one
    segment with end_flags (None: none) and a little traffic after it."""
    rng = np.random.default_rng(seed)
    a = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    b = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 2])
    forward = np.concatenate([[False], rng.random(n - 1) < 0.3])
    flags = np.full(n, 0x12, np.uint16)
    extra = [] if end_flags is None else [end_flags, 0x10, 0x18, 0x11, 0x10]
    flags = np.concatenate([flags, np.array(extra, np.uint16)])
    forward = np.concatenate([forward, np.array([True, False, True, True, False][:len(extra)], bool)])
    m = len(flags)
    addr = np.frombuffer(a + b, np.uint8).reshape(2, 16)
    payload = np.where(rng.random(m) < 0.05, 10, 0).astype(np.uint32)
    seg = {
        "frame": np.arange(1, m + 1, dtype=np.uint64),
        "ts": (10**18 + np.arange(m) * 1000).astype(np.int64),
        "vlan": np.full(m, -1, np.int32), "ip_version": np.full(m, 4, np.uint8),
        "src": addr[np.where(forward, 0, 1)].copy(), "dst": addr[np.where(forward, 1, 0)].copy(),
        "sport": np.where(forward, 40000, 50000).astype(np.uint16),
        "dport": np.where(forward, 50000, 40000).astype(np.uint16),
        "seq": rng.choice([1000, 1000, 5000, 77], m).astype(np.uint32),
        "ack": rng.choice([2001, 2001, 1001, 9], m).astype(np.uint32),
        "tcp_flags": flags, "window": np.full(m, 512, np.uint16),
        "payload_len": payload, "claimed_len": payload, "ip_len": payload + 40,
        "mss": np.zeros(m, np.uint16), "wscale": np.full(m, -1, np.int16), "sack_ok": np.zeros(m, np.uint8),
        "pflags": np.where(rng.random(m) < 0.02, PFlag.BAD_CHECKSUM, 0).astype(np.uint8),
    }
    seg["network_time"] = np.maximum.accumulate(seg["ts"])
    return seg


@pytest.mark.parametrize("end_flags", [0x10, 0x18, 0x04, 0x14, 0x02, None])
@pytest.mark.parametrize("n", [10, 63, 64, 65, 500])
def test_synack_floods_stream_to_the_same_flows(n, end_flags):
    """Beyond 64 held-back SYN-ACKs the engine follows both orientations at once instead of holding them:
    the same flows as the whole-capture stages, in any chunks, spilled, and restarted from snapshots."""
    from test_state import tcp_with_restarts

    seg = synack_flood(n, end_flags, seed=n)
    _, ref = analyse(seg, 300 * SECOND)
    for chunk in (1, 7, len(seg["frame"])):
        assert_same_flows(ref, stream(seg, chunk), f"n {n} end {end_flags} chunk {chunk}")
    assert_same_flows(ref, stream(seg, 5, max_in_memory=0), f"n {n} end {end_flags} spilled")
    assert_same_flows(ref, tcp_with_restarts(seg, 9, 300 * SECOND)[0], f"n {n} end {end_flags} restarted")
    assert_same_flows(ref, tcp_with_restarts(seg, 9, 300 * SECOND, max_in_memory=0)[0], "restarted, spilled")


def test_synack_flood_memory_stays_bounded():
    """200,000 SYN-ACKs on one pair with the flip still pending: the open connection's saved state is a few
    KB, not 32 bytes a segment."""
    seg = synack_flood(200_000, None)
    engine = TcpFlows(300 * SECOND)
    engine.feed(seg)
    assert engine.open_count == 1
    assert sum(len(b) for b in engine.snapshot_blocks()) < 8192


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_tcp_part_rows_is_packet_parts_split(parts):
    """tcp_part_rows (the pipeline's decoder thread: the rows each engine gets, in one pass) against what it
    replaced: packet_parts, and numpy's TCP rows with a right IP checksum, split by part; on statuses of
    every kind and any flags."""
    from fastflow.tcpflows import tcp_part_rows
    rng = np.random.default_rng(70 + parts)
    for n in (0, 1, 3000):
        seg = random_segments(rng, n) if n else {k: v[:0] for k, v in random_segments(rng, 2).items()}
        seg["status"] = rng.integers(0, max(Status) + 1, n).astype(np.uint8)
        seg["pflags"] = rng.integers(0, 128, n).astype(np.uint8)
        part = packet_parts(seg, parts)
        tcp = (seg["status"] == Status.TCP) & ((seg["pflags"] & PFlag.BAD_IP_CHECKSUM) == 0)
        got = tcp_part_rows(seg, parts)
        assert len(got) == parts
        for i in range(parts):
            assert got[i].dtype == np.int64
            assert np.array_equal(got[i], np.flatnonzero(tcp & (part == i)))
