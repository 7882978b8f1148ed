"""End to end: what the agent reads on the operator's behalf (a file's `source` and
`fragments`, a gzip's `input`, a tar's `inputs`) follows no symlink another local user
controls (docs/security.md). The links are planted by a real other user (uid 65534, through
setpriv), as the operator tester did; the real `mgmt run` reads them."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.e2e.helpers import NOBODY, as_nobody, needs_another_user, run_once

TRUST = "only links owned by root (or this agent's user), in directories only they can write"

pytestmark = needs_another_user


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp_path/victim/secret (root, 0600), tmp_path/shared (1777, like /tmp) holding
    app/src -> the secret and lnk -> victim/, both made by uid 65534; tmp_path/pub for copies."""
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = victim / "secret"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    as_nobody(shared, f"mkdir app && ln -s {secret} app/src && ln -s {victim} lnk")
    assert (shared / "app" / "src").lstat().st_uid == NOBODY
    (tmp_path / "pub").mkdir()
    return tmp_path


def run_graph(tmp_path: Path, resources: str) -> tuple[int, str]:
    spec = tmp_path / "graph.yaml"
    body = textwrap.indent(textwrap.dedent(resources).replace("TMP", str(tmp_path)), "  ")
    spec.write_text(f"graph: read\nresources:\n{body}")
    return run_once("yaml", spec)


def refused(link: Path, target: Path, why: str) -> str:
    return f"refusing to follow the symlink {link} (-> {target}): {why}; {TRUST}, are followed"


@pytest.mark.parametrize(
    ("name", "param", "via"),
    [
        ("source", "source: TMP/shared/app/src", "app/src"),
        ("fragments", "fragments: [TMP/shared/app/src]", "app/src"),
        ("a link in a parent", "source: TMP/shared/lnk/secret", "lnk"),
        ("a fragment through a parent", "fragments: [TMP/shared/lnk/secret]", "lnk"),
    ],
)
def test_a_link_another_user_planted_is_not_read(
    tree: Path, name: str, param: str, via: str
) -> None:
    code, out = run_graph(
        tree,
        f"""
        file:
          - name: copy
            path: TMP/pub/copy
            {param}
            mode: "0644"
        """,
    )
    assert code == 1, out
    link = tree / "shared" / via
    target = tree / "victim" / "secret" if via == "app/src" else tree / "victim"
    line = refused(link, target, f"it is owned by uid {NOBODY}")
    assert line in out, out
    assert "file[copy]: failed: " in out
    assert not (tree / "pub" / "copy").exists()  # nothing written
    assert "TOPSECRET" not in out


def test_our_own_link_in_a_directory_another_user_owns_is_not_read(tree: Path) -> None:
    """The link is root's, but uid 65534 owns its directory: they could swap it."""
    app = tree / "shared" / "app"
    (app / "mine").symlink_to(tree / "victim" / "secret")
    code, out = run_graph(
        tree, "file:\n  - {name: copy, path: TMP/pub/copy, source: TMP/shared/app/mine}\n"
    )
    assert code == 1, out
    why = f"its directory {app} is owned by uid {NOBODY}"
    assert refused(app / "mine", tree / "victim" / "secret", why) in out, out
    assert not (tree / "pub" / "copy").exists()


def test_gzip_and_tar_inputs_follow_no_planted_link(tree: Path) -> None:
    code, out = run_graph(
        tree,
        """
        gzip:
          - {name: TMP/pub/secret.gz, input: TMP/shared/app/src}
        tar:
          - {name: TMP/pub/secret.tar, inputs: [TMP/shared/lnk/secret]}
          - {name: TMP/pub/names.tar, inputs: [TMP/victim/, TMP/shared/lnk/]}
        """,
    )
    assert code == 1, out
    secret = tree / "victim" / "secret"
    assert refused(tree / "shared" / "app" / "src", secret, f"it is owned by uid {NOBODY}") in out
    which = f"tar[{tree}/pub/names.tar]: failed: inputs[1]: "  # which input, by its index
    assert (
        which + refused(tree / "shared" / "lnk", tree / "victim", f"it is owned by uid {NOBODY}")
        in out
    )
    assert sorted(os.listdir(tree / "pub")) == []


def test_links_only_we_control_are_followed(tree: Path) -> None:
    """Our own links in our own directories (absolute, relative, in a parent) are read, and so
    is a system one (/bin -> usr/bin, where /bin is such a link)."""
    mine = tree / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "f").write_text("ours\n")
    (mine / "abs").symlink_to(mine / "data" / "f")
    (mine / "rel").symlink_to("data/f")
    (mine / "dir").symlink_to("data")
    system = "/bin/sh" if os.path.islink("/bin") else None
    extra = f"  - {{name: sys, path: TMP/pub/sys, source: {system}}}\n" if system else ""
    code, out = run_graph(
        tree,
        "file:\n"
        "  - {name: abs, path: TMP/pub/abs, source: TMP/mine/abs}\n"
        "  - {name: rel, path: TMP/pub/rel, source: TMP/mine/rel}\n"
        "  - {name: dir, path: TMP/pub/dir, source: TMP/mine/dir/f}\n"
        "  - {name: frag, path: TMP/pub/frag, fragments: [TMP/mine/rel, TMP/mine/dir/]}\n"
        f"{extra}gzip:\n"
        "  - {name: TMP/pub/f.gz, input: TMP/mine/rel}\n",
    )
    assert code == 0, out
    for name in ("abs", "rel", "dir"):
        assert (tree / "pub" / name).read_text() == "ours\n"
    assert (tree / "pub" / "frag").read_text() == "ours\nours\n"
    assert (tree / "pub" / "f.gz").exists()
    if system:
        assert (tree / "pub" / "sys").read_bytes() == Path(system).resolve().read_bytes()


def test_a_tree_source_behind_our_link_is_copied(tree: Path) -> None:
    (tree / "mine" / "tree").mkdir(parents=True)
    (tree / "mine" / "tree" / "a").write_text("a\n")
    (tree / "mine" / "l").symlink_to("tree")
    code, out = run_graph(
        tree, "file:\n  - {name: t, path: TMP/pub/t/, source: TMP/mine/l/, recurse: true}\n"
    )
    assert code == 0, out
    assert (tree / "pub" / "t" / "a").read_text() == "a\n"
