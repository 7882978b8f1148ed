"""The rule for a Linux network interface's name, shared by the kinds that name one (net,
dhcp:server)."""

from __future__ import annotations

from engine.errors import ValidationError

IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL


def check_interface_name(name: str, key: str) -> None:
    """ValidationError unless `name` can be a Linux network interface's (dev_valid_name)."""
    if (
        not name
        or len(name) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:" or c.isspace() for c in name)
    ):
        raise ValidationError(
            f"expected an interface name (under {IFNAMSIZ} characters, no '/', ':' or "
            f"spaces), got {name!r}",
            key,
        )
