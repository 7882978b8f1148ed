"""augeas: values in a config file, set through an Augeas lens (mgmt's augeas).

Augeas (libaugeas, through ctypes; no Python binding needed) never touches the real file:
the file is copied into a private scratch root under the resource's var dir, Augeas loads,
gets, sets and saves there, and the result is written back through `engine.safefs`
(atomically, keeping mode and owner, following no symlink). As in mgmt, each set is compared
with `get` first and the file is saved only when one differs; with `lens`, only that lens is
loaded, for that file. The watch is inotify on the file. See docs/resources/augeas.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from engine.watcher import PathWatcher
from resources._lib.missing import Missing, read_existing, would_wait
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do, value_change
from resources._lib.proc import file_lock
from resources._lib.rewrites import wrote

NO_LOAD, NO_MODL_AUTOLOAD = 1 << 5, 1 << 6  # aug_init flags
NS = "Xmgmt"  # the load entry for our one file (mgmt's name: no lens is called that)
READ_LIMIT = 16 << 20
# A step that leaves the file's tree: `..`, or an axis up (parent::, ancestor-or-self::).
OUTSIDE = re.compile(r"(^|/)\s*\.\.\s*($|/|\[)|(parent|ancestor)[a-z-]*::")


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("augeas")
    if name is None:
        raise ResourceError("libaugeas is not installed (Debian: libaugeas0, augeas-lenses)")
    lib = ctypes.CDLL(name)
    lib.aug_init.restype = ctypes.c_void_p
    lib.aug_init.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
    lib.aug_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    lib.aug_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.aug_load.argtypes = [ctypes.c_void_p]
    lib.aug_save.argtypes = [ctypes.c_void_p]
    lib.aug_close.argtypes = [ctypes.c_void_p]
    lib.aug_error_message.restype = ctypes.c_char_p
    lib.aug_error_message.argtypes = [ctypes.c_void_p]
    lib.aug_error_details.restype = ctypes.c_char_p
    lib.aug_error_details.argtypes = [ctypes.c_void_p]
    return lib


# The Augeas module whose lens autoload picked for a file (file -> "Sshd"), found by the first
# check of the file without `lens`: the next ones load only that module (~20 ms), not every
# lens Augeas has (~300 ms; docs/benchmarks.md). A property of the installed lenses: kept for
# the life of the process.
_MODULES: dict[str, str] = {}

# libaugeas is used by one handle at a time in the process, from its opening to its close.
# Compiling a lens' regular expression (lazily: in a load, get, set or save) sets glibc's
# process-wide `re_syntax_options`, calls re_compile_pattern, which reads it, and then puts the
# old value back: a second handle's compile in another thread could find the first's restored
# default (GNU Emacs syntax, where `(`, `|` and `{` are plain characters) and compile a lens'
# pattern to one that matches nothing ("cannot parse sshd_config: Input string does not match
# at all", seen once in CI with two augeas resources checked at the same time).
_IN_USE = threading.Lock()


class Augeas:
    """One Augeas handle over a root directory (blocking calls: use from a worker thread). It
    holds the process' turn at libaugeas (_IN_USE) until `close()`, which must follow."""

    def __init__(self, root: str, lens: str | None, file: str) -> None:
        self.lib = _lib()
        self.aug = None
        _IN_USE.acquire()
        self._turn = True
        try:
            self._open(root, lens, file)
        except BaseException:
            self.close()
            raise

    def _open(self, root: str, lens: str | None, file: str) -> None:
        module = None if lens else _MODULES.get(file)
        if module is not None and not self._load_module(root, module, file):
            module = None  # not as it was: every lens, as the first time
        if self.aug is None:
            self._init(root, NO_MODL_AUTOLOAD | NO_LOAD if lens else 0)
        if lens:
            self.set(f"/augeas/load/{NS}/lens", lens)
            self.set(f"/augeas/load/{NS}/incl", file)
            if self.lib.aug_load(self.aug) < 0:
                raise ResourceError(f"augeas: cannot load {file} with {lens}: {self._error()}")
        problem = self.get(f"/augeas/files{file}/error/message")
        if problem is not None:
            raise ResourceError(f"augeas: cannot parse {file}: {problem}")
        if lens and (problem := self.get(f"/augeas/load/{NS}/error")) is not None:
            raise ResourceError(f"augeas: no lens named {lens} ({problem})")
        picked = self.get(f"/augeas/files{file}/lens")
        if picked is None:  # else a set is never saved
            raise ResourceError(
                f"augeas: no Augeas lens handles {file}: give `lens` (e.g. Sshd.lns)"
            )
        if not lens and module is None and picked.startswith("@"):
            _MODULES[file] = picked[1:]  # "@Sshd": the autoload transform of module Sshd

    def _init(self, root: str, flags: int) -> None:
        self.aug = self.lib.aug_init(root.encode(), None, flags)
        if not self.aug:
            raise ResourceError("augeas: cannot initialise (are the lenses installed?)")

    def _load_module(self, root: str, module: str, file: str) -> bool:
        """Load `file` with the autoload transform of `module` ("@Module") alone: whether it
        parsed (else the handle is closed, for the caller to load every lens: the lens
        autoload picks then says why, or is another). "@Module" needs the module loaded,
        which naming one of its lenses does: every autoloaded module has an `lns`."""
        self._init(root, NO_MODL_AUTOLOAD | NO_LOAD)
        self.set(f"/augeas/load/{NS}0/lens", f"{module}.lns")
        self.set(f"/augeas/load/{NS}0/incl", f"{file}.{NS}")  # no such file: a module load
        self.set(f"/augeas/load/{NS}/lens", f"@{module}")
        self.set(f"/augeas/load/{NS}/incl", file)
        loaded = self.lib.aug_load(self.aug) >= 0 and self.get(f"/augeas/load/{NS}/error") is None
        parsed = loaded and self.get(f"/augeas/files{file}/error") is None  # else autoload says
        if parsed and self.get(f"/augeas/files{file}/lens") == f"@{module}":
            return True
        self._free()
        _MODULES.pop(file, None)
        return False

    def close(self) -> None:
        """Free the handle and give up the turn at libaugeas (once)."""
        self._free()
        if self._turn:
            self._turn = False
            _IN_USE.release()

    def _free(self) -> None:
        if self.aug:
            self.lib.aug_close(self.aug)
            self.aug = None

    def get(self, path: str) -> str | None:
        value = ctypes.c_char_p()
        found = self.lib.aug_get(self.aug, path.encode(), ctypes.byref(value))
        if found < 0:
            raise ResourceError(f"augeas: cannot get {path}: {self._error()}")
        return value.value.decode() if found and value.value is not None else None

    def set(self, path: str, value: str) -> None:
        if self.lib.aug_set(self.aug, path.encode(), value.encode()) < 0:
            raise ResourceError(f"augeas: cannot set {path}: {self._error()}")

    def save(self, file: str) -> None:
        if self.lib.aug_save(self.aug) < 0:
            raise ResourceError(f"augeas: cannot save {file}: {self._save_problem(file)}")

    def _save_problem(self, file: str) -> str:
        """Why the save failed, without the values: Augeas' message goes on with the file's
        whole tree, values included, and the lens' pattern (kilobytes, secrets among them):
        only its first line is kept, with the error's kind and the tree path it names."""
        error = f"/augeas/files{file}/error"
        message = self.get(f"{error}/message")
        if message is None:
            return self._error()
        first = message.split("\n", 1)[0].strip()
        where = [
            f"{key} {value}" for key in ("path", "lens") if (value := self.get(f"{error}/{key}"))
        ]
        return f"{first} ({'; '.join([self.get(error) or 'error', *where])})"

    def _error(self) -> str:
        message = (self.lib.aug_error_message(self.aug) or b"").decode()
        details = (self.lib.aug_error_details(self.aug) or b"").decode()
        return f"{message} ({details})" if details else message


