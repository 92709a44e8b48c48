#!/usr/bin/env bash
# Set up, then run the whole test suite.
# The aarch64 tests need Debian's cross compiler (g++-aarch64-linux-gnu) and qemu-user;
# they are installed here when missing (as root, or through sudo when it needs no password),
# and the aarch64 TVM runtime libraries the C++ runner links against are unpacked from the
# aarch64 apache-tvm wheels (scripts/fetch_arm_runtime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  if $SUDO true 2>/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
  else
    echo "note: cannot install g++-aarch64-linux-gnu and qemu-user (not root, no sudo): the aarch64 tests will fail" >&2
  fi
fi
bash scripts/fetch_arm_runtime.sh .venv/bin/python
. .venv/bin/activate
# One xdist worker per CPU, each with one torch thread (tests/conftest.py); the longest tests
# start first on each worker (conftest.py deals them to the workers' shares), worksteal
# balances the rest. Pass -n 0 to run in one process.
python -m pytest -q --durations=15 -n logical --dist worksteal "$@"
