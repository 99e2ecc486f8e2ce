"""`fastflow batch` over capture archives (fastflow/batch.py, docs/batch.md).

Split equivalence: corpus captures split with editcap (by packet count and by time, some pieces compressed)
give, through `fastflow batch`, the connections `fastflow process` finds in the whole capture, every column
but the provenance ones equal, whatever -j. Incremental runs, a run killed at any point, concurrent runs,
damaged and unreadable inputs, and a DuckDB query over the dataset."""
from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from corpus import CAPTURES, default_sigint, requires_corpus
from fastflow import __version__, tcpflows
from fastflow.batch import FRAME_BITS, META_DIR, STATE_MAGIC, Settings, read_dataset, run
from fastflow.errors import UsageError
from fastflow.pipeline import stream_flows
from fastflow.schema import FLOWS_SCHEMA

EDITCAP = shutil.which("editcap")
needs_editcap = pytest.mark.skipif(EDITCAP is None, reason="editcap (Debian: wireshark-common) is not installed")
PROVENANCE = {"conn_id", "source", "first_frame", "last_frame", "last_source", "stream", "date"}
OLD = time.time() - 3600


def split(capture: Path, folder: Path, *args: str, compress=()) -> list[Path]:
    """editcap's pieces of capture in folder (compressed: {piece index: "gz" | "zst"}), an hour old."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([EDITCAP, *args, str(capture), str(folder / capture.name)], check=True)
    pieces = sorted(folder.iterdir())
    for k, kind in dict(compress).items():
        piece = pieces[k]
        if kind == "gz":
            piece.with_name(piece.name + ".gz").write_bytes(gzip.compress(piece.read_bytes()))
        else:
            import zstandard

            piece.with_name(piece.name + ".zst").write_bytes(zstandard.ZstdCompressor().compress(piece.read_bytes()))
        piece.unlink()
    pieces = sorted(folder.iterdir())
    for p in pieces:
        os.utime(p, (OLD, OLD))
    return pieces


def process_table(capture: Path, **options) -> pa.Table:
    parts = []
    stream_flows(str(capture), parts.append, **options)
    return pa.concat_tables(parts) if parts else FLOWS_SCHEMA.empty_table()


def comparable(table: pa.Table) -> pa.Table:
    """The columns that do not depend on how the input was split, dictionaries decoded, in a fixed order."""
    cols = [c for c in table.column_names if c not in PROVENANCE]
    plain = pa.table({c: table[c].cast(table[c].type.value_type) if pa.types.is_dictionary(table[c].type)
                      else table[c] for c in cols})
    keys = ["ts_start", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "ts_end"]
    return plain.sort_by([(k, "ascending") for k in keys])


def assert_same_connections(dataset: Path, reference: pa.Table) -> pa.Table:
    got = read_dataset(str(dataset))
    assert got.num_rows == reference.num_rows
    a, b = comparable(got), comparable(reference)
    for name in a.column_names:
        assert a[name].equals(b[name]), f"column {name} differs"
    return got


def batch(sources, dataset, **kw) -> dict:
    options = dict(settings=Settings(), jobs=1, min_age_s=60.0)
    options.update(kw)
    return run([str(s) for s in sources], str(dataset), **options)


def check_provenance(table: pa.Table, decoded: dict[str, np.ndarray]) -> None:
    """source / first_frame name the packet whose time is ts_start (time-ordered captures), last_source /
    last_frame one of the connection's packets no later than ts_end; conn_id holds the file and frame."""
    table = table.set_column(table.schema.get_field_index("ts_start"), "ts_start",
                             table["ts_start"].cast(pa.int64()))
    table = table.set_column(table.schema.get_field_index("ts_end"), "ts_end", table["ts_end"].cast(pa.int64()))
    for row in table.select(["source", "first_frame", "last_source", "last_frame", "ts_start", "ts_end",
                             "conn_id"]).to_pylist():
        ts = decoded[row["source"]]
        assert ts[row["first_frame"] - 1] == row["ts_start"]
        assert decoded[row["last_source"]][row["last_frame"] - 1] <= row["ts_end"]
        assert row["conn_id"] & ((1 << FRAME_BITS) - 1) == row["first_frame"]


def packet_times(paths) -> dict[str, np.ndarray]:
    from corpus import decode_all

    return {str(p): np.asarray(decode_all(p)[0].get("ts", []), dtype=np.int64) for p in paths}


# --- split equivalence -------------------------------------------------------------------------------------

