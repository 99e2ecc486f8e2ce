#!/usr/bin/env bash
# Set everything up (with the reference tools) and run the whole test suite, spread over up to 4 cores
# (pytest-xdist; each test runs in one worker process, whole). Arguments go to pytest: `-n 0` runs it
# in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
workers=$(nproc)
[ "$workers" -le 4 ] || workers=4
spread=()
[ "$workers" -lt 2 ] || spread=(-n "$workers")
.venv/bin/python -m pytest "${spread[@]}" "$@"
