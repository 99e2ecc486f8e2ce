"""Run the fastflow benchmark suite and write benchmarks/RESULTS.md.

    python3 benchmarks/run.py [--packets 2000000] [--runs 3] [--quick] [--with-slow] [--input FILE ...]

Inputs: two seeded synthetic captures built by benchmarks/generate.py into benchmarks/data/ (snaplen 128
and full snaplen; reused when a file with the same parameters and the same generator already exists),
plus any --input files (e.g. a real capture from the corpus).

For every input, each tool runs as a child process, --runs times, round-robin (tool A run 1, tool B run 1,
..., tool A run 2, ...) so that load changes on a shared machine hit every tool alike; the file is read
once beforehand so that every tool starts from the page cache. Wall time is the median; peak RSS is the
child's own ru_maxrss from os.wait4 (the largest over the runs). Every command has a timeout; a tool that
times out or fails is reported as such and not run again on that input.

Tools: fastflow process (flows; flows + --segments), the interpreter + import time of fastflow alone (the
fixed cost in every fastflow figure), and the peers that are installed: tshark conv,tcp,
tcpdump -nn -S, a dpkt loop that decodes every packet's TCP header, tshark -T fields -e tcp.stream (slow:
only with --with-slow or for inputs under 300k packets), nfstream and argus (reported "not installed" when
absent). The ratio column is peer time / fastflow (flows) time on the same file in the same run.

Stages: fastflow.process() in a child, its Result.stats["seconds"] (decode / connections / tables), plus
pyarrow.parquet.write_table of result.flows (and result.segments) timed separately; medians over --runs.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "out")
FULL_SNAPLEN = 262144
SLOW_LIMIT = 300_000  # the slow peers run by default only below this many packets

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
print(sum(1 for _ in nfstream.NFStreamer(source=sys.argv[1], statistical_analysis=False, n_dissections=0)))
"""

STAGES = r"""
import json, os, sys, time
import pyarrow.parquet as pq
import fastflow
path, out, segments = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
started = time.perf_counter()
result = fastflow.process(path, want_segments=segments)
processed = time.perf_counter()
seconds = dict(result.stats["seconds"])
t0 = time.perf_counter()
pq.write_table(result.flows, os.path.join(out, "flows.parquet"), compression="zstd", row_group_size=1 << 20)
seconds["write_flows"] = time.perf_counter() - t0
if segments:
    t0 = time.perf_counter()
    pq.write_table(result.segments, os.path.join(out, "segments.parquet"), compression="zstd",
                   row_group_size=1 << 20)
    seconds["write_segments"] = time.perf_counter() - t0
counts = result.stats["counts"]
print(json.dumps({"seconds": seconds, "packets": counts["packets"], "tcp_segments": counts["tcp_segments"],
                  "flows": result.flows.num_rows}))
"""


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


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# ---------------------------------------------------------------------------------------------------------
# measuring one child


class Outcome:
    def __init__(self, seconds: float, maxrss_kb: int, status: str):
        self.seconds, self.maxrss_kb, self.status = seconds, maxrss_kb, status


def measure(cmd: list[str], timeout: float, stdout_path: str | None = None) -> Outcome:
    """Run cmd once; wall time, the child's own peak RSS (os.wait4) and "ok" / "timeout" / "exit N"."""
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
        if timed_out.is_set():
            return Outcome(seconds, usage.ru_maxrss, f"timeout (>{timeout:.0f} s)")
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-300:].decode(errors="replace").strip().replace("\n", " | ")
            return Outcome(seconds, usage.ru_maxrss, f"exit {proc.returncode}: {tail}")
        return Outcome(seconds, usage.ru_maxrss, "ok")
    finally:
        out.close()
        err.close()


# ---------------------------------------------------------------------------------------------------------
# tools


