"""The libvirt module itself, imported on first use: importing the kind never needs it."""

from __future__ import annotations

import functools
from typing import Any

from engine.errors import ResourceError


@functools.cache
def load_libvirt() -> Any:
    """The libvirt module, imported on first use, with its stderr error printing turned off."""
    try:
        import libvirt
    except ImportError as err:
        raise ResourceError(
            f"the virt resource needs libvirt-python (pip install 'mgmt[virt]', "
            f"which builds against libvirt's headers: apt-get install libvirt-dev pkg-config): {err}"
        ) from err

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    return libvirt
