"""The same N files with this project and with the peer tools installed here (salt-call --local,
puppet apply, pyinfra @local), whole-process wall time: a first run (the files absent) and a
no-op run (all in place), the tools interleaved round by round; medians and ratios printed.

A tool that is not installed is skipped, and the output says so. Each tool writes its own
directory. This project fsyncs every file it writes; the peers do not. Before each first run
the tool's last files are moved aside, not deleted (all are deleted at the end); with
`--delete-between` they are deleted right before it, as this script did before 2026-12-04 (see
`common.make_absent`: on this machine that costs every tool ~O(N) more system CPU per new file).

salt-call and pyinfra are looked up on PATH, then in `.bench-peers/bin/` of this checkout: a
scratch venv for the benchmark only (not a dependency of the project), made with

    python3 -m venv .bench-peers && .bench-peers/bin/pip install salt pyinfra

`--base DIR` adds another checkout of this project (run as `python -m mgmt` in DIR, as
bench/cron.py does: with DIR's .venv, or this one's for a byte-compiled `git archive`).

    .venv/bin/python bench/peers.py [--count 100] [--rounds 5] [--base DIR] [--delete-between]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import MGMT, ROOT, checkout, files_graph, make_absent, run_child, run_script

Setup = Callable[[Path, Path, int], list[str]]  # (work dir, output dir, count) -> argv


def mgmt(work: Path, out: Path, count: int) -> list[str]:
    graph = work / "graph.yaml"
    graph.write_text(files_graph(out, count))
    return [*MGMT, "run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", "yaml", str(graph)]


def salt(work: Path, out: Path, count: int) -> list[str]:
    (work / "states").mkdir()
    lines = [f"{out}:\n  file.directory: []\n"]
    lines += [
        f'{out}/f{i}:\n  file.managed:\n    - contents: "file number {i}"\n' for i in range(count)
    ]
    (work / "states" / "files.sls").write_text("".join(lines))
    (work / "minion").write_text(
        f"file_client: local\nfile_roots:\n  base: [{work / 'states'}]\n"
        f"cachedir: {work / 'cache'}\npki_dir: {work / 'pki'}\nlog_file: {work / 'log'}\n"
    )
    return ["salt-call", "--local", f"--config-dir={work}", "state.apply", "files"]


def puppet(work: Path, out: Path, count: int) -> list[str]:
    lines = [f"file {{ '{out}': ensure => directory }}\n"]
    lines += [
        f"file {{ '{out}/f{i}': ensure => file, content => \"file number {i}\\n\" }}\n"
        for i in range(count)
    ]
    (work / "site.pp").write_text("".join(lines))
    dirs = [f"--{d}dir={work / d}" for d in ("conf", "var", "code", "log", "run")]
    return ["puppet", "apply", *dirs, str(work / "site.pp")]


def pyinfra(work: Path, out: Path, count: int) -> list[str]:
    lines = ["from pyinfra.operations import files\n", f"files.directory(path={str(out)!r})\n"]
    lines += [
        f"files.put(src=io.StringIO('file number {i}\\n'), dest={str(out)!r} + '/f{i}')\n"
        for i in range(count)
    ]
    (work / "deploy.py").write_text("import io\n" + "".join(lines))
    return ["pyinfra", "-y", "@local", str(work / "deploy.py")]


TOOLS: dict[str, tuple[str, Setup]] = {
    "mgmt": ("", mgmt),
    "salt-call --local": ("salt-call", salt),
    "puppet apply": ("puppet", puppet),
    "pyinfra @local": ("pyinfra", pyinfra),
}


def find(binary: str) -> str | None:
    """The tool on PATH, else in the benchmark's scratch venv (see the module doc)."""
    found = shutil.which(binary)
    scratch = ROOT / ".bench-peers" / "bin" / binary
    return found or (str(scratch) if scratch.exists() else None)


def based(base: Path) -> Setup:
    """The mgmt setup for the checkout `base`: `python -m mgmt` run in it."""
    python = base / ".venv" / "bin" / "python"

    def setup(work: Path, out: Path, count: int) -> list[str]:
        argv = mgmt(work, out, count)[len(MGMT) :]
        return [str(python) if python.exists() else sys.executable, "-m", "mgmt", *argv]

    return setup


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    run_child(argv, cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", type=Path, help="another checkout of mgmt, interleaved")
    parser.add_argument(
        "--delete-between",
        action="store_true",
        help="delete each tool's last files right before its first run, not move them aside",
    )
    args = parser.parse_args()
    if args.base is not None:
        args.base = checkout(args.base, "--base")
    root = Path(tempfile.mkdtemp(prefix="mgmt-bench-peers-"))
    runs: dict[str, tuple[list[str], Path, Path]] = {}  # label -> argv, its cwd, its output
    tools = dict(TOOLS)
    if args.base is not None:
        tools = {"mgmt": TOOLS["mgmt"], "mgmt (base)": ("", based(args.base.resolve())), **TOOLS}
    for label, (binary, setup) in tools.items():
        path = find(binary) if binary else ""
        if path is None:
            print(f"{label}: not installed here, skipped")
            continue
        work = root / label.split()[0].replace("(", "").replace(")", "") / str(len(runs))
        work.mkdir(parents=True)
        out = work / "out"
        argv = setup(work, out, args.count)
        cwd = args.base if label == "mgmt (base)" else work
        runs[label] = ([path, *argv[1:]] if binary else argv, cwd, out)
    first: dict[str, list[float]] = {label: [] for label in runs}
    noop: dict[str, list[float]] = {label: [] for label in runs}
    try:
        for _ in range(args.rounds):
            for label, (argv, work, out) in runs.items():  # interleaved: A B C, A B C, ...
                make_absent(out, out.parent / "aside", args.delete_between)
                first[label].append(timed(argv, work))
                made = len(list(out.iterdir())) if out.is_dir() else 0
                if made != args.count:  # a tool that exits 0 without doing the work
                    raise SystemExit(f"{label} made {made} of {args.count} files: {argv}")
                noop[label].append(timed(argv, work))
        load = os.getloadavg()[0]
        how = "deleted" if args.delete_between else "moved aside"
        print(
            f"{args.count} files, {args.rounds} rounds, load {load:.1f} (whole process, median;"
            f" the last files {how} before each first run):"
        )
        base_first = statistics.median(first["mgmt"])
        base_noop = statistics.median(noop["mgmt"])
        for label in runs:
            f, n = statistics.median(first[label]), statistics.median(noop[label])
            print(
                f"  {label:18s} first run {f:7.3f}s ({f / base_first:5.1f}x mgmt)"
                f"   no-op {n:7.3f}s ({n / base_noop:5.1f}x mgmt)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
