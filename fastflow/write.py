"""Parquet writing: atomic (temporary file in the same folder, then rename), never over an existing file
unless asked, never over an input."""
from __future__ import annotations

import base64
import os
import queue
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError
from .schema import (
    DELTA_COLUMNS,
    NO_DICTIONARY_COLUMNS,
    fixed_width_array,
    fixed_width_values,
    null_mask,
    string_array,
)

COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
ROW_GROUP_ROWS = 1 << 20
#: ParquetStream's page and dictionary size limits: beyond any row group's (pages end by row count)
STREAM_PAGE_BYTES = 1 << 30
#: ParquetStream's output buffer: the writer's small writes (page headers) gathered into few system calls
SINK_BUFFER_BYTES = 1 << 20
ZSTD_LEVEL = 1  # level 3 measured about 15 % slower for files 0.7 % smaller (benchmarks/parquet_write.py)


def parquet_options(schema: pa.Schema, compression: str = "zstd") -> dict:
    """pyarrow.parquet.write_table's keyword arguments for a fastflow table: compression, and per column the
    encoding, dictionary and statistics chosen in fastflow.schema (DELTA_COLUMNS, NO_DICTIONARY_COLUMNS)."""
    dictionary, encoding, statistics = [], {}, []
    for field in schema:
        integer = pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)
        if field.name in DELTA_COLUMNS and integer:
            encoding[field.name] = "DELTA_BINARY_PACKED"
        elif field.name not in NO_DICTIONARY_COLUMNS:
            dictionary.append(field.name)
        if not (pa.types.is_string(field.type) or pa.types.is_dictionary(field.type)):
            statistics.append(field.name)
    options = {"compression": None if compression == "none" else compression, "use_dictionary": dictionary,
               "column_encoding": encoding or None, "write_statistics": statistics,
               "row_group_size": ROW_GROUP_ROWS}
    if compression == "zstd":
        options["compression_level"] = ZSTD_LEVEL
    return options


def check_output(path: str, overwrite: bool, inputs: list[str]) -> None:
    """Fail early, before any work, on an output that cannot or must not be written."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {str(folder)!r} is not writable")
    if target.is_dir():
        raise OutputError(f"{path}: is a directory")
    if target.exists() and not target.is_file():
        # a device or FIFO: the atomic rename would replace it with a regular file
        raise OutputError(f"{path}: is not a regular file")
    for name in inputs:
        if not target.exists():
            continue
        if name == "-":
            # standard input may be the very file (`< capture`): the rename would replace it
            try:
                same = os.path.samestat(os.fstat(0), os.stat(target))
            except OSError:
                same = False
        else:
            same = os.path.exists(name) and os.path.samefile(name, target)
        if same:
            raise OutputError(f"{path}: is one of the inputs; refusing to write over it")
    if target.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (use --overwrite to replace it)")


def write_tables(outputs: list[tuple[str, pa.Table]], compression: str = "zstd",
                 metadata: dict[bytes, bytes] | None = None) -> None:
    """Write each table to a temporary file beside its target, then rename them all into place.

    A crash or error before the renames leaves no output (and no temporary file behind)."""
    temps: list[tuple[str, str]] = []
    path = outputs[0][0] if outputs else "output"
    try:
        for path, table in outputs:
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            os.close(fd)
            temps.append((tmp, path))
            if metadata:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            with ExitStack() as stack:
                sink = stack.enter_context(open(tmp, "wb"))
                pq.write_table(table, sink, **parquet_options(table.schema, compression))
                sink.flush()
                os.fsync(sink.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
        temps = []
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_reason(exc)}") from None
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


#: rows per row group of a streamed file: every group but the last is exactly this long, so the file does not
#: depend on how the input was chunked; small enough that the rows waiting for it stay a few tens of MB
STREAM_ROW_GROUP_ROWS = 1 << 17


def _fresh_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary columns re-encoded from their values: a dictionary's order otherwise follows how the rows
    were cut into tables, and the file's bytes with it."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_dictionary(field.type):
            column = _in_order_of_appearance(column.combine_chunks(), field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _in_order_of_appearance(column: pa.DictionaryArray, arrow_type: pa.DataType) -> pa.Array:
    """What column.cast(value type).dictionary_encode() gives (the distinct values in order of first
    appearance, nulls kept), from the indices: without writing out a string per row. Nor through
    pyarrow.compute, whose import (25 ms, wrappers made for every kernel) is a tenth of a small capture's run."""
    dictionary, indices = column.dictionary, column.indices
    words = dictionary.to_pylist()
    if len(set(words)) != len(words):     # repeated values: only the strings tell
        return column.cast(arrow_type.value_type).dictionary_encode().cast(arrow_type)
    values = fixed_width_values(indices).astype(np.intp)
    null = null_mask(indices)
    if null is not None:
        values = np.where(null, 0, values)     # whatever lies under a null is no index
    first = _first_rows(values if null is None else np.where(null, -1, values), len(words))
    used = np.flatnonzero(first < len(values))
    used = used[np.argsort(first[used], kind="stable")]       # in order of first appearance
    position = np.zeros(max(len(words), 1), np.int64)     # a slot for index 0 under nulls, if empty
    position[used] = np.arange(len(used))
    return pa.DictionaryArray.from_arrays(fixed_width_array(position[values], arrow_type.index_type, null),
                                          string_array(np.array(words, dtype=object)[used]))


