"""import "golang/os" and "golang/os/exec": Go's os functions that read (mgmt leaves out
those that change the system), and exec.LookPath."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define, fail

_ENV_REF = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)")


def expand_env(text: str) -> str:
    """Go's os.ExpandEnv: $name and ${name} replaced by the variable, "" when it is unset."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1) or m.group(2) or "", ""), text)


def _home() -> str:
    home = os.environ.get("HOME")
    if not home:
        raise fail("$HOME is not defined")
    return home


def _xdg(variable: str, below_home: str) -> str:
    found = os.environ.get(variable)
    if found:
        if not os.path.isabs(found):
            raise fail(f"path in ${variable} is relative")
        return found
    return os.path.join(_home(), below_home)


def executable() -> str:
    """The agent's program: the `mgmt` script (Go: the mgmt binary)."""
    return os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else sys.executable


class ReadFileOnce(streams.Stream):
    """golang/os.read_file(name): the file's content, read once per call site and name (a new
    name reads again; os.readfile follows changes), off the event loop as os.readfile
    (the runtime's streams.Readers)."""

    def start(self) -> None:
        self._tasks.append(self.host.spawn(self._read(self.args[0]), f"read {self.args[0]}"))

    async def _read(self, name: str) -> None:
        try:
            self.emit(await self.host.readers.read(name))
        except ValueError as err:
            self.fail(str(err))


def _look_path(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise fail(f'exec: "{name}": executable file not found in $PATH')
    return found


_M = "golang/os."
define(_M + "executable", "func() str", impl=executable)
define(_M + "expand_env", "func(str) str", impl=expand_env)
define(_M + "getegid", "func() int", impl=os.getegid, host=False)
define(_M + "getenv", "func(str) str", impl=lambda key: os.environ.get(key, ""))
define(_M + "geteuid", "func() int", impl=os.geteuid, host=False)
define(_M + "getgid", "func() int", impl=os.getgid, host=False)
define(_M + "getpagesize", "func() int", impl=lambda: os.sysconf("SC_PAGESIZE"), host=False)
define(_M + "getpid", "func() int", impl=os.getpid, host=False)
define(_M + "getppid", "func() int", impl=os.getppid, host=False)
define(_M + "getuid", "func() int", impl=os.getuid, host=False)
define(
    _M + "read_file", "func(str) str", stream=ReadFileOnce, doc="read once (os.readfile follows)"
)
define(_M + "readlink", "func(str) str", impl=os.readlink)
define(_M + "temp_dir", "func() str", impl=tempfile.gettempdir)
define(_M + "user_cache_dir", "func() str", impl=lambda: _xdg("XDG_CACHE_HOME", ".cache"))
define(_M + "user_config_dir", "func() str", impl=lambda: _xdg("XDG_CONFIG_HOME", ".config"))
define(_M + "user_home_dir", "func() str", impl=_home)
define("golang/os/exec.look_path", "func(str) str", impl=_look_path)
