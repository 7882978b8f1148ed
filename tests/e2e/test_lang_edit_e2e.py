"""A running program edited in place, as `open('w')`, `cat > FILE` and many editors do: the
file is truncated, then written, then closed; only the closed file is the program."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import Daemon, has_content, wait_path


def _program(out: Path, names: str) -> str:
    return "".join(f'file "{out}/{n}" {{ content => "{n}\\n", }}\n' for n in names)


async def _repaired(out: Path, name: str) -> None:
    """Delete a managed file and wait for its repair: the daemon has handled every inotify
    event before that one (one inotify queue, read in order)."""
    (out / name).unlink()
    await wait_path(out / name, has_content(f"{name}\n"))


async def test_a_program_rewritten_in_place_swaps_once_closed_and_errors_keep_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    program = tmp_path / "main.mcl"
    program.write_text(_program(out, "abcde"))
    async with Daemon(["run", "--tmp-prefix", "--verbose", "lang", str(program)]) as daemon:
        await daemon.wait_log("converged:")
        with program.open("w") as writer:  # truncated: empty until written
            writer.flush()
            await _repaired(out, "a")
            writer.write(_program(out, "abcd"))
            writer.flush()
            writer.write(_program(out, "f"))
            writer.flush()
            await _repaired(out, "b")
            assert "program file changed" not in daemon.log  # not while it is written
        await daemon.wait_log("swapping in the new program")
        await wait_path(out / "f", has_content("f\n"))
        await daemon.wait_log("graph swap: 4 kept, 1 stopped, 1 started")
        assert daemon.log.count("swapping in the new program") == 1

        # An error written in place: the running program (not an empty one) stays, said once.
        with program.open("w") as writer:
            writer.flush()
            writer.write("file {")
        await daemon.wait_log("keeping the running program")
        (out / "f").unlink()
        await _repaired(out, "c")
        await wait_path(out / "f", has_content("f\n"))
        with program.open("a") as writer:  # `echo ... >> FILE`: one write, one close
            writer.write("still bad\n")
        await daemon.wait_log("keeping the running program", count=2)
        await _repaired(out, "d")
        assert daemon.log.count("keeping the running program") == 2
        assert daemon.log.count("swapping in the new program") == 1
