"""remote end to end: the real agent connects to a real sshd on 127.0.0.1 (tests/e2e/sshd.py)
by key, copies our zipapp and its program, and the remote agent converges a file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, Daemon, has_content, run_mgmt, wait_path
from tests.e2e.sshd import Sshd, sshd
from tests.mgmt.cluster.helpers import free_ports

pytestmark = pytest.mark.slow


def program(path: Path, server: Sshd, out: Path, greeting: str = "hello", **params: object) -> Path:
    """A program that runs itself on the "far" host through `remote`, where it writes a file."""
    lines = [
        f'remote "{server.url}" {{',
        f'\tssh_id => "{server.client_key}",',
        f'\thostkey => "{server.hostkey}",',
        f'\tpython => "{sys.executable}",',
        '\thostname => "far",',
    ]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else value
        lines.append(f"\t{key} => {text},")
    lines.append("}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.mcl").write_text(
        'if $hostname == "near" {\n'
        + "\n".join("\t" + line for line in lines)
        + "\n}\n"
        + 'if $hostname == "far" {\n'
        + f'\tfile "{out}" {{\n\t\tcontent => "{greeting} from ${{hostname}}\\n",\n\t}}\n}}\n'
    )
    return path / "main.mcl"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent, init, to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workdir(server: Sshd) -> Path:
    (found,) = (server.var_lib / "mgmt" / "remote").iterdir()
    return found


def example(path: Path, server: Sshd, out: Path) -> Path:
    """examples/remote.mcl, pointed at `server`, its /tmp/mgmt/ at out's directory."""
    text = (ROOT / "examples" / "remote.mcl").read_text()
    values = {"url": server.url, "key": server.client_key, "hostkey": server.hostkey}
    values["python"] = sys.executable
    for name, value in values.items():
        text, n = re.subn(rf'^\${name} = ".*"', f'${name} = "{value}"', text, flags=re.M)
        assert n == 1, name
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.mcl").write_text(text.replace("/tmp/mgmt/remote/", f"{out.parent}/"))
    return path / "main.mcl"


async def test_a_transient_remote_agent_converges_and_exits(tmp_path: Path) -> None:
    """examples/remote.mcl: its transient agent converges there, then exits; then here."""
    out = tmp_path / "out" / "hello"
    async with sshd(tmp_path / "sshd") as server:
        main = example(tmp_path / "src", server, out)
        args = ["run", "--hostname", "near", "--tmp-prefix", "--converged-timeout", "0"]
        code, log = await asyncio.to_thread(run_mgmt, [*args, "lang", str(main)], 120)
        assert code == 0, log
        assert out.read_text() == "hello from far\n"
        assert "copying mgmt.pyz" in log
        assert "the remote agent converged and exited" in log
        wd = workdir(server)
        assert oct(wd.stat().st_mode & 0o777) == oct(0o700)
        assert "converged:" in (wd / "mgmt.log").read_text()
        out.unlink()
        code, log = await asyncio.to_thread(run_mgmt, [*args, "lang", str(main)], 120)
        assert code == 0, log
        assert "mgmt.pyz is cached there" in log and "copied" not in log
        assert out.read_text() == "hello from far\n"


async def test_a_persistent_remote_agent_is_restarted_then_stopped(tmp_path: Path) -> None:
    out = tmp_path / "out" / "hello"
    out.parent.mkdir()
    async with sshd(tmp_path / "sshd") as server:
        main = program(
            tmp_path / "src", server, out, transient=False, tunnelled=False, install_deps=True
        )  # install_deps: its python has them, nothing to install
        args = ["run", "--hostname", "near", "--tmp-prefix", "lang", str(main)]
        async with Daemon(args) as daemon:
            await wait_path(out, has_content("hello from far\n"), 60)
            pid = int((workdir(server) / "pid").read_text())
            await daemon.wait_log("converged:", timeout=60)
            os.kill(pid, signal.SIGKILL)  # the remote agent dies: the watch sees it
            await daemon.wait_log("the remote agent exited", timeout=30)
            out.unlink()  # (the killed agent cannot write it again: the new one does)
            await daemon.wait_log("starting the remote agent", timeout=30, count=2)
            await wait_path(out, has_content("hello from far\n"), 60)  # the new one's work
            pid2 = int((workdir(server) / "pid").read_text())
            assert pid2 != pid and alive(pid2)
            # A new program (a new greeting there, the same graph here): restarted with it.
            program(
                tmp_path / "src",
                server,
                out,
                "hi",
                transient=False,
                tunnelled=False,
                install_deps=True,
            )
            await wait_path(out, has_content("hi from far\n"), 60)
            await daemon.wait_log("running another program than")
            pid2 = int((workdir(server) / "pid").read_text())
            daemon.signal(signal.SIGTERM)  # not transient: it runs on
            assert await daemon.wait(60) == 0
        assert alive(pid2)
        main = program(tmp_path / "src", server, out, state='"stopped"', tunnelled=False)
        args = ["run", "--hostname", "near", "--tmp-prefix", "--converged-timeout", "0"]
        code, log = await asyncio.to_thread(run_mgmt, [*args, "lang", str(main)], 120)
        assert code == 0, log
        assert "stopped the remote agent" in log
        assert not alive(pid2)


