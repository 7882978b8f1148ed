"""cron and svc in mcl programs, run by the real `mgmt` against a real systemd manager.

mgmt's examples/lang `cron0` ... `cron4` and `autoedges1` need a service manager on D-Bus;
docs/mgmt-examples.md says how they converge here: against a manager found through the
documented environment (docs/resources/svc.md, cron.md). These programs are ours, of the same
shapes (a session timer and its svc, a timer of the system path with its unit file, a timer on
a calendar whose service file is named from $HOME, each removed again, a stopped svc after
files with autoedges), each run the way the team's example tool runs mgmt's (`--noop`) and for
real. The manager is `systemd --user`, contained (tests/systemd_fixture.py); its unit directory
is both the system path's ($MGMT_SYSTEMD_UNIT_DIR) and the session's ($XDG_CONFIG_HOME).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.helpers import run_mgmt
from tests.systemd_fixture import Client, RealSystemd

ONESHOT = "[Service]\nType=oneshot\nExecStart=/bin/true\n"


def environment(manager: RealSystemd) -> dict[str, str]:
    """Both code paths pointed at `manager`, and $HOME that `sys.getenv` reads."""
    return {**manager.env(session=False), **manager.env(session=True), "HOME": manager.vars["HOME"]}


async def run(manager: RealSystemd, tmp_path: Path, text: str, noop: bool) -> str:
    """A one-shot run of the program `text` (exit 0 asserted); its log."""
    program = tmp_path / "main.mcl"
    program.write_text(text)
    args = ["run", "--tmp-prefix", "--converged-timeout=0", "lang", str(program)]
    if noop:
        args.insert(2, "--noop")
    code, out = await asyncio.to_thread(run_mgmt, args, env=environment(manager))
    assert code == 0, out
    return out


async def timer_up(sd: Client, timer: str) -> bool:
    return await sd.active(timer) == "active" and await sd.file_state(timer) == "enabled"


async def test_a_session_timer_and_its_svc(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """mgmt's cron0: a session timer (OnBootSec) and an svc of the unit it starts."""
    name = manager.name("oneshot")
    text = (
        f'cron "{name}" {{\n\tsession => true,\n\ttrigger => "OnBootSec",\n\ttime => "60",\n}}\n'
        f'svc "{name}" {{\n\tsession => true,\n}}\n'
    )
    timer = manager.unit_dir / f"{name}.timer"
    out = await run(manager, tmp_path, text, noop=True)
    assert f"cron[{name}]: would create {timer}" in out
    assert not timer.exists()
    manager.write_unit(f"{name}.service", ONESHOT)  # the unit the timer starts must exist
    out = await run(manager, tmp_path, text, noop=False)
    assert f"cron[{name}]: started {name}.timer" in out
    assert "OnBootSec=60\n" in timer.read_text()
    assert await timer_up(sd, f"{name}.timer")


