"""Parquet output: address text against Python's ipaddress, round trips through fastflow's writer (every column
read back as built), the writer's per-column layout, and the schema of both tables pinned (names, types, and
which segments columns may hold nulls)."""
from __future__ import annotations

import ipaddress
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastflow import schema as schema_module
from fastflow import synth
from fastflow.pipeline import process
from fastflow.schema import (FLOWS_SCHEMA, SEGMENTS_NULLABLE, SEGMENTS_SCHEMA, TCPDUMP_FLAG_NAMES,
                             address_columns, format_addresses)
from fastflow.write import COMPRESSIONS, parquet_options, write_tables

MAPPED = bytes(10) + b"\xff\xff"

FLOWS_TYPES = [
    ("conn_id", "uint64"), ("ts_start", "timestamp[ns, tz=UTC]"), ("ts_end", "timestamp[ns, tz=UTC]"),
    ("duration", "double"), ("orig_h", "string"), ("orig_p", "uint16"), ("resp_h", "string"), ("resp_p", "uint16"),
    ("ip_version", "uint8"), ("proto", "dictionary<values=string, indices=int8, ordered=0>"), ("ip_proto", "uint8"),
    ("vlan", "int32"), ("community_id", "string"), ("orig_pkts", "uint64"), ("resp_pkts", "uint64"),
    ("orig_payload_bytes", "uint64"), ("resp_payload_bytes", "uint64"), ("orig_ip_bytes", "uint64"),
    ("resp_ip_bytes", "uint64"), ("orig_bytes", "uint64"), ("resp_bytes", "uint64"),
    ("handshake", "dictionary<values=string, indices=int8, ordered=0>"), ("syn_ts", "timestamp[ns, tz=UTC]"),
    ("synack_ts", "timestamp[ns, tz=UTC]"), ("handshake_ack_ts", "timestamp[ns, tz=UTC]"), ("orig_isn", "uint32"),
    ("resp_isn", "uint32"), ("syn_count", "uint32"), ("synack_count", "uint32"), ("rtt_syn_synack", "double"),
    ("rtt_synack_ack", "double"), ("irtt", "double"), ("orig_mss", "uint16"), ("resp_mss", "uint16"),
    ("orig_wscale", "int16"), ("resp_wscale", "int16"), ("orig_sack_ok", "bool"), ("resp_sack_ok", "bool"),
    ("close", "dictionary<values=string, indices=int8, ordered=0>"),
    ("close_initiator", "dictionary<values=string, indices=int8, ordered=0>"),
    ("rst_by", "dictionary<values=string, indices=int8, ordered=0>"), ("fin1_ts", "timestamp[ns, tz=UTC]"),
    ("fin2_ts", "timestamp[ns, tz=UTC]"), ("rst_ts", "timestamp[ns, tz=UTC]"), ("teardown_segments", "uint8"),
    ("orig_retransmissions", "uint32"), ("resp_retransmissions", "uint32"),
    ("conn_state", "dictionary<values=string, indices=int8, ordered=0>"), ("history", "string"),
    ("source", "string"), ("first_frame", "uint64"), ("last_frame", "uint64"),
]

SEGMENTS_TYPES = [
    ("frame", "uint64"), ("ts", "timestamp[ns, tz=UTC]"), ("conn_id", "uint64"), ("from_orig", "bool"),
    ("src_h", "string"), ("src_p", "uint16"), ("dst_h", "string"), ("dst_p", "uint16"), ("seq", "uint32"),
    ("ack", "uint32"), ("rel_seq", "int64"), ("rel_ack", "int64"),
    ("flags", "dictionary<values=string, indices=int16, ordered=0>"), ("tcp_flags", "uint16"), ("window", "uint16"),
    ("payload_len", "uint32"), ("handshake_step", "int8"), ("teardown_step", "int8"),
    ("tag", "dictionary<values=string, indices=int8, ordered=0>"), ("retransmission", "bool"), ("keepalive", "bool"),
    ("zero_window", "bool"), ("dup_ack", "bool"),
]


def types_of(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema]


# ---------------------------------------------------------------------------------------------------------------
# address text


