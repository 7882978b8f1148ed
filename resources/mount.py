"""mount: a file system mounted at the name, and its /etc/fstab entry (mgmt's mount).

Two sub-checks, ANDed as in mgmt: the fstab entry (added, or replaced when the one for the
mount point differs; removed for `state: absent`) and the mount itself, read from
/proc/self/mountinfo. mgmt mounts through systemd (daemon-reload, restart local-fs.target);
this version runs mount(8) and umount(8) directly, so it works without systemd as PID 1. The
watch is POLLPRI on /proc/self/mountinfo (the kernel's signal for a mount or unmount in this
mount namespace) and inotify on the fstab ($MGMT_FSTAB overrides /etc/fstab: tests,
chroots). A device that is a regular file is loop-mounted; it is recognised in mountinfo by
the loop device's backing file. See docs/resources/mount.md.
"""

from __future__ import annotations

import asyncio
import functools
import os
import stat
from dataclasses import dataclass, field
from typing import Literal

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources._lib import tablefile
from resources._lib.events import pump_events
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.pollpri import PriWatch
from resources._lib.proc import file_lock, run_command

MOUNTINFO = "/proc/self/mountinfo"
MOUNT_TIMEOUT = 60
READ_LIMIT = 1 << 20


def fstab_path() -> str:
    return os.environ.get("MGMT_FSTAB") or "/etc/fstab"


