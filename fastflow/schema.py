"""The one definition of both output tables: Arrow types, column order, and conversion from numpy columns.

Column meanings are documented in docs/schema.md; each field here carries a one-line description too."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ._address_text import address_text
from .tagging import TAG_NAMES
from .tcpstate import ANALYSIS_TAGS

TS = pa.timestamp("ns", tz="UTC")
CATEGORY = pa.dictionary(pa.int8(), pa.string())

FLOWS_FIELDS = [
    ("conn_id", pa.uint64(), "connection id, dense from 0 in order of first packet; joins segments.conn_id"),
    ("ts_start", TS, "earliest packet time of the connection (the first packet's in a time-ordered capture)"),
    ("ts_end", TS, "latest packet time of the connection"),
    ("duration", pa.float64(), "Zeek's duration: seconds from the first packet to the last one before both sides closed"),
    ("orig_h", pa.string(), "originator address (dotted IPv4, RFC 5952 IPv6)"),
    ("orig_p", pa.uint16(), "originator port"),
    ("resp_h", pa.string(), "responder address"),
    ("resp_p", pa.uint16(), "responder port"),
    ("ip_version", pa.uint8(), "4 or 6"),
    ("proto", CATEGORY, "tcp | udp | icmp | icmp6 | other"),
    ("ip_proto", pa.uint8(), "IP protocol number (IPv6: the upper-layer next header)"),
    ("vlan", pa.int32(), "outermost VLAN id of the first packet, null if untagged"),
    ("community_id", pa.string(), "Community ID v1 flow hash (base64 SHA-1, seed --community-id-seed)"),
    ("orig_pkts", pa.uint64(), "segments sent by the originator"),
    ("resp_pkts", pa.uint64(), "segments sent by the responder"),
    ("orig_payload_bytes", pa.uint64(), "TCP payload bytes sent by the originator (retransmissions included)"),
    ("resp_payload_bytes", pa.uint64(), "TCP payload bytes sent by the responder"),
    ("orig_ip_bytes", pa.uint64(), "IP bytes (by the IP length fields) sent by the originator"),
    ("resp_ip_bytes", pa.uint64(), "IP bytes sent by the responder"),
    ("orig_bytes", pa.uint64(), "Zeek's orig_bytes: TCP from sequence numbers, UDP/ICMP payload; null unless duration > 0"),
    ("resp_bytes", pa.uint64(), "Zeek's resp_bytes"),
    ("handshake", CATEGORY, "complete | syn_synack | syn_only | refused | partial"),
    ("syn_ts", TS, "time of the handshake's SYN (step 1)"),
    ("synack_ts", TS, "time of the SYN-ACK (step 2)"),
    ("handshake_ack_ts", TS, "time of the final handshake ACK (step 3)"),
    ("orig_isn", pa.uint32(), "originator's initial sequence number"),
    ("resp_isn", pa.uint32(), "responder's initial sequence number"),
    ("syn_count", pa.uint32(), "SYNs sent by the originator (retransmissions included)"),
    ("synack_count", pa.uint32(), "SYN-ACKs sent by the responder"),
    ("rtt_syn_synack", pa.float64(), "seconds from the last SYN before the SYN-ACK to the SYN-ACK"),
    ("rtt_synack_ack", pa.float64(), "seconds from the last SYN-ACK before the final handshake ACK to that ACK"),
    ("irtt", pa.float64(), "Wireshark's initial RTT: rtt_syn_synack + rtt_synack_ack"),
    ("orig_mss", pa.uint16(), "MSS option of the originator's SYN"),
    ("resp_mss", pa.uint16(), "MSS option of the responder's SYN-ACK"),
    ("orig_wscale", pa.int16(), "window scale shift of the originator's SYN (raw)"),
    ("resp_wscale", pa.int16(), "window scale shift of the responder's SYN-ACK (raw)"),
    ("orig_sack_ok", pa.bool_(), "SACK-permitted in the originator's SYN"),
    ("resp_sack_ok", pa.bool_(), "SACK-permitted in the responder's SYN-ACK"),
    ("close", CATEGORY, "fin | simultaneous_fin | half_closed | rst | refused | none"),
    ("close_initiator", CATEGORY, "orig | resp: sender of the first FIN, or of the RST when no FIN came first"),
    ("rst_by", CATEGORY, "orig | resp | both: who sent RSTs"),
    ("fin1_ts", TS, "time of the first FIN (teardown step 1)"),
    ("fin2_ts", TS, "time of the other side's FIN (teardown step 3)"),
    ("rst_ts", TS, "time of the first RST"),
    ("teardown_segments", pa.uint8(), "3 or 4 for a complete FIN close (3 when step 2 and 3 share a segment)"),
    ("orig_retransmissions", pa.uint32(), "originator segments tagged retransmission"),
    ("resp_retransmissions", pa.uint32(), "responder segments tagged retransmission"),
    ("conn_state", CATEGORY, "Zeek's conn.log conn_state"),
    ("history", pa.string(), "Zeek's conn.log history (no g: fastflow does not reassemble streams)"),
    ("source", pa.string(), "the input as given on the command line"),
    ("first_frame", pa.uint64(), "frame number of the first packet (from 1, as Wireshark)"),
    ("last_frame", pa.uint64(), "frame number of the last packet"),
]

SEGMENTS_FIELDS = [
    ("frame", pa.uint64(), "frame number in the input (from 1, as Wireshark)"),
    ("ts", TS, "capture time"),
    ("conn_id", pa.uint64(), "connection id (flows.conn_id)"),
    ("from_orig", pa.bool_(), "sent by the originator"),
    ("src_h", pa.string(), "source address"),
    ("src_p", pa.uint16(), "source port"),
    ("dst_h", pa.string(), "destination address"),
    ("dst_p", pa.uint16(), "destination port"),
    ("seq", pa.uint32(), "absolute sequence number (tcpdump -S)"),
    ("ack", pa.uint32(), "absolute acknowledgement number"),
    ("rel_seq", pa.int64(), "sequence number relative to the sender's ISN (Wireshark); null if the ISN was not seen"),
    ("rel_ack", pa.int64(), "acknowledgement number relative to the receiver's ISN; null if not seen"),
    ("flags", pa.dictionary(pa.int16(), pa.string()), "flags in tcpdump's notation (S, S., ., P., F., R, R. ...)"),
    ("tcp_flags", pa.uint16(), "the 12 flag bits (FIN 0x1 ... AE 0x100, reserved 0xe00)"),
    ("window", pa.uint16(), "raw (unscaled) window"),
    ("payload_len", pa.uint32(), "TCP payload length from the IP length fields"),
    ("handshake_step", pa.int8(), "1 SYN, 2 SYN-ACK, 3 final ACK; null otherwise"),
    ("teardown_step", pa.int8(), "1 first FIN, 2 its ACK, 3 other FIN, 4 last ACK; null otherwise"),
    ("tag", CATEGORY, "role: " + ", ".join(TAG_NAMES)),
    ("retransmission", pa.bool_(), "payload at or below the highest sequence number the sender had sent (no SYN, RST or keepalive)"),
    ("keepalive", pa.bool_(), "length 0 or 1, sequence number one below the sender's next, no SYN/FIN/RST"),
    ("zero_window", pa.bool_(), "window 0, no SYN/FIN/RST"),
    ("dup_ack", pa.bool_(), "no payload, no SYN/FIN/RST; same ack, window and sequence number as the sender's previous ACK"),
]

#: segments columns that can be null; the others are declared non-nullable (Parquet REQUIRED), which spares the
#: writer a definition level per value and tells readers they never hold a null
SEGMENTS_NULLABLE = frozenset({"rel_seq", "rel_ack", "handshake_step", "teardown_step"})

FLOWS_SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in FLOWS_FIELDS])

# `fastflow batch` datasets: the same columns, the provenance ones for a stream of files (docs/batch.md)
_BATCH_PROVENANCE = {
    "conn_id": ("connection id, unique in its stream: the first packet's file number in the stream times "
                "2**32 plus its frame number in that file"),
    "source": "the file of the connection's first packet",
    "first_frame": "frame number of the first packet in `source` (from 1, as Wireshark)",
    "last_frame": "frame number of the last packet in `last_source`",
}
BATCH_FLOWS_FIELDS = [(n, t, _BATCH_PROVENANCE.get(n, d)) for n, t, d in FLOWS_FIELDS] + [
    ("last_source", pa.string(), "the file of the connection's last packet"),
    ("stream", pa.string(), "the capture stream (by default the files' folder) the connection belongs to"),
]
BATCH_FLOWS_SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in BATCH_FLOWS_FIELDS])
SEGMENTS_SCHEMA = pa.schema([pa.field(n, t, nullable=n in SEGMENTS_NULLABLE, metadata={"description": d})
                             for n, t, d in SEGMENTS_FIELDS])
_BATCH_SEGMENTS_PROVENANCE = {
    "frame": "frame number in `source` (from 1, as Wireshark)",
    "conn_id": "connection id (the flows' conn_id, unique in the stream)",
}
BATCH_SEGMENTS_FIELDS = [(n, t, _BATCH_SEGMENTS_PROVENANCE.get(n, d)) for n, t, d in SEGMENTS_FIELDS] + [
    ("source", pa.string(), "the file the segment was read from"),
    ("stream", pa.string(), "the capture stream the segment belongs to"),
]
BATCH_SEGMENTS_SCHEMA = pa.schema([pa.field(n, t, nullable=n in SEGMENTS_NULLABLE, metadata={"description": d})
                                   for n, t, d in BATCH_SEGMENTS_FIELDS])

# How fastflow.write lays the columns out in Parquet (the figures behind each choice are in
# benchmarks/parquet_write.py and benchmarks/RESULTS.md): sorted or slowly growing integers as deltas
# (DELTA_BINARY_PACKED: a few bits a value, no dictionary to build; the flows' event times too, close to
# ts_start); columns of random 32-bit values without a dictionary (it never pays); every other column with a
# dictionary (Community IDs and durations repeat in real traffic, where clients reuse ports, and are smaller and
# faster to write with one there). ParquetStream (every file the command line writes) keeps a row group's whole
# dictionary, so that the bytes do not depend on how the rows were cut into tables; write_tables lets Parquet
# fall back to plain values where a dictionary outgrows 1 MB. Durations, RTTs and Community IDs without one:
# 13% less write time on the synthetic scale rows, but a 53% larger and 18% slower file on the real capture
# (benchmarks/RESULTS.md, 2026-12-01); so ParquetStream decides from the data instead, column by column, for
# those that are often all distinct (write.MAYBE_DISTINCT). String columns are written without min/max
# statistics: comparing every string costs more than they can prune.
DELTA_COLUMNS = frozenset({"frame", "ts", "conn_id", "ts_start", "first_frame", "last_frame", "ts_end", "syn_ts",
                           "synack_ts", "handshake_ack_ts", "fin1_ts", "fin2_ts", "rst_ts"})
NO_DICTIONARY_COLUMNS = frozenset({"seq", "ack", "orig_isn", "resp_isn"})

# tcpdump's flag letters, in the order it prints them (print-tcp.c tcp_flag_values)
_TCPDUMP_FLAGS = ((0x001, "F"), (0x002, "S"), (0x004, "R"), (0x008, "P"), (0x010, "."), (0x020, "U"),
                  (0x040, "E"), (0x080, "W"), (0x100, "e"))


def _tcpdump_flag_names() -> list[str]:
    # each value's letters are those of the value without its highest bit, then that bit's (made at every
    # start: a join over the nine flags for each of the 4096 values took 4 ms)
    letters = dict(_TCPDUMP_FLAGS)
    text = [""] * 4096
    for bits in range(1, 4096):
        high = 1 << (bits.bit_length() - 1)
        text[bits] = text[bits ^ high] + letters.get(high, "")
    return [t or "none" for t in text]


TCPDUMP_FLAG_NAMES = _tcpdump_flag_names()


# The 16-byte address columns (IPv4 as ::ffff:a.b.c.d) become text without Python per address: the distinct
# addresses of all the columns given are found at once by Arrow's hash table, formatted with numpy (dotted quad, or
# RFC 5952 IPv6 as Python's ipaddress prints it), and each column is then a take() of that text.

ADDRESS_TEXT_ROWS = 1 << 22


def address_columns(raws: list[np.ndarray], version: np.ndarray) -> list[pa.Array]:
    """Address columns of the same rows (16 bytes each, IPv4 mapped; version 4 or 6 per row) to strings:
    version 4 rows as dotted IPv4, the others as RFC 5952 IPv6 (ext/_address_text.pyx)."""
    n = len(version)
    as_ipv4 = np.ascontiguousarray(np.asarray(version) == 4).view(np.uint8)
    out = []
    for raw in raws:
        raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(n, 16)
        parts = []
        # in parts: address_text sizes its buffer for the longest text of every row, and int32 offsets
        for start in range(0, max(n, 1), ADDRESS_TEXT_ROWS):
            rows = slice(start, start + ADDRESS_TEXT_ROWS)
            offsets, data = address_text(raw[rows], as_ipv4[rows])
            parts.append(pa.Array.from_buffers(pa.string(), len(offsets) - 1,
                                               [None, pa.py_buffer(offsets), pa.py_buffer(data)]))
        out.append(parts[0] if len(parts) == 1 else pa.concat_arrays(parts))
    return out


def format_addresses(raw: np.ndarray, version: np.ndarray) -> pa.Array:
    """16-byte addresses (IPv4 mapped) to strings: dotted IPv4 where version is 4, RFC 5952 IPv6 elsewhere."""
    return address_columns([raw], version)[0]


# Arrow arrays are built from numpy buffers (pa.Array.from_buffers) rather than with pa.array(): that copies
# nothing for numbers, and pa.array() imports pandas (about 0.2 s) on its first call wherever pandas is installed.

NUMPY_TYPES = {pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
               pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
               pa.float32(): np.float32, pa.float64(): np.float64}


def _validity(mask, n: int):
    """Arrow's validity bitmap (bit set = present) and null count, from a numpy mask (True = null)."""
    if mask is None:
        return None, 0
    mask = np.asarray(mask, dtype=bool)
    nulls = int(np.count_nonzero(mask))
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(~mask, bitorder="little")), nulls


