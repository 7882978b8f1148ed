"""import "util": util.hostname_mapper(map) is the hostname this host should have: the value
of the first of its interfaces' MAC addresses the map has (keys in any case), else ""."""

from __future__ import annotations

from mgmt.lang.funcs.net import interfaces
from mgmt.lang.funcs.registry import define
from mgmt.lang.values import FrozenDict


def hostname_mapper(macs: FrozenDict) -> str:
    wanted = {str(k).lower(): v for k, v in macs.items()}
    for _name, _flags, mac in interfaces():
        if mac.lower() in wanted:
            return str(wanted[mac.lower()])
    return ""


define("util.hostname_mapper", "func(map{str: str}) str", impl=hostname_mapper)