@requires_corpus
@needs_editcap
@pytest.mark.parametrize("jobs", [1, 2, 3])
@pytest.mark.parametrize("timeouts", [None, {"tcp": 2.0, "udp": 1.0}])
def test_split_by_count_gives_the_same_connections(tmp_path, jobs, timeouts):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "in", "-c", "3000", compress={1: "gz", 3: "zst", 27: "gz"})
    assert len(pieces) == 28
    summary = batch([tmp_path / "in"], tmp_path / "ds", jobs=jobs, flush=True,
                    settings=Settings(idle_timeouts_s=timeouts))
    assert summary["processed"] == 28 and not summary["failed"] and not summary["damaged"]
    got = assert_same_connections(tmp_path / "ds", process_table(capture, idle_timeouts_s=timeouts))
    crossing = np.count_nonzero(np.asarray(got["source"].to_pylist()) != np.asarray(got["last_source"].to_pylist()))
    assert crossing > 10        # the pieces really cut connections
    check_provenance(got, packet_times(pieces))


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("name, seconds", [("zeek__ssh__ssh.pcap", "2592000"), ("zeek__wikipedia.pcap", "1"),
                                           ("zeek__rotation.pcap", "3600")])
def test_split_by_time_gives_the_same_connections(tmp_path, name, seconds):
    capture = CAPTURES / name
    pieces = split(capture, tmp_path / "in", "-i", seconds)
    assert len(pieces) > 3
    batch([tmp_path / "in"], tmp_path / "ds", jobs=2, flush=True)
    got = assert_same_connections(tmp_path / "ds", process_table(capture))
    check_provenance(got, packet_times(pieces))
    # Hive partitions by the UTC day of ts_start
    days = {p.name for p in (tmp_path / "ds" / "flows").iterdir()}
    want = {f"date={d}" for d in np.unique(got["ts_start"].to_numpy().astype("datetime64[D]")).astype(str)}
    assert days == want


@requires_corpus
@needs_editcap
def test_streams_by_folder_and_by_pattern(tmp_path):
    """Two sensors' files: folders are streams by default; --stream-pattern names them from the file names."""
    a, b = CAPTURES / "zeek__wikipedia.pcap", CAPTURES / "zeek__echo-connections.pcap"
    split(a, tmp_path / "sensor1", "-i", "1")
    split(b, tmp_path / "sensor2", "-c", "20000")
    batch([tmp_path / "sensor1", tmp_path / "sensor2"], tmp_path / "ds", jobs=2, flush=True)
    got = read_dataset(str(tmp_path / "ds"))
    assert set(got["stream"].to_pylist()) == {str(tmp_path / "sensor1"), str(tmp_path / "sensor2")}
    both = pa.concat_tables([process_table(a), process_table(b)])
    assert_same_connections(tmp_path / "ds", both)

    # one flat folder, the sensor in the file name
    flat = tmp_path / "flat"
    flat.mkdir()
    for sensor in ("sensor1", "sensor2"):
        for p in (tmp_path / sensor).iterdir():
            shutil.copy2(p, flat / f"{sensor}-{p.name}")
    batch([flat], tmp_path / "ds2", jobs=2, flush=True, stream_pattern=r"/(sensor\d)-")
    got = assert_same_connections(tmp_path / "ds2", both)
    assert set(got["stream"].to_pylist()) == {"sensor1", "sensor2"}


# --- incremental runs ---------------------------------------------------------------------------------------

def dataset_rows(dataset: Path) -> pa.Table:
    t = read_dataset(str(dataset))
    t = t.drop_columns(["date"]) if "date" in t.column_names else t
    return pa.table({c: t[c].cast(t[c].type.value_type) if pa.types.is_dictionary(t[c].type) else t[c]
                     for c in t.column_names}).sort_by([("stream", "ascending"), ("conn_id", "ascending")])


def segment_rows(dataset: Path) -> pa.Table:
    """The dataset's segments, dictionaries decoded, in file and frame order."""
    t = read_dataset(str(dataset), "segments").drop_columns(["date"])
    return pa.table({c: t[c].cast(t[c].type.value_type) if pa.types.is_dictionary(t[c].type) else t[c]
                     for c in t.column_names}).sort_by([("source", "ascending"), ("frame", "ascending")])


def snapshot(dataset: Path) -> dict:
    """Every file of the dataset with its bytes (the lock file aside)."""
    return {str(p.relative_to(dataset)): p.read_bytes() for p in sorted(dataset.rglob("*"))
            if p.is_file() and p.name != "lock"}


