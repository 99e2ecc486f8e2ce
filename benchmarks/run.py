"""Run the fastflow benchmark suite and write benchmarks/RESULTS.md.

    python3 benchmarks/run.py [--packets 2000000] [--runs 3] [--quick] [--with-slow] [--input FILE ...]
                              [--real-packets 3080000 | --no-real] [--scale-packets 26400000] [--no-install]

Inputs:
- two seeded synthetic captures built by benchmarks/generate.py into benchmarks/data/ (snaplen 128 and full
  snaplen; reused when a file with the same parameters and the same generator already exists);
- a real-traffic capture made on this machine: nginx (python's http.server if nginx is missing) serving a
  4 KiB file on 127.0.0.1, wrk fetching it without keep-alive (`-H 'Connection: close'`), tcpdump -i lo
  writing the first --real-packets packets of that port (default snaplen). That is many short connections
  whose client ports are reused within seconds, the pattern of the speed issue, whose targets for it
  RESULTS.md checks (5 M packets/s on one core, 5x argus, 30x nfstream). It is cached in
  benchmarks/data/ keyed by its parameters, and skipped with the reason in RESULTS.md where it cannot be made;
- any --input files (e.g. a real capture from the corpus);
- with --scale-packets N, a third synthetic capture of N packets (snaplen 128, same seed; e.g. 26400000, the
  size the speed issue's targets are set for). On it only fastflow process (flows, 1 and 2 cores), argus -r F
  -w /dev/null and the startup floor run (the other peers and --segments are far too slow or too large there;
  they are measured on the other inputs), with no stage runs, and RESULTS.md says whether the issue's targets
  are met: >= 5 M packets/s end to end on 1 core, >= 1.6 x that on 2 cores, peak RSS <= 1 GiB.

Tools that are missing (tcpdump, tshark, tcptrace, argus, ra, nginx, wrk from Debian; dpkt and nfstream from
PyPI into the running virtual environment) are installed first when the suite runs as root, unless
--no-install; what still cannot be had is reported "not installed" with the reason.

For every input, each tool runs as a child process, --runs times, round-robin (tool A run 1, tool B run 1,
..., tool A run 2, ...) so that load changes on a shared machine hit every tool alike; the file is read
once beforehand so that every tool starts from the page cache. Wall time is the median; CPU time is the
child's user + system time (median); peak RSS is the child's own ru_maxrss from os.wait4 (the largest over
the runs). Every command has a timeout; a tool that times out or fails is reported as such and not run
again on that input. After the timed runs, the peers that print one line per connection run once more,
untimed, with stdout kept, to count the connections they report.

Tools: fastflow process (flows, the streaming path; flows + --segments, the whole-capture path), each pinned to 1 core (`taskset -c 0`) and to 2 cores
(`taskset -c 0,1`); the interpreter + import time of fastflow alone (the fixed cost in every fastflow
figure); and the peers, unpinned: tshark conv,tcp, tcpdump -nn -S, a dpkt loop that decodes every packet's
TCP header, tcptrace, argus (alone, and followed by ra printing its records), nfstream's
NFStreamer(source=F).to_pandas(), and tshark -T fields -e tcp.stream (slow: only with --with-slow or for
inputs under 300k packets). The ratio columns are tool time / fastflow (flows) time on 1 and on 2 cores,
on the same file in the same run.

Stages, in a child process after every round, medians over --runs, with the child's peak RSS (ru_maxrss):
- the flows path, what `fastflow process F -o flows.parquet` runs: fastflow.pipeline.stream_flows(F,
  ParquetStream(out, FLOWS_SCHEMA).write, overlap=...), its Result.stats["seconds"] (decode = read + decode
  and connections = the streaming engines, each timed in its own thread when overlap=True, alongside
  tables; tables = Arrow tables of finished flows + ParquetStream.write, in the main thread, which hands
  whole row groups to the writer's thread; total), plus ParquetStream.commit() timed as write; overlap=True
  on 1 core and on 2 cores, and overlap=False on 2 cores (what the decoder's and engines' threads buy);
- the --segments path: the whole-capture fastflow.process(F, want_segments=True) on 1 and 2 cores, its
  Result.stats["seconds"] (decode; connections = connections, Zeek state, handshake/teardown tags, UDP/ICMP
  flows, Community IDs; tables), plus pyarrow.parquet.write_table of result.flows and result.segments.
The first, unpinned run of the flows path on each input counts its packets and connections.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "out")
FULL_SNAPLEN = 262144
SLOW_LIMIT = 300_000  # the slow peers run by default only below this many packets

# Executables the suite uses -> the Debian package that provides each.
DEBIAN_PACKAGES = {"tcpdump": "tcpdump", "tshark": "tshark", "tcptrace": "tcptrace", "argus": "argus-server",
                   "ra": "argus-client", "nginx": "nginx", "wrk": "wrk"}
# Python modules of the peers -> PyPI name; benchmark-only, never project dependencies.
PYPI_PACKAGES = {"dpkt": "dpkt", "nfstream": "nfstream"}

# The real capture. A 4 KiB page gives about 520 bytes per packet, close to the 1.68 GB / 3.08 M.
REAL_BODY_BYTES = 4096
REAL_WRK_THREADS = 1
REAL_WRK_CONNECTIONS = 16
REAL_PORT = 18080  # preferred; another free port is taken if it is busy (the port is not part of the key)
REAL_RECIPE = 1  # bump when the way the capture is made changes, so that cached captures are remade
NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    server {{ listen 127.0.0.1:{port}; root {work}/www; location / {{ }} }}
}}
"""

DPKT_LOOP = r"""
import sys, dpkt
tcp_count = sport_sum = 0
with open(sys.argv[1], "rb") as f:
    for ts, buf in dpkt.pcap.UniversalReader(f):
        try:
            eth = dpkt.ethernet.Ethernet(buf)  # strips 802.1Q tags
        except dpkt.UnpackError:
            continue
        ip = eth.data
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP):
            tcp = ip.data
            tcp_count += 1
            sport_sum += tcp.sport + tcp.flags + (tcp.seq & 1) + len(tcp.data)
print(tcp_count, sport_sum)
"""

NFSTREAM_LOOP = r"""
import sys, nfstream
print(len(nfstream.NFStreamer(source=sys.argv[1]).to_pandas()))
"""

