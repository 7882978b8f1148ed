"""The deploy store on a real etcd: one transaction per deploy, stale parents refused, the
history bounded."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mgmt.cluster.client import EtcdClient
from mgmt.deploy import DeployError
from mgmt.deploy.bundle import Bundle
from mgmt.deploy.store import (
    BLOBS,
    IDS,
    NEWEST,
    Record,
    head,
    id_key,
    new_record,
    push,
    record,
    record_maker,
    records,
)
from tests.mgmt.cluster.helpers import members


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[EtcdClient]:
    async with members(tmp_path) as nodes:
        etcd = EtcdClient([nodes[0].client_url], call_timeout=2)
        try:
            yield etcd
        finally:
            await etcd.close()


def bundle(text: str) -> Bundle:
    return Bundle("yaml", "g.yaml", {"g.yaml": f"graph: {text}\n".encode()})


async def push_plain(client: EtcdClient, b: Bundle, **kw: object) -> Record:
    return await push(client, b, record_maker(b, None), **kw)  # type: ignore[arg-type]


async def test_a_deploy_is_its_blob_record_and_newest_in_one_revision(client: EtcdClient) -> None:
    first = await push_plain(client, bundle("a"))
    second = await push_plain(client, bundle("b"))
    assert (first.id, first.parent, second.id, second.parent) == (1, 0, 2, 1)
    revisions = set()
    for key in (NEWEST, id_key(2), BLOBS + second.hash):

        async def fn(conn: object, key: str = key) -> object:
            from aetcd import rpc

            return await conn.kv.Range(rpc.RangeRequest(key=key.encode()), timeout=2)  # type: ignore[attr-defined]

        resp = await client.call("get", fn)  # type: ignore[arg-type]
        revisions.add(resp.kvs[0].mod_revision)
    assert len(revisions) == 1  # never one without the others
    assert await record(client, 2) == second
    assert await client.get((BLOBS + second.hash).encode()) == bundle("b").encode()


async def test_a_stale_parent_is_refused_unless_forced(client: EtcdClient) -> None:
    await push_plain(client, bundle("a"))
    ours = bundle("ours")
    plain = record_maker(ours, None)
    raced = False

    async def racing(deploy_id: int, parent: int) -> Record:
        nonlocal raced
        if not raced:  # another operator pushes while ours is being made (and signed)
            raced = True
            await push_plain(client, bundle("theirs"))
        return await plain(deploy_id, parent)

    with pytest.raises(DeployError, match=r"parent 1 is no longer the newest deploy \(2 was"):
        await push(client, ours, racing)
    assert [r.id for r in await records(client)] == [1, 2]
    assert await client.get((BLOBS + ours.hash).encode()) is None  # nothing of it stored
    raced = False
    forced = await push(client, ours, racing, force=True)
    assert (forced.id, forced.parent) == (4, 3)


async def test_the_history_keeps_the_newest_k_and_the_blobs_they_name(
    client: EtcdClient,
) -> None:
    pushed = [await push_plain(client, bundle(x), keep=3) for x in "abcd"]
    assert [r.id for r in await records(client)] == [2, 3, 4]
    assert await client.get((BLOBS + pushed[0].hash).encode()) is None
    # A rollback to 2's content: 2 goes, its blob stays (5 names it).
    b = bundle("b")
    await push(client, b, record_maker(b, None, rollback_of=2), keep=3)
    kept = await records(client)
    assert [(r.id, r.rollback_of) for r in kept] == [(3, 0), (4, 0), (5, 2)]
    blobs, _ = await client.get_prefix(BLOBS.encode())
    assert sorted(k.decode()[len(BLOBS) :] for k in blobs) == sorted(r.hash for r in kept)
    assert len((await client.get_prefix(IDS.encode()))[0]) == 3


async def test_keep_must_be_positive(client: EtcdClient) -> None:
    with pytest.raises(DeployError, match="--keep"):
        await push_plain(client, bundle("a"), keep=0)
    assert await records(client) == []
    assert new_record(bundle("a"), 1, 0).payload().startswith(b"mgmt deploy v1\n")


@pytest.mark.parametrize(
    "doc",
    [b"[]", b"{}", b'{"id": 1}', b"not json", b'"x"'],
)
def test_a_record_that_is_not_one_is_refused(doc: bytes) -> None:
    with pytest.raises(DeployError, match="ids/1: not a deploy record"):
        Record.decode(doc, "ids/1")


def test_a_record_field_of_the_wrong_type_is_refused() -> None:
    good = new_record(bundle("a"), 1, 0).encode()
    for field, value in (("time", '"soon"'), ("id", "true"), ("hash", "5")):
        doc = json.loads(good)
        doc[field] = json.loads(value)
        with pytest.raises(DeployError, match=f"{field} is"):
            Record.decode(json.dumps(doc).encode(), "ids/1")


async def test_status_rows_of_many_hosts_are_read_in_pages(client: EtcdClient) -> None:
    """Up to SMALL hosts: one transaction; more: each prefix in pages, the same rows."""
    from mgmt.deploy.status import HOSTS, SMALL, HostStatus, host_statuses, status_key

    names = [f"h{i:02}" for i in range(SMALL + 3)]
    for count, name in enumerate(names, 1):
        await client.put(status_key(name).encode(), HostStatus(name, running=count).encode())
        await client.put((HOSTS + name).encode(), b"")
        rows = await host_statuses(client)
        assert [(r.host, r.alive, r.running) for r in rows] == [
            (n, True, i) for i, n in enumerate(names[:count], 1)
        ]


async def test_status_rows_say_who_is_alive_and_who_runs_deploys(client: EtcdClient) -> None:
    from mgmt.deploy.status import HOSTS, HostStatus, host_statuses, status_key, table

    await client.put(status_key("h1").encode(), HostStatus("h1", running=3, ready=3).encode())
    await client.put(status_key("h2").encode(), b'{"running": "three"}')  # from a bad writer
    await client.put((HOSTS + "h1").encode(), b"")
    await client.put((HOSTS + "plain").encode(), b"")  # a host running no deploys
    rows = await host_statuses(client)
    assert [(r.host, r.alive, r.runs_deploys, r.running) for r in rows] == [
        ("h1", True, True, 3),
        ("h2", False, True, 0),
        ("plain", True, False, 0),
    ]
    lines = table(rows).splitlines()
    assert lines[0].split()[:8] == [
        "HOST", "ALIVE", "DEPLOY", "READY", "CONVERGED", "SINCE", "RESOURCES", "FAILED"
    ]  # fmt: skip
    assert lines[1].split() == ["h1", "yes", "3", "3", "no", "-", "-", "-", "-"]


async def test_summaries_make_the_cluster_report_and_its_exit_code(client: EtcdClient) -> None:
    """`mgmt status --cluster` and `mgmt deploy --status`: each host's summary (resources,
    failures, converged since) joins its row; exit 1 when a host is down or has failed."""
    from mgmt.config import ExitCode
    from mgmt.deploy.status import (
        HOSTS,
        SUMMARY,
        HostStatus,
        host_statuses,
        report,
        status_key,
        table,
    )

    def summary(failed: int, error: str = "") -> bytes:
        doc = {"converged": not failed, "since": 1e9, "resources": 3, "failed": failed}
        return json.dumps({**doc, "error": error}).encode()

    await client.put((HOSTS + "a").encode(), b"")
    await client.put((SUMMARY + "a").encode(), summary(0))
    text, code = report(await host_statuses(client))
    assert code is ExitCode.OK, text
    cells = text.splitlines()[1].split()
    assert cells[:5] + cells[6:] == ["a", "yes", "-", "-", "yes", "3", "0", "-"], text
    await client.put((HOSTS + "b").encode(), b"")
    await client.put((SUMMARY + "b").encode(), summary(1, "exec[x]: exited 3\x1b"))
    text, code = report(await host_statuses(client))
    assert code is ExitCode.FAILED and text.splitlines()[2].endswith("exec[x]: exited 3\\x1b")
    await client.delete((HOSTS + "b").encode())
    await client.put((SUMMARY + "b").encode(), summary(0))
    text, code = report(await host_statuses(client), as_json=True)
    rows = {row["host"]: row for row in json.loads(text)}
    assert code is ExitCode.FAILED and rows["b"]["state"] == "down", text
    assert rows["a"]["state"] == "converged" and rows["a"]["resources"] == 3
    # A host that runs deploys says in its deploy status whether it is converged (not, once
    # it stopped): its summary's time is not shown beside a `no`.
    await client.put(status_key("c").encode(), HostStatus("c", running=2, ready=2).encode())
    await client.put((SUMMARY + "c").encode(), summary(0))
    rows = {row.host: row for row in await host_statuses(client)}
    assert (rows["c"].converged, rows["c"].since) == (False, 0.0)
    assert table([rows["c"]]).splitlines()[1].split()[:6] == ["c", "no", "2", "2", "no", "-"]
    # A host that refused the newest deploy (a key it does not trust) does not run what was
    # pushed: `mgmt deploy ... && mgmt deploy --status` said all was well (exit 0).
    await client.put((HOSTS + "c").encode(), b"")
    refusing = HostStatus("c", running=2, ready=2, converged=True, refused=3, error="untrusted")
    await client.put(status_key("c").encode(), refusing.encode())
    rows = {row.host: row for row in await host_statuses(client)}
    assert report([rows["c"]])[1] is ExitCode.FAILED
    later = HostStatus("c", running=4, ready=4, converged=True, refused=3, error="untrusted")
    await client.put(status_key("c").encode(), later.encode())
    rows = {row.host: row for row in await host_statuses(client)}
    assert report([rows["c"]])[1] is ExitCode.OK
    await client.put((SUMMARY + "a").encode(), b'{"converged": "yes"}')  # a bad writer
    row = (await host_statuses(client))[0]
    assert row.last_error == "unreadable summary"


async def test_a_host_that_left_is_no_failure_and_can_be_forgotten(client: EtcdClient) -> None:
    """A host whose last summary says it left (a clean stop) reads `left` with the time, not
    `down`, and is no failure (exit 0); without `left` a gone host is down (exit 1). `forget`
    deletes a gone host's rows, is refused while the host is alive, and says when it has none."""
    from mgmt.config import ExitCode
    from mgmt.deploy.status import (
        HOSTS,
        SUMMARY,
        HostAlive,
        HostStatus,
        forget,
        host_statuses,
        report,
        status_key,
    )

    def summary(**more: object) -> bytes:
        doc = {"converged": False, "since": 0, "resources": 2, "failed": 0, "error": ""}
        return json.dumps({**doc, **more}).encode()

    await client.put((SUMMARY + "gone").encode(), summary())
    await client.put(status_key("gone").encode(), HostStatus("gone", running=1).encode())
    await client.put((SUMMARY + "left").encode(), summary(left=1.7e9))
    await client.put((HOSTS + "up").encode(), b"")
    await client.put((SUMMARY + "up").encode(), summary(left=1.6e9))  # left, then came back
    text, code = report(await host_statuses(client), as_json=True)
    states = {row["host"]: row["state"] for row in json.loads(text)}
    assert states == {"gone": "down", "left": "left", "up": "converging"}, text
    assert code is ExitCode.FAILED  # `gone` is down
    text, _ = report(await host_statuses(client))
    left_row = next(line for line in text.splitlines() if line.startswith("left "))
    assert left_row.split()[1:3] == ["left", time.strftime("%H:%M:%S", time.localtime(1.7e9))]
    assert await forget(client, "gone") is True
    assert await client.get(status_key("gone").encode()) is None
    text, code = report(await host_statuses(client))
    assert code is ExitCode.OK and "gone" not in text, text
    assert await forget(client, "gone") is False  # nothing left to forget
    with pytest.raises(HostAlive, match="up is alive"):
        await forget(client, "up")
    assert await client.get((SUMMARY + "up").encode()) is not None
    for bad in ("1e300", "-1", "NaN", '"yesterday"'):
        await client.put(
            (SUMMARY + "left").encode(), summary().replace(b"}", b', "left": %s}' % bad.encode())
        )
        (row,) = [r for r in await host_statuses(client) if r.host == "left"]
        assert row.last_error == "unreadable summary" and row.state == "down", bad


