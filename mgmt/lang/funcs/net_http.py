"""import "net/http": http.response(uid), the response of the http:client resource named `uid`
(mgmt's bridge from the resource to the language), as struct{status int; output str}.

The resource publishes each response in the host's local values (resources/http_client.py);
the stream follows them. `status` is 0 until the resource has asked (or while no http:client
of that name runs), -1 after an engine-level error (network, disk), else the HTTP status of
the last reply; `output` is the last downloaded body, read from the resource's file when it
changes (not kept twice in memory), "" while there is none."""

from __future__ import annotations

from engine import safefs
from mgmt.lang.funcs.registry import define
from mgmt.lang.funcs.value import FollowsLocal
from mgmt.lang.values import MAX_LEN, Struct
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
            # As a program's files are read (streams.read_for_program): the path may be in a
            # directory another user writes, where their link would lead to root's files
            # (2026-12-06, eighth session: an `http:client` file replaced by their link to a
            # 0600 file, published at the next poll, was read into the program) and their
            # FIFO would stop this loop for good. A regular file only, of at most MAX_LEN.
            try:
                data = safefs.read_regular(str(published["path"]), MAX_LEN)
            except (OSError, safefs.UnsafePathError) as err:
                why = (err.strerror if isinstance(err, OSError) else None) or err
                self.fail(f"could not read the output of {self.args[0]!r}: {why}")
                return
            output = data.decode(errors="replace")
        self.emit(Struct(status=int(published.get("status", 0)), output=output))


define(
    "net/http.response",
    "func(str) struct{status int; output str}",
    stream=Response,
    doc="an http:client resource's response, as it changes",
)
