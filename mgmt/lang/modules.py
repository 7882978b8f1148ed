"""Modules: what an `import "..."` names, and the files of a program's local modules.

As in mgmt, an import is one of:
- a system module, built in: `import "fmt"`, `import "golang/strings"` (no `.mcl`, no `/` at
  the end);
- a local file, relative to the directory of the file importing it: `import "foo.mcl"`
  (its names are `$foo.x`, `foo.f()`, `include foo.c`);
- a local directory: `import "dir/"`, whose `metadata.yaml` (optional) names the entry file
  (`main:`, default `main.mcl`) and the `files:` and `path:` directories (mgmt's defaults);
- a remote module (`git://host/path/`), read from the `path:` directory of the nearest
  `metadata.yaml` that sets one (mgmt downloads them; we do not: it must be there).

The default name of an import is its last path segment, lower-cased, `-` as `_`, without a
`mgmt-` prefix or a `.mcl` suffix (`import "x" as y` renames it; `as *` merges its names in).

`ModuleLoader` reads every file of a program, each once (its `read` map is what a deploy must
bundle, and its digest tells a reload whether any changed); the checker calls it for each local
import and checks what it returns (mgmt.lang.checker).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgmt.lang.errors import CompileError, Pos
from mgmt.yamlgraph import read_regular

METADATA = "metadata.yaml"
MAIN = "main.mcl"
MAX_METADATA = 64 * 1024  # bytes of one metadata.yaml
_ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ImportName:
    """A parsed import string."""

    name: str  # as written
    alias: str  # the default name it is known by
    system: bool  # a built-in module ("fmt", "golang/strings")
    file: bool  # a local .mcl file
    path: str  # local: relative path (a dir ends with "/"); remote: host/path/
    remote: bool = False


def parse_import(name: str) -> ImportName:
    """What `import "name"` names; ValueError (a sentence) if it is not a valid import."""
    if not name:
        raise ValueError("empty import name")
    if name.startswith("/"):
        raise ValueError("absolute paths cannot be imported (a local module is relative)")
    scheme, sep, rest = name.partition("://")
    remote = bool(sep)
    path = rest if remote else name
    if remote and not scheme.isalpha():
        raise ValueError("not a valid import name")
    clean = posixpath.normpath(path) if path else ""
    if path not in (clean, clean + "/") or clean in (".", ""):
        raise ValueError(f"the path is not clean (it would be {clean!r})")
    last = clean.rstrip("/").rsplit("/", 1)[-1]
    is_file = not remote and path.endswith(".mcl")
    if is_file:
        last = last.removesuffix(".mcl")
    if last.startswith("mgmt-") and len(last) > len("mgmt-"):
        last = last.removeprefix("mgmt-")
    alias = last.replace("-", "_").lower()
    system = not remote and not is_file and not path.endswith("/")
    if not system and not _ALIAS.match(alias):
        raise ValueError(
            f"its name would be {alias!r}: a name starts with a letter and has only letters, "
            "digits and _ (import it `as` another name)"
        )
    if remote:
        path = path if path.endswith("/") else path + "/"
    return ImportName(name, alias, system, is_file, path, remote)


@dataclass
class Metadata:
    """A module's metadata.yaml, as mgmt defines it (every path relative to its directory)."""

    main: str = MAIN  # the entry file
    path: str = ""  # where remote modules are looked for ("" = the parent's, then none)
    files: str = "files/"  # extra files the module uses
    license: str = ""
    parentpathblock: bool = False  # do not look in the parents' `path`


def _load_yaml(data: bytes) -> tuple[Any, dict[str, tuple[int, int]]]:
    """YAML as mgmt's parser reads it, with the line and column of each top-level key. mgmt's
    parser also takes tabs between a value and its comment (`main: "x.mcl"\t# ...`, as in
    mgmt's own examples), which PyYAML refuses; on such an error, the tabs after a line's first
    non-blank character are read as spaces (one each: an error still found is at its line and
    column in the file as written)."""
    text = data.decode(errors="replace")
    try:
        return yaml.safe_load(data) or {}, _key_places(text)
    except yaml.YAMLError:
        spaced = []
        for line in text.splitlines(keepends=True):
            body = line.lstrip(" \t")
            spaced.append(line[: len(line) - len(body)] + body.replace("\t", " "))
        return yaml.safe_load("".join(spaced)) or {}, _key_places("".join(spaced))