def null_mask(array: pa.Array) -> np.ndarray | None:
    """An Arrow array's nulls as a numpy mask (True = null; _validity's inverse), None when it has none."""
    if not array.null_count:
        return None
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), bitorder="little")
    return bits[array.offset:array.offset + len(array)] == 0


def take_rows(column: np.ndarray, rows) -> np.ndarray:
    """column[rows] for a slice, an index array or a boolean mask. np.take and np.compress are 10-15x faster
    than indexing on the 16-byte address rows (numpy's general gather goes element by element there), and
    1.2-1.4x on the rest."""
    if isinstance(rows, slice) or np.ma.isMaskedArray(column):
        return column[rows]
    rows = np.asarray(rows)
    if rows.dtype == np.bool_:
        return np.compress(rows, column, axis=0)
    return np.take(column, rows, axis=0)


def fixed_width_array(data, arrow_type, mask=None) -> pa.Array:
    """A numeric, boolean or timestamp Arrow array over numpy data (mask True = null)."""
    data = np.asarray(data)
    n = len(data)
    validity, nulls = _validity(mask, n)
    if pa.types.is_boolean(arrow_type):
        values = pa.py_buffer(np.packbits(data.astype(bool, copy=False), bitorder="little"))
    else:
        dtype = np.int64 if pa.types.is_timestamp(arrow_type) else NUMPY_TYPES[arrow_type]
        values = pa.py_buffer(np.ascontiguousarray(data, dtype=dtype))
    return pa.Array.from_buffers(arrow_type, n, [validity, values], null_count=nulls)


