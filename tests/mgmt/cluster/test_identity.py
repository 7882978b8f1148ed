"""Per-host etcd identities, for real: one etcd with authentication on, certificates minted and
hosts admitted by the `mgmt cluster` commands, every refusal etcd's own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aetcd import rpc

from engine.errors import ValidationError, WorldError
from engine.graph import Graph
from engine.world import Exported, schedule_key, strings_key
from mgmt import cli
from mgmt.cluster import NotAdmitted
from mgmt.cluster.client import EtcdClient, Member
from mgmt.cluster.cluster import Cluster
from mgmt.cluster.identity import (
    HOSTS,
    IDEAL,
    NOMINATED,
    VOLUNTEERS,
    admit,
    check_host,
    permissions,
    role_name,
    sync_roles,
)
from mgmt.cluster.link import ClusterLink
from mgmt.cluster.options import from_config
from mgmt.cluster.pki import host_files, mint, san_names
from mgmt.cluster.world import EtcdWorld
from mgmt.collectscope import Collect
from mgmt.config import Config
from mgmt.yamlgraph import Loaded
from tests.e2e.helpers import run_mgmt
from tests.mgmt.cluster.helpers import free_ports, options, pid_alive, wait_pid_gone
from tests.mgmt.cluster.test_pki import NOBODY
from tests.mgmt.cluster.test_security import _http_get


class _OnLog(logging.Handler):
    """Calls `found()` when a log record contains `text`."""

    def __init__(self, text: str, found: Callable[[], None]) -> None:
        super().__init__()
        self.text, self.found = text, found

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.found()


async def _members(cluster: Cluster) -> list[Member]:
    return await cluster.client.members()


def _mint(tmp_path: Path, host: str, core: bool) -> Path:
    out = tmp_path / "creds" / host
    args = ["cluster", "mint-cert", host, "--ca-dir", str(tmp_path / "ca"), "--out", str(out)]
    assert cli.main([*args, *(["--core"] if core else [])]) == 0  # in-process: fast
    return out


async def test_a_confined_host_writes_its_own_keys_only(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir(mode=0o700)
    creds = {h: _mint(tmp_path, h, core=h == "h1") for h in ("h1", "h2", "h3")}
    h1 = host_files(creds["h1"])
    opts = options("h1", scheme="https", tls=h1, peer_tls=h1, identities=True)
    cluster = Cluster(opts, tmp_path / "h1")
    url = opts.advertise_client_urls[0]
    h2 = EtcdClient([url], tls=host_files(creds["h2"]), call_timeout=1, retry_for=1)
    try:
        assert await cluster.start()
        assert cluster.member is not None
        pid = cluster.member.pid
        argv = cluster.member.spec.argv()
        assert argv[argv.index("--peer-cert-allowed-hostname") + 1] == "core.mgmt.invalid"
        admit = ["cluster", "admit", "h2", "--cert-dir", str(creds["h1"]), "--endpoints", url]
        code, text = await asyncio.to_thread(run_mgmt, admit)
        assert (code, text.strip()) == (0, "admitted h2: confined to its own keys"), text

        # h2 writes its own keys (and the shared strings)...
        own = EtcdWorld(h2, "h2")
        await own.res_export([Exported("h2", "file", "/srv/a", {"content": "x"}, {})])
        await own.str_map_set("app", "2")
        await own.str_set("shared", "2")
        for key in (HOSTS + "h2", VOLUNTEERS + "h2", schedule_key("pool", "h2")):
            await h2.put(key.encode(), b"")
        assert await cluster.world.str_map_get("app") == {"h2": "2"}
        # ...and nobody else's: etcd refuses, whatever the key claims.
        forged = EtcdWorld(h2, "h1")
        attempts = [
            forged.res_export([Exported("h1", "file", "/srv/a", {"content": "x"}, {})]),
            forged.str_map_set("app", "forged"),
            *(
                h2.put(k.encode(), b"")
                for k in (
                    HOSTS + "h1",
                    VOLUNTEERS + "h1",
                    NOMINATED + "h2",
                    IDEAL,
                    schedule_key("pool", "h1"),
                    strings_key("app", "h1"),
                    "/_mgmt/exported/h22/file/x",  # a prefix of another host's name
                )
            ),
            h2.member_add_learner(["https://127.0.0.1:1"]),  # membership: core only
        ]
        for attempt in attempts:
            with pytest.raises(WorldError, match="permission denied"):
                await attempt
        # The core member still changes membership.
        new, _ = await cluster.client.member_add_learner(["https://127.0.0.1:1"])
        await cluster.client.member_remove(new.id)

        # A confined host's certificate cannot speak raft on the peer port; a core one's can.
        peer_port = int(opts.advertise_server_urls[0].rsplit(":", 1)[1])
        # Nor one that names the core hosts' name only as etcd matches it (so mint-cert refuses
        # to make one without --core).
        wild = tmp_path / "creds" / "wild"
        mint(tmp_path / "ca", wild, "wild", [*san_names("wild", []), "*.mgmt.invalid"])
        creds["wild"] = wild
        for host, answered in (("h2", False), ("h1", True), ("wild", True)):
            context = ssl.create_default_context(cafile=str(creds[host] / "ca.pem"))
            context.load_cert_chain(creds[host] / "host.pem", creds[host] / "host.key")
            assert ("200 OK" in await _http_get(peer_port, "/members", context)) is answered

        await _roles_follow_host_keys(cluster.client)
        await _refused_when_not_admitted(tmp_path, creds["h3"], url)
    finally:
        await h2.close()
        await cluster.stop()
    await wait_pid_gone(pid)
    assert not pid_alive(pid)


async def _roles_follow_host_keys(client: EtcdClient) -> None:
    """A role admitted before a key family was added to HOST_KEYS gets it from a core host."""
    assert await sync_roles(client) == []
    perm = permissions("h2")[-1]
    request = rpc.AuthRoleRevokePermissionRequest(
        role=role_name("h2"), key=perm.key, range_end=perm.range_end
    )
    await client.auth_request("RoleRevokePermission", request)
    assert await sync_roles(client) == ["h2"]
    assert await sync_roles(client) == []


async def _refused_when_not_admitted(tmp_path: Path, creds: Path, url: str) -> None:
    """h3, not admitted: a clear error naming the admit command (the Cluster, and a whole run:
    one line, exit 2), not a hang."""
    h3 = options("h3", scheme="https", seeds=[url], tls=host_files(creds), identities=True)
    with pytest.raises(NotAdmitted, match="run `mgmt cluster admit h3 --cert-dir DIR`"):
        stray = Cluster(replace(h3, no_server=True, core=False), tmp_path / "h3")
        try:
            await stray.start()
        finally:
            await stray.stop(graceful=False)
    # Not reachable when it starts (here: not waited for): said once the cluster answers.
    said = asyncio.Event()
    handler = _OnLog("run `mgmt cluster admit h3", said.set)
    logging.getLogger("cluster").addHandler(handler)
    late = Cluster(replace(h3, no_server=True, core=False), tmp_path / "h3late")
    try:
        assert not await late.start(wait=0)
        async with asyncio.timeout(10):
            await said.wait()
    finally:
        logging.getLogger("cluster").removeHandler(handler)
        await late.stop(graceful=False)
    run = ["run", "--hostname", "h3", "--prefix", str(tmp_path / "h3run"), "--seeds", url]
    run += ["--cluster-cert-dir", str(creds), "--converged-timeout", "0", "empty"]
    code, text = await asyncio.to_thread(run_mgmt, run, 60)
    lines = text.strip().splitlines()
    assert code == 2, text
    assert len(lines) == 1 and "run `mgmt cluster admit h3 --cert-dir DIR`" in lines[0]


def test_the_commands_refuse_bad_input_with_one_line(tmp_path: Path) -> None:
    code, text = run_mgmt(["cluster", "mint-cert", "root", "--ca-dir", "x", "--out", "y"])
    assert code == 2 and text.strip().count("\n") == 0 and "'root'" in text, text
    code, text = run_mgmt(["cluster", "mint-cert", "operator:bob", "--ca-dir", "x", "--out", "y"])
    assert code == 2 and text.strip().count("\n") == 0 and "not starting with 'operator:'" in text
    args = ["cluster", "admit", "h2", "--cert-dir", str(tmp_path), "--endpoints", "http://a:1"]
    code, text = run_mgmt(args)
    assert code == 2 and text.strip().count("\n") == 0 and "--endpoints" in text, text
    # A cluster out of reach: one line, exit 1 (the client's own warning came first).
    creds = _mint(tmp_path, "h1", core=True)
    (port,) = free_ports(1)
    args = ["cluster", "admit", "h2", "--cert-dir", str(creds)]
    code, text = run_mgmt([*args, "--endpoints", f"https://127.0.0.1:{port}"])
    assert code == 1 and text.count("\n") == 1, text
    assert text.startswith("mgmt cluster admit: no etcd member reachable at"), text


def test_cluster_cert_dir_options(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir(mode=0o700)
    core, confined = _mint(tmp_path, "h1", core=True), _mint(tmp_path, "h2", core=False)
    operator = tmp_path / "creds" / "alice"
    args = ["cluster", "mint-cert", "--operator", "alice", "--ca-dir", str(tmp_path / "ca")]
    assert cli.main([*args, "--out", str(operator)]) == 0
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o700)
    opts = from_config(Config(hostname="h1", prefix=prefix, cluster_cert_dir=core))
    assert (opts.identities, opts.core, opts.no_server, opts.ca_dir) == (True, True, False, None)
    assert opts.tls == opts.peer_tls == host_files(core)
    seeds = "https://127.0.0.1:2379"
    opts = from_config(Config(hostname="h2", prefix=prefix, cluster_cert_dir=confined, seeds=seeds))
    assert (opts.identities, opts.core, opts.no_server) == (True, False, True)  # client only
    bad = [
        ({"hostname": "h3", "cluster_cert_dir": core}, "'h1''s certificate, not this host's"),
        ({"hostname": "h2", "cluster_cert_dir": confined}, "must be a core host"),
        ({"hostname": "h1", "cluster_cert_dir": tmp_path}, "mgmt cluster mint-cert h1"),
        ({"hostname": "h1", "cluster_cert_dir": core, "insecure_cluster": True}, "give it alone"),
        # An operator's certificate runs no agent: its etcd user may write the deploys only,
        # and the agent used to retry its lease forever (permission denied) instead of exiting.
        ({"hostname": "alice", "cluster_cert_dir": operator}, "an operator's certif"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValidationError, match="--cluster-cert-dir") as err:
            from_config(Config(prefix=prefix, **kwargs))  # type: ignore[arg-type]
        assert message in str(err.value)
    with pytest.raises(ValidationError, match="--hostname: 'operator:alice' cannot be a host"):
        from_config(Config(prefix=prefix, hostname="operator:alice", cluster_cert_dir=operator))


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda d: d.chmod(0o777), "can be written by others (mode 0777)"),
        (lambda d: os.chown(d, NOBODY, NOBODY), "h2 is owned by uid 65534: refusing"),
        (lambda d: os.chown(d / "ca.pem", NOBODY, NOBODY), "ca.pem (owner uid 65534, mode 0644)"),
        (lambda d: (d / "host.pem").chmod(0o666), "host.pem (owner uid 0, mode 0666)"),
        (lambda d: d.parent.chmod(0o777), "creds can be written by others (mode 0777)"),
    ],
)
def test_a_cluster_cert_dir_another_user_can_change_is_refused(
    tmp_path: Path, plant: Callable[[Path], object], message: str
) -> None:
    """Another local user who can swap `ca.pem` would have this host's etcd trust their CA (and,
    on a core host, a certificate they mint with its name: etcd's root)."""
    (tmp_path / "creds").mkdir(mode=0o700)
    confined = _mint(tmp_path, "h2", core=False)
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o700)
    config = Config(hostname="h2", prefix=prefix, cluster_cert_dir=confined, seeds="https://a:1")
    assert from_config(config).identities
    plant(confined)
    with pytest.raises(ValidationError, match="--cluster-cert-dir") as err:
        from_config(config)
    assert message in str(err.value)


