"""The Zeek baseline loader and matcher of tests/zeek_baselines.py, checked against the corpus files and hand-made rows."""
from __future__ import annotations

import pytest

from tests.corpus import CAPTURES, CORPUS, ZEEK_REF, requires_corpus
from tests.zeek_baselines import (
    MARKER_PREFIX, Baseline, compare, fastflow_row_view, load_baselines, match_rows, parse_command, parse_conn_log,
    parse_cut, tshark_stream_count, values_equal,
)

CONN_LOG_FIELDS = [
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration", "orig_bytes",
    "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history", "orig_pkts", "orig_ip_bytes",
    "resp_pkts", "resp_ip_bytes", "tunnel_parents", "ip_proto",
]
CONN_SIZE_FLIP = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "history", "orig_pkts",
                  "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"]
CUT_COLUMNS = {
    "zeek__http__get-to-ssh-server.pcap": ["uid", "id.orig_h", "id.resp_h", "id.resp_p", "service", "history"],
    "zeek__ldap__modify-request.pcapng": ["uid", "id.orig_h", "id.resp_h", "id.resp_p", "service"],
    "zeek__tcp-syslog.pcap": ["uid", "service", "history", "duration", "orig_pkts", "resp_pkts"],
    "zeek__tcp__ctu-64702-888.pcap": CONN_SIZE_FLIP,
    "zeek__tcp__one-sided-2745.pcap": CONN_SIZE_FLIP,
    "zeek__tcp__syn-bad.pcap": ["uid", "orig_pkts", "resp_pkts", "history", "conn_state"],
    "zeek__vlan-collisions.pcap": ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "orig_pkts",
                                   "resp_pkts", "service"],
}
ROW_COUNTS = {
    "zeek__cisco-fabric-path.pcap": 64, "zeek__ftp__ipv6.pcap": 6, "zeek__http__get.pcap": 1,
    "zeek__mixed-vlan-mpls.pcap": 3, "zeek__mpls-in-vlan.pcap": 3, "zeek__pcapng-multi-interface.pcapng": 3,
    "zeek__pop3__pop3.pcap": 11, "zeek__pppoe-over-qinq.pcap": 1, "zeek__ssh__ssh.pcap": 25,
    "zeek__ssh__ssh.server-side-half-duplex.pcap": 20, "zeek__tcp-http-with-padding.pcap": 1,
    "zeek__tcp__http-on-irc-port-missing-syn.pcapng": 1, "zeek__tcp__miss_end_data.pcap": 1,
    "zeek__tcp__missing-syn.pcap": 1, "zeek__tcp__retransmit-fast009.pcap": 1, "zeek__tls__irc-starttls.pcap": 1,
    "zeek__tls__pop3-starttls.pcap": 1, "zeek__tunnels__vxlan-encapsulated-http.pcap": 2,
    "zeek__wikipedia.pcap": 34,
    "zeek__http__get-to-ssh-server.pcap": 1, "zeek__ldap__modify-request.pcapng": 1, "zeek__tcp-syslog.pcap": 1,
    "zeek__tcp__ctu-64702-888.pcap": 1, "zeek__tcp__one-sided-2745.pcap": 2, "zeek__tcp__syn-bad.pcap": 1,
    "zeek__vlan-collisions.pcap": 1,
}
# conn_state-RST-behavior.out: line in the file (the btest marker is line 1) -> capture, as MANIFEST.tsv says
RST_BEHAVIOR = {
    "zeek__tcp__single-rst.pcap": (2, "R", "OTH"),
    "zeek__tcp__syn-then-rst.pcap": (3, "SR", "RSTOS0"),
    "zeek__tcp__syn-then-ack-then-rst.pcap": (4, "SaR", "RSTOS0"),
    "zeek__tcp__syn-then-stuff-then-rst.pcap": (5, "SaFR", "OTH"),
}


@pytest.fixture(scope="module")
def baselines() -> dict[str, Baseline]:
    loaded = load_baselines(CORPUS)
    by_capture = {b.capture: b for b in loaded}
    assert len(by_capture) == len(loaded), "one Zeek baseline per capture"
    return by_capture


# ---------------------------------------------------------------------------------------------------------------
# corpus files

