"""Orchestration: source -> decoded batches -> TCP segments -> connections and tags -> tables.

Decoded batches are reduced at once to the TCP rows and the columns the connection stage reads, so the
per-packet columns of a batch are freed before the next one is decoded."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from . import __version__, _decode
from .community_id import community_id
from .datagram import datagram_flows
from .decode import CaptureReader, Damage, PFlag, Status, check_filter
from .server_ports import ZEEK_LIKELY_SERVER_PORTS_TCP, ZEEK_LIKELY_SERVER_PORTS_UDP
from .schema import file_metadata, flows_table, segments_table
from .source import Source
from .summary import analyse, combine_flows, summary_counts

# the decoder columns the connection stage and the segments table need
SEGMENT_INPUT_COLUMNS = ("frame", "ts", "vlan", "ip_version", "src", "dst", "sport", "dport", "seq", "ack",
                         "tcp_flags", "window", "payload_len", "claimed_len", "ip_len", "mss", "wscale", "sack_ok",
                         "pflags", "network_time")
# ... and those the UDP / ICMP / other-IP flows need
DATAGRAM_INPUT_COLUMNS = ("frame", "ts", "status", "vlan", "ip_version", "src", "dst", "ip_proto", "sport",
                          "dport", "ip_len", "payload_len", "network_time")
DATAGRAM_STATUSES = (Status.UDP, Status.ICMP, Status.ICMP6, Status.OTHER_IP)

#: Zeek's inactivity timeouts (init-bare.zeek: tcp_inactivity_timeout, udp_, icmp_, unknown_ip_)
DEFAULT_IDLE_TIMEOUTS_S = {"tcp": 300.0, "udp": 60.0, "icmp": 60.0, "other": 60.0}


@dataclass
class Result:
    flows: pa.Table
    segments: pa.Table | None
    stats: dict = field(default_factory=dict)
    damage: Damage | None = None

    def metadata(self) -> dict[bytes, bytes]:
        return file_metadata({"fastflow_version": __version__, "inputs": [self.stats["source"]],
                              "counts": self.stats["counts"],
                              "damage": self.stats["damage"]})


def add_network_time(batch: dict, previous: int) -> int:
    """Zeek's network time per row: the largest timestamp seen so far in the capture, every packet counted
    (timeouts are measured on it). Returns the network time at the end of the batch."""
    ts = batch["ts"]
    now = np.maximum.accumulate(ts) if ts.size else ts.copy()
    if ts.size:
        np.maximum(now, previous, out=now)
        previous = int(now[-1])
    batch["network_time"] = now
    return previous


def _concat(parts: list[dict], columns) -> dict:
    if not parts:
        empty = _decode.Decoder(1).take()  # zero rows with the decoder's dtypes
        return {name: empty[name] if name in empty else np.zeros(0, np.int64) for name in columns}
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in columns}


def process(path: str, *, filter_expr: str | None = None, idle_timeouts_s: dict | None = None,
            want_segments: bool = False, batch_size: int = 1 << 18, community_id_seed: int = 0,
            vlan_aware: bool = False, server_ports: tuple | None = None, verify_checksums: bool = False,
            progress: Callable[[int, int | None], None] | None = None) -> Result:
    """Decode one capture and analyse its connections. Raises FastflowError subclasses.

    idle_timeouts_s: seconds by protocol ("tcp", "udp", "icmp", "other"), missing ones Zeek's defaults;
    server_ports: (TCP ports, UDP ports) Zeek takes as likely servers when it orients a connection;
    verify_checksums: as Zeek without -C, drop packets with a bad IPv4 header checksum and note bad TCP
    checksums in history (C) instead of analysing those segments."""
    started = time.perf_counter()
    if filter_expr:
        check_filter(filter_expr)
    timeouts = dict(DEFAULT_IDLE_TIMEOUTS_S, **(idle_timeouts_s or {}))
    timeouts_ns = {proto: int(seconds * 1e9) for proto, seconds in timeouts.items()}
    tcp_ports, udp_ports = server_ports or (ZEEK_LIKELY_SERVER_PORTS_TCP, ZEEK_LIKELY_SERVER_PORTS_UDP)
    tcp_parts, datagram_parts = [], []
    with Source(path) as source:
        reader = CaptureReader(source, filter_expr=filter_expr, batch_size=batch_size,
                               verify_checksums=verify_checksums)
        bad_ip_checksum = 0
        network_time = np.iinfo(np.int64).min
        for batch in reader.batches():
            network_time = add_network_time(batch, network_time)
            status = batch["status"]
            valid = (batch["pflags"] & PFlag.BAD_IP_CHECKSUM) == 0
            bad_ip_checksum += int(valid.size - np.count_nonzero(valid))
            tcp = (status == Status.TCP) & valid
            tcp_parts.append({name: batch[name][tcp] for name in SEGMENT_INPUT_COLUMNS})
            datagram = np.isin(status, DATAGRAM_STATUSES) & valid
            if datagram.any():
                datagram_parts.append({name: batch[name][datagram] for name in DATAGRAM_INPUT_COLUMNS})
            del batch
            if progress is not None:
                progress(source.raw_consumed, source.size)
        decoded_at = time.perf_counter()
        seg = _concat(tcp_parts, SEGMENT_INPUT_COLUMNS)
        del tcp_parts
        segments, tcp_flows = analyse(seg, timeouts_ns["tcp"], tcp_ports, vlan_aware)
        other = datagram_flows(_concat(datagram_parts, DATAGRAM_INPUT_COLUMNS), timeouts_ns, udp_ports, vlan_aware)
        del datagram_parts
        flows, tcp_conn_id = combine_flows(tcp_flows, other)
        segments["conn_id"] = tcp_conn_id[segments["conn_id"]]
        flows["community_id"] = community_id(flows["orig_addr"], flows["resp_addr"], flows["ip_version"],
                                             flows["ip_proto"], flows["orig_p"], flows["resp_p"],
                                             seed=community_id_seed)
        analysed_at = time.perf_counter()
        flows_tab = flows_table(flows, path)
        segments_tab = segments_table(seg, segments) if want_segments else None
        counts = {
            "packets": int(reader.frames),
            "filtered": int(reader.filtered),
            "bad_ip_checksum": bad_ip_checksum,
            "tcp_segments": int(len(seg["frame"])),
            "by_status": reader.status_counts,
            "format": reader.file_format,
            "linktypes": reader.linktypes,
            "compression": source.compression,
            "input_bytes": source.raw_consumed if source.compression or path == "-" else (source.size or 0),
        }
        counts.update(summary_counts(flows))
        damage = reader.damage
    finished = time.perf_counter()
    stats = {
        "source": path,
        "counts": counts,
        "damage": None if damage is None else {"kind": damage.kind, "offset": damage.offset,
                                               "message": damage.message},
        "seconds": {"decode": decoded_at - started, "connections": analysed_at - decoded_at,
                    "tables": finished - analysed_at, "total": finished - started},
    }
    return Result(flows_tab, segments_tab, stats, damage)