def expected_text(raw: bytes, version: int) -> str:
    """What fastflow writes: dotted IPv4 for version 4; otherwise RFC 5952 IPv6 as Python 3.11's ipaddress prints
    it, IPv4-mapped ones (::ffff:0:0/96) in hex groups too (Python 3.13 prints those as ::ffff:a.b.c.d)."""
    if version == 4:
        return str(ipaddress.IPv4Address(raw[12:]))
    if raw[:12] == MAPPED:
        return "::ffff:%x:%x" % (int.from_bytes(raw[12:14], "big"), int.from_bytes(raw[14:], "big"))
    return str(ipaddress.IPv6Address(raw))


def as_rows(addresses: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(addresses), np.uint8).reshape(-1, 16)


def v4(text: str) -> bytes:
    return MAPPED + ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


EDGE_V4 = ["0.0.0.0", "255.255.255.255", "0.0.0.1", "1.0.0.0", "10.0.0.1", "100.200.10.0", "9.99.199.255",
           "127.0.0.1", "192.168.255.254", "224.0.0.251"]
EDGE_V6 = ["::", "::1", "1::", "::ffff:0:0", "::ffff:0.0.0.0", "::ffff:255.255.255.255", "::ffff:1.2.3.4",
           "::1.2.3.4", "64:ff9b::1.2.3.4", "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:0:0:1:0:0:0:1",
           "1:0:0:1:0:0:1:1", "0:0:1:0:0:0:1:0", "1:0:1:0:1:0:1:0", "0:1:2:3:4:5:6:7", "1:2:3:4:5:6:7:0",
           "1:2:3:4:5:6:7:8", "1:0:2:3:4:5:6:7", "fe80::", "fe80::1:0:0:0", "ff02::1:ff00:1", "::ffff:ffff:ffff",
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "abcd:ef01:2345:6789:abcd:ef01:2345:6789", "0:0:0:0:0:0:0:1",
           "10:100:1000:a:b0:c00:d000:f"]


def random_ipv6(rng: random.Random) -> bytes:
    # groups drawn so that zero runs of every length and place, and every hex width, are common
    choices = (lambda: 0, lambda: 0, lambda: 0, lambda: 1, lambda: 0xFFFF, lambda: rng.getrandbits(4),
               lambda: rng.getrandbits(8), lambda: rng.getrandbits(12), lambda: rng.getrandbits(16))
    groups = [rng.choice(choices)() for _ in range(8)]
    return b"".join(g.to_bytes(2, "big") for g in groups)


def test_ipv4_text_matches_ipaddress():
    rng = random.Random(5952)
    addresses = [v4(a) for a in EDGE_V4] + [MAPPED + rng.getrandbits(32).to_bytes(4, "big") for _ in range(20000)]
    addresses += [MAPPED + bytes(rng.choice((0, 1, 9, 10, 99, 100, 199, 200, 255)) for _ in range(4))
                  for _ in range(2000)]
    got = format_addresses(as_rows(addresses), np.full(len(addresses), 4, np.uint8))
    assert got.type == pa.string()
    assert got.to_pylist() == [str(ipaddress.IPv4Address(a[12:])) for a in addresses]


def test_ipv6_text_matches_ipaddress():
    rng = random.Random(4291)
    addresses = [v6(a) for a in EDGE_V6] + [random_ipv6(rng) for _ in range(30000)]
    addresses += [rng.getrandbits(128).to_bytes(16, "big") for _ in range(2000)]
    addresses += [MAPPED + rng.getrandbits(32).to_bytes(4, "big") for _ in range(500)]  # IPv6 packets, mapped
    got = format_addresses(as_rows(addresses), np.full(len(addresses), 6, np.uint8)).to_pylist()
    assert got == [expected_text(a, 6) for a in addresses]
    for text, raw in zip(got, addresses):  # and each reads back as the same address
        assert ipaddress.IPv6Address(text).packed == raw


