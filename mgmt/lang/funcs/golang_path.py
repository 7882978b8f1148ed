"""import "golang/path" and "golang/path/filepath": Go's slash-separated path functions (on
Linux, filepath's are the same, plus those that look at the file system)."""

from __future__ import annotations

import os
import posixpath

from mgmt.lang.funcs.registry import define, fail


def clean(path: str) -> str:
    """Go's path.Clean: "" is ".", "//a/./b/../" is "/a" (posixpath keeps a leading //)."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def base(path: str) -> str:
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


def dirname(path: str) -> str:
    return clean(path[: path.rfind("/") + 1])


def ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def _rel(basepath: str, targpath: str) -> str:
    if posixpath.isabs(basepath) != posixpath.isabs(targpath):
        raise fail(f"Rel: can't make {targpath} relative to {basepath}")
    return posixpath.relpath(clean(targpath), clean(basepath))


def _eval_symlinks(path: str) -> str:
    return clean(os.path.realpath(path, strict=True))


def _is_local(path: str) -> bool:
    return bool(path) and not posixpath.isabs(path) and clean(path).split("/")[0] != ".."


def _has_prefix(p: str, prefix: str) -> bool:
    return p.startswith(prefix)


for _m in ("golang/path.", "golang/path/filepath."):
    define(_m + "base", "func(str) str", impl=base)
    define(_m + "clean", "func(str) str", impl=clean)
    define(_m + "dir", "func(str) str", impl=dirname)
    define(_m + "ext", "func(str) str", impl=ext)
    define(_m + "is_abs", "func(str) bool", impl=posixpath.isabs)

_F = "golang/path/filepath."
define(_F + "abs", "func(str) str", impl=lambda p: clean(os.path.join(os.getcwd(), p)), host=True)
define(_F + "eval_symlinks", "func(str) str", impl=_eval_symlinks, host=True)
define(_F + "from_slash", "func(str) str", impl=lambda p: p)
define(_F + "has_prefix", "func(str, str) bool", impl=_has_prefix)
define(_F + "is_local", "func(str) bool", impl=_is_local)
define(_F + "localize", "func(str) str", impl=lambda p: p)
define(_F + "rel", "func(str, str) str", impl=_rel)
define(_F + "to_slash", "func(str) str", impl=lambda p: p)
define(_F + "volume_name", "func(str) str", impl=lambda p: "")
