#!/usr/bin/env bash
# Runs the tests on both cores (pytest-xdist; JAXVIZ_TEST_WORKERS=N for another count).
# Sets up .venv (jaxviz with its torch and test extras) on first use, and again only when
# pyproject.toml changes; installs Chromium for the gallery's browser test where it can
# (root with apt-get; elsewhere that test is skipped with its reason). Extra arguments go
# to pytest, e.g. `bash scripts/test.sh tests/test_models.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[torch,test]"
source scripts/_venv.sh
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (the gallery's browser test) ..." >&2
  { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } \
    >/dev/null 2>&1 || echo "could not install chromium: the browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q -n "${JAXVIZ_TEST_WORKERS:-2}" "$@"
