"""import "map": a map's keys and values, in key order."""

from __future__ import annotations

from typing import Any

from mgmt.lang.funcs.registry import define
from mgmt.lang.values import FrozenDict, sort_key


def _sorted_keys(m: FrozenDict) -> tuple[Any, ...]:
    return tuple(sorted(m, key=sort_key))


define("map.keys", "func(map{?1: ?2}) []?1", impl=_sorted_keys, doc="sorted")
define(
    "map.values",
    "func(map{?1: ?2}) []?2",
    impl=lambda m: tuple(m[k] for k in _sorted_keys(m)),
    doc="in key order",
)
define("map.contains", "func(map{?1: ?2}, ?1) bool", impl=lambda m, k: k in m)
define("map.len", "func(map{?1: ?2}) int", impl=len)
define(
    "map.lookup_default",
    "func(map{?1: ?2}, ?1, ?2) ?2",
    impl=lambda m, k, default: m.get(k, default),
)
