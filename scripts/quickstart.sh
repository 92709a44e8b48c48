#!/usr/bin/env bash
# Set up, then run the main job on the built-in digits: `autonl run` searches the AutoNL space
# toward 300M MACs (at 224x224), derives the network, fine-tunes it, compiles it to ONNX
# (fp32 + int8, checked in onnxruntime) and writes runs/quickstart/report.html; then the
# fine-tuned model is compiled to a TVM library for this CPU, run once, its latency printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
autonl run --data builtin --target-macs 300M --backend onnx --out runs/quickstart --force
rm -rf runs/quickstart-tvm
autonl compile runs/quickstart/train --backend tvm --target host --out runs/quickstart-tvm
echo "kept: runs/quickstart/ (report.html, report.md, search/, derived/, train/, deploy/, manifest.json),"
echo "      runs/quickstart-tvm/ (model.so, model.params, manifest.json)"
