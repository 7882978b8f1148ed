"""file's modes: octal, or chmod-style symbolic clauses applied to the current bits."""

from __future__ import annotations

import re
import stat

_OCTAL = re.compile(r"0?[0-7]{3,4}")
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_SHIFT = {"u": 6, "g": 3, "o": 0}
_SPECIAL = {"u": stat.S_ISUID, "g": stat.S_ISGID, "o": stat.S_ISVTX}


def mode_after(spec: str, current: int, is_dir: bool) -> int:
    """The permission bits that `spec` (octal, or chmod-style symbolic) gives `current`.

    Symbolic clauses are `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma separated, applied in
    order; no "who" means "a" (the umask is not consulted). Raises ValueError for bad specs.
    """
    if _OCTAL.fullmatch(spec):
        return int(spec, 8)
    mode = current & 0o7777
    for clause in spec.split(","):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"bad mode clause {clause!r}")
        who = match.group(1).replace("a", "ugo") or "ugo"
        for op, perms in _ACTION.findall(match.group(2)):
            mode = _apply_action(mode, who, op, perms, is_dir)
    return mode


def _apply_action(mode: int, who: str, op: str, perms: str, is_dir: bool) -> int:
    bits = 0
    for w in set(who):
        if perms in _SHIFT:  # copy another class's bits, e.g. "g=u"
            bits |= ((mode >> _SHIFT[perms]) & 7) << _SHIFT[w]
            continue
        rwx = 4 * ("r" in perms) + 2 * ("w" in perms) + ("x" in perms)
        if "X" in perms and (is_dir or mode & 0o111):
            rwx |= 1
        bits |= rwx << _SHIFT[w]
        if ("s" in perms and w != "o") or ("t" in perms and w == "o"):
            bits |= _SPECIAL[w]
    if op == "+":
        return mode | bits
    if op == "-":
        return mode & ~bits
    cleared = 0
    for w in set(who):
        cleared |= (7 << _SHIFT[w]) | _SPECIAL[w]
    return (mode & ~cleared) | bits