async def test_a_summary_with_an_impossible_time_is_unreadable_not_a_crash(
    client: EtcdClient,
) -> None:
    """A host writes its own summary: a `since` of 1e300 stopped `mgmt status --cluster` (and
    `mgmt deploy --status`) with a traceback, and NaN or Infinity went into the page's JSON,
    which no browser parses; a negative count is no count either."""
    from mgmt.deploy.status import HOSTS, SUMMARY, host_statuses, report

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    await client.put((HOSTS + "h2").encode(), b"")
    bad = ["1e300", "-1e300", "Infinity", "NaN", "-1"]
    docs = [
        f'{{"converged": true, "since": {v}, "resources": 1, "failed": 0, "error": ""}}'
        for v in bad
    ]
    docs.append('{"converged": false, "since": 0, "resources": -1, "failed": -2, "error": ""}')
    for doc in docs:
        await client.put((SUMMARY + "h2").encode(), doc.encode())
        text, _ = report(await host_statuses(client))
        assert "unreadable summary" in text, (doc, text)
        text, _ = report(await host_statuses(client), as_json=True)
        (row,) = json.loads(text, parse_constant=refuse)
        assert row["last_error"] == "unreadable summary", doc


async def test_a_deploy_run_unverified_says_so_in_its_row(client: EtcdClient) -> None:
    """A host run with --allow-unsigned-deploys says why its deploy was not verified; the
    table and the JSON label it UNSIGNED or UNVERIFIED (a label, never the host's text)."""
    from mgmt.deploy.status import UNSIGNED, HostStatus, host_statuses, report, status_key

    for host, unverified in (("a", UNSIGNED), ("b", "no --trusted-keys"), ("c", ""), ("d", "x")):
        status = HostStatus(host, running=2, ready=2, unverified=unverified)
        await client.put(status_key(host).encode(), status.encode())
    await client.put(status_key("e").encode(), HostStatus("e", unverified=UNSIGNED).encode())
    rows = await host_statuses(client)
    lines = report(rows)[0].splitlines()
    assert [re.split(r"\s{2,}", line)[2] for line in lines[1:]] == [
        "2 (UNSIGNED)", "2 (UNVERIFIED)", "2", "2 (UNVERIFIED)", "-"
    ], lines  # fmt: skip
    text, _ = report(rows, as_json=True)
    assert [(r["unverified"], r["warning"]) for r in json.loads(text)] == [
        (UNSIGNED, "UNSIGNED"),
        ("no --trusted-keys", "UNVERIFIED"),
        ("", ""),
        ("x", "UNVERIFIED"),
        (UNSIGNED, ""),  # it runs nothing
    ]