def python_has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def tools_for(path: str, tmp: str, packets: int, with_slow: bool) -> list[tuple[str, list[str] | None, str]]:
    """(name, command or None, note) for every tool; command None means not available."""
    py = sys.executable
    flows = os.path.join(tmp, "flows.parquet")
    segs = os.path.join(tmp, "segments.parquet")
    tshark, tcpdump = shutil.which("tshark"), shutil.which("tcpdump")
    argus = shutil.which("argus")
    slow_ok = with_slow or packets < SLOW_LIMIT
    tools = [
        ("fastflow process", [py, "-m", "fastflow", "process", path, "-o", flows, "-q", "--overwrite"], ""),
        ("fastflow process --segments", [py, "-m", "fastflow", "process", path, "-o", flows, "--segments", segs,
                                         "-q", "--overwrite"], ""),
        ("(startup floor) python3 -c 'import fastflow, pyarrow.parquet'",
         [py, "-c", "import fastflow, fastflow.cli, pyarrow.parquet"], ""),
        ("tshark -q -z conv,tcp", [tshark, "-n", "-r", path, "-q", "-z", "conv,tcp"] if tshark else None,
         "" if tshark else "not installed"),
        ("tcpdump -nn -S -r F", [tcpdump, "-nn", "-S", "-r", path] if tcpdump else None,
         "" if tcpdump else "not installed"),
    ]
    if not tshark:
        tools.append(("tshark -T fields -e tcp.stream", None, "not installed"))
    elif slow_ok:
        tools.append(("tshark -T fields -e tcp.stream", [tshark, "-n", "-r", path, "-T", "fields", "-e",
                                                          "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.flags"], ""))
    else:
        tools.append(("tshark -T fields -e tcp.stream", None, f"skipped (slow; >= {SLOW_LIMIT} packets, "
                                                               "use --with-slow)"))
    if python_has("dpkt"):
        tools.append(("dpkt loop (Python, TCP header of every packet)", [py, "-c", DPKT_LOOP, path], ""))
    else:
        tools.append(("dpkt loop (Python, TCP header of every packet)", None, "not installed"))
    if python_has("nfstream"):
        tools.append(("nfstream", [py, "-c", NFSTREAM_LOOP, path], ""))
    else:
        tools.append(("nfstream", None, "not installed"))
    if argus:
        tools.append(("argus -r F -w /dev/null", [argus, "-r", path, "-w", "/dev/null"], ""))
    else:
        tools.append(("argus", None, "not installed"))
    return tools


# ---------------------------------------------------------------------------------------------------------
# suite


