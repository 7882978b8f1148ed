"""A deploy's files, read from the operator's machine and encoded as one blob.

`read_program(frontend, path)` collects what a program needs: the program file itself, and
the `files/` directory beside it (the sources of its file resources); for `lang DIR/`, every
regular file under DIR (its entry is `DIR/main.mcl`). That reading is one small function,
`program_files`, so that it can follow the language's module loader once it exists (it knows
which files an `import` pulls in).

The blob is deterministic JSON (sorted keys, base64 contents) whose sha256 is its name in the
cluster: the same program deployed twice (a rollback) is stored once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from mgmt.deploy import DeployError

if TYPE_CHECKING:
    from mgmt.lang.checker import Checked

FRONTENDS = ("yaml", "lang")
LANG_ENTRY = "main.mcl"  # the program of a `lang DIR/` deploy, as in mgmt
FILES_DIR = "files"  # beside the program: the sources of its file resources
# etcd takes requests of up to 1.5 MiB (its --max-request-bytes): a blob and its record must
# fit in one transaction, so the encoded blob is at most 1 MiB.
MAX_BLOB = 1 << 20
MAX_FILES = 1000


@dataclass(frozen=True)
class Bundle:
    frontend: str  # "yaml" or "lang"
    entry: str  # the program's path among `files`
    files: dict[str, bytes]  # relative POSIX path -> contents

    def encode(self) -> bytes:
        files = {p: base64.b64encode(d).decode() for p, d in sorted(self.files.items())}
        doc = {"entry": self.entry, "files": files, "frontend": self.frontend}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    @classmethod
    def decode(cls, data: bytes) -> Bundle:
        """The bundle in `data`; DeployError if it is not one (never trusted: checked whole)."""
        try:
            doc = json.loads(data)
            frontend, entry, raw = doc["frontend"], doc["entry"], doc["files"]
            if not isinstance(raw, dict):
                raise TypeError("files")
            files = {str(p): base64.b64decode(d, validate=True) for p, d in raw.items()}
        except (ValueError, KeyError, TypeError, binascii.Error) as err:
            raise DeployError(f"not a deploy bundle: {err}") from None
        bundle = cls(str(frontend), str(entry), files)
        bundle.check()
        return bundle

    def check(self) -> None:
        if self.frontend not in FRONTENDS:
            raise DeployError(f"bundle: unknown front-end {self.frontend!r}")
        for path in self.files:
            check_relative(path)
        if self.entry not in self.files:
            raise DeployError(f"bundle: its program {self.entry!r} is not among its files")
        if len(self.files) > MAX_FILES:
            raise DeployError(f"bundle: {len(self.files)} files, at most {MAX_FILES}")

    def extract(self, dest: Path) -> Path:
        """Write the files into a new directory `dest` (made whole in a temporary directory
        beside it, then renamed: never partly there); returns the program's path."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            for rel, data in self.files.items():
                path = tmp.joinpath(*PurePosixPath(rel).parts)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest.joinpath(*PurePosixPath(self.entry).parts)


def check_relative(path: str) -> None:
    """A file name in a bundle: relative, no `..`, no empty or hidden tricks."""
    parts = PurePosixPath(path).parts
    if (
        not path
        or "\0" in path
        or "\\" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "/".join(parts) != path
    ):
        raise DeployError(f"bundle: bad file name {path!r} (relative paths only, no '..')")


def program_files(
    frontend: str,
    path: Path,
    problems: list[str] | None = None,
    compiled: list[Checked] | None = None,
) -> tuple[str, dict[str, Path]]:
    """The program's entry (relative name) and every file it needs, by relative name.

    A program file carries the local modules it imports (every file the language's module
    loader read for it), which must lie in its directory or below. Finding them compiles a
    `lang` program as `mgmt check` does: its problems, if any, are added to `problems`; the
    compiled program of a file (not of a directory: compiled from its entry file here), to
    `compiled`, if given.
    """
    if frontend == "lang" and path.is_dir():
        if not (path / LANG_ENTRY).is_file():
            raise DeployError(f"{path}: a `lang DIR/` deploy needs {path / LANG_ENTRY}")
        _imported(path / LANG_ENTRY, problems)  # DIR is carried whole, not imports outside it
        return LANG_ENTRY, _tree(path)
    if not path.is_file():
        raise DeployError(f"{path}: cannot read: {not_a_file(path)}")
    files = {path.name: path}
    if frontend == "lang":
        files.update(_imported(path, problems, compiled))
    if (path.parent / FILES_DIR).is_dir():
        for rel, file in _tree(path.parent / FILES_DIR).items():
            files[f"{FILES_DIR}/{rel}"] = file
    return path.name, files