async def test_a_status_cannot_forge_another_hosts_row(client: EtcdClient) -> None:
    """A host writes its own status key only (per-host identities), but its `error` is its
    own text too: a newline in it added a row that looked like another host's."""
    from mgmt.deploy.status import HostStatus, host_statuses, status_key, table

    forged = "bad\nh1  yes  9  9  yes  -\x1b[2J"
    await client.put(status_key("h2").encode(), HostStatus("h2", error=forged).encode())
    text = table(await host_statuses(client))
    assert len(text.splitlines()) == 2 and "\x1b" not in text
    assert text.splitlines()[1].endswith("bad\\nh1  yes  9  9  yes  -\\x1b[2J")


async def test_a_cluster_that_refuses_the_command_is_one_line_exit_1(tmp_path: Path) -> None:
    from tests.e2e.helpers import run_mgmt

    async with members(tmp_path) as nodes:
        admin = EtcdClient([nodes[0].client_url], call_timeout=2)
        try:
            await admin.enable_auth("root", "secret")
        finally:
            await admin.close()
        args = ["deploy", "--insecure-cluster", "--seeds", nodes[0].client_url, "--list"]
        code, text = await asyncio.to_thread(run_mgmt, args)
    assert code == 1 and "Traceback" not in text, text
    assert text.startswith("mgmt: list /_mgmt/deploy-status/, /_mgmt/hosts/, /_mgmt/host-status/: ")
    assert "etcdserver: user name is empty" in text, text
    assert text.count("\n") == 1, text


