"""import "net/http": http.response(uid), the response of the http:client resource named `uid`
(mgmt's bridge from the resource to the language), as struct{status int; output str}.

The resource publishes each response in the host's local values (resources/http_client.py);
the stream follows them. `status` is 0 until the resource has asked (or while no http:client
of that name runs), -1 after an engine-level error (network, disk), else the HTTP status of
the last reply; `output` is the last downloaded body, read from the resource's file when it
changes (not kept twice in memory), "" while there is none."""

from __future__ import annotations

from pathlib import Path

from mgmt.lang.funcs.registry import define
from mgmt.lang.funcs.value import FollowsLocal
from mgmt.lang.values import Struct
from resources.http_client import response_key


class Response(FollowsLocal):
    """net/http.response(uid): the http:client resource's response, as it changes."""

    def start(self) -> None:
        uid = self.args[0]
        if not uid:
            self.fail("can't use an empty uid")
            return
        self.follow(response_key(uid))

    def read(self) -> None:
        published = self.local.get(response_key(self.args[0]))
        if not isinstance(published, dict):
            self.emit(Struct(status=0, output=""))
            return
        output = ""
        if published.get("path"):
            try:
                output = Path(published["path"]).read_text(errors="replace")
            except OSError as err:
                self.fail(f"could not read the output of {self.args[0]!r}: {err.strerror}")
                return
        self.emit(Struct(status=int(published.get("status", 0)), output=output))


define(
    "net/http.response",
    "func(str) struct{status int; output str}",
    stream=Response,
    doc="an http:client resource's response, as it changes",
)
