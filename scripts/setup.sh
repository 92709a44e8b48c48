#!/usr/bin/env bash
# Create .venv (Python 3.10+) and install autonl into it, editable, with the test extras.
# torch is installed first, pinned to 2.13.0, so that nothing pulls a newer (CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@"; }
python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || pip_install "torch==2.13.0"
pip_install -e ".[test]"
