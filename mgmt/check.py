"""What `mgmt check` does to one program, also for `mgmt deploy` (one way of checking)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from engine.graph import Graph, Key
    from mgmt.lang.checker import Checked
    from mgmt.yamlgraph import Loaded


def check_program(
    frontend: str, data: bytes, filename: str, max_size: int, warnings: list[str] | None = None
) -> list[str]:
    """Problems (one line each, naming file and line) of a program's bytes; [] if it is ok.

    `frontend`: "lang" compiles and type-checks an mcl program, "yaml" validates a graph file
    (and adds to `warnings`, if given, what `mgmt run` warns about: graph_warnings).
    """
    import resources  # noqa: F401  # kinds load on first use
    from engine.engine import verify
    from engine.errors import GraphError
    from mgmt.yamlgraph import GraphFileError, parse

    if frontend == "lang":  # the language's modules: not imported to check a graph file
        from mgmt.lang import compile_bytes
        from mgmt.lang.errors import CompileError

        try:
            compile_bytes(data, filename)
        except (CompileError, GraphFileError) as err:
            return list(err.problems)
        except GraphError as err:
            return [f"{filename}: {err}"]
        return []
    if len(data) > max_size:
        return [
            f"{filename}:1: the graph file is larger than {max_size:,} bytes "
            "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
        ]
    try:
        loaded = parse(data, filename, duplicates=True)
        verify(loaded.graph.copy())  # as `mgmt run` refuses
    except GraphFileError as err:
        return list(err.problems)
    except GraphError as err:
        return [f"{filename}: {err}"]
    if warnings is not None:
        warnings += graph_warnings(loaded.graph, loaded.warnings)
    return []


def graph_warnings(graph: Graph, loaded: list[str]) -> list[str]:
    """What a check of `graph` warns about: the loader's warnings (`loaded`: old mgmt keys, the
    lines `mgmt run` logs at each load), and what this host lacks for a kind of it
    (Resource.host_lacks: libvirt for virt), which `mgmt run` finds when the resource starts."""
    lacks = {cls: cls.host_lacks() for cls in {type(res) for res in graph}}
    return [*loaded, *sorted(f"{cls.KIND}: {why}" for cls, why in lacks.items() if why)]


def warn(warnings: list[str]) -> None:
    """`mgmt check`'s (and `mgmt setup`'s) warnings: `warning: LINE` on stderr each."""
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)


def check_path(frontend: str, path: Path, max_size: int, hostname: str = "") -> list[str]:
    """`check_program` of a file: "lang" (an mcl program, or a directory module: compiled,
    then its first graph checked as the host `hostname` would build it, program_graph_problems)
    or "yaml" (a graph file)."""
    if frontend == "lang":
        import resources  # noqa: F401  # kinds load on first use
        from engine import collector
        from mgmt.lang import compile_file
        from mgmt.lang.errors import CompileError
        from mgmt.yamlgraph import GraphFileError

        # Without the cycle collector's passes: the program's tree, its cells and its first
        # graph live until the check ends, and each pass walked them all (a 25,000-resource
        # program's: 1 s); what is left is collected once after.
        warnings: list[str] = []
        try:
            with collector.paused():
                checked = compile_file(path)  # a file, or a module's directory (as `run lang`)
                _remember(path, checked)
                far = outside(checked, (path if path.is_dir() else path.parent).resolve())
                hostname = hostname or socket.gethostname()
                problems = far or program_graph_problems(path, hostname, checked, warnings)
        except (CompileError, GraphFileError) as err:
            return list(err.problems)
        warn(warnings)
        return problems
    from mgmt.yamlgraph import GraphFileError, read_limited

    try:
        data = read_limited(path, max_size)
    except GraphFileError as err:
        return list(err.problems)
    warnings = []
    problems = check_program(frontend, data, str(path), max_size, warnings)
    warn(warnings)
    return problems


def graph_lines(loaded: Loaded, autoedges: bool = True) -> list[str]:
    """A graph as sorted lines, as mgmt's language tests print one: `Vertex: kind[name]` for
    each resource and `Edge: kind[a] -> kind[b]` for each edge (` # notify` when it notifies),
    with the automatic edges the engine adds (engine.autoedge; ` # autoedge`) unless told not
    to. Then, as comments, what depends on the cluster, which is not read here: `# Collect:`
    lines for what the program collects (mgmt's graph has the collected resources it has read
    by then; here none), `# Export:` for resources exported only (`@@name`), and `# Edge:` for
    edges that wait for a collected resource."""
    from engine.autoedge import AUTO, add_autoedges
    from engine.graph import fmt_key

    graph = loaded.graph
    if autoedges:
        graph = graph.copy()
        add_autoedges(graph)
    lines = [f"Vertex: {fmt_key(key)}" for key in graph.vertices]
    for src, dst, edge in graph.edges():
        note = " # autoedge" if edge is AUTO else " # notify" if edge.notify else ""
        lines.append(f"Edge: {fmt_key(src)} -> {fmt_key(dst)}{note}")
    out = sorted(lines)
    notes = [
        f"# Collect: {fmt_key((c.kind, c.name or c.pattern + '*'))} from {c.host or 'any host'}"
        for c in loaded.collect
    ]
    notes += [
        f"# Export: {fmt_key((res.kind, res.name))}"
        for res in loaded.exported
        if (res.kind, res.name) not in loaded.graph
    ]
    notes += [f"# Edge: {fmt_key(src)} -> {fmt_key(dst)}" for src, dst, _ in loaded.pending]
    return out + sorted(notes)


class ReadsCluster(Exception):
    """A program's first graph reads the cluster (world.*): not known without it. Not an
    error of the program (`check --graph` says so and exits 0): its message says which."""


def first_graph(frontend: str, path: Path, hostname: str, max_size: int) -> Loaded:
    """The graph a program (or graph file) gives `mgmt run` first, built and not applied:
    a program runs until its streams have their first values (up to lang.source's
    SETTLE_WAIT), with the local values of a fresh host (`value.get_str` not ready, as on a
    first `mgmt run --tmp-prefix`). CompileError (or GraphFileError) when it gives none (a
    run-time error, named at its position); ReadsCluster for a program that reads the
    cluster (world.*)."""
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import parse, read_limited

    if frontend != "lang":
        return parse(read_limited(path, max_size), str(path), duplicates=True)
    # as mgmt run's (--graph asks for it), of the program check_path compiled (not again)
    first = _first_run(path, hostname, commands=True, checked=_compiled_last(path))
    if first.cluster:
        raise ReadsCluster(
            f"{path}: its graph is not shown: the program reads the cluster (world.*), "
            "which only `mgmt run` does"
        )
    if first.loaded is None:
        raise CompileError([first.error or f"{path}: the program produced no graph"])
    return first.loaded


# The program check_path compiled last and the path it was compiled from: `check --graph`
# checks (check_path), then prints the first graph (first_graph), of one compile (a
# 25,000-resource program's took ~1 s). Taken once, and only if its files are unchanged.
_last: list[tuple[Path, Checked]] = []


def _remember(path: Path, checked: Checked) -> None:
    _last[:] = [(path, checked)]


def _compiled_last(path: Path) -> Checked | None:
    """The program check_path compiled from `path` last, if its files are as it read them."""
    from mgmt.lang.modules import read_again

    last, _last[:] = _last[:], []
    if not last or last[0][0] != path:
        return None
    checked = last[0][1]
    return checked if read_again(checked.files) == checked.digest else None


class _First(NamedTuple):
    loaded: Loaded | None
    error: str | None  # the run-time error instead of a graph
    exception: Exception | None  # its exception
    cluster: bool  # the program reads the cluster: its graph is not known here
    positions: dict[tuple[str, str], str]  # where each resource was declared, by key
    everywhere: bool  # the error is raised on every host (mgmt.lang.certain)
    same_everywhere: bool  # the first graph is every host's (certain.host_independent)


# The prefix of a check's local values: nothing is read from it (no one makes files in /proc),
# nothing is written (LocalValues.readonly).
NOWHERE = Path("/proc/mgmt-check")


def _first_run(path: Path, hostname: str, commands: bool, checked: Checked | None = None) -> _First:
    """An mcl program run to its first graph (see first_graph), its run-time error not logged;
    without `commands`, a stream that runs one (os.system) leaves it with no graph, and
    nothing is written (local.pool and local.vardir fail: no graph either). `checked`: the
    program compiled from `path` already (not compiled again)."""
    import logging
    import tempfile
    import threading

    from engine.local import LocalValues
    from mgmt.lang.certain import fails_everywhere, host_independent
    from mgmt.lang.errors import FuncError
    from mgmt.lang.source import LangSource

    async def run(local: LocalValues) -> _First:
        source = await LangSource.open(
            path, hostname=hostname, watch=False, local=local, commands=commands, checked=checked
        )
        error = source.first_exception
        program = source.runtime.checked.program if source.runtime is not None else None
        try:
            return _First(
                source.first,
                source.first_error,
                error,
                source.needs_cluster,
                source.positions(),
                isinstance(error, FuncError)
                and error.pos is not None
                and source.runtime is not None
                and fails_everywhere(source.runtime.checked.program, error.pos),
                # walked only when it matters: a first graph that failed
                program is not None and source.first is None and host_independent(program),
            )
        finally:
            await source.aclose()

    # Its one error is returned here, not logged too; only this thread's records (the deploy
    # socket checks in an agent's worker thread, whose own program's lines stay).
    me = threading.get_ident()

    def others(record: logging.LogRecord) -> bool:
        return record.thread != me

    quiet = logging.getLogger("lang")
    quiet.addFilter(others)
    try:
        if not commands:  # a check writes nothing: a fresh host's values, read from nowhere
            return asyncio.run(run(LocalValues(NOWHERE, readonly=True)))
        with tempfile.TemporaryDirectory(prefix="mgmt-check-") as prefix:
            return asyncio.run(run(LocalValues(Path(prefix))))  # a fresh host's
    finally:
        quiet.removeFilter(others)


def program_graph_problems(
    path: Path,
    hostname: str,
    checked: Checked | None = None,
    warnings: list[str] | None = None,
) -> list[str]:
    """What `mgmt check` (and so `mgmt deploy`) finds in a compiled program's first graph, as
    `check --graph` and `mgmt run` would refuse it: two resources managing one thing (each at
    its statement), what the engine refuses otherwise, more than --max-resources. [] when the
    graph cannot be known here (the program reads the cluster, or runs a command: os.system is
    not run by a check) or the program fails at run
    time for a reason of this host's (a missing file: `mgmt run` says so where it runs). A
    program whose first graph is the same on every host (mgmt.lang.certain.host_independent)
    has every error of it reported: a param its kind refuses, a duplicate, an edge to nothing,
    in a loop or not. `warnings`, if given, gets graph_warnings of the first graph."""
    from engine.engine import verify
    from engine.errors import GraphError
    from mgmt.lang.errors import CycleError, GraphLimitError

    first = _first_run(path, hostname, False, checked)  # nothing is run on this machine
    if first.loaded is None:
        every_host = (
            first.everywhere
            or first.same_everywhere
            or isinstance(first.exception, GraphLimitError | CycleError)
        )
        return [first.error] if every_host and first.error else []
    graph = first.loaded.graph
    found = duplicate_problems(graph, first.positions)
    if found:
        return found
    try:
        verify(graph.copy())
    except GraphError as err:
        return [f"{path}: {err}"]
    if warnings is not None:  # graph_warnings: a program's are what its host lacks
        warnings += graph_warnings(graph, [])
    return []


def duplicate_problems(graph: Graph, positions: dict[Key, str]) -> list[str]:
    """Two resources of `graph` managing one thing, each at the statement that declared it
    (`positions`: mcl's `file:line:col` by key), as a graph file's name their lines: what the
    engine refuses (without places). [] if there is none, or a resource's place is unknown."""
    from engine.autoedge import both_manage, both_write, duplicates, overwritten
    from engine.graph import key_of

    out = []
    for uid, owner, key in duplicates(graph):
        where, other = positions.get(key), positions.get(owner)
        if where is None or other is None:
            return []
        out.append(f"{where}: {both_manage(uid, owner, key)} (also declared at {other})")
    for path, writer, editor in overwritten(graph):
        where, other = positions.get(key_of(editor)), positions.get(key_of(writer))
        if where is None or other is None:
            return []
        out.append(f"{where}: {both_write(path, writer, editor)} (declared at {other})")
    return out


def outside(checked: Checked, base: Path) -> list[str]:
    """Each import of a compiled program whose module lies outside the program's directory
    `base`, at the import: a deploy carries only what is under it (`mgmt run` reads it). The
    error names the way out: a metadata.yaml in a directory above both, whose `main:` is the
    program's entry file, deployed (or run) as that directory."""
    import os.path

    entry = next((f.resolve() for f in checked.files if f.suffix == ".mcl"), None)
    out = []
    for pos, name, file in checked.imports:
        if not file.resolve().is_relative_to(base):
            top = Path(os.path.commonpath([base, file.resolve()]))
            way = (
                f" (to deploy it: {top}/metadata.yaml with `main: {entry.relative_to(top)}`, and "
                f"`mgmt deploy` the directory {top}/)"
                if entry is not None and top != Path("/") and entry.is_relative_to(top)
                else ""
            )
            out.append(
                f'{pos}: import "{name}": {file.resolve()} is outside the program\'s directory '
                f"{base}: a deploy carries only what is under it{way}"
            )
    return out
