"""The segments table while streaming: TCP segments held until their connections finish, analysed then
(summary.analyse_assigned, with the connections the streaming engine found), and written in the order
they were read with the conn_id the flows writer gave their connection.

A segment's columns depend on its whole connection (Zeek may flip the orientation late; which SYN is
step 1 and which ACK closes depend on what follows), so a segment waits until its connection has
finished: a new connection on its address/port pair, or the idle timeout passed in network time. The
segments held are those of the open connections, and those read after the oldest open connection's
first segment (rows go out in reading order, below the flows writer's watermark).

They can be all of them: a capture shorter than the idle timeout keeps every connection open to its end,
and one connection open for hours holds back every segment read after its first. Beyond
SEGMENTS_IN_MEMORY rows in memory, the oldest batches go to a temporary file: their analysed rows in
reading order, the others (connections still open) in a run sorted by connection. Connections that
started in a spilled batch are analysed when that batch is to be written, a batch's worth of first
frames at a time, each run read front to back; their rows that belong to later batches wait in memory
(those of the connections that cross a batch's end)."""
from __future__ import annotations

import bisect
import heapq
import itertools
import os
import tempfile
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from .decode import BatchMemory
from .errors import OutputError
from .schema import segments_table, take_rows
from .summary import analyse_assigned

#: segments held in memory (about 135 bytes each with their analysed columns); beyond that the oldest
#: batches go to a temporary file
SEGMENTS_IN_MEMORY = 1 << 20

#: a batch smaller than this joins the newest batch held while their rows together stay below it (and below
#: an eighth of SEGMENTS_IN_MEMORY): each finished() looks at every batch held, so small batches (a small
#: capture among rotated ones; the tests' batches of one packet) made that quadratic in the rows held
JOIN_ROWS = 1024