def fixed_width_values(column) -> np.ndarray:
    """An integer or float column's values (Array or ChunkedArray; what lies under nulls included) as numpy,
    without a copy when it is one chunk. (Array.to_numpy() imports pandas, 0.15 s, where it is installed.)"""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dtype = NUMPY_TYPES[column.type]
    return np.frombuffer(column.buffers()[1], dtype, len(column), column.offset * np.dtype(dtype).itemsize)


def string_array(values, mask=None) -> pa.Array:
    """A string Arrow array from a numpy str, bytes (UTF-8) or object (str or None) array, mask True = null.
    Never through pa.array(), which imports pandas (0.15 s) where it is installed."""
    raw = np.asarray(values)
    n = len(raw)
    if raw.dtype.kind not in "US":     # Python objects: str, or None for null
        missing = np.fromiter((v is None for v in raw.tolist()), bool, n)
        if missing.any():
            mask = missing if mask is None else (np.asarray(mask, bool) | missing)
            raw = np.where(missing, "", raw)
        raw = raw.astype(str) if n else np.zeros(0, "U1")
    if raw.dtype.kind == "U":
        ascii_bytes = _ascii(raw)
        raw = np.char.encode(raw, "utf-8") if ascii_bytes is None else ascii_bytes
    width = raw.dtype.itemsize
    cells = np.ascontiguousarray(raw).view(np.uint8).reshape(n, width)
    lengths = np.char.str_len(raw).astype(np.int64) if n else np.zeros(0, np.int64)
    validity, nulls = _validity(mask, n)
    if nulls:
        lengths[np.asarray(mask, bool)] = 0
    if not nulls and width and np.all(lengths == width):    # every string fills its cell (Community IDs)
        offsets, data = np.arange(0, (n + 1) * width, width, dtype=np.int32), cells.reshape(-1)
    else:
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        data = cells[np.arange(width) < lengths[:, None]] if width else np.zeros(0, np.uint8)
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def _ascii(text: np.ndarray) -> np.ndarray | None:
    """A str array as bytes of the same width when every character is ASCII, else None. (astype("S") does
    the same but checks and converts character by character, at ten times the cost.)"""
    width = text.dtype.itemsize // 4
    code_points = np.ascontiguousarray(text).view(np.uint32).reshape(len(text), width)
    if code_points.size and int(code_points.max()) >= 0x80:
        return None
    return code_points.astype(np.uint8).view(f"S{width}").reshape(len(text))


