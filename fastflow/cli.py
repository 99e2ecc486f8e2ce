"""Command line: parse arguments, call the library, map exceptions to exit codes. Nothing else.

Exit codes: 0 ok; 1 finished, but the input was damaged (every readable packet was processed);
2 usage error or unreadable input; 130 interrupted (SIGINT); 143 terminated (SIGTERM)."""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager

from . import __version__
from .errors import FastflowError, OutputError, UsageError

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, our prefix, exit 2 (argparse would print the usage block)
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Terminated(BaseException):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("process", help="analyse the connections of a capture (TCP in depth, UDP, ICMP, other IP) into Parquet")
    p.add_argument("capture", help="pcap or pcapng file, optionally gzip/zstd/xz/bz2 compressed; - for stdin")
    p.add_argument("-o", "--output", required=True, help="flows Parquet file to write")
    p.add_argument("--segments", metavar="PATH", help="also write one row per TCP segment to PATH")
    _analysis_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something is wrong")
    p.add_argument("--summary-json", metavar="PATH", help="also write the run's counts as JSON")

    b = sub.add_parser("batch", help="process an archive of rotated captures into a Parquet dataset, "
                                     "incrementally (for cron)")
    b.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="capture files, folders (walked recursively) or glob patterns")
    b.add_argument("-o", "--output", required=True, metavar="DATASET", help="the dataset folder")
    b.add_argument("--files-from", metavar="FILE", help="also the paths listed in FILE, one a line (- for stdin)")
    b.add_argument("-j", "--jobs", type=int, metavar="N", help="worker processes (default: the number of cores)")
    b.add_argument("--stream-pattern", metavar="REGEX",
                   help="name each file's capture stream by this regex's first group (or whole match) on its "
                        "path, instead of by its folder")
    b.add_argument("--min-age", type=float, default=60.0, metavar="SECONDS",
                   help="leave files modified less than this long ago for the next run (default 60)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the work on a dask.distributed cluster (tcp://host:8786); the inputs and DATASET "
                        "must be paths its workers share (pip install 'fastflow[dask]')")
    b.add_argument("--segments", action="store_true",
                   help="also write one row per TCP segment, to DATASET/segments (a dataset is made with or "
                        "without them)")
    b.add_argument("--flush", action="store_true",
                   help="write the connections still open at the end as they are, instead of keeping them "
                        "for the next run")
    _analysis_options(b)
    b.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something is wrong")
    b.add_argument("--summary-json", metavar="PATH", help="also write the run's counts, durations and failures "
                                                           "as JSON")

    s = sub.add_parser("show", help="print a flows table, or one connection's segments")
    s.add_argument("file", help="a flows or segments Parquet file written by fastflow")
    s.add_argument("--conn", type=int, metavar="ID", help="list this connection's segments, tcpdump style")
    s.add_argument("--limit", type=int, default=50, help="rows to print (default 50; 0 for all)")
    return parser


def _analysis_options(p: argparse.ArgumentParser) -> None:
    """The options that decide the analysis, the same for process and batch."""
    p.add_argument("--filter", metavar="EXPR", help="libpcap filter expression, as tcpdump takes it")
    p.add_argument("--idle-timeout", metavar="[PROTO=]SECONDS[,...]",
                   help="silence after which a new connection starts on the same key, per protocol (tcp, udp, "
                        "icmp, other; a bare number sets tcp); default tcp=300,udp=60,icmp=60,other=60 as Zeek")
    p.add_argument("--likely-server-ports", metavar="PORTS",
                   help="ports taken as servers when orienting connections, replacing Zeek's default list: "
                        "e.g. 22,80,443/tcp,53/udp,8000-8010 (a bare port or range means TCP and UDP)")
    p.add_argument("--vlan-aware", action="store_true",
                   help="key connections on the outermost VLAN id too (Zeek's vlan_fivetuple); by default, as "
                        "Zeek, the two directions of a connection may carry different tags")
    p.add_argument("--verify-checksums", action="store_true",
                   help="verify IPv4 header and TCP checksums as Zeek does without -C: drop packets with a bad "
                        "IPv4 header checksum, note bad TCP checksums as C/c in history (default: off, as zeek -C)")
    p.add_argument("--community-id-seed", type=int, default=0, metavar="N",
                   help="seed of the Community ID hash, 0-65535 (default 0)")
    p.add_argument("--compression", default="zstd",
                   choices=("zstd", "snappy", "gzip", "brotli", "lz4", "none"), help="Parquet compression")


