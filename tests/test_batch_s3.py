"""`fastflow batch` with its dataset on an object store (fastflow/dataset_store.py, docs/batch.md).

The store is a real S3 endpoint on loopback: moto's server (the S3 API as boto3 and s3fs speak it, with
conditional writes), reached through s3fs the way a user's bucket is. The same runs as tests/test_batch.py's:
the dataset equals the one a local folder gets, row for row; incremental runs continue the open connections
saved in the bucket; a killed run is completed by the next; the lock object lets one of two runs work."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from corpus import CAPTURES, requires_corpus
from test_batch import (
    assert_same_connections,
    batch,
    dataset_rows,
    needs_editcap,
    process_table,
    segment_rows,
    split,
)

from fastflow.batch import META_DIR, Settings
from fastflow.dataset_store import LockedError, open_store

s3fs = pytest.importorskip("s3fs", reason="s3fs (pip install 's3fs>=2025.7') is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto's S3 server (pip install 'moto[s3]' flask "
                                                         "flask-cors) is not installed")


@pytest.fixture(scope="module")
def endpoint():
    """An S3 endpoint on loopback for the module's tests."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint, monkeypatch, request):
    """A fresh bucket; the credentials and endpoint in the environment (for the CLI and the worker
    processes: fsspec reads FSSPEC_S3_* at import) and in this process's fsspec configuration."""
    import fsspec.config

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "FSSPEC_S3_ENDPOINT_URL": endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    name = "ff-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    fs.mkdir(name)
    yield fs, f"s3://{name}"
    fs.rm(name, recursive=True)


def objects(fs, url: str) -> dict[str, bytes]:
    """Every object of the dataset with its bytes (the lock objects aside)."""
    root = url.removeprefix("s3://")
    fs.invalidate_cache()
    return {name: fs.cat_file(name) for name in sorted(fs.find(root)) if "/lock." not in name}


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], capture_output=True, text=True,
                          check=False, **kw)


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("jobs", [1, 2])
def test_incremental_runs_into_a_bucket_equal_a_local_run(tmp_path, bucket, jobs):
    """Nine pieces, then the rest: the open connections are saved in the bucket and continued; a third run
    changes no object; --flush gives what `fastflow process` finds in the whole capture."""
    fs, url = bucket
    capture = CAPTURES / "zeek__echo-connections.pcap"
    pieces = split(capture, tmp_path / "all", "-c", "4000")
    arriving = tmp_path / "in"
    arriving.mkdir()
    for p in pieces[:9]:
        shutil.copy2(p, arriving / p.name)
    settings = Settings(idle_timeouts_s={"tcp": 1.0}, segments=True)
    s1 = batch([arriving], url, settings=settings, jobs=jobs)
    assert s1["processed"] == 9 and s1["open_carried"] > 0 and s1["dataset"] == url
    assert [n for n in fs.find(url.removeprefix("s3://")) if n.endswith(".state")]
    for p in pieces[9:]:
        shutil.copy2(p, arriving / p.name)
    s2 = batch([arriving], url, settings=settings, jobs=jobs)
    assert s2["processed"] == len(pieces) - 9 and s2["unchanged"] == 9 and not s2["failed"]

    batch([arriving], tmp_path / "local", settings=settings)
    assert dataset_rows(url).equals(dataset_rows(tmp_path / "local"))
    assert segment_rows(url).equals(segment_rows(tmp_path / "local"))

    before = objects(fs, url)
    s3 = batch([arriving], url, settings=settings, jobs=jobs)
    assert s3["processed"] == 0 and s3["unchanged"] == len(pieces)
    assert objects(fs, url) == before

    batch([arriving], url, flush=True, settings=settings, jobs=jobs)
    assert_same_connections(url, process_table(capture, idle_timeouts_s={"tcp": 1.0}))
    manifest = json.loads(fs.cat_file(f"{url}/{META_DIR}/manifest.json"))
    named = {o for e in manifest["inputs"].values() for o in e["outputs"]}
    named |= {o for s in manifest["streams"].values() for o in s["flushed_outputs"]}
    stored = {n.removeprefix(url.removeprefix("s3://") + "/") for n in objects(fs, url)}
    assert {n for n in stored if n.endswith(".parquet")} == named


@requires_corpus
@needs_editcap
@pytest.mark.parametrize("where", ["file-written:3", "state-written:1", "manifest-saved:1"])
def test_a_killed_run_is_completed_once_its_lock_is_stale(tmp_path, bucket, where):
    """SIGKILL leaves the run's lock object unreleased: the next run exits 75 while the lock is younger than
    the lease, takes it over after, and leaves the dataset row for row as an uninterrupted run's."""
    fs, url = bucket
    split(CAPTURES / "zeek__echo-connections.pcap", tmp_path / "in" / "a", "-c", "6000")
    split(CAPTURES / "zeek__wikipedia.pcap", tmp_path / "in" / "b", "-i", "1")
    common = ["batch", tmp_path / "in", "-q", "-j", "1", "--idle-timeout", "tcp=1"]
    assert cli(*common, "-o", tmp_path / "clean").returncode == 0
    killed = cli(*common, "-o", url, env=dict(os.environ, FASTFLOW_TEST_KILL_AT=where))
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    refused = cli(*common, "-o", url)
    assert refused.returncode == 75 and refused.stderr.count("\n") == 1, refused.stderr
    assert "another fastflow batch is running" in refused.stderr and "taken over after 600 s" in refused.stderr

    time.sleep(2.5)
    r = cli(*common, "-o", url, env=dict(os.environ, FASTFLOW_LOCK_LEASE_S="2"))
    assert r.returncode == 0, r.stderr
    assert dataset_rows(url).equals(dataset_rows(tmp_path / "clean"))
    manifest = json.loads(fs.cat_file(f"{url}/{META_DIR}/manifest.json"))
    states = {name for s in manifest["streams"].values() for name in s["state"]}
    stored = {n.removeprefix(url.removeprefix("s3://") + "/") for n in objects(fs, url)}
    assert {n for n in stored if n.endswith(".state")} == states
    # one lock object: the last run's, released
    locks = [n for n in fs.find(url.removeprefix("s3://")) if "/lock." in n]
    assert len(locks) == 1 and json.loads(fs.cat_file(locks[0]))["released"] is True