def count_packets(path: str, tmp: str, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", STAGES, path, tmp, "0"], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    proc.check_returncode()
    return json.loads(proc.stdout)


def bench_input(path: str, label: str, runs: int, timeout: float, with_slow: bool) -> dict:
    print(f"\n== {label}: {path}", flush=True)
    size = os.path.getsize(path)
    warm(path)
    with tempfile.TemporaryDirectory(prefix="fastflow-bench-", dir=OUT) as tmp:
        first = count_packets(path, tmp, timeout)  # also warms imports
        packets = first["packets"]
        tools = tools_for(path, tmp, packets, with_slow)
        results = {name: {"cmd": cmd, "note": note, "outcomes": []} for name, cmd, note in tools}
        stages: list[dict] = []
        stages_seg: list[dict] = []
        for run in range(runs):
            for name, cmd, _ in tools:
                r = results[name]
                if cmd is None or (r["outcomes"] and r["outcomes"][-1].status != "ok"):
                    continue
                o = measure(cmd, timeout)
                r["outcomes"].append(o)
                print(f"  run {run + 1} {name}: {o.seconds:.2f} s, {o.maxrss_kb / 1024:.0f} MB, {o.status}",
                      flush=True)
            for want, into in ((False, stages), (True, stages_seg)):
                proc = subprocess.run([sys.executable, "-c", STAGES, path, tmp, "1" if want else "0"],
                                      capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                if proc.returncode == 0:
                    into.append(json.loads(proc.stdout))
            print(f"  run {run + 1} stages: {stages[-1]['seconds'] if stages else 'failed'}", flush=True)
    return {"label": label, "path": path, "size": size, "packets": packets, "tcp_segments": first["tcp_segments"],
            "flows": first["flows"], "results": results, "stages": stages, "stages_seg": stages_seg}


def summarise(bench: dict) -> list[dict]:
    rows = []
    base = None
    for name, r in bench["results"].items():
        ok = [o for o in r["outcomes"] if o.status == "ok"]
        row = {"tool": name, "cmd": r["cmd"], "runs": len(ok)}
        if r["cmd"] is None:
            row["status"] = r["note"]
        elif not ok:
            row["status"] = r["outcomes"][-1].status if r["outcomes"] else "not run"
        else:
            med = statistics.median(o.seconds for o in ok)
            row.update(status="ok" if len(ok) == len(r["outcomes"]) else r["outcomes"][-1].status,
                       seconds=med, all_seconds=[o.seconds for o in ok],
                       pps=bench["packets"] / med, mbps=bench["size"] / 1e6 / med,
                       rss_mb=max(o.maxrss_kb for o in ok) / 1024)
            if base is None and name == "fastflow process":
                base = med
        rows.append(row)
    for row in rows:
        if "seconds" in row and base:
            row["ratio"] = row["seconds"] / base
    return rows


def stage_medians(stages: list[dict]) -> dict:
    if not stages:
        return {}
    keys = stages[0]["seconds"].keys()
    return {k: statistics.median(s["seconds"][k] for s in stages) for k in keys}


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
    for mod in ("numpy", "pyarrow", "dpkt", "fastflow"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "not installed"
    tools = {}
    for tool, args in (("tshark", ["--version"]), ("tcpdump", ["--version"])):
        exe = shutil.which(tool)
        if exe:
            out = subprocess.run([exe, *args], capture_output=True, text=True)
            tools[tool] = (out.stdout or out.stderr).splitlines()[0].strip()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "tools": tools, "commit": commit,
            "load": os.getloadavg()}


def _shown_path(path: str) -> str:
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def render(benches: list[dict], info: dict, command: str, args) -> str:
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
        "and Parquet writing for fastflow); packets/s and MB/s = input packets and input file bytes over "
        "that median; peak RSS = the child's own ru_maxrss (os.wait4), largest over the runs; ratio = "
        "tool median / `fastflow process` median on the same file (above 1: the tool is slower).",
    ]
    for b in benches:
        lines += ["", f"## {b['label']}", "",
                  f"`{_shown_path(b['path'])}`: {b['packets']:,} packets, {b['size'] / 1e6:,.1f} MB, "
                  f"{b['tcp_segments']:,} TCP segments, {b['flows']:,} connections found by fastflow.", "",
                  "| tool | median s | packets/s | MB/s | peak RSS MB | ratio to fastflow | runs (s) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in summarise(b):
            if "seconds" not in row:
                lines.append(f"| {row['tool']} | {row['status']} | | | | | |")
                continue
            note = "" if row["status"] == "ok" else f" ({row['status']})"
            runs = ", ".join(f"{s:.2f}" for s in row["all_seconds"])
            lines.append(f"| {row['tool']}{note} | {row['seconds']:.2f} | {fmt_rate(row['pps'])} | "
                         f"{row['mbps']:.0f} | {row['rss_mb']:.0f} | {row.get('ratio', float('nan')):.2f} | {runs} |")
        for title, st in (("fastflow.process()", b["stages"]), ("fastflow.process(want_segments=True)",
                                                                 b["stages_seg"])):
            med = stage_medians(st)
            if not med:
                continue
            lines += ["", f"Stages of `{title}` in one child process, medians of {len(st)} runs "
                      "(Result.stats[\"seconds\"]; write = `pyarrow.parquet.write_table(..., compression='zstd')` "
                      "timed separately):", "",
                      "| " + " | ".join(med) + " |", "|" + "---:|" * len(med),
                      "| " + " | ".join(f"{v:.3f}" for v in med.values()) + " |"]
    lines += ["", "## Commands", ""]
    if benches:
        b = benches[0]
        for name, r in b["results"].items():
            if r["cmd"] is None:
                continue
            cmd = [("python3" if c == sys.executable else c) for c in r["cmd"]]
            if name.startswith("dpkt"):
                cmd = ["python3", "-c", "<DPKT_LOOP in benchmarks/run.py>", "F"]
            elif name == "nfstream":
                cmd = ["python3", "-c", "<NFSTREAM_LOOP in benchmarks/run.py>", "F"]
            cmd = ["F" if c == b["path"] else ("OUT/" + os.path.basename(c) if os.path.isabs(c) and
                                               c.endswith(".parquet") else c) for c in cmd]
            out = " > /dev/null" if not name.startswith("fastflow") else ""
            lines.append(f"- {name}: `{shlex.join(cmd)}{out}`")
    lines += ["", f"Each command had a timeout of {args.timeout:.0f} s. stdout of every tool went to /dev/null.",
              ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=2_000_000, help="packets in each synthetic input")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200k packets, snaplen-128 input only")
    parser.add_argument("--with-slow", action="store_true", help="also run the slow peers on large inputs")
    parser.add_argument("--input", action="append", default=[], help="also benchmark this capture file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per command")
    parser.add_argument("--no-synthetic", action="store_true", help="only the --input files")
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args(argv)
    if args.quick and "--packets" not in " ".join(argv if argv is not None else sys.argv[1:]):
        args.packets = 200_000
    command = "python3 benchmarks/run.py" + ("" if not (argv or sys.argv[1:]) else
                                            " " + shlex.join(argv if argv is not None else sys.argv[1:]))
    os.makedirs(OUT, exist_ok=True)
    inputs = []
    if not args.no_synthetic:
        snaplens = [128] if args.quick else [128, FULL_SNAPLEN]
        for snaplen in snaplens:
            path = synthetic_input(args.packets, args.seed, snaplen)
            inputs.append((path, f"Synthetic, {args.packets:,} packets, seed {args.seed}, snaplen {snaplen}"))
    for path in args.input:
        inputs.append((os.path.abspath(path), f"Capture {os.path.basename(path)}"))
    benches = [bench_input(path, label, args.runs, args.timeout, args.with_slow) for path, label in inputs]
    text = render(benches, machine(), command, args)
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
