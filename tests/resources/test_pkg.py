"""pkg: the real apt-get/dpkg with two tiny Debian packages; events awaited, never slept on.

The apt tests (marker `apt`) are skipped only where apt-get is missing or we are not root. They
keep install/remove cycles few: one timeline test for one package, one grouped test for two. The parsers, validation and grouping rules are tested without apt.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shlex
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ResourceError, ValidationError
from engine.meta import Meta
from engine.resource import UID, Groupable
from engine.tasks import first_done
from resources.exec import ExecRes
from resources.pkg import PkgRes, usrmerge_alias, usrmerged
from resources.pkg.apt import parse_policy, parse_status
from resources.pkg.backend import Available, Change, Installed
from tests.aio import OnLog
from tests.conftest import HOST_LOCK, Running
from tests.e2e.helpers import run_mgmt

Start = Callable[..., Awaitable[Running]]

# Two real Debian packages of ~3 KB with no dependencies and no dpkg triggers: installing one
# costs ~2 s here (apt loads its cache), removing it ~0.2 s. hello or sl would work the same,
# but their man pages fire man-db's trigger, ~3 s per install or removal on this machine.
PKG, OTHER = "libjs-inherits", "libjs-is-typedarray"
MISSING = "mgmt-no-such-package"
DEPENDENT = "mgmt-test-needs-pkg"  # built on the fly: depends on PKG, in no repository
HISTORY = Path("/var/log/apt/history.log")
LOCK = HOST_LOCK  # the one tests marked `host` take (tests/conftest.py)
WAIT = 120.0  # seconds: a hang bound (apt loads its cache, on a loaded machine)
APT_OK = shutil.which("apt-get") is not None and os.geteuid() == 0
needs_apt = pytest.mark.skipif(not APT_OK, reason="needs apt-get and root")


async def run(*argv: str, timeout: float = 300) -> str:
    """Run a command (as an operator would), return its stdout; fail the test on error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv}: {err.decode()}"
    return out.decode()


async def version(name: str) -> str | None:
    """The installed version of `name` (dpkg "ii"), or None."""
    out = await run(
        "dpkg-query", "--show", "--showformat=${Package}\t${db:Status-Abbrev}\t${Version}\n", "*"
    )
    for line in out.splitlines():
        pkg, status, ver = line.split("\t")
        if pkg == name and status.startswith("ii"):
            return ver
    return None


def history_line(entry: str, prefix: str) -> str:
    return next((line for line in entry.splitlines() if line.startswith(prefix)), "")


def last_transaction_with(*names: str) -> str:
    """The newest apt history entry whose command line names every one of `names`."""
    entries = HISTORY.read_text().split("\n\n")
    for entry in reversed(entries):
        command = next((line for line in entry.splitlines() if line.startswith("Commandline:")), "")
        if all(f" {name}" in command for name in names):
            return entry
    raise AssertionError(f"no apt transaction names {names}")


async def local_package(
    directory: Path, name: str, depends: str = "", scripts: dict[str, str] | None = None
) -> Path:
    """Build a tiny .deb that only depends on `depends` (if any) and runs `scripts` (maintainer
    scripts by name: "prerm"...), with dpkg-deb, in no repository."""
    control = directory / name / "DEBIAN" / "control"
    control.parent.mkdir(parents=True)
    control.write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: mgmt tests <root@localhost>\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "Description: mgmt test package\n"
    )
    for script, text in (scripts or {}).items():
        (control.parent / script).write_text(text)
        (control.parent / script).chmod(0o755)
    deb = directory / f"{name}.deb"
    await run("dpkg-deb", "--build", "--root-owner-group", str(control.parent.parent), str(deb))
    return deb


# Held (only while both FIFOs exist): says it runs by opening `ready`, then waits for a line
# in `go` (an open and close of `go` without one does not let it go). At most HELD_AT_MOST s:
# dpkg's lock is the host's, and a test run killed (SIGKILL, no cleanup) must not leave it
# held for good by a prerm waiting on a FIFO nobody opens.
HELD_AT_MOST = 600
PRERM = f"""#!/bin/sh
if [ -p {{ready}} ] && [ -p {{go}} ]; then
    timeout {HELD_AT_MOST} sh -c ': > "$1"
        while [ -p "$2" ] && ! read -r line < "$2"; do :; done' sh {{ready}} {{go}}
fi
exit 0
"""