STAGES = r"""
import json, os, sys, time
import fastflow
from fastflow import cli
cli.tune_process()  # as the command line sets itself up, before numpy and pyarrow are imported
path, out, mode, overlap, describe = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"
target = os.path.join(out, "flows.parquet")
if mode == "flows":  # what `fastflow process F -o flows.parquet` runs: the streaming path
    from fastflow.pipeline import stream_flows
    from fastflow.schema import FLOWS_SCHEMA
    from fastflow.write import ParquetStream
    with ParquetStream(target, FLOWS_SCHEMA) as sink:
        result = stream_flows(path, sink.write, overlap=overlap)
        seconds = dict(result.stats["seconds"])
        t0 = time.perf_counter()
        sink.commit(result.metadata())
        seconds["write"] = time.perf_counter() - t0
    flows = result.stats["counts"]["connections"]
else:  # what `fastflow process F -o flows.parquet --segments S` runs: the whole-capture path
    import pyarrow.parquet as pq
    result = fastflow.process(path, want_segments=True)
    seconds = dict(result.stats["seconds"])
    t0 = time.perf_counter()
    pq.write_table(result.flows, target, compression="zstd", row_group_size=1 << 20)
    seconds["write_flows"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq.write_table(result.segments, os.path.join(out, "segments.parquet"), compression="zstd",
                   row_group_size=1 << 20)
    seconds["write_segments"] = time.perf_counter() - t0
    flows = result.flows.num_rows
counts = result.stats["counts"]
facts = {"seconds": seconds, "packets": counts["packets"], "tcp_segments": counts["tcp_segments"], "flows": flows}
if describe:  # what the input holds: TCP connections and the port pairs they are spread over
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    table = pq.read_table(target, columns=["proto", "orig_h", "orig_p", "resp_h", "resp_p"])
    tcp = table.filter(pc.equal(table["proto"], "tcp"))
    facts["tcp_flows"] = tcp.num_rows
    facts["tcp_port_pairs"] = tcp.group_by(["orig_h", "orig_p", "resp_h", "resp_p"]).aggregate([]).num_rows
print(json.dumps(facts))
"""


# ---------------------------------------------------------------------------------------------------------
# installing what is missing


