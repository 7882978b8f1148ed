"""What `mgmt check` does to one program, also for `mgmt deploy` (one way of checking)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgmt.yamlgraph import Loaded


def check_program(frontend: str, data: bytes, filename: str, max_size: int) -> list[str]:
    """Problems (one line each, naming file and line) of a program's bytes; [] if it is ok.

    `frontend`: "lang" compiles and type-checks an mcl program, "yaml" validates a graph file.
    """
    import resources  # noqa: F401  # kinds load on first use
    from engine.engine import verify
    from engine.errors import GraphError
    from mgmt.lang import compile_bytes
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import GraphFileError, parse

    try:
        if frontend == "lang":
            compile_bytes(data, filename)
        else:
            if len(data) > max_size:
                return [
                    f"{filename}:1: the graph file is larger than {max_size:,} bytes "
                    "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
                ]
            verify(parse(data, filename, duplicates=True).graph.copy())  # as `mgmt run` refuses
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    except GraphError as err:
        return [f"{filename}: {err}"]
    return []


def check_path(frontend: str, path: Path, max_size: int) -> list[str]:
    """`check_program` of a file: "lang" (an mcl program, or a directory module) or "yaml"
    (a graph file)."""
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import GraphFileError, read_limited

    try:
        if frontend == "lang":
            import resources  # noqa: F401  # kinds load on first use
            from mgmt.lang import compile_file

            compile_file(path)  # a file, or a module's directory (as `mgmt run lang` takes)
            return []
        data = read_limited(path, max_size)
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    return check_program(frontend, data, str(path), max_size)


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


def first_graph(frontend: str, path: Path, hostname: str, max_size: int) -> Loaded:
    """The graph a program (or graph file) gives `mgmt run` first, built and not applied:
    a program runs until its streams have their first values (up to lang.source's
    SETTLE_WAIT), with the local values of a fresh host (`value.get_str` not ready, as on a
    first `mgmt run --tmp-prefix`). CompileError (or GraphFileError) when it gives none: a run-time error (named
    at its position) or a program that reads the cluster (world.*)."""
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import parse, read_limited

    if frontend != "lang":
        return parse(read_limited(path, max_size), str(path), duplicates=True)
    import logging
    import tempfile

    from engine.local import LocalValues
    from mgmt.lang.source import LangSource

    async def run(prefix: str) -> tuple[Loaded | None, str | None, bool]:
        local = LocalValues(Path(prefix))  # a fresh host's: no value stored yet
        source = await LangSource.open(path, hostname=hostname, watch=False, local=local)
        try:
            return source.first, source.first_error, source.needs_cluster
        finally:
            await source.aclose()

    quiet = logging.getLogger("lang")  # its one error is returned here, not logged too
    quiet.disabled = True
    try:
        with tempfile.TemporaryDirectory(prefix="mgmt-check-") as prefix:
            loaded, error, cluster = asyncio.run(run(prefix))
    finally:
        quiet.disabled = False
    if cluster:
        raise CompileError([f"{path}: the program reads the cluster (world.*): run it to see"])
    if loaded is None:
        raise CompileError([error or f"{path}: the program produced no graph"])
    return loaded
