"""End to end: a hostile local user (uid 65534, through setpriv) against a root agent, as
tester13 played it (2026-12-05): what they put where the operator's graph reads or writes
must not give them root's privileges or files (docs/security.md)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    NOBODY,
    SETPRIV,
    Daemon,
    as_nobody,
    has_content,
    needs_another_user,
    run_mgmt,
    run_once,
    wait_path,
)
from tests.e2e.test_status_page import free_port

pytestmark = needs_another_user


def run_graph(tmp_path: Path, resources: str) -> tuple[int, str]:
    spec = tmp_path / "graph.yaml"
    body = textwrap.indent(textwrap.dedent(resources).replace("TMP", str(tmp_path)), "  ")
    spec.write_text(f"graph: hostile\nresources:\n{body}")
    return run_once("yaml", spec)


def theirs(tmp_path: Path) -> Path:
    """tmp_path/a, a directory the other user owns (their home, an upload directory)."""
    home = tmp_path / "a"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    return home


def test_a_copy_of_a_users_set_id_binary_does_not_run_as_root(tmp_path: Path) -> None:
    """Finding 0: the user's own 4755 `id` (and a 2755 file in a tree), copied by root's
    `source`, came out root-owned and set-ID: `uid=65534 ... euid=0(root)`."""
    home = theirs(tmp_path)
    ident = shutil.which("id")
    as_nobody(
        home,
        f"mkdir tree && cp {ident} tree/myid && chmod 4755 tree/myid && echo hi > tree/f "
        "&& chmod 2755 tree/f",
    )
    (tmp_path / "root").mkdir()
    code, out = run_graph(
        tmp_path,
        """
        file:
          - {name: TMP/root/treecopy/, state: exists, source: TMP/a/tree/, recurse: true}
          - {name: TMP/root/single, source: TMP/a/tree/myid}
        """,
    )
    assert code == 0, out
    for name, mode in (("single", 0o755), ("treecopy/myid", 0o755), ("treecopy/f", 0o755)):
        st = (tmp_path / "root" / name).stat()
        assert (st.st_uid, oct(st.st_mode & 0o7777)) == (0, oct(mode)), name
    ran = as_nobody(tmp_path / "root", "./single && ./treecopy/myid")
    assert "euid=" not in ran and ran.count(f"uid={NOBODY}") == 2, ran


def _reader_program(tmp_path: Path, call: str) -> Path:
    program = tmp_path / "read.mcl"
    program.write_text(
        textwrap.dedent(
            f"""\
            import "os"
            import "golang/os" as golang_os
            $c = {call}("{tmp_path}/a/cfg")
            file "{tmp_path}/root/copy" {{ state => "exists", content => $c, mode => "0644", }}
            file "{tmp_path}/root/other" {{ state => "exists", content => "keep me\\n", }}
            """
        )
    )
    (tmp_path / "root").mkdir()
    return program


def test_os_readfile_follows_no_link_another_user_planted(tmp_path: Path) -> None:
    """Finding 3 (a): their `ln -s /root/secret ~/cfg` read a 0600 file into a 0644 copy."""
    secret = tmp_path / "secret"
    secret.write_text("root-only-secret\n")
    secret.chmod(0o600)
    as_nobody(theirs(tmp_path), f"ln -s {secret} cfg")
    for call in ("os.readfile", "golang_os.read_file"):
        code, out = run_once("lang", _reader_program(tmp_path, call))
        assert code == 2, out
        assert f"cannot read {tmp_path}/a/cfg: refusing to follow the symlink" in out, out
        assert "root-only-secret" not in out and not (tmp_path / "root" / "copy").exists()
        shutil.rmtree(tmp_path / "root")


async def test_a_fifo_swapped_in_for_os_readfile_does_not_stop_the_agent(tmp_path: Path) -> None:
    """Finding 3 (b): the agent's loop sat in open() of their FIFO: no repair, SIGTERM unheard."""
    home = theirs(tmp_path)
    as_nobody(home, "echo v1 > cfg")
    program = _reader_program(tmp_path, "os.readfile")
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await wait_path(tmp_path / "root" / "copy", has_content("v1\n"))
        await daemon.wait_log("converged")
        as_nobody(home, "rm cfg && mkfifo cfg")
        await daemon.wait_log(f"cannot read {home}/cfg: not a regular file")
        (tmp_path / "root" / "other").unlink()  # drift repair goes on
        await wait_path(tmp_path / "root" / "other", has_content("keep me\n"))
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(timeout=30) in (0, 1), daemon.log


