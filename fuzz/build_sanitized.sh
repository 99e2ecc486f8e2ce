#!/usr/bin/env bash
# Build the extensions with clang, AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer's coverage
# counters (FASTFLOW_SANITIZE=fuzz in setup.py) into a separate copy of the package, never over the in-place
# build in fastflow/*.so:
#   build/fuzz/pkg/fastflow/    the package's .py files and the sanitized .so files (PYTHONPATH=build/fuzz/pkg)
#   build/fuzz/src/, temp/      a copy of setup.py and ext/ (Cython writes its .c files there), objects
# Rebuilds only what changed. Needs clang and atheris (installed by scripts/setup.sh --test).
# Prints the lines to export for running under the sanitizers (see fuzz/run.sh, which uses them).
#   FUZZ_BUILD_DIR=DIR   build somewhere else (default build/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${FUZZ_BUILD_DIR:-$root/build/fuzz}
py=${PYTHON:-$root/.venv/bin/python}

command -v clang >/dev/null 2>&1 || { echo "build_sanitized: clang not found (apt-get install clang)" >&2; exit 2; }
"$py" -c "import atheris" 2>/dev/null || { echo "build_sanitized: atheris not installed in $py (pip install atheris)" >&2; exit 2; }

mkdir -p "$out/src/ext" "$out/temp" "$out/pkg/fastflow"
# sources copied with their times kept, so that Cython and setuptools rebuild only what changed
cp -p setup.py "$out/src/"
cp -p ext/*.pyx ext/*.pxd ext/*.h "$out/src/ext/"
# the Python files fresh each time (a file removed from fastflow/ must not linger)
find "$out/pkg/fastflow" -maxdepth 1 -name '*.py' -delete
cp -p fastflow/*.py "$out/pkg/fastflow/"

cd "$out/src"
# CC/LDSHARED: clang for both; the interpreter's own flags (gcc's) stay, clang takes them
FASTFLOW_SANITIZE=fuzz CC=clang LDSHARED="clang -shared" \
  "$py" setup.py -q build_ext --parallel "$(nproc)" --build-lib "$out/pkg" --build-temp "$out/temp" \
    >"$out/build.log" 2>&1 \
  || { cat "$out/build.log" >&2; echo "build_sanitized: build failed (log above)" >&2; exit 1; }
ls "$out"/pkg/fastflow/_decode*.so >/dev/null
echo "build_sanitized: $out/pkg/fastflow" >&2
