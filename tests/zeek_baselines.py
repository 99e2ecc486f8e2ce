"""Zeek conn.log baselines of the shared corpus, and the means to compare fastflow's flows table with them.

The corpus (../shared/corpus, see tests/corpus.py) holds, in baselines/zeek/:

- ``<capture>.conn.log``: a whole Zeek TSV log (``#fields`` header; ts and the #open/#close lines masked);
- ``<capture>.conn.log.cut``: a column subset made by zeek-cut or btest-diff-cut (first row names the columns;
  a column that the log did not have is printed with an empty name, as id.ctx.vlan and id.ctx.inner_vlan in
  zeek__vlan-collisions.pcap.conn.log.cut);
- ``conn_state-RST-behavior.out``: one ``history, conn_state`` line for each of four captures.

Every such file starts with btest's marker line (``### BTest baseline data ...``). MANIFEST.tsv (column
``baselines``) names each file with the btest and the exact zeek command; for the RST-behavior file it gives the
line of each capture, counted in the file *including* the marker line (line 2 is the first result), whereas the
corpus README numbers the results 1-4 without the marker. Both give the same mapping; the loader takes it from
MANIFEST and checks the line's text against the text MANIFEST quotes.

Only the stdlib is used: this module does not import fastflow.
"""
from __future__ import annotations

import csv
import gzip
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER_PREFIX = "### BTest baseline data"
RST_BEHAVIOR_FILE = "conn_state-RST-behavior.out"

# Zeek's connection key, in conn.log order.
KEY_COLUMNS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")

# Zeek conn.log column -> fastflow flows column.
ZEEK_TO_FASTFLOW = {
    "id.orig_h": "orig_h",
    "id.orig_p": "orig_p",
    "id.resp_h": "resp_h",
    "id.resp_p": "resp_p",
    "proto": "proto",
    "duration": "duration",
    "orig_bytes": "orig_bytes",
    "resp_bytes": "resp_bytes",
    "conn_state": "conn_state",
    "history": "history",
    "orig_pkts": "orig_pkts",
    "resp_pkts": "resp_pkts",
    "orig_ip_bytes": "orig_ip_bytes",
    "resp_ip_bytes": "resp_ip_bytes",
    "ip_proto": "ip_proto",
}

# fastflow proto -> Zeek's transport enum (Zeek writes icmp for ICMPv6 too).
PROTO_TO_ZEEK = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmp6": "icmp", "other": "unknown_transport"}
IP_PROTO_OF = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58}

UNSET = "-"
EMPTY = "(empty)"
ADDRESS_COLUMNS = ("id.orig_h", "id.resp_h")
COUNT_COLUMNS = ("id.orig_p", "id.resp_p", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts",
                 "orig_ip_bytes", "resp_ip_bytes", "ip_proto", "missed_bytes")
# Zeek prints intervals with 6 decimals; two roundings of one value differ by at most 1e-6.
DURATION_TOLERANCE = 1e-6 + 1e-9


@dataclass
class Baseline:
    capture: str                 # file name in captures/
    path: Path                   # the baseline file
    columns: list[str]           # Zeek column names available (named columns only)
    rows: list[dict[str, str]]   # column -> text as in the log ('-' unset, '(empty)' kept)
    checksums_ignored: bool      # the zeek command has -C
    command: str                 # the zeek command line, as MANIFEST gives it
    test: str = ""               # the btest that made the baseline
    description: str = ""        # MANIFEST's whole note on the file
    cut_columns: list[str] = field(default_factory=list)      # zeek-cut / btest-diff-cut column list, if any
    missing_columns: list[str] = field(default_factory=list)  # asked of zeek-cut but absent (empty header names)
    line: int | None = None      # RST-behavior file: line number in the file (marker line is line 1)

    @property
    def key_columns(self) -> list[str]:
        return [c for c in KEY_COLUMNS if c in self.columns]

    @property
    def comparable_columns(self) -> list[str]:
        """The baseline's columns that fastflow_row_view renders (key columns included)."""
        return [c for c in self.columns if c in ZEEK_TO_FASTFLOW]


# ---------------------------------------------------------------------------------------------------------------
# MANIFEST and baseline files

def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _outer_parens(text: str) -> tuple[str, str]:
    """``head (inner (nested)) tail`` -> (head, inner (nested))."""
    start = text.find("(")
    if start < 0:
        return text.strip(), ""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[:start].strip(), text[start + 1:i]
    return text[:start].strip(), text[start + 1:]


