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
from test_tcpflows import SECOND, assert_same_flows, concat_flows, random_segments, tcp_rows


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
    pk, _ = decode_all(CAPTURES / name)
    if not pk:
        pytest.skip("no packets")
    seg = tcp_rows(pk)
    n = len(seg["frame"])
    if n == 0:
        pytest.skip("no TCP segments")
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
