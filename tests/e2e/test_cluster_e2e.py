"""The cluster end to end: real `mgmt` agents on 127.0.0.1, each with its own etcd ports and
prefix. Every agent's etcd pid is read from its log and checked gone at the end (no orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.world import Exported
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import LEAVING
from mgmt.cluster.identity import HOSTS
from mgmt.cluster.pki import TLSFiles, create_ca, mint
from mgmt.cluster.world import EtcdWorld
from mgmt.deploy.status import SUMMARY
from tests.e2e.helpers import ROOT, Daemon, has_content, run_mgmt, wait_logs, wait_path
from tests.mgmt.cluster.certs import CA
from tests.mgmt.cluster.helpers import free_ports, pid_alive, wait_pid_gone

TIMINGS = ["--etcd-heartbeat-interval", "10", "--etcd-election-timeout", "100"]
PID = re.compile(r"etcd member (\S+) serving clients on \S+ \(pid (\d+)\)")


def exporter(shared: Path, host: str, content: str, local: Path | None = None) -> str:
    """A graph exporting `<shared>/<host>` and collecting `<shared>/`, plus a local file."""
    text = f'graph: {host}\nresources:\n  file:\n    - name: "@@{shared}/{host}"\n'
    text += f'      content: "{content}\\n"\n'
    if local is not None:
        text += f'    - name: {local}\n      content: "mine\\n"\n'
    return text + f"collect:\n  - {{kind: file, pattern: {shared}/}}\n"


async def summary_written(
    client: EtcdClient, host: str, says: Callable[[dict[str, Any]], bool] = lambda _doc: True
) -> None:
    """Wait until `host`'s summary is in the cluster (and `says` it): what says, once it stops
    cleanly, that it left (the leader then removes its member)."""
    summary, written = (SUMMARY + host).encode(), asyncio.Event()
    unsubscribe = await client.subscribe(summary, written.set)
    try:
        async with asyncio.timeout(15):
            while True:
                written.clear()  # before the read: a write after it wakes the wait
                data = await client.get(summary)
                if data is not None and says(json.loads(data)):
                    return
                await written.wait()
    finally:
        await unsubscribe()


async def wait_any_log(hosts: list[Host], pattern: str, timeout: float = 15) -> re.Match[str]:
    """The first match of `pattern` in any of the hosts' logs (waiting on their new lines)."""
    regex = re.compile(pattern)
    daemons = [h.daemon for h in hosts if h.daemon is not None]

    def first() -> re.Match[str] | None:
        for daemon in daemons:
            for line in daemon.lines:
                if match := regex.search(line):
                    return match
        return None

    return await wait_logs(daemons, first, timeout)


async def wait_promoted(hosts: list[Host], count: int, timeout: float = 15) -> None:
    """Wait until `count` of `hosts` each said that its own member is now a voting member.
    Not the leader's "hN is now a voting member" lines: the raft leadership (and with it the
    agent that promotes) may move on the way (a CI run under load: h1's etcd lost it to h2,
    and h2's agent promoted h3; h1's second line never came)."""
    daemons = [h.daemon for h in hosts if h.daemon is not None]

    def promoted() -> bool | None:
        said = "this host's member is now a voting member"
        return sum(any(said in line for line in d.lines) for d in daemons) >= count or None

    await wait_logs(daemons, promoted, timeout)


