"""The program the agent runs, as files: what a resource that archives or ships it reads.

mgmt gives its resources the running deploy's file system (`init.World.Fs(uri)`); here the
agent gives the engine a `ProgramRef`, and each resource's handle carries it
(`handle.program`, None when the engine was given none). `deploy:tar` archives it and `remote`
copies it to another host. What it holds:

- when the agent runs deploys (`run empty`, `run --deploy`): the running deploy's files, as
  stored in the cluster (the program, its modules, `files/`);
- else the local program's files, read as `mgmt deploy` would store them (the same function),
  read again after each graph the front-end produces (an edit of a watched program).

`get()` may read files (call it in a thread); `subscribe(fn)` calls `fn` (on the loop) each
time the program changed (the agent reads it again after each graph, only while someone
subscribed, and tells only when its digest differs), and returns the unsubscribe callable.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """A program's files, as read: what deploy:tar and remote resources send."""

    frontend: str  # "yaml" or "lang"
    entry: str  # the program's relative path among `files`
    files: Mapping[str, bytes]  # relative POSIX path -> content
    origin: str  # where it comes from, for logs: "deploy 4", "/srv/site/main.mcl"
    # Local paths whose change may change it, for a resource that follows it: a local
    # program's files, and (ending in '/', watched recursively) its `files/` directory or the
    # directory of a `lang DIR/`; none for a deploy (a new one comes with a new graph).
    watch: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The sha256 of the front-end, the entry and every file (name and content)."""
        h = hashlib.sha256(f"{self.frontend}\0{self.entry}\0".encode())
        for name in sorted(self.files):
            data = self.files[name]
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()


class ProgramRef:
    """The program of the moment, read by `load()` on first use and again by `reload()`."""

    def __init__(self, load: Callable[[], Program | None]) -> None:
        self._load = load
        self._cached: Program | None = None
        self._loaded = False
        self._lock = threading.Lock()  # get() and reload() run in worker threads
        self._listeners: list[Callable[[], None]] = []

    def get(self, fresh: bool = False) -> Program | None:
        """The program (None: the agent runs none, e.g. before its first deploy); `fresh`:
        read again (cheap when nothing changed: the loaders keep what they read while its
        files are unchanged). May read files: call it in a thread. A failed read raises."""
        with self._lock:
            if fresh or not self._loaded:
                self._cached, self._loaded = self._load(), True
            return self._cached

    def reload(self) -> bool:
        """Read the program again (in a thread); whether it differs from the one last read."""
        with self._lock:
            old = self._cached.digest if self._cached is not None else None
            self._cached, self._loaded = self._load(), True
            return (self._cached.digest if self._cached is not None else None) != old

    @property
    def listened(self) -> bool:
        """Whether a resource subscribed (else the agent need not read the program again)."""
        return bool(self._listeners)

    def notify(self) -> None:
        """Tell the subscribers that the program changed (on the loop)."""
        for fn in list(self._listeners):
            fn()

    def subscribe(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` (on the loop, must not block) whenever the program changes; returns the
        unsubscribe callable (register it with handle.on_cleanup)."""
        self._listeners.append(fn)

        def unsubscribe() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return unsubscribe
