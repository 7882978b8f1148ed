"""import "golang/html": Go's html.EscapeString and UnescapeString."""

from __future__ import annotations

import html

from mgmt.lang.funcs.registry import define

# What Go escapes, and how (Python's html.escape writes ' as &#x27; and " as &quot;).
_ESCAPES = str.maketrans({"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;"})

define("golang/html.escape_string", "func(str) str", impl=lambda s: s.translate(_ESCAPES))
define("golang/html.unescape_string", "func(str) str", impl=html.unescape)
