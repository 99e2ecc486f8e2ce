"""fastflow's flows against Zeek's own conn.log, and its TCP connection counts against tshark's tcp.stream.

Every capture of ../shared/corpus with a Zeek baseline (full conn.log, zeek-cut column subsets and the
conn_state-RST-behavior lines) is processed with the checksum setting of its Zeek run (-C: no verification)
and its rows are matched with Zeek's by (orig_h, orig_p, resp_h, resp_p, proto), duplicates by duration
(tests/zeek_baselines.py). conn_state must agree on every matched row; the other compared columns on at least
98% of them, and every difference, unmatched Zeek row or extra row of ours is listed below with its reason:
the test fails on any difference that is not listed and on any listed one that no longer occurs.
"""
from __future__ import annotations

import pytest

from fastflow.pipeline import process
from tests.corpus import CAPTURES, CORPUS, requires_corpus
from tests import zeek_baselines as zb

COMPARED = ("conn_state", "history", "duration", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes",
            "orig_bytes", "resp_bytes")

GAP = "g/G is a content gap found by Zeek's stream reassembly, which fastflow does not do"
# (capture, column, (orig_h, orig_p, resp_h, resp_p, proto)) -> (zeek, ours, reason)
EXPECTED_DIFFERENCES = {
    ("zeek__tcp__miss_end_data.pcap", "history", ("192.168.122.230", "60648", "77.238.160.184", "80", "tcp")):
        ("ShADafgF", "ShADafF", GAP),
    ("zeek__tcp__retransmit-fast009.pcap", "history", ("10.0.88.85", "50368", "192.168.0.27", "80", "tcp")):
        ("ShADaGdgtR", "ShADadtR", GAP),
}
# (capture, Zeek's key) -> reason
EXPECTED_UNMATCHED_ZEEK = {
    ("zeek__tunnels__vxlan-encapsulated-http.pcap", ("172.16.11.201", "40354", "54.86.237.188", "80", "tcp")):
        "the HTTP connection inside the VXLAN tunnel: fastflow does not decode tunnels (it has the outer UDP flow)",
}
# (capture, our key) -> reason
EXPECTED_EXTRA_OURS: dict = {}

# captures whose TCP connection count differs from tshark's number of tcp.stream values, with the reason
EXPECTED_STREAM_COUNT_DIFFERENCES = {
    "suricata__detect-ipopts__input.pcap": (
        1, 3, "Wireshark takes a loose-source-route option's final hop as ip.dst, so two packets of the one "
              "connection form streams of their own"),
    "zeek__ipv4__fragmented-syn.pcap": (
        0, 1, "tshark reassembles the fragmented SYN; fastflow does not reassemble IP fragments and the first "
              "fragment is too short for the TCP header"),
    "zeek__pop3__pop3.pcap": (
        11, 7, "after a refused SYN (answered by a RST) Zeek and fastflow count the next SYN on the tuple as a new "
               "connection (Zeek's baseline has 11 rows); tshark keeps the three attempts in one stream"),
    "zeek__tunnels__vxlan-encapsulated-http.pcap": (
        0, 1, "the only TCP connection is inside a VXLAN tunnel, which fastflow does not decode"),
}


def our_rows(capture: str, verify_checksums: bool) -> list[dict]:
    table = process(str(CAPTURES / capture), verify_checksums=verify_checksums).flows
    plain = [n for n in table.column_names if not str(table.schema.field(n).type).startswith("timestamp")]
    return table.select(plain).to_pylist()


def _key(row: dict) -> tuple:
    view = zb.fastflow_row_view(row)
    return tuple(view.get(c, "") for c in zb.KEY_COLUMNS)


@pytest.fixture(scope="module")
def comparison():
    """Compare every baseline once: totals per column, differences, unmatched and extra rows."""
    totals = {c: [0, 0] for c in COMPARED}
    differences, unmatched, extra = {}, {}, {}
    for baseline in zb.load_baselines(CORPUS):
        ours = our_rows(baseline.capture, verify_checksums=not baseline.checksums_ignored)
        pairs, lost, surplus = zb.match_rows(baseline.rows, ours)
        for column, (equal, total, diffs) in zb.compare(pairs, [c for c in COMPARED if c in baseline.columns]).items():
            totals[column][0] += equal
            totals[column][1] += total
            for key, zeek, mine in diffs:
                differences[(baseline.capture, column, key)] = (zeek, mine)
        for row in lost:
            unmatched[(baseline.capture, zb.row_key(row, zb.KEY_COLUMNS))] = row
        for row in surplus:
            extra[(baseline.capture, _key(row))] = row
    return totals, differences, unmatched, extra


@requires_corpus
def test_conn_state_equal_on_every_matched_row(comparison):
    totals, differences, _, _ = comparison
    equal, total = totals["conn_state"]
    assert total > 150 and equal == total, {k: v for k, v in differences.items() if k[1] == "conn_state"}


@requires_corpus
@pytest.mark.parametrize("column", [c for c in COMPARED if c != "conn_state"])
def test_column_equal_on_98_percent(comparison, column):
    totals, _, _, _ = comparison
    equal, total = totals[column]
    assert total > 0 and equal >= 0.98 * total, (column, equal, total)


@requires_corpus
def test_every_difference_is_listed_with_its_reason(comparison):
    _, differences, unmatched, extra = comparison
    assert {k: v for k, v in differences.items()} == {k: v[:2] for k, v in EXPECTED_DIFFERENCES.items()}
    assert set(unmatched) == set(EXPECTED_UNMATCHED_ZEEK)
    assert set(extra) == set(EXPECTED_EXTRA_OURS)


@requires_corpus
def test_rst_behavior_baseline():
    # Zeek's scripts/base/protocols/conn/conn_state-RST-behavior.zeek, one line per capture
    by_capture = {b.capture: b.rows[0] for b in zb.load_baselines(CORPUS) if b.line is not None}
    assert len(by_capture) == 4
    for capture, expected in by_capture.items():
        row = our_rows(capture, verify_checksums=False)
        assert len(row) == 1
        assert (row[0]["history"], row[0]["conn_state"]) == (expected["history"], expected["conn_state"]), capture


def tcp_connection_counts():
    return [p.name for p in sorted(CAPTURES.iterdir())] if CAPTURES.is_dir() else []


@requires_corpus
@pytest.mark.parametrize("capture", tcp_connection_counts())
def test_tcp_connection_count_equals_tshark_streams(capture):
    ours = process(str(CAPTURES / capture)).stats["counts"]["by_proto"]["tcp"]
    theirs = zb.tshark_stream_count(CORPUS, capture)
    if capture in EXPECTED_STREAM_COUNT_DIFFERENCES:
        assert (ours, theirs) == EXPECTED_STREAM_COUNT_DIFFERENCES[capture][:2]
    else:
        assert ours == theirs