def _steps(path: str) -> list[str]:
    """The steps of an Augeas path: split on '/' outside [predicates] and quotes."""
    steps, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(path):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "/" and depth == 0:
            steps.append(path[start:i].strip())
            start = i + 1
    return [*steps, path[start:].strip()]


@dataclass(kw_only=True)
class AugeasSet:
    # The path below the file's tree, e.g. "X11Forwarding" or "Match[1]/Settings/X". Required.
    path: str
    # The value to set it to (a YAML true/false/number is its text, as in mgmt). Required.
    value: str | bool | int

    @property
    def text(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value)


@register("augeas")
@dataclass(kw_only=True, eq=False)
class AugeasRes(Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # The file to edit (absolute; it must exist). Required.
    file: str
    # The lens (e.g. "Sshd.lns"); only it is loaded. Default None: Augeas picks by path.
    lens: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The values to set, in order. Default: none.
    sets: list[AugeasSet] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        if not self.file.startswith("/") or self.file.endswith("/") or "\0" in self.file:
            raise ValidationError(
                f"expected the absolute path of a file, got {self.file!r}", "file"
            )
        if self.lens is not None and not self.lens.endswith(".lns"):
            raise ValidationError(f"expected a lens name ending in .lns, got {self.lens!r}", "lens")
        for index, item in enumerate(self.sets):
            if (
                not item.path
                or item.path.startswith("/")
                or "\0" in item.path + item.text
                or OUTSIDE.search(item.path)
            ):
                raise ValidationError(
                    f"expected a path below the file's tree, got {item.path!r}",
                    f"sets[{index}].path",
                )

    async def watch(self) -> None:
        async with PathWatcher([self.file]) as changes:
            await self.handle.event()
            async for _ in changes:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        async with file_lock(self.handle.shared, self.file):  # other edits of the file wait
            return await self._check_apply(apply)

    async def _check_apply(self, apply: bool) -> bool:
        try:
            original = await in_thread(self._read)
        except Missing as err:
            return await would_wait(
                self.handle, err, apply, f"set {len(self.sets)} values in {self.file}"
            )
        changes, new = await in_thread(functools.partial(self._edit, original[0], apply))
        if not changes:
            return nothing_to_do(self.handle, f"{self.file} has the {len(self.sets)} values")
        _data, mode, uid, gid = original
        write = functools.partial(self._write, new, mode, uid, gid)
        # The values are not shown (a `requirepass`, a password in a config): the paths are.
        told = [
            value_change(f"{path} in {self.file}", have is not None) for path, _, have in changes
        ]
        steps = [Step(would, "", None) for would, _done in told]
        steps.append(Step(f"save {self.file}", f"saved {self.file}", write, slow=True))
        await apply_steps(self.handle, steps, apply, errors=(OSError,))
        if apply:
            for _would, done in told:
                self.handle.logger.info("%s", done)
            wrote(self.handle, self.file)
        return False

    def _read(self) -> tuple[bytes, int, int, int]:
        """The file's content, mode and owner (it must exist, as a regular file)."""
        data, st = read_existing(self.file, READ_LIMIT, "the file")
        return data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    def _edit(self, data: bytes, save: bool) -> tuple[list[tuple[str, str, str | None]], bytes]:
        """The sets that differ as (path, value, current), and the edited content (when
        `save`), from a private copy (in a worker thread)."""
        with self._scratch(data) as root:
            aug = Augeas(str(root), self.lens, self.file)
            try:
                changes = []
                for item in self.sets:
                    where = f"/files{self.file}/{item.path}"
                    have = aug.get(where)
                    if have != item.text:
                        changes.append((item.path, item.text, have))
                        aug.set(where, item.text)
                if not changes or not save:
                    return changes, b""
                aug.save(self.file)
            finally:
                aug.close()
            new = (root / self.file.lstrip("/")).read_bytes()
        if new == data:  # written back, it would be an event, and the same sets again
            raise ResourceError(
                f"augeas: {self.file} is unchanged after saving the sets that differ "
                f"({', '.join(path for path, _value, _have in changes)}): check the paths and lens"
            )
        return changes, new

    @contextlib.contextmanager
    def _scratch(self, data: bytes) -> Iterator[Path]:
        root = Path(tempfile.mkdtemp(prefix="augeas.", dir=self.handle.var_dir))
        try:
            copy = root / self.file.lstrip("/")
            copy.parent.mkdir(parents=True, mode=0o700)
            copy.write_bytes(data)
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _write(self, data: bytes, mode: int, uid: int, gid: int) -> None:
        parent, name = os.path.split(self.file)
        with safefs.closing(safefs.open_dir(parent)) as dir_fd:
            safefs.write_at(dir_fd, name, lambda out: out.write(data), mode=mode, uid=uid, gid=gid)