async def test_an_admitted_core_host_joins_as_a_member(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir(mode=0o700)
    creds = {h: host_files(_mint(tmp_path, h, core=True)) for h in ("h1", "h2")}
    opts = options("h1", scheme="https", tls=creds["h1"], peer_tls=creds["h1"], identities=True)
    first = Cluster(opts, tmp_path / "h1")
    url = opts.advertise_client_urls[0]
    second: Cluster | None = None
    try:
        assert await first.start()
        await admit(first.client, "h2", core=True)
        h2 = options("h2", scheme="https", seeds=[url], tls=creds["h2"], identities=True)
        second = Cluster(replace(h2, peer_tls=creds["h2"]), tmp_path / "h2")
        changed = asyncio.Event()  # h2's nomination (the leader rewrites it once promoted)
        cancel = await first.client.subscribe((NOMINATED + "h2").encode(), changed.set)
        assert await second.start()
        try:
            async with asyncio.timeout(30):  # volunteered, added, started, promoted
                while not any(m.name == "h2" and not m.is_learner for m in await _members(first)):
                    await changed.wait()
                    changed.clear()
        finally:
            await cancel()
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_the_collector_names_the_writer_it_can_vouch_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With per-host identities the key's host is the writer (or a core member); without, the
    warning says it is only the key's claim."""
    hostile = Exported("zz", "file", "/srv/shared/x", {"path": "/tmp/suid"})
    for identities, says in ((True, "(or a core member"), (False, "(as its key claims")):
        link = ClusterLink(options("web1", identities=identities), tmp_path, lambda: None)
        link.records = [hostile]
        link._published = []  # nothing to publish: keep the cluster out of it
        loaded = Loaded(Graph("local"), collect=[Collect("file", "/srv/shared/")])
        assert not list(await link.graph_for(loaded))
        assert f"{hostile.key} written by host zz {says}" in caplog.text
        await link.cluster.client.close()


async def test_a_record_cannot_forge_a_log_line_naming_another_host(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host writes its own keys with any name: a newline in one added a line to the
    collector's log that looked like a refusal of another host's record."""
    fake = "\nWARNING cluster: refused exported record /_mgmt/exported/h1/file/x written by host h1"
    hostile = Exported("h2", "file", "/srv/shared/x" + fake, {"path": "/tmp/suid"})
    link = ClusterLink(options("web1", identities=True), tmp_path, lambda: None)
    link.records = [hostile]
    link._published = []  # nothing to publish: keep the cluster out of it
    loaded = Loaded(Graph("local"), collect=[Collect("file", "/srv/shared/")])
    assert not list(await link.graph_for(loaded))
    (said,) = [r.getMessage() for r in caplog.records if "refused exported" in r.getMessage()]
    assert "\n" not in said and "/srv/shared/x\\nWARNING" in said
    assert "written by host h2 (or a core member" in said  # one line: the rest is the key's
    await link.cluster.client.close()
    for host in ("h\nx", "h\tx", "h\x1b[2Jx"):
        with pytest.raises(ValidationError, match="printable"):
            check_host(host)


def test_mint_cert_never_tightens_a_directory_it_is_pointed_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at a shared directory (/tmp-like, or a 0755 one with files), it refuses, exit 2,
    and changes nothing (the prefix's rule, tightening, would chmod every file in it)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    plain = tmp_path / "plain"
    plain.mkdir(mode=0o755)
    (plain / "notes").write_text("x")
    (plain / "notes").chmod(0o644)
    for ca, out, flag in ((shared, tmp_path / "o1", "--ca-dir"), (tmp_path / "ca", plain, "--out")):
        args = ["cluster", "mint-cert", "h1", "--ca-dir", str(ca), "--out", str(out)]
        assert cli.main(args) == 2
        assert capsys.readouterr().err.startswith(f"mgmt cluster mint-cert: {flag}: ")
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert plain.stat().st_mode & 0o777 == 0o755
    assert (plain / "notes").stat().st_mode & 0o777 == 0o644
    assert not list(shared.iterdir()) and not (tmp_path / "o1").exists()


async def test_a_confined_host_that_volunteers_is_not_nominated(tmp_path: Path) -> None:
    """Its role may write its own volunteer key; the leader adds a member for core hosts only
    (before, it added a learner at the peer URL the confined host named, taking the one
    learner slot from the core hosts)."""
    (tmp_path / "creds").mkdir(mode=0o700)
    creds = {h: host_files(_mint(tmp_path, h, core=h == "h1")) for h in ("h1", "h2")}
    opts = options("h1", scheme="https", tls=creds["h1"], peer_tls=creds["h1"], identities=True)
    cluster = Cluster(opts, tmp_path / "h1")
    h2 = EtcdClient(opts.advertise_client_urls, tls=creds["h2"], call_timeout=1, retry_for=1)
    said = asyncio.Event()
    handler = _OnLog("h2 volunteers to run a member but is not a core host", said.set)
    logging.getLogger("cluster").addHandler(handler)
    try:
        assert await cluster.start()
        await admit(cluster.client, "h2", core=False)
        claim = {"peer_urls": ["https://127.0.0.1:9"], "serving": True}
        await h2.put((VOLUNTEERS + "h2").encode(), json.dumps(claim).encode())
        async with asyncio.timeout(10):
            await said.wait()
        assert [(m.name, m.is_learner) for m in await _members(cluster)] == [("h1", False)]
        assert await cluster.client.get((NOMINATED + "h2").encode()) is None
    finally:
        logging.getLogger("cluster").removeHandler(handler)
        await h2.close()
        await cluster.stop()


async def test_big_records_of_one_host_do_not_stop_the_collectors(tmp_path: Path) -> None:
    """A confined host may fill its own exports with etcd's largest values: 48 of 1.4 MB (over
    the client's 64 MiB receive limit in one response) stopped every host reading exported/."""
    (tmp_path / "creds").mkdir(mode=0o700)
    creds = {h: host_files(_mint(tmp_path, h, core=h == "h1")) for h in ("h1", "h2")}
    opts = options("h1", scheme="https", tls=creds["h1"], peer_tls=creds["h1"], identities=True)
    cluster = Cluster(opts, tmp_path / "h1")
    h2 = EtcdClient(opts.advertise_client_urls, tls=creds["h2"], call_timeout=5, retry_for=5)
    try:
        assert await cluster.start()
        await admit(cluster.client, "h2", core=False)
        await cluster.world.res_export([Exported("h1", "noop", "n", {}, {})])
        big = Exported("h2", "noop", "big", {"comment": "x" * 1_400_000}, {})
        for index in range(48):
            await h2.put(f"{big.key}{index}".encode(), big.to_json().encode())
        records = await EtcdWorld(h2, "h2").res_list()
        assert len(records) == 49 and Exported("h1", "noop", "n", {}, {}) in records
    finally:
        await h2.close()
        await cluster.stop()


async def test_what_etcd_does_not_check_for_a_certificate_without_a_user(tmp_path: Path) -> None:
    """docs/security.md lists what any certificate of the CA still gets, admitted or not: keys
    are refused, leases and compaction are not (if etcd starts checking them, update the doc)."""
    (tmp_path / "creds").mkdir(mode=0o700)
    creds = {h: host_files(_mint(tmp_path, h, core=h == "h1")) for h in ("h1", "h3")}
    opts = options("h1", scheme="https", tls=creds["h1"], peer_tls=creds["h1"], identities=True)
    cluster = Cluster(opts, tmp_path / "h1")
    h3 = EtcdClient(opts.advertise_client_urls, tls=creds["h3"], call_timeout=1, retry_for=1)
    try:
        assert await cluster.start()
        for attempt in (h3.get(IDEAL.encode()), h3.put(b"/_mgmt/strings/x", b"")):
            with pytest.raises(WorldError, match="permission denied"):
                await attempt
        lease = await h3.lease_grant(60)
        assert await h3.lease_keepalive(lease) > 0
        revision = (await cluster.client.status()).header.revision
        await h3.compact(revision)
    finally:
        await h3.close()
        await cluster.stop()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["wild", "--san", "*.mgmt.invalid"], "--san"),
        (["up", "--san", "CORE.MGMT.INVALID."], "--san"),
        (["core.mgmt.invalid"], "HOST"),
    ],
)
def test_mint_cert_makes_no_confined_certificate_the_peer_port_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    """etcd's peer port takes any certificate whose names match the core hosts' name as Go
    matches host names (see the first test): before, such a certificate was minted and called
    "confined", and its host could speak raft, as root."""
    out = tmp_path / "out"
    argv = ["cluster", "mint-cert", *args, "--ca-dir", str(tmp_path / "ca"), "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgmt cluster mint-cert: {flag}: ") and "give --core" in err, err
    assert not out.exists()
    assert cli.main([*argv, "--core"]) == 0


