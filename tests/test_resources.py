"""Resources: a capture larger than the process's whole address space limit is processed, because plain files
are mapped a window at a time and the state kept is that of the open connections."""
from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from fastflow import synth

GiB = 1 << 30
RECORD_CAPLEN = 262144          # the largest record the pcap header allows here; the frame is padded to it


def write_big_capture(path, total_bytes: int) -> tuple[int, int]:
    """A pcap of TCP connections whose frames are padded to 256 KiB (Ethernet padding after the IP packet),
    written record by record. Returns (packets, connections)."""
    packets = connections = 0
    t = 1_700_000_000
    with open(path, "wb") as f:
        f.write(synth.pcap_header(1, snaplen=RECORD_CAPLEN))
        written = 24
        port = 40000
        while written < total_bytes:
            client, server = ("10.0.0.1", port), ("10.0.0.2", 80)
            isn_c, isn_s = 1000, 5000
            S, A, P, F = synth.SYN, synth.ACK, synth.PSH, synth.FIN
            shapes = [(client, server, S, isn_c, 0, 0), (server, client, S | A, isn_s, isn_c + 1, 0),
                      (client, server, A, isn_c + 1, isn_s + 1, 0)]
            seq = isn_c + 1
            for _ in range(40):
                shapes.append((client, server, P | A, seq, isn_s + 1, 1400))
                seq += 1400
            shapes += [(client, server, F | A, seq, isn_s + 1, 0), (server, client, F | A, isn_s + 1, seq + 1, 0),
                       (client, server, A, seq + 1, isn_s + 2, 0)]
            for (sa, sp), (da, dp), flags, s, a, plen in shapes:
                segment = synth.tcp_segment(sa, da, sp, dp, seq=s, ack=a, flags=flags, payload=bytes(plen))
                frame = synth.ethernet_frame(synth.ipv4_packet(sa, da, 6, segment))
                frame += bytes(RECORD_CAPLEN - len(frame))
                t += 1
                f.write(struct.pack("<IIII", t, 0, len(frame), len(frame)))
                f.write(frame)
                written += 16 + len(frame)
                packets += 1
            connections += 1
            port += 1
    return packets, connections


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux enforces it")
def test_capture_larger_than_the_address_space_limit(tmp_path):
    size = 2 * GiB + 200 * (1 << 20)
    if shutil.disk_usage(tmp_path).free < size + GiB:
        pytest.skip(f"needs {(size + GiB) / GiB:.1f} GiB free in {tmp_path}")
    capture = tmp_path / "big.pcap"
    packets, connections = write_big_capture(capture, size)
    assert os.path.getsize(capture) > 2 * GiB
    out = tmp_path / "flows.parquet"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 * GiB, 2 * GiB))

    # the limit is real: mapping the whole file at once, as fastflow once did, would not fit in it
    mapped = subprocess.run([sys.executable, "-c", "import mmap, sys; f = open(sys.argv[1], 'rb'); "
                             "mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)", str(capture)],
                            preexec_fn=limit, capture_output=True, text=True, timeout=60)
    assert mapped.returncode != 0 and "Cannot allocate memory" in mapped.stderr
    run = subprocess.run([sys.executable, "-m", "fastflow", "process", str(capture), "-o", str(out), "-q"],
                         preexec_fn=limit, capture_output=True, text=True, timeout=600)
    capture.unlink()
    assert run.returncode == 0, run.stderr
    flows = pq.read_table(out)
    assert flows.num_rows == connections
    assert flows.column("handshake").to_pylist() == ["complete"] * connections
    assert sum(flows.column("orig_pkts").to_pylist()) + sum(flows.column("resp_pkts").to_pylist()) == packets


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a full disk on demand (needs root and a kernel that lets the test mount it)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def synthetic_capture(tmp_path, packets: int = 30000):
    from pathlib import Path
    capture = tmp_path / "synth.pcap"
    generate = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
    subprocess.run([sys.executable, str(generate), "--packets", str(packets), "--seed", "3", "-o", str(capture)],
                   check=True, capture_output=True)
    return capture


def test_full_disk_gives_one_line_and_no_partial_file(tmp_path, tiny_disk):
    capture = synthetic_capture(tmp_path)
    run = subprocess.run([sys.executable, "-m", "fastflow", "process", str(capture), "-o",
                          str(tiny_disk / "flows.parquet")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"Error: {tiny_disk / 'flows.parquet'}: cannot write: No space left on device"]
    assert list(tiny_disk.iterdir()) == []


def test_full_temporary_folder_for_open_connections_is_an_error(tmp_path, tiny_disk, monkeypatch):
    """Open connections beyond the in-memory limit go to TMPDIR; when that is full, the run stops with the
    folder named, and the output is not written."""
    import tempfile

    from fastflow import tcpflows
    from fastflow.errors import OutputError
    from fastflow.pipeline import stream_flows
    from fastflow.schema import FLOWS_SCHEMA
    from fastflow.write import ParquetStream
    capture = synthetic_capture(tmp_path)
    monkeypatch.setattr(tcpflows, "MAX_IN_MEMORY", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_disk))
    out = tmp_path / "flows.parquet"
    with pytest.raises(OutputError, match=f"temporary file in {tiny_disk}"):
        with ParquetStream(str(out), FLOWS_SCHEMA) as sink:
            result = stream_flows(str(capture), sink.write, batch_size=1000)
            sink.commit(result.metadata())
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
