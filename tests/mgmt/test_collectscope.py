"""What a collect entry may bring in (mgmt.collectscope): the target stays within the ask."""

from __future__ import annotations

from typing import Any

import pytest

from engine.world import Exported
from mgmt.collectscope import Collect, check_kind, matches, refusal, selects

PATTERN = Collect("file", "/srv/shared/")


def record(name: str, kind: str = "file", **params: Any) -> Exported:
    return Exported("zz", kind, name, params)


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("/srv/shared/a", "/srv/shared/", True),
        ("/srv/shared", "/srv/shared/", True),  # the directory itself
        ("/srv/shared/../../etc/passwd", "/srv/shared/", False),
        ("/srv/shared/./a", "/srv/shared/", True),
        ("/srv/sharedx/a", "/srv/shared/", False),
        ("/srv/sharedx/a", "/srv/shared", True),  # a plain prefix, as written
        ("/anything", "", True),
        ("web/frontend", "web/", True),
        ("web/../db/x", "web/", False),
    ],
)
def test_patterns_are_prefixes_of_the_normalised_name(
    name: str, pattern: str, expected: bool
) -> None:
    assert matches(name, pattern) is expected


@pytest.mark.parametrize(
    ("rec", "why"),
    [
        # The probe: a name under the pattern, a path anywhere.
        (record("/srv/shared/a", path="/usr/local/bin/suid"), "its path '/usr/local/bin/suid'"),
        (record("/srv/shared/a", path="/srv/shared/../../etc/x"), "is not under the pattern"),
        (record("/srv/shared/a", source="/etc/shadow"), "'source' param reaches outside"),
        (record("/srv/shared/a", follow=True), "'follow' param reaches outside"),
        (record("/srv/shared/a", fragments=["/etc/shadow"]), "'fragments' param reaches outside"),
        (record("/srv/shared/a", content="x", mode="4755"), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode="u+s"), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode="2755"), "sets setuid/setgid"),
        # A JSON number: the file resource reads 4755 as the text "4755", so octal.
        (record("/srv/shared/a", content="x", mode=4755, owner="root"), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode=2755), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode=6755), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode="u=rwxs,go=rx"), "sets setuid/setgid"),
        (record("/srv/shared/d/", content=None, mode="g+s"), "sets setuid/setgid"),
        (record("/srv/shared/a", content="x", mode=4755.0), "not one the file resource takes"),
        (record("/srv/shared/a", content="x", mode=True), "not one the file resource takes"),
        (record("/srv/shared/a", content="x", mode=["4755"]), "not one the file resource takes"),
        (record("/srv/shared/a", path=7), "its path is not a string"),
    ],
)
def test_a_record_reaching_outside_the_pattern_is_refused(rec: Exported, why: str) -> None:
    assert selects(PATTERN, rec)  # asked for by its name...
    problem = refusal(PATTERN, rec)
    assert problem is not None and why in problem  # ...and refused for what it would touch


@pytest.mark.parametrize(
    "rec",
    [
        record("/srv/shared/a", content="x", mode="0644", owner="root"),
        record("/srv/shared/a", path="/srv/shared/b", content="x"),
        record("/srv/shared/d/", path="/srv/shared/d/", mode="u=rwx,go=rx"),
        record("/srv/shared/a", state="absent"),
        record("/srv/shared/a", content="x", mode=644),  # a number, read as octal 0644
        record("/srv/shared/d/", path="/srv/shared/d/", mode="1777"),  # sticky: no privilege
    ],
)
def test_a_record_within_the_pattern_is_collected(rec: Exported) -> None:
    assert selects(PATTERN, rec) and refusal(PATTERN, rec) is None


def test_collect_by_name_needs_the_same_target_unless_the_collector_sets_it() -> None:
    by_name = Collect("file", name="/srv/a")
    assert refusal(by_name, record("/srv/a", path="/srv/a", content="x")) is None
    problem = refusal(by_name, record("/srv/a", path="/etc/cron.d/x", content="x"))
    assert problem == "its path '/etc/cron.d/x' is not the name '/srv/a' asked for"
    # The collector's own params are what it asked for.
    own = Collect("file", name="/srv/a", params={"path": "/opt/a", "source": "/srv/tmpl"})
    assert refusal(own, record("/srv/a", path="/etc/x", source="/etc/shadow")) is None
    mode = Collect("file", name="/srv/a", params={"mode": "4755"})
    assert refusal(mode, record("/srv/a", mode="4755")) is None


def test_kv_keys_stay_within_the_pattern_too() -> None:
    kv = Collect("kv", "app/")
    assert refusal(kv, record("app/x", "kv", value="1")) is None
    assert refusal(kv, record("app/x", "kv", key="other/x")) == (
        "its key 'other/x' is not under the pattern 'app/'"
    )


@pytest.mark.parametrize("kind", ["exec", "cron", "svc", "pkg", "user", "group", "hostname"])
def test_kinds_that_cannot_be_constrained_are_never_collected(kind: str) -> None:
    problem = check_kind(kind)
    assert problem is not None and f"{kind} resources cannot be collected" in problem
    assert refusal(Collect(kind, ""), record("x", kind, cmd="id")) == problem
    assert check_kind("file") is None and check_kind("noop") is None