def not_a_file(path: Path) -> str:
    """Why `path` is not a regular file, as `mgmt check` says it (a directory was "no such
    file")."""
    return (
        "a directory"
        if path.is_dir()
        else "not a regular file"
        if path.exists()
        else ("No such file or directory")
    )


def _imported(
    path: Path, problems: list[str] | None, compiled: list[Checked] | None = None
) -> dict[str, Path]:
    """The files a program's `import`s read, by name relative to its directory; the compile's
    problems into `problems`, the program compiled into `compiled` (if given)."""
    from mgmt.check import outside
    from mgmt.lang import compile_file
    from mgmt.lang.errors import CompileError

    try:
        checked = compile_file(path)
    except CompileError as err:
        if problems is not None:
            problems.extend(err.problems)
        return {}
    if compiled is not None:
        compiled.append(checked)
    base = path.parent.resolve()
    far = outside(checked, base)
    if far:
        if problems is None:
            raise DeployError(far[0])
        problems.extend(far)
        return {}
    out: dict[str, Path] = {}
    for file in checked.files:
        resolved = file.resolve()
        if not resolved.is_relative_to(base):  # (a file its imports read: said above)
            raise DeployError(f"{path}: imports {file}, outside the program's directory")
        out[resolved.relative_to(base).as_posix()] = resolved
    return out


def _tree(root: Path) -> dict[str, Path]:
    """Every regular file under `root` (symbolic links are refused: say what you mean)."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            mode = file.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise DeployError(f"{file}: a symbolic link; deploys carry regular files only")
            if stat.S_ISREG(mode):
                out[file.relative_to(root).as_posix()] = file
            if len(out) > MAX_FILES:
                raise DeployError(f"{root}: more than {MAX_FILES} files")
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                raise DeployError(f"{Path(dirpath) / name}: a symbolic link to a directory")
    return out


def read_program(
    frontend: str,
    path: Path,
    problems: list[str] | None = None,
    compiled: list[Checked] | None = None,
) -> Bundle:
    """Read the program and its files into a bundle; DeployError naming the file on problems.
    A `lang` program is compiled as `mgmt check` does (`check.check_path`) to find its
    imports: its problems go to `problems` (a `yaml` one is not checked here), the compiled
    program to `compiled` (program_files)."""
    if frontend not in FRONTENDS:
        raise DeployError(f"unknown front-end {frontend!r}: expected yaml or lang")
    from mgmt.yamlgraph import read_regular

    entry, paths = program_files(frontend, path, problems, compiled)
    files: dict[str, bytes] = {}
    total = 0
    for rel, file in paths.items():
        check_relative(rel)
        try:  # no further than the limit (a 10 GB file was read whole, then refused)
            data = read_regular(file, MAX_BLOB - total)
        except OSError as err:
            raise DeployError(f"{file}: cannot read: {err.strerror or err}") from None
        total += len(data)
        if total > MAX_BLOB:
            raise DeployError(f"{path}: the program and its files exceed {MAX_BLOB} bytes")
        files[rel] = data
    bundle = Bundle(frontend, entry, files)
    if (size := len(bundle.encode())) > MAX_BLOB:
        raise DeployError(
            f"{path}: the encoded deploy is {size:,} bytes, over the limit of {MAX_BLOB:,} "
            f"(its {len(files)} files hold {total:,} bytes; the encoding adds about a third)"
        )
    return bundle


def read_checked(frontend: str, path: Path, max_size: int) -> tuple[Bundle, list[str]]:
    """The program's bundle and its problems (one line each, `file:line:col: ...`; [] if it
    is good), checked as `mgmt check` checks it: a `lang` program compiled once (which also
    finds its imports), a `yaml` graph file parsed. DeployError if it cannot be read."""
    from mgmt.check import check_program, program_graph_problems

    problems: list[str] = []
    compiled: list[Checked] = []
    bundle = read_program(frontend, path, problems, compiled)
    if frontend == "lang" and not problems:  # run as compiled above (not compiled again)
        checked = compiled[0] if compiled else None
        problems = program_graph_problems(path, socket.gethostname(), checked)
    elif frontend != "lang":
        where = str(path / bundle.entry if path.is_dir() else path)
        problems = check_program(frontend, bundle.files[bundle.entry], where, max_size)
    return bundle, problems