def tune_process() -> None:
    """Settings for a process that runs fastflow and nothing else, made before numpy is imported.
    - numpy's OpenBLAS starts a thread per core that spins waiting for work; fastflow does no linear algebra.
    - glibc hands every block above 128 KB straight back to the kernel when it is freed (the threshold grows
      only as such blocks are freed), so each batch's arrays came back as freshly zeroed pages: page faults
      were a quarter of a run's CPU time. Blocks up to 32 MB (glibc's ceiling) now come from the heap, and up
      to 256 MB of free heap stays mapped. Measured in benchmarks/RESULTS.md.
    - glibc gives each thread that allocates an arena of its own (up to 8 per core), and memory freed in one is
      not reused by another: with the decoder, the engines and the Parquet writer in threads of their own,
      the scale input's peak RSS was about 935 MB against 885 MB with two arenas (one would be 965 MB).
    - pyarrow allocates from mimalloc by default, which does not reuse what glibc's heap holds free: at the
      end of a capture, the tables and the Parquet writer's buffers came on top of the memory the engines had
      just let go. With the system allocator the scale input's peak RSS is 75 MB lower.
    - numpy asks for transparent huge pages for every array of 4 MB or more (madvise), and the kernel then
      zeroes 2 MB at each first touch: on the scale input 5 % of a run's CPU time went to clearing pages,
      many of them only partly used before the array went. Without: system time 1.6-1.8 s -> 1.1-1.3 s on
      one core, the same peak RSS (benchmarks/RESULTS.md)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(-3, 32 << 20)       # M_MMAP_THRESHOLD
        mallopt(-1, 256 << 20)      # M_TRIM_THRESHOLD
        mallopt(-8, 2)              # M_ARENA_MAX


def tune_for_segments() -> None:
    """With --segments: glibc maps blocks above 4 MB on their own (not 32 MB, tune_process), so that the
    segment stream's many mid-size arrays (spilled runs read back, sorted, analysed) leave no holes in the
    heap when they go. On the scale input of benchmarks/RESULTS.md peak RSS was about 50 MB lower, at
    no cost there; on the 1 M-packet inputs within noise."""
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(-3, 4 << 20)        # M_MMAP_THRESHOLD


def _mallopt():
    """glibc's mallopt on Linux (musl has one too, which ignores these settings), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    tune_process()
    left = "no output written"
    try:
        args = build_parser().parse_args(argv)
        if args.command == "batch":
            left = "the dataset keeps the streams this run finished; the next run does the rest"
        if args.command == "process":
            return _process(args)
        if args.command == "batch":
            return _batch(args)
        from .show import show
        show(args.file, conn=args.conn, limit=args.limit, out=sys.stdout)
        return EXIT_OK
    except FastflowError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"Interrupted: {left}", file=sys.stderr)
        return EXIT_SIGINT
    except _Terminated:
        print(f"Terminated: {left}", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        return EXIT_OK
    except MemoryError:
        # the outputs went the way of any error: temporary files removed, nothing renamed into place
        print(f"Error: out of memory; {left}. Give fastflow more memory, or set TMPDIR to a folder with room for "
              "what it moves to disk", file=sys.stderr)
        return EXIT_USAGE


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while numpy, pyarrow and fastflow load: they make tens of
    thousands of objects that live as long as the process, and the collections that walked them cost 25 ms, a
    tenth of a small capture's run. They are frozen after (gc.freeze), so later collections skip them too."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _process(args) -> int:
    with _collector_paused():
        from .pipeline import stream_flows
        from .schema import FLOWS_SCHEMA, SEGMENTS_SCHEMA
        from .write import ParquetStream, check_output

    outputs = [args.output] + ([args.segments] if args.segments else [])
    if args.segments and args.segments == args.output:
        raise UsageError("--segments and -o name the same file")
    for path in outputs:
        check_output(path, args.overwrite, [args.capture])
    progress = _Progress(sys.stderr) if (not args.quiet and sys.stderr.isatty()) else None
    options = dict(_analysis_settings(args), progress=progress)
    # written as connections finish, memory bounded by the open ones (and with --segments, their segments)
    with ExitStack() as stack:
        out = stack.enter_context(ParquetStream(args.output, FLOWS_SCHEMA, compression=args.compression))
        segments = None
        if args.segments:
            tune_for_segments()
            segments = stack.enter_context(ParquetStream(args.segments, SEGMENTS_SCHEMA,
                                                         compression=args.compression))
        result = stream_flows(args.capture, out.write, segments_sink=segments.write if segments else None,
                               **options)
        if progress:
            progress.done()
        started = time.perf_counter()
        metadata = result.metadata()
        if segments is not None:
            metadata[b"segments_file"] = json.dumps(os.path.relpath(
                os.path.abspath(args.segments), os.path.dirname(os.path.abspath(args.output)))).encode()
            segments.commit(metadata)
        out.commit(metadata)
        result.stats["seconds"]["write"] = time.perf_counter() - started
        result.stats["seconds"]["total"] += result.stats["seconds"]["write"]
    if args.summary_json:
        _write_json(args.summary_json, result.stats)
    if result.damage is not None:
        packets = result.stats["counts"]["packets"]
        done = f"the {packets} packets before it" if result.damage.stops else f"all {packets} packets"
        print(f"Warning: {result.damage.describe(args.capture)}; {done} were processed", file=sys.stderr)
    if not args.quiet:
        print(_summary(result.stats, outputs), file=sys.stderr)
    return EXIT_DAMAGED if result.damage is not None else EXIT_OK


def _analysis_settings(args) -> dict:
    """The analysis options as pipeline keyword arguments; UsageError for a bad one."""
    from .server_ports import parse_ports

    timeouts = _parse_timeouts(args.idle_timeout) if args.idle_timeout else None
    if not 0 <= args.community_id_seed <= 0xFFFF:
        raise UsageError("--community-id-seed must be between 0 and 65535")
    server_ports = None
    if args.likely_server_ports is not None:
        try:
            server_ports = parse_ports(args.likely_server_ports)
        except ValueError as exc:
            raise UsageError(f"--likely-server-ports: {exc}") from None
    return dict(filter_expr=args.filter, idle_timeouts_s=timeouts, community_id_seed=args.community_id_seed,
                vlan_aware=args.vlan_aware, server_ports=server_ports, verify_checksums=args.verify_checksums)


def _batch(args) -> int:
    with _collector_paused():
        from .batch import Settings, run

    sources = list(args.sources)
    if args.files_from:
        try:
            if args.files_from == "-":
                lines = sys.stdin.read().splitlines()
            else:
                with open(args.files_from) as f:
                    lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"--files-from {args.files_from}: {exc.strerror or exc}") from None
        sources += [line.strip() for line in lines if line.strip()]
    if not sources:
        raise UsageError("batch: no SOURCE given (files, folders, patterns or --files-from)")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("-j must be at least 1")
    if args.min_age < 0:
        raise UsageError("--min-age must not be negative")
    settings = Settings(**_analysis_settings(args), compression=args.compression, segments=args.segments)
    progress = _Progress(sys.stderr) if (not args.quiet and sys.stderr.isatty()) else None
    summary = run(sources, args.output, settings=settings, jobs=args.jobs, stream_pattern=args.stream_pattern,
                  min_age_s=args.min_age, flush=args.flush, scheduler=args.scheduler, progress=progress)
    if progress:
        progress.done()
    if args.summary_json:
        _write_json(args.summary_json, summary)
    for failure in summary["failed"]:
        print(f"Error: {failure['error']}", file=sys.stderr)
    for group in summary["merged"]:
        if not args.quiet:
            print(f"Note: {len(group)} files overlap in time and were merged in time order: "
                  + ", ".join(group), file=sys.stderr)
    for damaged in summary["damaged"]:
        done = "the packets before it were processed" if damaged["stops"] else "all its packets were processed"
        print(f"Warning: {damaged['error']}; {done}", file=sys.stderr)
    if not args.quiet:
        print(f"{summary['dataset']}: {summary['processed']} files processed ({summary['unchanged']} unchanged, "
              f"{summary['young']} too young, {len(summary['failed'])} failed, {len(summary['damaged'])} damaged), "
              f"{summary['packets']} packets, {summary['flows_written']} connections written, "
              + (f"{summary['segments_written']} segments written, " if args.segments else "") +
              f"{summary['open_carried']} open carried to the next run, {summary['seconds']:.2f} s", file=sys.stderr)
    return EXIT_DAMAGED if summary["failed"] or summary["damaged"] else EXIT_OK