@requires_corpus
def test_every_baseline_file_is_named_and_loads(baselines):
    on_disk = {p.name for p in ZEEK_REF.iterdir()}
    named = {b.path.name for b in baselines.values()}
    assert named == on_disk
    assert len(baselines) == 30  # 26 conn.log / cut files + 4 RST-behavior lines
    for b in baselines.values():
        assert (CAPTURES / b.capture).is_file(), b.capture
        assert b.path.is_file()
        assert b.command.startswith("zeek -"), b.command
        assert b.rows, b.capture
        for row in b.rows:
            assert list(row) == b.columns, b.capture
            assert all(isinstance(v, str) for v in row.values())


@requires_corpus
def test_row_counts(baselines):
    counts = {c: len(b.rows) for c, b in baselines.items() if c not in RST_BEHAVIOR}
    assert counts == ROW_COUNTS
    # counted independently: data lines of each file (no marker, no '#' lines, no cut header)
    for capture, b in baselines.items():
        if capture in RST_BEHAVIOR:
            continue
        lines = [ln for ln in b.path.read_text().splitlines() if ln and not ln.startswith("#")]
        header = 1 if b.path.name.endswith(".cut") else 0
        assert len(lines) - header == len(b.rows), capture


@requires_corpus
def test_columns(baselines):
    for capture, b in baselines.items():
        if capture in RST_BEHAVIOR:
            assert b.columns == ["history", "conn_state"]
        elif b.path.name.endswith(".conn.log"):
            assert b.columns == CONN_LOG_FIELDS, capture
        else:
            assert b.columns == CUT_COLUMNS[capture], capture
    # zeek-cut printed empty names for the two VLAN context columns that the default (not VLAN-aware) log lacks
    vlan = baselines["zeek__vlan-collisions.pcap"]
    assert vlan.missing_columns == ["id.ctx.vlan", "id.ctx.inner_vlan"]
    assert vlan.rows[0]["orig_pkts"] == "21" and vlan.rows[0]["service"] == "http"
    assert baselines["zeek__http__get-to-ssh-server.pcap"].key_columns == ["id.orig_h", "id.resp_h", "id.resp_p"]
    assert baselines["zeek__tcp__syn-bad.pcap"].key_columns == []
    assert baselines["zeek__tcp__one-sided-2745.pcap"].key_columns == ["id.orig_h", "id.orig_p", "id.resp_h",
                                                                       "id.resp_p"]


@requires_corpus
def test_values_as_written(baselines):
    ssh = baselines["zeek__ssh__ssh.pcap"].rows
    assert ssh[0]["history"] == "ShAdDaFf" and ssh[0]["duration"] == "6.159326" and ssh[0]["orig_pkts"] == "25"
    assert ssh[0]["ts"] == "XXXXXXXXXX.XXXXXX"
    udp = [r for r in ssh if r["proto"] == "udp"]
    assert len(udp) == 2 and all(r["duration"] == "-" and r["orig_bytes"] == "-" for r in udp)
    assert sum(r["conn_state"] == "RSTR" for r in ssh) == 1
    cisco = baselines["zeek__cisco-fabric-path.pcap"].rows
    assert {r["proto"] for r in cisco} == {"tcp", "udp", "unknown_transport"}
    vxlan = baselines["zeek__tunnels__vxlan-encapsulated-http.pcap"].rows
    assert [r["tunnel_parents"] for r in vxlan] == ["-", "CHhAvVGS1DHFjwGM9"]
    syn_bad = baselines["zeek__tcp__syn-bad.pcap"].rows
    assert syn_bad == [{"uid": "CHhAvVGS1DHFjwGM9", "orig_pkts": "0", "resp_pkts": "0", "history": "C",
                        "conn_state": "OTH"}]


