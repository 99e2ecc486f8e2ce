"""The streaming path (pipeline.stream_flows, write.ParquetStream, segment_stream.py: what `fastflow process`
runs): the same flows and segments rows as the whole-capture path, whatever the batch size, and the same file
bytes."""
from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus import CAPTURES, capture_names, requires_corpus
from fastflow import pipeline, segment_stream, synth, tcpflows
from fastflow.decode import PFlag, Status
from fastflow.pipeline import process, stream_flows
from fastflow.schema import FLOWS_SCHEMA, SEGMENTS_SCHEMA
from fastflow.segment_stream import SegmentStream
from fastflow.write import MAYBE_DISTINCT, ParquetStream, write_tables


def plain(table):
    """Dictionary columns as plain strings: a dictionary's order follows the rows of each chunk, so it is
    not part of what must be equal."""
    fields = [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type, f.nullable,
                       f.metadata) for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def assert_same_table(got, want, label=""):
    assert got.schema.equals(want.schema, check_metadata=True), label
    assert plain(got).equals(plain(want), check_metadata=True), label


def streamed(path, tmp_path, batch_size=1 << 18, row_group_rows=1 << 17, name="s.parquet", segments=False, **kw):
    """The flows file streamed (and with segments, the segments file beside it, named seg-NAME)."""
    out = tmp_path / name
    with ExitStack() as stack:
        sink = stack.enter_context(ParquetStream(str(out), FLOWS_SCHEMA, row_group_rows=row_group_rows))
        seg_sink = None
        if segments:
            seg_sink = stack.enter_context(ParquetStream(str(tmp_path / f"seg-{name}"), SEGMENTS_SCHEMA,
                                                         row_group_rows=row_group_rows))
        result = stream_flows(str(path), sink.write, batch_size=batch_size,
                              segments_sink=seg_sink.write if seg_sink else None, **kw)
        sink.commit(result.metadata())
        if seg_sink:
            seg_sink.commit(result.metadata())
    return out, result


def whole(path, tmp_path, name="w.parquet", segments=False, **kw):
    result = process(str(path), want_segments=segments, **kw)
    out = tmp_path / name
    outputs = [(str(out), result.flows)] + ([(str(tmp_path / f"seg-{name}"), result.segments)] if segments else [])
    write_tables(outputs, metadata=result.metadata())
    return out, result


def segments_of(flows_file):
    return pq.read_table(flows_file.with_name(f"seg-{flows_file.name}"))


@requires_corpus
@pytest.mark.parametrize("name", capture_names())
def test_corpus_streams_the_same_table(name, tmp_path, monkeypatch):
    path = CAPTURES / name
    try:
        w, wres = whole(path, tmp_path)
    except Exception as exc:   # unreadable captures must fail the same way streamed
        with pytest.raises(type(exc)):
            streamed(path, tmp_path)
        return
    want = pq.read_table(w)
    # tcp_parts: the TCP connections shared out among engines fed side by side (PartedTcpFlows), from the
    # start (split_at 0) or once that many are open
    for batch_size, tcp_parts, split_at in ((7, 1, 0), (1000, 1, 0), (1 << 18, 1, 0), (7, 3, 2), (1 << 18, 2, 0)):
        monkeypatch.setattr(tcpflows, "SPLIT_AT", split_at)
        s, sres = streamed(path, tmp_path, batch_size=batch_size, name=f"s{batch_size}-{tcp_parts}.parquet",
                           tcp_parts=tcp_parts)
        got = pq.read_table(s)
        assert_same_table(got, want, f"{name}: batch size {batch_size}, {tcp_parts} TCP engines")
        assert sres.stats["counts"] == wres.stats["counts"]
        assert sres.stats["damage"] == wres.stats["damage"]
    # the segments table, streamed: each segment analysed once its connection has finished
    w, wres = whole(path, tmp_path, name="ws.parquet", segments=True)
    monkeypatch.setattr(tcpflows, "SPLIT_AT", 3)
    # in_memory: segments beyond that many spill after each batch (SEGMENTS_IN_MEMORY), those of connections
    # still open too, and are analysed and written from the file
    for batch_size, tcp_parts, in_memory in ((7, 1, None), (1 << 18, 1, None), (7, 2, None), (7, 1, 5)):
        if in_memory is not None:
            monkeypatch.setattr(segment_stream, "SEGMENTS_IN_MEMORY", in_memory)
        s, sres = streamed(path, tmp_path, batch_size=batch_size, name=f"ss{batch_size}-{tcp_parts}.parquet",
                           segments=True, tcp_parts=tcp_parts)
        label = f"batch size {batch_size}, {tcp_parts} TCP engines, {in_memory or 'default'} segments in memory"
        assert_same_table(pq.read_table(s), pq.read_table(w), f"{name}: flows with segments, {label}")
        assert_same_table(segments_of(s), segments_of(w), f"{name}: segments, {label}")
        assert sres.stats["counts"] == wres.stats["counts"]
        assert sres.stats["damage"] == wres.stats["damage"]