@requires_corpus
def test_a_held_lock_object_stops_a_second_run(tmp_path, bucket):
    fs, url = bucket
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CAPTURES / "zeek__http__get.pcap", folder / "a.pcap")
    assert cli("batch", folder, "-o", url, "--min-age", "0", "-q").returncode == 0
    shutil.copy(CAPTURES / "zeek__tcp__options.pcap", folder / "b.pcap")
    before = objects(fs, url)
    store = open_store(url)
    with store.locked():
        r = cli("batch", folder, "-o", url, "--min-age", "0")
        with pytest.raises(LockedError), open_store(url).locked():
            pass
    assert r.returncode == 75 and r.stderr.count("\n") == 1, r.stderr
    assert "another fastflow batch is running" in r.stderr
    assert objects(fs, url) == before
    assert cli("batch", folder, "-o", url, "--min-age", "0", "-q").returncode == 0
    assert objects(fs, url) != before


@requires_corpus
@needs_editcap
def test_two_runs_started_together_on_a_bucket(tmp_path, bucket):
    _, url = bucket
    for k in range(4):       # enough work that the first run still holds the lock when the second starts
        split(CAPTURES / "zeek__echo-connections.pcap", tmp_path / "in" / f"s{k}", "-c", "2000")
    args = [sys.executable, "-m", "fastflow", "batch", str(tmp_path / "in"), "-q", "-j", "1", "-o"]
    runs = [subprocess.Popen(args + [url], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    messages = [r.communicate()[1] for r in runs]
    assert sorted(r.returncode for r in runs) == [0, 75], messages
    assert any("another fastflow batch" in m for m in messages)
    assert subprocess.run(args + [str(tmp_path / "local")], check=False).returncode == 0
    assert dataset_rows(url).equals(dataset_rows(tmp_path / "local"))


@requires_corpus
@needs_editcap
def test_dask_cluster_reads_and_writes_the_bucket(tmp_path, bucket):
    """Inputs and dataset both in the bucket, tasks on a LocalCluster of two worker processes: the dataset
    equals a local run's (the provenance names the s3:// inputs)."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed (fastflow[dask]) is not installed")
    fs, url = bucket
    split(CAPTURES / "zeek__echo-connections.pcap", tmp_path / "in" / "a", "-c", "6000", compress={2: "gz"})
    split(CAPTURES / "zeek__wikipedia.pcap", tmp_path / "in" / "b", "-i", "1")
    fs.put(str(tmp_path / "in") + "/", url.removeprefix("s3://") + "/in/", recursive=True)
    batch([tmp_path / "in"], tmp_path / "local", flush=True, jobs=1, min_age_s=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        summary = batch([f"{url}/in"], f"{url}/ds", flush=True, jobs=None, min_age_s=0,
                        scheduler=cluster.scheduler_address)
    assert summary["processed"] == len(list((tmp_path / "in").rglob("*.pcap*"))) and not summary["failed"]
    got, local = dataset_rows(f"{url}/ds"), dataset_rows(tmp_path / "local")
    assert set(got["source"].to_pylist()) <= {f"{url}/in/{p.relative_to(tmp_path / 'in')}"
                                              for p in (tmp_path / "in").rglob("*.pcap*")}
    provenance = ["source", "last_source", "stream"]
    assert got.drop_columns(provenance).equals(local.drop_columns(provenance))


def test_a_lock_is_stale_only_by_the_store_clock_too(bucket, monkeypatch):
    """A machine whose clock runs an hour ahead does not take a live lock: the store's own clock decides."""
    import fastflow.dataset_store as dataset_store

    fs, url = bucket
    root = url.removeprefix("s3://")
    fs.pipe_file(f"{root}/{META_DIR}/lock.1", json.dumps({"host": "elsewhere", "pid": 1, "time": 0}).encode())
    monkeypatch.setenv("FASTFLOW_LOCK_LEASE_S", "60")
    monkeypatch.setattr(dataset_store, "_local_now", lambda: time.time() + 3600)
    with pytest.raises(LockedError, match="elsewhere"), open_store(url).locked():
        pass
    monkeypatch.setattr(dataset_store, "_local_now", time.time)
    monkeypatch.setenv("FASTFLOW_LOCK_LEASE_S", "1")
    time.sleep(2.5)         # now stale by both clocks (S3 times are whole seconds)
    with open_store(url).locked():
        assert [n.rsplit("/", 1)[1] for n in fs.find(f"{root}/{META_DIR}") if "/lock." in n] == ["lock.2"]