def first_pieces_arrive(tmp_path: Path, count: int = 9) -> tuple[Path, list[Path], Path]:
    """zeek__echo-connections.pcap cut by editcap into pieces of 4000 packets (tmp_path/all), the first
    `count` of them copied into tmp_path/in: (the capture, the pieces, the in folder)."""
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "all", "-c", "4000")
    arriving = tmp_path / "in"
    arriving.mkdir()
    for p in pieces[:count]:
        shutil.copy2(p, arriving / p.name)
    return capture, pieces, arriving


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("first_jobs, second_jobs", [(1, 1), (3, 2)])
def test_incremental_runs_equal_one_run(tmp_path, first_jobs, second_jobs):
    """Also with the open connections saved by 3 parts and continued by 2 (-j 3, then -j 2)."""
    capture, pieces, arriving = first_pieces_arrive(tmp_path)
    timeouts = {"tcp": 1.0}
    s1 = batch([arriving], tmp_path / "ds", settings=Settings(idle_timeouts_s=timeouts), jobs=first_jobs)
    assert s1["processed"] == 9 and s1["open_carried"] > 0
    for p in pieces[9:]:
        shutil.copy2(p, arriving / p.name)
    s2 = batch([arriving], tmp_path / "ds", settings=Settings(idle_timeouts_s=timeouts), jobs=second_jobs)
    assert s2["processed"] == len(pieces) - 9 and s2["unchanged"] == 9 and s2["restarted_streams"] == 0

    batch([arriving], tmp_path / "ds_one", settings=Settings(idle_timeouts_s=timeouts))
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "ds_one"))

    before = snapshot(tmp_path / "ds")
    s3 = batch([arriving], tmp_path / "ds", settings=Settings(idle_timeouts_s=timeouts))
    assert s3["processed"] == 0 and s3["unchanged"] == len(pieces)
    assert snapshot(tmp_path / "ds") == before

    # --flush writes the open ones: then the dataset is what process finds in the whole capture
    batch([arriving], tmp_path / "ds", flush=True, settings=Settings(idle_timeouts_s=timeouts))
    assert_same_connections(tmp_path / "ds", process_table(capture, idle_timeouts_s=timeouts))


@requires_corpus
@needs_editcap
def test_open_connections_saved_by_another_record_layout_are_refused(tmp_path):
    """A state file holds the open connections' records as they are in memory: one saved by a build that
    lays them out otherwise (same version number) fails its stream, as one of another version does; it is
    not misread, and the dataset is left as it was."""
    capture, pieces, arriving = first_pieces_arrive(tmp_path)
    settings = Settings(idle_timeouts_s={"tcp": 1.0})
    assert batch([arriving], tmp_path / "ds", settings=settings)["open_carried"] > 0
    states = list((tmp_path / "ds").rglob("*.state"))
    assert states
    for path in states:
        data = path.read_bytes()
        magic, rest = data[:len(STATE_MAGIC)], data[len(STATE_MAGIC):]
        line, blocks = rest.split(b"\n", 1)
        header = json.loads(line)
        assert header["tcp_record_layout"] == tcpflows.RECORD_LAYOUT
        header["tcp_record_layout"] = "1:664:32:232"
        path.write_bytes(magic + json.dumps(header).encode() + b"\n" + blocks)
    for p in pieces[9:]:
        shutil.copy2(p, arriving / p.name)
    before = snapshot(tmp_path / "ds")
    summary = batch([arriving], tmp_path / "ds", settings=settings)
    assert [f["error"] for f in summary["failed"]] == [
        f"stream {arriving}: {state}: saved by another build of fastflow {__version__} (open connections stored "
        f"as 1:664:32:232, this build's are {tcpflows.RECORD_LAYOUT}): finish the dataset's open connections "
        "with that build's --flush first" for state in states]
    assert snapshot(tmp_path / "ds") == before


@requires_corpus
@needs_editcap
def test_changed_and_late_files_restart_their_stream(tmp_path):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "all", "-c", "10000")
    arriving = tmp_path / "in"
    arriving.mkdir()
    for p in pieces[:3] + pieces[5:]:                 # two pieces from the middle arrive late
        shutil.copy2(p, arriving / p.name)
    batch([arriving], tmp_path / "ds")
    for p in pieces[3:5]:
        shutil.copy2(p, arriving / p.name)
    s = batch([arriving], tmp_path / "ds", flush=True)
    assert s["restarted_streams"] == 1
    assert_same_connections(tmp_path / "ds", process_table(capture))

    # a file rewritten with other content: its stream starts over, its old outputs go
    victim = arriving / pieces[0].name
    victim.write_bytes(victim.read_bytes()[:-1990])   # inside a record (they are 100 bytes)
    os.utime(victim, (OLD, OLD + 1))
    s = batch([arriving], tmp_path / "ds", flush=True)
    assert s["restarted_streams"] == 1 and len(s["damaged"]) == 1
    fresh = batch([arriving], tmp_path / "ds_fresh", flush=True)
    assert len(fresh["damaged"]) == 1
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "ds_fresh"))
    manifest = json.loads((tmp_path / "ds" / META_DIR / "manifest.json").read_text())
    named = {o for e in manifest["inputs"].values() for o in e["outputs"]}
    named |= {o for s in manifest["streams"].values() for o in s["flushed_outputs"]}
    on_disk = {str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds" / "flows").rglob("*.parquet")}
    assert on_disk == named


def test_young_files_wait_for_the_next_run(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pcap_us_le.pcap", folder / "a.pcap")
    s = batch([folder], tmp_path / "ds", min_age_s=60)
    assert s["young"] == 1 and s["processed"] == 0
    s = batch([folder], tmp_path / "ds", min_age_s=0)
    assert s["young"] == 0 and s["processed"] == 1


# --- failures, locks, kills ---------------------------------------------------------------------------------

def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], capture_output=True, text=True,
                          **kw)


