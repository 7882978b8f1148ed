#!/usr/bin/env bash
# The whole test suite: install (idempotent), lint, type-check, then every test.
# Any non-zero exit fails, including pytest's 5 ("no tests collected").
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The whole suite runs on two workers (pytest-xdist): most of it waits on subprocesses, etcd
# and fsync, not the CPU. One worker runs a test file whole, in order, as the serial run does
# (module fixtures start once; a file's fixed paths and ports are its own); the tests marked
# `host` take turns: one worker runs all the files whose tests take the host lock
# (tests/conftest.py, pytest_xdist_make_scheduler). Tests named on the command line run in this one
# process, as before (`-n 2` after them runs them on workers too). The slowest 30 are listed.
workers=(-n "${MGMT_TEST_WORKERS:-3}" --dist loadfile)
for arg in "$@"; do
    if [ -e "${arg%%::*}" ]; then
        workers=()
        break
    fi
done
.venv/bin/python -m pytest -p no:cacheprovider --durations=30 "${workers[@]}" "$@"
