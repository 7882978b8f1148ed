"""The docs' graphs and programs, as a reader pastes them: every ```yaml and ```mcl block of
README.md and docs/ says what it is in its info string, and the whole ones pass `mgmt check`.

    ```yaml check       a whole graph file          (mgmt check FILE.yaml)
    ```mcl check        a whole program             (mgmt check FILE.mcl)
    ```yaml resources   entries of `resources:`     (checked inside `graph:` / `resources:`)
    ```yaml fragment    a part, not checked (a template, an `edges:` list, another tool's YAML)

tester14's finding 12: snippets that did not run as written (`fmt` not imported, an undefined
class), resource pages' entries pasted as a file.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tests.e2e.helpers import ROOT, run_mgmt

FENCE = re.compile(r"^```(yaml|mcl)([^\n]*)\n(.*?)^```", re.M | re.S)
MARKS = ("check", "resources", "fragment")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets() -> list[tuple[str, str, str, str]]:
    """(where: page:line, language, mark, text) of every yaml and mcl block."""
    found = []
    for page in pages():
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{page.relative_to(ROOT)}:{line}"
            found.append((where, match[1], match[2].strip(), match[3]))
    return found


def test_every_yaml_and_mcl_block_says_what_it_is() -> None:
    found = snippets()
    assert len(found) >= 20, found  # the reader's blocks are found at all
    unmarked = [f"{where}: ```{lang} {mark}" for where, lang, mark, _ in found if mark not in MARKS]
    assert not unmarked, f"mark each block with one of {MARKS}: {unmarked}"


def test_the_whole_graphs_and_programs_of_the_docs_pass_check(tmp_path: Path) -> None:
    files: dict[str, str] = {}
    for index, (where, lang, mark, text) in enumerate(snippets()):
        if mark == "fragment":
            continue
        whole = f"graph: doc\nresources:\n{textwrap.indent(text, '  ')}"
        path = tmp_path / f"s{index}.{lang}"
        path.write_text(whole if mark == "resources" else text)
        files[str(path)] = where
    code, out = run_mgmt(["check", *files], timeout=120)
    told = out
    for path, where in files.items():
        told = told.replace(path, where)
    assert code == 0, told
    assert all(f"{path}: ok\n" in out for path in files), told
