"""Open connections saved and restored (snapshot_blocks / restore_blocks of both streaming engines): an
engine restarted from its snapshot after any chunk gives exactly the flows of one engine fed everything.
This is what lets `fastflow batch` carry connections across files and across runs."""
from __future__ import annotations

import numpy as np
import pytest

from corpus import CAPTURES, capture_names, decode_all, requires_corpus
from fastflow.datagram import DatagramStream
from fastflow.server_ports import ZEEK_LIKELY_SERVER_PORTS_UDP
from fastflow.summary import analyse
from fastflow.tcpflows import TcpFlows
from test_dgram_engine import (
    SYNTH_TIMEOUTS,
    assert_same,
    concat,
    corpus_rows,
    reference,
    synthetic_rows,
)
from test_tcpflows import SECOND, assert_same_flows, concat_flows, corpus_segments, random_segments


def tcp_with_restarts(seg: dict, chunk: int, timeout_ns: int, restart_every: int = 1, vlan_aware=False,
                      max_in_memory=None) -> tuple[dict, int]:
    """Feed seg in chunks; every restart_every chunks, replace the engine by a new one restored from its
    snapshot. Returns the flows and the most connections carried by one restart."""
    def new_engine():
        return TcpFlows(timeout_ns, vlan_aware=vlan_aware, max_in_memory=max_in_memory)

    engine = new_engine()
    parts, carried = [], 0
    n = len(seg["frame"])
    for k, start in enumerate(range(0, n, chunk)):
        part = {name: v[start:start + chunk] for name, v in seg.items()}
        engine.feed(part)
        engine.expire(int(part["network_time"][-1]))
        parts.append(engine.drain())
        if k % restart_every == 0:
            blocks = list(engine.snapshot_blocks())
            carried = max(carried, engine.open_count)
            before = engine.open_count
            engine.close()
            engine = new_engine()
            engine.restore_blocks(blocks)
            assert engine.open_count == before
    engine.finish()
    parts.append(engine.drain())
    return concat_flows(parts), carried


@pytest.mark.parametrize("seed", range(20))
def test_tcp_random_soups_survive_restarts(seed):
    rng = np.random.default_rng(seed)
    seg = random_segments(rng, int(rng.integers(200, 1500)))
    timeout = int(rng.choice([5 * SECOND, 300 * SECOND]))
    vlan_aware = seed % 3 == 0
    _, ref = analyse(seg, timeout, vlan_aware=vlan_aware)
    for chunk, every, limit in ((1, 1, None), (13, 2, None), (50, 1, 0), (7, 3, 2)):
        got, carried = tcp_with_restarts(seg, chunk, timeout, every, vlan_aware, limit)
        assert carried > 0
        assert_same_flows(ref, got, f"seed {seed} chunk {chunk} every {every} in memory {limit}")


