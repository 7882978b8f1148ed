"""The fuzz suite: hypothesis-driven graph files and programs.

Every target holds one invariant: exit 0 or 2 with a one-line `FILE:LINE` error, never a
traceback, never more than a few seconds, nothing written. Decorate each target with
`@fuzz_settings()`; `pytest --fuzz-long tests/fuzz` runs 10,000 cases per target instead of a
few hundred.
"""

from __future__ import annotations

from hypothesis import settings

LONG = False  # set by tests/conftest.py from --fuzz-long


def fuzz_settings() -> settings:
    """The hypothesis settings of a fuzz target (read when the test module is collected)."""
    return settings.get_profile("fuzz-long" if LONG else "fuzz")