def test_golang_read_file_of_a_fifo_or_a_huge_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    home = theirs(tmp_path)
    as_nobody(home, "mkfifo cfg")
    code, out = run_once("lang", _reader_program(tmp_path, "golang_os.read_file"))
    assert code == 2, out
    assert f"cannot read {home}/cfg: not a regular file" in out, out
    shutil.rmtree(tmp_path / "root")
    as_nobody(home, "rm cfg && truncate -s 4G cfg")  # sparse: costs them no disk
    code, out = run_once("lang", _reader_program(tmp_path, "os.readfile"))
    assert code == 2, out
    assert f"cannot read {home}/cfg: larger than 16,777,216 bytes (the limit)" in out, out


def test_a_sparse_fragment_is_refused_by_its_size_not_read_into_memory(tmp_path: Path) -> None:
    """Finding 4: a 4 GB sparse file in a fragment directory the user writes: 2.9 GB of the
    agent's memory, then an empty `failed: ` (a MemoryError)."""
    home = theirs(tmp_path)
    as_nobody(home, "mkdir frag && echo line1 > frag/01 && truncate -s 4G frag/02")
    (tmp_path / "root").mkdir()
    code, out = run_graph(
        tmp_path,
        """
        file:
          - {name: TMP/root/motd, state: exists, fragments: [TMP/a/frag/], mode: "0644"}
        """,
    )
    assert code == 1, out
    assert (
        f"fragments[0]: {home}/frag/02: the fragments come to more than 16,777,216 bytes "
        "(the limit)"
    ) in out, out
    assert not (tmp_path / "root" / "motd").exists()


def test_a_hard_link_to_another_users_file_is_not_chowned(tmp_path: Path) -> None:
    """Finding 5: their `ln ~b/proj/data2 ~/report` (a file they may read and write through a
    group) and the operator's `owner: them, mode: 0600` of ~/report took it from its owner."""
    victim = tmp_path / "data2"
    victim.write_text("b's data\n")
    os.chown(victim, 65533, NOBODY)  # another user's, group-writable by the attacker's group
    victim.chmod(0o660)
    home = theirs(tmp_path)
    tmp_path.chmod(0o755)  # ../data2 from their directory (tmp_path's parents stay closed)
    as_nobody(home, "ln ../data2 report")
    code, out = run_graph(
        tmp_path,
        f"""
        file:
          - {{name: TMP/a/report, state: exists, owner: "{NOBODY}", mode: "0600"}}
        """,
    )
    assert code == 1, out
    assert f"{home}/report has 2 hard links and its directory is owned by uid {NOBODY}" in out
    st = victim.stat()
    assert (st.st_uid, st.st_mode & 0o777, victim.read_text()) == (65533, 0o660, "b's data\n")


def test_a_template_another_user_writes_cannot_read_roots_files_or_environment(
    tmp_path: Path,
) -> None:
    """Finding 7: their motd template `{{ golang_os_read_file "/root/secret" }}` and
    `{{ sys_getenv "HOME" }}`, rendered by root's program, printed both into the motd."""
    secret = tmp_path / "secret"
    secret.write_text("root-only-secret\n")
    secret.chmod(0o600)
    home = theirs(tmp_path)
    (tmp_path / "root").mkdir()
    program = tmp_path / "motd.mcl"
    program.write_text(
        textwrap.dedent(
            f"""\
            import "os"
            import "golang"
            $t = os.readfile("{home}/motd.tmpl")
            file "{tmp_path}/root/motd" {{ state => "exists", content => golang.template($t, "web1"), }}
            """
        )
    )
    for call in (f'golang_os_read_file "{secret}"', 'sys_getenv "HOME"'):
        as_nobody(home, f"printf '%s' 'Welcome to {{{{.}}}} {{{{ {call} }}}}' > motd.tmpl")
        code, out = run_once("lang", program)
        assert code == 2, out
        assert "is not available in a template (it reads the agent's files, environment" in out
        assert "root-only-secret" not in out and not (tmp_path / "root" / "motd").exists()
    as_nobody(home, "printf '%s' 'Welcome to {{.}}' > motd.tmpl")
    code, out = run_once("lang", program)
    assert code == 0, out
    assert (tmp_path / "root" / "motd").read_text() == "Welcome to web1"