def _unescape(text: str) -> str:
    """mountinfo's and fstab's octal escapes (\\040 for a space...)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _escape(text: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


# What each option says of the per-mount flags mountinfo shows (its sixth field): flag ->
# set or not. Later options win, as in mount(8); an option not here is not compared.
_DEFAULTS = {"ro": False, "nosuid": False, "nodev": False, "noexec": False}
_FLAG_OPTIONS: dict[str, dict[str, bool]] = {
    "defaults": _DEFAULTS,
    "ro": {"ro": True},
    "rw": {"ro": False},
    **{name: {name: True} for name in ("nosuid", "nodev", "noexec", "nodiratime")},
    **{name[2:]: {name: False} for name in ("nosuid", "nodev", "noexec", "nodiratime")},
    "noatime": {"noatime": True, "relatime": False},
    "relatime": {"relatime": True, "noatime": False},
    "strictatime": {"relatime": False, "noatime": False},
    "user": {"nosuid": True, "nodev": True, "noexec": True},
    "users": {"nosuid": True, "nodev": True, "noexec": True},
    "owner": {"nosuid": True, "nodev": True},
    "group": {"nosuid": True, "nodev": True},
}


@dataclass(frozen=True)
class Mounted:
    """One line of mountinfo."""

    point: str
    type: str
    source: str
    flags: frozenset[str]  # the per-mount options: rw or ro, nosuid, noexec, relatime...


def mounts() -> list[Mounted]:
    """Every mount in this namespace, in mount order."""
    with open(MOUNTINFO) as handle:
        lines = handle.read().splitlines()
    found = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 6 and len(tail) >= 2:
            flags = frozenset(fields[5].split(","))
            found.append(Mounted(_unescape(fields[4]), tail[0], _unescape(tail[1]), flags))
    return found


def _backing_file(source: str) -> str | None:
    """The file behind a loop device (/dev/loopN), or None."""
    name = os.path.basename(source)
    if not name.startswith("loop"):
        return None
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as handle:
            return handle.read().strip()
    except OSError:
        return None


@register("mount")
@dataclass(kw_only=True, eq=False)
class MountRes(Edgeable, Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # "exists" (mounted, in fstab) or "absent" (unmounted, not in fstab). Required.
    state: Literal["exists", "absent"]
    # What to mount: a device, a file (loop-mounted) or a name for tmpfs... Default "".
    device: str = ""
    # The file system type, as in /proc/filesystems (tmpfs, ext4...). Default "".
    type: str = ""
    # Mount options: name -> value ("" for a flag). Default {"defaults": ""}.
    options: dict[str, str] = field(default_factory=lambda: {"defaults": ""})
    # fstab's dump frequency. Default 0.
    freq: int = 0
    # fstab's fsck order (0: never checked). Default 0.
    passno: int = 0

    def validate(self) -> None:
        super().validate()
        point = self.name
        if not point.startswith("/") or "//" in point or any(c in point for c in "\0\n"):
            raise ValidationError(
                f"expected the absolute path of the mount point, got {point!r}", "name"
            )
        for key, value in self.options.items():
            if not key or any(c in key + value for c in ", \t\n=\0"):
                raise ValidationError(
                    f"expected option names and values without ',', '=' or spaces, got "
                    f"{key!r}: {value!r}",
                    "options",
                )
        if self.freq < 0 or self.passno < 0:
            raise ValidationError("must not be negative", "freq" if self.freq < 0 else "passno")
        if self.state == "absent":
            return
        if not self.device or any(c in self.device for c in "\0\n"):
            raise ValidationError("a device is required with state: exists", "device")
        if not self.type or not all(c.isalnum() or c in "._-" for c in self.type):
            raise ValidationError(
                f"expected a file system type (tmpfs, ext4...), got {self.type!r}", "type"
            )

    async def watch(self) -> None:
        async with PriWatch(MOUNTINFO) as table, PathWatcher([fstab_path()]) as fstab:
            await self.handle.event()
            await pump_events(self.handle, [table, fstab])

    async def check_apply(self, apply: bool) -> bool:
        async with file_lock(self.handle.shared, fstab_path()):  # other mounts' edits wait
            steps = await asyncio.to_thread(self._steps, apply)  # reads files: off the loop
            if not steps:
                return nothing_to_do(self.handle, f"{self.name} is {self._shown()}")
            await apply_steps(self.handle, steps, apply, errors=(OSError,))
            return False

    def uids(self) -> list[UID]:
        return [UID("mount", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The mount point's directory, and a device or image file that is managed."""
        wants = [[UID("file", self.name.rstrip("/") + "/")]]
        if self.device.startswith("/"):
            wants.append([UID("file", self.device)])
        return wants

    def _shown(self) -> str:
        return "not mounted" if self.state == "absent" else f"mounted ({self.type} {self.device})"

    def _opts(self) -> str:
        return ",".join(k if v == "" else f"{k}={v}" for k, v in self.options.items()) or "defaults"

    def _entry(self) -> str:
        return " ".join(
            (
                _escape(self.device),
                _escape(self.name),
                self.type,
                self._opts(),
                str(self.freq),
                str(self.passno),
            )
        )

    def _steps(self, apply: bool) -> list[Step]:
        fstab = self._fstab_steps()
        if fstab and self.state == "exists":
            self._point_missing()  # nor an fstab entry that boot would mount through a link
            self._device_missing()
        return fstab + self._mount_steps(apply, entry_changed=bool(fstab))

    def _fstab_steps(self) -> list[Step]:
        path = fstab_path()
        lines = tablefile.read_lines(path, READ_LIMIT)
        ours = [ln for ln in lines if _fstab_point(ln) == self.name]
        if self.state == "absent":
            if not ours:
                return []
            keep = [ln for ln in lines if _fstab_point(ln) != self.name]
            what = f"the entry for {self.name} from {path}"
            return [tablefile.write_step(path, keep, f"remove {what}", f"removed {what}")]
        wanted = self._entry()
        if [" ".join(ln.split()) for ln in ours] == [wanted]:
            return []
        keep = [ln for ln in lines if _fstab_point(ln) != self.name] + [wanted]
        what = f"the entry for {self.name} in {path}"
        if ours:
            return [tablefile.write_step(path, keep, f"replace {what}", f"replaced {what}")]
        return [tablefile.write_step(path, keep, f"add {what}", f"added {what}")]

    def _missing(self) -> str:
        """What mounting needs and is not there ("" if nothing); ResourceError for a mount
        point another user could redirect (_point_missing)."""
        return self._point_missing() or self._device_missing()

    def _device_missing(self) -> str:
        """The device, image or bind source, when it is a path: "the device ... does not
        exist", or "". Refused (ResourceError), as a mount point is: a directory on the way
        that another user controls (a root-owned sticky one such as /tmp excepted), a symlink
        the safe-path rule does not follow (only root's, in directories only root writes:
        /dev/disk/by-uuid/...), and in a directory others can write a file that is not root's.
        mount(8) opens the device by name after this check: no other user can then swap what
        the name leads to (their image, root's disk) between the two."""
        path, links = self.device, 0
        if not path.startswith("/"):
            return ""  # a name (tmpfs's), UUID=..., LABEL=...: mount(8) looks it up in /dev
        while True:
            parent, name = os.path.split(path)
            try:
                fd = safefs.open_dir(parent or "/", check=self._trusted_for_device)
            except (FileNotFoundError, NotADirectoryError):
                return f"the device {self.device} does not exist"
            except safefs.UnsafePathError as err:
                raise ResourceError(f"device {self.device}: {err}") from None
            with safefs.closing(fd):
                st = safefs.lstat_at(fd, name)
                if st is None:
                    return f"the device {self.device} does not exist"
                if not stat.S_ISLNK(st.st_mode):
                    _refuse_theirs(fd, st, f"the device {path}", "to another device or image")
                    return ""
                try:
                    target = safefs.safe_link(fd, name, path)
                except safefs.UnsafePathError as err:
                    raise ResourceError(f"device {self.device}: {err}") from None
                real = os.readlink(f"/proc/self/fd/{fd}")
            path = os.path.normpath(os.path.join(real, target))
            links += 1
            if links > safefs.MAX_LINKS:
                raise ResourceError(f"device {self.device}: too many symlinks")

    def _point_missing(self) -> str:
        """What is missing of the mount point ("" if nothing), checked before mount(8),
        umount(8) or a remount is run on it. Refused (ResourceError): a symlink at it or on
        the way to it (mount(8) follows links, and mountinfo shows the real path: a mount
        there is never seen, and each check mounts once more), a directory on the way that
        another user controls (owned by them or writable by others, a root-owned sticky one
        such as /tmp excepted), and in a directory others can write a mount point that is not
        root's (its owner could rename it and put a link there). So no other user can choose
        where the file system lands or which mount is taken away (tester13's finding)."""
        parent, name = os.path.split(self.name)
        parent = parent or "/"
        try:
            fd = safefs.open_dir(parent, check=self._trusted)
        except FileNotFoundError:
            return f"the mount point {self.name} does not exist"
        except NotADirectoryError:
            return f"{parent} is not a directory"
        except safefs.UnsafePathError as err:
            raise ResourceError(f"mount point {self.name}: {err}") from None
        with safefs.closing(fd):
            real = os.readlink(f"/proc/self/fd/{fd}")
            if real != parent:
                raise ResourceError(
                    f"the mount point {self.name} is reached through a symlink ({parent} is "
                    f"{real}): name it by its real path, {os.path.join(real, name)}"
                )
            st = safefs.lstat_at(fd, name)
            if st is None:
                return f"the mount point {self.name} does not exist"
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=fd)
                raise ResourceError(
                    f"the mount point {self.name} is a symlink (to {target!r}): refusing it, "
                    "mount(8) would follow it: name the real directory"
                )
            if not stat.S_ISDIR(st.st_mode):
                return f"{self.name} is not a directory"
            _refuse_theirs(fd, st, f"the mount point {self.name}", "")
        return ""

    @staticmethod
    def _trusted(fd: int, shown: str) -> None:
        """Every directory above a mount point: not one another user controls."""
        _refuse_others(fd, shown, "to mount or unmount below it", "where the file system lands")

    @staticmethod
    def _trusted_for_device(fd: int, shown: str) -> None:
        """Every directory above a device path: not one another user controls."""
        _refuse_others(fd, shown, "to mount a device below it", "what is mounted")

    def _mount_steps(self, apply: bool, entry_changed: bool) -> list[Step]:
        here = [m for m in mounts() if m.point == self.name]
        if self.state == "absent":
            if not here:
                return []
            self._point_missing()  # what another user could redirect is refused
            umount = functools.partial(
                run_command, ["umount", "--", self.name], timeout=MOUNT_TIMEOUT
            )
            return [Step(f"unmount {self.name}", f"unmounted {self.name}", umount)]
        if here and self._matches(here[-1]):
            return self._remount_steps(here[-1], entry_changed)
        ours = [m for m in here if self._matches(m)]
        if ours:  # never stacked again: each such drift would add one more mount
            top = here[-1]
            raise ResourceError(
                f"{top.source} ({top.type}) is mounted over {self.device} on {self.name}: "
                f"unmount it (umount {self.name}) or mount it elsewhere"
            )
        device = self.device
        missing = self._missing()
        if missing and apply:
            raise ResourceError(f"cannot mount {device} on {self.name}: {missing}")
        later = f" ({missing}: made by an earlier resource?)" if missing else ""
        argv = ["mount", "-t", self.type, "-o", self._opts(), "--", device, self.name]
        run = functools.partial(self._mount, argv)
        if here:
            top = here[-1]
            return [
                Step(
                    f"mount {device} ({self.type}) on {self.name}, over {top.source} ({top.type})",
                    f"mounted {device} ({self.type}) on {self.name} over {top.source} ({top.type})",
                    run,
                )
            ]
        return [
            Step(
                f"mount {device} ({self.type}) on {self.name}{later}",
                f"mounted {device} on {self.name}",
                run,
            )
        ]

    async def _mount(self, argv: list[str]) -> None:
        """Run mount(8), then check what it mounted: given an unknown type, it may probe the
        device and mount what it finds."""
        await run_command(argv, timeout=MOUNT_TIMEOUT)
        here = [m for m in mounts() if m.point == self.name]
        if not here:  # it went elsewhere: an error, never one more mount at each check
            raise ResourceError(
                f"mount(8) succeeded, yet nothing is mounted at {self.name} (was it moved "
                "or replaced meanwhile?)"
            )
        if not self._matches(here[-1]):
            top = here[-1]
            raise ResourceError(
                f"mount(8) mounted {top.source} as {top.type} on {self.name}, not {self.device} "
                f"as {self.type}: check type and device"
            )

    def _flags_differing(self, mount: Mounted) -> list[str]:
        """The per-mount flags (ro, nosuid, noexec...) of `options` that the live mount does
        not have, as the options that set them. Default options are not compared, as in mgmt."""
        if self.options == {"defaults": ""}:
            return []
        wanted: dict[str, bool] = {}
        for name in self.options:
            wanted.update(_FLAG_OPTIONS.get(name, {}))
        return sorted(
            flag
            if want
            else flag[2:]
            if flag.startswith("no")
            else _OPPOSITE.get(flag, f"no{flag}")
            for flag, want in wanted.items()
            if (flag in mount.flags) != want
        )

    def _remount_steps(self, mount: Mounted, entry_changed: bool) -> list[Step]:
        """Remount with `options` when the live per-mount flags differ from them, or when the
        fstab entry was just rewritten (a changed size= or mode= reaches the mount too)."""
        differing = self._flags_differing(mount)
        if not differing and not (entry_changed and self.options != {"defaults": ""}):
            return []
        self._point_missing()  # what another user could redirect is refused
        why = f"it lacks {','.join(differing)}" if differing else "its fstab entry changed"
        return [
            Step(
                f"remount {self.name} with {self._opts()} ({why})",
                f"remounted {self.name} with {self._opts()} ({why})",
                self._remount,
            )
        ]

    async def _remount(self) -> None:
        """mount -o remount with our options only (not merged with any fstab's), then check."""
        argv = ["mount", "--options-source", "disable", "-o", f"remount,{self._opts()}"]
        await run_command([*argv, "--", self.name], timeout=MOUNT_TIMEOUT)
        here = [m for m in mounts() if m.point == self.name]
        still = self._flags_differing(here[-1]) if here else []
        if still:
            raise ResourceError(f"remounted {self.name}, yet it lacks {','.join(still)}")

    def _matches(self, mount: Mounted) -> bool:
        kind, source = mount.type, mount.source
        if kind != self.type:
            return False
        if source == self.device:
            return True
        backing = _backing_file(source)
        if backing is not None and self.device.startswith("/"):
            return os.path.realpath(self.device) == backing
        return self.device.startswith("/") and os.path.realpath(self.device) == os.path.realpath(
            source
        )


