"""`mgmt deploy`'s thin path: through the local agent's deploy socket (mgmt.deploy.client and
mgmt.deploy.server), against real `mgmt run empty` agents on 127.0.0.1 (TLS, their etcd)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mgmt.deploy import client as thin
from mgmt.deploy.store import newest_id
from mgmt.listing import NAMED
from tests.e2e.helpers import ROOT, run_mgmt, wait_path
from tests.e2e.test_cluster_e2e import client_of, fleet
from tests.e2e.test_deploy_e2e import DeployHost, all_have, deploy, program, push
from tests.mgmt.deploy.keys import Key, make_key, trusted_file

PUSHED = "pushed through the deploy socket"


async def pushed_here(host: DeployHost, count: int) -> int:
    """Deploys the host's agent stored for a `mgmt deploy` through its socket, once it said
    `count` (its log is read meanwhile)."""
    assert host.daemon is not None
    await host.daemon.wait_log(PUSHED, count=count)
    return host.daemon.log.count(PUSHED)


async def newest(host: DeployHost) -> int:
    async with client_of(host) as client:
        return await newest_id(client)


def converse(
    path: Path, request: dict[str, Any], key: Path, between: Callable[[], object]
) -> list[dict[str, Any]]:
    """The client's protocol, spoken here (blocking): send `request`, and before signing the
    first record the agent sends, call `between()`; the agent's answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        thin.send(sock, request)
        answers = []
        while True:
            answers.append(thin.receive(sock))
            if "sign" not in answers[-1]:
                if "checked" not in answers[-1]:
                    return answers
                continue
            if len(answers) == 2:
                between()
            payload = base64.b64decode(answers[-1]["sign"])
            thin.send(sock, {"signature": thin._signature(payload, str(key))})


def request_of(source: Path, key: Path, **changes: object) -> dict[str, Any]:
    """What the client sends to push `lang source/`."""
    name, base, files = thin.read_files("lang", f"{source}/")
    return {
        "frontend": "lang",
        "path": f"{source}/",
        "name": name,
        "base": base,
        "files": {k: base64.b64encode(v).decode() for k, v in files.items()},
        "key": thin._fingerprint(str(key)),
        "force": False,
        "keep": 0,
        "max_graph_size": 0,
        "seeds": "",
        **changes,
    }


