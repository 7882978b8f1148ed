"""What `mgmt check` does to one program, also for `mgmt deploy` (one way of checking)."""

from __future__ import annotations

from pathlib import Path


def check_program(frontend: str, data: bytes, filename: str, max_size: int) -> list[str]:
    """Problems (one line each, naming file and line) of a program's bytes; [] if it is ok.

    `frontend`: "lang" compiles and type-checks an mcl program, "yaml" validates a graph file.
    """
    import resources  # noqa: F401  # kinds load on first use
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
            parse(data, filename)
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    return []


def check_path(frontend: str, path: Path, max_size: int) -> list[str]:
    """`check_program` of a file: "lang" (an mcl program, or a directory as `mgmt run lang
    DIR` runs it) or "yaml" (a graph file)."""
    from mgmt.lang.errors import CompileError
    from mgmt.yamlgraph import GraphFileError, read_limited

    try:
        if frontend == "lang" and path.is_dir():  # a module: its main.mcl or metadata.yaml
            from mgmt.lang import compile_file

            compile_file(path)
            return []
        if frontend == "lang":
            from mgmt.lang import read_program

            data = read_program(path)
        else:
            data = read_limited(path, max_size)
    except (CompileError, GraphFileError) as err:
        return list(err.problems)
    return check_program(frontend, data, str(path), max_size)
