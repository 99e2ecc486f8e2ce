#!/usr/bin/env bash
# Fuzz fastflow under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer (docs/fuzzing.md).
#   bash fuzz/run.sh                  short campaign: 1 process, 100 s (what tests/test_fuzz.py runs)
#   bash fuzz/run.sh --long           long campaign: one process per core, 1 hour
#   bash fuzz/run.sh --time S --jobs N [--corpus DIR] [--crashes DIR] [--logs DIR] [-- LIBFUZZER_FLAGS...]
#   bash fuzz/run.sh --repro FILE...  run the harness once on each file (a crash, a corpus entry)
# Builds the sanitized extensions first (fuzz/build_sanitized.sh, in build/fuzz/, never over fastflow/*.so)
# and the seeds (fuzz/make_seeds.py). New corpus entries go to --corpus (default build/fuzz/corpus, kept
# between runs), crashes, leaks and timeouts to --crashes (default build/fuzz/crashes). Prints executions,
# exec/s and coverage at the end; exits non-zero if any process found something.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=${FUZZ_BUILD_DIR:-$root/build/fuzz}

seconds=100
jobs=1
corpus=$out/corpus
crashes=$out/crashes
logs=$out/logs
repro=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) seconds=100; jobs=1 ;;
    --long) seconds=3600; jobs=$(nproc) ;;
    --time) seconds=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --corpus) corpus=$2; shift ;;
    --crashes) crashes=$2; shift ;;
    --logs) logs=$2; shift ;;
    --repro) shift; repro=("$@"); break ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown argument $1 (see the header of fuzz/run.sh)" >&2; exit 2 ;;
  esac
  shift
done

FUZZ_BUILD_DIR=$out PYTHON=$py bash fuzz/build_sanitized.sh
runtime=$("$py" -c "import atheris, os; print(os.path.join(atheris.path(), 'asan_with_fuzzer.so'))")
[ -f "$runtime" ] || { echo "run.sh: $runtime missing (atheris without its sanitizer runtime)" >&2; exit 2; }

# The sanitizers' settings (docs/fuzzing.md, "Running"): every Python object through malloc so ASan and
# LSan see them; UB and ASan errors stop the run; LSan checks once at exit (-detect_leaks=0 below turns off
# libFuzzer's per-input check only: the interpreter's caches make that fire without a leak).
export LD_PRELOAD=$runtime
export PYTHONMALLOC=malloc
export PYTHONPATH=$out/pkg
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=0:malloc_context_size=20:${ASAN_OPTIONS:-}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}
export LSAN_OPTIONS=suppressions=$root/fuzz/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}
export TMPDIR=${TMPDIR:-/dev/shm}    # the small-limits paths' spill and run files: no disk writes
harness=$root/fuzz/fuzz_capture.py

if [ ${#repro[@]} -gt 0 ]; then
  exec "$py" "$harness" -detect_leaks=0 "${repro[@]}"
fi

seeds=$out/seeds
rm -rf "$seeds"
"$py" fuzz/make_seeds.py "$seeds"
mkdir -p "$corpus" "$crashes"
mkdir -p "$logs"
rm -f "$logs"/job*.log

# -max_len: the seeds' size (16 KB of capture + 4 header bytes); -timeout: one input, on a busy machine;
# -entropic_scale_per_exec_time: favour fast inputs (the table-building paths cost 10-50 times the others)
flags=(-max_total_time="$seconds" -max_len=16388 -timeout=60 -rss_limit_mb=4096 -detect_leaks=0
       -entropic_scale_per_exec_time=1 -dict="$root/fuzz/capture.dict" -print_final_stats=1
       -artifact_prefix="$crashes/")
echo "run.sh: $jobs process(es) for ${seconds}s; corpus $corpus, crashes $crashes, logs $logs" >&2
pids=()
for ((j = 0; j < jobs; j++)); do
  # each process reloads the shared corpus (libFuzzer's -reload), so they build on each other's finds
  "$py" "$harness" "${flags[@]}" "${extra[@]}" "$corpus" "$seeds" >"$logs/job$j.log" 2>&1 &
  pids+=($!)
done
status=0
for ((j = 0; j < jobs; j++)); do
  if ! wait "${pids[$j]}"; then
    status=1
    echo "run.sh: process $j FAILED; its log ($logs/job$j.log) ends:" >&2
    grep -v '^INFO: Instrumenting' "$logs/job$j.log" | tail -n 60 >&2
  fi
done
"$py" fuzz/campaign_summary.py "$logs"/job*.log
found=$(find "$crashes" -type f | wc -l)
[ "$found" -eq 0 ] || echo "run.sh: $found file(s) in $crashes (reproduce: bash fuzz/run.sh --repro FILE)" >&2
exit $status
