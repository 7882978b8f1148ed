"""Deploys end to end: real `mgmt run empty` agents on 127.0.0.1 (TLS, their own etcd), real
`mgmt deploy` commands, real SSH keys. See docs/deploys.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mgmt.deploy import DeployError
from mgmt.deploy.status import STATUS, SUMMARY, host_statuses
from mgmt.deploy.store import IDS, NEWEST, Record, id_key, newest_id
from mgmt.listing import NAMED
from tests.e2e.helpers import Daemon, Notified, has_content, run_mgmt, small_fs, wait_path
from tests.e2e.test_cluster_e2e import Host, client_of, fleet
from tests.mgmt.cluster.certs import CA
from tests.mgmt.cluster.helpers import free_ports
from tests.mgmt.deploy.keys import Key, make_key, trusted_file


@dataclass
class DeployHost(Host):
    """A host running deploys: `mgmt run ... empty` (or `tail`: `--deploy lang DIR`)."""

    tail: list[str] = field(default_factory=lambda: ["empty"])

    def args(self, seeds: list[Host]) -> list[str]:
        return [*super().args(seeds)[:-2], *self.tail]

    async def start(self, seeds: list[Host] = ()) -> Daemon:  # type: ignore[assignment]
        """Started, and in the cluster (its first graph waits for the cluster)."""
        daemon = await super().start(seeds)
        # The first graph waits for the cluster (up to 10 s when it is unreachable).
        await daemon.wait_log("converged:", timeout=30)
        return daemon

    @property
    def prefix(self) -> Path:
        return self.root / self.name / "prefix"


def seeding(tmp_path: Path, signer: Key, src: Path, trusts: Path, *extra: str) -> DeployHost:
    """h1, whose `run --deploy ... lang SRC/` seeds the cluster with `src` signed by `signer`;
    it trusts the keys of the file `trusts`."""
    return DeployHost(
        "h1",
        tmp_path,
        extra_args=[*extra, "--trusted-keys", str(trusts)],
        tail=["--deploy", "--sign-key", str(signer.private), "lang", f"{src}/"],
    )


def program(directory: Path, out: Path, version: str) -> Path:
    """A `lang DIR/` program: per host, a file that never changes and one holding `version`."""
    directory.mkdir(parents=True, exist_ok=True)
    base = str(out) + "/${sys.hostname()}"
    (directory / "main.mcl").write_text(
        'import "sys"\n'
        f'file "{base}.keep" {{\n\tcontent => "kept\\n",\n}}\n'
        f'file "{base}.ver" {{\n\tcontent => "{version}\\n",\n}}\n'
    )
    return directory


async def deploy(via: DeployHost, *args: str) -> tuple[int, str]:
    """`mgmt deploy` with `via`'s certificate, against its etcd."""
    base = ["deploy", "--seeds", via.url, "--prefix", str(via.prefix)]
    return await asyncio.to_thread(run_mgmt, [*base, *args])


async def start_serving(hosts: list[DeployHost]) -> None:
    """Start the hosts (the first makes the cluster, the others join it), then wait until each
    one's own etcd member serves clients (a host is in the cluster as a client first:
    `mgmt deploy --seeds` its URL before its member starts is refused)."""
    for i, host in enumerate(hosts):
        await host.start(seeds=hosts[:1] if i else [])
    for host in hosts:
        assert host.daemon is not None
        await host.daemon.wait_log(f"etcd member {host.name} serving clients", timeout=60)


async def push(via: DeployHost, key: Key, source: Path, *flags: str) -> str:
    code, out = await deploy(via, *flags, "--sign-key", str(key.private), "lang", f"{source}/")
    assert code == 0, out
    return out


async def push_timed(via: DeployHost, key: Key, source: Path) -> list[str]:
    """`push` with --timings: the steps the command says it timed, in the order they ended."""
    out = await push(via, key, source, "--timings")
    steps = re.search(r"timings \(ms since the process started\): (.*)", out)
    assert steps is not None, out
    return [step.split()[0] for step in steps.group(1).split(", ")]


async def all_have(out: Path, hosts: list[DeployHost], version: str) -> None:
    for host in hosts:
        await wait_path(out / f"{host.name}.ver", has_content(f"{version}\n"), 30)


def keeps(deploy_id: int) -> Callable[[Path], bool]:
    """A host's kept record (`<prefix>/deploy/current.json`) is deploy `deploy_id`'s."""

    def check(path: Path) -> bool:
        try:
            return Record.decode(path.read_bytes(), str(path)).id == deploy_id
        except (OSError, DeployError):
            return False

    return check


