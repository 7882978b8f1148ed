"""http:server:ui and http:server:ui:input: a small web form served by an http:server (mgmt's).
See docs/resources/http_server_ui.md.

`http:server:ui` answers below its path (its name, or `path`, ending with "/"): `index.html` is
an HTML form of the inputs that joined it, and a JSON API as mgmt's (`list/`, `list/<id>`,
`watch/<id>`, `save/`, `ping`). The page's script posts each change to `save/` and keeps one
long poll per input open on `watch/<id>`, which answers when that input's value changes (a save
from another browser, a change in the store): every open page shows a change at once.

`http:server:ui:input` is one field of it (text, or a range with `range://?min=..&max=..&step=..`)
whose value is sent along send/recv edges as `value`. Its value comes from the `value` param, or
lives in a `store`: `world://` (the cluster's string key, the `kv` resource's and
`world.getval`'s) or `local://` (this host's local value, the `value` resource's and
`value.get_str`'s), under the input's name or `?key=`. A saved value is written to the store;
a change in the store is shown on the page; the last one wins.

Like http:server:file, a UI joins its http:server through the engine's shared routes
(resources.http_server); an input joins the UI named by its `path` (None: every UI). Each stays a
vertex of its own (mgmt groups them into the server's vertex).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.local import LocalValues
from engine.resource import Resource, register
from engine.world import Changes, Unsubscribe, World
from resources._lib.http_routes import clashes, routes
from resources._lib.httpd import Request, Response
from resources._lib.named import or_name
from resources._lib.plan import Step, apply_steps, nothing_to_do

TYPES = ("text", "range")
STORES = ("world", "local")
VALUE_LIMIT = 64 * 1024  # characters of a saved value


@dataclass(kw_only=True)
class UIData:
    # The page's title. Default "".
    title: str = ""
    # HTML put into the page's <head> as it is (it is not escaped: only the graph's author
    # writes it). Default "".
    head: str = ""


# Seconds a request for an input that left in a graph swap (stopped before its replacement
# starts) waits for an input of its id, from when it left, at most: at the swap's end (the
# engine drops the one that left), or then, an id no input took again is unknown (400).
SWAP_WAIT = 5.0


class Offered:
    """The inputs offered to this engine's UIs (one per engine, shared), and when inputs left
    lately, by id: a graph swap stops an input before its replacement starts, and a request
    for it meanwhile (a save from an open page) waits for the replacement (`find`); the page
    and `list/` show the one that left until then (`shown`)."""

    def __init__(self) -> None:
        self.inputs: list[HTTPServerUIInputRes] = []
        self._left: dict[str, float] = {}  # id -> the loop's time when an input of it left
        self._leaving: list[HTTPServerUIInputRes] = []  # left, in a swap not over yet
        self._joined = asyncio.Event()  # set and replaced when an input joins or is dropped

    def join(self, res: HTTPServerUIInputRes) -> None:
        self.inputs.append(res)
        self._left.pop(res.ident, None)
        self._wake()

    def leave(self, res: HTTPServerUIInputRes) -> None:
        """`res` stops (its cleanup): it takes no save any more (find waits for its successor)."""
        self.inputs.remove(res)
        self._leaving.append(res)
        now = asyncio.get_running_loop().time()
        self._left = {i: t for i, t in self._left.items() if t > now - SWAP_WAIT}
        self._left[res.ident] = now

    def dropped(self, res: HTTPServerUIInputRes) -> None:
        """The engine dropped `res` (at the end of the swap that stopped it): not shown any
        more, and its id is unknown from now on unless an input of it joined."""
        if res in self._leaving:
            self._leaving.remove(res)
        if not any(i.ident == res.ident for i in self.inputs):
            self._left.pop(res.ident, None)
        self._wake()

    def shown(self) -> list[HTTPServerUIInputRes]:
        """The inputs, and those that left in a swap not over yet whose id none took again
        (the page and `list/` show them throughout the swap)."""
        if not self._leaving:
            return self.inputs
        taken = {i.ident for i in self.inputs}
        return self.inputs + [i for i in self._leaving if i.ident not in taken]

    def _wake(self) -> None:
        self._joined.set()
        self._joined = asyncio.Event()

    async def find(
        self, ident: str, member: Callable[[str], HTTPServerUIInputRes | None]
    ) -> HTTPServerUIInputRes | None:
        """member(ident); None at once if there is none and no input of that id left in a
        swap not over yet, less than SWAP_WAIT ago; else once one has joined, or at the
        swap's end, or at SWAP_WAIT after it left."""
        found = member(ident)
        left = self._left.get(ident)
        if found is not None or left is None:
            return found
        loop = asyncio.get_running_loop()
        deadline = left + SWAP_WAIT
        while found is None and ident in self._left and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._joined.wait()
            found = member(ident)
        return found


