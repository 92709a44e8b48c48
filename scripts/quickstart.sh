#!/usr/bin/env bash
# Set up, then run the main job on built-in data: AutoNL-L's costs, and a short training
# of AutoNL-S on the digits shipped with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mkdir -p runs/quickstart
autonl show autonl-l --cost | tail -n 40
autonl show autonl-l --cost --json > runs/quickstart/autonl-l.cost.json
autonl show autonl-l --format json > runs/quickstart/autonl-l.json
rm -rf runs/quickstart/train
autonl train autonl-s --data digits --resolution 32 --steps 300 --out runs/quickstart/train
echo "kept: runs/quickstart/autonl-l.cost.json, runs/quickstart/autonl-l.json, runs/quickstart/train/"
