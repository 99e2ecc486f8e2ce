"""Parquet writing: atomic (temporary file in the same folder, then rename), never over an existing file
unless asked, never over an input."""
from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError
from .schema import DELTA_COLUMNS, NO_DICTIONARY_COLUMNS

COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
ROW_GROUP_ROWS = 1 << 20
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
        if name != "-" and target.exists() and os.path.exists(name) and os.path.samefile(name, target):
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
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