async def test_a_user_holding_the_status_port_does_not_keep_the_agent_from_applying(
    tmp_path: Path,
) -> None:
    """Finding 10: their listener on 127.0.0.1:PORT first, and `mgmt run --status` exited 2
    with nothing applied. Now the graph is applied, and the page is served once they let go."""
    port = free_port()
    hold = "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', %d)); s.listen(); "
    hold += "print('held', flush=True); sys.stdin.read()"
    assert SETPRIV is not None
    argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    holder = await asyncio.create_subprocess_exec(
        *argv, sys.executable, "-c", hold % port, stdin=PIPE, stdout=PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        async with asyncio.timeout(30):
            assert await holder.stdout.readline() == b"held\n"
        graph = tmp_path / "g.yaml"
        graph.write_text(
            f"graph: g\nresources:\n  file: [{{name: {tmp_path}/applied, content: 'x'}}]\n"
        )
        args = ["run", "--tmp-prefix", "--status", "--prometheus-listen", f":{port}"]
        async with Daemon([*args, "yaml", str(graph)]) as daemon:
            await daemon.wait_log(f":{port} is in use by another process")
            await daemon.wait_log("converged:")
            assert (tmp_path / "applied").read_text() == "x"
            holder.stdin.close()  # they let go
            async with asyncio.timeout(30):
                await holder.wait()
            await daemon.wait_log(f"status page on http://127.0.0.1:{port}/", timeout=30)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


def test_an_archive_is_no_wider_than_its_narrowest_input(tmp_path: Path) -> None:
    """Finding 12: a 0600 key archived by `tar` (or compressed by `gzip`) was a 0644 file:
    any user read it through the archive. Now 0600; readable inputs still make a 0644 one."""
    sec = tmp_path / "sec"
    sec.mkdir()
    (sec / "key").write_text("topsecret\n")
    (sec / "key").chmod(0o600)
    (tmp_path / "pub").write_text("public\n")
    graph = """
        tar:
          - {name: TMP/backup.tar, inputs: [TMP/sec/]}
          - {name: TMP/pub.tar, inputs: [TMP/pub]}
        gzip:
          - {name: TMP/key.gz, input: TMP/sec/key}
          - {name: TMP/pub.gz, input: TMP/pub}
        """
    code, out = run_graph(tmp_path, graph)
    assert code == 0, out
    modes = {n: (tmp_path / n).stat().st_mode & 0o777 for n in ("backup.tar", "key.gz")}
    assert modes == {"backup.tar": 0o600, "key.gz": 0o600}
    assert (tmp_path / "pub.tar").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "pub.gz").stat().st_mode & 0o777 == 0o644
    tmp_path.chmod(0o755)
    for name in ("backup.tar", "key.gz"):  # the other user reads neither
        with pytest.raises(subprocess.CalledProcessError):
            as_nobody(tmp_path, f"cat {name} > /dev/null")
    (tmp_path / "pub").chmod(0o640)  # an input narrowed: the output follows
    code, out = run_graph(tmp_path, graph)
    assert code == 0, out
    assert (tmp_path / "pub.tar").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "pub.gz").stat().st_mode & 0o777 == 0o640


def test_graphviz_replaces_a_planted_link_rather_than_write_through_it(tmp_path: Path) -> None:
    """Finding 13: `--graphviz /tmp/x/graph.dot`, their link there to a root-only file: the
    graph overwrote the file (Path.write_text). Now the link itself is replaced."""
    victim = tmp_path / "victim"
    victim.write_text("orig\n")
    victim.chmod(0o600)
    home = theirs(tmp_path)
    tmp_path.chmod(0o755)
    as_nobody(home, "ln -s ../victim graph.dot")
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: dot\nresources:\n  noop: [{name: a}]\n")
    code, out = run_mgmt(
        [
            "run",
            "--converged-timeout=0",
            "--tmp-prefix",
            "--graphviz",
            f"{home}/graph.dot",
            str(graph),
        ]
    )
    assert code == 0, out
    assert victim.read_text() == "orig\n"
    assert not (home / "graph.dot").is_symlink()
    assert "noop[a]" in (home / "graph.dot").read_text()


def _exchange(a: Path, b: Path) -> None:
    """Swap the names `a` and `b` in one step (renameat2 RENAME_EXCHANGE), as a user swapping
    a directory for their link would: no moment without one at `b`."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def _daemon_of(tmp_path: Path, target: Path) -> list[str]:
    """The arguments of a daemon whose graph file manages `target` alone (content `f`)."""
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: planted\nresources:\n  file:\n    - {{name: f, path: {target}, content: "f\\n"}}\n'
    )
    return ["run", "--prefix", str(tmp_path / "prefix"), "yaml", str(graph)]


def _plant(top: Path, theirs_dir: Path) -> None:
    """Another user's link to their directory put in place of `top/d` at once (an exchange)."""
    link = top / "d.theirs"
    link.symlink_to(theirs_dir)
    os.lchown(link, NOBODY, NOBODY)
    _exchange(link, top / "d")


