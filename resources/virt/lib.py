"""The libvirt module itself, imported on first use: importing the kind never needs it."""

from __future__ import annotations

import functools
import sys
from typing import Any

from engine.errors import ResourceError

# How to get the binding, for this installation: its own interpreter's pip (a bare `pip
# install 'mgmt[virt]'` asked PyPI for another project named mgmt: tester14).
MISSING = (
    "the virt kinds need libvirt-python, which this installation lacks: apt-get install "
    f"libvirt-dev pkg-config gcc python3-dev, then {sys.executable} -m pip install "
    "'libvirt-python>=9.0' (README.md, Quick start)"
)


class NeedsLibvirt:
    """A kind's host_lacks (engine.resource.Resource): MISSING where libvirt is not there."""

    @classmethod
    def host_lacks(cls) -> str | None:
        try:
            load_libvirt()
        except ResourceError:
            return MISSING
        return None


@functools.cache
def load_libvirt() -> Any:
    """The libvirt module, imported on first use, with its stderr error printing turned off."""
    try:
        import libvirt
    except ImportError as err:
        raise ResourceError(f"{MISSING}: {err}") from err

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    return libvirt
