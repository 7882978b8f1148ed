#!/usr/bin/env bash
# Install mgmt into ./.venv (idempotent). With --test, also the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "mgmt needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
# compat mode: a plain path entry; the default editable finder costs ~25 ms at every start.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e ".${extras}"
# Byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile from source.
.venv/bin/python -m compileall -q engine resources mgmt >/dev/null