async def test_a_system_timer_with_its_unit_file_then_removed(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """mgmt's cron2 (a timer of the system path, the svc and the file of the unit it starts),
    then cron1 (the timer absent)."""
    name = manager.name("oneshot")
    service = manager.write_unit(f"{name}.service", ONESHOT)
    text = (
        f'cron "{name}" {{\n\ttrigger => "OnUnitActiveSec",\n\ttime => "2minutes",\n}}\n'
        f'svc "{name}" {{}}\n'
        f'file "{service}" {{}}\n'
    )
    timer = manager.unit_dir / f"{name}.timer"
    out = await run(manager, tmp_path, text, noop=True)
    assert f"cron[{name}]: would create {timer}" in out
    out = await run(manager, tmp_path, text, noop=False)
    assert f"cron[{name}]: started {name}.timer" in out
    assert await timer_up(sd, f"{name}.timer")

    absent = f'cron "{name}" {{\n\tstate => "absent",\n}}\n'
    await run(manager, tmp_path, absent, noop=True)
    assert timer.exists()
    await run(manager, tmp_path, absent, noop=False)
    assert not timer.exists()
    assert not manager.link("timers.target", f"{name}.timer").exists()
    assert await sd.active(f"{name}.timer") == "inactive"
    assert service.read_text() == ONESHOT  # not the timer's: cron leaves it


async def test_a_calendar_timer_named_from_home_then_all_removed(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """mgmt's cron3 (a session timer on a calendar; its service file found from $HOME through
    sys.getenv), then cron4 (timer absent, svc stopped, service file absent)."""
    name = manager.name("oneshot")
    service = manager.write_unit(f"{name}.service", ONESHOT)
    home = manager.vars["HOME"]
    assert service == Path(home, ".config/systemd/user", f"{name}.service")
    head = 'import "fmt"\nimport "sys"\n$home = sys.getenv("HOME")\n'
    path = f'fmt.printf("%s/.config/systemd/user/{name}.service", $home)'
    text = (
        f"{head}"
        f'cron "{name}" {{\n\tsession => true,\n\ttrigger => "OnCalendar",\n'
        f'\ttime => "*:*:0",\n}}\n'
        f'svc "{name}" {{\n\tsession => true,\n}}\n'
        f"file [{path}] {{}}\n"
    )
    await run(manager, tmp_path, text, noop=True)
    out = await run(manager, tmp_path, text, noop=False)
    assert f"cron[{name}]: started {name}.timer" in out
    assert await timer_up(sd, f"{name}.timer")

    gone = (
        f"{head}"
        f'cron "{name}" {{\n\tstate => "absent",\n\tsession => true,\n'
        f'\ttrigger => "OnCalendar",\n\ttime => "*:*:0",\n}}\n'
        f'svc "{name}" {{\n\tstate => "stopped",\n\tsession => true,\n}}\n'
        f"file [{path}] {{\n\tstate => $const.res.file.state.absent,\n}}\n"
    )
    await run(manager, tmp_path, gone, noop=True)
    assert service.exists() and (manager.unit_dir / f"{name}.timer").exists()
    await run(manager, tmp_path, gone, noop=False)
    assert not service.exists()
    assert not (manager.unit_dir / f"{name}.timer").exists()
    assert await sd.active(f"{name}.timer") == "inactive"


async def test_a_stopped_svc_after_files_with_autoedges(
    manager: RealSystemd, sd: Client, tmp_path: Path
) -> None:
    """mgmt's autoedges1 without its package: files before a stopped svc, every resource's
    Meta:noop false, the run's --noop still wins (as in mgmt); the unit is running, so the
    noop run would stop it and the real run does."""
    name = manager.name("drbd")
    manager.write_unit(f"{name}.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    await manager.systemctl("start", f"{name}.service")
    conf = tmp_path / "etc" / f"{name}.conf"
    confdir = tmp_path / "etc" / f"{name}.d"
    meta = "\tMeta:autoedge => true,\n\tMeta:noop => $noop,\n"
    text = (
        "$noop = false\n"
        f'file "{conf}" {{\n\tcontent => "a test",\n\tstate => $const.res.file.state.exists,\n'
        f'{meta}\tBefore => Svc["{name}"],\n}}\n'
        f'file "{confdir}/" {{\n\tstate => $const.res.file.state.exists,\n'
        f'{meta}\tBefore => Svc["{name}"],\n}}\n'
        f'svc "{name}" {{\n\tstate => "stopped",\n{meta}}}\n'
    )
    (tmp_path / "etc").mkdir()
    out = await run(manager, tmp_path, text, noop=True)
    assert f"svc[{name}]: would stop" in out
    assert not conf.exists() and not confdir.exists()
    assert await sd.active(f"{name}.service") == "active"
    await run(manager, tmp_path, text, noop=False)
    assert conf.read_text() == "a test" and confdir.is_dir()
    assert await sd.active(f"{name}.service") == "inactive"