@requires_corpus
def test_rst_behavior_mapping(baselines):
    lines = (ZEEK_REF / "conn_state-RST-behavior.out").read_text().splitlines()
    assert lines[0].startswith(MARKER_PREFIX) and len(lines) == 5
    for capture, (line, history, conn_state) in RST_BEHAVIOR.items():
        b = baselines[capture]
        assert b.line == line
        assert b.rows == [{"history": history, "conn_state": conn_state}]
        assert lines[line - 1] == f"{history}, {conn_state}"
        assert b.checksums_ignored and b.command == "zeek -b -C -r"
    # the README's order (results 1-4, marker not counted) is the same mapping
    readme_order = ["zeek__tcp__single-rst.pcap", "zeek__tcp__syn-then-rst.pcap",
                    "zeek__tcp__syn-then-ack-then-rst.pcap", "zeek__tcp__syn-then-stuff-then-rst.pcap"]
    assert [baselines[c].line - 1 for c in readme_order] == [1, 2, 3, 4]


@requires_corpus
def test_checksums_and_commands(baselines):
    expect = {
        "zeek__http__get-to-ssh-server.pcap": (True, "zeek -Cr ${TRACES}/http/get-to-ssh-server.pcap"),
        "zeek__mixed-vlan-mpls.pcap": (True, "zeek -b -C -r $TRACES/mixed-vlan-mpls.pcap"),
        "zeek__tcp-syslog.pcap": (True, "zeek -C -b -r $TRACES/tcp-syslog.pcap"),
        "zeek__tcp__syn-bad.pcap": (False, "zeek -b -r $TRACES/tcp/syn-bad.pcap"),
        "zeek__ssh__ssh.pcap": (False, "zeek -r $TRACES/ssh/ssh.pcap"),
        "zeek__vlan-collisions.pcap": (False, "zeek -r $TRACES/vlan-collisions.pcap"),
        "zeek__wikipedia.pcap": (True, "zeek -C -r $TRACES/wikipedia.pcap"),
    }
    for capture, (ignored, command) in expect.items():
        assert (baselines[capture].checksums_ignored, baselines[capture].command) == (ignored, command), capture
    assert sum(b.checksums_ignored for b in baselines.values()) == 18
    assert baselines["zeek__tcp__ctu-64702-888.pcap"].test == "core/conn-size-flip.zeek"


@requires_corpus
def test_tshark_stream_count():
    assert tshark_stream_count(CORPUS, "zeek__ssh__ssh.pcap") == 23
    assert tshark_stream_count(CORPUS, "zeek__vlan-collisions.pcap") == 1
    assert tshark_stream_count(CORPUS, "zeek__empty.pcap") == 0


# ---------------------------------------------------------------------------------------------------------------
# parsers on hand-made files

def test_parse_conn_log_and_cut(tmp_path):
    log = tmp_path / "x.conn.log"
    log.write_text(
        f"{MARKER_PREFIX} generated by btest-diff.\n#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n"
        "#unset_field\t-\n#path\tconn\n#fields\tuid\tservice\tduration\ttunnel_parents\n"
        "#types\tstring\tstring\tinterval\tset[string]\nC1\t-\t0.5\t(empty)\n#close XXXX\n")
    fields, rows = parse_conn_log(log)
    assert fields == ["uid", "service", "duration", "tunnel_parents"]
    assert rows == [{"uid": "C1", "service": "-", "duration": "0.5", "tunnel_parents": "(empty)"}]
    cut = tmp_path / "x.conn.log.cut"
    cut.write_text(f"{MARKER_PREFIX}\nuid\t\tconn_state\nC1\t\tSF\n")
    header, rows, empty = parse_cut(cut)
    assert header == ["uid", "", "conn_state"] and empty == [1]
    assert rows == [{"uid": "C1", "conn_state": "SF"}]
    bad = tmp_path / "bad.conn.log.cut"
    bad.write_text("uid\tconn_state\nC1\n")
    with pytest.raises(ValueError):
        parse_cut(bad)


def test_parse_command():
    assert parse_command("zeek btest a.zeek, B/conn.log; zeek -Cr ${TRACES}/x.pcap (default scripts), "
                         "btest-diff-cut -m uid conn.log") == ("zeek -Cr ${TRACES}/x.pcap", True)
    assert parse_command("zeek btest a.zeek; zeek -b -r $TRACES/x.pcap (base)") == ("zeek -b -r $TRACES/x.pcap", False)
    assert parse_command("history, conn_state; zeek btest t.zeek, zeek -b -C -r") == ("zeek -b -C -r", True)
    with pytest.raises(ValueError):
        parse_command("zeek btest t.zeek only")


