"""import "os": this host's files, users and system.

Streams (each follows what it reads: inotify, or the process's output):
- os.readfile(path): the file's content, re-read on every change;
- os.file_exists(path): whether the path exists (a directory too), re-checked on every change
  of it or of the directories above it;
- os.system(cmd): `sh -c cmd`, then each line of its standard output as it comes (standard
  error goes to the log); a new command stops the previous one (as mgmt's);
- os.user_exists(name): whether /etc/passwd has the user, re-read when the file changes.
- os.family(), os.is_family_<name>(): the distribution family's files (/etc/debian_version...),
  re-checked on every inotify event about them.
- os.modinfo_loaded(module): /proc/modules, re-read on every kernel uevent (netlink).
The others read once: whether this is a virtual machine, argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import pwd
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from mgmt.lang import streams
from mgmt.lang.funcs.netlink import NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL, NetlinkStream
from mgmt.lang.funcs.registry import define, fail

log = logging.getLogger("lang")


class _PathStream(streams.Stream):
    """A value computed from a path (or several), recomputed on every inotify event about it."""

    def start(self) -> None:
        self.path = self.resolve(self.args[0] if self.args else "")
        self.recompute()
        self._tasks.append(self.host.spawn(self._watch(), f"{self.name} {self.path}"))

    def watched(self) -> list[Path]:
        return [self.path]

    def resolve(self, arg: str) -> Path:
        return Path(arg).absolute()  # relative: to the agent's working directory (mgmt's)

    def recompute(self) -> None:
        raise NotImplementedError

    async def _watch(self) -> None:
        from engine.watcher import PathWatcher

        async with PathWatcher(self.watched()) as watcher:
            self.recompute()  # a change between the first look and the watch is not missed
            async for _ in watcher:
                self.recompute()


class FileExists(_PathStream):
    """os.file_exists(path): True while the path exists (following a symlink, as Go's Stat)."""

    def recompute(self) -> None:
        try:
            self.path.stat()
        except FileNotFoundError:
            self.emit(False)
        except NotADirectoryError:
            self.emit(False)
        except OSError as err:
            self.fail(f"cannot stat {self.path}: {err.strerror or err}")
        else:
            self.emit(True)


class UserExists(_PathStream):
    """os.user_exists(name): whether the passwd file has a user of that name."""

    PASSWD: ClassVar[str] = "/etc/passwd"

    def resolve(self, arg: str) -> Path:
        self.user = arg
        return Path(self.PASSWD)

    def recompute(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as err:
            self.fail(f"cannot read {self.path}: {err.strerror or err}")
            return
        names = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}
        self.emit(bool(self.user) and self.user in names)


class System(streams.Stream):
    """os.system(cmd): each line `sh -c cmd` writes to its standard output, as it comes.

    The command runs as long as this call site keeps it (a new command is a new instance,
    and the old one is stopped: its process is killed). It has no time limit: a command that
    never ends, writing a line now and then, is a stream like any other."""

    RUNS_COMMANDS = True

    def start(self) -> None:
        self._tasks.append(self.host.spawn(self._run(self.args[0]), f"os.system {self.args[0]}"))

    async def _run(self, command: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            self.fail(f"cannot run /bin/sh: {err.strerror or err}")
            return
        try:
            assert proc.stdout is not None and proc.stderr is not None
            async with asyncio.TaskGroup() as group:
                group.create_task(self._lines(proc.stdout, self.emit))
                group.create_task(self._lines(proc.stderr, self._log))
            await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await asyncio.shield(proc.wait())

    @staticmethod
    async def _lines(reader: asyncio.StreamReader, take: Callable[[str], None]) -> None:
        while line := await reader.readline():
            take(line.decode(errors="replace").removesuffix("\n"))

    def _log(self, line: str) -> None:
        log.info('os.system: "%s": stderr: %s', self.args[0], line)


# The files whose presence tells the distribution's family (as mgmt's util/distro).
FAMILY_FILES = {
    "redhat": "/etc/redhat-release",
    "debian": "/etc/debian_version",
    "archlinux": "/etc/arch-release",
}
# Where a hypervisor shows itself: the CPU flags, and the DMI strings' vendors (as mgmt's).
DMI_FILES = tuple(
    f"/sys/class/dmi/id/{name}"
    for name in ("product_name", "sys_vendor", "board_vendor", "bios_vendor", "product_version")
)
VIRTUAL_VENDORS = (
    "Amazon EC2",
    "Apple Virtualization",
    "BHYVE",
    "Bochs",
    "Google Computer Engine",
    "Hyper-V",
    "innotek GmbH",
    "KubeVirt",
    "KVM",
    "OpenStack",
    "Oracle Corporation",
    "Parallels",
    "QEMU",
    "VMware",
    "Xen",
)


def is_family(family: str) -> bool:
    return os.path.exists(FAMILY_FILES[family])


def _family() -> str:
    return next((name for name in FAMILY_FILES if is_family(name)), "")


class IsFamily(FileExists):
    """os.is_family_<name>(): whether the family's file exists, re-checked on every change of
    it (mgmt's reads once, its source noting OS changes as not yet detected; an upgrade or a container image that
    changes it is followed here)."""

    FAMILY: ClassVar[str] = ""

    def resolve(self, arg: str) -> Path:
        return Path(FAMILY_FILES[self.FAMILY])


class Family(_PathStream):
    """os.family(): the first family whose file exists, re-checked when any of them changes."""

    def resolve(self, arg: str) -> Path:
        return Path(FAMILY_FILES["redhat"])

    def watched(self) -> list[Path]:
        return [Path(path) for path in FAMILY_FILES.values()]

    def recompute(self) -> None:
        self.emit(_family())


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return None


def is_virtual() -> bool:
    cpuinfo = _read("/proc/cpuinfo")
    if cpuinfo is not None and "hypervisor" in cpuinfo:
        return True
    for path in DMI_FILES:
        text = _read(path)
        if text is not None and any(vendor in text for vendor in VIRTUAL_VENDORS):
            return True
    return False


def modinfo_loaded(module: str, modules: str = "/proc/modules") -> bool:
    """Whether the kernel module is loaded (its name first on a line of /proc/modules)."""
    text = _read(modules) or ""
    return module in {line.split(" ", 1)[0] for line in text.splitlines()}


class ModinfoLoaded(NetlinkStream):
    """os.modinfo_loaded(module): /proc/modules, re-read on every kernel uevent (a module's
    load or unload is one: `add@/module/<name>`). mgmt's watches /proc/modules with inotify,
    which the kernel never notifies: its value never changes after the first."""

    PROTOCOL: ClassVar[int] = NETLINK_KOBJECT_UEVENT
    GROUPS: ClassVar[int] = UEVENT_KERNEL
    MODULES: ClassVar[str] = "/proc/modules"

    def read(self) -> bool:
        return modinfo_loaded(self.args[0], self.MODULES)


def _home(user: str) -> str:
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        raise fail(f"user: unknown user {user}") from None
    return home if home.endswith("/") else home + "/"


def _expand_home(path: str) -> str:
    """mgmt's util.ExpandHome: `~/x` is the agent's user's home joined with `x`, `~name/x` the
    user's (path.Join: cleaned, no trailing slash); anything else is unchanged."""
    if path.startswith("~/"):
        home, rest = pwd.getpwuid(os.getuid()).pw_dir, path[2:]
    else:
        user, slash, rest = path[1:].partition("/")
        if not path.startswith("~") or not slash or not user:
            return path
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise fail(f"can't expand ~{user}/ into home directory") from None
    return posixpath.normpath(posixpath.join(home, rest))


def _uid(user: str) -> str:
    try:
        return str(pwd.getpwnam(user).pw_uid)
    except KeyError:
        raise fail(f"user: unknown user {user}") from None


define("os.readfile", "func(str) str", stream=streams.ReadFile, doc="re-emits on change")
define("os.file_exists", "func(str) bool", stream=FileExists, doc="re-emits on change")
define("os.system", "func(str) str", stream=System, doc="each line of the command's output")
define("os.user_exists", "func(str) bool", stream=UserExists, doc="re-read when passwd changes")
define("os.home", "func(str) str", impl=_home, doc="the user's home, ending with /")
define("os.expand_home", "func(str) str", impl=_expand_home, doc="`~/x`, `~user/x`")
define("os.uid", "func(str) str", impl=_uid, doc="the user's uid, as a str")
define("os.family", "func() str", stream=Family, doc='"redhat", "debian", "archlinux" or ""')
for _name, _file in FAMILY_FILES.items():
    define(
        f"os.is_family_{_name}",
        "func() bool",
        stream=type(f"IsFamily{_name.title()}", (IsFamily,), {"FAMILY": _name}),
        doc=f"whether {_file} exists, as it changes",
    )
define("os.is_virtual", "func() bool", impl=is_virtual)
define("os.modinfo_loaded", "func(str) bool", stream=ModinfoLoaded, doc="follows uevents")
define("os.args", "func() []str", impl=lambda: tuple(sys.argv), doc="the agent's argv")
