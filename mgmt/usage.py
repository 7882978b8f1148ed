"""The command line's parsers: a usage error is one line (exit 2), not the whole synopsis."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors say what is wrong in one line and where the
    synopsis is (`--help`), instead of printing the whole synopsis first."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
