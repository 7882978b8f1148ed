"""Hostile inputs for every front-end, through the installed `mgmt` command (real subprocesses).

The definition of done for bad input: a bad graph or program fails before anything is applied,
naming the file (and its line where it has one), on one line, exit 2; never a traceback, never
a hang. `mutants` mutates the repository's own examples (with their managed paths moved into a
scratch directory); `check_case` runs one input through one front-end's command and returns
what broke that rule ([] if nothing did). Used by tests/fuzz/test_frontends_fuzz.py (a small
fixed seed set; `--fuzz-long`: many more) and by hand:

    .venv/bin/python -m tests.fuzz.frontends --count 200   # per front-end; prints each finding
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.helpers import MGMT, ROOT
from tests.fuzz.hostile import BIG, HUGE, LAUGHS

HANG = 120.0  # seconds one case may take (a Puppet compile takes ~1 s, more on a loaded host)
# The installed command (the venv's entry point), else the module run by this interpreter.
_INSTALLED = Path(sys.executable).with_name("mgmt")
COMMAND = [str(_INSTALLED)] if _INSTALLED.exists() else MGMT
MANAGED = "/tmp/mgmt"  # where the examples write: moved into each case's scratch directory
# Examples whose kinds touch only files and commands (their paths moved into scratch): the
# only ones `mgmt run` is given, and only once `mgmt check` has refused the mutant.
RUNNABLE = {
    "yaml": [
        "hello.yaml",
        "file.yaml",
        "file-chain.yaml",
        "diamond.yaml",
        "noop.yaml",
        "line.yaml",
    ],
    "lang": ["hello.mcl", "value.mcl", "datetime.mcl", "classes.mcl"],
    "puppet": ["puppet.pp"],
}
SUFFIX = {"yaml": ".yaml", "lang": ".mcl", "puppet": ".pp"}
# A log line of `mgmt run`: "HH:MM:SS logger: message".
_LOGGED = re.compile(r"^\d\d:\d\d:\d\d \S+: ")
_MORE = re.compile(r"^and \d+ more problems?")


def seeds(frontend: str) -> dict[str, bytes]:
    """The examples of `frontend`, their managed paths under MANAGED."""
    found = sorted((ROOT / "examples").glob("*" + SUFFIX[frontend]))
    return {p.name: p.read_bytes() for p in found}


# Mutations: each takes the bytes and a random source and returns new bytes. --------------------


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(len(data) + 1)]


def flip_bytes(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data or b" ")
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(out))
        out[i] ^= 1 << rnd.randrange(8)
    return bytes(out)


def delete_line(data: bytes, rnd: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rnd.randrange(len(lines))]
    return b"".join(lines)


def duplicate_line(data: bytes, rnd: random.Random) -> bytes:
    lines = _lines(data)
    i = rnd.randrange(len(lines))
    return b"".join(lines[: i + 1] + lines[i:])


def swap_lines(data: bytes, rnd: random.Random) -> bytes:
    lines = _lines(data)
    i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


_TOKEN = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*|\d+|\"[^\"\n]*\"|'[^'\n]*'")
_REPLACEMENTS = [
    b"0",
    b"-1",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b'""',
    b"1.5",
    b"~",
    b"$x",
    b"=>",
    BIG.encode(),
    HUGE.encode(),
    b"0x" + b"f" * 400,
    b'"' + b"a" * 100_000 + b'"',
    "é²٣".encode(),
    b"*a",
    b"&a",
    b"!!python/object:os.system",
    b"undef",
]


def swap_token(data: bytes, rnd: random.Random) -> bytes:
    """A key, value or word replaced by one of another type (or two tokens swapped)."""
    tokens = list(_TOKEN.finditer(data))
    if not tokens:
        return data + rnd.choice(_REPLACEMENTS)
    a = rnd.choice(tokens)
    if rnd.random() < 0.3:
        b = rnd.choice(tokens)
        first, second = sorted((a, b), key=lambda m: m.start())
        if first.end() <= second.start():
            return (
                data[: first.start()]
                + second.group()
                + data[first.end() : second.start()]
                + first.group()
                + data[second.end() :]
            )
    return data[: a.start()] + rnd.choice(_REPLACEMENTS) + data[a.end() :]


def insert_junk(data: bytes, rnd: random.Random) -> bytes:
    """NUL bytes, invalid UTF-8, a BOM, tabs, CR, control characters, at a random place."""
    junk = rnd.choice(
        [b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xef\xbb\xbf", b"\t", b"\r", b"\x1b[31m", b"\x85"]
    )
    i = rnd.randrange(len(data) + 1)
    return data[:i] + junk + data[i:]


def whole_file(data: bytes, rnd: random.Random) -> bytes:
    """A transformation of the whole file: CRLF, BOM, tabs, UTF-16, a very long line."""
    kind = rnd.randrange(6)
    if kind == 0:
        return data.replace(b"\n", b"\r\n")
    if kind == 1:
        return b"\xef\xbb\xbf" + data
    if kind == 2:
        return data.replace(b"  ", b"\t")
    if kind == 3:
        return data.decode("utf-8", "replace").encode("utf-16")
    if kind == 4:
        return data.replace(b"\n", b" ", rnd.randint(1, 50))
    return data + b"#" + b"x" * 2_000_000 + b"\n"


def deep_nesting(data: bytes, rnd: random.Random) -> bytes:
    depth = rnd.choice([300, 5000, 100_000])
    opener, closer = rnd.choice([(b"[", b"]"), (b"{", b"}"), (b"(", b")")])
    i = rnd.randrange(len(data) + 1)
    return data[:i] + opener * depth + b"1" + closer * depth + data[i:]


def alias_bomb(data: bytes, rnd: random.Random) -> bytes:
    """A YAML billion laughs, appended or alone (valid YAML; only the yaml front-end aliases)."""
    return LAUGHS.encode() if rnd.random() < 0.5 else data + b"\n" + LAUGHS.encode()[13:]


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    f.__name__: f
    for f in (
        truncate,
        flip_bytes,
        delete_line,
        duplicate_line,
        swap_lines,
        swap_token,
        insert_junk,
        whole_file,
        deep_nesting,
        alias_bomb,
    )
}


@dataclass(frozen=True)
class Case:
    """One input: its name (seed and mutation, for a reproducer) and its bytes; `special`: the
    input is not a file's bytes but a directory, a FIFO, a link or a missing path."""

    frontend: str
    name: str
    data: bytes = b""
    special: str = ""