def let_go(fifo: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        with contextlib.closing(os.fdopen(fd, "w")) as go:
            go.write("now\n")


def release(ready: Path, go: Path) -> None:
    """Let the held prerm go (whichever FIFO it waits on) and a thread of ours waiting on
    `ready`, then remove the FIFOs: a later prerm does not wait."""
    with contextlib.suppress(OSError):  # a prerm blocked opening `ready` for writing
        os.close(os.open(ready, os.O_RDONLY | os.O_NONBLOCK))
    with contextlib.suppress(OSError):  # our thread blocked opening it for reading
        os.close(os.open(ready, os.O_WRONLY | os.O_NONBLOCK))
    let_go(go)
    ready.unlink(missing_ok=True)
    go.unlink(missing_ok=True)


async def audit() -> str:
    """What `dpkg --audit` finds wrong (exit 1 when it finds something): "" when consistent."""
    return (await output("dpkg", "--audit")).strip()


async def status(name: str) -> str:
    """dpkg's status of `name`, e.g. "ii", "iF" (half-configured); "" when unknown to it."""
    return (await output("dpkg-query", "--show", "--showformat=${db:Status-Abbrev}", name)).strip()


async def output(*argv: str) -> str:
    """A query's stdout, whatever its exit code."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(WAIT):
        out, _ = await proc.communicate()
    return out.decode()


@pytest.fixture
async def packages() -> AsyncIterator[None]:
    """Start with PKG and OTHER absent; afterwards restore whichever was installed before.

    Test runs on one machine take turns (a file lock): they share these two packages.
    """
    async with host_lock(LOCK), _packages():
        yield


@contextlib.asynccontextmanager
async def host_lock(path: Path, timeout: float = 600) -> AsyncIterator[None]:
    """An exclusive flock on `path`, waited for in a thread (bounded)."""
    with path.open("a") as lock:
        async with asyncio.timeout(timeout):
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.asynccontextmanager
async def _packages() -> AsyncIterator[None]:
    names = (PKG, OTHER)
    before = {name: await version(name) for name in names}
    installed = [name for name in names if before[name] is not None]
    if installed:
        await run("dpkg", "--remove", *installed)
    try:
        yield
    finally:
        extra = [n for n in names if before[n] is None and await version(n) is not None]
        if extra:
            await run("dpkg", "--remove", *extra)
        missing = [n for n in installed if await version(n) is None]
        if missing:
            await run("apt-get", "install", "--yes", "--quiet", *missing)


async def started(run_resource: Start, watch: bool = True, **params: Any) -> Running:
    return await run_resource(PkgRes(**params), watch=watch)


# the idempotency timeline, with real apt ------------------------------------------------------


@pytest.mark.apt
@needs_apt
async def test_timeline_install_drift_repair(
    run_resource: Start, packages: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await started(run_resource, name=PKG)
    res, handle = running.res, running.handle

    # noop: reports, changes nothing
    assert await res.check_apply(False) is False
    assert await version(PKG) is None
    assert f"pkg[{PKG}]: would install {PKG} " in caplog.text

    # the first apply installs; the second finds nothing to do (paired execution)
    assert await res.check_apply(True) is False
    installed = await version(PKG)
    assert installed is not None
    assert f"pkg[{PKG}]: installed {PKG} {installed}" in caplog.text
    assert await res.check_apply(True) is True
    assert f"nothing to do: {PKG} is installed ({installed})" in caplog.text
    assert await handle.no_event(0.3)  # checking alone writes nothing that is watched

    # the other states agree with what is installed, without changing anything
    for state in ("newest", installed):
        other = await started(run_resource, name=PKG, state=state, watch=False)
        assert await other.res.check_apply(False) is True
    other = await started(run_resource, name=PKG, state="0.0-nope", watch=False)
    with pytest.raises(ResourceError, match=rf"no version '0\.0-nope' of '{PKG}' in the apt cache"):
        await other.res.check_apply(False)

    # removing PKG would also remove a package that depends on it: refused, nothing touched
    dependent = await local_package(tmp_path, DEPENDENT, depends=PKG)
    await run("dpkg", "--install", str(dependent))
    try:
        # a package that no repository has: "newest" is what is installed
        local = await started(run_resource, name=DEPENDENT, state="newest", watch=False)
        assert await local.res.check_apply(False) is True
        remover = await started(run_resource, name=PKG, state="uninstalled", watch=False)
        assert await remover.res.check_apply(False) is False
        with pytest.raises(ResourceError, match=f"would also remove {DEPENDENT} .*refused"):
            await remover.res.check_apply(True)
        assert await version(PKG) == installed
    finally:
        await run("dpkg", "--remove", DEPENDENT)
    await handle.next_event()  # the watch saw those dpkg runs; PKG is still right
    assert await res.check_apply(True) is True

    # drift: removed by hand -> the watch reports it -> noop sees it -> apply repairs it
    await run("dpkg", "--remove", PKG)
    await handle.next_event()
    assert await res.check_apply(False) is False
    assert await version(PKG) is None
    assert await res.check_apply(True) is False
    assert await version(PKG) == installed
    assert await res.check_apply(True) is True


@pytest.mark.apt
@needs_apt
async def test_grouped_packages_change_in_one_transaction(
    run_resource: Start, packages: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leader, member = PkgRes(name=OTHER), PkgRes(name=PKG)
    assert leader.group_cmp(member)
    leader.grouped = [member]  # what the engine's autogroup does
    running = await run_resource(leader)
    assert leader.uids() == [UID("pkg", OTHER), UID("pkg", PKG)]

    # both installed by one apt-get call
    assert await leader.check_apply(True) is False
    assert await version(OTHER) is not None
    assert await version(PKG) is not None
    install = history_line(last_transaction_with(OTHER, PKG), "Install:")
    assert f"{OTHER}:" in install and f"{PKG}:" in install
    assert f"pkg[{OTHER}]: installed {OTHER} " in caplog.text
    assert f"pkg[{OTHER}]: installed {PKG} " in caplog.text  # logged under the vertex's name
    assert await leader.check_apply(True) is True

    # states mix: one call installs PKG again (removed by hand) and removes OTHER
    await run("dpkg", "--remove", PKG)
    await running.handle.next_event()
    leader.state = "uninstalled"
    assert await leader.check_apply(False) is False
    assert await version(OTHER) is not None
    assert await leader.check_apply(True) is False
    assert await version(OTHER) is None
    assert await version(PKG) is not None
    entry = last_transaction_with(f"{OTHER}-", PKG)
    assert f"{PKG}:" in history_line(entry, "Install:")
    assert f"{OTHER}:" in history_line(entry, "Remove:")
    assert f"pkg[{OTHER}]: removed {OTHER} " in caplog.text
    assert await leader.check_apply(True) is True


@pytest.mark.apt
@needs_apt
async def test_a_stop_mid_install_waits_for_apt_to_end_and_dpkg_stays_consistent(
    run_resource: Start, packages: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A forced stop (the check_apply cancelled) once apt-get runs: until 2026-12-07 apt-get was
    signalled, and a dpkg stopped half-way left its database "interrupted" (every later apt-get
    refused until `dpkg --configure -a`: seen when --max-runtime's grace ended an install)."""
    caplog.set_level(logging.DEBUG)
    running = await started(run_resource, name=PKG, watch=False)
    started_line = OnLog("apt-get install: started (pid ")
    engine_log = logging.getLogger("engine")
    engine_log.addHandler(started_line)
    try:
        task = asyncio.create_task(running.res.check_apply(True))
        async with asyncio.timeout(120):
            await started_line.seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # once apt-get has ended
            async with asyncio.timeout(300):
                await task
    finally:
        engine_log.removeHandler(started_line)
    assert "apt-get install: stopping: waiting for it to end first (pid " in caplog.text
    assert "apt-get install: ended well (pid " in caplog.text  # how it ended: said
    assert await version(PKG) is not None  # it ran to its end
    assert await run("dpkg", "--audit") == ""  # nothing half-done
    assert await running.res.check_apply(True) is True


@pytest.mark.apt
@pytest.mark.slow
@needs_apt
async def test_a_resource_queued_behind_a_sibling_s_transaction_does_not_take_it_for_a_stray(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two pkg resources of one agent (not grouped) applying at once: the second waits for the
    first's transaction on the agent's own lock (said at debug), then reads what is installed
    again and makes its change. Until 2026-12-07 it looked at dpkg's lock first and warned that
    its sibling's apt-get was holding it ("dpkg's lock is held by pid N (apt-get) ...", under a
    unit "a transaction of the agent's that a stop or timeout left running")."""
    caplog.set_level(logging.DEBUG, "engine")
    held_name, plain_name = "mgmt-test-queued-held", "mgmt-test-queued"
    ready, go = tmp_path / "ready", tmp_path / "go"
    prerm = PRERM.format(ready=shlex.quote(str(ready)), go=shlex.quote(str(go)))
    held = await local_package(tmp_path, held_name, scripts={"prerm": prerm})
    plain = await local_package(tmp_path, plain_name)
    first = await started(run_resource, name=held_name, state="uninstalled", watch=False)
    second = await started(run_resource, name=plain_name, state="uninstalled", watch=False)
    queued = OnLog("waiting for the agent's other apt transaction")
    stray = OnLog("dpkg's lock is held by pid ")
    engine_log = logging.getLogger("engine")
    tasks: list[asyncio.Task[bool]] = []
    async with host_lock(LOCK):
        await run("dpkg", "--install", str(held), str(plain))
        os.mkfifo(ready)
        os.mkfifo(go)
        engine_log.addHandler(queued)
        engine_log.addHandler(stray)
        try:
            tasks.append(asyncio.create_task(first.res.check_apply(True)))
            async with asyncio.timeout(WAIT):  # its prerm runs: dpkg's lock is held
                await asyncio.to_thread(lambda: ready.open().close())
            tasks.append(asyncio.create_task(second.res.check_apply(True)))
            async with asyncio.timeout(WAIT):
                await first_done(queued.seen.wait(), stray.seen.wait())
            assert not stray.seen.is_set(), caplog.text
            let_go(go)
            async with asyncio.timeout(WAIT):
                assert await asyncio.gather(*tasks) == [False, False]
        finally:
            engine_log.removeHandler(queued)
            engine_log.removeHandler(stray)
            release(ready, go)
            for task in tasks:
                task.cancel()  # a transaction under way is waited for, never signalled
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*tasks, return_exceptions=True)
            if await audit():
                await run("dpkg", "--configure", "-a")
            left = [
                name
                for name in (held_name, plain_name)
                if await status(name) not in ("", "un", "pn")
            ]
            if left:
                await run("dpkg", "--purge", *left)
    assert "dpkg's lock is held" not in caplog.text, caplog.text
    assert await status(held_name) in ("", "un", "pn") and await status(plain_name) in (
        "",
        "un",
        "pn",
    )


@pytest.mark.apt
@needs_apt
async def test_unknown_package_is_a_clear_error(run_resource: Start) -> None:
    running = await started(run_resource, name=MISSING, watch=False)
    with pytest.raises(ResourceError, match=f"no package named '{MISSING}' in the apt cache"):
        await running.res.check_apply(False)
    # "uninstalled" holds for a name that is nowhere: nothing to query, nothing to do
    absent = await started(run_resource, name=MISSING, state="uninstalled", watch=False)
    assert await absent.res.check_apply(True) is True


@pytest.mark.apt
@needs_apt
async def test_an_unknown_name_in_a_group_fails_alone(
    run_resource: Start, packages: None, caplog: pytest.LogCaptureFixture
) -> None:
    """tester6's finding 6: a typo'd name grouped with a good one failed the vertex under the
    good one's name and nothing was installed. It is known before any change: the others'
    changes are made, and the failure names the unknown member."""
    caplog.set_level(logging.INFO)
    leader, member = PkgRes(name=OTHER), PkgRes(name=MISSING)
    leader.grouped = [member]  # what the engine's autogroup does
    await run_resource(leader)
    unknown = rf"pkg\[{MISSING}\]: no package named '{MISSING}' in the apt cache"
    with pytest.raises(ResourceError, match=unknown + r".*other changes would be made\)$"):
        await leader.check_apply(False)
    assert await version(OTHER) is None  # noop: nothing changed
    assert f"pkg[{OTHER}]: would install {OTHER} " in caplog.text
    with pytest.raises(ResourceError, match=unknown + r".*other changes were made\)$"):
        await leader.check_apply(True)
    assert await version(OTHER) is not None
    with pytest.raises(ResourceError, match=unknown + r".*apt-get update\)$"):  # no change left
        await leader.check_apply(True)


@pytest.mark.apt
@needs_apt
def test_a_group_is_named_by_its_members_in_the_summary(tmp_path: Path) -> None:
    """The converged/failed summary of a grouped vertex names every member (noop: nothing
    is installed)."""
    graph = tmp_path / "pkg.yaml"
    graph.write_text(
        f"graph: p\nresources:\n  pkg:\n    - {{name: {OTHER}}}\n    - {{name: {MISSING}}}\n"
    )
    code, out = run_mgmt(["run", "--tmp-prefix", "--noop", "--converged-timeout=0", str(graph)])
    assert code == 1, out
    names = sorted([OTHER, MISSING])
    assert (
        f"failed: pkg[{names[0]},{names[1]}]" in out or f"failed: pkg[{names[1]},{names[0]}]" in out
    )


# parsers ----------------------------------------------------------------------------------------

POLICY = """\
hello:
  Installed: 2.10-2
  Candidate: 2.10-3
  Version table:
     2.10-3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 2.10-2 100
        100 /var/lib/dpkg/status
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
"""


def test_parse_policy() -> None:
    assert parse_policy(POLICY) == {
        "hello": Available(candidate="2.10-3", versions=("2.10-3", "2.10-2")),
        "mail-transport-agent": Available(candidate=None, versions=()),
    }
    assert parse_policy("") == {}


def test_parse_status() -> None:
    out = "hello\tii \t2.10-3\nsl\trc \t5.02-1\nvim\tiU \t9.0\nlibc6\tii \t2.36\nlibc6\tun \t\n"
    assert parse_status(out) == {
        "hello": Installed("2.10-3", complete=True),
        "vim": Installed("9.0", complete=False),
        "libc6": Installed("2.36", complete=True),
    }


def test_change_describe() -> None:
    assert Change("hello", "install", "2.10-3", None).describe() == "hello 2.10-3"
    assert Change("hello", "upgrade", "2.10-3", "2.10-2").describe() == "hello 2.10-2 -> 2.10-3"
    assert Change("sl", "remove", None, "5.02-1").describe() == "sl 5.02-1"


# validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ({"name": "-o"}, "name", "expected a package name"),
        ({"name": "a b"}, "name", "expected a package name"),
        ({"name": "hello*"}, "name", "expected a package name"),
        ({"name": "hello", "state": "latest"}, "state", "did you mean 'newest'"),
        ({"name": "hello", "state": "absent"}, "state", "did you mean 'uninstalled'"),
        ({"name": "hello", "state": "present"}, "state", "did you mean 'installed'"),
        ({"name": "hello", "state": "whatever"}, "state", "or an exact version"),
        ({"name": "hello", "state": ""}, "state", "or an exact version"),
        ({"name": "hello", "state": "2.10 3"}, "state", "or an exact version"),
    ],
)
def test_validate_names_the_field(params: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        PkgRes(**params).validate()
    assert err.value.key == key


@pytest.mark.parametrize("state", ["installed", "uninstalled", "newest", "2.10-3", "1:2.3~rc1+b2"])
def test_validate_accepts(state: str) -> None:
    PkgRes(name="libstdc++6", state=state, allowdowngrade=True).validate()


# capabilities ---------------------------------------------------------------------------------------


def test_group_cmp_rules() -> None:
    res = PkgRes(name="a")
    assert isinstance(res, Groupable)
    assert res.group_cmp(PkgRes(name="b"))
    assert res.group_cmp(PkgRes(name="b", state="uninstalled"))  # states mix in one apt call
    assert res.group_cmp(PkgRes(name="b", state="1.0-1"))
    assert not res.group_cmp(res)
    assert not res.group_cmp(PkgRes(name="a"))
    assert not res.group_cmp(PkgRes(name="b", allowdowngrade=True))
    assert not res.group_cmp(PkgRes(name="b", allowuntrusted=True))
    assert not res.group_cmp(PkgRes(name="b", meta=Meta(noop=True)))
    assert not res.group_cmp(PkgRes(name="b", meta=Meta(retry=3)))
    assert not res.group_cmp(ExecRes(name="b", cmd="true"))


def test_cmp_includes_the_group() -> None:
    one, two = PkgRes(name="a"), PkgRes(name="a")
    assert one.cmp(two)
    one.grouped = [PkgRes(name="b"), PkgRes(name="c")]
    assert not one.cmp(two)
    two.grouped = [PkgRes(name="c"), PkgRes(name="b")]
    assert one.cmp(two)
    two.grouped = [PkgRes(name="c", state="uninstalled"), PkgRes(name="b")]
    assert not one.cmp(two)


def test_uids_and_autoedges() -> None:
    res = PkgRes(name="openssh-server")
    assert res.uids() == [UID("pkg", "openssh-server")]
    assert res.autoedges() == []


def test_a_merged_usr_is_read_from_links_owned_by_root_to_usr(tmp_path: Path) -> None:
    """/bin -> usr/bin (or /usr/bin) owned by root makes /bin/x and /usr/bin/x one path; a link
    elsewhere, one owned by another user, or a real directory does not."""
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "sbin").symlink_to("/usr/sbin/")
    (tmp_path / "lib").symlink_to("usr/lib64")  # another target
    (tmp_path / "lib64").symlink_to("usr/lib64")
    os.lchown(tmp_path / "lib64", 65534, 65534)  # not root's
    (tmp_path / "lib32").mkdir()
    root = str(tmp_path)
    assert usrmerged(root) == {"bin", "sbin"}
    assert usrmerge_alias("/bin/ls", root) == "/usr/bin/ls"
    assert usrmerge_alias("/usr/sbin/chroot", root) == "/sbin/chroot"
    for path in ("/lib/x.so", "/usr/lib64/x.so", "/lib32/x", "/usr/share/x", "/bin", "/etc/x"):
        assert usrmerge_alias(path, root) is None, path