def _first_rows(codes: np.ndarray, d: int) -> np.ndarray:
    """The first row of each of the codes 0..d-1 in codes (len(codes) where absent; -1 is no code), reading
    only as far as the last of them first appears: a stretch at a time, four times longer each time."""
    n = len(codes)
    first = np.full(d, n, np.int64)
    missing = np.bincount(codes[codes >= 0], minlength=d) > 0
    start, step = 0, 1024
    while start < n and missing.any():
        stretch = codes[start:start + step]
        for code in np.flatnonzero(missing):
            hits = np.flatnonzero(stretch == code)
            if hits.size:
                first[code] = start + hits[0]
                missing[code] = False
        start += step
        step *= 4
    return first


def _reason(exc: OSError) -> str:
    """An OS error's reason as the OS words it ("No space left on device"): Arrow's errors carry the errno,
    with a longer text of their own as strerror."""
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))


def _fsync(path: str) -> None:
    """The file's data on disk (before it is renamed into place: a crash then leaves the old file or the
    whole new one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: columns whose values are often all distinct (nanosecond durations and RTTs, client ports and addresses,
#: Community IDs when no port pair is reused), so that a dictionary is pure cost: building it hashes every
#: value, and its indices are as wide as the values. ParquetStream drops their dictionary when the first
#: row group shows it (_mostly_distinct). Per 1 Mi rows of the synthetic scale input, CPU seconds and MB with
#: and without: duration 0.077/9.2 and 0.029/7.5, community_id 0.191/23.7 and 0.110/21.9, orig_p 0.036/3.2
#: and 0.013/2.6, irtt 0.068/6.9 and 0.035/6.9; on the real nginx capture (14 K port pairs for 100 K
#: connections) the Community IDs repeat, and a dictionary makes them 0.5 MB against 2.0.
MAYBE_DISTINCT = frozenset({"duration", "rtt_syn_synack", "rtt_synack_ack", "irtt", "community_id", "orig_h",
                            "orig_p", "orig_payload_bytes", "resp_payload_bytes", "orig_ip_bytes", "resp_ip_bytes",
                            "orig_bytes", "resp_bytes"})
#: the first rows of the first row group that _mostly_distinct looks at
DISTINCT_SAMPLE_ROWS = 1 << 14


def _mostly_distinct(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether more than nine in ten of the column's first DISTINCT_SAMPLE_ROWS values differ (what lies
    under a null counts as a value: nulls make a column look less distinct, and keep its dictionary)."""
    sample = column.slice(0, DISTINCT_SAMPLE_ROWS)
    if isinstance(sample, pa.ChunkedArray):
        sample = sample.combine_chunks()
    if pa.types.is_string(sample.type):
        distinct = len(set(sample.to_pylist()))
    else:
        distinct = len(np.unique(fixed_width_values(sample)))
    return distinct * 10 > len(sample) * 9


