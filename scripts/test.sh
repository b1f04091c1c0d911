#!/usr/bin/env bash
# Runs the tests on both cores (pytest-xdist; JAXVIZ_TEST_WORKERS=N for another count).
# Sets up .venv (jaxviz with its torch and test extras) on first use, and again only when
# pyproject.toml changes. Extra arguments go to pytest, e.g.
# `bash scripts/test.sh tests/test_models.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[torch,test]"
source scripts/_venv.sh
exec .venv/bin/python -m pytest -q -n "${JAXVIZ_TEST_WORKERS:-2}" "$@"
