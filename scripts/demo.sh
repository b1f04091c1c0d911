#!/usr/bin/env bash
# The main job: every layer of AlexNet (seeded random weights) on the bundled photograph.
# Sets up .venv (jaxviz alone: no torch needed) on first use, and again only when
# pyproject.toml changes. Extra arguments go to `jaxviz layers`, e.g.
# `bash scripts/demo.sh vgg16 --size 128` or `bash scripts/demo.sh lenet_digits`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
source scripts/_venv.sh
if [ $# -eq 0 ]; then set -- alexnet; fi
exec .venv/bin/jaxviz layers "$@"