SPECIALS = ["directory", "fifo", "dangling-link", "link-to-directory", "missing", "empty"]


def mutants(frontend: str, count: int, seed: int = 0) -> Iterator[Case]:
    """`count` mutants of the examples of `frontend` (deterministic for a given `seed`), after
    the special inputs (a directory, a FIFO, links, a missing path, an empty file)."""
    for special in SPECIALS:
        yield Case(frontend, special, special=special)
    rnd = random.Random(f"{frontend}:{seed}")
    examples = seeds(frontend)
    names = sorted(examples)
    for i in range(count):
        example = rnd.choice(names)
        data = examples[example]
        applied = []
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            mutation = rnd.choice(list(MUTATIONS))
            applied.append(mutation)
            data = MUTATIONS[mutation](data, rnd)
        yield Case(frontend, f"{example}#{i}:{'+'.join(applied)}", data)


# Running one case -------------------------------------------------------------------------------


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*") if p != root
    )


def _place(case: Case, scratch: Path) -> Path:
    """Write `case` as the input file in `scratch` (its managed paths moved into it)."""
    path = scratch / ("in" + SUFFIX[case.frontend])
    if case.special == "directory":
        path.mkdir()
    elif case.special == "fifo":
        os.mkfifo(path)
    elif case.special == "dangling-link":
        path.symlink_to(scratch / "nowhere")
    elif case.special == "link-to-directory":
        (scratch / "dir").mkdir()
        path.symlink_to(scratch / "dir")
    elif case.special != "missing":
        path.write_bytes(case.data.replace(MANAGED.encode(), str(scratch / "managed").encode()))
    return path


def _argv(command: str, frontend: str, path: Path) -> list[str]:
    if command == "check":
        return [*COMMAND, "check", str(path)]
    if command == "deploy":
        seeds = "http://127.0.0.1:9"  # nobody there: a good program fails to connect (exit 1)
        argv = [*COMMAND, "deploy", "--unsigned", "--insecure-cluster", "--seeds", seeds]
        return [*argv, frontend, str(path)]
    run = [*COMMAND, "run", "--tmp-prefix", "--converged-timeout", "0", "--max-runtime", "30"]
    return [*run, frontend, str(path)]