def repeated_string(text: str, n: int) -> pa.Array:
    """n copies of one string."""
    raw = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


def _category(values, names=None, mask=None, arrow_type=None) -> pa.Array:
    """Strings (or codes with their names) as a dictionary column."""
    arrow_type = arrow_type or CATEGORY
    index_type = NUMPY_TYPES[arrow_type.index_type]
    if names is not None:
        return pa.DictionaryArray.from_arrays(fixed_width_array(np.asarray(values).astype(index_type),
                                                                arrow_type.index_type, mask),
                                              string_array(np.asarray(list(names), dtype=str)))
    values = np.asarray(values)
    if values.dtype.kind not in "US":
        present = np.array([v is not None for v in values.tolist()], bool)
        mask = ~present if mask is None else (np.asarray(mask, bool) | ~present)
        values = np.where(present, values, "").astype(str)
    distinct, codes = _sorted_distinct(values)
    return pa.DictionaryArray.from_arrays(fixed_width_array(codes.astype(index_type), arrow_type.index_type, mask),
                                          string_array(distinct))


_DICTIONARIES: dict[tuple, pa.Array] = {}


def coded_category(codes, names: tuple, present=None, arrow_type=CATEGORY) -> pa.DictionaryArray:
    """Codes into `names` as a dictionary column whose dictionary is every name (fastflow.write keeps only the
    ones used, in order of appearance); present False = null. No string is looked at per row."""
    dictionary = _DICTIONARIES.get(names)
    if dictionary is None:
        dictionary = _DICTIONARIES[names] = string_array(np.asarray(names, dtype=str))
    mask = None if present is None else ~np.asarray(present, bool)
    indices = np.asarray(codes).astype(NUMPY_TYPES[arrow_type.index_type])
    if mask is not None:
        indices[mask] = 0     # a valid index under every null
    return pa.DictionaryArray.from_arrays(fixed_width_array(indices, arrow_type.index_type, mask), dictionary)


