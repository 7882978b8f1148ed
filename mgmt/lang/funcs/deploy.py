"""import "deploy": the code being run. As in mgmt, a deploy path starts with `/`, the root of
the module the call is in: its directory module's directory (where its metadata.yaml is), else
the program's directory ("/files/x" is files/x next to the entry file). binary_path is the
agent's program."""

from __future__ import annotations

from mgmt.lang import streams
from mgmt.lang.funcs.golang_os import executable
from mgmt.lang.funcs.registry import define


class ReadFile(streams.ReadFile):
    """deploy.readfile(path): a file of the deploy, re-read on every change."""

    def start(self) -> None:
        path = self.args[0]
        if not path.startswith("/"):
            self.fail(f"{path!r} is not absolute: a deploy path starts with / (its module's root)")
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
        if not path.startswith("/") or not path.endswith("/"):
            self.fail(
                f"{path!r}: a deploy directory starts with / (its module's root), ends with /"
            )
            return
        if ".." in path.split("/"):
            self.fail(f"{path!r}: '..' is not allowed (a directory of the deploy)")
            return
        found = self.host.deploy_dir(self.pos.file) / path[1:]
        if not found.is_dir():
            self.fail(f"{path!r}: no such directory in the deploy ({found})")
            return
        self.emit(str(found) + "/")


define("deploy.readfile", "func(str) str", stream=ReadFile, doc="a file of the module's deploy")
define("deploy.directory", "func(str) str", stream=Directory, doc="a directory of the deploy")
define("deploy.binary_path", "func() str", impl=executable, doc="the agent's program")
