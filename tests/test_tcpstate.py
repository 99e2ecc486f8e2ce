"""Zeek's TCP state machine (tcpstate.py, ext/_tcpstate.pyx): one small connection per rule.

Each expected value follows from Zeek's source (TCPSessionAdapter.cc, TCP_Endpoint.cc, Conn.cc,
base/protocols/conn/main.zeek), named in the test; the corpus test (test_zeek_conn.py) checks the same
machine against Zeek's own conn.log output.
"""

import numpy as np
import pytest

from fastflow.tcpstate import ANALYSIS_TAGS
from test_connections import HANDSHAKE, make_segments, row, run

SYN_ROW = (1_000_000_000, ">", "S", 100, None, 1000, 0)
SYNACK_ROW = (1_000_100_000, "<", "S.", 500, 101, 1000, 0)
ACK_ROW = (1_000_200_000, ">", ".", 101, 501, 1000, 0)


def state_history(rows, **kw):
    f = row(run(rows, **kw)[2])
    return f["conn_state"], f["history"]


def t(ms):
    return 2_000_000_000 + ms * 1_000_000


# --- conn_state: every value of Zeek's conn_state(), in its order -----------------------------------

@pytest.mark.parametrize("rows,expected", [
    ([SYN_ROW], ("S0", "S")),
    # a SYN-ACK already makes both endpoints ESTABLISHED: S1 without the third packet
    ([SYN_ROW, SYNACK_ROW], ("S1", "Sh")),
    (HANDSHAKE, ("S1", "ShA")),
    # SF needs a FIN from each side; the final ACKs are not needed
    (HANDSHAKE + [(t(0), ">", "F.", 101, 501, 1000, 0), (t(1), "<", "F.", 501, 102, 1000, 0)], ("SF", "ShAFf")),
    ([SYN_ROW, (1_000_100_000, "<", "R.", 0, 101, 0, 0)], ("REJ", "Sr")),
    (HANDSHAKE + [(t(0), ">", "F.", 101, 501, 1000, 0)], ("S2", "ShAF")),
    (HANDSHAKE + [(t(0), "<", "F.", 501, 101, 1000, 0)], ("S3", "ShAf")),
    (HANDSHAKE + [(t(0), ">", "R.", 101, 501, 0, 0)], ("RSTO", "ShAR")),
    (HANDSHAKE + [(t(0), "<", "R.", 501, 101, 0, 0)], ("RSTR", "ShAr")),
    ([SYN_ROW, (1_100_000_000, ">", "R", 101, None, 0, 0)], ("RSTOS0", "SR")),
    ([(1_000_000_000, "<", "S.", 500, 101, 1000, 0), (1_100_000_000, "<", "R", 501, None, 0, 0)], ("RSTRH", "^hr")),
    ([SYN_ROW, (1_100_000_000, ">", "F", 101, None, 1000, 0)], ("SH", "SF")),
    ([(1_000_000_000, "<", "S.", 500, 101, 1000, 0), (1_100_000_000, "<", "F.", 501, 101, 1000, 0)], ("SHR", "^hf")),
    # midstream traffic only
    ([(1_000_000_000, ">", "P.", 101, 501, 1000, 10), (1_000_100_000, "<", ".", 501, 111, 1000, 0)], ("OTH", "Da")),
])
def test_each_conn_state(rows, expected):
    assert state_history(rows) == expected


def test_rst_after_both_fins_stays_sf():
    fins = HANDSHAKE + [(t(0), ">", "F.", 101, 501, 1000, 0), (t(1), "<", "F.", 501, 102, 1000, 0)]
    assert state_history(fins + [(t(2), ">", "R", 102, None, 0, 0)]) == ("SF", "ShAFfR")


def test_fin_then_rst_then_peer_fin_is_a_normal_close():
    # UpdateEstablishedState: a FIN after the peer's FIN+RST turns the peer back to CLOSED
    rows = HANDSHAKE + [(t(0), ">", "F.", 101, 501, 1000, 0), (t(1), ">", "R.", 102, 501, 0, 0),
                        (t(2), "<", "F.", 501, 102, 1000, 0)]
    assert state_history(rows) == ("SF", "ShAFRf")


def test_rst_by_both_without_data_is_rej():
    # conn_state(): both RESET with zero sizes is REJ even without a SYN
    rows = [(1_000_000_000, ">", "R", 100, None, 0, 0), (1_000_100_000, "<", "R", 500, None, 0, 0)]
    assert state_history(rows) == ("REJ", "Rr")


