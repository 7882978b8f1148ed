"""json:edit: the edit language, and the timeline on a real file and on the cluster's store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from engine.world import MemoryStore, MemoryWorld
from resources.json_edit import JSONEditRes, parse_edit
from tests.conftest import Running


def test_parse_edit() -> None:
    assert parse_edit('.a.b = "x"').keys == ("a", "b")
    edit = parse_edit('.["service.example.com"]["acct/2026"].c = [1, {"x": true}]')
    assert edit.keys == ("service.example.com", "acct/2026", "c")
    assert edit.value == [1, {"x": True}]
    assert parse_edit("del(.a . b)").delete
    for bad in ("a = 1", ".a =", ".1a = 2", '.[""] = 1', ".a = 1 2", "del(.a", "del(.a) x", ".a 1"):
        with pytest.raises(ValueError):
            parse_edit(bad)


async def test_file_timeline_keeps_mode(run_resource: object, tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text('{"svc": {"labels": {"region": "us"}, "old": 1}, "gen": 7}\n')
    doc.chmod(0o640)
    edits = ['.svc.labels.region = "ca"', "del(.svc.old)", '.new.deep = {"on": true}']
    res = JSONEditRes(name="doc", store=f"file://{doc}", edits=edits)
    running: Running = await run_resource(res)  # type: ignore[operator]
    before = doc.read_text()
    assert await res.check_apply(False) is False  # noop
    assert doc.read_text() == before
    assert await res.check_apply(True) is False
    assert json.loads(doc.read_text()) == {
        "svc": {"labels": {"region": "ca"}},
        "gen": 7,
        "new": {"deep": {"on": True}},
    }
    assert os.stat(doc).st_mode & 0o777 == 0o640
    await running.handle.next_event()
    assert await res.check_apply(True) is True
    doc.write_text('{"svc": {"labels": {"region": "eu"}}, "gen": 8}')  # drift
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert json.loads(doc.read_text())["svc"]["labels"]["region"] == "ca"
    assert json.loads(doc.read_text())["gen"] == 8  # what the edits do not touch stays
    assert await res.check_apply(True) is True


async def test_file_errors(run_resource: object, tmp_path: Path) -> None:
    missing = JSONEditRes(name=str(tmp_path / "none.json"), edits=[".a = 1"])
    await run_resource(missing, watch=False)  # type: ignore[operator]
    assert await missing.check_apply(False) is False  # noop: an earlier resource may make it
    with pytest.raises(ResourceError, match="does not exist"):
        await missing.check_apply(True)
    (tmp_path / "list.json").write_text("[1]")
    listed = JSONEditRes(name=str(tmp_path / "list.json"), edits=[".a = 1"])
    await run_resource(listed, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="not hold a JSON object"):
        await listed.check_apply(True)
    (tmp_path / "scalar.json").write_text('{"a": 1}')
    inside = JSONEditRes(name=str(tmp_path / "scalar.json"), edits=[".a.b = 1"])
    await run_resource(inside, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="not a JSON object"):
        await inside.check_apply(True)
    (tmp_path / "nan.json").write_text('{"a": NaN}')  # Python's reader took it, jq does not
    nan = JSONEditRes(name=str(tmp_path / "nan.json"), edits=[".b = 1"])
    await run_resource(nan, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="is not valid JSON: NaN is not JSON"):
        await nan.check_apply(True)
    assert (tmp_path / "nan.json").read_text() == '{"a": NaN}'


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "relative", "edits": [".a = 1"]}, "name"),
        ({"name": "x", "store": "http://h/x", "edits": [".a = 1"]}, "store"),
        ({"name": "x", "store": "etcd:///", "edits": [".a = 1"]}, "store"),
        ({"name": "/x.json", "edits": []}, "edits"),
        ({"name": "/x.json", "edits": [".a = 1", "a = 1"]}, "edits[1]"),
        ({"name": "/x.json", "edits": [".a = NaN"]}, "edits[0]"),
        ({"name": "/x.json", "edits": [".a = 1", ".b = [-Infinity]"]}, "edits[1]"),
        ({"name": "/x.json", "edits": [".a = 1e999"]}, "edits[0]"),
        ({"name": "/x.json", "edits": ['.a = "\\ud800"']}, "edits[0]"),
    ],
)
def test_validation(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        JSONEditRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


async def test_etcd_store_timeline(run_resource: object) -> None:
    store = MemoryStore()
    world, other = MemoryWorld("h1", store), MemoryWorld("h2", store)
    res = JSONEditRes(name="hosts", store="etcd:///magic/hosts", edits=['.h1.state = "ready"'])
    assert res.needs_world()
    res.validate()
    running: Running = await run_resource(res, watch=False)  # type: ignore[operator]
    running.handle.world = world
    assert await res.check_apply(False) is False
    assert await world.str_get("magic/hosts") is None
    assert await res.check_apply(True) is False
    assert json.loads(await world.str_get("magic/hosts") or "") == {"h1": {"state": "ready"}}
    assert await res.check_apply(True) is True
    await other.str_set("magic/hosts", '{"h2": {"state": "up"}}')  # another host's edit
    assert await res.check_apply(True) is False
    assert json.loads(await world.str_get("magic/hosts") or "") == {
        "h1": {"state": "ready"},
        "h2": {"state": "up"},
    }