def test_rfc5952_text():
    cases = {
        "::": "::", "::1": "::1", "1::": "1::", "2001:DB8:0:0:0:0:0:1": "2001:db8::1",
        "2001:db8:0:0:1:0:0:1": "2001:db8::1:0:0:1",  # two runs of equal length: the first is compressed
        "2001:0:0:1:0:0:0:1": "2001:0:0:1::1",  # the longest run
        "2001:db8:0:1:1:1:1:1": "2001:db8:0:1:1:1:1:1",  # a single zero group stays 0
        "0:0:1:0:0:0:0:0": "0:0:1::", "2001:0db8:000a:0000:0000:0000:0000:0001": "2001:db8:a::1",
        "::ffff:1.2.3.4": "::ffff:102:304", "::ffff:0:0": "::ffff:0:0",
    }
    got = format_addresses(as_rows([v6(a) for a in cases]), np.full(len(cases), 6, np.uint8)).to_pylist()
    assert got == list(cases.values())


def test_version_decides_the_text_per_row():
    """The same 16 bytes are 1.2.3.4 in an IPv4 packet and ::ffff:102:304 in an IPv6 one, in either column."""
    same = v4("1.2.3.4")
    src = [same, same, v6("2001:db8::2"), same, v4("0.0.0.0")]
    dst = [v6("::"), same, same, v4("255.255.255.255"), same]
    version = np.array([4, 6, 6, 4, 4], np.uint8)
    src_h, dst_h = address_columns([as_rows(src), as_rows(dst)], version)
    assert src_h.to_pylist() == ["1.2.3.4", "::ffff:102:304", "2001:db8::2", "1.2.3.4", "0.0.0.0"]
    assert dst_h.to_pylist() == ["0.0.0.0", "::ffff:102:304", "::ffff:102:304", "255.255.255.255", "1.2.3.4"]


def test_address_columns_mixed_random_against_ipaddress():
    rng = random.Random(7)
    n = 5000
    version = np.array([rng.choice((4, 6)) for _ in range(n)], np.uint8)
    pool = [[v4(a) for a in EDGE_V4] + [MAPPED + rng.getrandbits(32).to_bytes(4, "big") for _ in range(300)],
            [v6(a) for a in EDGE_V6] + [random_ipv6(rng) for _ in range(300)]]
    columns = [[rng.choice(pool[int(v == 6)]) for v in version] for _ in range(2)]
    got = address_columns([as_rows(c) for c in columns], version)
    for column, texts in zip(columns, got):
        assert texts.to_pylist() == [expected_text(a, int(v)) for a, v in zip(column, version)]


def test_address_columns_empty():
    empty = np.zeros((0, 16), np.uint8)
    got = address_columns([empty, empty], np.zeros(0, np.uint8))
    assert [a.type for a in got] == [pa.string(), pa.string()] and [len(a) for a in got] == [0, 0]


# ---------------------------------------------------------------------------------------------------------------
# a capture with IPv4 and IPv6 connections, through process() and fastflow's writer


def connection(src: str, dst: str, sport: int, dport: int, t0: int, isn: int) -> list[synth.Packet]:
    """Handshake, one request and answer, FIN close: 8 packets, 1 ms apart."""
    steps = [
        (src, dst, sport, dport, isn, 0, synth.SYN, b""),
        (dst, src, dport, sport, 5000, isn + 1, synth.SYN | synth.ACK, b""),
        (src, dst, sport, dport, isn + 1, 5001, synth.ACK, b""),
        (src, dst, sport, dport, isn + 1, 5001, synth.PSH | synth.ACK, b"hello"),
        (dst, src, dport, sport, 5001, isn + 6, synth.PSH | synth.ACK, b"world!"),
        (src, dst, sport, dport, isn + 6, 5007, synth.FIN | synth.ACK, b""),
        (dst, src, dport, sport, 5007, isn + 7, synth.FIN | synth.ACK, b""),
        (src, dst, sport, dport, isn + 7, 5008, synth.ACK, b""),
    ]
    packets = []
    for i, (a, b, sp, dp, seq, ack, flags, payload) in enumerate(steps):
        tcp = synth.tcp_segment(a, b, sp, dp, seq, ack, flags, payload=payload)
        packets.append(synth.Packet(t0 + i * 1_000_000, synth.ethernet_frame(synth.ip_packet(a, b, synth.PROTO_TCP,
                                                                                               tcp))))
    return packets


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    rng = random.Random(1)
    pairs = [(a, b) for a, b in zip(EDGE_V4, reversed(EDGE_V4))]
    pairs += [(str(ipaddress.IPv6Address(v6(a))), str(ipaddress.IPv6Address(v6(b))))
              for a, b in zip(EDGE_V6, reversed(EDGE_V6))]
    pairs += [(str(ipaddress.IPv4Address(rng.getrandbits(32))), str(ipaddress.IPv4Address(rng.getrandbits(32))))
              for _ in range(60)]
    pairs += [(str(ipaddress.IPv6Address(random_ipv6(rng))), str(ipaddress.IPv6Address(random_ipv6(rng))))
              for _ in range(60)]
    packets = []
    for i, (a, b) in enumerate(pairs):
        if a == b:
            continue
        packets += connection(a, b, 20000 + i, 80 + i, 1_700_000_000_000_000_000 + i * 10_000_000, 1000 * i)
    path = tmp_path_factory.mktemp("capture") / "mixed.pcap"
    synth.write_pcap(str(path), packets, synth.LINKTYPE_ETHERNET)
    # the expected text per frame, from the addresses the packets were built with
    expected = {}
    for frame, packet in enumerate(packets, 1):
        ip = packet.data[14:]
        if ip[0] >> 4 == 4:
            expected[frame] = (str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20])))
        else:
            expected[frame] = (expected_text(ip[8:24], 6), expected_text(ip[24:40], 6))
    return path, expected