# ---------------------------------------------------------------------------------------------------------------
# fastflow rows in Zeek's notation

def flow(orig_h="10.0.0.1", orig_p=1234, resp_h="10.0.0.2", resp_p=80, proto="tcp", duration=1.0, **kw):
    row = dict(orig_h=orig_h, orig_p=orig_p, resp_h=resp_h, resp_p=resp_p, proto=proto, duration=duration,
               orig_bytes=kw.pop("orig_bytes", 10), resp_bytes=kw.pop("resp_bytes", 20),
               conn_state=kw.pop("conn_state", "SF"), history=kw.pop("history", "ShADadFf"),
               orig_pkts=kw.pop("orig_pkts", 5), resp_pkts=kw.pop("resp_pkts", 4),
               orig_ip_bytes=kw.pop("orig_ip_bytes", 300), resp_ip_bytes=kw.pop("resp_ip_bytes", 400),
               ip_proto=kw.pop("ip_proto", 6), conn_id=kw.pop("conn_id", 0))
    assert not kw
    return row


def zrow(orig_h="10.0.0.1", orig_p="1234", resp_h="10.0.0.2", resp_p="80", proto="tcp", duration="1.000000", **kw):
    row = {"id.orig_h": orig_h, "id.orig_p": orig_p, "id.resp_h": resp_h, "id.resp_p": resp_p, "proto": proto,
           "duration": duration}
    row.update(kw)
    return row


def test_row_view():
    v = fastflow_row_view(flow(duration=0.2114844, orig_bytes=None, history="", ip_proto=6))
    assert v == {"id.orig_h": "10.0.0.1", "id.orig_p": "1234", "id.resp_h": "10.0.0.2", "id.resp_p": "80",
                 "proto": "tcp", "duration": "0.211484", "orig_bytes": "-", "resp_bytes": "20", "conn_state": "SF",
                 "history": "-", "orig_pkts": "5", "resp_pkts": "4", "orig_ip_bytes": "300", "resp_ip_bytes": "400",
                 "ip_proto": "6"}
    assert fastflow_row_view(flow(duration=0.0))["duration"] == "-"
    assert fastflow_row_view(flow(duration=None))["duration"] == "-"
    assert fastflow_row_view(flow(history=None, conn_state=None))["history"] == "-"
    assert [fastflow_row_view(flow(proto=p))["proto"] for p in ("tcp", "udp", "icmp", "icmp6", "other")] == [
        "tcp", "udp", "icmp", "icmp", "unknown_transport"]
    # a flows table without proto is TCP only
    legacy = {k: v for k, v in flow().items() if k not in ("proto", "ip_proto")}
    assert fastflow_row_view(legacy)["proto"] == "tcp" and fastflow_row_view(legacy)["ip_proto"] == "6"
    assert "conn_id" not in fastflow_row_view(flow())


def test_values_equal():
    assert values_equal("duration", "0.211484", "0.211485")
    assert values_equal("duration", "0.211484", 0.2114844)
    assert not values_equal("duration", "0.211484", "0.211628")
    assert values_equal("duration", "-", "-") and values_equal("duration", "-", 0.0)
    assert not values_equal("duration", "-", "0.000100")
    assert values_equal("id.resp_h", "2a00:6020:ad0b:8380::10", "2a00:6020:ad0b:8380:0:0:0:10")
    assert values_equal("orig_pkts", "7", 7) and not values_equal("orig_pkts", "7", "8")
    assert values_equal("orig_bytes", "-", None) is False  # missing on our side never equals
    assert values_equal("orig_bytes", "-", "-")
    assert values_equal("history", "-", "") and values_equal("proto", "icmp", "icmp6")
    assert not values_equal("history", "^hADadFf", "hADadFf")


# ---------------------------------------------------------------------------------------------------------------
# matching

