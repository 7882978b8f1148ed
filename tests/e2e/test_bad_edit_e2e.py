"""A bad edit in the middle of a big graph file (issue 16): the running agent refuses it from
the items the edit changed alone, with the line a full parse gives (file, line, key), and keeps
the running graph; one that involves another resource (a name another has) is told by a full
parse, as exactly; a good edit after them is applied.

"From the items alone" is what the agent logs (--verbose): each refusal's error line comes after
`the edit refused from the items it changed alone`, and no `parsed whole` is logged for it (the
debug lines of yamlreparse.reparse)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from mgmt.yamlgraph import GraphFileError, parse
from tests.e2e.helpers import Daemon, has_content, wait_path

N = 2000  # files in the graph; the edits are of the one in the middle
MID = N // 2
ALONE = "the edit refused from the items it changed alone"
WHOLE = "graph file: parsed whole"


def graph(tmp_path: Path, edit: Callable[[str], str] | None = None) -> str:
    lines = ["graph: big", "resources:", "  file:"]
    for i in range(N):
        lines += [f"    - name: f{i}", f"      path: {tmp_path}/out/f{i}", f'      content: "{i}"']
    lines += ["  noop:", "    - name: n", "edges:"]
    lines += [f"  - {{name: e{i}, from: {{kind: file, name: f{i}}}, to: {{kind: noop, name: n}}}}"]
    text = "\n".join(lines) + "\n"
    return text if edit is None else edit(text)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def full_parse_problems(text: str, path: Path) -> list[str]:
    try:
        parse(text, str(path))
    except GraphFileError as err:
        return err.problems
    raise AssertionError("the edit was expected to be refused")


async def test_a_bad_edit_of_a_big_graph_is_refused_from_its_items(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    path, mid = tmp_path / "g.yaml", tmp_path / "out" / f"f{MID}"
    write(path, graph(tmp_path))
    mid_path = f"path: {tmp_path}/out/f{MID}\n"
    bad: list[tuple[str, Callable[[str], str], bool]] = [
        ("an unknown key", lambda t: t.replace(mid_path, "p" + mid_path[2:]), True),
        (
            "a value of the wrong type",
            lambda t: t.replace(f'"{MID}"\n', f'"{MID}"\n      mode: [1]\n'),
            True,
        ),
        ("a YAML syntax error", lambda t: t.replace(f'content: "{MID}"', "content: a: b"), True),
        ("an edge to a missing vertex", lambda t: t.replace("name: n}}", "name: m}}"), True),
        (
            "a name another has",
            lambda t: t.replace(f"name: f{MID}\n", f"name: f{MID + 1}\n"),
            False,
        ),
    ]
    async with Daemon(["run", "--tmp-prefix", "--verbose", "yaml", str(path)]) as daemon:
        await daemon.wait_log("converged:")
        assert mid.read_text() == str(MID)
        for told, (what, edit, alone) in enumerate(bad, 1):
            text = graph(tmp_path, edit)
            expected = full_parse_problems(text, path)
            assert len(expected) == 1, (what, expected)
            start = len(daemon.lines)
            write(path, text)
            await daemon.wait_log("keeping the running graph", count=told)
            lines = daemon.lines[start:]
            error = next(i for i, line in enumerate(lines) if expected[0] in line)
            refused = [i for i, line in enumerate(lines) if ALONE in line]
            whole = [i for i, line in enumerate(lines) if WHOLE in line]
            if alone:  # from the edited items: before the error line, and no full parse
                assert refused and refused[0] < error and not whole, (what, lines)
            else:
                assert whole and whole[0] < error and not refused, (what, lines)
            assert mid.read_text() == str(MID)  # the running graph is untouched
        assert expected[0].startswith(f"{path}:{4 + 3 * (MID + 1)}: file[f{MID + 1}]")  # the other
        write(path, graph(tmp_path, lambda t: t.replace(f'"{MID}"', '"edited"')))
        await wait_path(mid, has_content("edited"), timeout=30)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert "Traceback" not in daemon.log