def _key_places(text: str) -> dict[str, tuple[int, int]]:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(key.value): (key.start_mark.line + 1, key.start_mark.column + 1)
        for key, _value in node.value
    }


def read_metadata(file: Path, data: bytes, name: str | None = None) -> Metadata:
    """Parse a metadata.yaml's bytes (empty means the defaults); CompileError naming it
    (`name`, as ModuleLoader.name shows it)."""
    shown = str(file) if name is None else name
    where = Pos(shown, 1, 1)
    if len(data) > MAX_METADATA:
        raise CompileError.at(where, f"metadata is larger than {MAX_METADATA:,} bytes")
    try:
        raw, places = _load_yaml(data)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = Pos(shown, mark.line + 1, mark.column + 1)
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise CompileError.at(where, f"metadata: {problem}") from None
    if not isinstance(raw, dict):
        raise CompileError.at(where, "metadata must be a mapping (main:, files:, path:...)")
    meta = Metadata()

    def at(key: str) -> Pos:
        """Where a key is written (the file's start for a default's problem)."""
        return Pos(shown, *places[key]) if key in places else where

    for key, value in raw.items():
        if key not in Metadata.__dataclass_fields__:
            known = ", ".join(Metadata.__dataclass_fields__)
            raise CompileError.at(at(str(key)), f"metadata: unknown key {key!r}; keys: {known}")
        wanted = bool if key == "parentpathblock" else str
        if not isinstance(value, wanted) or (wanted is str and value is None):
            raise CompileError.at(at(key), f"metadata: {key} must be a {wanted.__name__}")
        setattr(meta, key, value)
    if meta.main.startswith("/") or meta.main.endswith("/") or not meta.main:
        raise CompileError.at(at("main"), "metadata: main must be a relative file path")
    for key in ("path", "files"):
        value = getattr(meta, key)
        if value and (value.startswith("/") or not value.endswith("/")):
            raise CompileError.at(
                at(key), f"metadata: {key} must be empty or a relative directory ending in /"
            )
    return meta


@dataclass
class Module:
    """One loaded module file: its text, where it is, and its directory's metadata chain."""

    file: Path
    text: str
    # The metadata of the directory module it belongs to and of those above it (innermost
    # first), with the directory each one is in: where remote modules are searched.
    metadata: tuple[tuple[Path, Metadata], ...] = ()


def files_digest(read: dict[Path, bytes]) -> str:
    """One digest of a program's files (path and content, in the order they were read)."""
    total = hashlib.sha256()
    for path, data in read.items():
        total.update(f"{path}\0{len(data)}\0".encode())
        total.update(data)
    return total.hexdigest()


def read_again(files: list[Path]) -> str:
    """The digest the files have now: equal to the program's digest when none of them changed.
    One that cannot be read counts as why (missing, a directory...): a module's directory
    appearing where a program looked for it is a change."""
    return files_digest({path: _bytes_now(path) for path in files})


def _bytes_now(path: Path) -> bytes:
    try:
        return read_regular(path)
    except OSError as err:
        return f"\0unreadable {err.errno}".encode()


