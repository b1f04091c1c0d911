#!/usr/bin/env bash
# The main job: `jaxviz demo`, offline, on the bundled trained digits model (its gallery
# and attribution sheets under jaxviz-demo/; the last line printed is the page to open).
# Sets up .venv (jaxviz with its digits extra, scikit-learn; no torch) on first use, and
# again only when pyproject.toml changes. With arguments, runs that jaxviz command instead, e.g.
# `bash scripts/demo.sh layers alexnet` or `bash scripts/demo.sh demo --out /tmp/demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[digits]"
source scripts/_venv.sh
if [ $# -eq 0 ]; then set -- demo; fi
exec .venv/bin/jaxviz "$@"
