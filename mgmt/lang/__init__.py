"""The mcl language front-end: `mgmt run lang FILE.mcl`, `mgmt check FILE.mcl`.

A program is parsed (mgmt.lang.parser), checked (mgmt.lang.checker: names, binding order,
types, resources against the registered kinds) and run as a reactive function graph
(mgmt.lang.runtime) whose output, a resource graph, the agent swaps into the engine each time
it changes (mgmt.lang.source). See docs/language.md.

Importing this package is cheap; lark is imported only by the parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgmt.lang.checker import Checked
    from mgmt.lang.modules import Module, ModuleLoader


def too_large(size: int, filename: str) -> str | None:
    """Why a program file of `size` bytes is refused (one line naming the option), or None."""
    from mgmt.config import max_program_size

    limit = max_program_size()
    if size <= limit:
        return None
    return (
        f"{filename}:1:1: the program file is larger than {limit:,} bytes "
        "(--max-graph-size, MGMT_MAX_GRAPH_SIZE; or split it into modules, or loop over data)"
    )


def compile_text(
    text: str, filename: str = "<program>", loader: ModuleLoader | None = None
) -> Checked:
    """Parse and check a program; CompileError (file:line:col, one line each) on problems.

    Its local imports are relative to `filename`'s directory (the current one for
    "<program>"); `loader` reads them (a new one by default).

    Blocking, up to seconds for a big program: on an event loop, call it in a thread
    (asyncio.to_thread), as the daemon does on reload. Compiles in threads are safe: each
    builds a tree of its own, parses take turns."""
    from mgmt.lang.modules import Module, ModuleLoader

    module = Module(Path(filename).resolve(), text)
    loader = loader or ModuleLoader()
    loader.start(filename, False)
    loader.read.setdefault(module.file, text.encode())
    return _compile(module, filename, loader)


def _compile(module: Module, filename: str, loader: ModuleLoader | None) -> Checked:
    import gc

    from mgmt.lang.checker import check
    from mgmt.lang.errors import CompileError
    from mgmt.lang.parser import parse

    text = module.text

    # Parsing allocates many small objects and no cycles worth collecting meanwhile: the
    # collector's passes would cost a third of the time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return check(parse(text, filename), module, loader)
    except RecursionError:  # the last resort: the parser and the checker bound the depth
        raise CompileError([f"{filename}:1:1: the program nests too deeply"]) from None
    finally:
        if enabled:
            gc.enable()


def read_program(path: Path, name: str | None = None) -> bytes:
    """A program file's bytes; CompileError naming the file (`name`: as shown) if it cannot
    be read."""
    from mgmt.config import max_program_size
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import read_regular

    shown = path if name is None else name
    try:
        data = read_regular(path, max_program_size())  # a FIFO is refused, not waited on
    except OSError as err:
        raise CompileError([f"{shown}: cannot read: {err.strerror or err}"]) from err
    problem = too_large(len(data), str(shown))
    if problem is not None:
        raise CompileError([problem])
    return data


def decode(data: bytes, filename: str) -> str:
    """A program file's text (UTF-8); CompileError at the first bad byte."""
    from mgmt.lang.errors import CompileError

    try:
        return data.decode()
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        byte = data[err.start]
        raise CompileError(
            [f"{filename}:{line}:{col}: not UTF-8 text (byte 0x{byte:02x})"]
        ) from None


def compile_bytes(data: bytes, filename: str) -> Checked:
    """Decode (UTF-8), parse and check a program; CompileError on problems."""
    return compile_text(decode(data, filename), filename)


def compile_file(path: Path) -> Checked:
    """Read, parse and check a program: a .mcl file, or a directory whose metadata.yaml (or
    main.mcl) names its entry file, as mgmt runs a module."""
    from mgmt.lang.errors import CompileError
    from mgmt.lang.modules import ModuleLoader

    loader = ModuleLoader()
    try:
        module = loader.entry(path)
        return _compile(module, loader.name(module.file) if path.is_dir() else str(path), loader)
    except CompileError as err:
        err.looked_at = loader.looked_at()
        raise
