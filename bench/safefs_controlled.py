"""What `safefs.controlled_by_others` costs a call (the safe-path rule's check of one
directory's stat: every directory of a checked walk, the proxy's cache per request), for a
0755 directory of root's (/usr). Run it under callgrind, once with N calls and once with none,
against each tree: the difference over N is the instructions a call.

    valgrind --tool=callgrind .venv/bin/python bench/safefs_controlled.py TREE 20000
    valgrind --tool=callgrind .venv/bin/python bench/safefs_controlled.py TREE 0
"""

from __future__ import annotations

import inspect
import os
import sys


def main() -> None:
    sys.path.insert(0, sys.argv[1])  # the tree measured (BASE's signature had no `where`)
    from engine import safefs

    fd = os.open("/usr", os.O_PATH)
    st = os.fstat(fd)
    check = safefs.controlled_by_others
    args = (st, fd) if "where" in inspect.signature(check).parameters else (st,)
    for _ in range(int(sys.argv[2])):
        check(*args, sticky_ok=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
