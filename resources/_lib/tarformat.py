"""The tar header formats of mgmt's tar kinds (tar, deploy:tar): its numbers, Python's values."""

from __future__ import annotations

import tarfile

# mgmt's $const.res.tar.format.<name> constants (Go's archive/tar numbers).
CONSTANTS: dict[str, dict[str, int | str]] = {
    "format": {"unknown": 0, "ustar": 2, "pax": 4, "gnu": 8}
}
# mgmt's format numbers -> Python's; "unknown" lets the library choose.
FORMATS = {
    0: tarfile.PAX_FORMAT,
    2: tarfile.USTAR_FORMAT,
    4: tarfile.PAX_FORMAT,
    8: tarfile.GNU_FORMAT,
}
FORMAT_HELP = "expected 0 (unknown), 2 (ustar), 4 (pax) or 8 (gnu)"