async def test_status_cluster_finds_the_agents_cert_dir_in_its_prefix(tmp_path: Path) -> None:
    """`mgmt status --cluster --prefix DIR` on a host whose agent runs with --cluster-cert-dir:
    the agent records its files in DIR/cluster-tls.json (its prefix: ours alone), and the
    command uses them. Before, it looked only in DIR/cluster-tls/ and asked for --tls-*.
    A prefix another user may write is not believed (they would name their own files)."""
    from mgmt.cluster.cluster import TLS_FILE, agent_tls

    (tmp_path / "creds").mkdir(mode=0o700)
    creds = _mint(tmp_path, "h1", core=True)
    files = host_files(creds)
    opts = options("h1", scheme="https", tls=files, peer_tls=files, identities=True)
    prefix = tmp_path / "h1"
    cluster = Cluster(opts, prefix)
    try:
        assert await cluster.start()
        assert agent_tls(prefix) == files
        code, text = await asyncio.to_thread(
            run_mgmt, ["status", "--cluster", "--json", "--prefix", str(prefix)], 30
        )
        assert code in (0, 1) and "no such file" not in text, text
        rows = json.loads(text[text.index("[") :])  # reached: the host's row
        assert [row["host"] for row in rows] == ["h1"], text
    finally:
        await cluster.stop(graceful=False)
    assert json.loads((prefix / TLS_FILE).read_text())["cert"] == str(files.cert)
    prefix.chmod(0o777)
    try:
        assert agent_tls(prefix) is None
    finally:
        prefix.chmod(0o700)
