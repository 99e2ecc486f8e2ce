"""The streaming datagram flow stage (fastflow.datagram.DatagramStream, ext/_dgram.pyx) against datagram_flows.

The contract: whatever the split of a capture's rows into consecutive feed() chunks, with expire(network time so
far) between chunks, then finish(), the rows of all drain() results sorted by first_frame equal
datagram_flows(all rows with network_time) without first_index / flow_of_row, column by column (dtypes, masks,
strings, float durations), exactly. Checked on every corpus capture and on a synthetic table built to reach
every rule (interleaved flows, ICMP pairs and one-way messages, UDP server ports both ways, broadcast, other
protocols and the ones Zeek makes no connection of, VLANs, a clock stepping backwards, timeouts of 0).
"""
from __future__ import annotations

import functools
import ipaddress

import numpy as np
import pytest

from fastflow.datagram import DatagramStream, datagram_flows
from fastflow.server_ports import ZEEK_LIKELY_SERVER_PORTS_UDP
from tests.corpus import CAPTURES, capture_names, decode_all, requires_corpus

PK_COLUMNS = ("frame", "ts", "status", "vlan", "ip_version", "src", "dst", "ip_proto", "sport", "dport",
              "ip_len", "payload_len", "network_time")
S = 10**9
SMALL = {"udp": S, "icmp": S, "other": S}
TINY = {"udp": 10**6, "icmp": 10**6, "other": 10**6}
NEVER = {"udp": 0, "icmp": 0, "other": 0}
NO_FLOW = 2**64 - 1


# ---------------------------------------------------------------------------------------------------------------
# helpers

def reference(pk: dict, timeouts=None, server_ports=ZEEK_LIKELY_SERVER_PORTS_UDP, vlan_aware=False) -> dict:
    out = datagram_flows(pk, timeouts, server_ports, vlan_aware)
    del out["first_index"], out["flow_of_row"]
    return out


def concat(parts: list[dict]) -> dict:
    out = {}
    for k in parts[0]:
        cols = [p[k] for p in parts]
        out[k] = np.ma.concatenate(cols) if isinstance(cols[0], np.ma.MaskedArray) else np.concatenate(cols)
    return out


def stream(pk: dict, chunks, timeouts=None, server_ports=ZEEK_LIKELY_SERVER_PORTS_UDP, vlan_aware=False,
           expire=True, check_open=None):
    """Feed pk in chunks (an int: that size; else a list of chunk ends), expire() and drain() after each;
    returns (rows sorted by first_frame, number of flows drained before finish(), largest open_count)."""
    n = len(pk["ts"])
    ends = list(range(chunks, n, chunks)) + [n] if isinstance(chunks, int) else list(chunks)
    s = DatagramStream(timeouts, server_ports, vlan_aware)
    parts, start, early, peak = [], 0, 0, 0
    for end in ends:
        s.feed({k: v[start:end] for k, v in pk.items()})
        peak = max(peak, s.open_count)
        if expire and end > start:
            s.expire(pk["network_time"][end - 1])
        parts.append(s.drain())
        early += len(parts[-1]["first_frame"])
        if check_open is not None:
            check_open(s, end, parts[-1])
        start = end
    s.finish()
    assert s.open_count == 0 and s.min_open_first_frame() == NO_FLOW
    parts.append(s.drain())
    assert len(s.drain()["first_frame"]) == 0
    for p in parts:   # each drain is sorted by first_frame
        assert np.all(np.diff(p["first_frame"].astype(np.float64)) >= 0)
    got = concat(parts)
    order = np.argsort(got["first_frame"], kind="stable")
    return {k: v[order] for k, v in got.items()}, early, peak