@pytest.fixture(scope="module")
def result(capture):
    return process(str(capture[0]), want_segments=True)


def read_back(tmp_path, table: pa.Table, compression: str = "zstd", metadata=None) -> pa.Table:
    path = tmp_path / "out.parquet"
    write_tables([(str(path), table)], compression=compression, metadata=metadata)
    return pq.read_table(path)


def assert_same_table(back: pa.Table, table: pa.Table):
    assert back.column_names == table.column_names
    for name in table.column_names:
        assert back.column(name).type == table.column(name).type, name
        assert back.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_capture_addresses_reach_the_segments(capture, result):
    _, expected = capture
    seg = result.segments
    assert seg.num_rows == len(expected)
    got = zip(seg.column("frame").to_pylist(), seg.column("src_h").to_pylist(), seg.column("dst_h").to_pylist())
    assert {frame: (src, dst) for frame, src, dst in got} == expected
    versions = {ip_version for ip_version in result.flows.column("ip_version").to_pylist()}
    assert versions == {4, 6}


@pytest.mark.parametrize("which", ["segments", "flows"])
def test_round_trip_every_column(tmp_path, result, which):
    table = getattr(result, which)
    back = read_back(tmp_path, table, metadata=result.metadata())
    assert_same_table(back, table)
    assert back.schema.remove_metadata().equals(table.schema.remove_metadata(), check_metadata=True)
    for field in back.schema:  # the descriptions are in the file
        assert field.metadata[b"description"] == table.schema.field(field.name).metadata[b"description"]
    assert back.schema.metadata[b"fastflow_version"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_every_codec(tmp_path, result, compression):
    back = read_back(tmp_path, result.segments, compression=compression)
    assert_same_table(back, result.segments)
    codec = pq.ParquetFile(tmp_path / "out.parquet").metadata.row_group(0).column(0).compression
    assert codec.startswith({"none": "UNCOMPRESSED"}.get(compression, compression.upper()))


def test_pandas_reads_strings(tmp_path, result):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "segments.parquet"
    write_tables([(str(path), result.segments)])
    frame = pd.read_parquet(path)
    assert list(frame.columns) == result.segments.column_names
    assert frame["src_h"].tolist() == result.segments.column("src_h").to_pylist()
    assert frame["dst_h"].tolist() == result.segments.column("dst_h").to_pylist()
    assert frame["flags"].astype(str).tolist() == result.segments.column("flags").to_pylist()
    assert frame["frame"].tolist() == result.segments.column("frame").to_pylist()
    assert str(frame["ts"].dtype).startswith("datetime64[ns") and str(frame["ts"].dt.tz) == "UTC"


def test_flags_are_tcpdump_names(result):
    seg = result.segments
    assert seg.column("flags").to_pylist() == [TCPDUMP_FLAG_NAMES[f & 0x1ff]
                                               for f in seg.column("tcp_flags").to_pylist()]


def test_tcpdump_flag_names_in_tcpdump_order():
    """print-tcp.c prints the flags F S R P . U E W e in that order, "none" when no flag is set."""
    order = "FSRP.UEWe"
    for bits in range(4096):
        assert TCPDUMP_FLAG_NAMES[bits] == ("".join(order[i] for i in range(9) if bits >> i & 1) or "none")
    assert [TCPDUMP_FLAG_NAMES[f] for f in (0x002, 0x012, 0x018, 0x011, 0x004, 0x014, 0x0c2, 0x000)] == [
        "S", "S.", "P.", "F.", "R", "R.", "SEW", "none"]


def test_writer_layout(tmp_path, result):
    """Sorted integers as deltas, random 32-bit values plain, the rest with a dictionary; no min/max statistics
    on strings; zstd level 1 by default; one row group per 1 Mi rows."""
    path = tmp_path / "segments.parquet"
    write_tables([(str(path), result.segments)])
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1
    chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
              for i in range(meta.num_columns)}
    for name in ("frame", "ts", "conn_id"):
        assert "DELTA_BINARY_PACKED" in chunks[name].encodings and not chunks[name].has_dictionary_page, name
    for name in ("seq", "ack"):
        assert not chunks[name].has_dictionary_page, name
    for name in ("src_h", "dst_h", "flags", "tag", "src_p", "window", "rel_seq"):
        assert chunks[name].has_dictionary_page, name
    for name in ("src_h", "dst_h", "flags", "tag"):
        assert not chunks[name].is_stats_set, name
    for name in ("frame", "ts", "conn_id", "seq", "rel_seq", "window", "dup_ack"):
        assert chunks[name].is_stats_set, name
    assert {c.compression for c in chunks.values()} == {"ZSTD"}
    options = parquet_options(result.segments.schema)
    assert options["compression_level"] == 1 and options["row_group_size"] == 1 << 20
    assert "compression_level" not in parquet_options(result.segments.schema, "snappy")
    assert parquet_options(result.segments.schema, "none")["compression"] is None


