#!/usr/bin/env bash
# Sets up .venv (jaxviz alone: no torch needed) if needed, then runs the main job:
# every layer of AlexNet (seeded random weights) on the bundled photograph.
# Extra arguments go to `jaxviz layers`, e.g. `bash scripts/demo.sh vgg16 --size 128`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
if [ $# -eq 0 ]; then set -- alexnet; fi
exec .venv/bin/jaxviz layers "$@"