@dataclass
class Host:
    """One agent: its ports, prefix, graph file (or mcl program), graphviz output and process."""

    name: str
    root: Path
    scheme: str = "https"
    frontend: str = "yaml"  # or "lang": `graph` is then an mcl program
    extra_args: list[str] = field(default_factory=list)
    daemon: Daemon | None = None
    etcd_pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client_port, self.peer_port = free_ports(2)
        (self.root / self.name).mkdir(parents=True, exist_ok=True)
        create_ca(self.ca_dir)  # the test's cluster CA: every host gets a copy

    @property
    def ca_dir(self) -> Path:
        return self.root / "cluster-ca"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def graph(self) -> Path:
        return self.root / self.name / ("main.mcl" if self.frontend == "lang" else "graph.yaml")

    @property
    def dot(self) -> Path:
        return self.root / self.name / "graph.dot"

    def args(self, seeds: list[Host]) -> list[str]:
        args = [
            "run",
            "--hostname",
            self.name,
            "--prefix",
            str(self.root / self.name / "prefix"),
            "--client-urls",
            self.url,
            "--server-urls",
            f"{self.scheme}://127.0.0.1:{self.peer_port}",
            "--graphviz",
            str(self.dot),
            *TIMINGS,
            *self.extra_args,
        ]
        if self.scheme == "https" and "--tls-ca" not in self.extra_args:
            args += ["--cluster-ca-dir", str(self.ca_dir)]
        if seeds:
            args += ["--seeds", ",".join(s.url for s in seeds)]
        return [*args, self.frontend, str(self.graph)]

    async def start(self, seeds: list[Host] = ()) -> Daemon:  # type: ignore[assignment]
        if self.daemon is not None:  # its last run's end (one that exited of itself too)
            await self.daemon.__aexit__(None, None, None)
        self.daemon = Daemon(self.args(list(seeds)))
        await self.daemon.__aenter__()
        return self.daemon

    def pids(self) -> list[int]:
        """Every etcd this host's agent said it started."""
        assert self.daemon is not None
        found = [int(m.group(2)) for line in self.daemon.lines if (m := PID.search(line))]
        self.etcd_pids += [p for p in found if p not in self.etcd_pids]
        return self.etcd_pids

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.daemon is not None
        self.pids()
        return await self.daemon.stop(sig)  # killed if it does not exit in time

    async def kill(self) -> None:
        assert self.daemon is not None and self.daemon.proc is not None
        self.pids()
        self.daemon.proc.kill()
        await self.daemon.proc.wait()
        await self.daemon.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def fleet(hosts: list[Host]) -> AsyncIterator[list[Host]]:
    """Stop every host still running afterwards; then no etcd any of them started may live."""
    try:
        yield hosts
    except BaseException:
        for host in hosts:  # shown by pytest for a failing test
            print(f"----- {host.name} -----\n{host.daemon.log if host.daemon else ''}")
        raise
    finally:
        errors: list[BaseException] = []
        for host in hosts:  # each stopped (or killed), whatever became of the others
            if host.daemon and host.daemon.proc and host.daemon.proc.returncode is None:
                try:
                    await host.stop()
                except Exception as err:
                    errors.append(err)
            elif host.daemon:  # one that exited of itself: its end too (its $TMPDIR removed)
                await host.daemon.__aexit__(None, None, None)
        if errors:
            raise errors[0]
        for host in hosts:
            for pid in host.etcd_pids:
                await wait_pid_gone(pid)
                assert not pid_alive(pid), f"{host.name}: etcd {pid} left behind"


async def wait_dot(host: Host, predicate: Callable[[str], bool], timeout: float = 10) -> None:
    """Wait (inotify) until the host's current graph (its --graphviz file) satisfies predicate."""

    def check(path: Path) -> bool:
        try:
            return predicate(path.read_text())
        except OSError:
            return False

    await wait_path(host.dot, check, timeout)


def holds(*names: str) -> Callable[[str], bool]:
    return lambda dot: all(f'"file[{n}]"' in dot for n in names)


def lacks(name: str) -> Callable[[str], bool]:
    return lambda dot: f'"file[{name}]"' not in dot


@contextlib.asynccontextmanager
async def client_of(
    *hosts: Host, tls: TLSFiles | None = None, **kw: str
) -> AsyncIterator[EtcdClient]:
    if tls is None and hosts[0].scheme == "https":  # a certificate of the test's cluster CA
        root = hosts[0].root
        tls = mint(hosts[0].ca_dir, root / "checker", "checker", ["127.0.0.1"])
    client = EtcdClient([h.url for h in hosts], tls=tls, call_timeout=0.5, **kw)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.close()


