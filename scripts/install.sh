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
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
    # System packages the tests need (scripts/apt-packages.txt): only what is missing.
    missing=()
    while read -r pkg; do
        [ -z "$pkg" ] || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi
# compat mode: a plain path entry; the default editable finder costs ~25 ms at every start.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e ".${extras}"
# pip's `mgmt` script imports `re` (~10 ms of every `mgmt deploy`, whose thin path avoids it):
# the same entry point (pyproject's `mgmt.__main__:main`) without it, and without `site` (-S,
# ~5 ms): this checkout on the path; `mgmt.full_site` runs `site` when needed. Nor the script's
# own directory first on the path (-P): .venv/bin holds no module, and every top-level import
# looked there first (80 stat calls, 1.3% of a cron run's instructions).
printf '#!%s -SP\nimport sys\nsys.path.append(%s)\nfrom mgmt.__main__ import main\nsys.exit(main())\n' \
    "$PWD/.venv/bin/python" "$(.venv/bin/python -c 'import os; print(repr(os.getcwd()))')" >.venv/bin/mgmt
# Byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile from source.
.venv/bin/python -m compileall -q engine resources mgmt >/dev/null
