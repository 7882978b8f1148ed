"""mount, sysctl and net against the real kernel, inside namespaces of their own.

`test_in_namespaces` runs this file again under `unshare --mount --net --uts` (private mount
propagation): mounts, and the network and UTS sysctls, are then private to that process tree,
so the host is never changed. The other tests run only in there (MGMT_TEST_NS is set).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources._lib.proc import run_command
from resources.hostname import HostnameRes
from resources.mount import MOUNTINFO, MountRes, mounts
from resources.net import NetRes
from resources.sysctl import SysctlRes
from tests.conftest import Running
from tests.fakes.systemd import running_fake

INSIDE = os.environ.get("MGMT_TEST_NS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs inside test_in_namespaces' namespaces")


@pytest.mark.slow  # a pytest of its own in the namespaces: ~5 s, mostly start-up
@pytest.mark.skipif(INSIDE, reason="this is the outer test")
def test_in_namespaces() -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed"
    argv = [unshare, "--mount", "--net", "--uts", "--propagation", "private", "--"]
    argv += [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", __file__]
    env = {**os.environ, "MGMT_TEST_NS": "1"}
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.replace("1 skipped", "")


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


@inside
async def test_sysctl_timeline(run_resource: object, tmp_path: Path) -> None:
    key = "/proc/sys/net/ipv4/ip_forward"
    _write(key, "0\n")
    conf = tmp_path / "99-forward.conf"
    res = SysctlRes(name="net.ipv4.ip_forward", value="1", path=str(conf))
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False  # noop: reports, changes nothing
    assert _read(key) == "0\n" and not conf.exists()
    assert await res.check_apply(True) is False
    assert _read(key) == "1\n"
    assert conf.read_text() == "net.ipv4.ip_forward = 1\n"
    await running.handle.next_event()  # the persisted file, seen by inotify
    assert await res.check_apply(True) is True
    conf.write_text("net.ipv4.ip_forward = 0\n")  # drift of the file: an event, repaired
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert conf.read_text() == "net.ipv4.ip_forward = 1\n"
    _write(key, "0\n")  # drift of the kernel's value (no event for this key): repaired
    assert await res.check_apply(True) is False
    assert _read(key) == "1\n"
    assert await res.check_apply(True) is True


@inside
async def test_sysctl_shares_a_file_and_takes_the_kernels_format(
    run_resource: object, tmp_path: Path
) -> None:
    """Two keys persisted in one site file: each edits its own line, the site's lines stay, and
    nothing flaps. A value the kernel prints with a tab, or a file written by hand as
    sysctl.conf allows (`key=v`, `-key/in/slash/form = v`, a tab) is already converged."""
    conf = tmp_path / "99-site.conf"
    conf.write_text("# site tuning\nvm.swappiness = 10\nnet.ipv4.ip_forward = 0\n")
    _write("/proc/sys/net/ipv4/ip_local_port_range", "40000 50000\n")  # printed "40000\t50000"
    forward = SysctlRes(name="net.ipv4.ip_forward", value="1", path=str(conf))
    ports = SysctlRes(name="net.ipv4.ip_local_port_range", value="40000 50000", path=str(conf))
    for res in (forward, ports):
        await run_resource(res)  # type: ignore[operator]
    assert await forward.check_apply(True) is False
    assert await ports.check_apply(True) is False  # the file only: the kernel had it
    assert conf.read_text() == (
        "# site tuning\nvm.swappiness = 10\nnet.ipv4.ip_forward = 1\n"
        "net.ipv4.ip_local_port_range = 40000 50000\n"
    )
    assert await forward.check_apply(True) is True and await ports.check_apply(True) is True
    conf.write_text("-net/ipv4/ip_forward=1\nnet.ipv4.ip_local_port_range =\t40000\t50000\n# end\n")
    assert await forward.check_apply(True) is True and await ports.check_apply(True) is True
    # A second line of the key (sysctl reads the file in order: the last wins) goes.
    conf.write_text("net.ipv4.ip_forward = 1\nnet.ipv4.ip_forward = 0\n")
    assert await forward.check_apply(True) is False
    assert conf.read_text() == "net.ipv4.ip_forward = 1\n"


@inside
async def test_sysctl_kernel_event_and_refusals(run_resource: object, tmp_path: Path) -> None:
    res = SysctlRes(name="kernel.domainname", value="example.test", persist=False)
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(True) is False
    await running.handle.next_event()  # POLLPRI: the kernel signals its own change
    assert await res.check_apply(True) is True
    _write("/proc/sys/kernel/domainname", "drift\n")
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert _read("/proc/sys/kernel/domainname") == "example.test\n"
    with pytest.raises(ValidationError, match="read-only") as err:
        SysctlRes(name="kernel.osrelease", value="1").validate()
    assert err.value.key == "name"
    SysctlRes(name="kernel.osrelease", value="1", runtime=False, path="/x.conf").validate()
    for name in ("net/ipv4/ip_forward", "no.such.key", ".kernel", "kernel", "net.ipv4..ip_forward"):
        with pytest.raises(ValidationError):
            SysctlRes(name=name, value="1").validate()
    bad = SysctlRes(name="net.ipv4.ip_forward", value="abc", persist=False)
    await run_resource(bad, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="refused"):
        await bad.check_apply(True)


async def _next_matching(running: Running, pred: object) -> None:
    """Events until pred() holds (bounded): a mount or unmount may come as several events."""
    async with asyncio.timeout(10):
        while not pred():  # type: ignore[operator]
            await running.handle.next_event()


@inside
async def test_mount_tmpfs_timeline(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# kept\nproc /proc proc defaults 0 0\n")
    monkeypatch.setenv("MGMT_FSTAB", str(fstab))
    point = tmp_path / "mnt"
    point.mkdir()
    res = MountRes(
        name=str(point), state="exists", device="scratch", type="tmpfs", options={"size": "1m"}
    )
    running: Running = await run_resource(res)  # type: ignore[operator]
    mounted = lambda: any(m.point == str(point) for m in mounts())  # noqa: E731
    assert await res.check_apply(False) is False  # noop
    assert not mounted() and "scratch" not in fstab.read_text()
    assert await res.check_apply(True) is False
    assert mounted()
    assert fstab.read_text() == (
        f"# kept\nproc /proc proc defaults 0 0\nscratch {point} tmpfs size=1m 0 0\n"
    )
    assert await res.check_apply(True) is True
    await run_command(["umount", str(point)], timeout=30)  # drift: seen (POLLPRI)
    await _next_matching(running, lambda: not mounted())
    assert await res.check_apply(True) is False
    assert mounted()
    assert await res.check_apply(True) is True
    absent = MountRes(name=str(point), state="absent")
    await run_resource(absent, watch=False)  # type: ignore[operator]
    assert await absent.check_apply(True) is False
    assert not mounted()
    assert fstab.read_text() == "# kept\nproc /proc proc defaults 0 0\n"
    assert await absent.check_apply(True) is True


@inside
async def test_mount_options_of_the_live_mount_are_repaired(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand remount dropping noexec,nosuid is remounted back (before: never compared, the
    hardening silently undone); a change of options in the graph reaches the live mount, not
    only fstab; a hand over-mount fails the resource rather than stacking one more mount."""
    monkeypatch.setenv("MGMT_FSTAB", str(tmp_path / "fstab"))
    point = tmp_path / "pt"
    point.mkdir()
    live = lambda: [m for m in mounts() if m.point == str(point)]  # noqa: E731
    options = {"size": "1m", "noexec": "", "nosuid": ""}
    res = MountRes(name=str(point), state="exists", device="scratch", type="tmpfs", options=options)
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(True) is False
    assert {"noexec", "nosuid"} <= live()[-1].flags
    assert await res.check_apply(True) is True
    await run_command(["mount", "-o", "remount,exec,suid", str(point)], timeout=30)  # drift
    await _next_matching(running, lambda: "noexec" not in live()[-1].flags)
    assert await res.check_apply(False) is False  # noop: says so, changes nothing
    assert "noexec" not in live()[-1].flags
    assert await res.check_apply(True) is False
    assert {"noexec", "nosuid"} <= live()[-1].flags and len(live()) == 1
    assert await res.check_apply(True) is True
    wider = MountRes(
        name=str(point),
        state="exists",
        device="scratch",
        type="tmpfs",
        options={"size": "2m", "ro": "", "noexec": ""},
    )
    await run_resource(wider, watch=False)  # type: ignore[operator]
    assert await wider.check_apply(True) is False  # fstab entry and live mount
    assert {"ro", "noexec"} <= live()[-1].flags and "nosuid" not in live()[-1].flags
    assert "size=2048k" in _read(MOUNTINFO)
    assert await wider.check_apply(True) is True
    await run_command(["mount", "-t", "tmpfs", "other", str(point)], timeout=30)
    with pytest.raises(ResourceError, match=r"other \(tmpfs\) is mounted over scratch on"):
        await wider.check_apply(True)
    assert len(live()) == 2  # not stacked a third time
    await run_command(["umount", str(point)], timeout=30)
    assert await wider.check_apply(True) is True


