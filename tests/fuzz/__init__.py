"""The fuzz suite: hypothesis-driven graph files and programs.

Every target holds one invariant: exit 0 or 2 with a one-line `FILE:LINE` error, never a
traceback, never more than a few seconds, nothing written. Decorate each target with
`@fuzz_settings()`: a few hundred cases, derandomized (tests/conftest.py: the same cases every
run, CI's too, so that a run fails on what changed, never on a new random finding; each
`@example` runs first). The random search is a developer's run:
`.venv/bin/python -m pytest --fuzz-long tests/fuzz` draws 10,000 new cases per target (and
every other hypothesis test's at random); a finding goes in as an `@example` of its target.
"""

from __future__ import annotations

from hypothesis import settings

LONG = False  # set by tests/conftest.py from --fuzz-long


def fuzz_settings() -> settings:
    """The hypothesis settings of a fuzz target (read when the test module is collected)."""
    return settings.get_profile("fuzz-long" if LONG else "fuzz")