def assert_same(got: dict, want: dict, what: str = "") -> None:
    assert list(got) == list(want), what
    for k in want:
        g, w = got[k], want[k]
        assert isinstance(g, np.ma.MaskedArray) == isinstance(w, np.ma.MaskedArray), (what, k)
        assert g.dtype == w.dtype and g.shape == w.shape, (what, k, g.dtype, w.dtype, g.shape, w.shape)
        assert np.array_equal(np.ma.getmaskarray(g), np.ma.getmaskarray(w)), (what, k)
        gd, wd = np.ma.getdata(g), np.ma.getdata(w)
        if not np.array_equal(gd, wd):
            bad = np.flatnonzero((gd != wd).reshape(len(wd), -1).any(axis=1))[:5]
            raise AssertionError(f"{what} column {k}: rows {bad}: got {gd[bad]} want {wd[bad]}")


def check_all(pk: dict, chunk_sizes, what: str, **kw) -> tuple[int, int]:
    want = reference(pk, **kw)
    early = 0
    for chunks in chunk_sizes:
        for expire in ((True,) if chunks in (1, 7) else (True, False)):
            got, e, _ = stream(pk, chunks, expire=expire, **kw)
            assert_same(got, want, f"{what} chunks={chunks} expire={expire} {kw}")
            early += e
    return len(want["first_frame"]), early


# ---------------------------------------------------------------------------------------------------------------
# the corpus

@functools.lru_cache(maxsize=None)
def corpus_rows(name: str) -> dict:
    cols, _ = decode_all(CAPTURES / name)
    if not cols:
        return {}
    cols["network_time"] = np.maximum.accumulate(np.asarray(cols["ts"], dtype=np.int64))
    return {k: cols[k] for k in PK_COLUMNS}


def chunk_sizes(n: int) -> list[int]:
    return ([1] if n < 5000 else []) + [7, 1000, max(n, 1)]


VLAN_AWARE_CAPTURES = ("zeek__wikipedia.pcap", "zeek__cisco-fabric-path.pcap", "zeek__vlan-collisions.pcap",
                       "zeek__mixed-vlan-mpls.pcap", "tcpdump__802.1ad_QinQ.pcap")


@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_corpus_capture_streamed_equals_datagram_flows(name):
    pk = corpus_rows(name)
    if not pk:
        pytest.skip("no packets")
    sizes = chunk_sizes(len(pk["ts"]))
    check_all(pk, sizes, name)
    check_all(pk, sizes, name, timeouts=SMALL)
    check_all(pk, sizes, name, timeouts=TINY)
    if name in VLAN_AWARE_CAPTURES:
        check_all(pk, sizes, name, timeouts=SMALL, vlan_aware=True)


@requires_corpus
def test_corpus_really_splits_and_expires():
    """The comparisons above are not vacuous: some corpus flows are split by a packet after the timeout
    (one whole chunk, no expire() call) and some are finalized by expire() before finish()."""
    splits = expired = 0
    for name in capture_names():
        pk = corpus_rows(name)
        if not pk:
            continue
        n_never = len(reference(pk, NEVER)["first_frame"])
        n_tiny = len(reference(pk, TINY)["first_frame"])
        splits += n_tiny - n_never
        # one chunk, no expire(): the flows drained before finish() are the ones split inside feed()
        got, in_feed, _ = stream(pk, len(pk["ts"]), timeouts=TINY, expire=False)
        assert in_feed == n_tiny - n_never
        expired += stream(pk, 7, timeouts=SMALL)[1]
    assert splits > 0
    assert expired > 0


# ---------------------------------------------------------------------------------------------------------------
# a synthetic table

ST_TCP, ST_UDP, ST_ICMP, ST_ICMP6, ST_OTHER, ST_NON_IP = 0, 1, 2, 3, 4, 5


def addr16(text: str) -> np.ndarray:
    ip = ipaddress.ip_address(text)
    raw = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
    return np.frombuffer(raw, dtype=np.uint8)


