"""A graph file or program given through symlinks (`current` -> `releases/N`, re-pointed by each
release) is watched through them: re-pointing a link on the way is an edit, and so is an edit
of the file it now leads to (engine.namedpath). Managed paths are never followed: this is only
for what the agent reads on the operator's word."""

from __future__ import annotations

import os
from pathlib import Path

from engine.namedpath import watch_list
from tests.e2e.helpers import Daemon, has_content, wait_path


def _repoint(link: Path, target: str) -> None:
    """As a release script does: a new link renamed over the old one (atomic)."""
    new = link.with_name(link.name + ".new")
    new.symlink_to(target)
    new.rename(link)


def _releases(root: Path, name: str, text: str) -> Path:
    """rel1 and rel2, each with `name` holding `text` with "{}" as "one" and "two"; `current`
    a link to rel1; the directory for the managed files."""
    for release, content in (("rel1", "one"), ("rel2", "two")):
        (root / release).mkdir()
        (root / release / name).write_text(text.replace("{}", content))
    (root / "current").symlink_to("rel1")
    out = root / "out"
    out.mkdir()
    return out


def test_the_watch_list_names_each_link_on_the_way_and_where_it_leads(tmp_path: Path) -> None:
    (tmp_path / "rel1").mkdir()
    (tmp_path / "current").symlink_to("rel1")
    (tmp_path / "graph.yaml").symlink_to(tmp_path / "current" / "g.yaml")
    (tmp_path / "loop").symlink_to("loop")
    assert watch_list([tmp_path / "graph.yaml", tmp_path / "rel1" / ".." / "current" / "x"]) == [
        str(tmp_path / "graph.yaml"),
        str(tmp_path / "current"),
        str(tmp_path / "rel1" / "g.yaml"),  # missing: watched as written from there
        str(tmp_path / "rel1" / "x"),
    ]
    assert watch_list([tmp_path / "loop" / "x"]) == [str(tmp_path / "loop")]  # (ELOOP)


async def test_a_graph_file_through_symlinks_follows_each_repointing_and_edit(
    tmp_path: Path,
) -> None:
    graph = f"graph: g\nresources:\n  file:\n  - name: {tmp_path}/out/a\n    content: {{}}\n"
    out = _releases(tmp_path, "g.yaml", graph)
    (tmp_path / "graph.yaml").symlink_to("current/g.yaml")
    args = ["run", "--tmp-prefix", "yaml", str(tmp_path / "graph.yaml")]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        assert (out / "a").read_text() == "one"
        _repoint(tmp_path / "current", "rel2")  # the directory link
        await wait_path(out / "a", has_content("two"))
        new = tmp_path / "rel2" / "g.yaml.tmp"  # an edit where it leads now
        new.write_text((tmp_path / "rel2" / "g.yaml").read_text().replace("two", "three"))
        os.rename(new, tmp_path / "rel2" / "g.yaml")
        await wait_path(out / "a", has_content("three"))
        _repoint(tmp_path / "graph.yaml", "rel1/g.yaml")  # the file link
        await wait_path(out / "a", has_content("one"))
        with (tmp_path / "rel1" / "g.yaml").open("r+") as writer:  # in place, where it leads
            text = writer.read().replace("one", "four")
            writer.seek(0)
            writer.write(text)
        await wait_path(out / "a", has_content("four"))


async def test_a_program_through_a_symlinked_directory_follows_its_repointing(
    tmp_path: Path,
) -> None:
    out = _releases(tmp_path, "main.mcl", f'file "{tmp_path}/out/a" {{ content => "{{}}", }}\n')
    args = ["run", "--tmp-prefix", "lang", str(tmp_path / "current" / "main.mcl")]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged:")
        _repoint(tmp_path / "current", "rel2")
        await wait_path(out / "a", has_content("two"))
        (tmp_path / "rel2" / "main.mcl").write_text(f'file "{out}/a" {{ content => "three", }}\n')
        await wait_path(out / "a", has_content("three"))
        # Same text in both releases: still the one it leads to now (its own paths).
        (tmp_path / "rel1" / "main.mcl").write_text(f'file "{out}/a" {{ content => "three", }}\n')
        _repoint(tmp_path / "current", "rel1")
        await daemon.wait_log("program file changed:", count=3)  # the graph is the same
