#!/usr/bin/env bash
# Install mgmt into ./.venv (idempotent). With --test, also the test tools (and the Debian
# packages the tests need). With --dry-run, only say which interpreter .venv would be built on
# and whether it would be rebuilt.
#
# The interpreter: the first of these that is Python >= 3.11 and can make a venv.
# 1. $PYTHON, when set (an error if it does not fit). Later runs without PYTHON keep it
#    (.venv/mgmt-python records it) as long as it fits: `rm -rf .venv` to choose again.
# 2. The system's /usr/bin/python3: on Debian the distribution's build (PGO and LTO), the one a
#    host without pyenv runs; mgmt starts 12-15% faster on it than on pyenv's default build
#    (docs/benchmarks.md, "The interpreter"). Debian's needs python3-venv to make a venv (the
#    plain install does not need root: without it, the next choice, said in one line) and
#    python3-dev for the test extra's libvirt-python; --test installs both.
# 3. python3 from PATH.
# A .venv built on another interpreter than the one chosen is rebuilt, said in one line.
set -euo pipefail
cd "$(dirname "$0")/.."

system=/usr/bin/python3
test="" dry=""
for arg in "$@"; do
    case $arg in
        --test) test=1 ;;
        --dry-run) dry=1 ;;
        *)
            echo "usage: scripts/install.sh [--test] [--dry-run]" >&2
            exit 2
            ;;
    esac
done

if [ -n "$test" ] && [ -z "$dry" ]; then
    # System packages the tests need (scripts/apt-packages.txt): only what is missing. First:
    # python3-venv makes the system's interpreter a choice.
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

# fits CANDIDATE: if the interpreter fits, its version and path (itself: a pyenv shim's or a
# symlink's target) in `version` and `python`, and true; else why not in `why`, and false.
# Debian's python3 without python3-venv lacks ensurepip.
fits() {
    local said
    said=$("$1" -c '
import os, sys
if sys.version_info < (3, 11):
    print("no is Python %d.%d, mgmt needs >= 3.11" % sys.version_info[:2])
else:
    try:
        import ensurepip, venv
    except ImportError:
        print("no cannot make a venv (on Debian: apt-get install python3-venv)")
    else:
        print("ok %d.%d.%d %s" % (sys.version_info[:3] + (os.path.realpath(sys.executable),)))
' 2>/dev/null) || said="no does not run"
    why=${said#* }
    [ "${said%% *}" = ok ] || return 1
    version=${why%% *} python=${why#* }
}

version="" python="" why="" chosen="" recorded=""
if [ -n "${PYTHON:-}" ]; then
    if ! fits "$PYTHON"; then
        echo "mgmt: PYTHON=$PYTHON $why" >&2
        exit 2
    fi
    chosen="PYTHON" recorded="$python"
elif [ -f .venv/mgmt-python ]; then
    earlier=$(<.venv/mgmt-python)
    if fits "$earlier"; then
        chosen="PYTHON of an earlier run, kept: rm -rf .venv to choose again" recorded="$python"
    else
        echo "mgmt: .venv's PYTHON of an earlier run, $earlier, $why: choosing again" >&2
    fi
fi
if [ -z "$chosen" ]; then
    if fits "$system"; then
        chosen="the system's $system"
    else
        [ ! -e "$system" ] || echo "mgmt: $system $why: using python3 from PATH" >&2
        if ! fits python3; then
            echo "mgmt: python3 from PATH $why (set PYTHON=/path/to/python3.11)" >&2
            exit 2
        fi
        chosen="python3 from PATH"
    fi
fi

rebuild=""
if [ -e .venv ] || [ -L .venv ]; then
    built=$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))' \
        2>/dev/null || true)
    [ "$built" = "$python" ] || rebuild="mgmt: .venv was built on ${built:-an interpreter that no longer runs}"
fi
if [ -n "$dry" ]; then
    echo "mgmt: .venv would be on Python $version, $python ($chosen)"
    [ -z "$rebuild" ] || echo "$rebuild: it would be rebuilt"
    exit 0
fi
if [ -n "$rebuild" ]; then
    echo "$rebuild: rebuilding it" >&2
    rm -rf .venv
fi
echo "mgmt: .venv on Python $version, $python ($chosen)" >&2
[ -e .venv ] || "$python" -m venv .venv
if [ -n "$recorded" ]; then
    printf '%s\n' "$recorded" >.venv/mgmt-python
else
    rm -f .venv/mgmt-python
fi

extras=""
[ -z "$test" ] || extras="[test]"
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
# The index of where the modules a run imports are (mgmt/quickimport.py, `Index`): recorded at
# the end of a first run of a one-file graph, in a directory of its own, with engine.uring (a
# first run's writes of many files at once import it, not this run's one). A directory changed
# in the last 2 s is left out of it (its time could be an older listing's): the byte-compile
# above has just made __pycache__ in every package directory of a new checkout, so wait.
sleep 2
index_run=$(mktemp -d)
printf 'graph: index\nresources:\n  file:\n    - name: f\n      path: %s/f\n      content: "f\\n"\n' \
    "$index_run" >"$index_run/g.yaml"
.venv/bin/python -SP -c 'import sys
sys.path.append(sys.argv[1])
from mgmt import quickimport
quickimport.record_at_exit()
import engine.uring
sys.argv[:2] = ["mgmt"]
from mgmt.__main__ import main
sys.exit(main())' "$PWD" run --converged-timeout=0 --tmp-prefix --no-watch --quiet yaml "$index_run/g.yaml" >/dev/null 2>&1 ||
    echo "mgmt: the import index was not recorded (mgmt starts without it)" >&2
rm -rf "$index_run"
# A running agent does not pick the new code up as a whole: it imports a kind's module on first
# use, so it would run new modules in its old engine (engine/codestamp.py says so when it does).
echo "mgmt: installed; restart running agents (systemctl restart mgmt): until then they run the code they started with" >&2