def test_syn_then_ack_then_rst_is_rstos0_but_a_fin_makes_it_oth():
    # Zeek's RSTOS0 pattern /^\^?S[^HAFGIQ]*R.*/ on the history (conn_state-RST-behavior baseline)
    rows = [SYN_ROW, (1_000_100_000, "<", ".", 500, 101, 1000, 0), (1_000_200_000, ">", "R", 101, None, 0, 0)]
    assert state_history(rows) == ("RSTOS0", "SaR")
    rows.insert(2, (1_000_150_000, ">", "F", 101, None, 1000, 0))
    rows[3] = (1_000_200_000, ">", "R", 102, None, 0, 0)
    assert state_history(rows) == ("OTH", "SaFR")


# --- history letters ----------------------------------------------------------------------------------

def test_a_and_d_once_per_direction():
    rows = HANDSHAKE + [(t(i), ">" if i % 2 else "<", "P.", 101 + 10 * (i // 2) if i % 2 else 501 + 10 * (i // 2),
                         0, 1000, 10) for i in range(6)] + [(t(9), ">", ".", 131, 531, 1000, 0),
                                                            (t(10), "<", ".", 531, 131, 1000, 0)]
    history = state_history(rows)[1]
    for letter in "AaDd":
        assert history.count(letter) == 1
    assert history == "ShAdDa"


def test_payload_on_syn_fin_rst_never_adds_d():
    rows = [(1_000_000_000, ">", "S", 100, None, 1000, 5), (1_000_100_000, "<", "S.", 500, 106, 1000, 0),
            (1_000_200_000, ">", "FP.", 106, 501, 1000, 7), (1_000_300_000, "<", "R.", 501, 114, 0, 9)]
    # No D or d. Zeek's update_last_seq does count the payload of the SYN (its end is already the
    # endpoint's last_seq) and of the RST (whose payload takes no sequence space) as retransmitted: T, t.
    _, segs, flows = run(rows)
    assert row(flows)["history"] == "SThFrt"
    # the segment tag leaves SYNs and RSTs out: their payload is not resent data
    assert ((segs["analysis"] & ANALYSIS_TAGS["retransmission"]) != 0).sum() == 0


def test_syn_repeats_only_with_a_new_sequence_number():
    # a retransmitted SYN (same ISN) adds nothing; a SYN with another ISN inside the connection adds S
    same = [SYN_ROW, (1_500_000_000, ">", "S", 100, None, 1000, 0)]
    assert state_history(same) == ("S0", "S")


def test_fin_and_rst_repeat_only_with_a_new_sequence_number():
    rows = HANDSHAKE + [(t(0), ">", "F.", 101, 501, 1000, 0), (t(1), ">", "F.", 101, 501, 1000, 0),
                        (t(2), "<", "R", 501, None, 0, 0), (t(3), "<", "R", 501, None, 0, 0),
                        (t(4), "<", "R", 600, None, 0, 0)]
    assert state_history(rows)[1] == "ShAFrr"


def test_retransmissions_logarithmic():
    # T at the 1st, 10th and 100th retransmission (ScaledHistoryEntry, base 10)
    data = [(t(0), ">", "P.", 101, 501, 1000, 100)]
    for n, expected in ((1, "ShADT"), (9, "ShADT"), (10, "ShADTT"), (99, "ShADTT"), (100, "ShADTTT")):
        rxmit = [(t(1 + i), ">", "P.", 101, 501, 1000, 100) for i in range(n)]
        _, segs, flows = run(HANDSHAKE + data + rxmit)
        assert row(flows)["history"] == expected, n
        assert row(flows)["orig_retransmissions"] == n
        assert ((segs["analysis"] & ANALYSIS_TAGS["retransmission"]) != 0).sum() == n


def test_zero_window_letter_and_tag():
    rows = HANDSHAKE + [(t(0), "<", ".", 501, 101, 0, 0), (t(1), "<", ".", 501, 101, 0, 0)]
    _, segs, flows = run(rows)
    assert row(flows)["history"] == "ShAaw"
    assert ((segs["analysis"] & ANALYSIS_TAGS["zero_window"]) != 0).tolist() == [False] * 3 + [True, True]


def test_multi_flag_and_inconsistent_letters_once():
    rows = [(1_000_000_000, ">", "SF", 100, None, 1000, 0), (1_000_100_000, ">", "SF", 100, None, 1000, 0),
            (1_000_200_000, "<", "FR", 500, None, 0, 0), (1_000_300_000, "<", "FR", 600, None, 0, 0)]
    assert state_history(rows)[1] == "Qi"


def test_flip_on_synack_first_and_on_server_port_midstream():
    # SYN-ACK first, then the client's ACK: Zeek >= 5.1 flips, '^' first
    f = row(run([SYNACK_ROW, ACK_ROW])[2])
    assert (f["history"], f["orig_p"]) == ("^hA", 57245)
    # data first from a likely server port (80): flipped by WantConnection
    f = row(run([(1, "<", "P.", 500, 101, 1000, 10)])[2])
    assert (f["history"], f["orig_p"], f["resp_p"]) == ("^d", 57245, 80)
    # data first to the server port: no flip
    f = row(run([(1, ">", "P.", 101, 500, 1000, 10)])[2])
    assert (f["history"], f["orig_p"]) == ("D", 57245)


def test_flip_uses_the_given_server_ports():
    rows = [(1, "<", "P.", 500, 101, 1000, 10)]
    f = row(run(rows, server_ports=(22,))[2])       # 80 is no longer a server port: first sender is orig
    assert (f["history"], f["orig_p"]) == ("D", 80)


def test_syn_synack_reversal_flips_to_the_syn_sender():
    # the SYN-ACK arrives first from a port that is no likely server port, then the SYN it answers
    client, server = ("10.0.0.1", 40000), ("10.0.0.2", 40001)
    rows = [(1_000_000_000, "<", "S.", 500, 101, 1000, 0, {"client": client, "server": server}),
            (1_000_000_100, ">", "S", 100, None, 1000, 0, {"client": client, "server": server})]
    seg = make_segments(rows, client=client, server=server)
    _, segs, flows = run(seg)
    f = row(flows)
    assert f["history"] == "Hs^"   # letters are written before the flip
    assert (f["orig_p"], f["conn_state"]) == (40000, "S1")
    assert segs["from_orig"].tolist() == [False, True]


def test_sizes_from_sequence_numbers_and_duration_rule():
    rows = HANDSHAKE + [(t(0), ">", "P.", 101, 501, 1000, 300), (t(1), "<", "P.", 501, 401, 1000, 20),
                        (t(2), ">", "F.", 401, 521, 1000, 0), (t(3), "<", "F.", 521, 402, 1000, 0),
                        (t(50), ">", ".", 402, 522, 1000, 0)]
    f = row(run(rows)[2])
    assert (f["orig_bytes"], f["resp_bytes"]) == (300, 20)
    assert f["duration"] == pytest.approx((t(3) - 1_000_000_000) / 1e9)   # not the final ACK
    # sizes are null when the duration is 0 (one packet), as Zeek's set_conn
    f = row(run([SYN_ROW])[2])
    assert f["duration"] == 0 and f["orig_bytes"] is None


def test_keepalive_and_dup_ack_tags():
    rows = HANDSHAKE + [(t(0), ">", "P.", 101, 501, 1000, 10),
                        (t(1), "<", ".", 501, 111, 1000, 0),
                        (t(2), "<", ".", 501, 111, 1000, 0),       # same ack, window, seq: duplicate ACK
                        (t(3), ">", ".", 110, 501, 1000, 1)]       # one byte below the next: keepalive
    _, segs, _ = run(rows)
    bits = segs["analysis"]
    assert ((bits & ANALYSIS_TAGS["dup_ack"]) != 0).tolist() == [False] * 5 + [True, False]
    assert ((bits & ANALYSIS_TAGS["keepalive"]) != 0).tolist() == [False] * 6 + [True]
    # a keepalive is not counted as a retransmission
    assert ((bits & ANALYSIS_TAGS["retransmission"]) != 0).sum() == 0


def test_irtt_is_the_sum_of_both_rtts():
    f = row(run(HANDSHAKE)[2])
    assert f["irtt"] == pytest.approx(f["rtt_syn_synack"] + f["rtt_synack_ack"])


def test_conn_state_of_many_connections_is_independent_of_order():
    # the pass resets its state per connection: interleaving connections changes nothing
    a = make_segments(HANDSHAKE + [(t(0), ">", "R.", 101, 501, 0, 0)], client=("10.0.0.1", 1000))
    b = make_segments([SYN_ROW], client=("10.0.0.2", 1000))
    seg = {k: np.concatenate([a[k], b[k]]) for k in a}
    idx = [0, 4, 1, 2, 3]
    seg = {k: v[idx] for k, v in seg.items()}
    seg["frame"] = np.arange(1, 6, dtype=np.uint64)
    _, _, flows = run(seg)
    assert flows["conn_state"].tolist() == ["RSTO", "S0"]
    assert flows["history"].tolist() == ["ShAR", "S"]
