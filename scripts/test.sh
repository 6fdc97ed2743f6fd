#!/usr/bin/env bash
# The checks CI runs (after scripts/setup.sh): lint, types, then the tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/pipeline -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

$PY -m ruff check .            # rules: pyproject [tool.ruff]
$PY scripts/typecheck.py       # mypy, settings: pyproject [tool.mypy]
$PY -m pytest "$@"