async def test_the_head_is_the_newest_id_and_records_in_one_read(client: EtcdClient) -> None:
    assert await head(client) == (0, [])
    pushed = [await push_plain(client, bundle(x)) for x in "abc"]
    assert await head(client) == (3, pushed)
    assert await head(client, limit=1) == (3, pushed[-1:])  # what a host reads on a change


async def test_a_rollback_signs_only_what_its_deploy_signed(tmp_path: Path) -> None:
    """`--rollback N` signs N's content anew with the operator's key: a blob or a record
    changed in etcd since N was pushed (by anyone who may write the cluster), or an unsigned
    N, is refused (exit 1, nothing stored), not signed."""
    from tests.e2e.helpers import run_mgmt
    from tests.mgmt.deploy.keys import make_key

    alice = make_key(tmp_path / "keys", "alice")
    good, evil = bundle("good"), bundle("evil")
    async with members(tmp_path) as nodes:
        client = EtcdClient([nodes[0].client_url], call_timeout=2)
        base = ["deploy", "--insecure-cluster", "--seeds", nodes[0].client_url]

        async def rollback(n: int, *flags: str) -> tuple[int, str]:
            flags = flags or ("--sign-key", str(alice.private))
            return await asyncio.to_thread(run_mgmt, [*base, *flags, "--rollback", str(n)])

        try:
            signed = await push(client, good, record_maker(good, alice.private))
            await push_plain(client, bundle("unsigned"))
            code, text = await rollback(2)
            assert code == 1 and "deploy 2 is unsigned" in text, text
            code, text = await rollback(2, "--unsigned")  # as unsigned as it was
            assert code == 0 and "deploy 3 (the content of deploy 2)" in text, text
            # Deploy 1's blob replaced: its name is the hash the record signs, not its content.
            await client.put((BLOBS + good.hash).encode(), evil.encode())
            code, text = await rollback(1)
            assert code == 1 and "blob does not match" in text, text
            # Its record pointed at another blob: the signature no longer covers it.
            await client.put((BLOBS + good.hash).encode(), good.encode())
            await client.put((BLOBS + evil.hash).encode(), evil.encode())
            forged = json.loads(signed.encode())
            forged["hash"] = evil.hash
            await client.put(id_key(1).encode(), json.dumps(forged).encode())
            code, text = await rollback(1)
            assert code == 1 and "signature" in text, text
            assert (await head(client))[0] == 3  # nothing stored
            await client.put(id_key(1).encode(), signed.encode())
            code, text = await rollback(1)
            assert (
                code == 0
                and f"deploy 4 (the content of deploy 1): yaml g.yaml, {good.hash[:12]}" in text
            ), text
        finally:
            await client.close()


