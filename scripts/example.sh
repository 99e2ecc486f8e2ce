#!/usr/bin/env bash
# Set everything up, run the main job on the bundled example capture, and print the annotated result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
.venv/bin/fastflow process examples/seed.pcap -o out/flows.parquet --segments out/segments.parquet --overwrite
.venv/bin/fastflow show out/flows.parquet
.venv/bin/fastflow show out/flows.parquet --conn 0