_ZEEK_CMD = re.compile(r"(?<![\w/.$-])zeek((?:\s+-[A-Za-z]+)+)(\s+[^\s(),;]+)?")
_CUT_CMD = re.compile(r"(?:zeek-cut|btest-diff-cut)\s+-m\s+(.*)$")
_BTEST = re.compile(r"zeek btest\s+([^\s,;]+)")
_RST_LINE = re.compile(r"line\s+(\d+)\s*=\s*'([^']*)'")


def parse_command(description: str) -> tuple[str, bool]:
    """The zeek command line in a MANIFEST note, and whether it ignores checksums (-C, also inside -Cr)."""
    m = _ZEEK_CMD.search(description)
    if not m:
        raise ValueError(f"no zeek command in {description!r}")
    options = m.group(1).split()
    command = "zeek" + m.group(1) + (m.group(2) or "")
    return command.strip(), any("C" in opt[1:] for opt in options if not opt.startswith("--"))


def read_manifest(corpus_dir) -> list[dict[str, str]]:
    with open(Path(corpus_dir) / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def manifest_zeek_entries(corpus_dir) -> list[dict]:
    """Every baselines/zeek entry of MANIFEST.tsv, in MANIFEST order: capture, file, description, line, text."""
    entries = []
    for rec in read_manifest(corpus_dir):
        for item in _split_top(rec["baselines"], " | "):
            if not item.startswith("baselines/zeek/"):
                continue
            head, inner = _outer_parens(item)
            rel = head.split()[0]
            m = _RST_LINE.search(head)
            entries.append({
                "capture": rec["name"], "file": rel, "description": inner,
                "line": int(m.group(1)) if m else None, "text": m.group(2) if m else None,
            })
    return entries


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_conn_log(path) -> tuple[list[str], list[dict[str, str]]]:
    """A Zeek ASCII (TSV) log: its #fields and its data rows as dicts of the text as written."""
    fields: list[str] | None = None
    rows = []
    for ln in _read_lines(Path(path)):
        if ln.startswith(MARKER_PREFIX):
            continue
        if ln.startswith("#"):
            if ln.startswith("#fields\t"):
                fields = ln.split("\t")[1:]
            continue
        if fields is None:
            raise ValueError(f"{path}: data before #fields")
        values = ln.split("\t")
        if len(values) != len(fields):
            raise ValueError(f"{path}: {len(values)} values for {len(fields)} fields: {ln!r}")
        rows.append(dict(zip(fields, values)))
    if fields is None:
        raise ValueError(f"{path}: no #fields line")
    return fields, rows


def parse_cut(path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """A zeek-cut -m / btest-diff-cut file: header names, rows (named columns only), positions of empty names."""
    lines = [ln for ln in _read_lines(Path(path)) if not ln.startswith(MARKER_PREFIX)]
    if not lines:
        raise ValueError(f"{path}: no header row")
    header = lines[0].split("\t")
    empty = [i for i, name in enumerate(header) if name == ""]
    rows = []
    for ln in lines[1:]:
        values = ln.split("\t")
        if len(values) != len(header):
            raise ValueError(f"{path}: {len(values)} values for {len(header)} columns: {ln!r}")
        rows.append({name: v for name, v in zip(header, values) if name})
    return header, rows, empty


def load_baselines(corpus_dir) -> list[Baseline]:
    """Every Zeek baseline that MANIFEST.tsv names, in MANIFEST order (RST-behavior lines one Baseline each)."""
    corpus_dir = Path(corpus_dir)
    out = []
    for e in manifest_zeek_entries(corpus_dir):
        path = corpus_dir / e["file"]
        desc = e["description"]
        command, checksums_ignored = parse_command(desc)
        m = _BTEST.search(desc)
        test = m.group(1) if m else ""
        m = _CUT_CMD.search(desc)
        cut_columns = [t for t in m.group(1).split() if t != "conn.log"] if m else []
        common = dict(capture=e["capture"], path=path, checksums_ignored=checksums_ignored, command=command,
                      test=test, description=desc, cut_columns=cut_columns)
        if path.name == RST_BEHAVIOR_FILE:
            if e["line"] is None:
                raise ValueError(f"MANIFEST names {RST_BEHAVIOR_FILE} for {e['capture']} without a line")
            lines = _read_lines(path)
            text = lines[e["line"] - 1]
            if text != e["text"]:
                raise ValueError(f"{path} line {e['line']} is {text!r}, MANIFEST says {e['text']!r}")
            history, conn_state = (s.strip() for s in text.split(","))
            out.append(Baseline(columns=["history", "conn_state"],
                                rows=[{"history": history, "conn_state": conn_state}], line=e["line"], **common))
        elif path.name.endswith(".conn.log.cut"):
            header, rows, empty = parse_cut(path)
            missing = []
            if cut_columns and len(cut_columns) == len(header) and all(
                    h == c for h, c in zip(header, cut_columns) if h):
                missing = [cut_columns[i] for i in empty]
            out.append(Baseline(columns=[h for h in header if h], rows=rows, missing_columns=missing, **common))
        elif path.name.endswith(".conn.log"):
            fields, rows = parse_conn_log(path)
            out.append(Baseline(columns=fields, rows=rows, **common))
        else:
            raise ValueError(f"unknown Zeek baseline kind: {path}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# fastflow rows in Zeek's notation

def _render_duration(value) -> str:
    if value is None:
        return UNSET
    value = float(value)
    if math.isnan(value) or value == 0.0:
        return UNSET
    return "%.6f" % value


def _render(column: str, value) -> str:
    """One fastflow value as Zeek writes that column."""
    if column == "duration":
        return _render_duration(value)
    if value is None:
        return UNSET
    if column == "proto":
        return PROTO_TO_ZEEK.get(str(value), str(value))
    if column in ("history", "conn_state") and value == "":
        return UNSET
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float) and value.is_integer() and column in COUNT_COLUMNS:
        return str(int(value))
    return str(value)


def fastflow_row_view(flows_table_row: dict) -> dict:
    """A fastflow flows row (a dict of Table.to_pylist()) as a Zeek conn.log row: Zeek column -> text.

    Only columns whose fastflow column is in the row are rendered. A row without ``proto`` comes from a flows
    table that is TCP only (fastflow's schema before other protocols): its proto is tcp and ip_proto 6.
    """
    row = flows_table_row
    view = {}
    for zeek_col, ff_col in ZEEK_TO_FASTFLOW.items():
        if ff_col in row:
            view[zeek_col] = _render(zeek_col, row[ff_col])
    if "proto" not in row:
        view["proto"] = "tcp"
        view.setdefault("ip_proto", "6")
    elif "ip_proto" not in row and row["proto"] in IP_PROTO_OF:
        view["ip_proto"] = str(IP_PROTO_OF[row["proto"]])
    return view


def _as_view(row: dict) -> dict:
    """Accept a rendered view or a raw flows row."""
    if any(c.startswith("id.") for c in row) or not any(c in row for c in ("orig_h", "resp_h", "orig_p", "resp_p")):
        return row
    return fastflow_row_view(row)


def _norm_addr(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _duration_number(text) -> float:
    if text is None or text == UNSET or text == "":
        return 0.0
    return float(text)


def values_equal(column: str, zeek_value: str, ours_value) -> bool:
    """Zeek's text against ours (rendered text, or a raw fastflow value; both are brought to Zeek's notation).

    Durations are compared as numbers within 1e-6 ('-' is 0); addresses as addresses; counts as integers.
    A value missing on our side (None) never equals."""
    if ours_value is None:
        return False
    if column != "duration" or not isinstance(ours_value, str):
        ours_value = _render(column, ours_value)  # idempotent on rendered text ('' -> '-', icmp6 -> icmp)
    if column == "duration":
        try:
            return abs(_duration_number(zeek_value) - _duration_number(ours_value)) <= DURATION_TOLERANCE
        except ValueError:
            return zeek_value == ours_value
    if column in ADDRESS_COLUMNS:
        return _norm_addr(zeek_value) == _norm_addr(ours_value)
    if column in COUNT_COLUMNS and zeek_value.isdigit() and ours_value.isdigit():
        return int(zeek_value) == int(ours_value)
    return zeek_value == ours_value


# ---------------------------------------------------------------------------------------------------------------
# matching and comparing

def _key_value(column: str, text) -> str:
    text = "" if text is None else str(text)
    if column in ADDRESS_COLUMNS:
        return _norm_addr(text)
    if column in ("id.orig_p", "id.resp_p") and text.isdigit():
        return str(int(text))
    return text


def row_key(row: dict, key_columns) -> tuple:
    return tuple(_key_value(c, row.get(c)) for c in key_columns)


def match_rows(zeek_rows, our_rows, key_columns=None):
    """Pair Zeek's rows with ours.

    ``zeek_rows``: Baseline.rows. ``our_rows``: fastflow flows rows in order of first packet, raw (to_pylist) or
    already rendered by fastflow_row_view. The key is (id.orig_h, id.orig_p, id.resp_h, id.resp_p, proto), cut
    to the key columns that the Zeek rows have (or ``key_columns`` if given). Rows of every protocol take part.

    Among rows sharing a key, Zeek's order (connection removal) is not ours (first packet), so pairs are made
    greedily by the closest duration ('-' is 0; no duration column: all equal), ties going to the earlier rows
    of each side. With no key column at all, the single Zeek row is paired with our single row, or else with our
    single TCP row; anything else leaves every row unmatched.

    Returns (pairs, unmatched_zeek, extra_ours): pairs are (zeek_row, our_row as given) in our order;
    unmatched_zeek in Zeek's order; extra_ours in our order.
    """
    zeek_rows = list(zeek_rows)
    our_rows = list(our_rows)
    views = [_as_view(r) for r in our_rows]
    if key_columns is None:
        present = set().union(*(r.keys() for r in zeek_rows)) if zeek_rows else set()
        key_columns = [c for c in KEY_COLUMNS if c in present]
    key_columns = list(key_columns)

    if not key_columns:
        zi = list(range(len(zeek_rows)))
        candidates = list(range(len(our_rows)))
        if len(candidates) != 1:
            candidates = [j for j, v in enumerate(views) if v.get("proto") == "tcp"]
        if len(zi) == 1 and len(candidates) == 1:
            j = candidates[0]
            return ([(zeek_rows[0], our_rows[j])], [],
                    [r for k, r in enumerate(our_rows) if k != j])
        return [], zeek_rows, our_rows

    groups_z: dict[tuple, list[int]] = {}
    for i, r in enumerate(zeek_rows):
        groups_z.setdefault(row_key(r, key_columns), []).append(i)
    groups_o: dict[tuple, list[int]] = {}
    for j, v in enumerate(views):
        groups_o.setdefault(row_key(v, key_columns), []).append(j)

    paired_z: dict[int, int] = {}   # our index -> zeek index
    for key, zis in groups_z.items():
        ojs = groups_o.get(key, [])
        if not ojs:
            continue
        if len(zis) == 1 and len(ojs) == 1:
            paired_z[ojs[0]] = zis[0]
            continue
        cands = []
        for zpos, i in enumerate(zis):
            zd = _safe_duration(zeek_rows[i].get("duration"))
            for opos, j in enumerate(ojs):
                od = _safe_duration(views[j].get("duration"))
                diff = abs(zd - od) if zd is not None and od is not None else 0.0
                cands.append((round(diff, 9), zpos, opos, i, j))
        cands.sort()
        used_z, used_o = set(), set()
        for _, _, _, i, j in cands:
            if i in used_z or j in used_o:
                continue
            used_z.add(i)
            used_o.add(j)
            paired_z[j] = i
    matched_z = set(paired_z.values())
    pairs = [(zeek_rows[paired_z[j]], our_rows[j]) for j in sorted(paired_z)]
    unmatched = [r for i, r in enumerate(zeek_rows) if i not in matched_z]
    extra = [r for j, r in enumerate(our_rows) if j not in paired_z]
    return pairs, unmatched, extra


def _safe_duration(text):
    if text is None:
        return None
    try:
        return _duration_number(text)
    except ValueError:
        return None


def compare(pairs, columns):
    """column -> (n_equal, n_total, [(key, zeek_value, our_value), ...] for the pairs that differ).

    A pair counts for a column when the Zeek row has that column; our value is None when our view lacks it
    (which is never equal). key is the full 5-tuple key of the Zeek row, with '' for absent key columns."""
    result = {}
    for col in columns:
        n_equal = n_total = 0
        diffs = []
        for zrow, ours in pairs:
            if col not in zrow:
                continue
            view = _as_view(ours)
            n_total += 1
            ov = view.get(col)
            if values_equal(col, zrow[col], ov):
                n_equal += 1
            else:
                diffs.append((row_key(zrow, KEY_COLUMNS), zrow[col], ov))
        result[col] = (n_equal, n_total, diffs)
    return result


# ---------------------------------------------------------------------------------------------------------------
# tshark reference

def tshark_stream_count(corpus_dir, capture: str) -> int:
    """Distinct tcp.stream values in reference/tshark/<capture>.tcp.csv.gz (tshark's conversations)."""
    path = Path(corpus_dir) / "reference" / "tshark" / f"{capture}.tcp.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        return len({r["tcp.stream"] for r in csv.DictReader(f) if r.get("tcp.stream", "") != ""})
