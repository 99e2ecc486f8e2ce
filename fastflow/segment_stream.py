"""The segments table while streaming: TCP segments held until their connections finish, analysed then
(summary.analyse_assigned, with the connections the streaming engine found), and written in the order
they were read with the conn_id the flows writer gave their connection.

A segment's columns depend on its whole connection (Zeek may flip the orientation late; which SYN is
step 1 and which ACK closes depend on what follows), so a segment waits until its connection has
finished: a new connection on its address/port pair, or the idle timeout passed in network time. The
segments held are those of the open connections, and those read after the oldest open connection's
first segment (rows go out in reading order, below the flows writer's watermark). Beyond
SEGMENTS_IN_MEMORY rows held (one connection open for hours holds back every segment read after its
first), the oldest batches go to a temporary file but for the rows of connections still open, and come
back when they can be written."""
from __future__ import annotations

import tempfile
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from .errors import OutputError
from .schema import segments_table, take_rows
from .summary import analyse_assigned

#: segments held in memory (about 130 bytes each with their analysed columns); beyond that the oldest
#: batches wait in a temporary file, all but the segments of connections still open
SEGMENTS_IN_MEMORY = 1 << 21


class _SpillFile:
    """A temporary file of spilled batches (numpy's .npy format, one array after the other), closed once
    every batch in it has been read back."""

    def __init__(self):
        try:
            self.file = tempfile.TemporaryFile(prefix="fastflow-waiting-segments-")
        except OSError as exc:
            raise OutputError(f"cannot create a temporary file in {tempfile.gettempdir()}: "
                              f"{exc.strerror or exc}") from None
        self.users = 0

    def write(self, arrays: list[np.ndarray]) -> int:
        offset = self.file.seek(0, 2)
        try:
            for a in arrays:
                np.lib.format.write_array(self.file, np.ascontiguousarray(a), allow_pickle=False)
        except OSError as exc:
            raise OutputError(f"cannot keep segments in a temporary file in {tempfile.gettempdir()} "
                              f"(disk full?): {exc.strerror or exc}; set TMPDIR to a folder with room") from None
        self.users += 1
        return offset

    def read(self, offset: int, count: int) -> list[np.ndarray]:
        try:
            self.file.seek(offset)
            arrays = [np.lib.format.read_array(self.file, allow_pickle=False) for _ in range(count)]
        except OSError as exc:
            raise OutputError(f"cannot read segments back from a temporary file: {exc.strerror or exc}") from None
        self.users -= 1
        if self.users == 0:
            self.file.close()
        return arrays


class _Chunk:
    """One batch's TCP rows: the decoder columns, each row's connection, and once that has finished, the
    analysed columns and the conn_id. A spilled chunk keeps in memory only its rows whose connection was
    still open (rows, result and todo are then those rows'; `kept` says where they go back)."""

    def __init__(self, rows: dict):
        self.rows = rows
        self.frame = rows["frame"]
        self.conn_first = rows["conn_first"]
        self.todo = np.arange(len(self.frame), dtype=np.int64)    # rows whose connection is still open
        self.result: dict | None = None
        self.written = 0                                          # rows already written (a prefix)
        self.first_frame = int(self.frame[0])
        self.spill: tuple[_SpillFile, int] | None = None
        self.kept: np.ndarray | None = None

    def spill_to(self, spill: _SpillFile) -> None:
        if self.result is None:
            self.result = {}
        names = list(self.rows)
        arrays = [self.rows[n] for n in names] + [self.result[n] for n in sorted(self.result)]
        self.spill = (spill, spill.write(arrays))
        self.names = (names, sorted(self.result))
        kept = self.todo
        self.rows = {n: take_rows(v, kept) for n, v in self.rows.items()}
        self.result = {n: v[kept] for n, v in self.result.items()}
        self.frame, self.conn_first = self.rows["frame"], self.rows["conn_first"]
        self.todo = np.arange(kept.size, dtype=np.int64)
        self.kept = kept

    def read_back(self) -> None:
        spill, offset = self.spill
        row_names, result_names = self.names
        arrays = spill.read(offset, len(row_names) + len(result_names))
        rows = dict(zip(row_names, arrays[:len(row_names)]))
        result = dict(zip(result_names, arrays[len(row_names):]))
        kept = self.kept
        for n, v in self.result.items():     # the kept rows' analysis, done since
            if n not in result:
                result[n] = np.zeros(len(rows["frame"]), v.dtype)
            result[n][kept] = v
        self.rows, self.result = rows, result or None
        self.frame, self.conn_first = rows["frame"], rows["conn_first"]
        self.todo = kept[self.todo]
        self.spill = self.kept = None