def python_has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def apt_get_install(packages: list[str], log) -> None:
    """apt-get install, with one apt-get update and a package-by-package retry if that fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian starts a freshly installed nginx on port 80 unless policy-rc.d says no; that server would
    # outlive the suite, so forbid service starts for the duration of the install.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        install = ["apt-get", "install", "-y", "--no-install-recommends"]
        if subprocess.run([*install, *packages], env=env, stdout=log, stderr=log).returncode == 0:
            return
        subprocess.run(["apt-get", "update"], env=env, stdout=log, stderr=log)
        for package in packages:
            subprocess.run([*install, package], env=env, stdout=log, stderr=log)
    finally:
        if made_policy:
            os.remove(policy)


def install_missing_tools(allowed: bool) -> dict[str, str]:
    """Install the missing executables and peer modules; returns {tool: why it is still missing}."""
    exes = [exe for exe in DEBIAN_PACKAGES if not shutil.which(exe)]
    modules = [module for module in PYPI_PACKAGES if not python_has(module)]
    apt_ok = os.geteuid() == 0 and shutil.which("apt-get") is not None
    in_venv = sys.prefix != sys.base_prefix  # never pip-install into the system's Python
    log_path = os.path.join(OUT, "install.log")
    if allowed and ((exes and apt_ok) or (modules and in_venv)):
        print(f"installing {', '.join(exes + modules)} (log: {_shown_path(log_path)}) ...", flush=True)
        with open(log_path, "a") as log:
            if exes and apt_ok:
                apt_get_install(sorted({DEBIAN_PACKAGES[exe] for exe in exes}), log)
            for module in modules if in_venv else []:
                subprocess.run([sys.executable, "-m", "pip", "install", PYPI_PACKAGES[module]], stdout=log,
                               stderr=log)
    why = {}
    for exe in exes:
        if not shutil.which(exe):
            how = f"apt-get install {DEBIAN_PACKAGES[exe]}"
            why[exe] = (f"not installed ({how} failed, see {_shown_path(log_path)})" if allowed and apt_ok else
                        f"not installed (--no-install; {how})" if not allowed else
                        f"not installed (needs root and apt-get: {how})")
    for module in modules:
        if not python_has(module):
            how = f"pip install {PYPI_PACKAGES[module]}"
            why[module] = (f"not installed ({how} failed, see {_shown_path(log_path)})" if allowed and in_venv else
                           f"not installed (--no-install; {how})" if not allowed else
                           f"not installed (not in a virtual environment: {how})")
    return why


# ---------------------------------------------------------------------------------------------------------
# inputs


def _file_sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def synthetic_input(packets: int, seed: int, snaplen: int) -> str:
    """Build (or reuse) a generated capture; the sidecar .json records its parameters and generator."""
    os.makedirs(DATA, exist_ok=True)
    name = f"synth-{packets}-seed{seed}-snap{snaplen}.pcap"
    path = os.path.join(DATA, name)
    params = {"packets": packets, "seed": seed, "snaplen": snaplen,
              "generator": _file_sha(os.path.join(HERE, "generate.py"))}
    sidecar = path + ".json"
    if os.path.exists(path) and os.path.exists(sidecar):
        with open(sidecar) as f:
            if json.load(f) == params:
                print(f"reusing {path}", flush=True)
                return path
    print(f"generating {path} ...", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(HERE, "generate.py"), "--packets", str(packets), "--seed",
                    str(seed), "--snaplen", str(snaplen), "-o", path], check=True)
    print(f"  {time.perf_counter() - started:.1f} s", flush=True)
    with open(sidecar, "w") as f:
        json.dump(params, f)
    return path


class CaptureError(Exception):
    """The real capture cannot be made here; the message says why."""


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            # as both servers do: the TIME_WAIT sockets a previous capture left on the port do not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise CaptureError("no free TCP port on 127.0.0.1")


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, seconds: float = 10.0) -> None:
    """Poll ready() until true; CaptureError if proc exits first or the time runs out."""
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None:
            raise CaptureError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise CaptureError(f"{what} not ready after {seconds:.0f} s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def file_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def start_http_server(server: str, work: str, port: int) -> subprocess.Popen:
    """nginx in the foreground as our own child (no master, no daemon: one pid to stop), or http.server."""
    www = os.path.join(work, "www")
    os.makedirs(www)
    os.makedirs(os.path.join(work, "tmp"))
    with open(os.path.join(www, "page.html"), "wb") as f:
        f.write(b"x" * REAL_BODY_BYTES)
    log = open(os.path.join(work, "server.log"), "wb")
    if server == "nginx":
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(work=work, port=port))
        cmd = ["nginx", "-c", conf, "-p", work, "-e", os.path.join(work, "error.log")]
    else:  # HTTP/1.0: one response per connection anyway
        cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", www]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    wait_until(lambda: port_open(port), proc, server)
    return proc


def start_tcpdump(path: str, packets: int, port: int, err_path: str) -> subprocess.Popen:
    """tcpdump -i lo writing the first `packets` packets of the server's port; returns once it listens."""
    err = open(err_path, "wb")
    # -B: a 64 MiB kernel buffer, so that bursts on a busy machine are not dropped
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-B", "65536", "-c", str(packets), "-w", path,
                             f"tcp port {port}"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    try:
        wait_until(lambda: "listening on" in file_text(err_path), proc, "tcpdump -i lo")
    except CaptureError as exc:
        raise CaptureError(f"{exc}: {file_text(err_path).strip()[-300:]}") from None
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def capture_loopback_traffic(path: str, packets: int, server: str) -> dict:
    """Serve, load and capture until tcpdump has `packets` packets; returns what happened. Every process
    started here is stopped before returning, whatever goes wrong."""
    # wrk stops by itself after this long even if the suite dies; 5k packets/s is far below either server
    limit = max(60, packets // 5000)
    with tempfile.TemporaryDirectory(prefix="fastflow-capture-", dir=OUT) as work:
        os.chmod(work, 0o755)  # nginx and tcpdump may read/write here after dropping privileges
        port = free_port(REAL_PORT)
        started_procs: list[tuple[subprocess.Popen, int]] = []
        try:
            started_procs.append((start_http_server(server, work, port), signal.SIGTERM))
            tcpdump_err = os.path.join(work, "tcpdump.err")
            tcpdump = start_tcpdump(path, packets, port, tcpdump_err)
            started_procs.append((tcpdump, signal.SIGTERM))
            wrk_out = os.path.join(work, "wrk.out")
            wrk_cmd = ["wrk", f"-t{REAL_WRK_THREADS}", f"-c{REAL_WRK_CONNECTIONS}", f"-d{limit}s",
                       "-H", "Connection: close", f"http://127.0.0.1:{port}/page.html"]
            with open(wrk_out, "wb") as out:
                wrk = subprocess.Popen(wrk_cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            started_procs.append((wrk, signal.SIGINT))  # SIGINT: wrk stops and prints its totals
            started = time.monotonic()
            while tcpdump.poll() is None:
                if wrk.poll() is not None:
                    raise CaptureError(f"wrk ended before tcpdump had {packets:,} packets: "
                                       f"{file_text(wrk_out).strip()[-300:]}")
                time.sleep(0.1)
            seconds = time.monotonic() - started
            if tcpdump.returncode != 0:
                raise CaptureError(f"tcpdump exited with {tcpdump.returncode}: "
                                   f"{file_text(tcpdump_err).strip()[-300:]}")
        finally:
            for proc, sig in reversed(started_procs):  # wrk, then tcpdump, then the server
                stop(proc, sig)
        wrk_text, tcpdump_text = file_text(wrk_out), file_text(tcpdump_err)
    requests = re.search(r"(\d+) requests in", wrk_text)
    dropped = re.search(r"(\d+) packets dropped by kernel", tcpdump_text)
    return {"port": port, "capture_seconds": round(seconds, 1),
            "wrk_requests": int(requests.group(1)) if requests else None,
            "dropped_by_kernel": int(dropped.group(1)) if dropped else None,
            "wrk_command": shlex.join(wrk_cmd[:-1] + ["http://127.0.0.1:PORT/page.html"]),
            "server_version": tool_version(server if server == "nginx" else "python http.server"),
            "wrk_version": tool_version("wrk"), "made": datetime.datetime.now().isoformat(timespec="seconds")}


def real_input(packets: int, missing: dict[str, str]) -> tuple[str | None, dict]:
    """(path, facts) of the cached or newly made real capture, or (None, {"skipped": why})."""
    os.makedirs(DATA, exist_ok=True)
    # nginx is preferred; python's http.server stands in where nginx cannot be had
    servers = ["nginx", "python-http.server"]
    for server in servers:
        params = {"packets": packets, "server": server, "body_bytes": REAL_BODY_BYTES,
                  "wrk_threads": REAL_WRK_THREADS, "wrk_connections": REAL_WRK_CONNECTIONS,
                  "recipe": REAL_RECIPE, "nginx_conf": hashlib.sha256(NGINX_CONF.encode()).hexdigest()[:16]}
        path = os.path.join(DATA, f"real-{server}-wrk-c{REAL_WRK_CONNECTIONS}-body{REAL_BODY_BYTES}-{packets}.pcap")
        try:
            with open(path + ".json") as f:
                sidecar = json.load(f)
            if sidecar["params"] == params and os.path.exists(path):
                print(f"reusing {path}", flush=True)
                return path, dict(sidecar["facts"], server=server)
        except (OSError, ValueError, KeyError):
            pass
        if server == "nginx" and "nginx" in missing:
            print(f"nginx {missing['nginx']}; python's http.server serves instead", flush=True)
            continue
        needed = [tool for tool in ("tcpdump", "wrk") if tool in missing]
        if needed:
            return None, {"skipped": "; ".join(f"{tool} {missing[tool]}" for tool in needed)}
        print(f"capturing {path} ({server} + wrk on lo) ...", flush=True)
        part = path + ".part"
        try:
            facts = capture_loopback_traffic(part, packets, server)
            os.replace(part, path)
        except CaptureError as exc:
            print(f"  cannot make the real capture: {exc}", flush=True)
            return None, {"skipped": str(exc)}
        finally:  # no half-made capture is left behind, whatever stopped us
            if os.path.exists(part):
                os.remove(part)
        print(f"  {facts['capture_seconds']} s, {facts['wrk_requests']} requests, "
              f"{facts['dropped_by_kernel']} packets dropped by the kernel", flush=True)
        with open(path + ".json", "w") as f:
            json.dump({"params": params, "facts": facts}, f, indent=1)
        return path, dict(facts, server=server)
    return None, {"skipped": "no HTTP server"}  # not reached: http.server is always there


def compile_bytecode(tree: str) -> None:
    """fastflow's modules compiled to bytecode, as an installed package has them: where PYTHONDONTWRITEBYTECODE
    is set (it is on the benchmark machine) every run would compile them again, about 30 ms, while the peers
    come from wheels, compiled when installed. Python checks each file's time stamp, so an edited module is
    compiled again in memory rather than read stale."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "fastflow")], check=True,
                   stdout=subprocess.DEVNULL)


def warm(path: str) -> None:
    # one small reused buffer: the suite's own peak RSS is the floor of every child's ru_maxrss (see measure)
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# ---------------------------------------------------------------------------------------------------------
# measuring one child


class Outcome:
    def __init__(self, seconds: float, cpu_seconds: float, maxrss_kb: int, status: str):
        self.seconds, self.cpu_seconds, self.maxrss_kb, self.status = seconds, cpu_seconds, maxrss_kb, status


def measure(cmd: list[str], timeout: float, stdout_path: str | None = None) -> Outcome:
    """Run cmd once; wall time, CPU time and peak RSS of the child and the children it waited for (os.wait4),
    and "ok" / "timeout" / "exit N". Linux keeps the RSS high-water mark across exec, so a child's ru_maxrss
    is at least this process's RSS when it spawned the child: the suite keeps its own memory small."""
    err = tempfile.TemporaryFile()
    out = open(stdout_path or os.devnull, "wb")
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        cpu = usage.ru_utime + usage.ru_stime
        if timed_out.is_set():
            return Outcome(seconds, cpu, usage.ru_maxrss, f"timeout (>{timeout:.0f} s)")
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-300:].decode(errors="replace").strip().replace("\n", " | ")
            return Outcome(seconds, cpu, usage.ru_maxrss, f"exit {proc.returncode}: {tail}")
        return Outcome(seconds, cpu, usage.ru_maxrss, "ok")
    finally:
        out.close()
        err.close()


# ---------------------------------------------------------------------------------------------------------
# tools


# Counters read a tool's stdout line by line (it can be tens of MB; see measure for why the suite stays small).

def count_conv_lines(lines) -> int:  # tshark -z conv,tcp: one "A <-> B" line per conversation
    return sum("<->" in line for line in lines)


TCPTRACE_CONN = re.compile(r"\s*\d+: \S+ - \S+")  # "  12: 127.0.0.1:42714 - 127.0.0.1:18080 (y2z) ..."


def count_tcptrace(lines) -> int:
    return sum(TCPTRACE_CONN.match(line) is not None for line in lines)


def count_ra(lines) -> int:  # one line per record, after a header; "man" records are argus's own
    return sum(line.strip() != "" and " man " not in line and "StartTime" not in line for line in lines)


def count_last_number(lines) -> int:  # the nfstream loop prints the row count
    return int([line for line in lines if line.strip()][-1])


@dataclass
class Tool:
    name: str
    cmd: list[str] | None  # None: not available, note says why
    note: str = ""
    count: Callable[[object], int] | None = None  # connections reported, from the lines of the tool's stdout


FF_1, FF_2 = "fastflow process, 1 core", "fastflow process, 2 cores"
FF_SEG_1, FF_SEG_2 = "fastflow process --segments, 1 core", "fastflow process --segments, 2 cores"
STARTUP = "(startup floor) python3 -c 'import fastflow, pyarrow.parquet'"
ARGUS = "argus -r F -w /dev/null"
NFSTREAM = "nfstream NFStreamer(source=F).to_pandas()"
SCALE_TOOLS = (FF_1, FF_2, FF_SEG_2, STARTUP, ARGUS)  # all that runs on the --scale-packets input
# the targets of the speed issue, checked on the --scale-packets input
TARGET_PPS_1 = 5e6  # packets/s end to end on one core
TARGET_SPEEDUP_2 = 1.6  # two cores: this times TARGET_PPS_1
TARGET_RSS_MB = 1024  # peak RSS, MiB (1 GiB)
# and on the real capture: fastflow on one core this many times faster than each peer, measured in the same run
TARGET_FASTER_THAN = {ARGUS: 5.0, NFSTREAM: 30.0}
CORES = {1: "0", 2: "0,1"}  # taskset CPU lists


def pinned(cmd: list[str], cores: int) -> list[str]:
    return ["taskset", "-c", CORES[cores], *cmd]


def can_pin() -> str:
    """"" when fastflow can be pinned to CPUs 0 and 1, else why not."""
    if not shutil.which("taskset"):
        return "taskset not found (Debian package util-linux)"
    if not {0, 1} <= os.sched_getaffinity(0):
        return f"CPUs 0 and 1 are not both available (affinity {sorted(os.sched_getaffinity(0))})"
    return ""


def tools_for(path: str, tmp: str, packets: int, with_slow: bool, missing: dict[str, str],
              scale: bool = False) -> list[Tool]:
    py = sys.executable
    flows = os.path.join(tmp, "flows.parquet")
    segs = os.path.join(tmp, "segments.parquet")
    argus_records = os.path.join(tmp, "records.argus")
    slow_ok = with_slow or packets < SLOW_LIMIT
    process = [py, "-m", "fastflow", "process", path, "-o", flows, "-q", "--overwrite"]
    process_seg = [*process, "--segments", segs]
    no_pin = can_pin()
    tools = []
    for name, cmd, cores in ((FF_1, process, 1), (FF_2, process, 2), (FF_SEG_1, process_seg, 1),
                             (FF_SEG_2, process_seg, 2)):
        tools.append(Tool(name, None, f"not measured: {no_pin}") if no_pin else Tool(name, pinned(cmd, cores)))
    tools.append(Tool(STARTUP,
                      [py, "-c", "import fastflow, fastflow.cli, pyarrow.parquet"]))

    def peer(name: str, needs: list[str], cmd: list[str], count=None) -> Tool:
        absent = [missing[n] for n in needs if n in missing]
        return Tool(name, None, absent[0]) if absent else Tool(name, cmd, count=count)

    tools += [
        peer("tshark -q -z conv,tcp", ["tshark"], ["tshark", "-n", "-r", path, "-q", "-z", "conv,tcp"],
             count_conv_lines),
        peer("tcpdump -nn -S -r F", ["tcpdump"], ["tcpdump", "-nn", "-S", "-r", path]),
        peer("tcptrace -n F", ["tcptrace"], ["tcptrace", "-n", path], count_tcptrace),
        peer("dpkt loop (Python, TCP header of every packet)", ["dpkt"], [py, "-c", DPKT_LOOP, path]),
        peer(NFSTREAM, ["nfstream"], [py, "-c", NFSTREAM_LOOP, path],
             count_last_number),
        peer(ARGUS, ["argus"], ["argus", "-r", path, "-w", "/dev/null"]),
        # argus appends to an existing output file, hence the rm
        peer("argus -r F -w T; ra -n -r T (records as text)", ["argus", "ra"],
             ["sh", "-c", f"rm -f {shlex.quote(argus_records)} && argus -r {shlex.quote(path)} -w "
                          f"{shlex.quote(argus_records)} && ra -n -r {shlex.quote(argus_records)}"], count_ra),
    ]
    fields = ["tshark", "-n", "-r", path, "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.flags"]
    if "tshark" in missing or slow_ok:
        tools.append(peer("tshark -T fields -e tcp.stream", ["tshark"], fields))
    else:
        tools.append(Tool("tshark -T fields -e tcp.stream", None,
                          f"skipped (slow; >= {SLOW_LIMIT} packets, use --with-slow)"))
    if scale:
        tools = [tool for tool in tools if tool.name in SCALE_TOOLS]
    return tools


# ---------------------------------------------------------------------------------------------------------
# suite


# The stage runs: (what, overlap, cores). "flows" is stream_flows through ParquetStream, what `fastflow process`
# runs without --segments; "segments" is the whole-capture process(want_segments=True) that --segments runs.
STAGE_RUNS = [("flows", True, 1), ("flows", True, 2), ("flows", False, 2), ("segments", False, 1),
              ("segments", False, 2)]


def run_stages(path: str, tmp: str, timeout: float, what: str = "flows", overlap: bool = True,
               cores: int | None = None, describe: bool = False) -> dict | None:
    """One stage run in a child (pinned to `cores` if given): its Result.stats timings and counts, plus
    "rss_mb", the child's peak RSS (ru_maxrss from os.wait4, as for the tools)."""
    cmd = [sys.executable, "-c", STAGES, path, tmp, what, "1" if overlap else "0", "1" if describe else "0"]
    listing = os.path.join(tmp, "stages.json")
    o = measure(pinned(cmd, cores) if cores else cmd, timeout, stdout_path=listing)
    try:
        if o.status != "ok":
            print(f"  stages failed: {o.status}", flush=True)
            return None
        with open(listing) as f:
            facts = json.load(f)
    finally:
        if os.path.exists(listing):
            os.remove(listing)
    facts["rss_mb"] = o.maxrss_kb / 1024
    return facts


def count_reported(tools: list[Tool], results: dict, tmp: str, timeout: float) -> None:
    """One more, untimed run of each peer that lists connections, stdout kept, to count them."""
    listing = os.path.join(tmp, "stdout.txt")
    for tool in tools:
        r = results[tool.name]
        if tool.count is None or not r["outcomes"] or r["outcomes"][-1].status != "ok":
            continue
        o = measure(tool.cmd, timeout, stdout_path=listing)
        if o.status == "ok":
            try:
                with open(listing, errors="replace") as f:
                    r["reported"] = tool.count(f)
            except (ValueError, IndexError):
                pass
        print(f"  {tool.name}: {r.get('reported', 'count failed')} connections reported", flush=True)
    if os.path.exists(listing):
        os.remove(listing)


def bench_input(path: str, label: str, runs: int, timeout: float, with_slow: bool, missing: dict[str, str],
                about: dict | None = None, scale: bool = False) -> dict:
    """Every tool on one input, round-robin, --runs times, and the stage runs of STAGE_RUNS after each round.
    scale: only the SCALE_TOOLS, and no stage runs beyond the first (counting) one."""
    print(f"\n== {label}: {path}", flush=True)
    size = os.path.getsize(path)
    warm(path)
    pin_ok = not can_pin()
    with tempfile.TemporaryDirectory(prefix="fastflow-bench-", dir=OUT) as tmp:
        # the streaming path, unpinned: counts the packets and connections; also warms imports
        first = run_stages(path, tmp, timeout, "flows", describe=bool(about))
        if first is None:
            raise SystemExit(f"fastflow cannot process {path}")
        packets = first["packets"]
        print("  counting run (stream_flows, unpinned): " + ", ".join(
            f"{k} {v:.3f}" for k, v in first["seconds"].items()) + f", {first['rss_mb']:.0f} MB", flush=True)
        tools = tools_for(path, tmp, packets, with_slow, missing, scale)
        results = {t.name: {"cmd": t.cmd, "note": t.note, "outcomes": []} for t in tools}
        stages: dict[tuple[str, bool, int], list[dict]] = {key: [] for key in ([] if scale else STAGE_RUNS)}
        for run in range(runs):
            for tool in tools:
                r = results[tool.name]
                if tool.cmd is None or (r["outcomes"] and r["outcomes"][-1].status != "ok"):
                    continue
                o = measure(tool.cmd, timeout)
                r["outcomes"].append(o)
                print(f"  run {run + 1} {tool.name}: {o.seconds:.2f} s, CPU {o.cpu_seconds:.2f} s, "
                      f"{o.maxrss_kb / 1024:.0f} MB, {o.status}", flush=True)
            for (what, overlap, cores), into in stages.items():
                if not pin_ok:
                    continue
                st = run_stages(path, tmp, timeout, what, overlap, cores)
                if st is not None:
                    into.append(st)
                    print(f"  run {run + 1} stages ({what}{', overlap' if overlap else ''}), {cores} core(s): "
                          + ", ".join(f"{k} {v:.3f}" for k, v in st["seconds"].items())
                          + f", {st['rss_mb']:.0f} MB", flush=True)
        count_reported(tools, results, tmp, timeout)
    return {"label": label, "path": path, "tmp": tmp, "size": size, "packets": packets,
            "tcp_segments": first["tcp_segments"], "flows": first["flows"], "tcp_flows": first.get("tcp_flows"),
            "tcp_port_pairs": first.get("tcp_port_pairs"), "results": results, "stages": stages,
            "first": first, "about": about or {}, "scale": scale}


def summarise(bench: dict) -> list[dict]:
    rows = []
    for name, r in bench["results"].items():
        ok = [o for o in r["outcomes"] if o.status == "ok"]
        row = {"tool": name, "cmd": r["cmd"], "runs": len(ok), "reported": r.get("reported")}
        if name.startswith("fastflow process"):
            row["reported"] = bench["flows"]
        if r["cmd"] is None:
            row["status"] = r["note"]
        elif not ok:
            row["status"] = r["outcomes"][-1].status if r["outcomes"] else "not run"
        else:
            med = statistics.median(o.seconds for o in ok)
            row.update(status="ok" if len(ok) == len(r["outcomes"]) else r["outcomes"][-1].status,
                       seconds=med, all_seconds=[o.seconds for o in ok],
                       cpu=statistics.median(o.cpu_seconds for o in ok),
                       pps=bench["packets"] / med, mbps=bench["size"] / 1e6 / med,
                       rss_mb=max(o.maxrss_kb for o in ok) / 1024)
        rows.append(row)
    base = {name: row.get("seconds") for row in rows for name in (FF_1, FF_2) if row["tool"] == name}
    for row in rows:
        if "seconds" in row:
            row["ratio_1"] = row["seconds"] / base[FF_1] if base.get(FF_1) else None
            row["ratio_2"] = row["seconds"] / base[FF_2] if base.get(FF_2) else None
    return rows


def stage_medians(stages: list[dict]) -> dict:
    if not stages:
        return {}
    keys = stages[0]["seconds"].keys()
    med = {k: statistics.median(s["seconds"][k] for s in stages) for k in keys}
    med["rss_mb"] = max(s["rss_mb"] for s in stages)  # peak: the largest, as for the tools
    return med


def tool_version(tool: str) -> str:
    """First line of the tool's own version output ("" if absent)."""
    if tool == "python http.server":
        return f"python {platform.python_version()} http.server"
    args = {"tshark": ["--version"], "tcpdump": ["--version"], "tcptrace": ["-v"], "argus": ["-h"], "ra": ["-h"],
            "nginx": ["-v"], "wrk": ["-v"]}[tool]
    if not shutil.which(tool):
        return ""
    out = subprocess.run([tool, *args], capture_output=True, text=True)
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    first = lines[0].split(" Copyright")[0] if lines else ""  # wrk's line goes on with a copyright
    return first.removeprefix("nginx version: ")


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "pyarrow", "dpkt", "nfstream", "fastflow"):
        try:
            versions[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            versions[mod] = "not installed"
    tools = {tool: tool_version(tool) for tool in ("tshark", "tcpdump", "tcptrace", "argus", "ra", "nginx", "wrk")}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "tools": {k: v for k, v in tools.items() if v},
            "commit": commit, "load": os.getloadavg()}


