"""`fastflow show`: a flows file as a table, or one connection's segments as an annotated tcpdump-style listing."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError, UsageError

FLOW_COLUMNS = (("conn_id", 7), ("ts_start", 26), ("proto", 5), ("orig", 0), ("resp", 0), ("handshake", 10),
                ("close", 16), ("closer", 6), ("state", 6), ("history", 12), ("pkts", 9), ("duration", 10))
STEP_NAMES = {1: "SYN", 2: "SYN-ACK", 3: "ACK"}
TEARDOWN_NAMES = {1: "first FIN", 2: "ACK of first FIN", 3: "second FIN", 4: "ACK of second FIN"}


def _read(path: str):
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for non-Parquet
        raise InputError(f"{path}: not a Parquet file written by fastflow ({exc})") from None


def show(path: str, conn: int | None = None, limit: int = 50, out=None) -> None:
    table = _read(path)
    names = set(table.column_names)
    if "handshake_step" in names:
        if conn is None:
            ids = pc.unique(table["conn_id"]).to_pylist()
            raise UsageError(f"{path} is a segments file: give --conn ID ({len(ids)} connections, "
                             f"ids {min(ids, default=0)}..{max(ids, default=0)})")
        _list_segments(table, conn, out)
    elif "handshake" in names:
        if conn is not None:
            seg_path = _segments_path(table, path)
            if seg_path is None:
                raise UsageError(f"{path} was written without --segments: no segments to list")
            row = table.filter(pc.equal(table["conn_id"], conn)).select(["proto"]).to_pylist()
            if row and row[0]["proto"] != "tcp":
                raise UsageError(f"connection {conn} is {row[0]['proto']}: segments are listed for TCP only")
            _list_segments(_read(seg_path), conn, out)
        else:
            _print_flows(table, limit, out)
    else:
        raise InputError(f"{path}: not a flows or segments file written by fastflow")


def _segments_path(table, path: str) -> str | None:
    meta = table.schema.metadata or {}
    name = meta.get(b"segments_file")
    if not name:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(path)), json.loads(name))


def _endpoint(host: str, port: int) -> str:
    return f"{host}.{port}"


def _print_flows(table, limit: int, out) -> None:
    rows = table.slice(0, limit).to_pylist() if limit else table.to_pylist()
    cells = []
    for r in rows:
        cells.append([
            str(r["conn_id"]), r["ts_start"].strftime("%Y-%m-%d %H:%M:%S.%f"), r["proto"],
            _endpoint(r["orig_h"], r["orig_p"]), _endpoint(r["resp_h"], r["resp_p"]),
            # TCP-only columns are null on other protocols; history is empty where Zeek writes none
            r["handshake"] or "-", r["close"] or "-", r["close_initiator"] or "-", r["conn_state"],
            r["history"] or "-", f"{r['orig_pkts']}/{r['resp_pkts']}", f"{r['duration']:.6f}",
        ])
    header = [name for name, _ in FLOW_COLUMNS]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip(), file=out)
    if limit and table.num_rows > limit:
        print(f"... {table.num_rows - limit} more connections (--limit 0 shows all)", file=out)


def _list_segments(table, conn: int, out) -> None:
    rows = table.filter(pc.equal(table["conn_id"], conn)).to_pylist()
    if not rows:
        raise UsageError(f"no connection with id {conn}")
    for r in rows:
        ts = r["ts"].astimezone(timezone.utc) if isinstance(r["ts"], datetime) else r["ts"]
        stamp = ts.strftime("%H:%M:%S.%f")
        arrow = "C>S" if r["from_orig"] else "S>C"
        text = (f"{stamp} {arrow} {_endpoint(r['src_h'], r['src_p'])} > {_endpoint(r['dst_h'], r['dst_p'])}: "
                f"Flags [{r['flags']}], seq {r['seq']}")
        if r["tcp_flags"] & 0x10:
            text += f", ack {r['ack']}"
        text += f", win {r['window']}, length {r['payload_len']}"
        notes = []
        if r["handshake_step"] is not None:
            notes.append(f"handshake {r['handshake_step']} ({STEP_NAMES[r['handshake_step']]})")
        if r["teardown_step"] is not None:
            notes.append(f"teardown {r['teardown_step']} ({TEARDOWN_NAMES[r['teardown_step']]})")
        notes.append(r["tag"])
        print(f"{text:<100} | {'; '.join(notes)}", file=out)