class SegmentStream:
    """add() each batch's TCP rows (pipeline._finished's, with "conn_first") in reading order; finished()
    the first frames of the connections that finished (all of whose rows were added before); numbered()
    the conn_id of flows rows as they are written; write_below(limit) writes the rows read before frame
    `limit`, whose connections have all finished and been numbered (limit: at most the flows writer's
    watermark, and at most read_upto)."""

    def __init__(self, sink: Callable[[pa.Table], None], server_ports, vlan_aware: bool):
        self.sink = sink
        self.server_ports = server_ports
        self.vlan_aware = vlan_aware
        self.chunks: list[_Chunk] = []
        # conn_id of written flows whose segments may not all be written yet: first frame, last frame, id
        self.ids = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        self.rows_held = 0
        self.read_upto = 0      # one past the last frame added
        self.spilled_rows = 0   # rows moved to a temporary file so far

    def add(self, rows: dict | None) -> None:
        if rows is not None and len(rows["frame"]):
            self.chunks.append(_Chunk(rows))
            self.rows_held += len(rows["frame"])
            self.read_upto = max(self.read_upto, int(rows["frame"][-1]) + 1)

    def finished(self, first_frames: np.ndarray) -> None:
        """Analyse the rows of these connections (the engine's drained rows: all their segments are in)."""
        if not len(first_frames):
            return
        done = np.sort(np.asarray(first_frames, dtype=np.uint64))
        picks = []
        for chunk in self.chunks:
            if not chunk.todo.size:
                continue
            conn = chunk.conn_first[chunk.todo]
            at = np.minimum(np.searchsorted(done, conn), done.size - 1)
            hit = done[at] == conn
            if hit.any():
                picks.append((chunk, chunk.todo[hit]))
                chunk.todo = chunk.todo[~hit]
        if not picks:
            return
        names = [name for name in picks[0][0].rows if name != "conn_first"]
        rows = {name: np.concatenate([c.rows[name][r] for c, r in picks]) for name in names}
        conn_first = np.concatenate([c.conn_first[r] for c, r in picks])
        result = analyse_assigned(rows, conn_first, self.server_ports, self.vlan_aware)
        start = 0
        for chunk, r in picks:
            if not chunk.result:
                chunk.result = {name: np.zeros(len(chunk.frame), values.dtype) for name, values in result.items()}
            for name, values in result.items():
                chunk.result[name][r] = values[start:start + r.size]
            start += r.size

    def pop_finished(self, first_frames: np.ndarray) -> tuple[dict, dict] | None:
        """finished() for a caller that writes the segments at once, in any order (fastflow batch, whose
        conn_id is the connection's first frame): the rows of these connections and their analysed columns,
        taken out of the rows held; None if there are none."""
        if not len(first_frames) or not self.rows_held:
            return None
        done = np.sort(np.asarray(first_frames, dtype=np.uint64))
        picked, kept = [], []
        for chunk in self.chunks:
            at = np.minimum(np.searchsorted(done, chunk.conn_first), done.size - 1)
            hit = done[at] == chunk.conn_first
            if not hit.any():
                kept.append(chunk)
                continue
            picked.append({name: take_rows(values, hit) for name, values in chunk.rows.items()})
            if not hit.all():
                kept.append(_Chunk({name: take_rows(values, ~hit) for name, values in chunk.rows.items()}))
        if not picked:
            return None
        self.chunks = kept
        rows = {name: np.concatenate([p[name] for p in picked]) for name in picked[0]}
        self.rows_held -= len(rows["frame"])
        return rows, analyse_assigned(rows, rows["conn_first"], self.server_ports, self.vlan_aware)

    def held(self) -> dict | None:
        """The rows held, as one set of columns in reading order (fastflow batch saves them with the open
        connections; add() takes them back)."""
        if not self.chunks:
            return None
        return {name: np.concatenate([c.rows[name][c.written:] for c in self.chunks]) for name in self.chunks[0].rows}

    def numbered(self, first_frame: np.ndarray, conn_id: np.ndarray, last_frame: np.ndarray) -> None:
        """Flows rows as they are written (any protocol: first frames are unique across them)."""
        firsts, lasts, ids = self.ids
        firsts = np.concatenate([firsts, np.asarray(first_frame, np.uint64)])
        lasts = np.concatenate([lasts, np.asarray(last_frame, np.uint64)])
        ids = np.concatenate([ids, np.asarray(conn_id, np.uint64)])
        order = np.argsort(firsts, kind="stable")
        self.ids = (firsts[order], lasts[order], ids[order])

    def write_below(self, limit: int) -> None:
        """Write the rows read before frame `limit`: every connection that started before it has finished
        and its flows row has been written (the caller's promise)."""
        limit = np.uint64(limit)
        tables = []
        while self.chunks:
            chunk = self.chunks[0]
            if chunk.spill is not None:
                if chunk.first_frame >= limit:
                    break
                chunk.read_back()
            end = int(np.searchsorted(chunk.frame, limit)) if chunk.frame[-1] >= limit else len(chunk.frame)
            if end > chunk.written:
                tables.append(self._table(chunk, chunk.written, end))
                self.rows_held -= end - chunk.written
                chunk.written = end
            if end < len(chunk.frame):
                break
            self.chunks.pop(0)
        firsts, lasts, ids = self.ids
        keep = lasts >= limit     # connections with rows still to come
        if not keep.all():
            self.ids = (firsts[keep], lasts[keep], ids[keep])
        for table in tables:
            self.sink(table)
        self._spill_if_needed()

    def _spill_if_needed(self) -> None:
        in_memory = sum(len(c.frame) - c.written for c in self.chunks)
        if in_memory <= SEGMENTS_IN_MEMORY:
            return
        spill = None
        # the oldest first, the newest batch aside (its connections are mostly still open); down to three
        # quarters of the limit, so that the next batches do not spill a few rows at a time
        for chunk in self.chunks[:-1]:
            if in_memory <= SEGMENTS_IN_MEMORY - SEGMENTS_IN_MEMORY // 4:
                break
            if chunk.spill is not None or chunk.written or len(chunk.todo) == len(chunk.frame):
                continue
            spill = spill or _SpillFile()
            before = len(chunk.frame)
            chunk.spill_to(spill)
            in_memory -= before - len(chunk.frame)
            self.spilled_rows += before - len(chunk.frame)
        if spill is not None and spill.users == 0:
            spill.file.close()

    def _table(self, chunk: _Chunk, start: int, end: int) -> pa.Table:
        part = slice(start, end)
        if chunk.result is None or (chunk.todo.size and chunk.todo[0] < end):
            raise AssertionError("segments written before their connection finished")
        rows = {name: values[part] for name, values in chunk.rows.items()}
        result = {name: values[part] for name, values in chunk.result.items()}
        firsts, _, ids = self.ids
        at = np.searchsorted(firsts, result["conn_id"])
        if np.any(at >= firsts.size) or np.any(firsts[np.minimum(at, firsts.size - 1)] != result["conn_id"]):
            raise AssertionError("segments written before their connection's flows row")
        result["conn_id"] = ids[at]
        return segments_table(rows, result)
