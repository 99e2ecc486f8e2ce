"""The command line: the seed example end to end, outputs, metadata, and every bad-input path (exit code and
one-line message, never a traceback)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.corpus import CAPTURES, default_sigint, requires_corpus

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed.pcap"
DATA = Path(__file__).parent / "data"


def run(*args, stdin=None, input_bytes=None):
    return subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], capture_output=True,
                          stdin=stdin, input=input_bytes, cwd=ROOT, timeout=120)


def assert_one_line_error(proc, code, *needles):
    assert proc.returncode == code, proc.stderr
    err = proc.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_seed_example(tmp_path):
    flows_path, seg_path = tmp_path / "flows.parquet", tmp_path / "segments.parquet"
    proc = run("process", SEED, "-o", flows_path, "--segments", seg_path)
    assert proc.returncode == 0, proc.stderr
    flows = pq.read_table(flows_path).to_pylist()
    assert len(flows) == 1
    f = flows[0]
    assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"]) == ("166.111.1.2", 57245, "192.30.252.153", 80)
    assert f["handshake"] == "complete"
    assert (f["orig_isn"], f["resp_isn"]) == (1337949936, 3859825850)
    assert (f["close"], f["close_initiator"], f["teardown_segments"]) == ("fin", "resp", 4)
    assert f["conn_state"] == "SF"
    assert (f["orig_pkts"], f["resp_pkts"], f["orig_payload_bytes"], f["resp_payload_bytes"]) == (6, 4, 361, 223)
    assert (f["first_frame"], f["last_frame"]) == (1, 10)
    assert f["rtt_syn_synack"] == pytest.approx(0.290061, abs=1e-9)
    assert f["rtt_synack_ack"] == pytest.approx(0.000081, abs=1e-9)
    segs = pq.read_table(seg_path).to_pylist()
    assert [s["handshake_step"] for s in segs] == [1, 2, 3] + [None] * 7
    assert [s["teardown_step"] for s in segs] == [None] * 6 + [1, 2, 3, 4]
    assert [s["flags"] for s in segs] == ["S", "S.", ".", "P.", "P.", ".", "F.", ".", "F.", "."]
    assert [s["from_orig"] for s in segs][6:] == [False, True, True, False]
    assert segs[3]["rel_seq"] == 1 and segs[4]["rel_ack"] == 362

    shown = run("show", flows_path, "--conn", "0")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.decode().splitlines()
    assert len(lines) == 10
    assert "handshake 1" in lines[0] and "teardown 4" in lines[9]
    table = run("show", flows_path)
    assert table.returncode == 0 and "SF" in table.stdout.decode()


def test_metadata_and_summary(tmp_path):
    out = tmp_path / "flows.parquet"
    proc = run("process", SEED, "-o", out, "--compression", "snappy", "--summary-json", tmp_path / "s.json")
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "10 packets" in err and "1 connections" in err and "complete 1" in err
    meta = pq.read_metadata(out)
    kv = {k.decode(): json.loads(v) for k, v in meta.metadata.items() if k != b"ARROW:schema"}
    assert kv["fastflow_version"]
    assert kv["inputs"] == [str(SEED)]
    assert kv["counts"]["packets"] == 10 and kv["counts"]["tcp_segments"] == 10
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counts"]["connections"] == 1


def test_quiet_prints_nothing(tmp_path):
    proc = run("process", SEED, "-o", tmp_path / "f.parquet", "-q")
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""


def test_stdin_and_compressed_stdin(tmp_path):
    for name in ("pcap_us_le.pcap", "compressed.pcap.zst"):
        out = tmp_path / f"{name}.parquet"
        with open(DATA / name, "rb") as f:
            proc = run("process", "-", "-o", out, stdin=f)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_table(out).num_rows == 1


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "f.parquet"
    out.write_bytes(b"precious")
    assert_one_line_error(run("process", SEED, "-o", out), 2, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert run("process", SEED, "-o", out, "--overwrite").returncode == 0
    assert pq.read_table(out).num_rows == 1
    assert sorted(os.listdir(tmp_path)) == ["f.parquet"]  # no temporary file left


def test_refuses_to_write_over_input(tmp_path):
    capture = tmp_path / "c.pcap"
    shutil.copy(SEED, capture)
    assert_one_line_error(run("process", capture, "-o", capture, "--overwrite"), 2, "one of the inputs")
    assert capture.read_bytes() == SEED.read_bytes()


@pytest.mark.parametrize("args, needles", [
    (["process", "/nonexistent.pcap", "-o", "{tmp}/f.parquet"], ["no such file"]),
    (["process", str(DATA / "not_a_capture.txt"), "-o", "{tmp}/f.parquet"], ["not a pcap or pcapng"]),
    (["process", str(DATA / "empty.pcap"), "-o", "{tmp}/f.parquet"], ["empty file"]),
    (["process", str(DATA / "link_unsupported.pcap"), "-o", "{tmp}/f.parquet"], ["unsupported link type 147"]),
    (["process", str(SEED), "-o", "{tmp}/missing/f.parquet"], ["does not exist"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--filter", "tcp port 99999"], ["illegal port number"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--filter", "tcp and and"], ["bad filter expression"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--idle-timeout", "0"], ["--idle-timeout"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--idle-timeout", "udp=-1"], ["--idle-timeout"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--idle-timeout", "sctp=5"], ["unknown protocol"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--idle-timeout", "tcp=abc"], ["not a number"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--likely-server-ports", "80,70000"], ["> 65535"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--likely-server-ports", "90-80"], ["reversed range"]),
    (["process", str(SEED), "-o", "{tmp}/f.parquet", "--community-id-seed", "65536"], ["--community-id-seed"]),
    (["process", str(SEED)], ["required"]),
    (["frobnicate"], ["invalid choice"]),
    (["show", "{tmp}/none.parquet"], ["no such file"]),
    (["show", str(SEED)], ["not a Parquet file"]),
    (["process", str(ROOT), "-o", "{tmp}/f.parquet"], ["is a directory"]),
])
def test_user_mistakes_exit_2(tmp_path, args, needles):
    proc = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_one_line_error(proc, 2, *needles)
    assert not list(tmp_path.iterdir())


def test_unwritable_folder(tmp_path):
    if os.geteuid() == 0:
        # root may write into a mode-0500 folder; sysfs refuses even root
        target = Path("/sys/fastflow-test.parquet")
        assert_one_line_error(run("process", SEED, "-o", target), 2, str(target), "cannot write")
        assert not target.exists()
        return
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert_one_line_error(run("process", SEED, "-o", folder / "f.parquet"), 2, "not writable")


@pytest.mark.parametrize("name, packets, offset", [
    ("damaged_cut_record.pcap", 5, 834),
    ("damaged_huge_caplen.pcap", 2, 204),
    ("damaged_cut_block.pcapng", 5, 972),
    ("damaged_block_length.pcapng", 2, 288),
    ("damaged_caplen_gt_len.pcap", 8, 274),
])
def test_damaged_input_is_processed_and_reported(tmp_path, name, packets, offset):
    out = tmp_path / "f.parquet"
    proc = run("process", DATA / name, "-o", out, "--summary-json", tmp_path / "s.json")
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.decode()
    assert "Traceback" not in err and f"byte offset {offset}" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counts"]["tcp_segments"] == packets
    assert summary["damage"]["offset"] == offset
    assert pq.read_table(out).num_rows >= 1


def test_refuses_to_replace_a_device():
    # the atomic rename would turn /dev/null into a regular file
    assert_one_line_error(run("process", SEED, "-o", "/dev/null", "--overwrite"), 2, "not a regular file")
    assert not Path("/dev/null").is_file()


@requires_corpus
def test_corpus_truncated_capture_writes_partial(tmp_path):
    out = tmp_path / "f.parquet"
    proc = run("process", CAPTURES / "derived__zeek__http__get__truncated-mid-record.pcap", "-o", out,
               "--segments", tmp_path / "s.parquet")
    assert proc.returncode == 1
    assert "cut short inside a record at byte offset 2120" in proc.stderr.decode()
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 6


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (scripts/setup.sh --test installs it)")
@requires_corpus
@pytest.mark.parametrize("expr", ["tcp port 80", "tcp[tcpflags] & tcp-syn != 0", "vlan", "ip6", "src net 10.0.0.0/8"])
def test_filter_agrees_with_tcpdump(tmp_path, expr):
    """Our BPF path (compiled by libpcap, run in the decoder) keeps exactly the frames tcpdump keeps."""
    from tests.corpus import decode_all
    for name in ("zeek__wikipedia.pcap", "zeek__vlan-collisions.pcap", "zeek__ftp__ipv6.pcap",
                 "zeek__tcp__missing-syn.pcap"):
        # tcpdump numbers only the packets that pass, so the kept packets are compared by their times (µs files)
        ref = subprocess.run(["tcpdump", "-nn", "-tt", "-r", str(CAPTURES / name), expr],
                             capture_output=True, text=True, check=True)
        want = [int(line.split()[0].replace(".", "")) for line in ref.stdout.splitlines() if line.strip()]
        cols, reader = decode_all(CAPTURES / name, filter_expr=expr)
        got = (cols["ts"] // 1000).tolist() if cols else []
        assert got == want, (name, expr)
        assert reader.frames - reader.filtered == len(want)


def _interrupt(sig, code, tmp_path):
    out = tmp_path / "f.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "fastflow", "process", "-", "-o", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, preexec_fn=default_sigint)
    proc.stdin.write(SEED.read_bytes()[:200])  # a capture still being written
    proc.stdin.flush()
    time.sleep(1.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert b"Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_sigint_exits_130(tmp_path):
    _interrupt(signal.SIGINT, 130, tmp_path)


def test_sigterm_exits_143(tmp_path):
    _interrupt(signal.SIGTERM, 143, tmp_path)


@pytest.mark.parametrize("path,udp_flows", [(DATA / "header_only.pcap", 0),
                                            (CAPTURES / "zeek__pcapng-multi-interface.pcapng", 3)])
def test_capture_without_tcp_gives_empty_segments(tmp_path, path, udp_flows):
    if not path.exists():
        pytest.skip(f"{path} not found (the shared corpus is missing)")
    proc = run("process", path, "-o", tmp_path / "f.parquet", "--segments", tmp_path / "s.parquet")
    assert proc.returncode == 0, proc.stderr
    flows = pq.read_table(tmp_path / "f.parquet")
    assert flows.num_rows == udp_flows and flows.column("proto").to_pylist() == ["udp"] * udp_flows
    # the TCP-only columns are null on other protocols
    assert flows.column("handshake").null_count == udp_flows and flows.column("orig_isn").null_count == udp_flows
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 0


def test_analysis_options(tmp_path):
    out = tmp_path / "f.parquet"
    # the seed's client port is a likely server port now: its SYN still makes it the originator
    proc = run("process", SEED, "-o", out, "--likely-server-ports", "57245", "--community-id-seed", "1",
               "--idle-timeout", "tcp=10,udp=5", "--vlan-aware")
    assert proc.returncode == 0, proc.stderr
    first, second = pq.read_table(out).to_pylist()
    # the 23 s before the client's FIN exceed the 10 s TCP timeout: that FIN starts a second connection
    assert (first["orig_p"], first["history"]) == (57245, "ShADdf")
    # which starts midstream from port 57245, a server port now (80 is not): Zeek's heuristic flips it
    assert (second["orig_p"], second["resp_p"], second["history"]) == (80, 57245, "^fA")
    seed0 = run("process", SEED, "-o", tmp_path / "g.parquet")
    assert seed0.returncode == 0, seed0.stderr
    assert first["community_id"] != pq.read_table(tmp_path / "g.parquet").column("community_id")[0].as_py()


@requires_corpus
def test_verify_checksums_option(tmp_path):
    syn_bad = CAPTURES / "zeek__tcp__syn-bad.pcap"
    for args, expected in (([], ("S", "S0")), (["--verify-checksums"], ("C", "OTH"))):
        out = tmp_path / "f.parquet"
        proc = run("process", syn_bad, "-o", out, "--overwrite", *args)
        assert proc.returncode == 0, proc.stderr
        f = pq.read_table(out).to_pylist()[0]
        assert (f["history"], f["conn_state"]) == expected


@requires_corpus
def test_show_lists_every_protocol(tmp_path):
    out = tmp_path / "f.parquet"
    assert run("process", CAPTURES / "zeek__wikipedia.pcap", "-o", out).returncode == 0
    proc = run("show", out, "--limit", "0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["conn_id", "ts_start", "proto"] and len(lines) == 1 + 34
    assert sum(" udp " in line for line in lines) == 24 and sum(" tcp " in line for line in lines) == 10
    # segments are TCP's only: asking for a UDP flow's says so
    assert run("process", CAPTURES / "zeek__wikipedia.pcap", "-o", out, "--segments", tmp_path / "s.parquet",
               "--overwrite").returncode == 0
    assert_one_line_error(run("show", out, "--conn", "0"), 2, "connection 0 is udp")


def test_out_of_memory_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """A MemoryError anywhere in the run (an engine's allocation, pyarrow) ends it like any error: one line,
    exit 2, no output file and no temporary file left."""
    import fastflow.pipeline
    from fastflow.cli import main

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(fastflow.pipeline, "stream_flows", exhausted)
    out = tmp_path / "flows.parquet"
    code = main(["process", str(DATA / "pcap_us_le.pcap"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("Error: out of memory; no output written.") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_process_and_batch_never_import_pandas(tmp_path):
    """pandas takes about 0.15 s to import, a quarter of a 1 M-packet run: pyarrow loads it for
    Array.to_numpy() and for pa.array() of numpy data, which fastflow does without (schema.fixed_width_values,
    fixed_width_array). pyarrow.compute takes 25 ms, a tenth of a small capture's run: `fastflow process` of
    a TCP capture does without it too. Every attempt to import either, in the command's process and in
    batch's workers, is written down (whether the module is installed or not) by a sitecustomize the test
    puts on the path."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import importlib.abc, os, sys\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('pandas', 'pyarrow.compute'):\n"
        "            with open(os.environ['WATCHED_IMPORTS'], 'a') as log:\n"
        "                log.write(name + '\\n')\n"
        "sys.meta_path.insert(0, Watch())\n")
    log = tmp_path / "imports.txt"
    env = dict(os.environ, WATCHED_IMPORTS=str(log),
               PYTHONPATH=os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SEED, folder / "a.pcap")
    subprocess.run([sys.executable, "-c", "import pandas"], env=env, capture_output=True)
    assert "pandas" in log.read_text().split(), "the import hook did not run"
    log.unlink()
    for args, allowed in (
            (["process", SEED, "-o", tmp_path / "f.parquet", "-q"], set()),
            (["process", SEED, "-o", tmp_path / "g.parquet", "--segments", tmp_path / "s.parquet", "-q"],
             {"pyarrow.compute"}),
            (["batch", folder, "-o", tmp_path / "ds", "--segments", "--min-age", "0", "--flush", "-q"],
             {"pyarrow.compute"})):
        r = subprocess.run([sys.executable, "-m", "fastflow", *map(str, args)], env=env, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        imported = set(log.read_text().split()) if log.exists() else set()
        assert imported <= allowed, f"fastflow {' '.join(map(str, args[:1]))} imported {imported - allowed}"
        log.unlink(missing_ok=True)
    assert pq.read_table(tmp_path / "ds" / "flows").num_rows == pq.read_table(tmp_path / "f.parquet").num_rows > 0


def test_modules_load_with_the_collector_paused_and_it_runs_again_after(tmp_path):
    """cli._collector_paused: the collections during numpy's, pyarrow's and fastflow's imports cost 25 ms; the
    objects they made are frozen after, and the collector is on again for the run itself."""
    code = ("import gc, sys; from fastflow import cli; code = cli.main(sys.argv[1:]); "
            "print(code, gc.isenabled(), gc.get_freeze_count())")
    for args in (["process", SEED, "-o", tmp_path / "f.parquet", "-q"],
                 ["batch", SEED.parent, "-o", tmp_path / "ds", "--min-age", "0", "-q", "-j", "1"]):
        out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                             check=True).stdout.split()
        assert out[:2] == ["0", "True"], out
        assert int(out[2]) > 10_000, out     # numpy's and pyarrow's objects, frozen


def test_the_command_line_starts_without_numpy_and_with_one_blas_thread():
    """fastflow/__init__ loads process() on first use, so the command line sets up the process
    (cli.tune_process: one OpenBLAS thread, Arrow on the system allocator) before numpy and pyarrow load, and
    --version needs neither."""
    out = subprocess.run([sys.executable, "-c", "import sys, fastflow.cli; print(sorted(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    assert "'numpy'" not in out and "'pyarrow'" not in out
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL")}
    code = ("import os, sys; from fastflow import cli; cli.tune_process(); import numpy, pyarrow; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], pyarrow.default_memory_pool().backend_name)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.split() == ["1", "system"]
    r = subprocess.run([sys.executable, "-m", "fastflow", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("fastflow ")
