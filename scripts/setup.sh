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
# The built-in dataset fashion-mnist reads the files of Debian's package dataset-fashion-mnist
# (30 MB, MIT licence); installed here when missing (as root, or through sudo when it needs
# no password), unless AUTONL_FASHION_MNIST names a folder of its files. Where it cannot be,
# one note, and setup goes on: only --data fashion-mnist needs it.
OWN_FASHION=${AUTONL_FASHION_MNIST:-}
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && { [ -z "$OWN_FASHION" ] || [ ! -d "$OWN_FASHION" ]; }; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  if ! command -v apt-get >/dev/null; then
    echo "note: no apt-get here, so Fashion-MNIST was not installed: for --data fashion-mnist set AUTONL_FASHION_MNIST to a folder with its four .gz files" >&2
  elif ! $SUDO true 2>/dev/null; then
    echo "note: cannot install dataset-fashion-mnist (not root, no sudo): for --data fashion-mnist run 'sudo apt-get install dataset-fashion-mnist' or set AUTONL_FASHION_MNIST" >&2
  elif ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1; then
    echo "note: 'apt-get install dataset-fashion-mnist' failed: for --data fashion-mnist install it by hand or set AUTONL_FASHION_MNIST" >&2
  fi
fi
