#!/usr/bin/env bash
# The whole test suite: install (idempotent), lint, type-check, then every test.
# Any non-zero exit fails, including pytest's 5 ("no tests collected").
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -p no:cacheprovider "$@"