_OPPOSITE = {"ro": "rw"}


def _refuse_theirs(dir_fd: int, st: os.stat_result, shown: str, to: str) -> None:
    """ResourceError when `shown` (its lstat st, in the directory dir_fd) is another user's in
    a directory others can write: its owner could rename it and put a symlink there."""
    if st.st_uid not in (0, os.geteuid()) and safefs.writable_by_others(os.fstat(dir_fd), dir_fd):
        parent = os.readlink(f"/proc/self/fd/{dir_fd}")
        raise ResourceError(
            f"{shown} is owned by uid {st.st_uid} in {parent}, which others can write: they "
            f"could swap it for a symlink{' ' + to if to else ''}; refusing it (make it root's)"
        )


def _refuse_others(fd: int, shown: str, refusing: str, choose: str) -> None:
    """UnsafePathError when another user controls the directory fd (a root-owned sticky one,
    /tmp, passes): they could put a symlink on the way and choose `choose`."""
    why = safefs.controlled_by_others(os.fstat(fd), fd, sticky_ok=True)
    if why:
        raise safefs.UnsafePathError(
            f"{shown} {why}: refusing {refusing} (another user could put a symlink on the way "
            f"and choose {choose})"
        )


def _fstab_point(line: str) -> str | None:
    fields = line.split()
    if len(fields) < 2 or fields[0].startswith("#"):
        return None
    return _unescape(fields[1])