async def statuses_say(via: DeployHost, expected: list[tuple[str, int, bool]]) -> None:
    """Wait (on a watch of the status keys) until every host's (name, running, converged)
    in the cluster is `expected`."""
    async with client_of(via) as client:
        changed = asyncio.Event()
        unsubscribe = await client.subscribe(STATUS.encode(), changed.set, prefix=True)
        try:
            async with asyncio.timeout(15):
                while True:
                    changed.clear()
                    rows = await host_statuses(client)
                    if [(r.host, r.running, r.converged) for r in rows] == expected:
                        return
                    await changed.wait()
        finally:
            await unsubscribe()


@pytest.mark.slow
async def test_deploy_swap_refusal_rollback_and_catch_up_on_three_hosts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    alice, mallory = make_key(keys, "alice"), make_key(keys, "mallory")
    trusted = trusted_file(keys, alice)
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    hosts = [
        DeployHost(f"h{i}", tmp_path, extra_args=["--trusted-keys", str(trusted)])
        for i in (1, 2, 3)
    ]
    h1, h2, h3 = hosts
    async with fleet(hosts):  # type: ignore[arg-type]
        await start_serving(hosts)  # pushed through h2 and h3 below
        # 1: pushed once, to any host: every host runs it.
        await push(h2, alice, program(src, out, "v1"))
        await all_have(out, hosts, "v1")
        for host in hosts:  # written in parallel with .ver: maybe a moment later
            await wait_path(out / f"{host.name}.keep", has_content("kept\n"), 15)
        kept = {h.name: os.stat(out / f"{h.name}.keep").st_ino for h in hosts}
        # 2: swapped in live: the unchanged resource keeps running (and its file). With
        # --timings, the command says when each of its steps ended; each host, how long it
        # took from seeing the deploy to running it.
        said = await push_timed(h1, alice, program(src, out, "v2"))
        assert sorted(said) == ["checked", "closed", "connected", "imports", "signed", "stored"]
        assert said[0] == "imports" and said[-3:] == ["signed", "stored", "closed"], said
        await all_have(out, hosts, "v2")
        for host in hosts:
            assert host.daemon is not None
            await host.daemon.wait_log("ms after this host saw it)")
            await host.daemon.wait_log("graph swap: 1 kept, 1 stopped, 1 started")
            assert os.stat(out / f"{host.name}.keep").st_ino == kept[host.name]
        # 3: signed by a key no host trusts: refused everywhere, v2 keeps running (--direct:
        # through h1's agent it is refused before it is stored, test_deploy_thin_e2e).
        await push(h1, mallory, program(src, out, "evil"), "--direct")
        for host in hosts:
            assert host.daemon is not None
            await host.daemon.wait_log("refused deploy 3: not signed by a key in")
        assert all((out / f"{h.name}.ver").read_text() == "v2\n" for h in hosts)
        # 4: a rollback to 1 is a new deploy with 1's content.
        code, text = await deploy(h3, "--sign-key", str(alice.private), "--rollback", "1")
        assert code == 0 and "deploy 4 (the content of deploy 1)" in text, text
        await all_have(out, hosts, "v1")
        # 5: h3 is down when it is pushed; back, it catches up.
        assert await h3.stop() == 0
        await push(h1, alice, program(src, out, "v5"))
        await all_have(out, [h1, h2], "v5")
        assert (out / "h3.ver").read_text() == "v1\n"
        h3.client_port, h3.peer_port = free_ports(2)  # its old ones may be taken meanwhile
        await h3.start(seeds=[h1])
        await all_have(out, hosts, "v5")
        assert h3.daemon is not None
        await h3.daemon.wait_log("restarting with deploy 4, kept from the last run")
        await h3.daemon.wait_log("running deploy 5")
        await statuses_say(h1, [(h.name, 5, True) for h in hosts])
        # The history and each host's status.
        code, listed = await deploy(h1, "--list")
        assert code == 0, listed
        lines = listed.splitlines()
        assert [line.split()[0] for line in lines] == ["ID", "1", "2", "3", "4", "5"]
        assert "(rollback to 1)" in lines[4]
        assert lines[5].split()[-1] == "h1,h2,h3"
        code, status = await deploy(h1, "--status")
        assert code == 0, status
        rows = {line.split()[0]: line.split() for line in status.splitlines()[1:]}
        assert sorted(rows) == ["h1", "h2", "h3"]
        assert all(row[1:5] == ["yes", "5", "5", "yes"] for row in rows.values()), status