def inputs(handle: Handle) -> Offered:
    """The inputs offered to this engine's UIs (one Offered per engine, shared)."""
    return handle.shared.get(f"{__name__}:inputs", Offered)


@register("http:server:ui")
@dataclass(kw_only=True, eq=False)
class HTTPServerUIRes(Resource):
    # The http:server (its name) that serves this UI. Default None: every one of this agent.
    server: str | None = None
    # The URL path the UI is served under (absolute, ending with "/"). Default None: the name.
    path: str | None = None
    # The page's title and extra <head> HTML. Default None: no title.
    data: UIData | None = None

    def validate(self) -> None:
        super().validate()
        url, key = or_name(self, "path")
        if not (url.startswith("/") and url.endswith("/")):
            raise ValidationError(
                f"must be a URL path starting and ending with '/', got {url!r}", key
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        routes(handle).answer_from(handle, self)  # until a swap drops it: never 404 meanwhile

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, f"serving the ui at {self.url}")

    @property
    def url(self) -> str:
        return or_name(self, "path")[0]

    def accepts(self, path: str) -> bool:
        return path.startswith(self.url)

    def members(self, shown: bool = False) -> list[HTTPServerUIInputRes]:
        """Our inputs, in display order (`sort`, then id); `shown`: with those that left in
        a swap not over yet, for the page and `list/` (Offered.shown)."""
        offered = inputs(self.handle)
        found = [
            i for i in (offered.shown() if shown else offered.inputs) if i.path in (None, self.name)
        ]
        return sorted(found, key=lambda i: (i.sort, i.ident))

    def member(self, ident: str) -> HTTPServerUIInputRes | None:
        return next((i for i in self.members() if i.ident == ident), None)

    async def replaced(self, ident: str) -> HTTPServerUIInputRes | None:
        """Our input `ident`, waiting for it if one of that id has just left (Offered.find)."""
        return await inputs(self.handle).find(ident, self.member)

    async def respond(self, request: Request) -> Response:
        rest = request.path[len(self.url) :]
        top, _, ident = rest.partition("/")
        if request.method == "POST" and rest == "save/":
            return await self._save(request.form())
        if request.method not in ("GET", "HEAD"):
            return Response(
                405, b"", {"Allow": "GET, HEAD" + (", POST" if rest == "save/" else "")}
            )
        if rest == "":
            return Response(301, b"", {"Location": self.url + "index.html"})
        if rest == "index.html":
            return Response(
                200, self._page().encode(), {"Content-Type": "text/html; charset=utf-8"}
            )
        if rest == "ping":
            return reply(200, {"message": "pong"})
        if rest == "list/":
            return reply(200, {"elements": [i.element() for i in self.members(shown=True)]})
        if top in ("list", "watch") and ident:
            found = await self.replaced(ident)
            if found is None:
                return reply(400, {"error": f"id `{ident}` not found"})
            # watch/ID?value=V (our page's): V is the value the page shows, another is answered
            # at once (a change made before the request came, since the page was made or the
            # last answer, was missed until the next one); without it, mgmt's: the next change.
            if top == "watch" and request.query.get("value") in (None, found.shown):
                await request.hold(found.changed())
                found = await self.replaced(ident) or found  # replaced by a graph swap
            return reply(200, {"value": found.shown})
        return Response(404, b"404 page not found\n")

    async def _save(self, form: dict[str, str]) -> Response:
        ident, value = form.get("id", ""), form.get("value")
        if not ident:
            return reply(400, {"error": "missing id"})
        if value is None:
            return reply(400, {"error": "missing value"})
        found = await self.replaced(ident)  # (a graph swap: its replacement)
        if found is None:
            return reply(400, {"error": f"id `{ident}` not found"})
        try:
            found.save(value)
        except ValidationError as err:
            return reply(400, {"error": f"bad data: {err.message}"})
        return reply(200, None)

    def _page(self) -> str:
        title = html.escape(self.data.title if self.data is not None else "")
        head = self.data.head if self.data is not None else ""
        fields = "\n".join(i.html() for i in self.members(shown=True))
        about = f"This is: mgmt, on {self.handle.hostname}"
        return PAGE.format(title=title, head=head, about=html.escape(about), fields=fields)