async def test_the_list_escapes_what_the_cluster_says(client: EtcdClient) -> None:
    """Records are anyone's who may write the cluster: `--list` shows their fields on one
    line each, control characters escaped (no rows or terminal escapes of theirs)."""
    from mgmt.deploy.cli import list_text

    first = await push_plain(client, bundle("a"))
    forged = replace(first, id=2, parent=1, entry="g.yaml\x1b[2K\rfake\nrow", key="SHA256:\x1b[31m")
    await client.put(id_key(2).encode(), forged.encode())
    text = await list_text(client)
    assert len(text.splitlines()) == 3 and "\x1b" not in text and "\r" not in text, text
    assert "yaml g.yaml\\x1b[2K\\rfake\\nrow" in text and "SHA256:\\x1b[31m" in text, text


async def test_a_rebuilt_cluster_numbers_its_deploys_above_what_hosts_run(
    client: EtcdClient,
) -> None:
    """A cluster that lost its deploys (rebuilt, or every member left at once) while its
    hosts kept running deploy 32: hosts never switch to an older id, so the next deploy is 33
    (on parent 0), not 1, which every host would keep as older. A host writes its own
    status: an id no cluster reaches is not believed."""
    from mgmt.deploy.status import HostStatus, status_key

    await client.put(status_key("h1").encode(), HostStatus("h1", running=32, ready=32).encode())
    await client.put(status_key("h2").encode(), HostStatus("h2", running=30).encode())
    await client.put(status_key("bad").encode(), HostStatus("bad", running=10**19).encode())
    await client.put(status_key("junk").encode(), b"[1")
    first = await push_plain(client, bundle("a"))
    assert (first.id, first.parent) == (33, 0)
    second = await push_plain(client, bundle("b"))
    assert (second.id, second.parent) == (34, 33)
    assert await head(client) == (34, [first, second])


async def test_a_deploy_without_a_quorum_is_one_line_naming_who_does_not_answer(
    tmp_path: Path,
) -> None:
    """tester9's finding: `mgmt deploy` to a cluster that lost its quorum said `list
    /_mgmt/deploy-status/: context deadline exceeded` after its reads' deadline. The member
    reached says it has no leader (a status read, served without one): one line, which
    voting members do not answer, nothing stored."""
    from tests.e2e.helpers import run_mgmt

    src = tmp_path / "src"
    src.mkdir()
    (src / "main.mcl").write_text('print "p" {\n\tmsg => "hi",\n}\n')
    async with members(tmp_path / "etcd", 3) as nodes:
        first, *others = nodes
        client = EtcdClient([first.client_url], call_timeout=2)
        try:
            await asyncio.gather(*(n.proc.stop(timeout=1) for n in others))
            async with asyncio.timeout(30):  # its election timeout (100 ms): it has no leader
                while (await client.status()).leader:  # a round trip each: no sleep needed
                    pass
            args = ["deploy", "--insecure-cluster", "--seeds", first.client_url, "--direct"]
            code, text = await asyncio.to_thread(run_mgmt, [*args, "--unsigned", "lang", f"{src}/"])
            assert code == 1, text
            last = text.strip().splitlines()[-1]
            assert last == (
                "mgmt: the cluster has no quorum (no leader): 1 of 3 voting members answer; "
                "not answering: m1, m2: nothing stored"
            ), text
        finally:
            await client.close()
