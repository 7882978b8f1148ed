"""import "deploy": the code being run. As in mgmt, a deploy path starts with `/`, the root of
the module the call is in: its directory module's directory (where its metadata.yaml is), else
the program's directory ("/files/x" is files/x next to the entry file). binary_path is the
agent's program."""

from __future__ import annotations

from mgmt.lang import streams
from mgmt.lang.funcs.golang_os import executable
from mgmt.lang.funcs.registry import define


def outside(path: str) -> str | None:
    """Why `path` does not name something of the deploy, or None: it starts with / (the
    module's root) and has no '..' (mgmt's paths are cleaned within the deploy's own file
    system; here the deploy is a directory on disk, so '..' is refused)."""
    if not path.startswith("/"):
        return f"{path!r}: not absolute: a deploy path starts with / (its module's root)"
    if ".." in path.split("/"):
        return f"{path!r}: '..' is not allowed (a path of the deploy)"
    return None


class ReadFile(streams.ReadFile):
    """deploy.readfile(path): a file of the deploy, re-read on every change."""

    def start(self) -> None:
        path = self.args[0]
        problem = outside(path)
        if problem is not None:
            self.fail(problem)
            return
        self.args = (str(self.host.deploy_dir(self.pos.file) / path[1:]),)
        super().start()


class Directory(streams.Stream):
    """deploy.directory(path): a directory of the deploy, as an absolute path ending in `/`
    (mgmt's, for a file resource's `source`). mgmt copies it out of its deploy's file system
    into its vardir; a deploy here is already on disk, private (`<prefix>/deploy/<id>/`, and
    the program's own directory for a local run), so the path is that directory's."""

    def start(self) -> None:
        path = self.args[0]
        problem = outside(path) or (
            None if path.endswith("/") else f"{path!r}: a deploy directory ends with /"
        )
        if problem is not None:
            self.fail(problem)
            return
        found = self.host.deploy_dir(self.pos.file) / path[1:]
        if not found.is_dir():
            self.fail(f"{path!r}: no such directory in the deploy ({found})")
            return
        self.emit(str(found) + "/")


define("deploy.readfile", "func(str) str", stream=ReadFile, doc="a file of the module's deploy")
define("deploy.directory", "func(str) str", stream=Directory, doc="a directory of the deploy")
define("deploy.binary_path", "func() str", impl=executable, doc="the agent's program")