@pytest.mark.parametrize("held", ["", "f"], ids=["empty", "holding-f"])
async def test_a_file_refused_behind_a_planted_link_is_repaired_once_the_link_goes(
    tmp_path: Path, held: str
) -> None:
    """opsuser, 2026-12-06: a managed file's parent directory swapped for another user's link
    is refused (never written through), and the file's watch used to go through the link into
    their directory: its removal (or any change of the link) went unseen, and the file stayed
    failed until a reload or a restart (100 files of a 10,000-file graph here). The link is
    now not followed by the watch: its own name is watched in its directory; and where a
    file of that name is there (`held`), and the watch goes through it as through a link of
    root's, the link's deletion is seen as a watched directory's is."""
    theirs_dir = theirs(tmp_path)
    if held:
        as_nobody(theirs_dir, f"echo theirs > {held}")
    top = tmp_path / "top"
    target = top / "d" / "f"
    run = _daemon_of(tmp_path, target)
    async with Daemon(run) as daemon:
        await daemon.wait_log("converged")
        _plant(top, theirs_dir)
        await daemon.wait_log("refusing to follow the symlink")
        (top / "d").unlink()  # the link goes: the file is made again where it belongs
        await wait_path(target, has_content("f\n"))
        assert not (top / "d").is_symlink()
        assert sorted(os.listdir(theirs_dir)) == ([held] if held else [])
        if held:
            assert (theirs_dir / held).read_text() == "theirs\n"


async def test_a_planted_link_swapped_back_for_the_directory_is_seen(tmp_path: Path) -> None:
    """The planted link of the test above swapped back for root's directory (renamed over
    it, no deletion), whose file changed meanwhile: seen through the watch of the link's
    name, and the file repaired (before, the watch was on the link's target only)."""
    theirs_dir = theirs(tmp_path)
    top = tmp_path / "top"
    target = top / "d" / "f"
    run = _daemon_of(tmp_path, target)
    async with Daemon(run) as daemon:
        await daemon.wait_log("converged")
        _plant(top, theirs_dir)
        await daemon.wait_log("refusing to follow the symlink")
        (top / "d.theirs" / "f").write_text("drifted\n")  # root's directory, now unwatched
        _exchange(top / "d.theirs", top / "d")
        await wait_path(target, has_content("f\n"))
        assert list(theirs_dir.iterdir()) == []


async def test_a_file_below_a_planted_loop_is_repaired_once_the_loop_goes(tmp_path: Path) -> None:
    """A managed file's parent swapped for a link in a loop (`d -> d`, which anyone who can
    write its directory can plant): the watch failed on ELOOP (`watch failed: [Errno 40] Too
    many levels of symbolic links`) and the file stayed failed after the loop went, until a
    reload (review, 2026-12-06). Now the loop's name is watched, and its removal seen."""
    top = tmp_path / "top"
    target = top / "d" / "f"
    run = _daemon_of(tmp_path, target)
    async with Daemon(run) as daemon:
        await daemon.wait_log("converged")
        link = top / "d.loop"
        link.symlink_to(top / "d")
        _exchange(link, top / "d")
        await daemon.wait_log("file[f]: failed")
        (top / "d").unlink()  # the loop goes: the file is made again where it belongs
        await wait_path(target, has_content("f\n"))
        assert "watch failed" not in daemon.log


async def test_a_planted_link_there_at_the_start_is_seen_going(tmp_path: Path) -> None:
    """The planted link of the tests above (holding a file of the managed name) there when
    the agent starts: refused, and its removal seen (the file made where it belongs)."""
    theirs_dir = theirs(tmp_path)
    as_nobody(theirs_dir, "echo theirs > f")
    top = tmp_path / "top"
    top.mkdir()
    (top / "d").symlink_to(theirs_dir)
    os.lchown(top / "d", NOBODY, NOBODY)
    target = top / "d" / "f"
    run = _daemon_of(tmp_path, target)
    async with Daemon(run) as daemon:
        await daemon.wait_log("refusing to follow the symlink")
        await daemon.wait_log("converged")
        (top / "d").unlink()
        await wait_path(target, has_content("f\n"))
        assert (theirs_dir / "f").read_text() == "theirs\n"