@requires_corpus
def test_damaged_and_unreadable_inputs_are_recorded(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = CAPTURES / "zeek__http__get.pcap"
    shutil.copy(good, folder / "1-good.pcap")
    data = (CAPTURES / "zeek__tcp__options.pcap").read_bytes()
    (folder / "2-cut.pcap").write_bytes(data[:300])
    shutil.copy(Path(__file__).parent / "data" / "link_unsupported.pcap", folder / "3-garbage.pcap")
    (folder / "notes.txt").write_text("not a capture")
    for p in folder.iterdir():
        os.utime(p, (OLD, OLD))
    r = cli("batch", folder, "-o", tmp_path / "ds", "--summary-json", tmp_path / "s.json")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    manifest = json.loads((tmp_path / "ds" / META_DIR / "manifest.json").read_text())
    status = {Path(p).name: (e["status"], e["error"]) for p, e in manifest["inputs"].items()}
    assert status["1-good.pcap"] == ("done", None)
    assert status["2-cut.pcap"][0] == "damaged" and "byte offset" in status["2-cut.pcap"][1]
    assert status["3-garbage.pcap"][0] == "failed" and status["3-garbage.pcap"][1]
    assert "notes.txt" not in status
    summary = json.loads((tmp_path / "s.json").read_text())
    assert len(summary["failed"]) == 1 and len(summary["damaged"]) == 1 and summary["processed"] == 3
    assert any(line.startswith("Error: ") and "3-garbage.pcap" in line for line in r.stderr.splitlines())
    # recorded: the next run leaves them alone and succeeds
    r = cli("batch", folder, "-o", tmp_path / "ds", "-q")
    assert r.returncode == 0 and r.stderr == ""


def test_user_mistakes_exit_2(tmp_path):
    for args, needle in ((["batch", tmp_path / "missing", "-o", tmp_path / "ds"], "no such file"),
                         (["batch", "-o", tmp_path / "ds"], "no SOURCE"),
                         (["batch", tmp_path, "-o", tmp_path / "ds", "-j", "0"], "-j"),
                         (["batch", tmp_path, "-o", tmp_path / "ds", "--stream-pattern", "("], "--stream-pattern"),
                         (["batch", tmp_path, "-o", tmp_path / "ds", "--filter", "tcp port"], "")):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("Error: ") and needle in r.stderr and "Traceback" not in r.stderr


def test_other_settings_need_another_dataset(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pcap_us_le.pcap", folder / "a.pcap")
    assert cli("batch", folder, "-o", tmp_path / "ds", "--min-age", "0", "-q").returncode == 0
    r = cli("batch", folder, "-o", tmp_path / "ds", "--min-age", "0", "--idle-timeout", "10")
    assert r.returncode == 2 and "other analysis settings" in r.stderr


@requires_corpus
def test_a_second_run_on_a_locked_dataset_exits_75_and_touches_nothing(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CAPTURES / "zeek__http__get.pcap", folder / "a.pcap")
    assert cli("batch", folder, "-o", tmp_path / "ds", "--min-age", "0", "-q").returncode == 0
    shutil.copy(CAPTURES / "zeek__tcp__options.pcap", folder / "b.pcap")
    before = snapshot(tmp_path / "ds")
    with open(tmp_path / "ds" / META_DIR / "lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = cli("batch", folder, "-o", tmp_path / "ds", "--min-age", "0")
    assert r.returncode == 75
    assert r.stderr.count("\n") == 1 and "another fastflow batch is running" in r.stderr
    assert snapshot(tmp_path / "ds") == before


@requires_corpus
@needs_editcap
def test_two_runs_started_together(tmp_path):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    for k in range(4):       # enough work that the first run still holds the lock when the second starts
        split(capture, tmp_path / "in" / f"s{k}", "-c", "2000")
    args = [sys.executable, "-m", "fastflow", "batch", str(tmp_path / "in"), "-o", str(tmp_path / "ds"), "-q",
            "-j", "1"]
    runs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    messages = [r.communicate()[1] for r in runs]
    assert sorted(r.returncode for r in runs) == [0, 75], messages
    assert any("another fastflow batch is running" in m for m in messages)


def kill_points():
    return ["file-written:1", "file-written:5", "state-written:1", "manifest-saved:1"]


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("where", kill_points())
def test_killed_runs_complete_on_the_next_run(tmp_path, where):
    """SIGKILL at each step of committing (a part renamed, the state written, the manifest saved): the
    next run leaves the dataset identical to an uninterrupted run's, row for row."""
    capture = CAPTURES / "zeek__echo-connections.pcap"
    split(capture, tmp_path / "in" / "a", "-c", "6000")
    split(CAPTURES / "zeek__wikipedia.pcap", tmp_path / "in" / "b", "-i", "1")
    common = ["batch", tmp_path / "in", "-q", "-j", "1", "--idle-timeout", "tcp=1"]
    assert cli(*common, "-o", tmp_path / "clean").returncode == 0
    killed = cli(*common, "-o", tmp_path / "ds", env=dict(os.environ, FASTFLOW_TEST_KILL_AT=where))
    assert killed.returncode == -signal.SIGKILL
    r = cli(*common, "-o", tmp_path / "ds")
    assert r.returncode == 0, r.stderr
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "clean"))
    # nothing left over from the killed run
    assert {p.name for p in (tmp_path / "ds").rglob("*.tmp")} == set()
    manifest = json.loads((tmp_path / "ds" / META_DIR / "manifest.json").read_text())
    states = {name for s in manifest["streams"].values() for name in s["state"]}
    assert {str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds").rglob("*.state")} == states


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("where", ["file-written:5", "state-written:1"])
def test_killed_runs_with_segments_complete_on_the_next_run(tmp_path, where):
    """The same with --segments: the segments parts a killed run renamed into place, which no manifest entry
    names, are removed by the next run (else they would be read twice)."""
    split(CAPTURES / "zeek__echo-connections.pcap", tmp_path / "in" / "a", "-c", "6000")
    common = ["batch", tmp_path / "in", "-q", "-j", "1", "--segments", "--idle-timeout", "tcp=1"]
    assert cli(*common, "-o", tmp_path / "clean").returncode == 0
    assert segment_rows(tmp_path / "clean").num_rows > 10000
    killed = cli(*common, "-o", tmp_path / "ds", env=dict(os.environ, FASTFLOW_TEST_KILL_AT=where))
    assert killed.returncode == -signal.SIGKILL
    r = cli(*common, "-o", tmp_path / "ds")
    assert r.returncode == 0, r.stderr
    assert segment_rows(tmp_path / "ds").drop_columns(["conn_id"]).equals(
        segment_rows(tmp_path / "clean").drop_columns(["conn_id"]))
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "clean"))
    manifest = json.loads((tmp_path / "ds" / META_DIR / "manifest.json").read_text())
    named = {o for e in manifest["inputs"].values() for o in e["outputs"]}
    assert {str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds" / "segments").rglob("*.parquet")} == \
        {o for o in named if o.startswith("segments/")}


@requires_corpus
@needs_editcap
def test_killed_at_random_moments_with_two_workers(tmp_path):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    for k in range(3):
        split(capture, tmp_path / "in" / f"s{k}", "-c", "5000")
    common = [sys.executable, "-m", "fastflow", "batch", str(tmp_path / "in"), "-q", "-j", "2"]
    assert subprocess.run(common + ["-o", str(tmp_path / "clean")]).returncode == 0
    rng = np.random.default_rng(5)
    for delay in sorted(rng.uniform(0.3, 2.0, 4)):
        p = subprocess.Popen(common + ["-o", str(tmp_path / "ds")], start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert subprocess.run(common + ["-o", str(tmp_path / "ds")]).returncode == 0
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "clean"))