@pytest.mark.slow
async def test_run_deploy_seeds_the_cluster_and_together_waits_for_every_host(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    alice, mallory = make_key(keys / "a", "alice"), make_key(keys / "m", "mallory")
    trusts_alice = trusted_file(keys / "a", alice)
    trusts_mallory = trusted_file(keys / "m", mallory)
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    together = ["--deploy-switch", "together"]
    h1 = seeding(tmp_path, alice, program(src, out, "v1"), trusts_alice, *together)
    h2 = DeployHost("h2", tmp_path, extra_args=[*together, "--trusted-keys", str(trusts_mallory)])
    async with fleet([h1, h2]):  # type: ignore[list-item]
        await h1.start()
        await all_have(out, [h1], "v1")  # its program became deploy 1
        assert h1.daemon is not None
        await h1.daemon.wait_log("this program is the cluster's first deploy (1)")
        d2 = await h2.start(seeds=[h1])
        await d2.wait_log("refused deploy 1: not signed by a key in")
        # h2 cannot take 2 either: h1 has it ready and waits.
        await push(h1, alice, program(src, out, "v2"))
        await h1.daemon.wait_log("deploy 2 is ready; switching together once h2 has it too")
        assert (out / "h1.ver").read_text() == "v1\n"
        # h2 trusts alice too now (the file is read at every deploy): 3 switches on both.
        trusts_mallory.write_text(alice.allowed() + mallory.allowed())
        await push(h1, alice, program(src, out, "v3"))
        await all_have(out, [h1, h2], "v3")


async def test_run_deploy_does_not_seed_what_this_host_would_refuse(tmp_path: Path) -> None:
    """`run --deploy --sign-key KEY` with KEY not in the host's own trusted keys: nothing is
    stored (the host would refuse it at once), one error line says why."""
    keys = tmp_path / "keys"
    alice, mallory = make_key(keys, "alice"), make_key(keys, "mallory")
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    h1 = seeding(tmp_path, mallory, program(src, out, "v1"), trusted_file(keys, alice))
    async with fleet([h1]):  # type: ignore[list-item]
        daemon = await h1.start()
        await daemon.wait_log(
            "not seeding the cluster with this program: this host would not run it: not "
            "signed by a key in"
        )
        async with client_of(h1) as client:
            assert await newest_id(client) == 0
        assert not (out / "h1.ver").exists()


@pytest.mark.slow
async def test_deploy_directory_is_the_deploys_own_copy(tmp_path: Path) -> None:
    """mgmt's directory0.mcl: deploy.directory("/files/foo/") is the directory of the deploy
    (extracted under the host's prefix), a file resource's source."""
    keys = tmp_path / "keys"
    alice = make_key(keys / "a", "alice")
    out, src = tmp_path / "out", tmp_path / "src"
    (src / "files/foo/sub").mkdir(parents=True)
    (src / "files/foo/a").write_text("a\n")
    (src / "files/foo/sub/b").write_text("b\n")
    (src / "main.mcl").write_text(
        'import "deploy"\n'
        f'file "{out}/foo/" {{\n\tstate => "exists",\n'
        '\tsource => deploy.directory("/files/foo/"),\n\trecurse => true,\n}\n'
        f'file "{out}/where" {{\n\tcontent => deploy.directory("/files/foo/"),\n}}\n'
    )
    h1 = seeding(tmp_path, alice, src, trusted_file(keys / "a", alice))
    async with fleet([h1]):  # type: ignore[list-item]
        await h1.start()
        await wait_path(out / "foo/sub/b", has_content("b\n"), 30)
        assert (out / "foo/a").read_text() == "a\n"
        # Another resource: not necessarily written when foo's tree is (it raced under load);
        # written whole, by a rename.
        await wait_path(out / "where", Path.is_file, 30)
        where = Path((out / "where").read_text())
        assert where.is_relative_to(h1.prefix / "deploy") and str(where).endswith("/files/foo")


async def test_a_bad_program_or_flag_is_refused_before_the_cluster_is_asked(
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    seeds = ["--insecure-cluster", "--seeds", f"http://127.0.0.1:{port}"]
    bad = tmp_path / "bad.mcl"
    bad.write_text('file "/tmp/x" {\n\tcontent => 42,\n}\n')
    code, text = await asyncio.to_thread(
        run_mgmt, ["deploy", *seeds, "--unsigned", "lang", str(bad)]
    )
    assert code == 2 and text.count("\n") == 1 and f"{bad}:2:" in text, text
    good = tmp_path / "g.yaml"
    good.write_text("graph: g\n")
    code, text = await asyncio.to_thread(run_mgmt, ["deploy", *seeds, "yaml", str(good)])
    assert code == 2 and "--sign-key" in text, text
    code, text = await asyncio.to_thread(
        run_mgmt, ["deploy", *seeds, "--sign-key", str(good), "yaml", str(good)]
    )
    assert code == 2 and "not an SSH key" in text, text
    code, text = await asyncio.to_thread(
        run_mgmt, ["deploy", *seeds, "--unsigned", "yaml", str(good)]
    )
    assert code == 1 and "no etcd member reachable" in text, text
    code, text = await asyncio.to_thread(
        run_mgmt, ["run", "--tmp-prefix", "--trusted-keys", str(tmp_path / "none"), "empty"]
    )
    assert code == 2 and "--trusted-keys: cannot read" in text, text
    code, text = await asyncio.to_thread(
        run_mgmt, ["run", "--tmp-prefix", "--deploy", "--allow-unsigned-deploys", str(bad)]
    )
    assert code == 2 and f"{bad}:2:" in text and "etcd" not in text, text


async def test_a_deploys_problems_are_one_capped_list(tmp_path: Path) -> None:
    """A program and the module it imports, 25 problems each: `mgmt deploy` lists them as
    `mgmt check` does, one list capped once (NAMED lines, then `and N more`, last)."""
    (port,) = free_ports(1)
    seeds = ["--insecure-cluster", "--seeds", f"http://127.0.0.1:{port}"]
    bad = '$x{} = 1 + "a"\n'
    (tmp_path / "mod.mcl").write_text("".join(bad.format(i) for i in range(25)))
    main = tmp_path / "main.mcl"
    main.write_text('import "mod.mcl"\n' + "".join(bad.format(i) for i in range(25)))
    code, text = await asyncio.to_thread(
        run_mgmt, ["deploy", *seeds, "--unsigned", "lang", str(main)]
    )
    lines = text.splitlines()
    assert code == 2 and len(lines) == NAMED + 1, text
    assert [n for n, line in enumerate(lines) if "more problems" in line] == [NAMED], text
    assert lines[-1] == f"mgmt: and {50 - NAMED} more problems (nothing deployed)", text
    code, checked = await asyncio.to_thread(run_mgmt, ["check", str(main)])
    assert code == 2 and checked.splitlines() == [*lines[:-1], f"and {50 - NAMED} more problems"]


async def test_a_member_of_another_ca_is_one_line(tmp_path: Path) -> None:
    """A seed whose certificate is not from our CA (another cluster's, a wrong --prefix): the
    error, one line in words naming our CA, exit 1 (gRPC's core prints nothing of its own)."""
    ours, theirs = CA(tmp_path / "ours"), CA(tmp_path / "theirs", "another CA")
    client, server = ours.leaf("operator"), theirs.leaf("h1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    tls = ["--tls-ca", str(ours.path), "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    async with listener:
        for args in (["deploy", "--list"], ["status", "--cluster"]):
            args += ["--seeds", f"https://127.0.0.1:{port}", *tls]
            code, text = await asyncio.to_thread(run_mgmt, args, 30)
            assert code == 1 and text.count("\n") == 1, text
            assert "no etcd member reachable" in text and "did not sign" in text, text
            assert f"the CA in {ours.path}" in text and "VERIFY_FAILED" not in text, text


def member_and_client(tmp_path: Path) -> tuple[Key, Path, Path, DeployHost, DeployHost]:
    """alice's key; out/ (made) and src/; h1, the cluster's only member, and h2, a client of
    it (--no-server): both trust alice."""
    keys = tmp_path / "keys"
    alice = make_key(keys, "alice")
    trusted = ["--trusted-keys", str(trusted_file(keys, alice))]
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    h1 = DeployHost("h1", tmp_path, extra_args=trusted)
    h2 = DeployHost("h2", tmp_path, extra_args=[*trusted, "--no-server"])
    return alice, out, src, h1, h2


@pytest.mark.slow
async def test_a_host_without_its_cluster_keeps_and_restarts_with_its_deploy(
    tmp_path: Path,
) -> None:
    alice, out, src, h1, h2 = member_and_client(tmp_path)
    async with fleet([h1, h2]):  # type: ignore[list-item]
        await h1.start()
        await h2.start(seeds=[h1])
        await push(h1, alice, program(src, out, "v1"))
        await all_have(out, [h1, h2], "v1")
        await h1.kill()  # the only etcd member: h2 has no cluster now
        (out / "h2.ver").unlink()
        await all_have(out, [h2], "v1")  # still enforced
        # Kept once its graph settled (at most 1 s after the switch): killed before, a host
        # restarts with the deploy before it (here none; docs/deploys.md).
        await wait_path(h2.prefix / "deploy" / "current.json", keeps(1), 30)
        await h2.kill()
        (out / "h2.ver").unlink()
        d2 = await h2.start(seeds=[h1])  # the cluster is still gone
        await all_have(out, [h2], "v1")
        await d2.wait_log("restarting with deploy 1, kept from the last run")
        # Its running line says how long after the read of the prefix, as a new deploy's says
        # after it was seen (tester6's finding 10: it said nothing).
        assert re.search(r"running deploy 1 \(.*, \d+ ms after this host saw it\)", d2.log)


def collecting(directory: Path, out: Path) -> Path:
    """A `lang DIR/` program: per host, a local file, an exported one (`out/shared/<host>`) and
    a `collect` (with `Meta:reverse`) of every exported file under `out/shared/` that
    `collect.res` names (tester9's program)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.mcl").write_text(
        'import "sys"\nimport "world/collect"\nimport "iter"\nimport "strings"\n'
        f'$shared = "{out}/shared/"\n'
        f'file "{out}/local-${{sys.hostname()}}" {{\n\tcontent => "local\\n",\n}}\n'
        'file "${shared}${sys.hostname()}" {\n\tcontent => "from ${sys.hostname()}\\n",\n'
        '\tMeta:export => ["*"],\n\tMeta:hidden => true,\n}\n'
        '$wanted = iter.filter(collect.res("file"), func($r) { '
        "strings.has_prefix($r->name, $shared) })\n"
        "collect file $wanted {\n\tMeta:hidden => false,\n\tMeta:reverse => true,\n}\n"
    )
    return directory


def kept_exports(count: int) -> Callable[[Path], bool]:
    """A host's kept exported records (`<prefix>/cluster-exported.json`) are `count`."""

    def check(path: Path) -> bool:
        try:
            return len(json.loads(path.read_text())["records"]) == count
        except (OSError, ValueError, KeyError):
            return False

    return check


@pytest.mark.slow
async def test_a_host_restarted_without_its_cluster_collects_what_it_collected(
    tmp_path: Path,
) -> None:
    """tester9's finding: a host restarted while its cluster did not answer, with a kept deploy
    whose program reads `collect.res`, ran nothing of it (a program error: no graph) and said
    "converged: all 0 resources". It runs the graph it ran before, with the exported records
    it last read (kept in its prefix), says so, and collects the cluster's once it answers."""
    alice, out, src, h1, h2 = member_and_client(tmp_path)
    shared = out / "shared"
    async with fleet([h1, h2]):  # type: ignore[list-item]
        await h1.start()
        await h2.start(seeds=[h1])
        await push(h1, alice, collecting(src, out))
        for name in ("h1", "h2"):
            await wait_path(shared / name, has_content(f"from {name}\n"), 30)
        await wait_path(h2.prefix / "cluster-exported.json", kept_exports(2), 30)
        await wait_path(h2.prefix / "deploy" / "current.json", keeps(1), 30)
        await h1.kill()  # the only etcd member: h2 has no cluster now
        await h2.kill()
        for path in (shared / "h1", out / "local-h2"):
            path.unlink()
        d2 = await h2.start(seeds=[h1])  # the cluster is still gone
        await wait_path(out / "local-h2", has_content("local\n"), 30)
        await wait_path(shared / "h1", has_content("from h1\n"), 30)  # collected, as before
        await wait_path(shared / "h2", has_content("from h2\n"), 30)  # not reversed
        await d2.wait_log("the cluster does not answer: collecting the 2 exported resources")
        assert "converged: all 0 resources" not in d2.log and "program error" not in d2.log
        await h1.start()
        await d2.wait_log("the cluster answers: collecting its exported resources", timeout=60)


async def _program_errors(via: DeployHost, expected: dict[str, bool]) -> None:
    """Wait (on a watch of the summaries) until each host's row has a program error or not."""
    async with client_of(via) as client:
        changed = asyncio.Event()
        unsubscribe = await client.subscribe(SUMMARY.encode(), changed.set, prefix=True)
        try:
            async with asyncio.timeout(15):
                while True:
                    changed.clear()
                    rows = await host_statuses(client)
                    if {r.host: bool(r.program_error) for r in rows} == expected:
                        return
                    await changed.wait()
        finally:
            await unsubscribe()


async def test_a_deploy_that_cannot_run_is_a_failure_in_every_status(tmp_path: Path) -> None:
    """Deploy 2 checks, but its function fails when run (`os.readfile` of a missing file): the
    host runs deploy 1's graph still, and says so: its log, `mgmt status` (exit 1), `mgmt
    deploy --status` and `mgmt status --cluster` (its row `failed`, exit 1). Deploy 3, which
    runs, clears it."""
    keys = tmp_path / "keys"
    alice = make_key(keys, "alice")
    out, src, missing = tmp_path / "out", tmp_path / "src", tmp_path / "missing"
    out.mkdir()
    h1 = DeployHost("h1", tmp_path, extra_args=["--trusted-keys", str(trusted_file(keys, alice))])
    async with fleet([h1]):  # type: ignore[list-item]
        await start_serving([h1])
        await push(h1, alice, program(src, out, "v1"))
        await all_have(out, [h1], "v1")
        ver = f'content => os.readfile("{missing}")'  # checks; fails when run
        (src / "main.mcl").write_text(
            (src / "main.mcl").read_text().replace('content => "v1\\n"', ver)
        )
        (src / "main.mcl").write_text('import "os"\n' + (src / "main.mcl").read_text())
        await push(h1, alice, src)
        assert h1.daemon is not None
        await h1.daemon.wait_log("(deploy 1's graph still runs)")
        await h1.daemon.wait_log("running deploy 2 (")
        assert "it has no graph yet: deploy 1's graph still runs" in h1.daemon.log
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(h1.prefix)])
        assert code == 1 and "program error: deploy 2: " in text, text
        assert f"os.readfile: cannot read {missing}" in text, text
        await _program_errors(h1, {"h1": True})
        for command in (["--status"], []):
            if command:
                code, text = await deploy(h1, *command)
            else:
                args = ["status", "--cluster", "--seeds", h1.url, "--prefix", str(h1.prefix)]
                code, text = await asyncio.to_thread(run_mgmt, args)
            assert code == 1 and "program: deploy 2: " in text, text
        code, text = await asyncio.to_thread(
            run_mgmt,
            ["status", "--cluster", "--json", "--seeds", h1.url, "--prefix", str(h1.prefix)],
        )
        assert code == 1 and '"state": "failed"' in text, text
        assert (out / "h1.ver").read_text() == "v1\n"
        await push(h1, alice, program(src, out, "v3"))
        await all_have(out, [h1], "v3")
        await _program_errors(h1, {"h1": False})
        code, text = await deploy(h1, "--status")
        assert code == 0, text


async def test_a_first_deploy_that_changes_no_graph_ends_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first deploy whose graph is what already runs (an empty program: a host runs an empty
    graph until its first deploy) makes nothing diverge: the waiting line was replaced only at
    the next convergence after a divergence, so `waiting for the first deploy` stayed, in the
    log and in systemd's STATUS=, for as long as that deploy ran. The deploy's graph, applied,
    ends it whatever it changed."""
    notify = Notified(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    keys = tmp_path / "keys"
    alice = make_key(keys, "alice")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.mcl").write_text("# nothing to run on this host yet\n")
    h1 = DeployHost("h1", tmp_path, extra_args=["--trusted-keys", str(trusted_file(keys, alice))])
    async with fleet([h1]):  # type: ignore[list-item]
        await start_serving([h1])
        assert h1.daemon is not None
        await notify.says("STATUS=converged: waiting for the first deploy (none runs yet)")
        await push(h1, alice, src)
        await h1.daemon.wait_log("running deploy 1 (lang")
        await h1.daemon.wait_log("converged: all 0 resources in the desired state")
        await notify.says("STATUS=converged: all 0 resources in the desired state")
        assert h1.daemon.log.count("waiting for the first deploy") == 1, h1.daemon.log
    notify.close()


async def test_a_host_without_a_deploy_says_it_waits_for_the_first(tmp_path: Path) -> None:
    """Before its first deploy, an agent of deploys says it waits for one (not "converged:
    all 0 resources"), once; the deploy's graph then converges as any graph does. Its local
    `mgmt status` says which deploy runs, and a newer one refused (exit 1, as the cluster's)."""
    keys = tmp_path / "keys"
    alice, mallory = make_key(keys, "alice"), make_key(keys, "mallory")
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    h1 = DeployHost("h1", tmp_path, extra_args=["--trusted-keys", str(trusted_file(keys, alice))])
    async with fleet([h1]):  # type: ignore[list-item]
        await start_serving([h1])
        assert h1.daemon is not None
        await h1.daemon.wait_log("converged: waiting for the first deploy (none runs yet)")
        status = ["status", "--prefix", str(h1.prefix)]
        code, text = await asyncio.to_thread(run_mgmt, status)
        assert code == 0 and "\ndeploy: none yet, waiting for the first\n" in text, text
        await push(h1, mallory, program(src, out, "evil"), "--direct")
        await h1.daemon.wait_log("refused deploy 1: not signed by a key in")
        code, text = await asyncio.to_thread(run_mgmt, status)
        refused = "deploy: none yet, waiting for the first; refused deploy 1: not signed by"
        assert code == 1 and refused in text, text
        await push(h1, alice, program(src, out, "v1"))
        try:
            await h1.daemon.wait_log("converged: all 2 resources in the desired state")
        except TimeoutError:  # once in CI (2026-12-06), not reproduced: what the agent says
            code, text = await asyncio.to_thread(run_mgmt, status)
            pytest.fail(f"no converged line; `mgmt status` says ({code}):\n{text}")
        assert "0 resources" not in h1.daemon.log
        assert h1.daemon.log.count("waiting for the first deploy") == 1, h1.daemon.log
        code, text = await asyncio.to_thread(run_mgmt, status)
        assert code == 0 and "\ndeploy: 2\n" in text and "refused" not in text, text
        code, text = await asyncio.to_thread(run_mgmt, [*status, "--json"])
        deploy_doc = json.loads(text)["deploy"]
        assert deploy_doc == {"running": 2, "warning": "", "refused": 0, "error": ""}, text


@dataclass
class Served:
    """What `alice_on_h1` made: the host, the keys by name, its trusted keys file, its
    program's output directory and the program's source directory."""

    h1: DeployHost
    keys: dict[str, Key]
    trusted: Path
    out: Path
    src: Path


@contextlib.asynccontextmanager
async def alice_on_h1(tmp_path: Path, *others: str) -> AsyncIterator[Served]:
    """h1, a cluster of its own trusting alice (the keys of `others` are made, not trusted),
    running deploy 1 by alice: `program` "v1" in src/, writing to out/."""
    keys = tmp_path / "keys"
    made = {name: make_key(keys, name) for name in ("alice", *others)}
    trusted = trusted_file(keys, made["alice"])
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    h1 = DeployHost("h1", tmp_path, extra_args=["--trusted-keys", str(trusted)])
    async with fleet([h1]):  # type: ignore[list-item]
        await start_serving([h1])
        await push(h1, made["alice"], program(src, out, "v1"))
        await all_have(out, [h1], "v1")
        yield Served(h1, made, trusted, out, src)


async def test_a_program_whose_graph_no_host_takes_is_refused_before_it_is_stored(
    tmp_path: Path,
) -> None:
    """tester6's findings 1 and 2: two resources managing one file, and a graph past
    --max-resources, were stored (mgmt check passed them) and every host refused them. Now
    the push is refused (exit 2, the statement's line:col, nothing stored), through the local
    agent and directly. A graph a check cannot know (its path from os.system, which a check
    does not run) is stored; the host refuses it at the statements and says which deploy's
    graph still runs."""
    async with alice_on_h1(tmp_path) as served:
        h1, alice, out, src = served.h1, served.keys["alice"], served.out, served.src
        main = src / "main.mcl"
        kept = main.read_text() + f'file "{out}/shared" {{\n\tcontent => "a\\n",\n}}\n'
        twice = 'file "twice" {\n\tpath => PATH,\n\tcontent => "b\\n",\n}\n'
        main.write_text(kept + twice.replace("PATH", f'"{out}/shared"'))
        key = ["--sign-key", str(alice.private), "lang", f"{src}/"]
        for how in ([], ["--direct"]):
            code, text = await deploy(h1, *how, *key)
            assert code == 2, text
            assert f"{main}:11:1: file[twice] and file[{out}/shared] both manage" in text, text
            assert f"(also declared at {main}:8:1)" in text and "nothing deployed" in text, text
        main.write_text(kept)
        limited = ["--max-resources", "2", *key]  # the agent checks with it (its own: 200,000)
        code, text = await deploy(h1, *limited)
        assert (code, text) == await deploy(h1, "--direct", *limited)
        assert code == 2 and f"{main}:8:1: the program declares more than 2 resources" in text
        code, text = await deploy(h1, "--list")
        assert code == 0 and "\n2 " not in text, text
        system = f'$p = os.system("echo {out}/shared")\n'
        main.write_text(f'import "os"\n{kept}{system}{twice.replace("PATH", "$p")}')
        await push(h1, alice, src)
        assert h1.daemon is not None
        await h1.daemon.wait_log("(deploy 1's graph still runs)")
        assert f"main.mcl:13:1: file[twice] and file[{out}/shared]" in h1.daemon.log
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(h1.prefix)])
        assert code == 1 and "(deploy 1's graph still runs)" in text, text
        main.write_text(kept)  # within the flag's limit: through the agent (it went direct)
        code, text = await deploy(h1, "--max-resources", "3", *key)
        assert code == 0 and "deploy 3: lang main.mcl" in text, text
        assert "(through the local agent)" in text, text


async def test_a_rollback_no_host_would_run_is_refused_before_it_is_stored(
    tmp_path: Path,
) -> None:
    """tester6's finding 7: `--rollback` signed by a key no host trusts was stored (exit 0)
    and refused by every host; a push is checked by the local agent before it is stored, and
    now a rollback is too (exit 1, nothing stored). Without an agent to ask, it is stored as
    before (the hosts decide)."""
    async with alice_on_h1(tmp_path, "mallory") as served:
        h1, alice, out, src = served.h1, served.keys["alice"], served.out, served.src
        mallory = served.keys["mallory"]
        await push(h1, alice, program(src, out, "v2"))
        await all_have(out, [h1], "v2")
        code, text = await deploy(h1, "--sign-key", str(mallory.private), "--rollback", "1")
        assert code == 1, text
        assert "deploy 3 refused, nothing stored: this host (h1) would not run it: " in text
        assert "--direct" not in text, text
        code, listed = await deploy(h1, "--list")
        assert [line.split()[0] for line in listed.splitlines()] == ["ID", "1", "2"], listed
        code, text = await deploy(h1, "--sign-key", str(alice.private), "--rollback", "1")
        assert code == 0 and "deploy 3 (the content of deploy 1)" in text, text
        await all_have(out, [h1], "v1")


async def test_a_deploy_refused_for_the_trusted_keys_runs_once_the_file_is_fixed(
    tmp_path: Path,
) -> None:
    """tester6's finding 8: a deploy refused for the trusted keys file (its mode, a key not in
    it yet) stayed refused until SIGHUP or a newer deploy. The host watches the file: fixed,
    the refused deploy is verified again and runs."""
    async with alice_on_h1(tmp_path, "bob") as served:
        h1, alice, out, src = served.h1, served.keys["alice"], served.out, served.src
        bob, trusted = served.keys["bob"], served.trusted
        assert h1.daemon is not None
        trusted.chmod(0o666)  # others may write it: every deploy is refused
        await push(h1, alice, program(src, out, "v2"), "--direct")
        await h1.daemon.wait_log("refused deploy 2: ")
        assert f"(a change of {trusted} or SIGHUP verifies it again)" in h1.daemon.log
        trusted.chmod(0o644)
        await all_have(out, [h1], "v2")  # (then the log line: read apart)
        await h1.daemon.wait_log(f"{trusted} changed: verifying deploy 2 again")
        await push(h1, bob, program(src, out, "v3"), "--direct")  # bob is not trusted yet
        await h1.daemon.wait_log("refused deploy 3: ")
        new = trusted.with_name("trusted_keys.new")  # replaced atomically, as an operator would
        new.write_text(trusted.read_text() + bob.allowed())
        new.rename(trusted)
        await all_have(out, [h1], "v3")


def fill(directory: Path) -> Path:
    """A file in `directory` written until its file system is full."""
    filler = directory / "filler"
    # Unbuffered: a buffered file's close() flushed what the full disk refused again, and
    # raised ENOSPC outside the suppress (a flaky failure of the test, not of the agent).
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    return filler


async def test_a_deploy_refused_for_a_full_disk_runs_once_there_is_room(tmp_path: Path) -> None:
    """tester9's finding: a deploy that could not be extracted (the file system full) stayed
    refused until SIGHUP or a newer deploy, and its line pointed at the trusted keys. It is
    tried again with a backoff, said once, by its cause; it runs once there is room."""
    async with alice_on_h1(tmp_path) as served:
        h1, alice, out, src = served.h1, served.keys["alice"], served.out, served.src
        assert h1.daemon is not None
        with small_fs(h1.prefix / "deploy", "1m"):
            filler = fill(h1.prefix / "deploy")
            await push(h1, alice, program(src, out, "v2"), "--direct")
            await h1.daemon.wait_log("could not prepare deploy 2: ")
            line = next(x for x in h1.daemon.lines if "could not prepare deploy 2" in x)
            assert "the file system is full" in line and "Errno" not in line, line
            assert "keeping deploy 1" in line and "trusted" not in line, line
            filler.unlink()
            await all_have(out, [h1], "v2")
            await wait_path(h1.prefix / "deploy" / "current.json", keeps(2))
            assert sum("could not prepare deploy 2" in x for x in h1.daemon.lines) == 1


async def test_a_replayed_record_is_listed_under_its_key_and_compacted_by_it(
    tmp_path: Path,
) -> None:
    """tester6's finding 10: an old record written under a newer id (hosts refuse it) was
    listed under the record's id, unmarked, and `--keep` never deleted its key (it deleted
    the key of the record's id, absent). Now the listing shows the key's id, flagged, and
    `--keep` compacts that key."""
    async with alice_on_h1(tmp_path) as served:
        h1, alice, out, src = served.h1, served.keys["alice"], served.out, served.src
        await push(h1, alice, program(src, out, "v2"))
        await all_have(out, [h1], "v2")
        async with client_of(h1) as client:
            first = await client.get(id_key(1).encode())
            assert first is not None
            await client.put(id_key(3).encode(), first)
            await client.put(NEWEST.encode(), b"3")
        assert h1.daemon is not None
        await h1.daemon.wait_log("refused deploy 3: ")
        line = next(x for x in h1.daemon.lines if "refused deploy 3: " in x)
        assert line.endswith("(SIGHUP verifies it again)"), line  # not the keys: not about them
        code, listed = await deploy(h1, "--list")
        assert code == 0, listed
        rows = [line.split() for line in listed.splitlines()]
        assert [row[0] for row in rows] == ["ID", "1", "2", "3"], listed
        assert "(REPLAYED: the record of deploy 1)" in listed.splitlines()[3], listed
        await push(h1, alice, program(src, out, "v4"), "--keep", "1")
        await all_have(out, [h1], "v4")
        async with client_of(h1) as client:
            kept, _ = await client.get_prefix(IDS.encode())
        assert sorted(kept) == [id_key(4).encode()], sorted(kept)
