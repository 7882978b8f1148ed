"""import "deploy": the code being run. Here a deploy is the program's directory: readfile's
paths are relative to it ("/files/x" is files/x next to the entry file); binary_path is the
agent's program."""

from __future__ import annotations

from mgmt.lang import streams
from mgmt.lang.funcs.golang_os import executable
from mgmt.lang.funcs.registry import define


class ReadFile(streams.ReadFile):
    """deploy.readfile(path): a file of the deploy, re-read on every change."""

    def start(self) -> None:
        self.args = (str(self.host.base_dir / self.args[0].lstrip("/")),)
        super().start()


define("deploy.readfile", "func(str) str", stream=ReadFile, doc="a file of the program's directory")
define("deploy.binary_path", "func() str", impl=executable, doc="the agent's program")
