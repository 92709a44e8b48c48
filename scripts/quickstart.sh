#!/usr/bin/env bash
# Set up, then run the main job on the built-in digits: AutoNL-L's cost table, a search of
# the AutoNL space toward 300M MACs (at 224x224), the derived network, a short fine-tune,
# and the fine-tuned model compiled to ONNX (fp32 + int8), checked in onnxruntime, and to a
# TVM library for this CPU, run once with its latency printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mkdir -p runs/quickstart
autonl show autonl-l --cost | tail -n 40
rm -rf runs/quickstart/search runs/quickstart/derived runs/quickstart/train runs/quickstart/onnx runs/quickstart/tvm
autonl search --target-macs 300M --cost-resolution 224 --data digits --resolution 32 \
  --steps 150 --warmup-steps 30 --batch-size 32 --out runs/quickstart/search
autonl derive runs/quickstart/search --out runs/quickstart/derived
autonl train runs/quickstart/derived --data digits --steps 150 --out runs/quickstart/train
autonl compile runs/quickstart/train --backend onnx --int8 --out runs/quickstart/onnx
autonl compile runs/quickstart/train --backend tvm --target host --out runs/quickstart/tvm
echo "kept: runs/quickstart/search/ (decisions, plots), runs/quickstart/derived/ (model), runs/quickstart/train/,"
echo "      runs/quickstart/onnx/ (model.onnx, model.int8.onnx, manifest.json), runs/quickstart/tvm/ (model.so, model.params)"