def category_codes(values, names: tuple) -> np.ndarray:
    """Each string's position in names (ValueError for one not there)."""
    distinct, inverse = _sorted_distinct(np.asarray(values, dtype=str))
    where = {name: i for i, name in enumerate(names)}
    unknown = [v for v in distinct.tolist() if v not in where]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {names}")
    return np.array([where[v] for v in distinct.tolist()], np.int64)[inverse]


def _sorted_distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) for a str or bytes array of few distinct values: Arrow's hash
    table finds them (np.unique would sort every string), and only the distinct ones are sorted."""
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize
    if not len(values) or not width:
        distinct, codes = np.unique(values, return_inverse=True)
        return distinct, codes.reshape(-1)
    encoded = pa.Array.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)]).dictionary_encode()
    found, indices = encoded.dictionary, encoded.indices
    found = np.frombuffer(found.buffers()[1], values.dtype, len(found), width * found.offset)
    rank = np.argsort(found, kind="stable")
    position = np.empty(len(found), np.int64)
    position[rank] = np.arange(len(found))
    indices = np.frombuffer(indices.buffers()[1], np.int32, len(indices), 4 * indices.offset)
    return found[rank], position[indices]


def column_array(values, arrow_type) -> pa.Array:
    if isinstance(values, pa.Array):
        return values.cast(arrow_type) if values.type != arrow_type else values
    mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
    data = np.asarray(values.data) if np.ma.isMaskedArray(values) else np.asarray(values)
    if pa.types.is_dictionary(arrow_type):
        return _category(data, mask=mask, arrow_type=arrow_type)
    if pa.types.is_string(arrow_type):
        return string_array(data, mask)
    return fixed_width_array(data, arrow_type, mask)


def flows_table(flows: dict, source: str) -> pa.Table:
    n = len(flows["conn_id"])
    columns = dict(flows)
    columns["orig_h"], columns["resp_h"] = address_columns([flows["orig_addr"], flows["resp_addr"]],
                                                           flows["ip_version"])
    columns["source"] = repeated_string(source, n)
    arrays = [column_array(columns[name], t) for name, t, _ in FLOWS_FIELDS]
    return pa.Table.from_arrays(arrays, schema=FLOWS_SCHEMA)


def segments_table(seg: dict, segments: dict) -> pa.Table:
    """seg: the decoder's TCP rows; segments: the connection stage's per-segment columns."""
    src_h, dst_h = address_columns([seg["src"], seg["dst"]], seg["ip_version"])
    columns = {
        "frame": seg["frame"], "ts": seg["ts"], "conn_id": segments["conn_id"],
        "from_orig": segments["from_orig"],
        "src_h": src_h, "src_p": seg["sport"], "dst_h": dst_h, "dst_p": seg["dport"],
        "seq": seg["seq"], "ack": seg["ack"],
        "rel_seq": _nullable(segments["rel_seq"], segments["rel_seq"] < 0),
        "rel_ack": _nullable(segments["rel_ack"], segments["rel_ack"] < 0),
        "flags": _flags_column(seg["tcp_flags"]), "tcp_flags": seg["tcp_flags"], "window": seg["window"],
        "payload_len": seg["payload_len"],
        "handshake_step": _nullable(segments["handshake_step"], segments["handshake_step"] < 0),
        "teardown_step": _nullable(segments["teardown_step"], segments["teardown_step"] < 0),
        "tag": _category(segments["tag"], TAG_NAMES),
    }
    for name, bit in ANALYSIS_TAGS.items():
        columns[name] = (segments["analysis"] & bit) != 0
    arrays = [column_array(columns[name], t) for name, t, _ in SEGMENTS_FIELDS]
    return pa.Table.from_arrays(arrays, schema=SEGMENTS_SCHEMA)


def _nullable(values, null_mask):
    return np.ma.masked_array(values, mask=null_mask)


def _flags_column(tcp_flags: np.ndarray) -> pa.Array:
    """tcpdump's flag text per segment: a dictionary of the flag combinations present, in code order."""
    codes = np.asarray(tcp_flags).astype(np.intp) & 0x1ff
    present = np.flatnonzero(np.bincount(codes, minlength=0x200))
    position = np.zeros(0x200, np.int16)
    position[present] = np.arange(len(present), dtype=np.int16)
    names = string_array(np.array([TCPDUMP_FLAG_NAMES[int(c)] for c in present], dtype=str))
    return pa.DictionaryArray.from_arrays(fixed_width_array(position[codes], pa.int16()), names)


def file_metadata(info: dict) -> dict[bytes, bytes]:
    """Parquet key-value metadata: one JSON value per key."""
    return {k.encode(): json.dumps(v, sort_keys=True).encode() for k, v in info.items()}