class ParquetStream:
    """One Parquet file written table by table, for outputs too large to hold: to a temporary file beside
    the target, renamed into place by commit(); leaving the context without commit() removes it.

    Whole row groups are encoded and written in a thread of the stream's own (pyarrow releases the GIL), so
    the caller builds its next tables meanwhile; a set of groups is handed over once the previous one is
    written. An error there is raised by the next write() or by commit()."""

    def __init__(self, path: str, schema: pa.Schema, compression: str = "zstd",
                 row_group_rows: int = STREAM_ROW_GROUP_ROWS):
        self.path = path
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._groups: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        options = parquet_options(schema, compression)
        del options["row_group_size"]
        # the file's bytes follow the rows alone, not how they were cut into tables: the writer checks its
        # page and dictionary size limits batch by batch within each table chunk, so where a page ended or a
        # column gave up its dictionary moved with the chunks. Pages now end by row count only (one per row
        # group and column), and a dictionary holds a whole row group's values.
        options.update(max_rows_per_page=row_group_rows, data_page_size=STREAM_PAGE_BYTES,
                       dictionary_pagesize_limit=STREAM_PAGE_BYTES, store_schema=False)
        self._options = options
        self._writer = None     # made for the first row group (_open_writer), which chooses the dictionaries
        folder = os.path.dirname(os.path.abspath(path))
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            os.close(fd)
            # an Arrow file, not a Python one: through a Python file object every page the writer's thread
            # writes takes the GIL and runs file.write (28% of that thread's time on the scale input)
            # the Arrow schema goes in at commit(), with the metadata known only then (store_schema=False)
            self._sink = pa.output_stream(self._tmp, buffer_size=SINK_BUFFER_BYTES)
        except OSError as exc:
            self._discard()
            raise OutputError(f"{path}: cannot write: {_reason(exc)}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._discard()
        return False

    def write(self, table: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        if not table.num_rows:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows < self.row_group_rows:
            return
        table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = (table.num_rows // self.row_group_rows) * self.row_group_rows
        rest = table.slice(whole)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self.rows += whole
        # the dictionaries made here, while the thread may still be writing the previous groups: at the end of
        # a capture that thread is what the run waits for
        groups = self._row_groups(table.slice(0, whole))
        if self._writer is None:
            self._open_writer(groups[0])
        if self._thread is None:
            self._groups = queue.Queue(1)
            self._thread = threading.Thread(target=self._write_in_background, name="fastflow-parquet", daemon=True)
            self._thread.start()
        self._groups.join()     # one set of groups at a time: the thread's copy and encoders are tens of MB
        self._groups.put(groups)

    def _write_in_background(self) -> None:
        while (groups := self._groups.get()) is not None:
            if self._error is None:     # after an error the rest is dropped: the caller raises it
                try:
                    self._write_groups(groups)
                except BaseException as exc:
                    self._error = exc
            del groups
            self._groups.task_done()

    def _open_writer(self, first: pa.Table) -> None:
        """The Parquet writer, with a dictionary for each column of parquet_options' choice but those of the
        MAYBE_DISTINCT columns whose values in the first row group (a whole one) almost all differ."""
        options = dict(self._options)
        if first.num_rows == self.row_group_rows:
            distinct = {name for name in MAYBE_DISTINCT & set(options["use_dictionary"])
                        if _mostly_distinct(first.column(name))}
            options["use_dictionary"] = [name for name in options["use_dictionary"] if name not in distinct]
        try:
            self._writer = pq.ParquetWriter(self._sink, self.schema, **options)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {_reason(exc)}") from None

    def _row_groups(self, table: pa.Table) -> list[pa.Table]:
        """The table cut into row groups, each with its dictionaries made afresh."""
        size = self.row_group_rows
        return [_fresh_dictionaries(table.slice(start, size)) for start in range(0, table.num_rows, size)]

    def _write_groups(self, groups: list[pa.Table]) -> None:
        try:
            for group in groups:
                self._writer.write_table(group, row_group_size=self.row_group_rows)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {_reason(exc)}") from None

    def _join(self) -> None:
        """Wait until the groups handed over are written."""
        if self._thread is not None:
            self._groups.put(None)
            self._thread.join()
            self._thread = self._groups = None

    def commit(self, metadata: dict[bytes, bytes] | None = None) -> None:
        """Write what is left and the footer, then rename the file into place."""
        self._join()
        if self._error is not None:
            raise self._error
        try:
            groups = []
            if self._pending_rows:
                table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
                groups = self._row_groups(table)
                self.rows += table.num_rows
                self._pending, self._pending_rows = [], 0
            if self._writer is None:
                self._open_writer(groups[0] if groups else self.schema.empty_table())
            self._write_groups(groups)
            metadata = metadata or {}
            # what ParquetWriter stores itself (ARROW:schema, base64 of the IPC schema), with our keys in it,
            # so that readers see them as the schema's metadata as for write_tables' files
            schema = self.schema.with_metadata({**(self.schema.metadata or {}), **metadata})
            self._writer.add_key_value_metadata({
                "ARROW:schema": base64.b64encode(schema.serialize().to_pybytes()).decode(),
                **{k.decode(): v.decode() for k, v in metadata.items()}})
            self._writer.close()
            self._writer = None
            self._sink.close()
            self._sink = None
            _fsync(self._tmp)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {_reason(exc)}") from None

    def _discard(self) -> None:
        self._join()
        for close in (getattr(self, "_writer", None), getattr(self, "_sink", None)):
            if close is not None:
                try:
                    close.close()
                except Exception:   # closing a half-written file on the way out must not hide the cause
                    pass
        self._writer = self._sink = None
        if getattr(self, "_tmp", None):
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None
