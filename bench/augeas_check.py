"""Cost of an augeas resource's check without `lens`, in process: the check's Augeas work
(its file copied into a scratch root, loaded, the sets compared: `AugeasRes._edit`, as each
check does after reading the file), for a file at a path an Augeas lens autoloads (Dovecot's
/usr/local/etc/dovecot/conf.d/*.conf, only ever inside the scratch root), the first check and
the next ones, as CPU time. `--base DIR` measures the checkout DIR too, in a child process.

    .venv/bin/python bench/augeas_check.py [--checks 20] [--base /tmp/base_w]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE = "/usr/local/etc/dovecot/conf.d/10-bench.conf"
DATA = b"protocols = imap\nmail_location = maildir:~/Maildir\n"


def measure(checks: int) -> dict[str, float]:
    """CPU seconds of the first check and the median of the next ones (this tree's code, or
    the base's: whichever `resources` is first on sys.path)."""
    from engine.handle import Handle
    from resources.augeas import AugeasRes, AugeasSet

    logging.disable(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-augeas-"))
    try:
        res = AugeasRes(name="b", file=FILE, sets=[AugeasSet(path="protocols", value="imap")])
        res.validate()
        asyncio.run(res.init(Handle(kind="augeas", name="b", hostname="h", var_dir=work)))
        times = []
        for _ in range(checks + 1):
            start = time.process_time()
            changes, _new = res._edit(DATA, False)
            times.append(time.process_time() - start)
            assert changes == []
        return {"first": times[0], "next": statistics.median(times[1:])}
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--base", type=Path, help="a checkout to measure too")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.checks)))
        return
    trees = [("this tree", Path(__file__).resolve().parents[1])]
    if args.base is not None:
        trees.insert(0, ("base", args.base.resolve()))
    for label, tree in trees:
        code = (
            f"import sys; sys.path.insert(0, {str(tree)!r}); sys.argv = ['x', '--json', "
            f"'--checks', '{args.checks}']; exec(open({__file__!r}).read())"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
        )
        got = json.loads(done.stdout)
        print(
            f"{label}: first check {got['first'] * 1e3:.1f} ms CPU, next checks median "
            f"{got['next'] * 1e3:.1f} ms CPU ({args.checks} checks)"
        )


if __name__ == "__main__":
    main()
