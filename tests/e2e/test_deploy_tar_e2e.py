"""deploy:tar end to end: the real agent archives the program it runs, a local one (read as
`mgmt deploy` reads it) or the cluster's running deploy (engine.program, mgmt.program)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, run_mgmt, wait_path
from tests.e2e.test_cluster_e2e import fleet
from tests.e2e.test_deploy_e2e import push, seeding
from tests.mgmt.deploy.keys import make_key, trusted_file


def names(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        out = {}
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            out[member.name] = data.read() if data is not None else b"/"
        return out


def program(directory: Path, out: Path, comment: str) -> Path:
    (directory / "files").mkdir(parents=True, exist_ok=True)
    (directory / "files" / "motd").write_text("hello\n")
    (directory / "main.mcl").write_text(
        f"# {comment}\n"
        f'file "{out}/" {{\n\tstate => "exists",\n}}\n'
        f'deploy:tar "{out}/p.tar" {{\n\tDepend => File["{out}/"],\n}}\n'
    )
    return directory / "main.mcl"


def holds(comment: str) -> object:
    def check(path: Path) -> bool:
        try:
            return f"# {comment}\n".encode() in names(path).get("main.mcl", b"")
        except (OSError, tarfile.TarError):
            return False

    return check


async def test_a_local_program_is_archived_once_and_again_when_edited(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main = program(tmp_path / "src", out, "v1")
    args = ["run", "--tmp-prefix", "--converged-timeout", "0", "lang", str(main)]
    code, log = run_mgmt(args)
    assert code == 0, log
    assert f"deploy:tar[{out}/p.tar]: archived {main} (2 files" in log
    first = (out / "p.tar").read_bytes()
    assert names(out / "p.tar") == {
        "files": b"/",
        "files/motd": b"hello\n",
        "main.mcl": main.read_bytes(),
    }
    code, log = run_mgmt(args)  # a re-run writes nothing: the archive is deterministic
    assert code == 0, log
    assert "archived" not in log
    assert (out / "p.tar").read_bytes() == first
    async with Daemon(["run", "--tmp-prefix", "lang", str(main)]) as daemon:
        await daemon.wait_log("converged:")
        program(tmp_path / "src", out, "v2")  # the program's edit: a new graph, a new archive
        await wait_path(out / "p.tar", holds("v2"))  # type: ignore[arg-type]
        (tmp_path / "src" / "files" / "motd").write_text("bye\n")  # no new graph: watched
        await wait_path(out / "p.tar", lambda p: names(p).get("files/motd") == b"bye\n")  # type: ignore[arg-type]


@pytest.mark.slow
async def test_the_running_deploy_is_archived_and_follows_new_deploys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    alice = make_key(keys / "a", "alice")
    out, src = tmp_path / "out", tmp_path / "src"
    program(src, out, "d1")
    h1 = seeding(tmp_path, alice, src, trusted_file(keys / "a", alice))
    async with fleet([h1]):  # type: ignore[list-item]
        await h1.start()
        await wait_path(out / "p.tar", holds("d1"), 30)  # type: ignore[arg-type]
        assert h1.daemon is not None
        await h1.daemon.wait_log("archived deploy 1 (2 files")
        program(src, out, "d2")
        await push(h1, alice, src)
        await wait_path(out / "p.tar", holds("d2"), 30)  # type: ignore[arg-type]
        await h1.daemon.wait_log("archived deploy 2 (2 files")