# --- reading the dataset ------------------------------------------------------------------------------------

@requires_corpus
@needs_editcap
def test_duckdb_reads_the_dataset(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb (pip install duckdb) is not installed")
    capture = CAPTURES / "zeek__echo-connections.pcap"
    split(capture, tmp_path / "in", "-c", "10000")
    split(CAPTURES / "zeek__ssh__ssh.pcap", tmp_path / "in2", "-i", "2592000")
    batch([tmp_path / "in", tmp_path / "in2"], tmp_path / "ds", flush=True, jobs=2)
    reference = pa.concat_tables([process_table(capture), process_table(CAPTURES / "zeek__ssh__ssh.pcap")])
    want = {}
    for row in comparable(reference).select(["proto", "handshake", "close"]).to_pylist():
        key = (row["proto"], row["handshake"], row["close"])
        want[key] = want.get(key, 0) + 1
    glob_ = str(tmp_path / "ds" / "flows" / "**" / "*.parquet")
    got = duckdb.sql(f"SELECT proto, handshake, close, count(*) FROM read_parquet('{glob_}', "
                     "hive_partitioning = true) GROUP BY ALL").fetchall()
    assert {(p, h, c): n for p, h, c, n in got} == want
    days = duckdb.sql(f"SELECT count(DISTINCT date) FROM read_parquet('{glob_}', hive_partitioning = true)")
    assert days.fetchall()[0][0] > 5


# --- a dask.distributed cluster --------------------------------------------------------------------------

@requires_corpus
@needs_editcap
def test_dask_local_cluster_gives_the_same_dataset(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed (fastflow[dask]) is not installed")
    capture = CAPTURES / "zeek__echo-connections.pcap"
    split(capture, tmp_path / "in" / "a", "-c", "6000", compress={2: "gz"})
    split(CAPTURES / "zeek__wikipedia.pcap", tmp_path / "in" / "b", "-i", "1")
    batch([tmp_path / "in"], tmp_path / "local", flush=True, jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        summary = batch([tmp_path / "in"], tmp_path / "ds", flush=True, jobs=None,
                        scheduler=cluster.scheduler_address)
        assert summary["processed"] == len(list((tmp_path / "in").rglob("*.pcap*")))
        # one stream, two workers: its two parts ran on the cluster, with the segments table
        single = batch([tmp_path / "in" / "a"], tmp_path / "ds_a", flush=True, jobs=None,
                       scheduler=cluster.scheduler_address, settings=Settings(segments=True))
        assert not single["failed"] and single["segments_written"] == 82582
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "local"))
    assert {p.name.split("-")[3] for p in (tmp_path / "ds_a" / "flows").rglob("*.parquet")} == {"0of2", "1of2"}
    assert_same_connections(tmp_path / "ds_a", process_table(capture))
    batch([tmp_path / "in" / "a"], tmp_path / "local_a", flush=True, jobs=1, settings=Settings(segments=True))
    assert segment_rows(tmp_path / "ds_a").equals(segment_rows(tmp_path / "local_a"))


def test_scheduler_that_is_not_there_is_a_usage_error(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed (fastflow[dask]) is not installed")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pcap_us_le.pcap", folder / "a.pcap")
    r = cli("batch", folder, "-o", tmp_path / "ds", "--min-age", "0", "--scheduler", "tcp://127.0.0.1:9")
    assert r.returncode == 2 and r.stderr.startswith("Error: --scheduler") and "Traceback" not in r.stderr


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_the_workers_and_the_next_run_completes(tmp_path, sig, code):
    """SIGINT / SIGTERM to the whole process group (a terminal's Ctrl-C, a service stop) with two workers:
    exit 130 / 143 at once, no process left, and the next run gives the uninterrupted run's rows."""
    capture = CAPTURES / "zeek__echo-connections.pcap"
    for k in range(2):
        split(capture, tmp_path / "in" / f"s{k}", "-c", "3000")
    common = [sys.executable, "-m", "fastflow", "batch", str(tmp_path / "in"), "-j", "2", "--idle-timeout", "1"]
    assert subprocess.run(common + ["-q", "-o", str(tmp_path / "clean")]).returncode == 0
    p = subprocess.Popen(common + ["-o", str(tmp_path / "ds")], stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=default_sigint)
    while not (tmp_path / "ds" / "flows").exists():     # the workers are writing
        assert p.poll() is None
        time.sleep(0.005)
    os.killpg(p.pid, sig)
    err = p.communicate(timeout=30)[1]
    assert p.returncode == code, err
    assert err.count("\n") == 1 and "the next run does the rest" in err
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)          # the workers are gone too
    assert subprocess.run(common + ["-q", "-o", str(tmp_path / "ds")]).returncode == 0
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "clean"))