async def test_a_plain_run_starts_no_etcd_and_imports_no_etcd_client(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n    - name: {tmp_path}/out\n      content: x\n"
    )
    probe = textwrap.dedent(
        f"""
        import sys
        from mgmt.cli import main
        code = main(["run", "--converged-timeout=0", "--tmp-prefix", {str(graph)!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "aetcd")
                       or m.startswith(("mgmt.cluster.", "resources.kv")))
        print("HEAVY", heavy, "CODE", code)
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        probe,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert "HEAVY [] CODE 0" in out.decode(), out.decode()
    assert "etcd" not in out.decode().replace("HEAVY", "")


async def test_kv_cron_run_starts_and_stops_its_etcd(tmp_path: Path) -> None:
    client_port, peer_port = free_ports(2)
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run",
            "--converged-timeout=0",
            "--max-runtime=60",
            "--hostname",
            "cron",
            "--prefix",
            str(tmp_path / "prefix"),
            *TIMINGS,
            "--client-urls",
            f"https://127.0.0.1:{client_port}",
            "--server-urls",
            f"https://127.0.0.1:{peer_port}",
            "yaml",
            str(ROOT / "examples/kv.yaml"),
        ],
    )
    assert code == 0, out
    assert "kv[app-version]: app/version set" in out
    assert "kv[seen]: app/seen (cron's entry) set" in out
    (match,) = PID.findall(out)
    await wait_pid_gone(int(match[1]))
    assert not pid_alive(int(match[1]))
    # The one-member cluster keeps its data: a second run finds everything in place.
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run",
            "--converged-timeout=0",
            "--max-runtime=60",
            "--hostname",
            "cron",
            "--prefix",
            str(tmp_path / "prefix"),
            *TIMINGS,
            "--client-urls",
            f"https://127.0.0.1:{client_port}",
            "--server-urls",
            f"https://127.0.0.1:{peer_port}",
            "yaml",
            str(ROOT / "examples/kv.yaml"),
        ],
    )
    assert code == 0, out
    assert " engine: " not in out, out


async def test_bad_cluster_flags_exit_2(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\n")
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run",
            "--converged-timeout=0",
            "--tmp-prefix",
            "--seeds",
            "http://10.1.2.3:2379",
            str(graph),
        ],
    )
    assert code == 2 and "--seeds: 'http://10.1.2.3:2379': plain http lets any local" in out
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run",
            "--converged-timeout=0",
            "--tmp-prefix",
            "--seeds",
            "https://127.0.0.1:9",
            str(graph),
        ],
    )
    assert code == 2 and "--seeds: joining a cluster needs its credentials" in out, out
    assert len(out.strip().splitlines()) == 1  # one line, no traceback
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run",
            "--converged-timeout=0",
            "--tmp-prefix",
            "--client-urls=https://127.0.0.1:2379",  # a cluster flag: checked before a start
            "--cluster-user",
            "root",
            str(graph),
        ],
    )
    assert code == 2 and "--cluster-password-file" in out


async def test_unreachable_seeds_do_not_hold_up_the_local_graph(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    graph = tmp_path / "g.yaml"
    graph.write_text(exporter(tmp_path / "shared", "lonely", "x", local=tmp_path / "local"))
    create_ca(tmp_path / "ca")
    started = asyncio.get_running_loop().time()
    code, out = await asyncio.to_thread(
        run_mgmt,
        [
            "run", "--converged-timeout=0", "--max-runtime=30", "--tmp-prefix", "--no-server",
            "--seeds", f"https://127.0.0.1:{port}", "--cluster-ca-dir", str(tmp_path / "ca"),
            *TIMINGS, str(graph),
        ],
    )  # fmt: skip
    took = asyncio.get_running_loop().time() - started
    assert code == 0, out
    assert (tmp_path / "local").read_text() == "mine\n"
    assert "no etcd member reachable" in out
    # It converged and exited on that (--converged-timeout), not at --max-runtime; the bound
    # only tells a hang (5 s was exceeded at load 25: 4.4 s from a shell at load 20).
    assert "converged for 0s, exiting" in out
    assert took < 25, f"{took:.1f}s"


@pytest.mark.slow
async def test_the_seeds_three_host_demo(tmp_path: Path) -> None:
    """Three agents started one by one; exports everywhere (how long each took: printed);
    edits follow; a clean stop withdraws the export (the file stays)."""
    shared = tmp_path / "shared"
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2, 3)]
    contents = {h.name: secrets.token_hex(8) for h in hosts}
    for host in hosts:
        host.graph.write_text(exporter(shared, host.name, contents[host.name]))
    paths = [f"{shared}/{h.name}" for h in hosts]
    async with fleet(hosts):
        for i, host in enumerate(hosts):
            await host.start(seeds=hosts[:1] if i else [])
            started = asyncio.get_running_loop().time()
            for peer in hosts[: i + 1]:
                await wait_dot(peer, holds(*paths[: i + 1]))
            for peer in hosts[: i + 1]:
                await wait_path(shared / peer.name, has_content(contents[peer.name] + "\n"), 10)
            took = asyncio.get_running_loop().time() - started
            print(f"{host.name} took {took:.2f}s to reach every graph")  # (a figure, not a test:
            # 3 s was asserted, and failed at load 20-30 in CI: 4.95 s; the waits bound a hang)
        h1, h2, h3 = hosts
        assert h1.daemon is not None and h3.daemon is not None
        await wait_promoted([h2, h3], 2)
        async with client_of(h1, h2, h3) as client:
            names = sorted(m.name for m in await client.members())
            assert names == ["h1", "h2", "h3"]
        # Change one host's exported content: every copy follows.
        h2.graph.write_text(exporter(shared, "h2", "changed"))
        await wait_path(shared / "h2", has_content("changed\n"), 5)
        await h3.daemon.wait_log("graph swap: 2 kept, 1 stopped, 1 started")
        # A clean stop withdraws h1's export from the others' graphs; the file stays.
        assert await h1.stop() == 0
        assert "this host's member left the cluster" in h1.daemon.log
        for peer in (h2, h3):
            await wait_dot(peer, lacks(paths[0]))
        assert (shared / "h1").read_text() == contents["h1"] + "\n"
        async with client_of(h2, h3) as client:
            assert sorted(m.name for m in await client.members()) == ["h2", "h3"]
            records = await EtcdWorld(client, "t").res_list()
            assert sorted(r.host for r in records) == ["h2", "h3"]
        for pid in h1.etcd_pids:
            await wait_pid_gone(pid)


async def test_a_withdrawn_export_with_reverse_is_undone(tmp_path: Path) -> None:
    """meta: {reverse: true} travels with the export: when it leaves a collector's graph (its
    host stopped cleanly), the collector undoes what it did (here: the file it created goes)."""
    shared = tmp_path / "shared"
    h1, h2 = Host("h1", tmp_path, extra_args=["--ideal-cluster-size", "1"]), Host("h2", tmp_path)
    h1.graph.write_text(f"graph: h1\ncollect:\n  - {{kind: file, pattern: {shared}/}}\n")
    h2.graph.write_text(
        f'graph: h2\nresources:\n  file:\n    - name: "@@{shared}/h2"\n'
        f'      content: "undo me\\n"\n      meta: {{reverse: true}}\n'
    )
    async with fleet([h1, h2]):
        await h1.start()
        await h2.start(seeds=[h1])
        await wait_path(shared / "h2", has_content("undo me\n"), 10)
        assert await h2.stop() == 0
        await wait_path(shared / "h2", lambda p: not p.exists(), 10)


@pytest.mark.parametrize("when", ["nominated", "serving"])
async def test_a_member_stopped_as_it_starts_leaves_the_cluster(tmp_path: Path, when: str) -> None:
    """h2, nominated, is stopped while its etcd member starts (or once it serves): it leaves,
    so h1 keeps its quorum. (It left only once its member served: promoted by the leader in
    between, two voters with one gone refused every write, seen once in CI; that window is
    too narrow to hit at will: this test guards the two sides of it.)"""
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path)
    for host in (h1, h2):
        host.graph.write_text(f"graph: {host.name}\nresources: {{}}\n")
    async with fleet([h1, h2]):
        await h1.start()
        assert h1.daemon is not None
        await h1.daemon.wait_log("converged", timeout=20)
        await h2.start(seeds=[h1])
        assert h2.daemon is not None
        await h2.daemon.wait_log(
            "nominated; starting an etcd member" if when == "nominated" else "serving clients",
            timeout=30,
        )
        assert await h2.stop() == 0
        async with client_of(h1) as client, asyncio.timeout(30):
            await client.put(b"/test/after", b"written")  # a quorum
            assert [m.name for m in await client.members()] == ["h1"]


@pytest.mark.slow
async def test_kill_9_of_a_core_member_and_its_return(tmp_path: Path) -> None:
    """Ideal size 3 among four agents: kill -9 the first (leader) one; the rest re-elect, keep
    serving, lose no exported record and promote the fourth; the killed one comes back."""
    shared = tmp_path / "shared"
    hosts = [Host(f"h{i}", tmp_path) for i in (1, 2, 3, 4)]
    for host in hosts:
        host.graph.write_text(exporter(shared, host.name, f"from {host.name}"))
    h1, h2 = hosts[:2]
    h1.extra_args = ["--ideal-cluster-size", "3"]
    paths = [f"{shared}/{h.name}" for h in hosts]
    async with fleet(hosts):
        await h1.start()
        for host in hosts[1:]:
            await host.start(seeds=[h1])
        for host in hosts:
            await wait_dot(host, holds(*paths))
        assert h1.daemon is not None
        await wait_promoted(hosts[1:], 2)
        async with client_of(h1) as client:
            members = sorted(m.name for m in await client.members())
        # Which two volunteers the leader nominates first depends on when they registered.
        assert len(members) == 3 and "h1" in members
        (spare,) = [h for h in hosts if h.name not in members]
        survivors = [h for h in hosts if h.name in members and h is not h1]
        assert spare.daemon is not None
        h1_pids = h1.pids()
        await h1.kill()  # kill -9: its etcd dies with it (PR_SET_PDEATHSIG)
        for pid in h1_pids:
            await wait_pid_gone(pid)
        # The rest keep serving: an edit on h2 reaches the others.
        h2.graph.write_text(exporter(shared, "h2", "after the kill"))
        await wait_path(shared / "h2", has_content("after the kill\n"), 10)
        # h1's member is replaced by the spare volunteer (the bound is a hang's: the test
        # asserted < 15 s too, a wall-clock threshold tighter than this wait, on any load).
        await spare.daemon.wait_log("this host's member is now a voting member", timeout=20)
        core = sorted([spare, *survivors], key=lambda h: h.name)
        async with client_of(*core) as client:
            assert sorted(m.name for m in await client.members()) == [h.name for h in core]
            records = await EtcdWorld(client, "t").res_list()
            assert sorted(r.host for r in records) == ["h1", "h2", "h3", "h4"]  # none lost
        # h1 comes back (through a seed): it rejoins as a client and volunteer.
        await h1.start(seeds=[core[0]])
        h1.graph.write_text(exporter(shared, "h1", "h1 is back"))
        await wait_path(shared / "h1", has_content("h1 is back\n"), 10)
        await wait_dot(h1, holds(*paths))
        async with client_of(*core) as client:
            assert sorted(m.name for m in await client.members()) == [h.name for h in core]
            # Shrinking the ideal size removes a member.
            await client.put(b"/_mgmt/ideal_cluster_size", b"2")
            match = await wait_any_log(core, r"for an ideal 2: removing (h\d)")
            victim = next(h for h in hosts if h.name == match.group(1))
            assert victim.daemon is not None
            # Its agent hears it first from its nomination's deletion or from its etcd.
            await wait_any_log([victim], "no longer nominated|not one any more", timeout=15)
            assert len(await client.members()) == 2


@pytest.mark.slow
async def test_losing_the_cluster_never_stops_local_convergence(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path, extra_args=["--no-server"])
    local = tmp_path / "local"
    h1.graph.write_text(exporter(shared, "h1", "one"))
    h2.graph.write_text(exporter(shared, "h2", "two", local=local))
    async with fleet([h1, h2]):
        await h1.start()
        await h2.start(seeds=[h1])
        await wait_dot(h2, holds(f"{shared}/h1", f"{shared}/h2"))
        await wait_path(local, has_content("mine\n"))
        await h1.kill()
        for pid in h1.pids():
            await wait_pid_gone(pid)
        local.unlink()  # the local graph is still enforced without a cluster
        await wait_path(local, has_content("mine\n"))
        assert h2.daemon is not None
        await h2.daemon.wait_log("no etcd member reachable")
        # h1 comes back from its data: h2 reconnects and collects again.
        await h1.start()
        await h2.daemon.wait_log("again", timeout=15)
        h1.graph.write_text(exporter(shared, "h1", "one again"))
        await wait_path(shared / "h1", has_content("one again\n"), 10)
        assert "nominated" not in h2.daemon.log  # --no-server: never a member


@pytest.mark.slow
async def test_tls_and_authentication_end_to_end(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    password = "e2e-" + secrets.token_hex(8)
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    shared = tmp_path / "shared"
    hosts = []
    for name in ("h1", "h2"):
        leaf = ca.leaf(name)
        args = [
            "--tls-ca",
            str(ca.path),
            "--tls-cert",
            str(leaf.cert),
            "--tls-key",
            str(leaf.key),
            "--cluster-user",
            "root",
            "--cluster-password-file",
            str(secret),
            "--verbose",
        ]
        host = Host(name, tmp_path, scheme="https", extra_args=args)
        host.graph.write_text(exporter(shared, name, f"secure {name}"))
        hosts.append(host)
    h1, h2 = hosts
    async with fleet(hosts):
        await h1.start()
        await h2.start(seeds=[h1])
        for host in hosts:
            await wait_dot(host, holds(f"{shared}/h1", f"{shared}/h2"))
        assert h1.daemon is not None and h2.daemon is not None
        await h1.daemon.wait_log("h2 is now a voting member")
        leaf = ca.leaf("checker")
        tls = TLSFiles(ca.path, leaf.cert, leaf.key)
        async with client_of(h1, h2, tls=tls, user="root", password=password) as client:
            records = await EtcdWorld(client, "t").res_list()
            assert sorted(r.host for r in records) == ["h1", "h2"]
            assert all(isinstance(r, Exported) for r in records)
    for host in hosts:
        assert host.daemon is not None
        assert password not in host.daemon.log
        assert "authentication enabled" in h1.daemon.log  # type: ignore[union-attr]


async def test_a_hostile_record_is_refused_and_nothing_is_applied(tmp_path: Path) -> None:
    """The issue's probe, with a real etcd: a record written straight into etcd (as etcdctl
    put did) names a file under the collected pattern but points its path elsewhere, setuid.
    The collector refuses it (a warning naming the host and key) and applies nothing of it.
    So is a record whose `fragments` would copy a file of the collector's (its secret) into the
    shared directory (before, it was applied)."""
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("the collector's secret\n")
    secret.chmod(0o600)
    h1 = Host("h1", tmp_path)
    h1.graph.write_text(f"graph: h1\ncollect:\n  - {{kind: file, pattern: {shared}/}}\n")
    hostile = f"/_mgmt/exported/zz/file/{shared}/evil"
    params = {"path": f"{outside}/suid", "content": "#!/bin/sh\nid\n", "mode": "4755"}
    leak = f"/_mgmt/exported/zz/file/{shared}/leak"
    async with fleet([h1]):
        daemon = await h1.start()
        await daemon.wait_log("serving clients")
        async with client_of(h1) as client:
            await client.put(hostile.encode(), json.dumps({"params": params}).encode())
            fragments = {"params": {"fragments": [str(secret)]}}
            await client.put(leak.encode(), json.dumps(fragments).encode())
            benign = f"/_mgmt/exported/zz/file/{shared}/ok"
            await client.put(benign.encode(), b'{"params": {"content": "ok\\n"}}')
        await wait_path(shared / "ok", has_content("ok\n"), 10)  # read after the hostile ones
        for key in (hostile, leak):
            await daemon.wait_log(f"refused exported record {key} written by host zz (as its key")
        assert not (outside / "suid").exists() and not (shared / "evil").exists()
        assert not (shared / "leak").exists()

        def dot_has_ok(path: Path) -> bool:  # --graphviz is written after the swap's apply
            try:
                return f"file[{shared}/ok]" in path.read_text()
            except OSError:
                return False

        await wait_path(h1.dot, dot_has_ok, 30)
        assert f"file[{shared}/evil]" not in h1.dot.read_text()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--client-urls", "https://[::1:2379", "is not a URL: Invalid IPv6 URL"),
        ("--server-urls", "https://a..b:2380", "'a..b' is neither an IP address nor a host"),
        ("--seeds", f"https://{'x' * 64}:2379", "is neither an IP address nor a host"),
    ],
)
def test_a_bad_cluster_url_is_one_line_and_exit_2(
    tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    """Before: a traceback (urllib's ValueError), or an etcd that exited on it while the run
    went on and exited 0."""
    target = tmp_path / "f"
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  kv:\n    - {{name: k, key: a/b, value: v}}\n"
        f'  file:\n    - {{name: f, path: {target}, content: "x"}}\n'
    )
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "--hostname", "hx", flag, value]
    code, out = run_mgmt([*args, "yaml", str(graph)], timeout=60)
    assert code == 2, out
    (line,) = out.splitlines()
    assert f"{flag}: " in line and expected in line, line
    assert not target.exists()  # nothing applied


def test_an_etcd_that_fails_to_start_fails_a_cron_run_naming_its_error(tmp_path: Path) -> None:
    """The local graph converges all the same (a lost cluster never stops it), but the run
    says why etcd did not start and exits 1 (before: exit 0, as if all were well)."""
    local, graph = tmp_path / "local", tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: g\nresources:\n  file:\n    - {{name: "@@{tmp_path}/shared/x", content: "x"}}\n'
        f'    - {{name: {local}, content: "mine"}}\n'
    )
    peer = free_ports(1)[0]
    # 192.0.2.1 (TEST-NET-1) is no address of this host: etcd cannot bind it. (A port another
    # process holds is refused before anything runs since 2026-12-06: test_ports.py.)
    client = "https://192.0.2.1:2379"
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "--hostname", "hx"]
    args += ["--client-urls", client, "--server-urls", f"https://127.0.0.1:{peer}"]
    code, out = run_mgmt([*args, "yaml", str(graph)], timeout=90)
    assert code == 1, out
    assert "Traceback" not in out
    assert "etcd member hx failed to start (code 1): " in out
    assert "cannot assign requested address" in out.splitlines()[-1], out
    assert "this host's etcd did not start" in out.splitlines()[-1]
    assert local.read_text() == "mine"  # local convergence went on


async def test_schedule_persist_outlives_its_agent_and_ttl_runs_out(tmp_path: Path) -> None:
    """Two agents: h2 joins three pools. Its clean stop takes it out of the default one at
    once; the `ttl` one keeps it until its lease runs out; the `persist` one keeps it for good
    (docs/resources/schedule.md)."""
    hosts = [Host("h1", tmp_path), Host("h2", tmp_path)]
    h1, h2 = hosts
    # One member: h2 a client only (nominated, its member starting as h2 stops, two members
    # without quorum refused h1's leases: seen once in CI)
    h1.extra_args = ["--ideal-cluster-size", "1"]
    h1.graph.write_text("graph: g\nresources:\n  schedule:\n    - name: other\n")
    h2.graph.write_text(
        "graph: g\nresources:\n  schedule:\n"
        "    - {name: keep, persist: true}\n    - {name: gone}\n    - {name: later, ttl: 4}\n"
    )
    async with fleet(hosts):
        await h1.start()
        assert h1.daemon is not None
        await h1.daemon.wait_log("converged", timeout=20)
        await h2.start(seeds=[h1])
        assert h2.daemon is not None
        await h2.daemon.wait_log("converged", timeout=20)
        assert "joined the pool 'keep' without a lease (persist)" in h2.daemon.log
        async with client_of(h1) as client:
            world = EtcdWorld(client, "checker")
            for pool in ("keep", "gone", "later"):
                assert await world.schedule_hosts(pool) == ["h2"], pool
            async with world.schedule_watch("later") as changes, asyncio.timeout(20):
                assert await h2.stop() == 0
                assert await world.schedule_hosts("gone") == []  # revoked as it stopped
                assert await world.schedule_hosts("later") == ["h2"]  # its lease runs on
                while await world.schedule_hosts("later"):
                    await anext(changes)
            assert await world.schedule_hosts("keep") == ["h2"]  # no lease: still there


async def test_a_second_agent_under_a_live_hosts_name_is_refused(tmp_path: Path) -> None:
    """With x1 running, another agent started as x1 (its own prefix and ports, joining through
    x1) is refused at start (exit 2, one error line) before it writes anything: x1's liveness
    key keeps its lease, and `mgmt status --cluster` still shows the real x1. x1 itself, killed
    with -9 and restarted at once, knows its old key (still held) as its own: it runs."""
    x1 = Host("x1", tmp_path)
    x1.graph.write_text(
        f"graph: g\nresources:\n  file:\n    - {{name: {tmp_path}/out, content: x}}\n"
    )
    impostor = Host("x1", tmp_path / "other")
    impostor.graph.write_text("graph: g\nresources: {}\n")
    args = [str(x1.ca_dir) if a == str(impostor.ca_dir) else a for a in impostor.args([x1])]
    key = b"/_mgmt/hosts/x1"
    status = ["status", "--cluster", "--json", "--seeds", x1.url]
    status += ["--prefix", str(tmp_path / "x1" / "prefix")]
    async with fleet([x1]):
        await x1.start()
        assert x1.daemon is not None
        await x1.daemon.wait_log("converged:", timeout=30)
        async with client_of(x1) as client:
            lease = await client.lease_of(key)
        assert lease
        code, out = await asyncio.to_thread(run_mgmt, args)
        assert code == 2, out
        assert "x1's liveness key is held by another agent" in out, out
        errors = [line for line in out.splitlines() if "alive" in line]
        assert errors and errors[0].endswith(
            "host x1 is alive in the cluster: another agent runs under this name"
        ), out
        assert "nominated" not in out and "etcd member" not in out, out
        async with client_of(x1) as client:
            assert await client.lease_of(key) == lease
        code, text = await asyncio.to_thread(run_mgmt, status)
        rows = {r["host"]: r for r in json.loads(text[text.index("[") :])}
        assert code == 0 and rows["x1"]["state"] == "converged", text
        # x1 killed and restarted at once: its own stale key does not refuse it.
        await x1.kill()
        await x1.start()
        await x1.daemon.wait_log("converged:", timeout=30)
        assert "liveness key is held" not in x1.daemon.log  # its own (cluster-agent-id)
        async with client_of(x1) as client, asyncio.timeout(20):
            changed = asyncio.Event()
            unsubscribe = await client.subscribe(key, changed.set)
            while (await client.lease_of(key)) in (None, lease):
                changed.clear()
                await changed.wait()
            await unsubscribe()


async def test_status_and_deploy_list_find_the_cluster_through_the_agents_prefix(
    tmp_path: Path,
) -> None:
    """`mgmt status --cluster --prefix DIR` and `mgmt deploy --list --prefix DIR` without
    --seeds reach the cluster at the URLs the agent at DIR wrote there (cluster-urls.json: a
    client-only host's seeds too), not only https://127.0.0.1:2379; a prefix without them
    says which URLs were tried and why."""
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path)
    h2.extra_args = ["--no-server"]  # a client: only its seeds serve
    for host in (h1, h2):
        host.graph.write_text("graph: g\nresources: {}\n")
    async with fleet([h1, h2]):
        await h1.start()
        await h2.start([h1])
        for host in (h1, h2):
            assert host.daemon is not None
            await host.daemon.wait_log("converged", timeout=30)
        for host in (h1, h2):
            prefix = ["--prefix", str(tmp_path / host.name / "prefix")]
            code, text = await asyncio.to_thread(run_mgmt, ["status", "--cluster", *prefix])
            assert code == 0 and re.search(r"^h1 ", text, re.M), text
            assert re.search(r"^h2 ", text, re.M), text
            code, text = await asyncio.to_thread(run_mgmt, ["deploy", "--list", *prefix])
            assert code == 0, text
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    tls = ["--tls-ca", str(h1.ca_dir / "ca.pem")]
    tls += ["--tls-cert", str(tmp_path / "h1/prefix/cluster-tls/host.pem")]
    tls += ["--tls-key", str(tmp_path / "h1/prefix/cluster-tls/host.key")]
    code, text = await asyncio.to_thread(
        run_mgmt, ["status", "--cluster", "--prefix", str(empty), *tls], 30
    )
    assert code == 1, text
    assert f"no etcd member reachable at https://127.0.0.1:2379 (no agent's URLs in {empty}" in text


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU (this machine has 2 cores) while the block runs."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("busy", [0, 2])
async def test_a_host_removed_by_the_leader_as_it_leaves_says_it_left(
    tmp_path: Path, busy: int
) -> None:
    """h1 (joined h2, then promoted to voter) stops cleanly while another host holds the turn
    to leave: its exports and volunteer key are gone, so the leader removes its member (its
    host left), and its etcd stops. The leave's requests to it then failed: `could not leave
    the cluster (leave turn: raft: stopped): this host's member stays`, although it had left
    (operator tester, 2026-12-05, where the leader was simply quicker). It says it left; also
    with two busy loops beside it, where etcd's line and exit came later than the 2 s the leave
    waited for them (cluster.STOPPED_WAIT: it now waits for either, up to 10 s)."""
    with busy_loops(busy):
        await _removed_as_it_leaves(tmp_path)


@contextlib.asynccontextmanager
async def _h1_joined_h2(tmp_path: Path, shared: Path) -> AsyncIterator[tuple[Host, Host]]:
    """Hosts h1 and h2, each exporting its file into `shared`: h2 starts the cluster, h1 joins
    it and is a voting member."""
    h1, h2 = Host("h1", tmp_path), Host("h2", tmp_path)
    for host in (h1, h2):
        host.graph.write_text(exporter(shared, host.name, f"from {host.name}"))
    async with fleet([h1, h2]):
        await h2.start()
        await h1.start(seeds=[h2])
        assert h1.daemon is not None and h2.daemon is not None
        await h2.daemon.wait_log("h1 is now a voting member")
        yield h1, h2


async def _removed_as_it_leaves(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    async with _h1_joined_h2(tmp_path, shared) as (h1, h2):
        assert h1.daemon is not None and h2.daemon is not None
        await wait_dot(h2, holds(f"{shared}/h1", f"{shared}/h2"))
        async with client_of(h2) as client:
            await summary_written(client, "h1")
            await client.put(LEAVING.encode(), b"another host")
            h1.daemon.signal(signal.SIGTERM)
            await h2.daemon.wait_log("member h1: its host left the cluster; removing it")
            await client.delete(LEAVING.encode())
            assert await h1.daemon.wait(30) == 0
            assert [m.name for m in await client.members()] == ["h2"]
        assert "could not leave" not in h1.daemon.log, h1.daemon.log
        assert "this host's member left the cluster" in h1.daemon.log, h1.daemon.log
        await wait_dot(h2, lacks(f"{shared}/h1"))


async def key_gone(client: EtcdClient, key: str) -> None:
    """Wait (on its watch) until `key` is not in the cluster."""
    changed = asyncio.Event()
    unsubscribe = await client.subscribe(key.encode(), changed.set)
    try:
        async with asyncio.timeout(15):
            while True:
                changed.clear()  # before the read: a change after it wakes the wait
                if await client.get(key.encode()) is None:
                    return
                await changed.wait()
    finally:
        await unsubscribe()


@pytest.mark.slow
async def test_a_second_sigterm_during_a_leave_ends_it(tmp_path: Path) -> None:
    """h1 stops cleanly while another host holds the turn to leave: its leave waits for it
    (LEAVE_WAIT s). A second SIGTERM cancels the leave, says where the stop waited, and the
    agent exits 1 (forced), its etcd stopped. Before, the second signal cancelled only the
    engine's stop, long over: the leave went on as if unsaid (CI: an agent that hung in its
    leave ignored its second SIGTERM, and was killed)."""
    shared = tmp_path / "shared"
    async with _h1_joined_h2(tmp_path, shared) as (h1, h2):
        assert h1.daemon is not None and h2.daemon is not None
        async with client_of(h2) as client:
            await summary_written(client, "h1")
            await client.put(LEAVING.encode(), b"another host")
            h1.daemon.signal(signal.SIGTERM)
            await key_gone(client, HOSTS + "h1")  # its lease revoked: next, its turn to leave
            h1.pids()
            h1.daemon.signal(signal.SIGTERM)
            assert await h1.daemon.wait(30) == 1  # (h2 is left without a quorum)
        log = h1.daemon.log
        assert "SIGTERM again: stopping now, cancelling what still runs (waiting: " in log, log
        # Its leave did not go on: it neither left (as the leader removed it) nor stayed.
        assert "this host's member left" not in log, log
        assert "this host's member stays" not in log, log