def test_flows_writer_layout(tmp_path, result):
    """The flows: ids, frames and event times as deltas; ISNs without a dictionary; the rest with one. Read
    back equal."""
    path = tmp_path / "flows.parquet"
    write_tables([(str(path), result.flows)])
    meta = pq.ParquetFile(path).metadata
    chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
              for i in range(meta.num_columns)}
    for name in ("conn_id", "first_frame", "last_frame", "ts_start", "ts_end", "syn_ts", "synack_ts",
                 "handshake_ack_ts", "fin1_ts", "fin2_ts", "rst_ts"):
        assert "DELTA_BINARY_PACKED" in chunks[name].encodings and not chunks[name].has_dictionary_page, name
    for name in ("orig_isn", "resp_isn"):
        assert not chunks[name].has_dictionary_page, name
    for name in ("orig_h", "resp_p", "conn_state", "history", "orig_pkts", "irtt", "community_id", "duration"):
        assert chunks[name].has_dictionary_page, name
    assert pq.read_table(path).equals(result.flows)


def test_large_table_spans_row_groups(tmp_path):
    n = (1 << 20) + 5
    table = pa.table({"frame": pa.array(np.arange(1, n + 1, dtype=np.uint64)),
                      "src_h": pa.array(np.array(["10.0.0.1", "::1"], dtype=object)[np.arange(n) % 2])})
    path = tmp_path / "big.parquet"
    write_tables([(str(path), table)])
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    assert pq.read_table(path).equals(table)


# ---------------------------------------------------------------------------------------------------------------
# schemas


def test_flows_schema_is_pinned(result):
    assert types_of(FLOWS_SCHEMA) == FLOWS_TYPES
    assert result.flows.schema.remove_metadata().equals(FLOWS_SCHEMA)
    assert all(f.nullable for f in FLOWS_SCHEMA)