# --- files that overlap in time ----------------------------------------------------------------------------

def deal(capture: Path, folder: Path, names: list[str], pattern) -> list[Path]:
    """The capture's records dealt into several pcap files: record k goes to file pattern(k) (two sensors
    that saw the same traffic at once, say). Written an hour old."""
    data = capture.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    outs = [bytearray(data[:24]) for _ in names]
    off, k = 24, 0
    while off + 16 <= len(data):
        caplen = int.from_bytes(data[off + 8:off + 12], "little" if endian == "<" else "big")
        outs[pattern(k)] += data[off:off + 16 + caplen]
        off += 16 + caplen
        k += 1
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, out in zip(names, outs):
        (folder / name).write_bytes(bytes(out))
        os.utime(folder / name, (OLD, OLD))
        paths.append(folder / name)
    return paths


def mergecap(paths, out: Path) -> Path:
    tool = shutil.which("mergecap")
    if tool is None:
        pytest.skip("mergecap (Debian: wireshark-common) is not installed")
    subprocess.run([tool, "-F", "pcap", "-w", str(out), *map(str, paths)], check=True)
    return out


@requires_corpus
@pytest.mark.parametrize("jobs", [1, 2])
def test_overlapping_files_are_merged_as_mergecap_does(tmp_path, jobs):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    # three pieces in time order, the middle one dealt between two files that overlap all along
    n = 82582
    pieces = deal(capture, tmp_path / "in", ["a.pcap", "b1.pcap", "b2.pcap", "c.pcap"],
                  lambda k: 0 if k < n // 3 else 3 if k >= 2 * n // 3 else 1 + k % 2)
    merged = mergecap(pieces, tmp_path / "merged.pcap")
    summary = batch([tmp_path / "in"], tmp_path / "ds", flush=True, jobs=jobs,
                    settings=Settings(idle_timeouts_s={"tcp": 1.0}))
    assert [sorted(Path(p).name for p in g) for g in summary["merged"]] == [["b1.pcap", "b2.pcap"]]
    got = assert_same_connections(tmp_path / "ds", process_table(merged, idle_timeouts_s={"tcp": 1.0}))
    check_provenance(got, packet_times(pieces))
    manifest = json.loads((tmp_path / "ds" / META_DIR / "manifest.json").read_text())
    assert manifest["inputs"][str(pieces[1])]["merged_with"] == [str(pieces[2])]
    assert manifest["inputs"][str(pieces[0])].get("merged_with") is None


@requires_corpus
def test_a_file_overlapping_an_earlier_run_restarts_the_stream_merged(tmp_path):
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = deal(capture, tmp_path / "all", ["x.pcap", "y.pcap"], lambda k: k % 2)
    (tmp_path / "in").mkdir()
    shutil.copy2(pieces[0], tmp_path / "in" / "x.pcap")
    batch([tmp_path / "in"], tmp_path / "ds")
    shutil.copy2(pieces[1], tmp_path / "in" / "y.pcap")
    summary = batch([tmp_path / "in"], tmp_path / "ds", flush=True)
    assert summary["restarted_streams"] == 1 and len(summary["merged"]) == 1
    assert_same_connections(tmp_path / "ds", process_table(mergecap(pieces, tmp_path / "merged.pcap")))


# --- inputs named by URI (fsspec) ------------------------------------------------------------------------

@requires_corpus
@needs_editcap
def test_inputs_by_uri_give_the_same_dataset(tmp_path):
    """Inputs under file:// (worker processes) and memory:// (in process) URIs, read through fsspec, give
    the rows local paths give; the provenance names the URIs."""
    fsspec = pytest.importorskip("fsspec", reason="fsspec (fastflow[dask]) is not installed")
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "in", "-c", "20000", compress={1: "gz"})
    reference = process_table(capture)
    batch([f"file://{tmp_path / 'in'}"], tmp_path / "ds_file", flush=True, jobs=2)
    got = assert_same_connections(tmp_path / "ds_file", reference)
    assert set(got["source"].to_pylist()) <= {f"file://{p}" for p in pieces}

    memory = fsspec.filesystem("memory")
    for p in pieces:
        memory.pipe(f"/fastflow-test/{p.name}", p.read_bytes())
    try:
        summary = batch(["memory://fastflow-test"], tmp_path / "ds_mem", flush=True, jobs=1, min_age_s=0)
        assert summary["processed"] == len(pieces)
        assert_same_connections(tmp_path / "ds_mem", reference)
        again = batch(["memory://fastflow-test"], tmp_path / "ds_mem", flush=True, jobs=1, min_age_s=0)
        assert again["processed"] == 0 and again["unchanged"] == len(pieces)
        assert process_table(f"memory://fastflow-test/{pieces[0].name}").num_rows > 0
    finally:
        memory.rm("/fastflow-test", recursive=True)


