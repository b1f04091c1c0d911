#!/usr/bin/env bash
# Sets up .venv (jaxviz with its torch and test extras) if needed, then runs the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_models.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[torch,test]'
exec .venv/bin/python -m pytest -q "$@"