def _shown_path(path: str) -> str:
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def shown_command(cmd: list[str], path: str, tmp: str) -> str:
    """The command as a reader would type it: F for the input, OUT/ for scratch files, loops by name."""
    loops = {DPKT_LOOP: "<DPKT_LOOP in benchmarks/run.py>", NFSTREAM_LOOP: "<NFSTREAM_LOOP in benchmarks/run.py>"}
    shown = []
    for arg in cmd:
        arg = loops.get(arg, arg)
        arg = "python3" if arg == sys.executable else arg.replace(tmp + "/", "OUT/").replace(path, "F")
        shown.append(arg)
    return shlex.join(shown)


def render_real_capture(b: dict) -> list[str]:
    a = b["about"]
    return [f"Made on this machine by the suite: {a['server_version']} serving a {REAL_BODY_BYTES}-byte file on "
            f"127.0.0.1 (port {a['port']}), loaded by `{a['wrk_command']}` ({a['wrk_version']}; -d only bounds "
            f"the load), captured by `tcpdump -i lo -B 65536 -c {b['packets']} -w F 'tcp port {a['port']}'` "
            f"(default snaplen) in "
            f"{a['capture_seconds']} s on {a['made']}; {a['wrk_requests']} requests completed, "
            f"{a['dropped_by_kernel']} packets dropped by the kernel. fastflow finds {b['tcp_flows']:,} TCP "
            f"connections on {b['tcp_port_pairs']:,} port pairs (client ports are reused within seconds).", ""]