def reply(status: int, data: Any) -> Response:
    body = json.dumps(data).encode() + b"\n"
    return Response(status, body, {"Content-Type": "application/json"})


def only_options(query: dict[str, list[str]], known: tuple[str, ...], text: str, key: str) -> None:
    """ValidationError naming the first option of `text` (a type or store URL) that is not
    one of `known` (mgmt ignores them: a typo such as `?kee=` would go unnoticed)."""
    for option in query:
        if option not in known:
            accepted = ", ".join(known) or "none"
            raise ValidationError(
                f"unknown option {option!r} in {text!r} (accepted: {accepted})", key
            )


@dataclass(frozen=True)
class FieldType:
    """An input's parsed `type`: text, or range with its bounds."""

    scheme: str
    low: int | None = None
    high: int | None = None
    step: int | None = None

    @classmethod
    def parse(cls, text: str) -> FieldType:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in TYPES or parts.netloc or parts.path:
            raise ValidationError(
                f"expected text:// or range://?min=..&max=..&step=.., got {text!r}", "type"
            )
        query = urllib.parse.parse_qs(parts.query)
        only_options(query, ("min", "max", "step") if parts.scheme == "range" else (), text, "type")
        bounds: dict[str, int] = {}
        for key in ("min", "max", "step"):
            if key in query and parts.scheme == "range":
                try:
                    bounds[key] = int(query[key][0])
                except ValueError:
                    raise ValidationError(
                        f"{key} must be an integer, got {query[key][0]!r}", "type"
                    ) from None
        if bounds.get("step", 1) <= 0:
            raise ValidationError(f"step must be > 0, got {bounds['step']}", "type")
        if bounds.get("min", 0) > bounds.get("max", bounds.get("min", 0)):
            raise ValidationError(f"min {bounds['min']} is above max {bounds['max']}", "type")
        return cls(parts.scheme, bounds.get("min"), bounds.get("max"), bounds.get("step"))

    def check(self, value: str, key: str) -> None:
        """ValidationError unless `value` fits this field."""
        if len(value) > VALUE_LIMIT or "\0" in value:
            raise ValidationError(f"at most {VALUE_LIMIT} characters, no NUL", key)
        if self.scheme != "range":
            return
        try:
            number = int(value)
        except ValueError:
            raise ValidationError(f"expected an integer, got {value!r}", key) from None
        low, high = self.low, self.high
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValidationError(f"{number} is outside {low}..{high}", key)

    def attributes(self) -> dict[str, str]:
        found = {"min": self.low, "max": self.high, "step": self.step}
        return {"type": self.scheme} | {k: str(v) for k, v in found.items() if v is not None}