def without_dictionary(path) -> set[str]:
    """The columns of a Parquet file whose first row group has no dictionary."""
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(0)
    return {group.column(i).path_in_schema for i in range(group.num_columns)
            if not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(group.column(i).encodings)}


@requires_corpus
def test_columns_whose_values_all_differ_go_without_a_dictionary(tmp_path):
    """ParquetStream drops the dictionary of a MAYBE_DISTINCT column whose values almost all differ in the
    first row group, and keeps those whose values repeat; the values read back are the same, and so are the
    bytes however the rows came in. An output that never fills a row group keeps every dictionary."""
    flows = process(str(CAPTURES / "zeek__echo-connections.pcap")).flows
    table = pa.concat_tables([flows] * 8)     # every value repeats, the Community IDs too
    durations = pa.array(0.5 + np.arange(table.num_rows) * 1e-6)
    table = table.set_column(table.schema.get_field_index("duration"), table.schema.field("duration"), durations)
    assert table.num_rows == 4000
    for rows, plain_ones in ((1000, {"duration"}), (8000, set())):
        files = []
        for cut in (1, 999, 2500):
            out = tmp_path / f"{rows}-{cut}.parquet"
            with ParquetStream(str(out), FLOWS_SCHEMA, row_group_rows=rows) as sink:
                sink.write(table.slice(0, cut))
                sink.write(table.slice(cut))
                sink.commit()
            assert plain(pq.read_table(out)).equals(plain(table))
            assert without_dictionary(out) & MAYBE_DISTINCT == plain_ones
            files.append(out.read_bytes())
        assert len(set(files)) == 1