def _write_json(path: str, data: dict) -> None:
    """The summary JSON, atomically (a monitor reading it never sees half of one)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _parse_timeouts(text: str) -> dict:
    """'300' or 'tcp=300,udp=30' -> {proto: seconds}; UsageError on anything else."""
    out = {}
    for item in text.split(","):
        proto, sep, value = item.strip().rpartition("=")
        proto = proto.strip().lower() if sep else "tcp"
        if proto not in ("tcp", "udp", "icmp", "other"):
            raise UsageError(f"--idle-timeout: unknown protocol {proto!r} (tcp, udp, icmp or other)")
        try:
            seconds = float(value)
        except ValueError:
            raise UsageError(f"--idle-timeout: {value.strip()!r} is not a number of seconds") from None
        if not seconds > 0 or seconds == float("inf"):
            raise UsageError("--idle-timeout must be positive")
        out[proto] = seconds
    return out


def _summary(stats: dict, outputs: list[str]) -> str:
    c = stats["counts"]
    secs = stats["seconds"]["total"]
    skipped = {k: v for k, v in c["by_status"].items() if k != "tcp" and v}
    lines = [
        f"{stats['source']}: {c['packets']} packets ({c['format']}"
        + (f", {c['compression']}" if c["compression"] else "") + f"), {c['tcp_segments']} TCP segments, "
        f"{c['connections']} connections ("
        + (", ".join(f"{k} {v}" for k, v in c["by_proto"].items() if v) or "none") + ")",
        "  handshake: " + (", ".join(f"{k} {v}" for k, v in c["handshake"].items() if v) or "-"),
        "  close:     " + (", ".join(f"{k} {v}" for k, v in c["close"].items() if v) or "-"),
        "  not TCP:   " + (", ".join(f"{k} {v}" for k, v in skipped.items()) or "none")
        + (f"; filtered out {c['filtered']}" if c["filtered"] else ""),
        f"  time:      {secs:.3f} s, {c['packets'] / secs if secs else 0:,.0f} packets/s",
        "  wrote:     " + ", ".join(outputs),
    ]
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar over input bytes, on a terminal only."""

    def __init__(self, stream):
        self.stream = stream
        self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        if total:
            width = 30
            filled = int(width * min(done / total, 1.0))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done / total:6.1%} "
                              f"{done / 1e6:,.0f} MB")
        else:
            self.stream.write(f"\r{done / 1e6:,.0f} MB read")
        self.stream.flush()

    def done(self) -> None:
        if self.last:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


if __name__ == "__main__":
    sys.exit(main())
