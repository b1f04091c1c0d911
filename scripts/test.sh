#!/usr/bin/env bash
# Runs the tests on both cores (pytest-xdist; JAXVIZ_TEST_WORKERS=N for another count).
# Sets up .venv (jaxviz with its torch and test extras) on first use, and again only when
# pyproject.toml changes; installs Chromium for the gallery's browser test where it can
# (root with apt-get; elsewhere that test is skipped with its reason). Extra arguments go
# to pytest, e.g. `bash scripts/test.sh tests/test_models.py -x`.
# Keeps XLA's compiled programs between runs in .cache/xla-tests (JAX's persistent
# compilation cache; JAXVIZ_TEST_COMPILE_CACHE=DIR for another folder, =off for none): a
# fresh checkout compiles everything, a second run loads what did not change.
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
cache="${JAXVIZ_TEST_COMPILE_CACHE:-.cache/xla-tests}"
if [ "$cache" != off ]; then
  if [ -e "$cache" ] && [ ! -d "$cache" ]; then
    echo "JAXVIZ_TEST_COMPILE_CACHE: $cache is not a folder (expected a folder, or off)" >&2
    exit 2
  fi
  mkdir -p "$cache"
  # No eviction (JAX's would list the folder at every write): start over past 4 GiB.
  if [ "$(du -sm "$cache" | cut -f1)" -gt 4096 ]; then
    echo "emptying the test compile cache $cache (over 4 GiB)" >&2
    find "$cache" -mindepth 1 -delete
  fi
  # Every program, however quickly it compiled (the tests' are mostly sub-second); the
  # subprocesses the tests start (notebook kernels, CLI runs, several processes) inherit it.
  export JAX_COMPILATION_CACHE_DIR="$(cd "$cache" && pwd)"
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
fi
exec .venv/bin/python -m pytest -q -n "${JAXVIZ_TEST_WORKERS:-2}" "$@"
