#!/usr/bin/env bash
# Set up fastflow on a fresh Debian machine, as root: system packages, a virtual environment (.venv), the build.
#   bash scripts/setup.sh          what `fastflow process` needs
#   bash scripts/setup.sh --test   also the test dependencies and the reference tools (tshark, tcpdump, capinfos)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

packages=()
dpkg -s libpcap-dev >/dev/null 2>&1 || packages+=(libpcap-dev)
command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
command -v gcc >/dev/null 2>&1 || packages+=(gcc)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || packages+=(python3-venv python3-dev)
if [ "$with_tests" = 1 ]; then
  command -v tshark >/dev/null 2>&1 || packages+=(tshark)
  command -v tcpdump >/dev/null 2>&1 || packages+=(tcpdump)
  command -v capinfos >/dev/null 2>&1 || packages+=(wireshark-common)
  # the fuzz test's sanitized build (fuzz/build_sanitized.sh): clang with libFuzzer's instrumentation
  command -v clang >/dev/null 2>&1 || packages+=(clang)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  echo "setup: installing ${packages[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$with_tests" = 1 ]; then
  # the build tools too, so that `setup.py build_ext --inplace` (README, Development) works in .venv
  .venv/bin/python -m pip install -q "Cython>=3.1" "setuptools>=77"
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
# bytecode compiled now: where PYTHONDONTWRITEBYTECODE is set, Python would compile every module at every run
.venv/bin/python -m compileall -q fastflow >/dev/null
echo "setup: ready ($(.venv/bin/fastflow --version))" >&2
