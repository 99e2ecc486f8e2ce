"""Every TCP packet of every corpus capture, decoded, equals tshark's per-packet reference.

The reference (../shared/corpus/reference/tshark) was made by tshark 4.0.17; see the corpus README.
Where tshark and fastflow legitimately differ, the difference is listed below with its reason, and the
test checks that exactly those differences (no more, no fewer) occur."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fastflow.decode import Status
from tests.corpus import capture_names, decode_all, format_addr, requires_corpus, tshark_rows, CAPTURES

REASSEMBLY = "tshark reassembles IP fragments: its row is the reassembled segment on the last fragment's frame"
EXPECTED_DIFFERENCES = {
    # (capture, field): (frames, reason)
    ("suricata__defrag__bug-6887-defrag-ipv6-tcp__frag-ip-tcp.pcap", "status"): ({3}, REASSEMBLY),
    ("suricata__defrag__bug-6887-defrag-ipv6-tcp__frag-ip-tcp.pcap", "extra"): (
        {1}, "we decode the first fragment's whole TCP header (marked FIRST_FRAGMENT); tshark shows none"),
    ("zeek__ipv4__fragmented-4.pcap", "status"): ({5}, REASSEMBLY),
    ("zeek__ipv4__fragmented-4.pcap", "extra"): ({2}, "first fragment decoded and marked, as above"),
    ("zeek__ipv4__fragmented-syn.pcap", "status"): (
        {2}, REASSEMBLY + "; our frame 1 is a first fragment too short for the TCP header (FRAGMENT)"),
    ("suricata__detect-ipopts__input.pcap", "addr"): (
        {2, 7}, "Wireshark shows a loose-source-route option's final hop as ip.dst; we keep the header's address"),
    ("tcpdump__tcp_header_heapoverflow.pcap", "status"): (
        {1}, "TCP header cut by the snaplen: TRUNCATED (the fields that were captured still match)"),
    ("tcpdump__timestamp_invalid_nano.pcap", "ts"): (
        {3}, "nanosecond field 2147483648 (>= 10^9): tshark prints it as a negative time; we add it as is"),
    ("zeek__cisco-fabric-path.pcap", "payload_len"): (
        {34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62, 64},
        "Wireshark takes 4 trailing bytes of FabricPath frames as an FCS and finds the TCP header short; "
        "the IP length (40) and Zeek's conn.log (80 IP bytes for 2 packets) agree with us"),
    ("zeek__tunnels__vxlan-encapsulated-http.pcap", "status"): (
        set(range(1, 13)), "VXLAN tunnels are not decoded: we see the outer UDP packet"),
}
# fields that follow from the differences above are not listed again
_FOLLOWS_FROM = {"status", "extra"}

# tshark column -> our column
SCALAR_FIELDS = {
    "frame.len": "wirelen", "frame.cap_len": "caplen", "tcp.srcport": "sport", "tcp.dstport": "dport",
    "tcp.seq_raw": "seq", "tcp.ack_raw": "ack", "tcp.window_size_value": "window", "tcp.len": "payload_len",
    "tcp.hdr_len": "tcp_hlen", "tcp.options.mss_val": "mss", "tcp.options.wscale.shift": "wscale",
}
ABSENT = {"mss": 0, "wscale": -1}


def parse_epoch(text: str) -> int:
    """tshark's frame.time_epoch to integer nanoseconds; a fraction of 10 digits is kept as tshark printed it."""
    sec, _, frac = text.partition(".")
    if len(frac) == 9:
        return int(Decimal(text) * 10**9)
    sign = -1 if sec.startswith("-") else 1
    return sign * (abs(int(sec)) * 10**9 + int(frac))


def compare(name: str) -> dict[str, set[int]]:
    cols, _ = decode_all(CAPTURES / name)
    row_of = {int(f): i for i, f in enumerate(cols.get("frame", []))}
    diffs: dict[str, set[int]] = {}
    rows = tshark_rows(name)
    for ref in rows:
        frame = int(ref["frame.number"])
        i = row_of.get(frame)
        if i is None:
            diffs.setdefault("missing", set()).add(frame)
            continue
        status = cols["status"][i]
        found = set()
        if status != Status.TCP:
            found.add("status")
        if parse_epoch(ref["frame.time_epoch"]) != cols["ts"][i]:
            found.add("ts")
        version = int(cols["ip_version"][i])
        src = ref["ip.src"] or ref["ipv6.src"]
        dst = ref["ip.dst"] or ref["ipv6.dst"]
        if version == 0 or src != format_addr(cols["src"][i], version) or dst != format_addr(cols["dst"][i], version):
            found.add("addr")
        for field, ours in SCALAR_FIELDS.items():
            value = ref[field].split(",")[0]
            mine = int(cols[ours][i])
            if value == "":
                # tshark leaves a cell empty when the option is absent or the header was cut
                if mine != ABSENT.get(ours, mine) or (status == Status.TCP and ours not in ABSENT):
                    found.add(ours)
            elif int(value) != mine:
                found.add(ours)
        if ref["tcp.flags"] and int(ref["tcp.flags"], 16) != cols["tcp_flags"][i]:
            found.add("tcp_flags")
        vlan = int(ref["vlan.id"].split(",")[0]) if ref["vlan.id"] else -1
        if vlan != cols["vlan"][i]:
            found.add("vlan")
        if "status" in found and status in (Status.FRAGMENT, Status.UDP):
            found = {"status"}  # nothing else of ours is comparable for a packet we did not decode as TCP
        for field in found:
            diffs.setdefault(field, set()).add(frame)
    ref_frames = {int(r["frame.number"]) for r in rows}
    for frame, status in zip(cols.get("frame", []), cols.get("status", [])):
        if status == Status.TCP and int(frame) not in ref_frames:
            diffs.setdefault("extra", set()).add(int(frame))
    return diffs


@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_tcp_fields_equal_tshark(name):
    expected = {field: frames for (cap, field), (frames, _) in EXPECTED_DIFFERENCES.items() if cap == name}
    assert compare(name) == expected


@requires_corpus
def test_expected_differences_name_real_captures():
    names = set(capture_names())
    assert {cap for cap, _ in EXPECTED_DIFFERENCES} <= names
    assert _FOLLOWS_FROM <= {"status", "extra"}
