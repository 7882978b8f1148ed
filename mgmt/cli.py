"""The `mgmt` command: parses flags into a Config and calls `agent.run(config)`.

mgmt run [flags] yaml FILE      (also: mgmt run [flags] FILE)
mgmt run [flags] empty
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from mgmt.config import Config, ExitCode, option_fields

VERSION = "0.1.0"


def _env_default(name: str, kind: Any, default: Any) -> Any:
    value = os.environ.get("MGMT_" + name.upper())
    if value is None:
        return default
    if kind == "bool":
        return value.strip().lower() in ("1", "true", "yes", "on")
    if kind == "int":
        return int(value)
    if kind in {"Path", "Path | None"}:
        return Path(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `mgmt --version`, `mgmt run ...`."""
    parser = argparse.ArgumentParser(
        prog="mgmt", description="Event-driven, parallel configuration management."
    )
    parser.add_argument("--version", action="version", version=f"mgmt {VERSION}")
    parser.add_argument("command", choices=["run"], help="run: run a graph (see mgmt run --help)")
    return parser


def build_run_parser() -> argparse.ArgumentParser:
    """`mgmt run`: one option per Config field, then the front-end and its file."""
    run = argparse.ArgumentParser(
        prog="mgmt run",
        description="Run a graph: `mgmt run [flags] yaml FILE`, `mgmt run FILE`, "
        "`mgmt run empty`. Every flag also reads MGMT_<FLAG> from the environment.",
    )
    for f in option_fields():
        default = f.default if f.default is not MISSING else f.default_factory()
        default = _env_default(f.name, f.type, default)
        flag = "--" + f.name.replace("_", "-")
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        if f.type == "bool":
            run.add_argument(flag, action="store_true", default=default, help=f.metadata["help"])
            continue
        conv = {"int": int, "Path": Path, "Path | None": Path}.get(str(f.type), str)
        run.add_argument(flag, type=conv, default=default, help=f.metadata["help"], **extra)
    run.add_argument(
        "target", nargs="+", metavar="FRONTEND", help="`yaml FILE`, `FILE`, or `empty`"
    )
    return run


def parse(argv: list[str]) -> Config:
    """argv (without the program name) -> Config; exits 2 on a usage error."""
    if not argv or argv[0] != "run":
        build_parser().parse_args(argv[:1])  # --help, --version, or a usage error (exit 2)
    parser = build_run_parser()
    args = parser.parse_intermixed_args(argv[1:])
    target: list[str] = args.target
    if target == ["empty"]:
        frontend, file = "empty", None
    elif len(target) == 2 and target[0] == "yaml":
        frontend, file = "yaml", Path(target[1])
    elif len(target) == 1 and target[0] not in ("yaml", "empty"):
        frontend, file = "yaml", Path(target[0])
    else:
        parser.error(f"expected `yaml FILE`, `FILE` or `empty`, got {' '.join(target)!r}")
    values = {f.name: getattr(args, f.name) for f in option_fields()}
    return Config(frontend=frontend, file=file, **values)


def main(argv: list[str] | None = None) -> int:
    config = parse(sys.argv[1:] if argv is None else argv)
    from mgmt import agent

    try:
        return int(asyncio.run(agent.run(config)))
    except KeyboardInterrupt:  # a signal before the agent installed its handlers
        return int(ExitCode.FAILED)


if __name__ == "__main__":
    sys.exit(main())
