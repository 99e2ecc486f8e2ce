"""decode.BatchMemory: each batch's columns in one mapping, reused only once every array of the batch is
gone, and the same columns as numpy's allocations give."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from fastflow import _decode
from fastflow.decode import BatchMemory, CaptureReader
from fastflow.source import Source
from huge_pages import requires_thp_madvise, thp_eligible

CAPTURE = Path(__file__).parent / "data" / "ip_v4_fragments.pcap"     # 10 packets


def batches(memory, batch_size=3):
    with Source(str(CAPTURE)) as source:
        yield from CaptureReader(source, batch_size=batch_size, memory=memory).batches()


def plain_batches(batch_size=3):
    with Source(str(CAPTURE)) as source:
        reader = CaptureReader(source, batch_size=batch_size)
        reader.decoder = _decode.Decoder(batch_size, None, False)      # numpy's allocations
        yield from reader.batches()


def test_held_batches_keep_their_values():
    """Every batch kept alive while more are decoded: none is written over."""
    memory = BatchMemory(min_bytes=0)
    held = list(batches(memory))
    want = list(plain_batches())
    assert len(held) == len(want) == 4      # 3 + 3 + 3 + 1
    for got, expected in zip(held, want):
        for name in _decode.COLUMN_NAMES:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # a mapping for each batch (the last, short one a slice of the fourth); none made after it
    assert memory.mappings == 4


def test_one_column_holds_its_batch():
    memory = BatchMemory(min_bytes=0)
    it = batches(memory)
    first = next(it)
    kept = first["seq"]
    want = kept.copy()
    del first
    for batch in it:
        del batch
    gc.collect()
    np.testing.assert_array_equal(kept, want)
    # the first batch's, and one the others take in turn (the decoder maps the next batch when it needs
    # it, once the one before is let go)
    assert memory.mappings == 2


def test_mapping_reused_once_let_go():
    memory = BatchMemory(min_bytes=0)
    seqs = []
    for batch in batches(memory):
        seqs.append(batch["seq"].copy())
        del batch
    assert memory.mappings == 1             # each batch let go before the decoder needs the next
    want = [b["seq"] for b in plain_batches()]
    for got, expected in zip(seqs, want):
        np.testing.assert_array_equal(got, expected)


def test_small_batches_use_numpy():
    memory = BatchMemory()
    assert len(list(batches(memory))) == 4
    assert memory.mappings == 0


def test_layout():
    batch = BatchMemory(min_bytes=0)(8)
    assert set(batch) == set(_decode.COLUMN_NAMES)
    assert batch["src"].shape == (8, 16) and batch["src"].flags.c_contiguous


@pytest.mark.parametrize("bad", ["dtype", "shape", "readonly"])
def test_decoder_checks_the_allocator(bad):
    def allocate(capacity):
        arrays = BatchMemory()(capacity)
        if bad == "dtype":
            arrays["seq"] = np.empty(capacity, np.int64)
        elif bad == "shape":
            arrays["src"] = np.empty((capacity, 4), np.uint8)
        else:
            arrays["ts"].flags.writeable = False
        return arrays
    with pytest.raises(ValueError, match="allocate: column"):
        _decode.Decoder(4, None, False, allocate)


def test_a_layout_of_its_own():
    """Another layout (the segment stream's): its columns, in one mapping, which goes to the next request
    once every view of it is gone, and not before."""
    layout = [("frame", np.dtype(np.uint64), ()), ("src", np.dtype(np.uint8), (16,)),
              ("flag", np.dtype(np.bool_), ())]
    memory = BatchMemory(min_bytes=0, layout=layout)
    first = memory(5)
    assert {name: (v.dtype, v.shape) for name, v in first.items()} == {
        "frame": (np.uint64, (5,)), "src": (np.uint8, (5, 16)), "flag": (np.bool_, (5,))}
    first["frame"][:] = np.arange(5)
    first["src"][:] = 7
    kept = first["frame"][:3]
    del first
    second = memory(5)
    second["frame"][:] = 99
    np.testing.assert_array_equal(kept, [0, 1, 2])      # a view still held its mapping
    assert memory.mappings == 2
    del kept, second
    gc.collect()
    memory(5)
    assert memory.mappings == 2


def test_rows_of_varying_counts_share_a_mapping():
    """rows(n): n rows, from a mapping made for the next power of two, so that counts a little apart reuse it."""
    memory = BatchMemory(min_bytes=0, layout=[("frame", np.dtype(np.uint64), ())])
    assert memory.rows(1000)["frame"].shape == (1000,)
    gc.collect()
    assert memory.rows(900)["frame"].shape == (900,)
    assert memory.capacity == 1024 and memory.mappings == 1


@requires_thp_madvise
def test_huge_pages_asked_for_from_the_chosen_mapping():
    """The decoder's batches ask for huge pages from mapping huge_from on; a BatchMemory without it (the
    segment stream's, whose columns fill only in part) never does."""
    capacity = 1 << 16      # about 8 MB of columns: room for whole 2 MiB pages
    memory = BatchMemory(huge_from=1)
    first = memory(capacity)
    second = memory(capacity)
    assert memory.mappings == 2
    assert thp_eligible(first["frame"].ctypes.data) is False
    assert thp_eligible(second["frame"].ctypes.data) is True
    plain = BatchMemory()
    held = [plain(capacity) for _ in range(2)]
    assert [thp_eligible(batch["frame"].ctypes.data) for batch in held] == [False, False]


def test_captures_from_32_mb_get_huge_pages_from_the_first_batch(tmp_path):
    """A file smaller than one batch's columns may not fill the first: its huge pages start at the second."""
    small = tmp_path / "small.pcap"
    small.write_bytes(CAPTURE.read_bytes())
    big = tmp_path / "big.pcap"
    big.write_bytes(CAPTURE.read_bytes())
    with open(big, "ab") as f:          # a sparse tail: the size is what CaptureReader looks at
        f.truncate(32 << 20)
    with Source(str(small)) as source:
        assert CaptureReader(source).memory.huge_from == 1
    with Source(str(big)) as source:
        assert CaptureReader(source).memory.huge_from == 0
