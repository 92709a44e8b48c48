#!/usr/bin/env bash
# Set up, then run the main job on the built-in presets: AutoNL-L's graph and cost table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mkdir -p runs/quickstart
autonl show autonl-l --cost
autonl show autonl-l --cost --json > runs/quickstart/autonl-l.cost.json
autonl show autonl-l --format json > runs/quickstart/autonl-l.json
echo "kept: runs/quickstart/autonl-l.cost.json, runs/quickstart/autonl-l.json"