@register("http:server:ui:input")
@dataclass(kw_only=True, eq=False)
class HTTPServerUIInputRes(Resource):
    SENDS: ClassVar[Mapping[str, Any]] = {"value": str}

    # The http:server:ui (its name) this field is part of. Default None: every one of this agent.
    path: str | None = None
    # The field's id in the form (public: it is in the page). Default None: the name.
    id: str | None = None
    # The field's value, when there is no store. Default "".
    value: str = ""
    # Where the value lives: "world://" (the cluster's string key) or "local://" (this host's
    # local value), each with an optional "?key=" (default: the name). Default "": no store.
    store: str = ""
    # "text://", or "range://?min=0&max=5&step=1" (integers). Default "text://".
    type: str = "text://"
    # The field's place among the UI's fields (they are sorted by it). Default "".
    sort: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.ident:
            raise ValidationError("must not be empty", "id")
        FieldType.parse(self.type)
        if self.store:
            if self.value:
                raise ValidationError("give value or store, not both", "store")
            self._store_key()

    @classmethod
    def validate_together(cls, resources: list[Resource]) -> list[tuple[Resource, ValidationError]]:
        """Two inputs of one graph that can join one UI (the same `path`, or one of them
        none) with one id: refused (mgmt does not check; its saves reach the first found)."""
        inputs = [res for res in resources if isinstance(res, HTTPServerUIInputRes)]
        problems: list[tuple[Resource, ValidationError]] = []
        for res, other in clashes(inputs, lambda r: r.ident, lambda r: r.path):
            ui = f"ui {res.path or other.path}" if (res.path or other.path) else "ui"
            why = (
                f"{res.ident!r} is also the id of {other} in the same {ui} "
                "(ids are unique in a ui: a save goes to one input)"
            )
            problems.append((res, ValidationError(why, "id")))
        return problems

    def needs_world(self) -> bool:
        return self.store.startswith("world:")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._kind = FieldType.parse(self.type)
        self._value = self.value  # what the page shows: the param, a saved or a stored value
        self._sent: str | None = None  # the value at the last check_apply (value mode)
        self._changed_event = asyncio.Event()  # set and replaced on each change: wakes watches
        self._saved = asyncio.Event()  # a save from the page: an event for watch
        # Saves from the page so far, and how many of them a check has stored (or found stored,
        # or, under --noop, would have stored): while one is not stored, the store holds an
        # older value than the page's, and a read of it is not shown (see _pull).
        self._saves = self._saves_stored = 0
        # Saves from the page, and own writes to the store begun and ended, so far: a read of
        # the store during which this moved may answer with an older value than this input's.
        self._changes_here = 0
        self._apply: bool | None = None  # the last check_apply's `apply`: None before the first
        offered = inputs(handle)
        offered.join(self)
        if self.store:
            handle.on_cleanup(self._store_at_stop)  # the last cleanup: once it left the UI
        handle.on_cleanup(lambda: offered.leave(self))
        handle.on_cleanup(self._gone)
        handle.on_detach(lambda: offered.dropped(self))  # shown until the swap is over

    async def watch(self) -> None:
        if not self.store:
            await self.handle.event()
            while True:
                await self._saved.wait()
                self._saved.clear()
                await self.handle.event()
        async with self._changes() as changes, asyncio.TaskGroup() as tasks:
            await self._pull()  # the stored value, before the page shows ours
            tasks.create_task(self._follow(changes))
            await self.handle.event()
            while True:
                await self._saved.wait()
                self._saved.clear()
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        if self.store:
            self._apply = apply
            try:
                return await self._store_check_apply(apply)
            finally:
                self.handle.send(value=self._value)  # under --noop too, as mgmt
        value = self._value
        self.handle.send(value=value)
        if value == self._sent:
            return nothing_to_do(self.handle, f"field {self.ident!r}: its value was sent already")
        if apply:
            self._sent = value
        self.handle.logger.info("sending: field %r changed", self.ident)
        return False

    @property
    def ident(self) -> str:
        return self.id if self.id is not None else self.name

    @property
    def shown(self) -> str:
        return self._value

    def changed(self) -> Coroutine[Any, Any, bool]:
        """Until the shown value changes (or this input goes away). The wait is on the event
        of the value shown when this is called, not when the wait starts: a long poll's wait
        starts a loop turn later (its own task), and a save in between replaced the event, so
        the poll missed that change until the next one (a resources test, at load ~22)."""
        return self._changed_event.wait()

    def save(self, value: str) -> None:
        """A value from the page: checked (ValidationError), shown, and an event."""
        self._kind.check(value, "value")
        self._saves += 1
        self._changes_here += 1
        self._show(value)
        self._saved.set()

    def element(self) -> dict[str, Any]:
        """This field in `list/` (mgmt's form element)."""
        return {
            "kind": self.kind,
            "id": self.ident,
            "type": self._kind.attributes(),
            "sort": self.sort,
        }

    def html(self) -> str:
        ident = html.escape(self.ident)
        attributes = {**self._kind.attributes(), "id": self.ident, "value": self._value}
        shown = " ".join(f'{k}="{html.escape(v)}"' for k, v in attributes.items())
        output = f'<output for="{ident}">{html.escape(self._value)}</output>'
        extra = output if self._kind.scheme == "range" else ""
        return f'<label for="{ident}">{ident}: </label><input {shown} data-id="{ident}">{extra}<br>'

    def _gone(self) -> None:
        """Open watches answer: this input is gone (a graph swap may have replaced it)."""
        self._changed_event.set()

    def _show(self, value: str) -> None:
        if value != self._value:
            self._value = value
            self._changed_event.set()
            self._changed_event = asyncio.Event()

    # the store ---------------------------------------------------------------------------

    def _store_key(self) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(self.store)
        if parts.scheme not in STORES or parts.netloc or parts.path:
            raise ValidationError(
                f"expected world:// or local:// (with ?key=...), got {self.store!r}", "store"
            )
        query = urllib.parse.parse_qs(parts.query)
        only_options(query, ("key",), self.store, "store")
        key = query.get("key", [""])[0]
        return parts.scheme, key or self.name

    async def _get(self) -> str | None:
        scheme, key = self._store_key()
        if scheme == "world":
            return await self._world().str_get(key)
        stored = await asyncio.to_thread(self._local().get, key)
        return None if stored is None else str(stored)

    async def _set(self, value: str) -> None:
        self._changes_here += 1
        try:
            scheme, key = self._store_key()
            if scheme == "world":
                await self._world().str_set(key, value)
            else:
                await asyncio.to_thread(self._local().set, key, value)
        finally:
            self._changes_here += 1

    def _changes(self) -> Changes:
        scheme, key = self._store_key()
        if scheme == "world":
            return self._world().str_watch(key)
        local = self._local()
        loop = asyncio.get_running_loop()

        async def subscribe(signal: Callable[[], None]) -> Unsubscribe:
            def from_any_thread() -> None:
                loop.call_soon_threadsafe(signal)

            return local.subscribe(key, from_any_thread)

        return Changes(subscribe)

    @property
    def _unstored(self) -> bool:
        """Whether the page saved a value that no check has stored yet."""
        return self._saves != self._saves_stored

    async def _pull(self) -> None:
        """Show the stored value, if there is one, unless a save from the page is not stored
        yet, or the page saved one or this input wrote one while it was read: the store then
        holds, or the read may answer with, an older value than the page's, and showing it
        dropped the save (its check saw a newer value than its own and stored nothing: the
        read of a change made before a save, answered after it). The save's check stores it,
        and the event of that write, or of any later change, reads again."""
        changes = self._changes_here
        stored = await self._get()
        if stored is not None and changes == self._changes_here and not self._unstored:
            self._show(stored)

    async def _follow(self, changes: Changes) -> None:
        async for _ in changes:  # a change in the store: shown (the last one wins)
            await self._pull()
            await self.handle.event()

    async def _store_check_apply(self, apply: bool) -> bool:
        """The last save from the page into the store; without one (all stored), the stored
        value onto the page (a read of a change that _pull did not show); a missing key gets
        the shown value."""
        saves, value = self._saves, self._value
        stored = await self._get()
        where = self._where()
        if self._saves != saves:  # a save meanwhile: its own check stores it, not this one
            return nothing_to_do(self.handle, "a newer value (a later save) is to be stored")
        if saves == self._saves_stored and stored is not None:
            self._show(stored)  # no save to store: the store's value is the field's
            return nothing_to_do(self.handle, f"{where} holds the value (no save to store)")
        if stored == value:
            self._saves_stored = saves
            return nothing_to_do(self.handle, f"{where} holds the saved value")
        await apply_steps(self.handle, [self._store_step(value, saves)], apply)
        if not apply:  # not stored: a later change of the store is shown again
            self._saves_stored = saves
        return False

    async def _store_at_stop(self) -> None:
        """A save from the page that no check stored (it came while this input stopped, for a
        graph swap that replaces it or the agent's exit, or its check was left for the next one,
        which a stop does not run) is stored as the input stops, once no save can reach it any
        more, unless its checks ran under --noop: the page said it was saved, and the input that
        replaces this one reads it."""
        if self._unstored and self._apply:
            await apply_steps(self.handle, [self._store_step(self._value, self._saves)], True)

    def _store_step(self, value: str, saves: int) -> Step:
        """Writing `value`, the page's after its save number `saves`, into the store."""
        where = self._where()

        async def store() -> None:
            await self._set(value)
            self._saves_stored = saves

        return Step(
            f"store the saved value in {where}", f"stored the saved value in {where}", store
        )

    def _where(self) -> str:
        scheme, key = self._store_key()
        return f"{scheme} key {key!r}"

    def _world(self) -> World:
        if self.handle.world is None:
            raise ResourceError("a world:// store needs the cluster, which this run did not start")
        return self.handle.world

    def _local(self) -> LocalValues:
        if self.handle.local is None:
            raise ResourceError("a local:// store needs the engine's local values")
        return self.handle.local


PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
{head}
<style>
body {{ font-family: sans-serif; margin: 1em 2em; }}
h1 {{ color: #0d6efd; }}
fieldset {{ background: #e7f1ff; border: 1px solid #0d6efd; padding: 10px; }}
label {{ display: inline-block; width: 12em; text-align: right; margin: 0 10px 8px 0; }}
input[type="text"], input[type="range"] {{ width: 30ch; vertical-align: middle; }}
</style>
</head>
<body>
<h1>{title}</h1>
<h6><pre>{about}</pre></h6>
<hr>
<fieldset id="form"><legend>live!</legend>
{fields}
</fieldset>
<script>
"use strict";
const base = location.pathname.replace(/[^/]*$/, "");
function shown(el, value) {{
  el.value = value;
  const out = document.querySelector(`output[for="${{CSS.escape(el.id)}}"]`);
  if (out) out.textContent = value;
}}
async function save(el) {{
  const body = new URLSearchParams({{id: el.dataset.id, value: el.value}});
  const reply = await fetch(base + "save/", {{method: "POST", body}});
  el.setCustomValidity(reply.ok ? "" : (await reply.json()).error);
  el.reportValidity();
}}
async function follow(el) {{
  const url = base + "watch/" + encodeURIComponent(el.dataset.id) + "?value=";
  let known = el.defaultValue;  // the value the page was made with, then the last answer's
  for (;;) {{
    try {{
      const reply = await fetch(url + encodeURIComponent(known));
      if (!reply.ok) throw new Error(`${{url}}: ${{reply.status}}`);
      known = (await reply.json()).value;
      shown(el, known);
    }} catch (err) {{
      console.log(err);
      await new Promise((done) => setTimeout(done, 2000));
    }}
  }}
}}
for (const el of document.querySelectorAll("input[data-id]")) {{
  el.addEventListener("change", () => save(el));
  el.addEventListener("input", () => shown(el, el.value));
  follow(el);
}}
document.body.dataset.ready = "yes";
</script>
</body>
</html>
"""