def _problems(case: Case, command: str, path: Path, code: int, stderr: str) -> list[str]:
    """What `mgmt COMMAND` exiting `code` with `stderr` broke of the rule."""
    lines = [_LOGGED.sub("", line, count=1) for line in stderr.splitlines()]
    lines = [line.removeprefix("mgmt: ") for line in lines]
    errors = [line for line in lines if not line.startswith("warning: ")]
    found = []
    if "Traceback" in stderr:
        found.append("a traceback")
    # A file missing may come (75: retry later); so may a module directory's main.mcl.
    module = case.frontend == "lang" and case.special in ("directory", "link-to-directory")
    missing = case.special in ("missing", "dangling-link") or module
    ok = {0, 2, 75} if missing else {0, 2}
    if command == "deploy":
        ok |= {1}  # a good program: nobody to push it to
    if command == "run":
        ok |= {1}  # a good program whose resource failed
    if code not in ok:
        found.append(f"exit {code}")
    if code == 2:
        # One line per problem (`mgmt check`'s), each naming the file; "and N more problems".
        named = [line for line in errors if line.startswith(str(path)) or _MORE.match(line)]
        if not errors or named != errors:
            found.append("a line that names no file")
    return found


def check_case(case: Case, command: str, base: Path) -> tuple[int, list[str], str]:
    """Run `case` through `mgmt COMMAND` (check, run, deploy) in a fresh scratch directory
    under `base`: its exit code, what broke the rule, and its stderr."""
    scratch = Path(tempfile.mkdtemp(prefix="case-", dir=base))
    try:
        path = _place(case, scratch)
        managed = scratch / "managed"
        managed.mkdir()
        before = _tree(scratch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MGMT_")}
        started = time.monotonic()
        try:
            proc = subprocess.run(
                _argv(command, case.frontend, path),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=HANG,
                cwd=scratch,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1, [f"no answer in {HANG:.0f} s"], ""
        elapsed = time.monotonic() - started
        found = _problems(case, command, path, proc.returncode, proc.stderr)
        if proc.returncode != 0 and _tree(scratch) != before:
            found.append("wrote something")
        if elapsed > HANG / 2:
            found.append(f"took {elapsed:.0f} s")
        return proc.returncode, found, proc.stderr
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


COMMANDS = {"yaml": ["check", "deploy"], "lang": ["check", "deploy"], "puppet": ["check"]}


def commands(case: Case, checked: int) -> list[str]:
    """The commands a case goes through after `mgmt check` exited `checked`: `mgmt run` only
    for a refused mutant of a runnable example (or a special input), `deploy` for yaml, lang."""
    out = [c for c in COMMANDS[case.frontend] if c != "check"]
    runnable = case.special or case.name.split("#")[0] in RUNNABLE[case.frontend]
    if checked == 2 and runnable:
        out.append("run")
    return out


def findings(case: Case, base: Path) -> list[str]:
    """What `case` broke through each command it goes through: `CASE: COMMAND: what (stderr)`."""
    code, found, err = check_case(case, "check", base)
    out = [f"{case.name}: check: {', '.join(found)}: {err[-400:]!r}"] if found else []
    for command in commands(case, code):
        _, found, err = check_case(case, command, base)
        if found:
            out.append(f"{case.name}: {command}: {', '.join(found)}: {err[-400:]!r}")
    return out


def fuzz(frontend: str, count: int, seed: int, base: Path, workers: int = 2) -> list[str]:
    """Every finding for `count` mutants of `frontend` (and the special inputs)."""
    cases = list(mutants(frontend, count, seed))
    with ThreadPoolExecutor(workers) as pool:
        return [line for lines in pool.map(lambda c: findings(c, base), cases) for line in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="mutants per front-end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("frontends", nargs="*", default=["yaml", "lang", "puppet"])
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="mgmt-fuzz-frontends-"))
    total = 0
    try:
        for frontend in args.frontends:
            found = fuzz(frontend, args.count, args.seed, base, args.workers)
            total += len(found)
            print(f"{frontend}: {args.count + len(SPECIALS)} inputs, {len(found)} findings")
            for line in found:
                print("  " + line)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
