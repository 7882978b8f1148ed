"""TLS (certificates generated here) and etcd authentication, for real."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import Cluster
from mgmt.cluster.options import TLSFiles
from mgmt.cluster.world import EtcdWorld
from tests.mgmt.cluster.certs import CA
from tests.mgmt.cluster.helpers import members, options, pid_alive


async def test_tls_for_clients_and_peers(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    leaves = {name: ca.leaf(name) for name in ("m0", "m1", "agent")}
    files = TLSFiles(ca.path, leaves["m0"].cert, leaves["m0"].key)
    async with members(tmp_path, 2, scheme="https", tls=files, peer_tls=files) as nodes:
        assert all(n.client_url.startswith("https://") for n in nodes)
        argv = nodes[0].proc.spec.argv()
        assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
        urls = [n.client_url for n in nodes]
        agent = TLSFiles(ca.path, leaves["agent"].cert, leaves["agent"].key)
        good = EtcdClient(urls, tls=agent, call_timeout=1, retry_for=2)
        no_cert = EtcdClient(urls, tls=TLSFiles(ca=ca.path), call_timeout=0.5, retry_for=0.5)
        other = CA(tmp_path / "other", "another CA")
        stranger = other.leaf("stranger")
        wrong_ca = EtcdClient(
            urls,
            tls=TLSFiles(other.path, stranger.cert, stranger.key),
            call_timeout=0.5,
            retry_for=0.5,
        )
        try:
            world = EtcdWorld(good, "h")
            await world.str_set("secret", "1")
            assert await world.str_get("secret") == "1"
            for client in (no_cert, wrong_ca):
                with pytest.raises(WorldError):
                    await EtcdWorld(client, "h").str_get("secret")
        finally:
            for client in (good, no_cert, wrong_ca):
                await client.close()


async def test_authentication_is_enabled_at_bootstrap_and_the_password_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cret-Pa55word"
    opts = options("h1", user="root", password=password)
    assert password not in repr(opts)
    cluster = Cluster(opts, tmp_path / "prefix")
    try:
        assert await cluster.start()
        assert cluster.member is not None
        pid = cluster.member.pid
        await cluster.world.str_set("k", "v")  # the agent itself is authenticated
        url = opts.advertise_client_urls
        anonymous = EtcdClient(url, call_timeout=0.5, retry_for=0.5)
        wrong = EtcdClient(url, user="root", password="nope", call_timeout=0.5, retry_for=0.5)
        right = EtcdClient(url, user="root", password=password, call_timeout=0.5, retry_for=2)
        try:
            with pytest.raises(WorldError):
                await EtcdWorld(anonymous, "x").str_get("k")
            with pytest.raises(WorldError):
                await EtcdWorld(wrong, "x").str_get("k")
            assert await EtcdWorld(right, "x").str_get("k") == "v"
        finally:
            for client in (anonymous, wrong, right):
                await client.close()
    finally:
        await cluster.stop()
    assert pid is not None and not pid_alive(pid)
    assert password not in caplog.text
    assert "authentication enabled for root" in caplog.text


async def test_a_non_root_user_gets_the_root_role(tmp_path: Path) -> None:
    opts = replace(options("h1"), user="mgmt", password="pw-for-mgmt")
    cluster = Cluster(opts, tmp_path / "prefix")
    try:
        assert await cluster.start()
        await cluster.world.str_set("k", "v")
        members_ = await cluster.client.members()  # a root-only call
        assert [m.name for m in members_] == ["h1"]
    finally:
        await cluster.stop()
