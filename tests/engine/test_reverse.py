"""Reversal records: private directories, names too long for the file system, and nothing applied
when a record could not be kept (with the real engine and file resources)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.engine import Engine, Status
from engine.graph import Graph
from engine.handle import Handle
from engine.meta import Meta
from engine.safefs import fit_name
from resources.file import FileRes
from tests.engine.conftest import settle


def bits(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def reversible(name: str, path: Path) -> Graph:
    graph = Graph("t")
    graph.add(FileRes(name=name, path=str(path), content="managed\n", meta=Meta(reverse=True)))
    return graph


async def test_a_name_too_long_for_a_file_name_is_recorded_and_reversed(tmp_path: Path) -> None:
    name, path = "n" * 300, tmp_path / "f"
    engine = Engine(hostname="t", prefix=tmp_path / "prefix")
    try:
        await engine.apply(reversible(name, path))
        await settle(engine, lambda: engine.reversals.has(("file", name)))
        assert engine.reversals.stored() == [("file", name)]
        assert path.read_text() == "managed\n"
        await engine.apply(Graph("empty"))
        assert not path.exists()
        assert engine.reversals.stored() == []
    finally:
        await engine.stop()


async def test_nothing_is_applied_when_the_record_cannot_be_kept(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.write_text("a file where the state directory should be")
    path = tmp_path / "f"
    engine = Engine(hostname="t", prefix=prefix)
    try:
        await engine.apply(reversible("f", path))
        vertex = engine.vertices["file", "f"]
        await settle(engine, lambda: vertex.status in (Status.RETRYING, Status.FAILED))
        assert not path.exists()
    finally:
        await engine.stop(graceful=False)


async def test_records_are_private_also_in_a_prefix_that_was_not(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    (prefix / "reverse" / "file").mkdir(parents=True)
    for directory in (prefix, prefix / "reverse", prefix / "reverse" / "file"):
        directory.chmod(0o755)
    old = prefix / "reverse" / "file" / "f.json"  # from an older version: readable by all
    old.write_text('{"kind": "file", "name": "f", "params": {}, "data": {"existed": false}}')
    old.chmod(0o644)
    engine = Engine(hostname="t", prefix=prefix)
    try:
        await engine.apply(reversible("f", tmp_path / "f"))
        await settle(engine)
    finally:
        await engine.stop()
    assert bits(prefix) == bits(prefix / "reverse") == bits(prefix / "reverse" / "file") == 0o700
    assert bits(old) == 0o600


def test_a_resource_state_directory_is_private_from_the_prefix_down(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    prefix.chmod(0o755)
    name = "x" * 300  # too long for one file name: hashed
    handle = Handle(
        kind="noop",
        name=name,
        hostname="t",
        var_dir=prefix / "var" / "noop" / fit_name(name),
        prefix=prefix,
    )
    made = handle.var_dir
    assert made.parent == prefix / "var" / "noop" and made.name.startswith("#")
    for path in (prefix, prefix / "var", prefix / "var" / "noop", made):
        assert bits(path) == 0o700


async def test_reversing_a_followed_link_restores_its_target_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_text("original\n")
    link.symlink_to(target)
    graph = Graph("t")
    graph.add(
        FileRes(name="l", path=str(link), content="managed\n", follow=True, meta=Meta(reverse=True))
    )
    engine = Engine(hostname="t", prefix=tmp_path / "prefix")
    try:
        await engine.apply(graph)
        await settle(engine, lambda: engine.reversals.has(("file", "l")))
        assert target.read_text() == "managed\n"
        await engine.apply(Graph("empty"))
        assert link.is_symlink() and target.read_text() == "original\n"
    finally:
        await engine.stop()
