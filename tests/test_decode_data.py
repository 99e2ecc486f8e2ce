"""The decoder against tests/data: small captures of every format, link type, compression, status and
damage path, each with its expected decode in tests/data/expected.json (written by tests/data/make_data.py
from what it generated, and cross-checked with tshark in tests/test_synth.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastflow.decode import PFlag, Status
from fastflow.errors import InputError
from tests.corpus import decode_all, format_addr

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
# expected.json's damage kinds -> ours
DAMAGE_KINDS = {
    "block_length_mismatch": "bad_record", "bad_caplen": "bad_record", "truncated_block": "cut_short",
    "truncated_record": "cut_short", "caplen_exceeds_wirelen": "caplen_exceeds_wirelen",
}
FATAL_KINDS = {"empty": "empty file", "not_a_capture": "not a pcap or pcapng capture"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decode_matches_expected(name):
    want = EXPECTED[name]
    damage = want.get("damage")
    if damage and damage["kind"] in FATAL_KINDS:
        with pytest.raises(InputError, match=FATAL_KINDS[damage["kind"]]):
            decode_all(DATA / name)
        return
    if want.get("status_counts", {}).get("UNSUPPORTED_LINK") == want["packets"] and want["packets"]:
        with pytest.raises(InputError, match="unsupported link type"):
            decode_all(DATA / name)
        return
    for batch_size in (1, 3, 1 << 16):  # the result must not depend on where batches end
        cols, reader = decode_all(DATA / name, batch_size=batch_size)
        assert reader.frames == want["packets"]
        assert reader.status_counts == {k.lower(): v for k, v in want["status_counts"].items()}
        if damage:
            assert reader.damage is not None
            assert (reader.damage.kind, reader.damage.offset) == (DAMAGE_KINDS[damage["kind"]], damage["offset"])
        else:
            assert reader.damage is None
        tcp = np.flatnonzero(cols["status"] == Status.TCP) if cols else []
        got = [[int(cols["frame"][i]), int(cols["ts"][i]),
                format_addr(cols["src"][i], cols["ip_version"][i]), format_addr(cols["dst"][i], cols["ip_version"][i]),
                int(cols["sport"][i]), int(cols["dport"][i]), int(cols["seq"][i]), int(cols["ack"][i]),
                int(cols["tcp_flags"][i]), int(cols["window"][i]), int(cols["payload_len"][i]), int(cols["vlan"][i])]
               for i in tcp]
        # a simple packet block carries no time: we give 0 (the epoch), expected.json says None
        assert got == [[row[0], 0 if row[1] is None else row[1], *row[2:]] for row in want["tcp"]]
        if cols:
            first_frag = cols["frame"][(cols["pflags"] & PFlag.FIRST_FRAGMENT) != 0].tolist()
            assert first_frag == want["first_fragment_frames"]
            opts_cut = cols["frame"][(cols["pflags"] & PFlag.OPTS_TRUNCATED) != 0].tolist()
            assert opts_cut == want["opts_truncated_frames"]


def test_stream_block_boundaries(monkeypatch):
    """Records split across small decompressed blocks are reassembled."""
    from fastflow import source
    monkeypatch.setattr(source, "BLOCK_SIZE", 7)
    reference, _ = decode_all(DATA / "pcap_us_le.pcap")
    for name in ("compressed.pcap.gz", "compressed.pcap.zst", "compressed.pcap.xz", "compressed.pcap.bz2"):
        with source.Source(str(DATA / name), block_size=7) as src:
            from fastflow.decode import CaptureReader
            parts = list(CaptureReader(src, batch_size=2).batches())
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for key in reference:
            assert np.array_equal(cols[key], reference[key]), (name, key)
