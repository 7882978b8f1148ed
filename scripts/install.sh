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
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
