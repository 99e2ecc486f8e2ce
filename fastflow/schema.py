"""The one definition of both output tables: Arrow types, column order, and conversion from numpy columns.

Column meanings are documented in docs/schema.md; each field here carries a one-line description too."""
from __future__ import annotations

import ipaddress
import json

import numpy as np
import pyarrow as pa

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

FLOWS_SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in FLOWS_FIELDS])
SEGMENTS_SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in SEGMENTS_FIELDS])

# tcpdump's flag letters, in the order it prints them (print-tcp.c tcp_flag_values)
_TCPDUMP_FLAGS = ((0x001, "F"), (0x002, "S"), (0x004, "R"), (0x008, "P"), (0x010, "."), (0x020, "U"),
                  (0x040, "E"), (0x080, "W"), (0x100, "e"))


def _tcpdump_flag_names() -> list[str]:
    names = []
    for bits in range(4096):
        text = "".join(letter for bit, letter in _TCPDUMP_FLAGS if bits & bit)
        names.append(text or "none")
    return names


TCPDUMP_FLAG_NAMES = _tcpdump_flag_names()


def format_addresses(raw: np.ndarray, version: np.ndarray) -> pa.Array:
    """16-byte addresses (IPv4 mapped) to strings; each distinct address is formatted once."""
    if len(raw) == 0:
        return pa.array([], pa.string())
    keyed = np.ascontiguousarray(raw).view(np.dtype((np.void, 16))).ravel()
    uniq, first, inverse = np.unique(keyed, return_index=True, return_inverse=True)
    texts = []
    for u, i in zip(uniq, first):
        b = u.tobytes()
        texts.append(str(ipaddress.IPv4Address(b[12:])) if version[i] == 4 else str(ipaddress.IPv6Address(b)))
    return pa.DictionaryArray.from_arrays(pa.array(inverse.ravel().astype(np.int32)),
                                          pa.array(texts, pa.string())).cast(pa.string())


def _category(values, names=None) -> pa.Array:
    """Strings (or codes with their names) as a dictionary column."""
    if names is not None:
        return pa.DictionaryArray.from_arrays(pa.array(np.asarray(values).astype(np.int8)),
                                              pa.array(list(names), pa.string()))
    return pa.array(np.asarray(values, dtype=object), pa.string()).dictionary_encode().cast(CATEGORY)


def _column(values, arrow_type) -> pa.Array:
    if isinstance(values, pa.Array):
        return values.cast(arrow_type) if values.type != arrow_type else values
    if pa.types.is_dictionary(arrow_type):
        if np.ma.isMaskedArray(values):
            data = np.asarray(values.data, dtype=object).copy()
            data[np.ma.getmaskarray(values)] = None
            return _category(data)
        return _category(values)
    if np.ma.isMaskedArray(values):
        mask = np.ma.getmaskarray(values)
        data = np.asarray(values.data)
        if pa.types.is_timestamp(arrow_type):
            data = data.astype(np.int64)
        return pa.array(data, mask=mask, type=arrow_type) if mask.any() else pa.array(data, type=arrow_type)
    data = np.asarray(values)
    if pa.types.is_timestamp(arrow_type):
        data = data.astype(np.int64)
    if pa.types.is_string(arrow_type):
        return pa.array(data.astype(object), pa.string())
    return pa.array(data, type=arrow_type)


def flows_table(flows: dict, source: str) -> pa.Table:
    n = len(flows["conn_id"])
    columns = dict(flows)
    columns["orig_h"] = format_addresses(flows["orig_addr"], flows["ip_version"])
    columns["resp_h"] = format_addresses(flows["resp_addr"], flows["ip_version"])
    columns["source"] = pa.array([source] * n, pa.string()) if n else pa.array([], pa.string())
    arrays = [_column(columns[name], t) for name, t, _ in FLOWS_FIELDS]
    return pa.Table.from_arrays(arrays, schema=FLOWS_SCHEMA)


def segments_table(seg: dict, segments: dict) -> pa.Table:
    """seg: the decoder's TCP rows; segments: the connection stage's per-segment columns."""
    columns = {
        "frame": seg["frame"], "ts": seg["ts"], "conn_id": segments["conn_id"],
        "from_orig": segments["from_orig"],
        "src_h": format_addresses(seg["src"], seg["ip_version"]), "src_p": seg["sport"],
        "dst_h": format_addresses(seg["dst"], seg["ip_version"]), "dst_p": seg["dport"],
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
    arrays = [_column(columns[name], t) for name, t, _ in SEGMENTS_FIELDS]
    return pa.Table.from_arrays(arrays, schema=SEGMENTS_SCHEMA)


def _nullable(values, null_mask):
    return np.ma.masked_array(values, mask=null_mask)


def _flags_column(tcp_flags: np.ndarray) -> pa.Array:
    codes, inverse = np.unique(np.asarray(tcp_flags) & 0x1ff, return_inverse=True)
    names = pa.array([TCPDUMP_FLAG_NAMES[int(c)] for c in codes], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int16).ravel()), names)


def file_metadata(info: dict) -> dict[bytes, bytes]:
    """Parquet key-value metadata: one JSON value per key."""
    return {k.encode(): json.dumps(v, sort_keys=True).encode() for k, v in info.items()}