def _concat_rows(parts: list[dict]) -> dict:
    """Sets of columns, one after the other."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class _SpillFile:
    """A temporary file that columns are appended to and read back from by row range (raw bytes, one
    column after the other; `_Stored` says where). It is never trimmed: it holds at most every segment once,
    and goes when the stream does."""

    def __init__(self):
        try:
            self.file = tempfile.TemporaryFile(prefix="fastflow-waiting-segments-")
        except OSError as exc:
            raise OutputError(f"cannot create a temporary file in {tempfile.gettempdir()}: "
                              f"{exc.strerror or exc}") from None
        self.end = 0

    def store(self, columns) -> "_Stored":
        """Append columns given as (name, values) pairs, made one at a time by the caller if it likes (so
        that only one is in memory at once)."""
        where, rows = {}, 0
        try:
            for name, values in columns:
                rows = len(values)
                values = np.ascontiguousarray(values)
                data = memoryview(values).cast("B") if values.size else b""
                where[name] = (self.end, values.dtype, values.shape[1:])
                done = 0
                while done < len(data):
                    done += os.pwrite(self.file.fileno(), data[done:], self.end + done)
                self.end += len(data)
        except OSError as exc:
            raise OutputError(f"cannot keep segments in a temporary file in {tempfile.gettempdir()} "
                              f"(disk full?): {exc.strerror or exc}; set TMPDIR to a folder with room") from None
        return _Stored(self, where, rows)

    def load(self, where: dict, start: int, stop: int) -> dict:
        columns = {}
        try:
            for name, (offset, dtype, tail) in where.items():
                values = np.empty((stop - start,) + tail, dtype)
                row_bytes = values.itemsize * int(np.prod(tail, dtype=np.int64))
                buffer, at, done = memoryview(values).cast("B") if values.size else b"", offset + start * row_bytes, 0
                while done < len(buffer):
                    got = os.preadv(self.file.fileno(), [buffer[done:]], at + done)
                    if got <= 0:
                        raise OSError(0, "the file ended early")
                    done += got
                columns[name] = values
        except OSError as exc:
            raise OutputError(f"cannot read segments back from a temporary file: {exc.strerror or exc}") from None
        return columns


class _Stored:
    """Columns of `rows` rows in a _SpillFile."""

    def __init__(self, spill: _SpillFile, where: dict, rows: int):
        self.spill, self.where, self.rows = spill, where, rows

    def load(self, start: int = 0, stop: int | None = None) -> dict:
        return self.spill.load(self.where, start, self.rows if stop is None else stop)


class _Run:
    """The rows of connections still open when their batches were spilled: stored sorted by connection
    (conn_first, then frame), read back in that order, one range of first frames at a time. `bounds` are
    the first frames the ranges can end at (the batches' first frames from the cursor to the horizon, known
    when the run is made: its connections all started before the horizon), `stops` the row each range ends
    at. Only the first bound and those at which the stop moves on are kept: with a cursor that stays put
    (one long connection) every run would otherwise hold every batch's bound, quadratic in memory. `due`
    is the first frame take_below gives rows at."""

    def __init__(self, stored: _Stored, bounds: np.ndarray, stops: np.ndarray):
        moves = np.flatnonzero(np.diff(stops, prepend=-1))
        self.stored, self.bounds, self.stops = stored, bounds[moves].tolist(), stops[moves].tolist()
        self.last_bound = int(bounds[-1])
        self.read = 0
        self.due = self._due()

    def _due(self) -> int:
        at = bisect.bisect_right(self.stops, self.read)      # the first bound whose stop is past what was read
        return self.bounds[at] if at < len(self.bounds) else self.last_bound + 1

    def take_below(self, frame: int) -> dict | None:
        """The rows of connections that started before `frame` (one of the bounds, or past them all) not
        taken yet."""
        if frame > self.last_bound:
            stop = self.stored.rows
        else:
            at = bisect.bisect_right(self.bounds, frame) - 1
            if at < 0:
                raise AssertionError("a spilled run read up to a frame before its first bound")
            stop = self.stops[at]
        if stop <= self.read:
            return None
        rows = self.stored.load(self.read, stop)
        self.read = stop
        self.due = self._due()
        return rows


class _Chunk:
    """One batch's TCP rows: the decoder columns, each row's connection, and once that has finished, the
    analysed columns and the conn_id. A spilled chunk keeps nothing in memory: its analysed rows are in the
    temporary file in reading order (`stored`), and the rest in a run (SegmentStream.runs), by connection."""

    def __init__(self, rows: dict):
        self.rows = rows
        self.frame = rows["frame"]
        self.conn_first = rows["conn_first"]
        self.todo = np.arange(len(self.frame), dtype=np.int64)    # rows whose connection is still open
        self.result: dict | None = None
        self.written = 0                                          # rows already written (a prefix)
        self.first_frame = int(self.frame[0])
        self.last_frame = int(self.frame[-1])
        self.size = len(self.frame)
        self.stored: _Stored | None = None

    @property
    def spilled(self) -> bool:
        return self.rows is None

    def join(self, rows: dict) -> None:
        """Take the rows of the next batch (not spilled). The rows written stay, so that first_frame (a
        spilled run's bound, perhaps) does not move."""
        old, n = self.size, len(rows["frame"])
        self.rows = {name: np.concatenate([values, rows[name]]) for name, values in self.rows.items()}
        self.frame, self.conn_first = self.rows["frame"], self.rows["conn_first"]
        self.todo = np.concatenate([self.todo, np.arange(old, old + n, dtype=np.int64)])
        if self.result is not None:     # room for the new rows' analysed columns, filled when they finish
            self.result = {name: np.concatenate([values, np.empty((n,) + values.shape[1:], values.dtype)])
                           for name, values in self.result.items()}
        self.size += n
        self.last_frame = int(self.frame[-1])

    def drop_written(self) -> None:
        """Forget the rows already written (before spilling the rest)."""
        if not self.written:
            return
        keep = slice(self.written, None)
        self.rows = {n: v[keep] for n, v in self.rows.items()}
        if self.result is not None:
            self.result = {n: v[keep] for n, v in self.result.items()}
        self.frame, self.conn_first = self.rows["frame"], self.rows["conn_first"]
        self.todo = self.todo - self.written
        self.first_frame, self.size, self.written = int(self.frame[0]), len(self.frame), 0

    def spill_to(self, spill: _SpillFile) -> tuple[dict, np.ndarray]:
        """Store the analysed rows, and hand over the columns and the positions of the others (their
        connections still open) for a run."""
        rows, todo = self.rows, self.todo
        if todo.size < self.size:
            done = np.ones(self.size, bool)
            done[todo] = False
            self.stored = spill.store(itertools.chain(
                ((n, take_rows(v, done)) for n, v in rows.items() if n != "conn_first"),
                (("r:" + n, np.compress(done, v, axis=0)) for n, v in self.result.items())))
        self.rows = self.result = self.frame = self.conn_first = None
        self.todo = np.zeros(0, np.int64)
        return rows, todo


class SegmentStream:
    """add() each batch's TCP rows (pipeline._finished's, with "conn_first") in reading order; finished()
    the first frames of the connections that finished (all of whose rows were added before); numbered()
    the conn_id of flows rows as they are written; write_below(limit) writes the rows read before frame
    `limit`, whose connections have all finished and been numbered (limit: at most the flows writer's
    watermark, and at most read_upto).

    Beyond SEGMENTS_IN_MEMORY rows in memory, the oldest batches are spilled (a prefix of `chunks`): their
    analysed rows in reading order, the rest in a run sorted by connection. Connections that started before
    `horizon` (the first batch not spilled) are then analysed only when written, a batch's worth of first
    frames at a time (`cursor`: every connection that started before it is analysed), from the runs and
    the rows in memory; their rows from the runs wait in `patches` (in reading order) for their batch to
    be written. So the memory held is the limit, a batch or two, and the segments of the connections
    that cross the frame being written."""

    def __init__(self, sink: Callable[[pa.Table], None], server_ports, vlan_aware: bool):
        self.sink = sink
        self.server_ports = server_ports
        self.vlan_aware = vlan_aware
        self.chunks: list[_Chunk] = []
        self.n_spilled = 0      # the first n_spilled chunks are spilled: found without a walk over them all
        # conn_id of written flows whose segments may not all be written yet: first frame, last frame, id
        self.ids = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        self.rows_held = 0      # rows added and not written yet, in memory or in the temporary file
        self.read_upto = 0      # one past the last frame added
        self.spilled_rows = 0   # rows moved to the temporary file so far
        self.spill: _SpillFile | None = None
        self.runs: list[tuple[int, int, _Run]] = []     # a heap: (due, order made, run)
        self.runs_made = 0
        self.first_frames = np.zeros(0, np.uint64)         # the chunks', to search them without a walk
        self.patches: list[dict] = []
        self.horizon = 0        # connections that started before this frame are analysed when written
        self.result_memory: BatchMemory | None = None
        self.cursor = 0         # ... and those that started before this one have been

    def close(self) -> None:
        """Remove the temporary file (also done once nothing in it is waiting)."""
        if self.spill is not None:
            self.spill.file.close()
            self.spill = None

    def rows_in_memory(self) -> tuple[int, int]:
        """Rows held in memory: in the batches not spilled, and in the patches."""
        return (sum(c.size - c.written for c in self.chunks[self.n_spilled:]),
                sum(len(p["frame"]) for p in self.patches))

    def add(self, rows: dict | None) -> None:
        if rows is not None and len(rows["frame"]):
            last = self.chunks[-1] if self.chunks else None
            if last is not None and not last.spilled and \
                    last.size + len(rows["frame"]) <= min(JOIN_ROWS, SEGMENTS_IN_MEMORY // 8):
                last.join(rows)
            else:
                self.chunks.append(_Chunk(rows))
                self.first_frames = np.append(self.first_frames, np.uint64(self.chunks[-1].first_frame))
            self.rows_held += len(rows["frame"])
            self.read_upto = max(self.read_upto, int(rows["frame"][-1]) + 1)

    def finished(self, first_frames: np.ndarray) -> None:
        """Analyse the rows of these connections (the engine's drained rows: all their segments are in),
        but for those that started before the horizon (some of their rows are in a run: analysed when
        written). Then spill if there are too many rows in memory: while no connection finishes, nothing
        is written."""
        done = np.sort(np.asarray(first_frames, dtype=np.uint64))
        if self.horizon:
            done = done[np.searchsorted(done, np.uint64(self.horizon)):]
        if done.size:
            self._analyse(None, self._take_todo(
                lambda conn: done[np.minimum(np.searchsorted(done, conn), done.size - 1)] == conn))
        self._spill_if_needed()

    def _take_todo(self, wanted: Callable[[np.ndarray], np.ndarray]) -> list:
        """The rows in memory whose connection (conn_first) is wanted, as (chunk, positions); no longer to do."""
        picks = []
        for chunk in self.chunks[self.n_spilled:]:
            if not chunk.todo.size:
                continue
            hit = wanted(chunk.conn_first[chunk.todo])
            if hit.any():
                picks.append((chunk, chunk.todo[hit]))
                chunk.todo = chunk.todo[~hit]
        return picks

    def _analyse(self, spilled: dict | None, picks: list) -> None:
        """Analyse whole connections: rows from the runs (`spilled`, in reading order, all read before the
        rows in memory) then rows of the chunks in memory (chunk, row positions); the former's analysed rows
        go to the patches, the latter's into their chunks."""
        if spilled is None and not picks:
            return
        names = list(picks[0][0].rows if picks else spilled)
        rows = {}
        for name in names:     # a column at a time: the parts of one column are copied twice, not all of them
            parts = ([spilled[name]] if spilled is not None else []) + [take_rows(c.rows[name], r) for c, r in picks]
            rows[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            del parts
        conn_first = rows.pop("conn_first")
        result = analyse_assigned(rows, conn_first, self.server_ports, self.vlan_aware)
        start = 0
        if spilled is not None:
            start = len(spilled["frame"])
            patch = {name: values[:start] for name, values in rows.items()}
            patch.update({"r:" + name: values[:start] for name, values in result.items()})
            self.patches.append(patch)
        for chunk, r in picks:
            if not chunk.result:
                chunk.result = self._result_room(result, chunk.size)
            for name, values in result.items():
                chunk.result[name][r] = values[start:start + r.size]
            start += r.size

    def _result_room(self, like: dict, rows: int) -> dict:
        """Columns for a batch's analysed rows, shaped like `like`, in one mapping (decode.BatchMemory): held
        while the batch waits, they left holes in glibc's heap among the main thread's other arrays. Not
        zeroed: every row is analysed before any is written (_table checks)."""
        if self.result_memory is None:
            self.result_memory = BatchMemory(layout=[(name, values.dtype, values.shape[1:])
                                                      for name, values in like.items()])
        return self.result_memory.rows(rows)

    def pop_finished(self, first_frames: np.ndarray) -> tuple[dict, dict] | None:
        """finished() for a caller that writes the segments at once, in any order (fastflow batch, whose
        conn_id is the connection's first frame; it never spills): the rows of these connections and their
        analysed columns, taken out of the rows held; None if there are none."""
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
        self.first_frames = np.array([c.first_frame for c in kept], np.uint64)
        rows = _concat_rows(picked)
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
        and its flows row has been written (the caller's promise). Connections that started before the
        horizon are analysed a batch's first frames at a time, each batch written once they all are."""
        while True:
            below = limit if self.cursor >= self.horizon else min(limit, self.cursor)
            self._write(below)
            if self.cursor >= self.horizon:
                break
            at = int(np.searchsorted(self.first_frames, np.uint64(self.cursor), side="right"))
            upto = int(self.first_frames[at]) if at < len(self.chunks) else self.horizon
            if upto > limit:
                break
            self._analyse_below(upto)
        self._spill_if_needed()
        if self.spill is not None and not self.runs and not self.n_spilled:
            self.close()

    def _analyse_below(self, upto: int) -> None:
        """Analyse the connections that started from the cursor to `upto` (a batch's first frame)."""
        parts = []
        while self.runs and self.runs[0][0] <= upto:     # the runs that have rows below it, not all of them
            run = heapq.heappop(self.runs)[2]
            rows = run.take_below(upto)
            if rows is not None:
                parts.append(rows)
            if run.read < run.stored.rows:
                self._push_run(run)
        spilled = None
        if parts:
            spilled = _concat_rows(parts)
            order = np.argsort(spilled["frame"])
            spilled = {name: take_rows(values, order) for name, values in spilled.items()}
        self._analyse(spilled, self._take_todo(lambda conn: conn < np.uint64(upto)))
        self.cursor = upto

    def _push_run(self, run: _Run) -> None:
        heapq.heappush(self.runs, (run.due, self.runs_made, run))
        self.runs_made += 1

    def _write(self, limit: int) -> None:
        """Write the rows read before `limit`, all analysed: spilled chunks whole, with their rows from
        the patches; chunks in memory up to the limit."""
        limit = np.uint64(limit)
        while self.chunks:
            chunk = self.chunks[0]
            if chunk.spilled:
                if chunk.last_frame >= limit:
                    limit = np.uint64(chunk.first_frame)     # what has been written
                    break
                table = self._spilled_table(chunk)
                end = chunk.size
            else:
                end = int(np.searchsorted(chunk.frame, limit)) if chunk.frame[-1] >= limit else len(chunk.frame)
                table = self._table(chunk.rows, chunk.result, chunk.todo, chunk.written, end) \
                    if end > chunk.written else None
            if table is not None:
                self.rows_held -= end - chunk.written
                chunk.written = end
                self.sink(table)
            if end < chunk.size:
                break
            self.chunks.pop(0)
            self.first_frames = self.first_frames[1:]
            self.n_spilled -= chunk.spilled
        firsts, lasts, ids = self.ids
        keep = lasts >= limit     # connections with rows still to come
        if not keep.all():
            self.ids = (firsts[keep], lasts[keep], ids[keep])

    def _spilled_table(self, chunk: _Chunk) -> pa.Table:
        """A spilled chunk's rows: those stored and those analysed since, from the patches."""
        parts = [chunk.stored.load()] if chunk.stored is not None else []
        chunk.stored = None
        kept = []
        for patch in self.patches:
            end = int(np.searchsorted(patch["frame"], np.uint64(chunk.last_frame), side="right"))
            if end:
                parts.append({name: values[:end] for name, values in patch.items()})
            if end < len(patch["frame"]):
                # copied: a view would keep the whole patch
                kept.append({name: values[end:].copy() for name, values in patch.items()} if end else patch)
        self.patches = kept
        if not parts:
            raise AssertionError("a spilled batch's rows were lost")
        columns = _concat_rows(parts)
        if len(parts) > 1:
            order = np.argsort(columns["frame"])
            columns = {name: take_rows(values, order) for name, values in columns.items()}
        if len(columns["frame"]) != chunk.size:
            raise AssertionError("a spilled batch's rows came back incomplete")
        result = {name[2:]: columns.pop(name) for name in list(columns) if name.startswith("r:")}
        return self._table(columns, result, np.zeros(0, np.int64), 0, chunk.size)

    def _spill_if_needed(self) -> None:
        in_memory = sum(c.size - c.written for c in self.chunks[self.n_spilled:])
        if in_memory <= SEGMENTS_IN_MEMORY:
            return
        # the oldest first, the newest batch aside; down to three quarters of the limit, so that the next
        # batches do not spill a few rows at a time
        open_parts = []
        for chunk in self.chunks[self.n_spilled:-1]:
            if in_memory <= SEGMENTS_IN_MEMORY - SEGMENTS_IN_MEMORY // 4:
                break
            if self.spill is None:
                self.spill = _SpillFile()
            chunk.drop_written()
            self.first_frames[self.n_spilled] = chunk.first_frame     # moved on past the rows written
            in_memory -= chunk.size
            self.spilled_rows += chunk.size
            open_parts.append(chunk.spill_to(self.spill))
            self.n_spilled += 1
        if not open_parts:
            return
        # every connection that started before the first chunk held has been analysed (its rows written)
        self.cursor = max(self.cursor, self.chunks[0].first_frame)
        self.horizon = self.chunks[self.n_spilled].first_frame
        def column(name):
            return np.concatenate([take_rows(rows[name], todo) for rows, todo in open_parts])
        if sum(todo.size for _, todo in open_parts):
            conn_first, frame = column("conn_first"), column("frame")
            order = np.lexsort((frame, conn_first))
            # the sort keys, sorted already: each let go once stored
            sorted_keys = {"conn_first": conn_first[order], "frame": frame[order]}
            del conn_first, frame
            low = int(np.searchsorted(self.first_frames, np.uint64(self.cursor)))
            bounds = self.first_frames[low:self.n_spilled + 1]
            stops = np.searchsorted(sorted_keys["conn_first"], bounds)
            # a column at a time, so that the sorted copy of one column is all that is made
            stored = self.spill.store((name, sorted_keys.pop(name) if name in sorted_keys
                                       else take_rows(column(name), order)) for name in open_parts[0][0])
            self._push_run(_Run(stored, bounds, stops))

    def _table(self, rows: dict, result: dict | None, todo: np.ndarray, start: int, end: int) -> pa.Table:
        part = slice(start, end)
        if result is None or (todo.size and todo[0] < end):
            raise AssertionError("segments written before their connection finished")
        rows = {name: values[part] for name, values in rows.items()}
        result = {name: values[part] for name, values in result.items()}
        firsts, _, ids = self.ids
        at = np.searchsorted(firsts, result["conn_id"])
        if np.any(at >= firsts.size) or np.any(firsts[np.minimum(at, firsts.size - 1)] != result["conn_id"]):
            raise AssertionError("segments written before their connection's flows row")
        result["conn_id"] = ids[at]
        return segments_table(rows, result)