NOBODY = 65534


def _plant(tmp_path: Path, plant: str) -> tuple[Path, str]:
    """The mount point another user could redirect, and the refusal expected."""
    target = tmp_path / "target"  # root's directory
    target.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    shared = tmp_path / "shared"  # like /tmp
    shared.mkdir()
    shared.chmod(0o1777)
    if plant == "their link at the mount point":
        point = tmp_path / "mnt"
        point.symlink_to(target)
        os.lchown(point, NOBODY, NOBODY)
        why = f"the mount point {point} is a symlink"
    elif plant == "a mount point in their directory":
        point = theirs / "mnt"
        point.mkdir()
        os.chown(theirs, NOBODY, NOBODY)
        why = f"mount point {point}: {theirs} is owned by uid {NOBODY}: refusing to mount"
    elif plant == "their mount point in a shared directory":
        point = shared / "mnt"
        point.mkdir()
        os.chown(point, NOBODY, NOBODY)
        why = f"the mount point {point} is owned by uid {NOBODY} in {shared}, which others"
    else:
        (tmp_path / "via").symlink_to(tmp_path)  # root's (safe), yet mountinfo shows target
        point = tmp_path / "via" / "target"
        why = f"reached through a symlink .*: name it by its real path, {target}"
    return point, why


@inside
@pytest.mark.parametrize(
    "plant",
    [
        "their link at the mount point",
        "a mount point in their directory",
        "their mount point in a shared directory",
        "our own link on the way",
    ],
)
async def test_a_mount_point_another_user_could_redirect_is_refused(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """tester13: uid 1001's `ln -s /root/dir ~/mnt`, and a root tmpfs `mount` of ~/mnt went over
    root's directory (mount(8) follows links) and was stacked again at every check (mountinfo
    shows the real path). Now refused before fstab or mount(8): nothing mounted anywhere."""
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    monkeypatch.setenv("MGMT_FSTAB", str(fstab))
    point, why = _plant(tmp_path, plant)
    shared = tmp_path / "shared"
    before = _read(MOUNTINFO)
    res = MountRes(name=str(point), state="exists", device="scratch", type="tmpfs")
    await run_resource(res, watch=False)  # type: ignore[operator]
    for apply in (False, True):
        with pytest.raises(ResourceError, match=why):
            await res.check_apply(apply)
    assert _read(MOUNTINFO) == before and fstab.read_text() == ""
    if plant == "a mount point in their directory":  # taking a mount away there: refused too
        await run_command(["mount", "-t", "tmpfs", "scratch", str(point)], timeout=30)
        absent = MountRes(name=str(point), state="absent")
        await run_resource(absent, watch=False)  # type: ignore[operator]
        with pytest.raises(ResourceError, match=why):
            await absent.check_apply(True)
        assert any(m.point == str(point) for m in mounts())
        await run_command(["umount", str(point)], timeout=30)
    mine = shared / "mine"  # root's own mount point in a sticky shared directory: fine
    mine.mkdir()
    ok = MountRes(name=str(mine), state="exists", device="scratch", type="tmpfs")
    await run_resource(ok, watch=False)  # type: ignore[operator]
    assert await ok.check_apply(True) is False
    assert await ok.check_apply(True) is True
    await run_command(["umount", str(mine)], timeout=30)


async def _ext4_image(image: Path) -> Path:
    """A 4 MiB ext4 image file, made at `image`."""
    await run_command(["truncate", "-s", "4M", str(image)], timeout=60)
    await run_command(["mkfs.ext4", "-q", "-F", str(image)], timeout=60)
    return image


@inside
async def test_mount_loop_image(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MGMT_FSTAB", str(tmp_path / "fstab"))
    image = await _ext4_image(tmp_path / "fs.img")
    point = tmp_path / "loop"
    point.mkdir()
    res = MountRes(name=str(point), state="exists", device=str(image), type="ext4")
    await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(True) is False
    assert await res.check_apply(True) is True  # recognised through the loop's backing file
    absent = MountRes(name=str(point), state="absent")
    await run_resource(absent, watch=False)  # type: ignore[operator]
    assert await absent.check_apply(True) is False
    gone = MountRes(name=str(point), state="exists", device=str(tmp_path / "no.img"), type="ext4")
    await run_resource(gone, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="does not exist"):
        await gone.check_apply(True)
    assert await gone.check_apply(False) is False  # noop: made by an earlier resource, maybe
    unknown = MountRes(name=str(point), state="exists", device=str(image), type="nosuchfs")
    await run_resource(unknown, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match=r"as ext4 .*, not .* as nosuchfs"):
        await unknown.check_apply(True)
    assert await absent.check_apply(True) is False  # unmounted again
    with pytest.raises(ValidationError) as err:
        MountRes(name=str(point), state="exists", device="x", type="ext4,ro").validate()
    assert err.value.key == "type"


def _plant_device(tmp_path: Path, image: Path, plant: str) -> tuple[Path, str]:
    """The device path another user could swap, and the refusal expected."""
    theirs, shared = tmp_path / "theirs", tmp_path / "shared"  # shared: like /tmp
    theirs.mkdir()
    shared.mkdir()
    shared.chmod(0o1777)
    if plant == "an image in their directory":
        device = theirs / "fs.img"
        shutil.copy(image, device)
        os.chown(theirs, NOBODY, NOBODY)
        return device, f"device {device}: {theirs} is owned by uid {NOBODY}: refusing to mount"
    device = shared / "fs.img"
    if plant == "their link in a shared directory":  # to root's image, or root's disk
        device.symlink_to(image)
        os.lchown(device, NOBODY, NOBODY)
        return device, f"device {device}: refusing to follow the symlink {device}"
    shutil.copy(image, device)  # their image in a shared directory: renamed, a link put there
    os.chown(device, NOBODY, NOBODY)
    return device, f"the device {device} is owned by uid {NOBODY} in {shared}, which others"


@inside
@pytest.mark.parametrize(
    "plant",
    [
        "an image in their directory",
        "their link in a shared directory",
        "their image in a shared directory",
    ],
)
async def test_a_device_another_user_could_swap_is_refused(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """mount(8) opens the device by name after our check: a device path that another user
    could swap for a symlink (to root's disk, another image) meanwhile is refused, as a mount
    point is, before fstab or mount(8). Until 2026-12-05 it was mounted. A root-owned link in
    a root-owned directory (as /dev/disk/by-uuid/...) is followed."""
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    monkeypatch.setenv("MGMT_FSTAB", str(fstab))
    image = await _ext4_image(tmp_path / "root.img")
    point = tmp_path / "mnt"
    point.mkdir()
    device, why = _plant_device(tmp_path, image, plant)
    before = _read(MOUNTINFO)
    res = MountRes(name=str(point), state="exists", device=str(device), type="ext4")
    await run_resource(res, watch=False)  # type: ignore[operator]
    for apply in (False, True):
        with pytest.raises(ResourceError, match=why):
            await res.check_apply(apply)
    assert _read(MOUNTINFO) == before and fstab.read_text() == ""
    (tmp_path / "by-uuid").mkdir()
    (tmp_path / "by-uuid" / "x").symlink_to("../root.img")  # root's link, root's directory
    ok = MountRes(name=str(point), state="exists", device=f"{tmp_path}/by-uuid/x", type="ext4")
    await run_resource(ok, watch=False)  # type: ignore[operator]
    assert await ok.check_apply(True) is False
    assert await ok.check_apply(True) is True  # the image behind the link is recognised
    await run_command(["umount", str(point)], timeout=30)


@pytest.fixture
async def hostnamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with running_fake(tmp_path, monkeypatch.setenv, transient_hostname="web1"):
        yield


@pytest.fixture
def start_after_hostnamed(hostnamed: None, run_resource: object) -> object:
    """run_resource, set up after (so torn down before) the fake hostnamed."""
    return run_resource


@inside
async def test_hostname_set_behind_hostnameds_back_is_an_event(
    start_after_hostnamed: object,
) -> None:
    """`hostname X` (sethostname) makes hostnamed send no signal: the watch has POLLPRI on
    /proc/sys/kernel/hostname for it (here in this test's own UTS namespace), so the transient
    name is checked, and repaired, at once (before: not until some other event)."""
    res = HostnameRes(name="host", transient_hostname="web1")
    running: Running = await start_after_hostnamed(res)  # type: ignore[operator]
    assert await res.check_apply(True) is True
    await run_command(["hostname", "hacked2"], timeout=30)
    async with asyncio.timeout(10):
        await running.handle.next_event()


async def _ip(*args: str) -> str:
    return (await run_command(["ip", *args], timeout=30))[1]


@inside
async def test_net_timeline_on_a_veth_link(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MGMT_NETWORKD_DIR", str(tmp_path))
    await _ip("link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt1")
    await _ip("link", "set", "dev", "mgmt1", "up")  # a carrier for mgmt0
    res = NetRes(
        name="mgmt0", state="up", addrs=["192.0.2.13/24", "2001:db8::13/64"], gateway="192.0.2.1"
    )
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False  # noop
    assert "192.0.2.13" not in await _ip("addr", "show", "dev", "mgmt0")
    assert await res.check_apply(True) is False
    shown = await _ip("addr", "show", "dev", "mgmt0")
    assert "192.0.2.13/24" in shown and "2001:db8::13/64" in shown and "UP" in shown
    assert "default via 192.0.2.1" in await _ip("route", "show", "dev", "mgmt0")
    unit = tmp_path / "mgmt-mgmt0.network"
    assert unit.read_text() == (
        "[Match]\nName=mgmt0\n[Network]\nAddress=192.0.2.13/24\nAddress=2001:db8::13/64\n"
        "Gateway=192.0.2.1"
    )
    assert await res.check_apply(True) is True  # link-local addresses are left alone
    await _ip("addr", "add", "198.51.100.7/24", "dev", "mgmt0")  # drift: netlink event
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert "198.51.100.7" not in await _ip("addr", "show", "dev", "mgmt0")
    assert await res.check_apply(True) is True
    down = NetRes(name="mgmt0", state="down")
    await run_resource(down, watch=False)  # type: ignore[operator]
    assert await down.check_apply(True) is False
    assert "state DOWN" in await _ip("link", "show", "dev", "mgmt0")
    assert not unit.exists()
    assert await down.check_apply(True) is True
    absent = NetRes(name="nosuch0", state="up")
    await run_resource(absent, watch=False)  # type: ignore[operator]
    assert await absent.check_apply(False) is False  # noop: an earlier resource may add it
    with pytest.raises(ResourceError, match="no interface nosuch0"):
        await absent.check_apply(True)
    for params, key in (
        ({"name": "a/b"}, "name"),
        ({"name": "x", "addrs": ["10.0.0.1"]}, "addrs[0]"),
        ({"name": "x", "addrs": ["nope/24"]}, "addrs[0]"),
        ({"name": "x", "gateway": "300.1.1.1"}, "gateway"),
        ({"name": "x", "addrs": ["10.0.0.1/24", "10.0.0.1/16"]}, "addrs[1]"),
        (
            {"name": "x", "addrs": ["10.0.0.1/24", "2001:db8::1/64"], "gateway": "10.0.1.1"},
            "gateway",
        ),
        ({"name": "x", "addrs": ["10.0.0.1/24"], "gateway": "2001:db9::1"}, None),
        ({"name": "x", "addrs": ["2001:db8::1/64"], "gateway": "fe80::1"}, None),
        ({"name": "x", "addrs": ["10.0.0.1/24"], "gateway": "10.0.0.254"}, None),
    ):
        if key is None:  # another family, link-local, or on the subnet: fine
            NetRes(**params).validate()  # type: ignore[arg-type]
            continue
        with pytest.raises(ValidationError) as err:
            NetRes(**params).validate()  # type: ignore[arg-type]
        assert err.value.key == key


@inside
async def test_net_wakes_only_for_what_it_checks(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leads, 2026-12-06: every rtnetlink message woke net (another interface's, a link-local
    address's): mgmt's dhcp1 under --noop said its `would write ...` three times, once more
    for each IPv6 link-local address (its veth's and the peer's) when their DAD ended. A
    message of another interface, or of a link-local address, is no event now; one of its
    own address, link or default route is."""
    monkeypatch.setenv("MGMT_NETWORKD_DIR", str(tmp_path))
    await _ip("link", "add", "mgmt4", "type", "veth", "peer", "name", "mgmt5")
    res = NetRes(name="mgmt4", state="up", addrs=["192.0.2.14/24"], gateway="192.0.2.1")
    running: Running = await run_resource(res)  # type: ignore[operator]
    running.handle.rearm()
    await _ip("link", "set", "dev", "mgmt5", "up")  # the peer: another interface
    await _ip("addr", "add", "198.51.100.5/24", "dev", "mgmt5")
    await _ip("addr", "add", "fe80::14/64", "dev", "mgmt4")  # link scope: the kernel's
    await _ip("route", "add", "203.0.113.0/24", "dev", "mgmt5")
    assert await running.handle.no_event(0.5)
    await _ip("addr", "add", "198.51.100.14/24", "dev", "mgmt4")  # its own: news
    await running.handle.next_event()
    await _ip("link", "set", "dev", "mgmt4", "up")
    await running.handle.next_event()
    await _ip("route", "add", "default", "via", "198.51.100.1", "dev", "mgmt4")
    await running.handle.next_event()
    await _ip("link", "set", "dev", "mgmt4", "down")
    await running.handle.next_event()
    await _ip("link", "set", "dev", "mgmt4", "name", "mgmt6")  # renamed away: news
    await running.handle.next_event()


@inside
async def test_net_gateway_lost_with_its_address_is_an_event(
    run_resource: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review4, 2026-12-06: the kernel flushes an IPv4 default route whose gateway an address
    made reachable when that address goes, with no RTM_DELROUTE (`ip monitor` shows none). A
    net managing the gateway but not the addresses (addrs unset: another tool's) ignored its
    interface's address messages since the leads' filter: the route, gone with the address,
    was not repaired when the address came back. An IPv6 default route deleted by hand was no
    event at all (the IPv6 route group was not subscribed, before the filter too)."""
    monkeypatch.setenv("MGMT_NETWORKD_DIR", str(tmp_path))
    await _ip("link", "add", "mgmt7", "type", "veth", "peer", "name", "mgmt8")
    await _ip("link", "set", "dev", "mgmt8", "up")
    await _ip("link", "set", "dev", "mgmt7", "up")
    await _ip("addr", "add", "192.0.2.17/24", "dev", "mgmt7")  # not net's: another tool's
    res = NetRes(name="mgmt7", gateway="192.0.2.1")
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(True) is False
    assert "default via 192.0.2.1" in await _ip("route", "show", "dev", "mgmt7")
    running.handle.rearm()
    await _ip("addr", "del", "192.0.2.17/24", "dev", "mgmt7")  # the route goes with it
    await running.handle.next_event()
    assert "default" not in await _ip("route", "show", "dev", "mgmt7")
    await _ip("addr", "add", "192.0.2.17/24", "dev", "mgmt7")  # back: the route can be too
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert "default via 192.0.2.1" in await _ip("route", "show", "dev", "mgmt7")
    await _ip("-6", "addr", "add", "2001:db8::17/64", "dev", "mgmt7", "nodad")
    six = NetRes(name="mgmt7", gateway="2001:db8::1")
    running6: Running = await run_resource(six)  # type: ignore[operator]
    assert await six.check_apply(True) is False
    assert "default via 2001:db8::1" in await _ip("-6", "route", "show", "dev", "mgmt7")
    running6.handle.rearm()
    await _ip("-6", "route", "del", "default", "via", "2001:db8::1", "dev", "mgmt7")
    await running6.handle.next_event()
    assert await six.check_apply(True) is False
    assert "default via 2001:db8::1" in await _ip("-6", "route", "show", "dev", "mgmt7")
