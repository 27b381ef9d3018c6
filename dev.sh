#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs the pinned dependencies, builds
# cnnxfer's compiled ops, then runs what was asked:
#   ./dev.sh demo     the paper's comparison on a generated world (cnnxfer demo; arguments follow)
#   ./dev.sh test     ruff, then the test suite (what CI runs); pytest arguments follow, e.g.
#                     ./dev.sh test -m "not slow"   (the default tier only)
#   ./dev.sh bench    pytest benches/ --benchmark
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"
shift || true

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# pip is quiet unless something fails; torch is pinned (see requirements-dev.txt).
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# --no-build-isolation: build against the torch just installed, not a freshly fetched one.
MAX_JOBS=${MAX_JOBS:-2} .venv/bin/python -m pip install -q --disable-pip-version-check \
  --no-build-isolation --no-deps -e .

case "$job" in
  demo)  exec .venv/bin/cnnxfer demo "$@" ;;
  test)  .venv/bin/ruff check . && exec .venv/bin/python -m pytest tests/ -q "$@" ;;
  bench) exec .venv/bin/python -m pytest benches/ --benchmark "$@" ;;
  *) echo "usage: ./dev.sh [demo|test|bench] [extra arguments]" >&2; exit 2 ;;
esac
