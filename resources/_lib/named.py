"""A param that defaults to the resource's name, as in mgmt (a file's or an archive's `path`,
a served file's `filename`, a URL `path`): its value, and the key an error about it names."""

from __future__ import annotations

from engine.resource import Resource


def or_name(res: Resource, field: str) -> tuple[str, str]:
    """(the value of `field`, `field`) when it is set (not None), else (the name, "name"):
    `path, key = or_name(self, "path")`, and an error names the key the value came from."""
    value = getattr(res, field)
    if value is None:
        return res.name, "name"
    return value, field