def test_a_dataset_uri_that_cannot_hold_a_dataset_is_a_usage_error(tmp_path):
    """(Datasets on an object store: tests/test_batch_s3.py.)"""
    pytest.importorskip("fsspec", reason="fsspec (fastflow[dask]) is not installed")
    for uri, message in [("memory://bucket/flows", "would live only as long as this process"),
                         ("nosuchscheme://bucket/flows", "Protocol not known")]:
        r = cli("batch", tmp_path, "-o", uri)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_moves_file_by_file(tmp_path, jobs):
    """The progress callback (the terminal's bar) gets the input bytes as files finish, never going back,
    ending at the total."""
    pieces = split(CAPTURES / "zeek__echo-connections.pcap", tmp_path / "in", "-c", "8000")
    seen = []
    batch([tmp_path / "in"], tmp_path / "ds", jobs=jobs, progress=lambda done, total: seen.append((done, total)))
    total = sum(p.stat().st_size for p in pieces)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert len({done for done, _ in seen}) > len(pieces) // 2     # not just the start and the end


# --- segments ------------------------------------------------------------------------------------------------

def process_segments(capture: Path, **options) -> tuple[pa.Table, pa.Table]:
    flows, segments = [], []
    stream_flows(str(capture), flows.append, segments_sink=segments.append, **options)
    return pa.concat_tables(flows), pa.concat_tables(segments)


