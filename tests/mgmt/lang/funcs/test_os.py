"""import "os": the streams follow what they read (inotify, a real subprocess's output), the
others read this host as mgmt's do."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mgmt.lang.errors import FuncError, LangError, NotReady
from mgmt.lang.funcs import os as los
from mgmt.lang.runtime import Runtime
from mgmt.lang.source import LangSource
from tests.mgmt.lang.helpers import binding, run, value_of

# What `until` waits for when $name must be a run-time error.
ERROR = object()


@contextlib.asynccontextmanager
async def running(src: str) -> AsyncIterator[tuple[Runtime, Any]]:
    """A runtime of the program, and `until(name, value)`: evaluate until $name is value (or,
    with ERROR, a run-time error; or, with a callable, until it holds for $name's value)."""
    woke = asyncio.Event()
    rt = run(src, notify=woke.set)
    rt.evaluate()

    async def until(name: str, value: Any) -> None:
        async with asyncio.timeout(10):
            while True:
                rt.evaluate()
                try:
                    found = binding(rt, name)
                    if value(found) if callable(value) else found == value:
                        return
                except NotReady:  # no value yet
                    pass
                except LangError:  # an error (for now)
                    if value is ERROR:
                        return
                woke.clear()
                if not rt.pending:
                    await woke.wait()

    try:
        yield rt, until
    finally:
        await rt.close()


async def test_file_exists_follows_the_path(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"  # its directory does not exist yet either
    async with running(f'import "os"\n$e = os.file_exists("{path}")\nnoop "n" {{}}\n') as (
        _rt,
        until,
    ):
        await until("e", False)
        path.parent.mkdir()
        path.write_text("x")
        await until("e", True)
        path.unlink()
        await until("e", False)
        path.mkdir()  # a directory counts too
        await until("e", True)


async def test_system_streams_each_line_and_a_new_command_stops_the_old(tmp_path: Path) -> None:
    gate, pids = tmp_path / "gate", tmp_path / "pids"
    source = tmp_path / "cmd"
    # The command: a line, then wait for the gate, then another line; its pid goes to a file.
    first = f"echo $$ >> {pids}; echo alpha; while [ ! -e {gate} ]; do sleep 0.01; done; echo beta"
    source.write_text(first)
    src = f'import "os"\n$c = os.readfile("{source}")\n$l = os.system($c)\nnoop "n" {{ comment => $l }}\n'
    async with running(src) as (rt, until):
        await until("l", "alpha")
        gate.write_text("")
        await until("l", "beta")
        gate.unlink()
        source.write_text(first.replace("alpha", "gamma").replace("beta", "delta"))
        await until("l", "gamma")
        pid = int(pids.read_text().split()[-1])
        # the old command finished; the new one is waiting at the gate: a new command again
        source.write_text("echo epsilon")
        await until("l", "epsilon")
        await rt.reap()
        with pytest.raises(ProcessLookupError):  # the waiting command was killed
            os.kill(pid, 0)


async def test_system_logs_standard_error_and_stops_on_close(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    src = f'import "os"\n$l = os.system("echo oops >&2; echo $$ > {marker}; echo up; sleep 60")\nnoop "n" {{ comment => $l }}\n'
    async with running(src) as (_rt, until):
        await until("l", "up")
        pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_user_exists_rereads_passwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n")
    monkeypatch.setattr(los.UserExists, "PASSWD", str(passwd))
    async with running(
        'import "os"\n$u = os.user_exists("james")\nnoop "n" { comment => if $u { "y" } else { "n" } }\n'
    ) as (_rt, until):
        await until("u", False)
        passwd.write_text(passwd.read_text() + "james:x:1000:1000::/home/james:/bin/sh\n")
        await until("u", True)


async def test_family_follows_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"  # missing at first, as the files
    for name in los.FAMILY_FILES:
        monkeypatch.setitem(los.FAMILY_FILES, name, str(etc / f"{name}_version"))
    src = 'import "os"\n$d = os.is_family_debian()\n$r = os.is_family_redhat()\n$f = os.family()\nnoop "n" {}\n'
    async with running(src) as (_rt, until):
        await until("d", False)
        await until("f", "")
        etc.mkdir()
        (etc / "debian_version").write_text("12\n")
        await until("d", True)
        await until("f", "debian")
        (etc / "redhat_version").write_text("x")  # the first of FAMILY_FILES wins
        await until("r", True)
        await until("f", "redhat")
        (etc / "redhat_version").unlink()
        await until("f", "debian")
        await until("r", False)


def test_host_facts(tmp_path: Path) -> None:
    prelude = 'import "os"'
    modules = tmp_path / "modules"
    modules.write_text("r8169 94208 0 - Live 0x0\nloop 32768 0 - Live 0x0\n")
    assert los.modinfo_loaded("r8169", str(modules)) is True
    assert los.modinfo_loaded("r816", str(modules)) is False
    assert isinstance(value_of("os.is_virtual()", prelude), bool)
    assert value_of("os.args()", prelude)[0]
    assert value_of('os.home("root")', prelude) == "/root/"
    with pytest.raises(FuncError, match="unknown user no-such-user-x"):
        value_of('os.home("no-such-user-x")', prelude)


async def test_the_first_graph_waits_for_the_first_line_of_os_system(tmp_path: Path) -> None:
    """A stream that starts without a value (the command has not printed yet) gets it before
    the first graph is taken, as in mgmt: a cron run of such a program has a graph."""
    program = tmp_path / "main.mcl"
    program.write_text(
        'import "os"\n$l = os.system("sleep 0.2; echo hi")\nnoop "n" { comment => $l }\n'
    )
    source = await LangSource.open(program, hostname="h1", watch=False)
    try:
        assert source.first is not None
        (noop,) = [v for v in source.first.graph if v.kind == "noop"]
        assert noop.comment == "hi"
    finally:
        await source.aclose()