async def test_stopping_this_agent_stops_its_transient_remote_agent(tmp_path: Path) -> None:
    out = tmp_path / "out" / "hello"
    out.parent.mkdir()
    async with sshd(tmp_path / "sshd") as server:
        main = program(tmp_path / "src", server, out, tunnelled=False)  # transient, no timeout
        args = ["run", "--hostname", "near", "--tmp-prefix", "lang", str(main)]
        async with Daemon(args) as daemon:
            await wait_path(out, has_content("hello from far\n"), 60)
            pid = int((workdir(server) / "pid").read_text())
            assert alive(pid)
            program(tmp_path / "src", server, out, "hi", tunnelled=False)  # restarted with it
            await wait_path(out, has_content("hi from far\n"), 60)
            await daemon.wait_log("stopping the transient remote agent: the program changed")
            assert not alive(pid)
            pid = int((workdir(server) / "pid").read_text())
            daemon.signal(signal.SIGTERM)  # mgmt's transient: the remote agent stops with us
            assert await daemon.wait(60) == 0
            await daemon.wait_log("stopping the transient remote agent")
        assert not alive(pid)


async def test_a_tunnelled_remote_agent_joins_this_cluster(tmp_path: Path) -> None:
    """mgmt's remote1.mcl: the remote agent joins our cluster through the reverse tunnel, and
    what it writes there (kv) is read here (world.kvlookup)."""
    out = tmp_path / "out"
    out.mkdir()
    async with sshd(tmp_path / "sshd") as server:
        (tmp_path / "src").mkdir()
        main = tmp_path / "src" / "main.mcl"
        main.write_text(
            'import "world"\n$ns = "remote-test"\n'
            'if $hostname == "near" {\n'
            '\t$state = world.kvlookup($ns)["far"] <|> ""\n'
            f'\tfile "{out}/near" {{\n\t\tcontent => "far says ${{state}}\\n",\n\t}}\n'
            '\tif $state != "ok" {\n'
            f'\t\tremote "{server.url}" {{\n'
            f'\t\t\tssh_id => "{server.client_key}",\n'
            f'\t\t\thostkey => "{server.hostkey}",\n'
            f'\t\t\tpython => "{sys.executable}",\n'
            '\t\t\thostname => "far",\n'
            "\t\t\tconverger_timeout => 1,\n"
            '\t\t\ttunnel_addr => "127.0.0.1:0",\n'
            "\t\t}\n\t}\n}\n"
            'if $hostname == "far" {\n'
            '\tkv "ok@${hostname}" {\n\t\tkey => $ns,\n\t\tvalue => "ok",\n'
            "\t\tmapped => true,\n\t}\n}\n"
        )
        client, peer = free_ports(2)
        args = ["run", "--hostname", "near", "--tmp-prefix"]
        args += ["--client-urls", f"https://127.0.0.1:{client}"]
        args += ["--server-urls", f"https://127.0.0.1:{peer}", "lang", str(main)]
        async with Daemon(args) as daemon:
            await wait_path(out / "near", has_content("far says ok\n"), 90)
            await daemon.wait_log("tunnel: https://127.0.0.1:")
        log = (workdir(server) / "mgmt.log").read_text()
        assert "kv[ok@far]: remote-test (far's entry) set" in log  # in our cluster
        assert not (workdir(server) / "cluster-ca").exists()  # its key left with the agent


async def test_an_untrusted_host_key_is_one_line_and_nothing_runs(tmp_path: Path) -> None:
    out = tmp_path / "out" / "hello"
    async with sshd(tmp_path / "sshd") as server:
        other = Sshd(server.port, server.client_key, server.hostkey, server.var_lib, server.proc)
        other.hostkey = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        secret = f'"ssh://root:hunter2@127.0.0.1:{server.port}/"'  # never logged
        main = program(
            tmp_path / "src",
            other,
            out,
            tunnelled=False,
            remote=secret,
            allow_cleartext_password=True,
        )
        args = ["run", "--hostname", "near", "--tmp-prefix", "--max-runtime", "5"]
        code, log = await asyncio.to_thread(run_mgmt, [*args, "lang", str(main)], 120)
        assert code == 1, log
        assert "Traceback" not in log
        assert f"ssh://root@127.0.0.1:{server.port}/: Host key is not trusted" in log, log
        assert not (server.var_lib / "mgmt").exists()
        assert "hunter2" not in log


async def test_a_working_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    """/var/lib/mgmt/ owned by another user (mode 0755: not writable by others, but its owner
    may replace what is in it): nothing is copied there, nothing runs."""
    out = tmp_path / "out" / "hello"
    async with sshd(tmp_path / "sshd") as server:
        base = server.var_lib / "mgmt"
        base.mkdir(mode=0o755)
        os.chown(base, 65534, 65534)
        main = program(tmp_path / "src", server, out, tunnelled=False)
        args = ["run", "--hostname", "near", "--tmp-prefix", "--max-runtime", "5"]
        code, log = await asyncio.to_thread(run_mgmt, [*args, "lang", str(main)], 120)
        assert code == 1, log
        assert "failed: remote: /var/lib/mgmt is owned by uid 65534" in log, log
        assert "copying mgmt.pyz" not in log and not (base / "remote").exists()