def test_match_full_key_and_leftovers():
    zeek = [zrow(orig_p="1"), zrow(orig_p="2"), zrow(orig_p="53", proto="udp", resp_p="53")]
    ours = [flow(orig_p=2, conn_id=0), flow(orig_p=1, conn_id=1), flow(orig_p=9, conn_id=2)]
    pairs, unmatched, extra = match_rows(zeek, ours)
    assert [(z["id.orig_p"], o["conn_id"]) for z, o in pairs] == [("2", 0), ("1", 1)]  # in our order
    assert unmatched == [zeek[2]] and extra == [ours[2]]
    # the protocol is part of the key: a Zeek UDP row does not take our TCP row
    pairs, unmatched, extra = match_rows([zrow(proto="udp")], [flow(proto="tcp")])
    assert pairs == [] and len(unmatched) == 1 and len(extra) == 1
    pairs, _, _ = match_rows([zrow(proto="icmp")], [flow(proto="icmp6")])
    assert len(pairs) == 1


def test_match_duplicate_keys_by_duration():
    # Zeek logs on removal: its order is not ours; durations decide
    zeek = [zrow(duration="0.050692"), zrow(duration="0.060847"), zrow(duration="0.050967")]
    ours = [flow(duration=0.0509671, conn_id=0), flow(duration=0.0506921, conn_id=1),
            flow(duration=0.0608469, conn_id=2)]
    pairs, unmatched, extra = match_rows(zeek, ours)
    assert unmatched == [] and extra == []
    assert [(z["duration"], o["conn_id"]) for z, o in pairs] == [("0.050967", 0), ("0.050692", 1), ("0.060847", 2)]
    result = compare(pairs, ["duration", "orig_pkts"])
    assert result["duration"][:2] == (3, 3)
    # equal durations (or none in the baseline): paired in order
    zeek = [zrow(duration="-", history="a"), zrow(duration="-", history="b")]
    ours = [flow(duration=0.0, conn_id=0), flow(duration=0.0, conn_id=1), flow(duration=0.0, conn_id=2)]
    pairs, unmatched, extra = match_rows(zeek, ours)
    assert [(z["history"], o["conn_id"]) for z, o in pairs] == [("a", 0), ("b", 1)]
    assert unmatched == [] and [o["conn_id"] for o in extra] == [2]


def test_match_missing_key_columns():
    # only id.orig_h, id.resp_h, id.resp_p (as in the get-to-ssh-server cut): the ports that are absent don't matter
    zeek = [{"uid": "C", "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.2", "id.resp_p": "22", "history": "ShADadr"}]
    ours = [flow(resp_p=80, conn_id=0), flow(orig_p=5555, resp_p=22, conn_id=1)]
    pairs, unmatched, extra = match_rows(zeek, ours)
    assert [o["conn_id"] for _, o in pairs] == [1] and unmatched == [] and [o["conn_id"] for o in extra] == [0]
    # no key column at all (as in the syn-bad cut): one row each side, or else one TCP row of ours
    zeek = [{"uid": "C", "orig_pkts": "0", "history": "C", "conn_state": "OTH"}]
    pairs, unmatched, extra = match_rows(zeek, [flow(orig_pkts=1)])
    assert len(pairs) == 1 and unmatched == [] and extra == []
    pairs, unmatched, extra = match_rows(zeek, [flow(proto="udp", conn_id=0), flow(conn_id=1)])
    assert [o["conn_id"] for _, o in pairs] == [1] and [o["conn_id"] for o in extra] == [0]
    pairs, unmatched, extra = match_rows(zeek, [flow(conn_id=0), flow(conn_id=1)])
    assert pairs == [] and unmatched == zeek and len(extra) == 2
    result = compare(match_rows(zeek, [flow(orig_pkts=1, history="S", conn_state="S0")])[0],
                     ["orig_pkts", "history", "conn_state", "duration"])
    assert result["orig_pkts"] == (0, 1, [(("", "", "", "", ""), "0", "1")])
    assert result["conn_state"] == (0, 1, [(("", "", "", "", ""), "OTH", "S0")])
    assert result["duration"] == (0, 0, [])  # not in the baseline: not counted


def test_match_accepts_views_and_compares_missing_columns():
    legacy = {k: v for k, v in flow().items() if k not in ("orig_bytes", "resp_bytes")}
    pairs, _, _ = match_rows([zrow(orig_bytes="10")], [fastflow_row_view(legacy)])
    assert len(pairs) == 1
    n_equal, n_total, diffs = compare(pairs, ["orig_bytes"])["orig_bytes"]
    assert (n_equal, n_total) == (0, 1) and diffs[0][2] is None