@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_tcp_corpus_survives_restarts(name):
    seg = corpus_segments(name)
    n = len(seg["frame"])
    _, ref = analyse(seg, 300 * SECOND)
    chunk = max(1, n // 5)
    assert_same_flows(ref, tcp_with_restarts(seg, chunk, 300 * SECOND)[0], f"{name} chunk {chunk}")
    # the records of spilled connections are read back from the temporary file into the snapshot
    assert_same_flows(ref, tcp_with_restarts(seg, 97, 300 * SECOND, 3, max_in_memory=0)[0], f"{name} spilled")


def dgram_with_restarts(pk: dict, chunk: int, timeouts=None, vlan_aware=False) -> tuple[dict, int]:
    stream = DatagramStream(timeouts, ZEEK_LIKELY_SERVER_PORTS_UDP, vlan_aware)
    parts, carried = [], 0
    n = len(pk["ts"])
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        stream.feed({k: v[start:end] for k, v in pk.items()})
        stream.expire(pk["network_time"][end - 1])
        parts.append(stream.drain())
        blocks = list(stream.snapshot_blocks())
        carried = max(carried, stream.open_count)
        restored = DatagramStream(timeouts, ZEEK_LIKELY_SERVER_PORTS_UDP, vlan_aware)
        restored.restore_blocks(blocks)
        assert restored.open_count == stream.open_count
        assert restored.min_open_first_frame() == stream.min_open_first_frame()
        stream = restored
    stream.finish()
    parts.append(stream.drain())
    got = concat(parts)
    order = np.argsort(got["first_frame"], kind="stable")
    return {k: v[order] for k, v in got.items()}, carried


@pytest.mark.parametrize("timeouts", SYNTH_TIMEOUTS)
def test_datagram_synthetic_survives_restarts(timeouts):
    pk = synthetic_rows()
    got, carried = dgram_with_restarts(pk, 997, timeouts)
    assert carried > 0
    assert_same(got, reference(pk, timeouts), f"restarts {timeouts}")


@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_datagram_corpus_survives_restarts(name):
    pk = corpus_rows(name)
    if not pk:
        pytest.skip("no packets")
    got, _ = dgram_with_restarts(pk, max(1, len(pk["ts"]) // 7))
    assert_same(got, reference(pk), name)


def test_damaged_snapshots_are_refused():
    rng = np.random.default_rng(3)
    seg = random_segments(rng, 500)
    engine = TcpFlows(300 * SECOND)
    engine.feed(seg)
    blocks = list(engine.snapshot_blocks())
    assert blocks and engine.open_count > 0
    with pytest.raises(ValueError, match="truncated"):
        TcpFlows(300 * SECOND).restore_blocks([blocks[0][:-1]])
    twice = TcpFlows(300 * SECOND)
    with pytest.raises(ValueError, match="already open"):
        twice.restore_blocks(blocks + blocks)

    pk = {k: v[:3000] for k, v in synthetic_rows().items()}
    stream = DatagramStream()
    stream.feed(pk)
    blocks = list(stream.snapshot_blocks())
    assert blocks
    with pytest.raises(ValueError, match="truncated"):
        DatagramStream().restore_blocks([blocks[0][:-1]])
    with pytest.raises(ValueError, match="already open"):
        DatagramStream().restore_blocks(blocks + blocks)


# --- parts: a stream's connections split by address/port pair (fastflow batch -j on one stream) ----------

@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_parts_analysed_apart_give_the_same_flows(name):
    """Packets split into 3 parts by packet_parts, each part through its own engines (network time still
    from every packet), open connections saved half way unsplit and restored part by part: together the
    same TCP and datagram flows as one engine fed everything."""
    from fastflow.decode import PFlag, Status
    from fastflow.pipeline import DATAGRAM_INPUT_COLUMNS, SEGMENT_INPUT_COLUMNS, add_network_time
    from fastflow.tcpflows import packet_parts

    pk, _ = decode_all(CAPTURES / name)
    if not pk:
        pytest.skip("no packets")
    add_network_time(pk, np.iinfo(np.int64).min)
    valid = (pk["pflags"] & PFlag.BAD_IP_CHECKSUM) == 0
    is_tcp = (pk["status"] == Status.TCP) & valid
    is_dg = np.isin(pk["status"], [Status.UDP, Status.ICMP, Status.ICMP6, Status.OTHER_IP]) & valid
    parts = packet_parts(pk, 3)
    n = len(pk["frame"])
    half = n // 2

    def rows(mask, columns, lo, hi):
        keep = np.flatnonzero(mask[lo:hi]) + lo
        return {c: pk[c][keep] for c in columns}

    tcp, dg = TcpFlows(300 * SECOND), DatagramStream(None, ZEEK_LIKELY_SERVER_PORTS_UDP)
    tcp.feed(rows(is_tcp, SEGMENT_INPUT_COLUMNS, 0, half))
    dg.feed(rows(is_dg, DATAGRAM_INPUT_COLUMNS, 0, half))
    if half:
        tcp.expire(int(pk["network_time"][half - 1]))
        dg.expire(int(pk["network_time"][half - 1]))
    tcp_parts, dg_parts = [tcp.drain()], [dg.drain()]
    tcp_blocks, dg_blocks = list(tcp.snapshot_blocks()), list(dg.snapshot_blocks())
    seen = set()
    for p in range(3):
        t, d = TcpFlows(300 * SECOND), DatagramStream(None, ZEEK_LIKELY_SERVER_PORTS_UDP)
        t.restore_blocks(tcp_blocks, p, 3)
        d.restore_blocks(dg_blocks, p, 3)
        mine = parts == p
        t.feed(rows(is_tcp & mine, SEGMENT_INPUT_COLUMNS, half, n))
        d.feed(rows(is_dg & mine, DATAGRAM_INPUT_COLUMNS, half, n))
        t.finish()
        d.finish()
        tcp_parts.append(t.drain())
        dg_parts.append(d.drain())
        if len(tcp_parts[-1]["first_frame"]) or len(dg_parts[-1]["first_frame"]):
            seen.add(p)
    if is_tcp.any():
        _, ref = analyse({c: pk[c][is_tcp] for c in SEGMENT_INPUT_COLUMNS}, 300 * SECOND)
        assert_same_flows(ref, concat_flows(tcp_parts), name)
    if is_dg.any():
        got = concat(dg_parts)
        order = np.argsort(got["first_frame"], kind="stable")
        assert_same({k: v[order] for k, v in got.items()},
                    reference({c: pk[c][is_dg] for c in DATAGRAM_INPUT_COLUMNS}), name)


def test_parts_are_spread():
    """Many connections fall in every part, in proportion (one loopback host pair still spreads by port)."""
    from fastflow.tcpflows import packet_parts

    n = 30000
    rng = np.random.default_rng(0)
    src = np.zeros((n, 16), np.uint8)
    src[:, 10:12] = 0xFF
    src[:, 12], src[:, 15] = 127, 1
    pk = {"src": src, "dst": src.copy(), "sport": rng.integers(1024, 65535, n).astype(np.uint16),
          "dport": np.full(n, 80, np.uint16), "status": np.ones(n, np.uint8)}
    from fastflow.decode import Status

    pk["status"][:] = Status.TCP
    counts = np.bincount(packet_parts(pk, 4), minlength=4)
    assert counts.min() > 0.2 * n and counts.max() < 0.3 * n
    # the two directions of a pair fall together
    back = dict(pk, src=pk["dst"], dst=pk["src"], sport=pk["dport"], dport=pk["sport"])
    assert np.array_equal(packet_parts(pk, 4), packet_parts(back, 4))