def render_scale_note(b: dict) -> list[str]:
    f = b["first"]
    sec = f["seconds"]
    return [(f"The scale input, for the speed issue's targets (set on a capture of 26.4 M packets and about "
            f"1.66 M connections). Only "
            f"`fastflow process` (flows on 1 and 2 cores; with --segments on 2 cores), argus -w /dev/null and "
            f"the startup floor run here: the "
            f"other peers (tshark, tcpdump, tcptrace, the dpkt loop, nfstream, argus + ra) and the "
            f"whole-capture `--segments` path are far too slow or too large at this size, and are measured on "
            f"the smaller inputs above. No stage runs either, beyond the unpinned counting run of "
            f"`stream_flows` (overlap=True): decode {sec['decode']:.2f} s, connections {sec['connections']:.2f} s, "
            f"tables {sec['tables']:.2f} s, total {sec['total']:.2f} s, write (commit) {sec['write']:.2f} s, "
            f"peak RSS {f['rss_mb']:.0f} MB."), ""]


def render(benches: list[dict], skipped_real: str | None, info: dict, command: str, args) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# fastflow benchmark results",
        "",
        f"Generated by `benchmarks/run.py` on {now}.",
        "",
        f"Command: `{command}`",
        "",
        "**The machine is shared and noisy** (other jobs run on the same 2 cores): absolute times move from "
        "run to run by tens of percent. Only the ratios between tools measured in the same run, on the same "
        "file, interleaved round-robin, are meaningful; compare absolute figures across runs with care.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores (as seen by the OS); memory {info['memory']}",
        f"- Load average when the suite finished: {', '.join(f'{x:.2f}' for x in info['load'])}",
        f"- {info['platform']}; Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        *(f"- {v}" for v in info["tools"].values()),
        f"- fastflow at commit {info['commit']} (working tree may hold other engineers' uncommitted changes)",
        "",
        "Columns: median wall seconds over the runs (child process, end to end, including interpreter start "
        "and Parquet writing for fastflow); CPU s = median user + system seconds of the child and the "
        "children it waited for (above the wall time: more than one core busy); packets/s and MB/s = input "
        "packets and input file bytes over the median; peak RSS = ru_maxrss from os.wait4, largest over the "
        f"runs (Linux carries the suite's own RSS into it across exec: a do-nothing child, `true`, shows "
        f"{info['rss_floor_mb']:.0f} MB); ratio = tool median / `fastflow process` median on the same file, fastflow pinned to 1 core "
        "(`taskset -c 0`) or to 2 cores (`taskset -c 0,1`); peers run unpinned (above 1: the tool is "
        "slower); connections = the rows fastflow writes (TCP, UDP and ICMP flows) or the connections a peer "
        "lists, from one extra untimed run (tshark conv,tcp and tcptrace: TCP only).",
    ]
    if skipped_real:
        lines += ["", "## Real traffic (nginx + wrk on loopback)", "", f"Skipped: {skipped_real}"]
    for b in benches:
        lines += ["", f"## {b['label']}", "",
                  f"`{_shown_path(b['path'])}`: {b['packets']:,} packets, {b['size'] / 1e6:,.1f} MB, "
                  f"{b['tcp_segments']:,} TCP segments, {b['flows']:,} connections found by fastflow.", ""]
        if b["about"]:
            lines += render_real_capture(b)
        if b["scale"]:
            lines += render_scale_note(b)
        lines += ["| tool | median s | CPU s | packets/s | MB/s | peak RSS MB | ratio to fastflow, 1 core | "
                  "ratio to fastflow, 2 cores | connections | runs (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        rows = summarise(b)
        for row in rows:
            reported = "" if row["reported"] is None else f"{row['reported']:,}"
            if "seconds" not in row:
                lines.append(f"| {row['tool']} | {row['status']} | | | | | | | | |")
                continue
            note = "" if row["status"] == "ok" else f" ({row['status']})"
            runs = ", ".join(f"{s:.2f}" for s in row["all_seconds"])
            lines.append(f"| {row['tool']}{note} | {row['seconds']:.2f} | {row['cpu']:.2f} | "
                         f"{fmt_rate(row['pps'])} | {row['mbps']:.0f} | {row['rss_mb']:.0f} | "
                         f"{fmt_ratio(row['ratio_1'])} | {fmt_ratio(row['ratio_2'])} | {reported} | {runs} |")
        lines += render_speedups(b, rows)
        if b["scale"]:
            lines += render_targets(b, rows)
        elif b["about"]:
            lines += render_real_targets(rows)
    lines += ["", "## Commands", ""]
    if benches:
        b = benches[0]
        for name, r in b["results"].items():
            if r["cmd"] is not None:
                out = " > /dev/null" if not name.startswith("fastflow") else ""
                lines.append(f"- {name}: `{shown_command(r['cmd'], b['path'], b['tmp'])}{out}`")
    lines += ["", f"Each command had a timeout of {args.timeout:.0f} s. stdout of every tool went to /dev/null "
              "in the timed runs.", ""]
    return "\n".join(lines)


FLOWS_STAGES_CAPTION = (
    "Stages of the **flows path** (what `fastflow process F -o flows.parquet` runs): `stream_flows(F, "
    "ParquetStream(...).write, overlap=...)` then `ParquetStream.commit()`, in one child process, medians of "
    "{n} runs. Result.stats[\"seconds\"]: decode = read + decode, connections = the streaming TCP and "
    "UDP/ICMP engines (state, Zeek history, tags, expiry); with overlap=True the decoder and the engines run "
    "in threads of their own and are timed there, alongside tables, so total is less than their sum (on 1 "
    "core the threads share the CPU, and each figure includes time another held it); tables = Arrow tables "
    "of the finished flows + ParquetStream.write, in the main thread (whole row groups are encoded and "
    "written by the ParquetStream's own thread meanwhile); total = stream_flows wall time; write = "
    "ParquetStream.commit() (waiting for that thread, last row group, footer, fsync, rename), not in total. "
    "Peak RSS = the child's ru_maxrss (largest over the runs). Rows: overlap=True (the default, what the CLI "
    "runs) on 1 and 2 cores, and overlap=False (decoder and engines in the main thread; the Parquet writer "
    "keeps its thread) on 2 cores:")
SEGMENTS_STAGES_CAPTION = (
    "Stages of the **--segments path** (what `fastflow process F -o flows.parquet --segments S` runs): the "
    "whole-capture `fastflow.process(F, want_segments=True)` in one child process, medians of {n} runs "
    "(Result.stats[\"seconds\"]: decode = read + decode, connections = connections + Zeek state + tags + "
    "UDP/ICMP flows + Community IDs, tables = Arrow tables; write = `pyarrow.parquet.write_table(..., "
    "compression='zstd')` of each table, timed separately). Peak RSS = the child's ru_maxrss:")


def _stage_row(label: str, med: dict, keys: list[str]) -> str:
    return (f"| {label} | " + " | ".join(f"{med[k]:.3f}" if k in med else "" for k in keys)
            + f" | {med['rss_mb']:.0f} |")


def _ratio_row(label: str, num: dict, den: dict, keys: list[str]) -> str:
    return (f"| {label} | " + " | ".join(f"{num[k] / den[k]:.2f}x" if num.get(k) and den.get(k) else ""
                                         for k in keys) + " | |")


def render_speedups(b: dict, rows: list[dict]) -> list[str]:
    """The 2-core / 1-core speedup end to end, and the stage tables of the flows (streaming) and --segments
    (whole-capture) paths."""
    secs = {row["tool"]: row.get("seconds") for row in rows}
    lines = []
    ends = [(what, secs.get(one), secs.get(two)) for what, one, two in
            (("flows", FF_1, FF_2), ("flows + segments", FF_SEG_1, FF_SEG_2))]
    ends = [(what, one, two) for what, one, two in ends if one and two]
    if ends:
        lines += ["", "fastflow on 2 cores vs 1 core (speedup = 1-core median / 2-core median), end to end: "
                  + ", ".join(f"{one / two:.2f}x ({what})" for what, one, two in ends) + "."]
    med = {key: stage_medians(runs) for key, runs in b["stages"].items()}
    one, two, two_inline = (med.get(("flows", True, 1)), med.get(("flows", True, 2)),
                            med.get(("flows", False, 2)))
    if one and two and two_inline:
        keys = [k for k in one if k != "rss_mb"]
        lines += ["", FLOWS_STAGES_CAPTION.format(n=len(b["stages"][("flows", True, 1)])), "",
                  "| cores, overlap | " + " | ".join(keys) + " | peak RSS MB |",
                  "|---|" + "---:|" * (len(keys) + 1),
                  _stage_row("1 (`taskset -c 0`), overlap=True", one, keys),
                  _stage_row("2 (`taskset -c 0,1`), overlap=True", two, keys),
                  _stage_row("2 (`taskset -c 0,1`), overlap=False", two_inline, keys),
                  _ratio_row("speedup, 2 cores vs 1 (overlap=True)", one, two, keys),
                  _ratio_row("gain of the decoder's and engines' threads on 2 cores (overlap=False / True)",
                             two_inline, two, keys)]
    one, two = med.get(("segments", False, 1)), med.get(("segments", False, 2))
    if one and two:
        keys = [k for k in one if k != "rss_mb"]
        lines += ["", SEGMENTS_STAGES_CAPTION.format(n=len(b["stages"][("segments", False, 1)])), "",
                  "| cores | " + " | ".join(keys) + " | peak RSS MB |", "|---|" + "---:|" * (len(keys) + 1),
                  _stage_row("1 (`taskset -c 0`)", one, keys),
                  _stage_row("2 (`taskset -c 0,1`)", two, keys),
                  _ratio_row("speedup", one, two, keys)]
    return lines


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render_targets(b: dict, rows: list[dict]) -> list[str]:
    """Whether the speed issue's three targets are met on this (the --scale-packets) input, from the rows."""
    by = {row["tool"]: row for row in rows}
    one, two = by.get(FF_1, {}), by.get(FF_2, {})
    if "pps" not in one or "pps" not in two:
        return ["", "Targets: not checked (fastflow did not complete on 1 and 2 cores)."]
    target_2 = TARGET_SPEEDUP_2 * TARGET_PPS_1
    rss = max(one["rss_mb"], two["rss_mb"])
    return ["", (f"Targets of the speed issue on this input (computed from the medians above): "
            f"1 core {fmt_rate(one['pps'])} packets/s vs {fmt_rate(TARGET_PPS_1)}: {met(one['pps'] >= TARGET_PPS_1)}; "
            f"2 cores {fmt_rate(two['pps'])} packets/s vs {fmt_rate(target_2)} ({TARGET_SPEEDUP_2}x "
            f"{fmt_rate(TARGET_PPS_1)}): {met(two['pps'] >= target_2)} (measured speedup over 1 core "
            f"{one['seconds'] / two['seconds']:.2f}x); peak RSS {rss:.0f} MiB (largest of the 1- and 2-core "
            f"runs) vs {TARGET_RSS_MB} MiB: {met(rss <= TARGET_RSS_MB)}" + segments_rss(by.get(FF_SEG_2, {})) + ".")]


def render_real_targets(rows: list[dict]) -> list[str]:
    """Whether the speed issue's targets for a real capture are met on this one, from the rows: 5 M packets/s
    on one core, and that many times faster than argus and nfstream (their median over fastflow's, 1 core)."""
    by = {row["tool"]: row for row in rows}
    one = by.get(FF_1, {})
    if "pps" not in one:
        return ["", "Targets: not checked (fastflow did not complete on 1 core)."]
    parts = [f"1 core {fmt_rate(one['pps'])} packets/s vs {fmt_rate(TARGET_PPS_1)}: {met(one['pps'] >= TARGET_PPS_1)}"]
    for peer, times in TARGET_FASTER_THAN.items():
        ratio = by.get(peer, {}).get("ratio_1")
        name = peer.split()[0]
        if ratio is None:
            parts.append(f"{name} {times:g}x: not checked ({by.get(peer, {}).get('status', 'not run')})")
        else:
            parts.append(f"{name} {ratio:.2f}x slower vs {times:g}x: {met(ratio >= times)}")
    return ["", "Targets of the speed issue for a real capture, on this one (computed from the medians above): "
            + "; ".join(parts) + "."]


def segments_rss(row: dict) -> str:
    """The memory target with --segments too (the issue: at most 1 GiB whatever the input)."""
    if "rss_mb" not in row:
        return ""
    return f"; with --segments (2 cores) {row['rss_mb']:.0f} MiB: {met(row['rss_mb'] <= TARGET_RSS_MB)}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=2_000_000,
                        help="packets in each synthetic input (default 2000000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic inputs (default 1)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs of every tool on every input; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="200k synthetic packets, snaplen-128 input only, 100k-packet real capture")
    parser.add_argument("--with-slow", action="store_true", help="also run the slow peers on large inputs")
    parser.add_argument("--input", action="append", default=[], help="also benchmark this capture file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per command (default 600)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic inputs")
    parser.add_argument("--real-packets", type=int, default=None,
                        help="packets in the real nginx + wrk loopback capture (default 3080000, the size of the "
                             "speed issue's capture; 100000 with --quick)")
    parser.add_argument("--no-real", action="store_true", help="skip the real loopback capture")
    parser.add_argument("--scale-packets", type=int, default=0,
                        help="also a synthetic input of this many packets (snaplen 128, --seed) on which only "
                             "fastflow process (flows), argus -w /dev/null and the startup floor run, and the "
                             "issue's targets are checked; e.g. 26400000 (default 0: none)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get/pip install missing peers and capture tools; report them missing")
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "RESULTS.md"), help="where to write the results (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.quick and "--packets" not in " ".join(given):
        args.packets = 200_000
    if args.real_packets is None:
        args.real_packets = 100_000 if args.quick else 3_080_000
    command = "python3 benchmarks/run.py" + (" " + shlex.join(given) if given else "")
    # SIGTERM as an exception, so that the finally blocks stop the servers the suite started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(OUT, exist_ok=True)
    compile_bytecode(ROOT)
    missing = install_missing_tools(not args.no_install)
    for tool, why in missing.items():
        print(f"{tool}: {why}", flush=True)
    inputs = []
    if not args.no_synthetic:
        snaplens = [128] if args.quick else [128, FULL_SNAPLEN]
        for snaplen in snaplens:
            path = synthetic_input(args.packets, args.seed, snaplen)
            inputs.append((path, f"Synthetic, {args.packets:,} packets, seed {args.seed}, snaplen {snaplen}", None))
    skipped_real = None
    if not args.no_real:
        path, about = real_input(args.real_packets, missing)
        if path is None:
            skipped_real = about["skipped"]
        else:
            server = "nginx" if about["server"] == "nginx" else "python http.server"
            inputs.append((path, f"Real traffic: {server} + wrk on loopback, {args.real_packets:,} packets", about))
    for path in args.input:
        inputs.append((os.path.abspath(path), f"Capture {os.path.basename(path)}", None))
    if args.scale_packets:
        path = synthetic_input(args.scale_packets, args.seed, 128)
        inputs.append((path, f"Scale: synthetic, {args.scale_packets:,} packets, seed {args.seed}, snaplen 128",
                       "scale"))
    benches = [bench_input(path, label, args.runs, args.timeout, args.with_slow, missing,
                           None if about == "scale" else about, scale=about == "scale")
               for path, label, about in inputs]
    info = machine()
    info["rss_floor_mb"] = measure(["true"], 10).maxrss_kb / 1024  # see measure: no child shows less
    text = render(benches, skipped_real, info, command, args)
    # a hand-written "## Observations" section at the end of the previous file is kept
    if os.path.exists(args.output):
        with open(args.output) as f:
            previous = f.read()
        mark = previous.find("\n## Observations")
        if mark >= 0:
            text = text.rstrip("\n") + "\n" + previous[mark:]
    with open(args.output, "w") as f:
        f.write(text)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
