"""Every front-end's bad input through the installed `mgmt` command (real subprocesses).

`mgmt check`, `mgmt deploy` (yaml, lang) and, for a refused input, `mgmt run` on mutants of
the examples and on a directory, a FIFO, links and an empty file given as the program: exit 2
(or 0, or 1 where a good program's run or push fails) with one line per problem naming the
file, never a traceback, never a hang, nothing written in the scratch directory the managed
paths point to (tests/fuzz/frontends.py). A small fixed set here (a few seconds);
`--fuzz-long`: 200 mutants per front-end (minutes), as
`.venv/bin/python -m tests.fuzz.frontends --count 200` does by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fuzz
from tests.fuzz.frontends import Case, findings, mutants

COUNT = (
    {"yaml": 200, "lang": 200, "puppet": 60} if fuzz.LONG else {"yaml": 8, "lang": 8, "puppet": 1}
)
# The fast set: every special input and eight mutants of yaml and lang (~0.3 s each), one
# of Puppet's (a compile: ~1 s).
CASES = [c for frontend, count in COUNT.items() for c in mutants(frontend, count)]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(0 if fuzz.LONG else 300)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.frontend}:{c.name}" for c in CASES])
def test_bad_input_fails_cleanly_before_anything_is_applied(case: Case, tmp_path: Path) -> None:
    assert findings(case, tmp_path) == []