def raw(path: Path, message: object) -> dict[str, Any]:
    """One message to the socket, as root; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        data = json.dumps(message).encode()
        sock.sendall(len(data).to_bytes(4, "big") + data)
        return thin.receive(sock)


async def through_the_launcher(host: DeployHost, args: list[str]) -> None:
    launcher = ROOT / ".venv" / "bin" / "mgmt"
    assert launcher.read_text().startswith("#!") and " -SP\n" in launcher.read_text()
    base = ["deploy", "--seeds", host.url, "--prefix", str(host.prefix), *args]
    env = {**os.environ, "MGMT_PERFIX": "/elsewhere"}  # a typo: said, as `mgmt run` says it
    done = await asyncio.to_thread(
        subprocess.run,
        [str(launcher), *base],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0 and "(through the local agent)" in done.stderr, done
    warning = "mgmt: warning: MGMT_PERFIX is not a variable mgmt reads (ignored): did you mean "
    assert done.stderr.count(warning + "MGMT_PREFIX?\n") == 1, done


async def same_bundle_both_ways(host: DeployHost, key: Path, prog: Path) -> None:
    """A `lang FILE.mcl` program with a module, files/ and an .mcl file nothing imports, and
    a `yaml FILE` beside it, pushed through the agent and directly: the same hashes."""
    (prog / "lib").mkdir(parents=True)
    (prog / "files").mkdir()
    (prog / "files" / "motd").write_text("hello\n")
    (prog / "lib" / "greet.mcl").write_text('$who = "world"\n')
    (prog / "unused.mcl").write_text("not carried\n")
    (prog / "site.mcl").write_text(
        'import "lib/greet.mcl" as greet\nprint "p" {\n\tmsg => "hi " + $greet.who,\n}\n'
    )
    (prog / "g.yaml").write_text("graph: g\nresources:\n  noop:\n    - name: n\n")
    for target in (["lang", str(prog / "site.mcl")], ["yaml", str(prog / "g.yaml")]):
        hashes = []
        for extra in ([], ["--direct"]):
            code, text = await deploy(host, *extra, "--sign-key", str(key), *target)
            assert code == 0 and ("through the local agent" in text) == (not extra), text
            hashes.append(text.split(", ")[-1].split()[0])
        assert hashes[0] == hashes[1], hashes


async def bad_programs_refused_as_directly(host: DeployHost, src: Path, args: list[str]) -> None:
    """Bad programs, pushed through the agent: refused with the lines the direct path prints
    (the operator's paths), exit 2, nothing stored; one problem, then a program and the module
    it imports with 25 each: one list capped once (NAMED lines, then `and N more`, last)."""
    bad = '$x{} = 1 + "a"\n'
    many = "".join(bad.format(i) for i in range(25))
    (src / "mod.mcl").write_text(many)
    for main, lines, first in (
        ('file "/tmp/x" {\n\tcontent => 42,\n}\n', 1, "main.mcl:2:"),
        ('import "mod.mcl"\n' + many, NAMED + 1, "mod.mcl:1:"),
    ):
        (src / "main.mcl").write_text(main)
        code, text = await deploy(host, *args)
        direct = await deploy(host, "--direct", *args)
        assert (code, text) == direct and code == 2, (text, direct)
        assert text.count("\n") == lines and f"{src}/{first}" in text, text
        assert text.endswith("(nothing deployed)\n") and text.count("more problems") == lines // 21
        assert await newest(host) == 1
    (src / "mod.mcl").unlink()


async def without_an_agent(
    hosts: list[DeployHost], alone: Path, src: Path, args: list[str]
) -> None:
    """`mgmt deploy` with a prefix holding a copy of the first host's credentials and no
    agent: the direct path stores it, deploy 5."""
    shutil.copytree(hosts[0].prefix / "cluster-tls", alone / "cluster-tls")
    code, text = await asyncio.to_thread(
        run_mgmt, ["deploy", "--seeds", hosts[0].url, "--prefix", str(alone), *args]
    )
    assert code == 0 and "deploy 5: lang main.mcl" in text and "agent" not in text, text


async def refused_before_stored(host: DeployHost, untrusted: Key, src: Path) -> None:
    """A push the hosts would refuse (a key not in their trusted keys; unsigned, which they do
    not allow): the agent refuses it before it is stored, exit 1; --direct stores it (nothing
    asks a host first), and the hosts refuse it."""
    before = await newest(host)
    for how in (["--sign-key", str(untrusted.private)], ["--unsigned"]):
        code, text = await deploy(host, *how, "lang", f"{src}/")
        assert code == 1 and f"this host ({host.name}) would not run it" in text, text
        assert ("not signed by a key in" if len(how) == 2 else "unsigned (hosts run") in text
        assert "refused, nothing stored" in text and await newest(host) == before, text
    args = ["--direct", "--sign-key", str(untrusted.private), "lang", f"{src}/"]
    code, text = await deploy(host, *args)
    assert code == 0 and await newest(host) == before + 1, text


@pytest.mark.slow
async def test_a_push_through_the_local_agent_is_checked_signed_and_stored_as_directly(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    alice = make_key(keys, "alice")
    trusted = trusted_file(keys, alice)
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    hosts = [
        DeployHost(f"h{i}", tmp_path, extra_args=["--trusted-keys", str(trusted)]) for i in (1, 2)
    ]
    h1, h2 = hosts
    async with fleet(hosts):  # type: ignore[arg-type]
        await h1.start()
        await h2.start(seeds=[h1])
        # 1: through h1's agent (its socket in its prefix): signed here, every host runs it.
        said = await push(h1, alice, program(src, out, "v1"), "--timings")
        assert "deploy 1: lang main.mcl, " in said, said
        await all_have(out, hosts, "v1")
        assert await pushed_here(h1, 1) == 1
        # 2: a bad program: refused by the agent with the lines the direct path prints.
        args = ["--sign-key", str(alice.private), "lang", f"{src}/"]
        await bad_programs_refused_as_directly(h1, src, args)
        # 3: a race: another deploy is stored while the agent waits for the caller (an
        # unsigned push, in the raw protocol): refused, its parent is no longer the newest.
        program(src, out, "v3")
        sock = h2.prefix / thin.SOCKET
        meanwhile = ["deploy", "--seeds", h1.url, "--prefix", str(h1.prefix), "--direct", *args]

        def other() -> None:
            assert run_mgmt(meanwhile)[0] == 0

        answers = await asyncio.to_thread(
            converse, sock, request_of(src, alice.private), alice.private, other
        )
        assert answers[0] == {"checked": True} and "sign" in answers[1]
        assert "refused: its parent 1 is no longer the newest deploy" in answers[2]["error"]
        assert answers[2]["code"] == 1 and await newest(h1) == 2
        # ... --force signs it again, on the new parent, and puts it on top.
        program(src, out, "v4")
        request = request_of(src, alice.private, force=True)
        answers = await asyncio.to_thread(converse, sock, request, alice.private, other)
        assert [next(iter(a)) for a in answers] == ["checked", "sign", "sign", "done"]
        assert answers[-1]["done"].startswith("deploy 4: lang main.mcl"), answers
        await all_have(out, hosts, "v4")
        assert await pushed_here(h2, 1) == 1
        # 4: no agent in the prefix (a copy of h1's credentials alone): the direct path.
        await without_an_agent(hosts, tmp_path / "alone", program(src, out, "v5"), args)
        await all_have(out, hosts, "v5")
        assert await pushed_here(h1, 1) == 1 and await pushed_here(h2, 1) == 1
        # 5: `lang FILE.mcl` with a module, files/ and files its imports do not read: the
        # agent bundles what the direct path bundles.
        await same_bundle_both_ways(h1, alice.private, tmp_path / "prog")
        # 6: --seeds of another cluster: the agent does not push it (the direct path does,
        # and says the other cluster cannot be reached).
        code, text = await deploy(h1, "--seeds", "https://127.0.0.1:9", *args)
        assert code == 1 and "no etcd member reachable" in text, text
        # 7: through install.sh's launcher, Python without `site` (-S): the same thin path.
        program(src, out, "v7")
        await through_the_launcher(h1, args)
        await all_have(out, hosts, "v7")
        # 8: a deploy the hosts would refuse: refused before it is stored.
        await refused_before_stored(h1, make_key(keys, "bob"), src)


@pytest.mark.slow
async def test_the_deploy_socket_refuses_another_user(tmp_path: Path) -> None:
    """Another uid that reaches the socket (here: the prefix and the socket opened to it on
    purpose) is refused by its peer credentials; nothing is stored."""
    alice = make_key(tmp_path / "keys", "alice")
    h1 = DeployHost("h1", tmp_path, extra_args=["--allow-unsigned-deploys"])
    src = tmp_path / "src"
    program(src, tmp_path / "out", "v1")
    async with fleet([h1]):  # type: ignore[list-item]
        await h1.start()
        sock = h1.prefix / thin.SOCKET
        await wait_path(sock, lambda p: p.exists(), 15)
        assert sock.stat().st_mode & 0o777 == 0o600
        assert h1.prefix.stat().st_mode & 0o777 == 0o700
        os.chmod(h1.prefix, 0o711)
        os.chmod(sock, 0o666)
        request = request_of(src, alice.private)
        script = (
            "import json, os, socket, sys\n"
            "from mgmt.deploy import client\n"
            "os.chdir(os.path.dirname(sys.argv[1]))  # its parents are root's alone\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(30)\n"
            "s.connect(client.SOCKET)\n"
            "try:\n"
            "    client.send(s, json.loads(sys.stdin.read()))\n"
            "except BrokenPipeError:  # refused before its request was read\n"
            "    pass\n"
            "print(json.dumps(client.receive(s)))\n"
        )
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script, str(sock)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"fallback": "uid 65534 may not use the agent's socket"}
        assert h1.daemon is not None
        await h1.daemon.wait_log("deploy socket: refused uid 65534")
        assert await newest(h1) == 0 and await pushed_here(h1, 0) == 0
        # Root, but not the client's requests: one line each, nothing stored, still serving.
        assert await asyncio.to_thread(raw, sock, {"frontend": "lang"}) == {
            "fallback": "not a request: 'force'"
        }
        with pytest.raises(thin.Fallback, match="closed the connection"):
            await asyncio.to_thread(raw, sock, [1, 2])
        # A bad `keep` or no `force`: refused before the check (after a `checked`, the client
        # says the deploy may have been stored), nothing left running.
        for bad, says in (({"keep": "x"}, "invalid literal"), ({"force": None}, "'force'")):
            broken = {
                k: v for k, v in request_of(src, alice.private, **bad).items() if v is not None
            }
            answer = await asyncio.to_thread(raw, sock, broken)
            assert answer["fallback"].startswith("not a request: ") and says in answer["fallback"]
        await h1.daemon.wait_log("deploy socket: a bad request (ValueError: not a message)")
        assert await newest(h1) == 0
