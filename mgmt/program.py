"""The agent's `engine.program.ProgramRef`: the files of the program it runs, for resources.

- A deploy (`run empty`, `run --deploy`): the running deploy's bundle, as stored in the cluster.
- A local `yaml FILE` or `lang FILE|DIR/`: what `mgmt deploy` would store for it
  (`mgmt.deploy.bundle.program_files`: the program, the modules it imports, `files/`).
  A read is kept while none of the files it read and none of their directories changed
  (size, mtime): the agent asks again after every graph the program produces, which must
  not compile the program again each time (a timer's graph every second). A read is not
  kept while a file's mtime is within RACY_NS of the read's start (`_settled`).
- Anything else (puppet, a graph given by the caller): no program.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ResourceError
from engine.program import Program, ProgramRef

if TYPE_CHECKING:
    from mgmt.config import Config
    from mgmt.deploy.source import DeploySource

_Stamp = tuple[tuple[str, int, int], ...]
# A file written this close to a read's start (or after it) may have changed during the read:
# its stamp, taken after, would then hold the new size and mtime and the read the old or a
# partial content, kept until the file changed again (deploy:tar archived a half-written
# main.mcl and never the edit: CI of 2026-12-06). File times come from the kernel's coarse
# clock (a tick, up to 10 ms, behind the fine one), and a rewrite within one tick keeps the
# size and the mtime: a second is far beyond both.
RACY_NS = 1_000_000_000


def program_ref(config: Config, deploys: DeploySource | None) -> ProgramRef:
    if deploys is not None:
        return ProgramRef(_deploy_loader(deploys))
    if config.file is not None and config.frontend in ("yaml", "lang"):
        return ProgramRef(_local_loader(config.frontend, config.file))
    return ProgramRef(lambda: None)


def _deploy_loader(deploys: DeploySource) -> Callable[[], Program | None]:
    last: list[tuple[int, Program]] = []

    def load() -> Program | None:
        from mgmt.deploy import DeployError
        from mgmt.deploy.bundle import Bundle

        running = deploys.running
        if running is None:
            return None
        rec = running.record
        if last and last[0][0] == rec.id:
            return last[0][1]
        try:
            bundle = Bundle.decode(running.data)
        except DeployError as err:  # verified when it was prepared: not expected
            raise ResourceError(f"deploy {rec.id}: {err}") from None
        program = Program(bundle.frontend, bundle.entry, bundle.files, f"deploy {rec.id}")
        last[:] = [(rec.id, program)]
        return program

    return load


def _local_loader(frontend: str, path: Path) -> Callable[[], Program]:
    last: list[tuple[_Stamp, Program]] = []

    def load() -> Program:
        if last and _stamp_of(last[0][0]) == last[0][0]:
            return last[0][1]
        from mgmt.deploy import DeployError
        from mgmt.deploy.bundle import read_program

        began = time.time_ns()
        try:
            bundle = read_program(frontend, path)
        except DeployError as err:
            raise ResourceError(f"the program's files: {err}") from None
        base = path if path.is_dir() else path.parent
        names = [base / name for name in bundle.files]
        dirs = {str(p.parent) for p in names} | {str(base)}
        if (base / "files").is_dir():
            dirs |= {root for root, _, _ in os.walk(base / "files")}
        stamp = _stamp_of(tuple((str(p), 0, 0) for p in [*names, *map(Path, sorted(dirs))]))
        if path.is_dir():
            follow: tuple[str, ...] = (f"{base}/",)
        else:
            own = [str(base / name) for name in bundle.files if not name.startswith("files/")]
            follow = (*own, *([f"{base}/files/"] if (base / "files").is_dir() else []))
        program = Program(bundle.frontend, bundle.entry, bundle.files, str(path), watch=follow)
        last[:] = [(stamp, program)] if _settled(stamp, began) else []
        return program

    return load


def _stamp_of(stamp: _Stamp) -> _Stamp:
    """The same paths with their current size and mtime (-1, -1: gone)."""
    out = []
    for name, _, _ in stamp:
        try:
            st = os.stat(name)
        except OSError:
            out.append((name, -1, -1))
        else:
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _settled(stamp: _Stamp, began: int) -> bool:
    """Whether every file of `stamp` was last changed clearly before `began` (ns, the read's
    start): then the read is its content, and the stamp tells any later change."""
    return all(mtime < began - RACY_NS for _, _, mtime in stamp)
