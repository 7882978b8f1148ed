"""host: a real hosts file, edited, watched with inotify, repaired."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ValidationError
from resources.host import HostRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]

BASE = "127.0.0.1\tlocalhost\n# a comment\n10.0.0.1\tweb.example.net web\n"


async def test_add_keep_repair_replace_and_remove(run_resource: Start, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(BASE)
    res = HostRes(
        name="db.example.net", ip="10.0.0.9", aliases=["db"], comment="primary", target=str(hosts)
    )
    running = await run_resource(res)
    assert await res.check_apply(False) is False  # noop: nothing written
    assert hosts.read_text() == BASE
    assert await res.check_apply(True) is False
    assert hosts.read_text() == BASE + "10.0.0.9\tdb.example.net\tdb\t# primary\n"
    assert await res.check_apply(True) is True
    # Drift: an edit by hand is an event, and the next check_apply puts the entry back in place.
    hosts.write_text(BASE.replace("# a comment\n", "# a comment\n10.9.9.9  db.example.net\n"))
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert hosts.read_text() == BASE.replace(
        "# a comment\n", "# a comment\n10.0.0.9\tdb.example.net\tdb\t# primary\n"
    )
    absent = HostRes(name="web.example.net", state="absent", target=str(hosts))
    await run_resource(absent, watch=False)
    assert await absent.check_apply(True) is False
    assert "web.example.net" not in hosts.read_text()
    assert await absent.check_apply(True) is True


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"ip": "10.0.0.300"}, "ip"),
        ({}, "ip"),
        ({"ip": "10.0.0.1", "aliases": ["a b"]}, "aliases"),
        ({"ip": "10.0.0.1", "target": "hosts"}, "target"),
        ({"ip": "10.0.0.1", "comment": "two\nlines"}, "comment"),
    ],
)
def test_validation_names_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        HostRes(name="h.example", **params).validate()  # type: ignore[arg-type]
    assert err.value.key == key