@requires_corpus
def test_short_timeouts_and_options_stream_the_same(tmp_path):
    """Idle expiry inside the stream, port lists, VLAN keys, checksums and a filter."""
    options = [dict(idle_timeouts_s={"tcp": 1, "udp": 0.1, "icmp": 0.1, "other": 0.1}),
               dict(vlan_aware=True, verify_checksums=True),
               dict(server_ports=(frozenset({22}), frozenset({53})), community_id_seed=7),
               dict(filter_expr="tcp or udp")]
    names = ["zeek__wikipedia.pcap", "zeek__ssh__ssh.pcap", "zeek__rotation.pcap", "zeek__nmap-vsn.pcap",
             "zeek__pop3__pop3.pcap"]
    checked = 0
    for name in names:
        path = CAPTURES / name
        if not path.exists():
            continue
        for kw in options:
            want = pq.read_table(whole(path, tmp_path, **kw)[0])
            for batch_size in (5, 1 << 18):
                got = pq.read_table(streamed(path, tmp_path, batch_size=batch_size, **kw)[0])
                assert_same_table(got, want, f"{name} {kw} batch {batch_size}")
            want = segments_of(whole(path, tmp_path, name="ws.parquet", segments=True, **kw)[0])
            got = segments_of(streamed(path, tmp_path, batch_size=5, name="ss.parquet", segments=True, **kw)[0])
            assert_same_table(got, want, f"{name} {kw} segments")
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("wait_in_memory", [1 << 20, 100])
def test_synthetic_capture_same_rows_and_bytes_at_any_batch_size(tmp_path, monkeypatch, wait_in_memory):
    """A generated capture of many interleaved connections: rows equal the whole-capture path's, and the
    file's bytes do not depend on the batch size (row groups have a fixed length) nor on how many TCP engines
    share the connections (tables cut differently), also when flushes happen often, the watermark holds rows
    back, and (wait_in_memory 100) the rows held back go to run files."""
    import subprocess
    import sys
    from pathlib import Path
    capture = tmp_path / "synth.pcap"
    generate = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
    subprocess.run([sys.executable, str(generate), "--packets", "30000", "--seed", "3", "-o", str(capture)],
                   check=True, capture_output=True)
    monkeypatch.setattr(pipeline, "FLUSH_ROWS", 50)
    monkeypatch.setattr(pipeline, "WAIT_IN_MEMORY", wait_in_memory)
    if wait_in_memory == 100:     # and open connections through the spill file, in stages of up to 1024,
        monkeypatch.setattr(tcpflows, "MAX_IN_MEMORY", 50)     # and segments held back through theirs
        monkeypatch.setattr(segment_stream, "SEGMENTS_IN_MEMORY", 2000)
    segments_spilled = []
    real_segment_spill = SegmentStream._spill_if_needed

    def segment_spill_counted(self):
        real_segment_spill(self)
        segments_spilled.append(self.spilled_rows)
        if batch_size == 1:     # batches of a packet join the newest batch held up to JOIN_ROWS rows
            assert len(self.chunks) <= sum(c.size for c in self.chunks) // segment_stream.JOIN_ROWS + 2
        if wait_in_memory == 100:
            # in memory: the limit, the batch being written and the newest one
            in_batches, _ = self.rows_in_memory()
            assert in_batches <= 2000 + 2 * batch_size
    monkeypatch.setattr(SegmentStream, "_spill_if_needed", segment_spill_counted)
    runs, spilled = [], []
    real_run = pipeline._RunFile
    real_spill = tcpflows.TcpFlows._spill_if_needed

    def spill_counted(self):
        real_spill(self)
        spilled.append(self.spill_bytes // tcpflows._tcpflows.FLOW_STATE_BYTES)
    monkeypatch.setattr(tcpflows.TcpFlows, "_spill_if_needed", spill_counted)

    def counted(tables):
        run = real_run(tables)
        runs.append(run.rows)
        return run
    monkeypatch.setattr(pipeline, "_RunFile", counted)
    w = whole(capture, tmp_path, segments=True, idle_timeouts_s={"tcp": 0.05})[0]
    want, want_segments = pq.read_table(w), segments_of(w)
    files = []
    # batch size 1 flushes after every packet: with run files that is slow, and 97 covers small batches
    # two or three TCP engines once 20 connections are open (mid-stream, while spilling with the limit of 50)
    monkeypatch.setattr(tcpflows, "SPLIT_AT", 20)
    splits = []
    real_split = tcpflows.PartedTcpFlows._split

    def split_counted(self):
        splits.append(self.open_count)
        real_split(self)
    monkeypatch.setattr(tcpflows.PartedTcpFlows, "_split", split_counted)
    runs_of = ((1, 1), (333, 1), (1 << 18, 1), (333, 2), (1 << 18, 3)) if wait_in_memory > 100 else \
        ((97, 1), (1 << 18, 1), (97, 2), (1 << 18, 3))
    for batch_size, tcp_parts in runs_of:
        out, _ = streamed(capture, tmp_path, batch_size=batch_size, row_group_rows=500, segments=True,
                          name=f"s{batch_size}-{tcp_parts}.parquet", idle_timeouts_s={"tcp": 0.05},
                          tcp_parts=tcp_parts)
        got = pq.read_table(out)
        assert_same_table(got, want)
        assert_same_table(segments_of(out), want_segments)
        files.append((out.read_bytes(), out.with_name(f"seg-{out.name}").read_bytes()))
    assert len(set(files)) == 1
    assert splits and min(splits) > 20     # the parted runs of several batches split, connections open
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-want.num_rows // 500)
    assert want.num_rows > 1000
    if wait_in_memory == 100:     # rows really waited in run files (several per batch size)
        assert len(runs) >= 2 and sum(runs) > 1000
        assert spilled and max(spilled) > 1024
        assert max(segments_spilled) > 1000
    else:
        assert not runs and not any(segments_spilled)
    # the split by idle timeout and the reuse rules were exercised, not only end-of-capture finishing
    assert len(np.unique(want.column("history").to_numpy(zero_copy_only=False))) > 10


def sequential_connections(path, n: int, gap_ns: int, arp: bool = False, long_lived: bool = False,
                           ports: int = 40000) -> None:
    """n short TCP connections one after the other (handshake, a request, FIN from each side), gap_ns apart,
    on `ports` client ports in turn (a new SYN on a port finishes the connection before it); with arp, an ARP request halfway between them (network time moves on and
    no connection is open); with long_lived, one more connection open from the first packet to the last,
    sending a segment now and then."""
    client, server = "10.0.0.1", "10.0.0.2"
    packets, t = [], 10**18

    def ssh(seq, ack, flags, payload=b""):
        return synth.ethernet_frame(synth.ip_packet(client, server, synth.PROTO_TCP, synth.tcp_segment(
            client, server, 1022, 22, seq, ack, flags, payload=payload)))
    if long_lived:
        packets.append(synth.Packet(t - 1000, ssh(100, 0, synth.SYN)))
    for k in range(n):
        port, c, s = 20000 + k % ports, 1000 * k, 5000 * k + 7

        def seg(src, dst, sp, dp, seq, ack, flags, payload=b""):
            return synth.ethernet_frame(synth.ip_packet(src, dst, synth.PROTO_TCP, synth.tcp_segment(
                src, dst, sp, dp, seq, ack, flags, payload=payload)))
        steps = [seg(client, server, port, 80, c, 0, synth.SYN),
                 seg(server, client, 80, port, s, c + 1, synth.SYN | synth.ACK),
                 seg(client, server, port, 80, c + 1, s + 1, synth.ACK),
                 seg(client, server, port, 80, c + 1, s + 1, synth.ACK | synth.PSH, b"GET"),
                 seg(client, server, port, 80, c + 4, s + 1, synth.FIN | synth.ACK),
                 seg(server, client, 80, port, s + 1, c + 5, synth.FIN | synth.ACK),
                 seg(client, server, port, 80, c + 5, s + 2, synth.ACK)]
        packets += [synth.Packet(t + i * 1000, frame) for i, frame in enumerate(steps)]
        if arp:
            packets.append(synth.Packet(t + gap_ns // 2, synth.ethernet_frame(
                synth.arp_request(synth.MAC_CLIENT, client, server), synth.ETH_ARP)))
        if long_lived and k % 10 == 0:
            packets.append(synth.Packet(t + gap_ns // 2, ssh(101 + k, 0, synth.ACK | synth.PSH, b"x")))
        t += gap_ns
    if long_lived:
        packets.append(synth.Packet(t, ssh(101 + n, 0, synth.FIN | synth.ACK)))
    synth.write_pcap(str(path), packets, synth.LINKTYPE_ETHERNET, nanosecond=True)


@pytest.mark.parametrize("arp, batch_size", [(False, 700), (True, 101)])
def test_segments_wait_for_their_connection_not_for_the_end(tmp_path, monkeypatch, arp, batch_size):
    """Streamed segments are held until their connection has finished (here 2 ms of network time after its
    last packet; they start 10 ms apart), so a capture of many short connections is written as it is read,
    not kept whole. With an ARP packet between connections, none is open after it: the flows writer's
    watermark is then past every frame, and segments read after it must still wait for their connection
    (the fuzzer found that)."""
    capture = tmp_path / "seq.pcap"
    sequential_connections(capture, 3000, 10**7, arp)
    monkeypatch.setattr(pipeline, "FLUSH_ROWS", 50)
    held = []
    real_write_below = SegmentStream.write_below

    def held_counted(self, limit):
        held.append(self.rows_held)
        real_write_below(self, limit)
    monkeypatch.setattr(SegmentStream, "write_below", held_counted)
    w = whole(capture, tmp_path, segments=True, idle_timeouts_s={"tcp": 0.002})[0]
    out, _ = streamed(capture, tmp_path, batch_size=batch_size, segments=True, idle_timeouts_s={"tcp": 0.002})
    assert_same_table(pq.read_table(out), pq.read_table(w))
    want = segments_of(w)
    assert_same_table(segments_of(out), want)
    assert want.num_rows == 21000
    assert set(want.column("handshake_step").to_pylist()) == {1, 2, 3, None}
    # a batch and the connections of the FLUSH_ROWS flows the writer waits for, not 21,000
    assert 0 < max(held) <= batch_size + 7 * 60


def count_segments_held(monkeypatch) -> list:
    """(rows spilled so far, rows in memory in batches, in patches, rows held, batches held, most bounds
    kept by a spilled run) after every spill check and every range of connections analysed from the runs."""
    seen = []
    real_spill, real_analyse = SegmentStream._spill_if_needed, SegmentStream._analyse_below

    def counts(self):
        return (self.spilled_rows, *self.rows_in_memory(), self.rows_held, len(self.chunks),
                max((len(run.bounds) for _, _, run in self.runs), default=0))

    def spill_counted(self):
        real_spill(self)
        seen.append(counts(self))

    def analyse_counted(self, upto):
        real_analyse(self, upto)
        seen.append(counts(self))
    monkeypatch.setattr(SegmentStream, "_spill_if_needed", spill_counted)
    monkeypatch.setattr(SegmentStream, "_analyse_below", analyse_counted)
    return seen


def stream_segments_spilled(capture, tmp_path, monkeypatch) -> tuple:
    """The capture's segments streamed with 1,000 in memory (batches of 500), against process(): the
    segments table, and the most (rows spilled so far, rows in memory in batches, in patches, rows held)
    seen along the way."""
    monkeypatch.setattr(pipeline, "FLUSH_ROWS", 50)
    monkeypatch.setattr(segment_stream, "SEGMENTS_IN_MEMORY", 1000)
    seen = count_segments_held(monkeypatch)
    w = whole(capture, tmp_path, segments=True)[0]
    out, _ = streamed(capture, tmp_path, batch_size=500, segments=True)
    assert_same_table(pq.read_table(out), pq.read_table(w))
    want = segments_of(w)
    assert_same_table(segments_of(out), want)
    return want, tuple(map(max, zip(*seen)))[:4], tuple(map(max, zip(*seen)))[4:]


def test_segments_behind_a_long_connection_wait_in_a_file(tmp_path, monkeypatch):
    """One connection open from the first packet to the last holds back every segment read after its first
    (rows go out in frame order): beyond SEGMENTS_IN_MEMORY they wait in a temporary file, and the tables
    are the same. The short connections use 20 client ports in turn, so each finishes when its port is used
    again (Zeek's idle timeout, 300 s, keeps the long one open)."""
    capture = tmp_path / "long.pcap"
    sequential_connections(capture, 3000, 10**7, long_lived=True, ports=20)
    want, (spilled, in_batches, in_patches, held), (batches, bounds) = \
        stream_segments_spilled(capture, tmp_path, monkeypatch)
    assert want.num_rows == 21000 + 302
    assert held > 20000                 # everything waited for the long connection ...
    assert spilled > 19000              # ... most of it in the file
    assert in_batches <= 1000 + 2 * 500
    # analysed from the file when written: a batch's rows, about to be written, and those waiting for a
    # later batch: the long connection's (but those still in memory), and the short connections' open
    # across the batch's end
    assert 200 < in_patches <= 500 + 302 + 20 * 7
    # the long connection keeps the cursor at its first frame, so each run could end a range at any of the
    # batches held; it keeps only the first bound and those where its rows move on: one per connection it
    # holds (the long one and at most the 20 short ones open), not one per batch
    assert batches > 40 and bounds <= 1 + 21


def test_segments_of_connections_open_to_the_end_wait_in_a_file(tmp_path, monkeypatch):
    """Every connection open until the capture ends (no port reused, Zeek's idle timeout of 300 s not
    reached), as in a capture shorter than 5 minutes: their segments cannot be analysed before the end, yet
    the memory held stays within SEGMENTS_IN_MEMORY and a batch or two, not the capture's size. The rows
    beyond wait in the temporary file by connection, and are analysed and written a batch at a time."""
    capture = tmp_path / "open.pcap"
    sequential_connections(capture, 3000, 10**6, ports=40000)
    want, (spilled, in_batches, in_patches, held), _ = stream_segments_spilled(capture, tmp_path, monkeypatch)
    assert want.num_rows == 21000
    assert set(want.column("handshake_step").to_pylist()) == {1, 2, 3, None}
    assert held >= 21000 - 500          # nothing could be written before the end ...
    assert spilled > 19000              # ... and most of it waited in the file
    assert in_batches <= 1000 + 2 * 500
    assert in_patches <= 500 + 7        # a batch about to be written, and a connection across its end


def test_stream_failure_leaves_no_file(tmp_path):
    out = tmp_path / "never.parquet"
    with pytest.raises(RuntimeError):
        with ParquetStream(str(out), FLOWS_SCHEMA) as sink:
            sink.write(process(str(CAPTURES / "zeek__wikipedia.pcap")).flows if CAPTURES.is_dir()
                       else FLOWS_SCHEMA.empty_table())
            raise RuntimeError("crash before commit")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["synthetic", "zeek__wikipedia.pcap"])
def test_finished_rows_become_the_whole_capture_paths_columns(tmp_path, monkeypatch, source):
    """finished_table (the streamed rows: packed TCP records and datagram flows merged by first frame, turned
    into Arrow columns at once) gives, for every set of rows the stream hands it, the table and counts of the
    whole-capture conversion (rows_to_flows, combine_flows, flows_table, summary_counts): TCP-only columns
    null on datagram rows, the rows interleaved in first-frame order."""
    import subprocess
    import sys
    from pathlib import Path

    from fastflow.community_id import community_id
    from fastflow.schema import flows_table
    from fastflow.summary import combine_flows, summary_counts
    if source == "synthetic":
        path = tmp_path / "synth.pcap"
        generate = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
        subprocess.run([sys.executable, str(generate), "--packets", "20000", "--seed", "5", "-o", str(path)],
                       check=True, capture_output=True)
    else:
        path = CAPTURES / source
        if not path.exists():
            pytest.skip(f"{path} is not there (../shared/corpus)")
    real = pipeline.finished_table
    mixed = []

    def checked(tcp, datagram, seed, source_name):
        table, counts = real(tcp, datagram, seed, source_name)
        flows, _ = combine_flows(tcpflows.rows_to_flows(*tcp), datagram)
        flows["community_id"] = community_id(flows["orig_addr"], flows["resp_addr"], flows["ip_version"],
                                             flows["ip_proto"], flows["orig_p"], flows["resp_p"], seed=seed)
        assert_same_table(table, flows_table(flows, source_name))
        assert counts == summary_counts(flows)
        first = np.concatenate([tcp[0]["first_frame"], datagram["first_frame"]])
        if len(tcp[0]) and len(datagram["first_frame"]) and np.any(first[1:] < first[:-1]):
            mixed.append(len(first))
        return table, counts
    monkeypatch.setattr(pipeline, "finished_table", checked)
    monkeypatch.setattr(pipeline, "FLUSH_ROWS", 40)
    result = stream_flows(str(path), lambda table: None, batch_size=1000, community_id_seed=9)
    assert result.stats["counts"]["by_proto"]["tcp"] and sum(result.stats["counts"]["by_proto"].values()) > \
        result.stats["counts"]["by_proto"]["tcp"]
    assert mixed, "no set of rows interleaved TCP and datagram flows"


def _batch_rows_by_numpy(status, pflags, ts, previous, keep=None):
    """What pipeline._finished computed with numpy before _decode.batch_rows: the reference it must equal."""
    now = np.maximum.accumulate(ts) if ts.size else ts.copy()
    if ts.size:
        np.maximum(now, previous, out=now)
        previous = int(now[-1])
    valid = (pflags & PFlag.BAD_IP_CHECKSUM) == 0
    bad = int(valid.size - np.count_nonzero(valid))
    if keep is not None:
        valid &= keep
    tcp = np.flatnonzero((status == Status.TCP) & valid)
    datagram = np.flatnonzero(np.isin(status, (Status.UDP, Status.ICMP, Status.ICMP6, Status.OTHER_IP)) & valid)
    return now, previous, tcp, datagram, bad


@pytest.mark.parametrize("seed", range(6))
def test_batch_rows_is_what_numpy_gives(seed):
    """_decode.batch_rows (network time, the TCP and datagram rows of a batch, bad IP checksums, in one pass)
    against the numpy it replaced, on batches of every status and flag, timestamps that go back, a network
    time carried in from before, and a part's rows kept or not."""
    from fastflow import _decode
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 5000))
    status = rng.integers(0, max(Status) + 1, n).astype(np.uint8)
    pflags = rng.integers(0, 128, n).astype(np.uint8)
    ts = rng.integers(-10**6, 10**6, n).astype(np.int64) + np.arange(n, dtype=np.int64) * 100
    previous = int(rng.choice([np.iinfo(np.int64).min, 0, 10**8]))
    for keep in (None, rng.random(n) < 0.5):
        got = _decode.batch_rows(status, pflags, ts, previous, None if keep is None else keep.view(np.uint8))
        want = _batch_rows_by_numpy(status, pflags, ts, previous, keep)
        assert np.array_equal(got[0], want[0]) and got[1] == want[1] and got[4] == want[4]
        for g, w in zip(got[2:4], want[2:4]):
            assert g.dtype == np.int64 and np.array_equal(g, w)


@requires_corpus
@pytest.mark.parametrize("name", ["derived__two-sections.pcapng", "zeek__mixed-vlan-mpls.pcap",
                                  "zeek__cisco-fabric-path.pcap", "zeek__nmap-vsn.pcap"])
def test_batch_rows_on_decoded_captures(name):
    """The same on real decoded packets, IP checksums verified: wrong ones (the first two captures), and
    TCP, UDP, other IP and non-IP rows (the last two)."""
    from fastflow import _decode
    from fastflow.decode import CaptureReader
    from fastflow.source import Source
    with Source(str(CAPTURES / name)) as source:
        batches = list(CaptureReader(source, verify_checksums=True, batch_size=16).batches())
    previous = np.iinfo(np.int64).min
    for batch in batches:
        got = _decode.batch_rows(batch["status"], batch["pflags"], batch["ts"], previous)
        want = _batch_rows_by_numpy(batch["status"], batch["pflags"], batch["ts"], previous)
        assert np.array_equal(got[0], want[0]) and got[1] == want[1] and got[4] == want[4]
        for g, w in zip(got[2:4], want[2:4]):
            assert np.array_equal(g, w)
        previous = got[1]
