"""engine.local: the host's values, in memory and on disk, with watchers."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.local import LocalValues


def test_set_get_delete_and_persist(tmp_path: Path) -> None:
    local = LocalValues(tmp_path)
    seen: list[str] = []
    unsubscribe = local.subscribe("k", lambda: seen.append("k"))
    local.subscribe("other", lambda: seen.append("other"))
    assert local.get("k") is None
    assert local.set("k", {"a": (1, 2)}) is True  # tuples become lists (plain JSON)
    assert local.set("k", {"a": [1, 2]}) is False  # unchanged: no signal
    assert local.get("k") == {"a": [1, 2]}
    assert seen == ["k"]
    assert (tmp_path / "local" / "value").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "local" / "value" / "k.json").stat().st_mode & 0o777 == 0o600
    assert LocalValues(tmp_path).get("k") == {"a": [1, 2]}  # a restart reads it back
    unsubscribe()
    assert local.set("k", None) is True
    assert seen == ["k"]  # unsubscribed
    assert not (tmp_path / "local" / "value" / "k.json").exists()
    assert LocalValues(tmp_path).get("k") is None


def test_odd_keys_and_a_corrupt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = LocalValues(tmp_path)
    for key in ("../escape", "a/b", "x" * 300):
        local.set(key, key)
        assert LocalValues(tmp_path).get(key) == key
    assert sorted(p.parent for p in tmp_path.rglob("*.json")) == [tmp_path / "local" / "value"] * 3
    (tmp_path / "local" / "value" / "bad.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert LocalValues(tmp_path).get("bad") is None
    assert "is not JSON: ignored" in caplog.text


def test_pool_numbers_each_uid_once(tmp_path: Path) -> None:
    local = LocalValues(tmp_path)
    assert local.pool("ns", "james") == 1
    assert local.pool("ns", "purple") == 2
    assert local.pool("ns", "james") == 1
    assert LocalValues(tmp_path).pool("ns", "purple") == 2  # a restarted agent
    assert local.pool("other", "purple") == 1
    assert stat.S_IMODE((tmp_path / "local" / "pool" / "ns").stat().st_mode) == 0o700
    with pytest.raises(ValidationError, match="must not contain '/'"):
        local.pool("ns", "../x")


def test_vardir(tmp_path: Path) -> None:
    local = LocalValues(tmp_path)
    path = local.vardir("my/dir/")
    assert path.is_dir() and path == tmp_path / "local" / "vardir" / "my" / "dir"
    for bad in ("/abs/", "no-slash", "a/../../b/"):
        with pytest.raises(ValidationError):
            local.vardir(bad)
