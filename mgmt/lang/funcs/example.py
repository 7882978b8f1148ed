"""import "example": mgmt's sample functions (its docs and examples use them).

example.vumeter(symbol, multiplier, peak) is mgmt's gimmick: every second, one second of the
microphone (`rec`, from sox) and its peak amplitude (`sox ... stat`) drawn as a bar of
`symbol`s; it needs sox and a sound card (without them: a run-time error naming the program).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import ClassVar

from mgmt.lang import streams
from mgmt.lang.errors import FuncError
from mgmt.lang.funcs.convert import parse_int
from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.gofmt import sprintf


def meter(symbol: str, multiplier: int, peak: float, ratio: float) -> str:
    """The bar for an amplitude ratio (0..1), as mgmt draws it."""
    if not 0 <= ratio <= 1:
        raise fail(f"invalid ratio of {ratio:f}")
    bar = symbol * max(int(ratio * multiplier + 0.5), 0) or symbol
    if ratio > peak:
        bar += " PEAK!!!"
    return sprintf("(%f):\n%s\n%s", (ratio, bar, bar))


def amplitude(stat: str) -> float:
    """`Maximum amplitude:` of sox's stat output."""
    for line in stat.splitlines():
        if line.startswith("Maximum amplitude:"):
            try:
                return float(line.split(":", 1)[1])
            except ValueError:
                break
    raise fail("could not extract any data from sox's output")


class VUMeter(streams.Stream):
    """example.vumeter(symbol, multiplier, peak): the bar, every second."""

    RUNS_COMMANDS = True  # sox

    PROGRAMS: ClassVar[tuple[str, str]] = ("rec", "sox")
    TIMEOUT: ClassVar[float] = 10.0

    def start(self) -> None:
        self._tasks.append(self.host.spawn(self._run(), self.name))

    async def _run(self) -> None:
        rec, sox = self.PROGRAMS
        with tempfile.TemporaryDirectory(prefix="mgmt-vumeter-") as tmp:
            wav = os.path.join(tmp, "rec.wav")
            while True:
                try:
                    await self._output(rec, wav, "trim", "0", "1")
                    stat = await self._output(sox, "-t", ".wav", wav, "-n", "stat")
                    symbol, multiplier, peak = self.args
                    self.emit(meter(symbol, multiplier, peak, amplitude(stat)))
                except FuncError as err:
                    self.fail(str(err))
                    return
                await asyncio.sleep(1.0)

    async def _output(self, program: str, *args: str) -> str:
        """The program's standard output and error (sox writes its stat on stderr)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            raise fail(f"cannot run {program} (is sox installed?): {err.strerror}") from None
        try:
            async with asyncio.timeout(self.TIMEOUT):
                out, _ = await proc.communicate()
        except TimeoutError:
            raise fail(f"{program} took over {self.TIMEOUT:g} s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            last = text.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise fail(f"{program} failed: {last[0]}")
        return text


define("example.answer", "func() int", impl=lambda: 42, doc="the answer: 42")
define("example.int2str", "func(int) str", impl=str)
define("example.str2int", "func(str) int", impl=parse_int)
define("example.plus", "func(str, str) str", impl=lambda a, b: a + b)
define("example.vumeter", "func(str, int, float) str", stream=VUMeter, doc="the microphone's level")
