"""Meta reverse through the real `mgmt` command: what left the graph is undone children first
(a file before its directory), a failed reversal is retried as its meta says and then counts as
a failure (exit code, the converged line, `mgmt status`), and --noop undoes nothing (tester7's
report, item 5)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.e2e.helpers import Daemon, run_mgmt


def programs(tmp_path: Path, meta: str = "") -> tuple[Path, Path, Path]:
    """(the directory the first program makes, the first program, a program without it)."""
    made = tmp_path / "newdir"
    first, other = tmp_path / "a.mcl", tmp_path / "b.mcl"
    first.write_text(
        f'file "{made}/" {{ state => "exists", Meta:reverse => true, {meta}}}\n'
        f'file "{made}/f" {{ state => "exists", content => "f\\n", Meta:reverse => true, }}\n'
    )
    other.write_text('print "p" { msg => "x", }\n')
    return made, first, other


def _run(prefix: Path, program: Path, *flags: str) -> tuple[int, str]:
    return run_mgmt(["run", "--prefix", str(prefix), "--converged-timeout=0", *flags, str(program)])


def blocked(prefix: Path, tmp_path: Path, meta: str = "") -> tuple[Path, Path]:
    """The first program applied (a cron run), then a file not ours in its directory, which
    then cannot be removed: (the directory, the program without it)."""
    made, first, other = programs(tmp_path, meta)
    assert _run(prefix, first)[0] == 0
    (made / "extra").write_text("not ours\n")
    return made, other


def test_a_directory_and_its_file_are_reversed_file_first_and_noop_reverses_nothing(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "prefix"
    made, first, other = programs(tmp_path)
    assert _run(prefix, first)[0] == 0
    assert (made / "f").read_text() == "f\n"
    code, log = _run(prefix, other, "--noop", "--detailed-exitcodes")
    assert code == 3, log  # it would undo them: a change
    assert (made / "f").exists()  # --noop changes nothing, reversals included
    assert log.count("would reverse (it left the graph; noop)") == 2, log
    code, log = _run(prefix, other, "--detailed-exitcodes")  # rebuilt from their records
    assert code == 3, log
    assert not made.exists()
    assert log.index(f"file[{made}/f]: reversed") < log.index(f"file[{made}/]: reversed"), log
    assert "reversal failed" not in log
    assert not list((prefix / "reverse" / "file").iterdir())


def test_a_failed_reversal_fails_the_run_and_is_kept_for_the_next(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    made, other = blocked(prefix, tmp_path)
    code, log = _run(prefix, other)
    assert code == 1, log
    assert "reversal failed (kept for the next run): [Errno 39] Directory not empty" in log
    assert f"in the desired state; reversal failed: file[{made}/]" in log
    assert not (made / "f").exists() and (made / "extra").exists()
    (made / "extra").unlink()
    code, log = _run(prefix, other)
    assert code == 0, log
    assert f"file[{made}/]: reversed" in log and not made.exists()


async def test_a_failed_reversal_is_retried_as_its_meta_says_before_the_run_ends(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "prefix"
    meta = "Meta:retry => 20, Meta:delay => 200, "
    made, other = await asyncio.to_thread(blocked, prefix, tmp_path, meta)
    args = ["run", "--prefix", str(prefix), "--converged-timeout=0", str(other)]
    async with Daemon(args) as run:
        await run.wait_log(f"file[{made}/]: reversal failed, retrying in 0.2s (20 left)")
        (made / "extra").unlink()
        await run.wait_log(f"file[{made}/]: reversed (it left the graph)")
        assert await run.wait() == 0, run.log  # the run waited for the retry to converge
    assert not made.exists()


async def test_the_daemon_shows_a_failed_reversal_and_a_reload_retries_it(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    made, first, other = programs(tmp_path)
    program = tmp_path / "cur.mcl"
    program.write_text(first.read_text())
    status = ["status", "--prefix", str(prefix)]
    async with Daemon(["run", "--prefix", str(prefix), str(program)]) as daemon:
        await daemon.wait_log("converged:")
        (made / "extra").write_text("not ours\n")
        program.write_text(other.read_text())
        await daemon.wait_log(f"file[{made}/]: reversal failed (kept for the next run)")
        code, out = await asyncio.to_thread(run_mgmt, status, 30)
        assert code == 1, out
        assert f"reversal failed: file[{made}/]: [Errno 39] Directory not empty" in out
        (made / "extra").unlink()
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log(f"file[{made}/]: reversed (it left the graph)")
        code, out = await asyncio.to_thread(run_mgmt, status, 30)
        assert code == 0 and "reversal" not in out, out
    assert not made.exists()


async def test_a_stop_while_a_reversal_retry_is_due_says_the_next_start_retries_it(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "prefix"
    meta = "Meta:retry => -1, Meta:delay => 600000, "
    made, other = await asyncio.to_thread(blocked, prefix, tmp_path, meta)
    async with Daemon(["run", "--prefix", str(prefix), str(other)]) as daemon:
        await daemon.wait_log(f"file[{made}/]: reversal failed, retrying in 600s (forever)")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log
    line = f"stopped: the reversal of file[{made}/] is retried at the next start (its record is"
    assert daemon.log.count(line) == 1, daemon.log
    (made / "extra").unlink()
    code, log = await asyncio.to_thread(_run, prefix, other)  # the next start: from its record
    assert code == 0 and f"file[{made}/]: reversed (it left the graph)" in log, log
    assert not made.exists()