@dataclass
class ModuleLoader:
    """Reads a program's files, each once: `read` holds each one's bytes in the order read,
    the entry file first (what a deploy bundles; `digest()` says whether any changed).

    `modules_dir` is the global directory of remote modules (mgmt's `--module-path`), if any.
    """

    modules_dir: Path | None = None
    read: dict[Path, bytes] = field(default_factory=dict)
    _modules: dict[Path, Module] = field(default_factory=dict)
    # Files and directories looked for and not found (an import of a module not written yet):
    # a program refused for them is compiled again when they appear.
    missing: list[Path] = field(default_factory=list)
    # Each local or remote import read: where it is, its name, the module's entry file.
    imports: list[tuple[Pos, str, Path]] = field(default_factory=list)
    # How the program's directory was given, and where it is (`name`): set by `entry`.
    given: tuple[str, Path] | None = None

    def name(self, path: Path) -> str:
        """How a file of the program is named in its problems: in the form the program was
        given (`mymod/main.mcl` beside `main.mcl`, `/srv/p/mymod/main.mcl` beside
        `/srv/p/main.mcl`), a path the operator can open from where mgmt was started; a file
        outside the program's directory (a remote module's), in full."""
        if self.given is None:
            return str(path)
        shown, real = self.given
        try:
            inside = path.relative_to(real)
        except ValueError:
            return str(path)
        return posixpath.join(shown, str(inside)) if shown else str(inside)

    def start(self, given: str, directory: bool) -> None:
        """The program as given (a file, or a `directory`): the base of `name`."""
        if self.given is None:
            path = Path(given)
            self.given = (
                given if directory else posixpath.dirname(given),
                (path if directory else path.parent).resolve(),
            )

    @property
    def files(self) -> list[Path]:
        return list(self.read)

    def looked_at(self) -> tuple[list[Path], str]:
        """Every path this load depended on (read or missing) and their digest as read (a
        missing one as it is now, just after), comparable with read_again's of the same list."""
        files = [*self.read, *(p for p in self.missing if p not in self.read)]
        return files, files_digest({p: self.read.get(p) or _bytes_now(p) for p in files})

    def digest(self) -> str:
        return files_digest(self.read)

    def entry(self, target: Path) -> Module:
        """The program to run: a .mcl file, or a directory (its metadata.yaml names the entry
        file, main.mcl by default)."""
        directory = target.is_dir()
        self.start(str(target), directory)
        if directory:
            return self._directory(target, ())
        # A link to nowhere: named as given (where the fix goes), not as where it points.
        return self._read(target.resolve() if target.exists() else target.absolute(), ())

    def load(self, imp: ImportName, importer: Module, pos: Pos) -> Module:
        """The entry file of a local or remote import made by `importer`; CompileError at
        the import's position if it is missing (at its own for a bad metadata.yaml)."""
        module = self._load(imp, importer, pos)
        self.imports.append((pos, imp.name, module.file))
        return module

    def _load(self, imp: ImportName, importer: Module, pos: Pos) -> Module:
        base = importer.file.parent
        target = base / imp.path
        if imp.file:
            if not target.is_file():
                self.missing.append(target)
                raise CompileError.at(pos, f'import "{imp.name}": no such file {self.name(target)}')
            return self._read(target.resolve(), importer.metadata)
        if not imp.remote:
            if not target.is_dir():
                self.missing.append(target)
                shown = self.name(target)
                raise CompileError.at(pos, f'import "{imp.name}": no such directory {shown}')
            return self._directory(target, importer.metadata)
        for where in self._search_path(importer.metadata):
            candidate = where / imp.path
            if (candidate / METADATA).is_file():
                return self._directory(candidate, importer.metadata)
        raise CompileError.at(
            pos,
            f'import "{imp.name}": remote module not found (looked in the `path:` of the '
            "metadata.yaml files above the program; modules are not downloaded)",
        )

    def _search_path(self, chain: tuple[tuple[Path, Metadata], ...]) -> list[Path]:
        found: list[Path] = []
        for directory, meta in chain:
            if meta.path:
                found.append(directory / meta.path)
            if meta.parentpathblock:
                break
        if self.modules_dir is not None:
            found.append(self.modules_dir)
        return found

    def _directory(self, directory: Path, parents: tuple[tuple[Path, Metadata], ...]) -> Module:
        directory = directory.resolve()
        meta_file = directory / METADATA
        meta = Metadata()
        if meta_file.is_file():
            from mgmt.lang import read_program

            data = read_program(meta_file, self.name(meta_file))
            self.read[meta_file] = data
            meta = read_metadata(meta_file, data, self.name(meta_file))
        return self._read((directory / meta.main).resolve(), ((directory, meta), *parents))

    def _read(self, file: Path, chain: tuple[tuple[Path, Metadata], ...]) -> Module:
        from mgmt.lang import decode, read_program

        known = self._modules.get(file)
        if known is not None:
            return known
        try:
            data = read_program(file, self.name(file))
        except CompileError:
            self.missing.append(file)
            raise
        self.read[file] = data
        module = self._modules[file] = Module(file, decode(data, self.name(file)), chain)
        return module