def synthetic(n_rows: int = 20000, n_conv: int = 1000, seed: int = 7) -> dict:
    """Rows of many interleaved conversations; each conversation is (status, ip_proto, A, B, A->B ports,
    B->A ports), and each row a packet of one of them in a random direction (a one-way kind only A->B)."""
    rng = np.random.default_rng(seed)
    v4 = [addr16(f"10.0.{i // 200}.{i % 200 + 1}") for i in range(60)]
    v6 = [addr16(f"2001:db8::{i + 1:x}") for i in range(30)]
    bcast = addr16("255.255.255.255")
    ports = [53, 67, 68, 123, 137, 443, 5353, 1024, 40000, 50000, 60001]
    conv = []
    for _ in range(n_conv):
        kind = rng.choice(["udp", "udp", "udp", "bcast", "echo", "icmp_one", "echo6", "nd6", "icmp6_one",
                           "other", "noconn", "same"], p=[.25, .1, .1, .04, .1, .07, .06, .04, .04, .08, .06, .06])
        six = kind in ("echo6", "nd6", "icmp6_one") or (kind in ("udp", "other") and rng.random() < .2)
        hosts = v6 if six else v4
        a, b = rng.choice(len(hosts), 2, replace=False)
        A, B = hosts[a], hosts[b]
        vlan = int(rng.choice([-1, -1, 10, 20]))
        if kind in ("udp", "same"):
            pa = int(rng.choice(ports)) if rng.random() < .6 else int(rng.integers(1, 65536))
            pb = int(rng.choice(ports)) if rng.random() < .6 else int(rng.integers(1, 65536))
            if kind == "same":
                B = A
            conv.append((ST_UDP, 17, A, B, (pa, pb), (pb, pa), False, vlan, int(rng.integers(0, 1400))))
        elif kind == "bcast":
            conv.append((ST_UDP, 17, A, bcast, (67, 68), (68, 67), True, vlan, 300))
        elif kind == "echo":
            conv.append((ST_ICMP, 1, A, B, (8, 0), (0, 0), False, vlan, 56))
        elif kind == "icmp_one":
            t, c = [(3, 1), (3, 3), (11, 0), (5, 1), (0, 0)][int(rng.integers(0, 5))]
            conv.append((ST_ICMP, 1, A, B, (t, c), (t, c), rng.random() < .7, vlan, 28))
        elif kind == "echo6":
            conv.append((ST_ICMP6, 58, A, B, (128, 0), (129, 0), False, vlan, 56))
        elif kind == "nd6":
            conv.append((ST_ICMP6, 58, A, B, (135, 0), (136, 0), False, vlan, 24))
        elif kind == "icmp6_one":
            t, c = [(1, 4), (3, 0), (129, 0)][int(rng.integers(0, 3))]
            conv.append((ST_ICMP6, 58, A, B, (t, c), (t, c), rng.random() < .7, vlan, 40))
        elif kind == "other":
            proto = int(rng.choice([89, 132, 103, 112]))
            conv.append((ST_OTHER, proto, A, B, (0, 0), (0, 0), False, vlan, 60))
        else:
            proto = int(rng.choice([2, 4, 41, 47, 50, 59, 135]))
            conv.append((ST_OTHER, proto, A, B, (0, 0), (0, 0), False, vlan, 60))
    # a skewed choice: some conversations get many packets
    weights = rng.pareto(1.2, n_conv) + 0.05
    which = rng.choice(n_conv, n_rows, p=weights / weights.sum())
    backward = rng.random(n_rows) < 0.5
    pk = {"frame": np.arange(1, n_rows + 1, dtype=np.uint64) * 2,   # gaps: frames of rows not given
          "status": np.zeros(n_rows, np.uint8), "ip_proto": np.zeros(n_rows, np.uint8),
          "vlan": np.full(n_rows, -1, np.int32), "ip_version": np.zeros(n_rows, np.uint8),
          "src": np.zeros((n_rows, 16), np.uint8), "dst": np.zeros((n_rows, 16), np.uint8),
          "sport": np.zeros(n_rows, np.uint16), "dport": np.zeros(n_rows, np.uint16),
          "ip_len": np.zeros(n_rows, np.uint32), "payload_len": np.zeros(n_rows, np.uint32)}
    for i, (c, back) in enumerate(zip(which.tolist(), backward.tolist())):
        status, proto, A, B, fwd, rev, one_way, vlan, size = conv[c]
        back = back and not one_way
        pk["status"][i], pk["ip_proto"][i] = status, proto
        pk["vlan"][i] = vlan if rng.random() < .95 else 30    # a few packets with another tag
        pk["src"][i], pk["dst"][i] = (B, A) if back else (A, B)
        pk["sport"][i], pk["dport"][i] = rev if back else fwd
        pk["ip_version"][i] = 4 if A[10] == 0xFF and not A[:10].any() else 6
        plen = int(rng.integers(0, size + 1))
        pk["payload_len"][i] = plen
        pk["ip_len"][i] = plen + 28 + (20 if pk["ip_version"][i] == 6 else 0)
    # rows the stage ignores: TCP, non-IP, truncated
    other = rng.random(n_rows)
    pk["status"][other < .08] = ST_TCP
    pk["ip_proto"][other < .08] = 6
    pk["status"][(other >= .08) & (other < .1)] = ST_NON_IP
    pk["status"][(other >= .1) & (other < .11)] = 7
    # time: steps of 0 to 0.8 s in tenths (so that gaps of exactly a timeout occur), some jitter backwards,
    # and one clock step back by 40 s
    step = rng.integers(0, 9, n_rows) * 10**8
    ts = 1_700_000_000 * S + np.cumsum(step)
    ts -= np.where(rng.random(n_rows) < .05, rng.integers(0, 30, n_rows) * 10**8, 0)
    ts[n_rows // 2:] -= 40 * S
    pk["ts"] = ts.astype(np.int64)
    pk["network_time"] = np.maximum.accumulate(pk["ts"])
    return pk


@functools.lru_cache(maxsize=None)
def synthetic_rows() -> dict:
    return synthetic()


SYNTH_TIMEOUTS = [None, {"udp": 5 * S, "icmp": 3 * S, "other": 7 * S}, {"udp": 0, "icmp": 2 * S}, TINY]


@pytest.mark.parametrize("timeouts", SYNTH_TIMEOUTS)
@pytest.mark.parametrize("vlan_aware", [False, True])
def test_synthetic_streamed_equals_datagram_flows(timeouts, vlan_aware):
    pk = synthetic_rows()
    n = len(pk["ts"])
    rng = np.random.default_rng(11)
    random_ends = sorted(set(rng.integers(1, n, 300).tolist())) + [n]
    kw = dict(timeouts=timeouts, vlan_aware=vlan_aware)
    n_flows, early = check_all(pk, [7, 1000, n, random_ends], "synthetic", **kw)
    if timeouts is not None:
        assert early > 0
    # also without likely server ports, and with them as {"udp": ports}
    want = reference(pk, server_ports=None, **kw)
    assert_same(stream(pk, 1000, server_ports=None, **kw)[0], want)
    want = reference(pk, server_ports={"udp": (53, 67, 123, 5353)}, **kw)
    assert_same(stream(pk, 333, server_ports={"udp": (53, 67, 123, 5353)}, **kw)[0], want)


def test_synthetic_one_row_chunks():
    pk = {k: v[:6000] for k, v in synthetic_rows().items()}
    for timeouts in (SYNTH_TIMEOUTS[1], TINY):
        assert_same(stream(pk, 1, timeouts=timeouts)[0], reference(pk, timeouts), "one-row chunks")


def test_synthetic_really_splits_both_ways():
    """The synthetic table makes flows split inside a feed (no expire) and by expire()."""
    pk = synthetic_rows()
    t = SYNTH_TIMEOUTS[1]
    assert len(reference(pk, t)["first_frame"]) > len(reference(pk, NEVER)["first_frame"]) + 100
    # one chunk, no expire(): every key but its last flow was split inside feed()
    assert stream(pk, len(pk["ts"]), timeouts=t, expire=False)[1] == (len(reference(pk, t)["first_frame"])
                                                                    - len(reference(pk, NEVER)["first_frame"]))
    assert stream(pk, 100, timeouts=t)[1] > 100
    want = reference(pk, t)
    assert set(want["proto"].tolist()) == {"udp", "icmp", "icmp6", "other"}
    assert set(want["history"].tolist()) == {"", "D", "Dd", "^d", "^dD"}   # a first packet is from the
    # originator unless the roles were flipped
    assert {"SF", "S0", "SHR", "OTH"} <= set(want["conn_state"].tolist())
    assert np.ma.getmaskarray(want["orig_bytes"]).any() and not np.ma.getmaskarray(want["orig_bytes"]).all()


def test_open_count_and_min_open_first_frame_follow_the_open_flows():
    """After each chunk and expire(network time N), the open flows are exactly the reference's flows that
    started and are not over: a flow is over once its last packet was fed and last_time + timeout <= N (a
    packet that split it had network time >= N' with last_time + timeout <= N' <= N). Independent of what
    the stream drained; the clock step back makes deadlines move earlier."""
    pk = synthetic_rows()
    t = SYNTH_TIMEOUTS[1]
    ref = reference(pk, t)
    timeout = np.select([ref["proto"] == "udp", ref["proto"] == "other"], [t["udp"], t["other"]], t["icmp"])
    last_ts = pk["ts"][np.searchsorted(pk["frame"], ref["last_frame"])]
    seen = {"exact": 0}

    def check(s, end, part):
        cur, net = pk["frame"][end - 1], pk["network_time"][end - 1]
        over = (ref["last_frame"] <= cur) & (last_ts + timeout <= net)
        is_open = (ref["first_frame"] <= cur) & ~over
        assert s.open_count == np.count_nonzero(is_open)
        assert s.min_open_first_frame() == (int(ref["first_frame"][is_open].min()) if is_open.any() else NO_FLOW)
        seen["exact"] += np.count_nonzero((ref["last_frame"] <= cur) & (last_ts + timeout == net))

    got, _, peak = stream(pk, 50, timeouts=t, check_open=check)
    assert_same(got, reference(pk, t))
    assert 0 < peak < len(ref["first_frame"]) / 3   # expiry keeps few flows open
    assert seen["exact"] > 0    # some flows are due exactly at an expire() call


def test_splits_at_exactly_the_timeout():
    """A packet exactly ``timeout`` after the flow's last one starts a new flow; 1 ns earlier it does not."""
    pk = {k: v[:2000].copy() for k, v in synthetic_rows().items()}
    pk["src"][:] = pk["src"][0]
    pk["dst"][:] = pk["dst"][0]
    pk["status"][:], pk["ip_proto"][:], pk["vlan"][:] = ST_UDP, 17, -1
    pk["sport"][:], pk["dport"][:] = 40000, 53
    gaps = np.where(np.arange(2000) % 3 == 0, 5 * S, 5 * S - 1)
    pk["ts"] = (np.cumsum(gaps) - gaps[0]).astype(np.int64)
    pk["network_time"] = pk["ts"].copy()
    t = {"udp": 5 * S}
    want = reference(pk, t)
    assert len(want["first_frame"]) == 1 + np.count_nonzero(gaps[1:] == 5 * S)
    for chunks in (1, 7, 2000):
        for expire in (True, False):
            assert_same(stream(pk, chunks, timeouts=t, expire=expire)[0], want, f"{chunks} {expire}")


def test_expire_releases_memory():
    """Many flows, then expire(): the table and the pool give their memory back; timeout 0 never expires."""
    n = 50000
    i = np.arange(n)
    src = np.zeros((n, 16), np.uint8)
    src[:, 10:12] = 0xFF
    src[:, 12] = 10
    src[:, 13] = (i >> 16) & 0xFF
    src[:, 14] = (i >> 8) & 0xFF
    src[:, 15] = i & 0xFF
    dst = np.tile(addr16("192.0.2.1"), (n, 1))
    pk = {"frame": (i + 1).astype(np.uint64), "ts": (i * 1000).astype(np.int64),
          "status": np.where(i % 2 == 0, ST_UDP, ST_OTHER).astype(np.uint8),
          "vlan": np.full(n, -1, np.int32), "ip_version": np.full(n, 4, np.uint8), "src": src, "dst": dst,
          "ip_proto": np.where(i % 2 == 0, 17, 89).astype(np.uint8),
          "sport": np.full(n, 40000, np.uint16), "dport": np.full(n, 53, np.uint16),
          "ip_len": np.full(n, 60, np.uint32), "payload_len": np.full(n, 32, np.uint32)}
    pk["network_time"] = pk["ts"].copy()
    s = DatagramStream({"udp": S, "other": 0})
    s.feed(pk)
    assert s.open_count == n
    pool_cap, table_cap, _ = s._engine.capacity()
    assert pool_cap >= n and table_cap >= 2 * n
    s.expire(int(pk["ts"][-1]) + S)
    assert s.open_count == n // 2    # the "other" flows (timeout 0) stay
    assert s.min_open_first_frame() == 2
    got = s.drain()
    assert len(got["first_frame"]) == n // 2 and set(got["proto"].tolist()) == {"udp"}
    s.finish()
    assert s.open_count == 0
    assert len(s.drain()["first_frame"]) == n // 2

    s = DatagramStream({"udp": S, "other": S})
    s.feed(pk)
    s.expire(int(pk["ts"][-1]) + S)
    assert s.open_count == 0 and s.min_open_first_frame() == NO_FLOW
    pool_cap, table_cap, _ = s._engine.capacity()
    assert pool_cap <= 256 and table_cap <= 512    # compacted back to the open flows
    assert len(s.drain()["first_frame"]) == n
    # the engine keeps working after compaction
    s.feed(pk)
    assert s.open_count == n
    s.finish()
    assert_same({k: v for k, v in s.drain().items()}, reference(pk, {"udp": S, "other": S}))


def test_expire_while_flows_stay_open_keeps_state():
    """Compaction with open flows left (some expired, some not) keeps them joinable."""
    pk = synthetic_rows()
    t = {"udp": 5 * S, "icmp": 3 * S, "other": 0}
    got, _, _ = stream(pk, 50, timeouts=t)
    assert_same(got, reference(pk, t))


def test_feed_without_network_time_follows_the_running_maximum_of_ts():
    pk = {k: v for k, v in synthetic_rows().items() if k != "network_time"}
    t = SYNTH_TIMEOUTS[1]
    want = datagram_flows(pk, t, ZEEK_LIKELY_SERVER_PORTS_UDP)
    del want["first_index"], want["flow_of_row"]
    s = DatagramStream(t, ZEEK_LIKELY_SERVER_PORTS_UDP)
    parts = []
    for start in range(0, len(pk["ts"]), 999):
        s.feed({k: v[start:start + 999] for k, v in pk.items()})
        parts.append(s.drain())
    s.finish()
    parts.append(s.drain())
    got = concat(parts)
    order = np.argsort(got["first_frame"], kind="stable")
    assert_same({k: v[order] for k, v in got.items()}, want)


def test_empty_feeds_and_drains():
    s = DatagramStream()
    empty = {k: v[:0] for k, v in synthetic_rows().items()}
    s.feed(empty)
    s.expire(0)
    s.finish()
    got = s.drain()
    want = reference(empty)
    assert_same(got, want)
    assert s.open_count == 0 and s.min_open_first_frame() == NO_FLOW