def segments_by_packet(segments: pa.Table, flows: pa.Table, where) -> pa.Table:
    """Segments keyed by the packet (file, frame in it) and their connection by its first packet's, the
    dictionaries decoded; where(frames) gives (file, frame in file) for the table's frame numbers."""
    conn_first = dict(zip(flows["conn_id"].to_pylist(), zip(flows["source"].to_pylist(),
                                                             flows["first_frame"].to_pylist())))
    files, frames = where(segments, "frame")
    conn = [conn_first[c] for c in segments["conn_id"].to_pylist()]
    plain = {c: segments[c].cast(segments[c].type.value_type) if pa.types.is_dictionary(segments[c].type)
             else segments[c] for c in segments.column_names if c not in PROVENANCE | {"frame"}}
    plain.update(file=files, frame=frames, conn_file=[f for f, _ in conn], conn_frame=[k for _, k in conn])
    return pa.table(plain).sort_by([("file", "ascending"), ("frame", "ascending")])


def pieces_of(pieces: list[Path], per_piece: int):
    """(file, frame in it) of the whole capture's frame numbers, for editcap -c per_piece pieces."""
    def where(table, column):
        frames = np.asarray(table[column].to_pylist(), dtype=np.int64) - 1
        return [str(pieces[k]) for k in frames // per_piece], (frames % per_piece + 1).tolist()
    return where


def in_dataset(table, column):
    return table["source"].to_pylist(), table[column].to_pylist()


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("jobs", [1, 3])
def test_segments_of_split_files_equal_process(tmp_path, jobs):
    """batch --segments over editcap pieces gives the segments process --segments finds in the whole
    capture: every column, the packet named by file and frame, the connection by its first packet's."""
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "in", "-c", "3000")
    timeouts = {"tcp": 2.0}
    summary = batch([tmp_path / "in"], tmp_path / "ds", jobs=jobs, flush=True,
                    settings=Settings(idle_timeouts_s=timeouts, segments=True))
    assert summary["segments_written"] == 82582
    flows, segments = process_segments(capture, idle_timeouts_s=timeouts)
    where = pieces_of(pieces, 3000)
    want_flows = flows.set_column(flows.schema.get_field_index("source"), "source",
                                  pa.array(where(flows, "first_frame")[0]))
    want_flows = want_flows.set_column(want_flows.schema.get_field_index("first_frame"), "first_frame",
                                       pa.array(where(flows, "first_frame")[1], pa.uint64()))
    want = segments_by_packet(segments, want_flows, where)
    got = segments_by_packet(read_dataset(str(tmp_path / "ds"), "segments"), read_dataset(str(tmp_path / "ds")),
                             in_dataset)
    assert got.num_rows == want.num_rows == 82582
    for name in want.column_names:
        assert got[name].equals(want[name]), f"column {name} differs"
    # connections cut by the pieces: their segments come from several files
    crossing = np.count_nonzero(np.asarray(got["file"].to_pylist()) != np.asarray(got["conn_file"].to_pylist()))
    assert crossing > 1000


@requires_corpus
@needs_editcap
def test_segments_carried_across_runs_equal_one_run(tmp_path):
    """The segments of connections open at the end of a run are saved with them (by 3 parts) and finished
    by the next run (2 parts): the dataset equals one run's, and a dataset made without segments refuses
    a run with them."""
    _, pieces, arriving = first_pieces_arrive(tmp_path)
    settings = Settings(idle_timeouts_s={"tcp": 1.0}, segments=True)
    s1 = batch([arriving], tmp_path / "ds", settings=settings, jobs=3)
    assert s1["open_carried"] > 0
    for p in pieces[9:]:
        shutil.copy2(p, arriving / p.name)
    batch([arriving], tmp_path / "ds", settings=settings, jobs=2, flush=True)
    batch([arriving], tmp_path / "ds_one", settings=settings, flush=True)

    one = segment_rows(tmp_path / "ds_one")
    assert one.num_rows == 82582
    assert segment_rows(tmp_path / "ds").equals(one)
    assert dataset_rows(tmp_path / "ds").equals(dataset_rows(tmp_path / "ds_one"))
    batch([arriving], tmp_path / "ds_flows", settings=Settings(idle_timeouts_s={"tcp": 1.0}))
    with pytest.raises(UsageError, match="other analysis settings"):
        batch([arriving], tmp_path / "ds_flows", settings=settings)