def test_segments_schema_is_pinned(result):
    assert types_of(SEGMENTS_SCHEMA) == SEGMENTS_TYPES
    assert result.segments.schema.remove_metadata().equals(SEGMENTS_SCHEMA)
    assert SEGMENTS_NULLABLE == {"rel_seq", "rel_ack", "handshake_step", "teardown_step"}
    assert {f.name for f in SEGMENTS_SCHEMA if f.nullable} == SEGMENTS_NULLABLE
    for field in SEGMENTS_SCHEMA:
        if not field.nullable:
            assert result.segments.column(field.name).null_count == 0, field.name


def test_empty_tables_keep_their_schema(tmp_path):
    path = tmp_path / "empty.pcap"
    synth.write_pcap(str(path), [], synth.LINKTYPE_ETHERNET)
    empty = process(str(path), want_segments=True)
    for table, schema in ((empty.flows, FLOWS_SCHEMA), (empty.segments, SEGMENTS_SCHEMA)):
        assert table.num_rows == 0
        back = read_back(tmp_path, table)
        assert back.num_rows == 0 and back.schema.remove_metadata().equals(schema)


def test_streamed_dictionaries_are_re_encoded_as_from_their_strings():
    """write._in_order_of_appearance (ParquetStream's per-row-group dictionaries, from the indices) gives what
    casting to strings and dictionary_encode() give: the same values in the same order, nulls kept, for
    chunks with different dictionaries, slices, nulls under any index, and a dictionary with a repeated value."""
    from fastflow.write import _in_order_of_appearance
    rng = np.random.default_rng(3)
    for _ in range(300):
        arrow_type = pa.dictionary(rng.choice([pa.int8(), pa.int16(), pa.int32()]), pa.string())
        words = [f"w{i}" for i in range(rng.integers(1, 12))]
        chunks = []
        for _ in range(rng.integers(1, 4)):
            # long chunks too, where a value first turns up thousands of rows in (the first rows are looked
            # for a stretch at a time, each four times longer)
            n = int(rng.integers(0, 50)) if rng.random() < 0.7 else int(rng.integers(1000, 12000))
            dictionary = list(rng.permutation(words))
            if rng.random() < 0.2 and len(dictionary) > 1:
                dictionary.append(dictionary[0])
            mask = rng.random(n) < 0.2 if rng.random() < 0.5 else None
            indices = rng.integers(0, max(1, len(dictionary) // 2), n)
            for late in rng.integers(len(dictionary) // 2, len(dictionary), 3) if n > 1000 else []:
                indices[rng.integers(n // 2, n)] = late     # a value that first appears late
            chunk = pa.DictionaryArray.from_arrays(
                pa.array(indices, arrow_type.index_type, mask=mask), pa.array(dictionary, pa.string()))
            chunks.append(chunk.slice(1, n - 2) if rng.random() < 0.3 and n > 2 else chunk)
        column = pa.chunked_array(chunks, arrow_type)
        want = column.cast(pa.string()).combine_chunks().dictionary_encode().cast(arrow_type)
        got = _in_order_of_appearance(column.combine_chunks(), arrow_type)
        assert got.type == want.type and got.equals(want)
    # every row null, with an empty dictionary (a column no row of the group has, e.g. close_initiator) or not
    arrow_type = pa.dictionary(pa.int8(), pa.string())
    for dictionary in ([], ["orig"]):
        column = pa.DictionaryArray.from_arrays(pa.array([None] * 5, pa.int8()), pa.array(dictionary, pa.string()))
        want = column.cast(pa.string()).dictionary_encode().cast(arrow_type)
        got = _in_order_of_appearance(column, arrow_type)
        assert got.type == want.type and got.equals(want) and got.null_count == 5


def test_address_columns_in_parts(monkeypatch):
    """Columns longer than one address_text call are formatted in parts: the same strings."""
    rng = random.Random(11)
    n = 1000
    version = np.array([rng.choice((4, 6)) for _ in range(n)], np.uint8)
    raw = [MAPPED + rng.getrandbits(32).to_bytes(4, "big") if v == 4 else random_ipv6(rng) for v in version]
    whole = address_columns([as_rows(raw)], version)[0]
    monkeypatch.setattr(schema_module, "ADDRESS_TEXT_ROWS", 7)
    parts = address_columns([as_rows(raw)], version)[0]
    assert parts.to_pylist() == whole.to_pylist() == [expected_text(a, int(v)) for a, v in zip(raw, version)]
