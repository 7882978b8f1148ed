"""import "golang/runtime": what runs the agent. Here that is Python, not Go: version() says
"python3.11.4", goroot() the Python installation's prefix."""

from __future__ import annotations

import platform
import sys

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define

define(
    "golang/runtime.version",
    "func() str",
    impl=lambda: f"python{platform.python_version()}",
    host=False,
)
define("golang/runtime.goroot", "func() str", impl=lambda: sys.prefix, host=False)
define("golang/runtime.num_cpu", "func() int", impl=streams.cpu_count, host=False)
