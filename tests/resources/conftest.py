"""Fixtures of the resources' tests."""

from pathlib import Path

import pytest


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A directory anyone can write, like /tmp without the sticky bit (what is below it,
    another local user may replace)."""
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    return root
