"""End to end: a hostile local user (uid 65534, through setpriv) against what a root agent is
given or reads besides its graph (the eighth session's hostile helper, 2026-12-06): the
credentials on its command line (--tls-*, --cluster-ca-dir's ca.pem, --cluster-password-file,
--trusted-keys), the file net/http.response reads, and http:server:proxy's cache. What another
user could swap or plant there must not be trusted (docs/security.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    MGMT,
    NOBODY,
    SETPRIV,
    Daemon,
    as_nobody,
    has_content,
    needs_another_user,
    run_mgmt,
    searchable_dir,
    wait_path,
)
from tests.mgmt.cluster.certs import CA
from tests.mgmt.cluster.helpers import free_ports

pytestmark = needs_another_user
URLS = ("client", "server")


def _graph(tmp_path: Path) -> Path:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        f'graph: g\nresources:\n  file:\n    - {{name: {tmp_path}/made, content: "x\\n"}}\n'
    )
    return graph


def _cluster_run(tmp_path: Path, *flags: str, timeout: float = 60) -> tuple[int, str]:
    client, peer = free_ports(2)
    return run_mgmt(
        [
            "run",
            "--tmp-prefix",
            "--converged-timeout=0",
            f"--client-urls=https://127.0.0.1:{client}",
            f"--server-urls=https://127.0.0.1:{peer}",
            *flags,
            "yaml",
            str(_graph(tmp_path)),
        ],
        timeout=timeout,
    )


def test_a_tls_ca_in_another_users_directory_is_not_trusted(tmp_path: Path) -> None:
    """The operator's certificates copied into a directory uid 65534 owns (a shared `pki/`):
    before, only --tls-key's own owner and mode were checked, so they swapped `ca.pem` for a
    bundle with their CA, and etcd (`--trusted-ca-file`) took their client certificate: an
    `etcdctl put` of theirs wrote the cluster (tried by hand on main 34747871)."""
    ours = CA(tmp_path / "ours")
    leaf = ours.leaf("h1")
    theirs = CA(tmp_path / "theirs", name="their CA")
    pki = tmp_path / "pki"
    pki.mkdir()
    shutil.copy(ours.path, pki / "ca.pem")
    shutil.copy(leaf.cert, pki / "host.pem")
    shutil.copy(leaf.key, pki / "host.key")  # root's, 0600: what was checked
    shutil.copy(theirs.path, pki / "their.pem")
    os.chown(pki, NOBODY, NOBODY)
    os.chown(pki / "their.pem", NOBODY, NOBODY)
    as_nobody(pki, "cat ca.pem their.pem > ca.new && mv -f ca.new ca.pem")
    assert (pki / "ca.pem").stat().st_uid == NOBODY  # their bundle: our CA and theirs
    code, out = _cluster_run(
        tmp_path,
        f"--tls-ca={pki}/ca.pem",
        f"--tls-cert={pki}/host.pem",
        f"--tls-key={pki}/host.key",
    )
    assert code == 2, out
    assert f"--tls-ca: {pki} is owned by uid {NOBODY}: refusing to trust {pki}/ca.pem" in out
    assert "Traceback" not in out and not (tmp_path / "made").exists()
    # Their file in a directory of root's is refused by its owner; a key of root's in their
    # directory by the directory (the key's own owner and mode were all that was looked at).
    safe = tmp_path / "safe"
    safe.mkdir()
    for name in ("ca.pem", "host.pem", "host.key"):
        shutil.copy(pki / name if name != "ca.pem" else ours.path, safe / name)
    os.chown(safe / "host.pem", NOBODY, NOBODY)
    code, out = _cluster_run(
        tmp_path,
        f"--tls-ca={safe}/ca.pem",
        f"--tls-cert={safe}/host.pem",
        f"--tls-key={pki}/host.key",
    )
    assert code == 2 and f"--tls-cert: {safe}/host.pem is owned by uid {NOBODY}" in out, out
    os.chown(safe / "host.pem", 0, 0)
    code, out = _cluster_run(
        tmp_path,
        f"--tls-ca={safe}/ca.pem",
        f"--tls-cert={safe}/host.pem",
        f"--tls-key={pki}/host.key",
    )
    assert code == 2 and f"--tls-key: {pki} is owned by uid {NOBODY}" in out, out
    # All of them root's: the cluster runs.
    code, out = _cluster_run(
        tmp_path,
        f"--tls-ca={safe}/ca.pem",
        f"--tls-cert={safe}/host.pem",
        f"--tls-key={safe}/host.key",
    )
    assert code == 0, out
    assert (tmp_path / "made").read_text() == "x\n"


@pytest.mark.parametrize("planted", ["fifo", "readable", "link"])
def test_a_cluster_password_file_another_user_could_change_or_read(
    tmp_path: Path, planted: str
) -> None:
    """--cluster-password-file was read as given: uid 65534's FIFO at its path held the root
    agent in its start for good (nothing applied, no line said); their file (or link) set the
    cluster's root password to theirs; and a 0644 file gave every local user the password.
    Now it is read as a key is: exit 2, one line naming it, nothing applied."""
    home = tmp_path / "a"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    secret = tmp_path / "pw"
    secret.write_text("root-etcd-password\n")
    if planted == "fifo":
        as_nobody(home, "mkfifo pw")
        given, said = home / "pw", f"{home} is owned by uid {NOBODY}"
    elif planted == "link":
        secret.chmod(0o600)
        as_nobody(home, "ln -s /dev/zero pw")
        given, said = home / "pw", f"{home} is owned by uid {NOBODY}"
    else:
        given, said = secret, f"{secret} (owner uid 0, mode 0644): the cluster's password"
    code, out = run_mgmt(
        [
            "run",
            "--tmp-prefix",
            "--converged-timeout=0",
            "--insecure-cluster",
            *(
                f"--{kind}-urls=http://127.0.0.1:{port}"
                for kind, port in zip(URLS, free_ports(2), strict=True)
            ),
            "--cluster-user=root",
            f"--cluster-password-file={given}",
            "yaml",
            str(_graph(tmp_path)),
        ],
        timeout=30,  # a bound against the old hang only
    )
    assert code == 2, out
    assert f"--cluster-password-file: {said}" in out, out
    assert "root-etcd-password" not in out and not (tmp_path / "made").exists()


def test_a_cluster_ca_certificate_another_user_can_write_is_not_trusted(tmp_path: Path) -> None:
    """--cluster-ca-dir (root's, 0755) whose `ca.pem` uid 65534 owns (copied as them): they
    wrote a bundle of it and their own CA there; the agent copied it as read into
    `cluster-tls/ca.pem`, etcd's `--trusted-ca-file`, and their certificate wrote the cluster
    (tried by hand on main 34747871: `etcdctl put` answered OK). Now refused at start."""
    ca_dir = tmp_path / "ca"
    code, out = run_mgmt(
        ["cluster", "mint-cert", "x", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "x")]
    )
    assert code == 0, out
    ca_dir.chmod(0o755)
    os.chown(ca_dir / "ca.pem", NOBODY, NOBODY)
    home = tmp_path / "a"
    home.mkdir()
    shutil.copy(CA(tmp_path / "theirs", name="their CA").path, home / "their.pem")
    os.chown(home, NOBODY, NOBODY)
    os.chown(home / "their.pem", NOBODY, NOBODY)
    tmp_path.chmod(0o755)  # (entered from here: the directories above stay root's alone)
    as_nobody(ca_dir, "cat ca.pem ../a/their.pem > ../a/b.pem && cat ../a/b.pem > ca.pem")
    code, out = _cluster_run(tmp_path, f"--cluster-ca-dir={ca_dir}")
    assert code == 2, out
    assert (
        f"--cluster-ca-dir: {ca_dir}/ca.pem (owner uid {NOBODY}, mode 0644): a certificate must "
        "be a file owned by this agent's user"
    ) in out, out
    assert not (tmp_path / "made").exists()


def test_trusted_keys_through_another_users_link_are_refused(tmp_path: Path) -> None:
    """--trusted-keys named through uid 65534's directory (their link to root's keys file):
    only where the link led was checked (realpath), and the file was read again by its path
    (and by ssh-keygen) after: their link, pointed at a keys file of theirs meanwhile, made
    this host trust their key. Now the path as given must be root's or ours all the way."""
    key = tmp_path / "op"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    keys = tmp_path / "keys"
    keys.write_text("op " + " ".join(Path(f"{key}.pub").read_text().split()[:2]) + "\n")
    home = tmp_path / "a"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    tmp_path.chmod(0o755)
    as_nobody(home, "ln -s ../keys keys")
    deploy = ["--deploy", f"--sign-key={key}"]
    code, out = _cluster_run(tmp_path, *deploy, f"--trusted-keys={home}/keys")
    assert code == 2, out
    assert f"--trusted-keys: {home} is owned by uid {NOBODY}: whoever can change it" in out, out
    assert not (tmp_path / "made").exists()
    code, out = _cluster_run(tmp_path, *deploy, f"--trusted-keys={keys}")  # root's: runs
    assert code == 0, out


async def test_http_response_follows_no_link_another_user_planted(tmp_path: Path) -> None:
    """net/http.response read the http:client's file by its path, links followed: uid 65534,
    whose directory the download lands in, replaced it with a link to a root-only file; the
    resource refused the link, but its next poll published the path (its stat followed the
    link), and the function read the secret into the program, which wrote it to a 0644 file
    (tried on main 34747871). Their FIFO would have stopped the loop (the read is on it)."""
    from tests.resources.test_http_server import free_port

    secret = tmp_path / "secret"
    secret.write_text("root-only-secret\n")
    secret.chmod(0o600)
    home = tmp_path / "a"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chmod(tmp_path, 0o755)
    port, dst, out = free_port(), home / "page", tmp_path / "out"
    program = tmp_path / "h.mcl"
    program.write_text(
        f"""
        import "fmt"
        import "net/http"
        http:server ":{port}" {{}}
        http:server:file "/page" {{ data => "page\\n", }}
        http:client "{dst}" {{ url => "http://127.0.0.1:{port}/page", Meta:poll => 1, }}
        Http:Server[":{port}"] -> Http:Client["{dst}"]
        $r = http.response("{dst}")
        file "{out}" {{ state => "exists", content => fmt.printf("%s", $r->output), }}
        """
    )
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await wait_path(out, has_content("page\n"), 30)
        as_nobody(home, "ln -s ../secret new && mv -f new page")
        await daemon.wait_log(f"could not read the output of '{dst}': refusing to follow", 30)
        assert "root-only-secret" not in out.read_text()
        assert await daemon.stop() == 0
    assert "root-only-secret" not in daemon.log


async def test_a_proxy_cache_another_user_made_is_not_served(tmp_path: Path) -> None:
    """http:server:proxy's `cache` in a shared directory (sticky, as /tmp): uid 65534 made it
    first, with their `page` in it; the root agent's proxy served their file as the head's to
    every client (tried on main 34747871). Now their cache is neither read nor written: the
    page comes from the head, and a warning says why it was not kept."""
    import urllib.request

    from tests.resources.test_http_server import free_port

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    os.chmod(tmp_path, 0o755)
    as_nobody(shared, "mkdir cache && echo theirs > cache/page")
    port, cache = free_port(), shared / "cache"
    program = tmp_path / "p.mcl"
    program.write_text(
        f"""
        http:server ":{port}" {{}}
        http:server:file "/up/page" {{ data => "genuine\\n", }}
        http:server:proxy "/p/" {{
            head => "http://127.0.0.1:{port}/up/", sub => "/p/", cache => "{cache}/",
        }}
        """
    )

    def get() -> str:
        url = f"http://127.0.0.1:{port}/p/page"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await daemon.wait_log("converged")
        assert await asyncio.to_thread(get) == "genuine\n"
        said = f"not cached: page: {cache} is owned by uid {NOBODY}"
        await daemon.wait_log(said)
        for _ in range(4):  # nor from the cache after; said once, not at every request
            assert await asyncio.to_thread(get) == "genuine\n"
        assert await daemon.stop() == 0
    assert daemon.log.count(said) == 1, daemon.log


def test_admit_refuses_credentials_another_user_could_swap(tmp_path: Path) -> None:
    """`mgmt cluster admit --cert-dir DIR` signs in to the cluster as root with DIR's key and
    trusts DIR's ca.pem: before (2026-12-06, ninth session) nothing in DIR was checked, so uid
    65534, owning DIR, swapped in their CA and the command trusted their server as the cluster
    (it went on to connect). Now refused before connecting, one line, exit 2."""
    ours = CA(tmp_path / "ours")
    leaf = ours.leaf("root")
    theirs = CA(tmp_path / "theirs", name="their CA")
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    for name, source in (("ca.pem", ours.path), ("host.pem", leaf.cert), ("host.key", leaf.key)):
        shutil.copy(source, creds / name)
        (creds / name).chmod(0o600 if name == "host.key" else 0o644)
    shutil.copy(theirs.path, creds / "their.pem")
    os.chown(creds, NOBODY, NOBODY)
    os.chown(creds / "their.pem", NOBODY, NOBODY)
    as_nobody(creds, "cat ca.pem their.pem > ca.new && mv -f ca.new ca.pem")
    (port,) = free_ports(1)
    admit = ["cluster", "admit", "h2", "--endpoints", f"https://127.0.0.1:{port}"]
    code, out = run_mgmt([*admit, "--cert-dir", str(creds)])
    assert code == 2 and out.count("\n") == 1, out
    assert f"--cert-dir: {creds} is owned by uid {NOBODY}: refusing to trust" in out
    # Root's directory again, their ca.pem left in it: refused by the file's owner.
    os.chown(creds, 0, 0)
    code, out = run_mgmt([*admit, "--cert-dir", str(creds)])
    assert code == 2 and f"{creds}/ca.pem is owned by uid {NOBODY}" in out, out
    # A key others may read: anyone could sign in as root.
    (creds / "ca.pem").unlink()
    shutil.copy(ours.path, creds / "ca.pem")
    (creds / "host.key").chmod(0o644)
    code, out = run_mgmt([*admit, "--cert-dir", str(creds)])
    assert code == 2 and f"{creds}/host.key (owner uid 0, mode 0644)" in out, out
    # All root's: checked, then the cluster is tried (none listens: exit 1).
    (creds / "host.key").chmod(0o600)
    code, out = run_mgmt([*admit, "--cert-dir", str(creds)], timeout=120)
    assert code == 1 and "Traceback" not in out, out


def test_the_sudo_invokers_own_credentials_are_taken(tmp_path: Path) -> None:
    """`sudo mgmt cluster admit --cert-dir ~/creds` (and `sudo mgmt deploy`, `sudo mgmt status
    --cluster` with --tls-* files in the operator's home): the operator's own credentials, in
    their 0700 directory, were refused on main 6729fd9a ("~/creds is owned by uid 1000"), while
    `--sign-key` took their key. Now the sudo invoker's files count as root's do (SUDO_UID:
    uid 65534 here, a real other user): the command gets as far as the cluster (none listens:
    exit 1). Without SUDO_UID, or with another user's, refused as before; and their key must
    still be theirs alone (0600)."""
    ca = CA(tmp_path / "ca")
    leaf = ca.leaf("root")
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)
    as_nobody(home, "mkdir -m 0700 creds")
    creds = home / "creds"
    for name, source in (("ca.pem", ca.path), ("host.pem", leaf.cert), ("host.key", leaf.key)):
        shutil.copy(source, creds / name)
        (creds / name).chmod(0o600 if name == "host.key" else 0o644)
        os.chown(creds / name, NOBODY, NOBODY)
    (port,) = free_ports(1)
    admit = ["cluster", "admit", "h2", "--endpoints", f"https://127.0.0.1:{port}"]
    admit += ["--cert-dir", str(creds)]
    code, out = run_mgmt(admit, timeout=120, env={"SUDO_UID": str(NOBODY)})
    assert code == 1 and "Traceback" not in out and "refusing" not in out, out
    as_nobody(creds, "umask 077 && echo secret > pw")
    status = ["status", "--cluster", "--seeds", f"https://127.0.0.1:{port}"]
    status += [f"--tls-{what}={creds / name}" for what, name in _TLS_FILES]
    status += ["--cluster-user", "root", "--cluster-password-file", str(creds / "pw")]
    code, out = run_mgmt(status, timeout=120, env={"SUDO_UID": str(NOBODY)})
    assert code == 1 and "refusing" not in out, out
    _refused_but_to_the_invoker(status, f"mgmt: {home} is owned by uid {NOBODY}: refusing")
    _refused_but_to_the_invoker(admit, f"--cert-dir: {home} is owned by uid {NOBODY}")
    as_nobody(creds, "chmod 0640 host.key")
    code, out = run_mgmt(admit, env={"SUDO_UID": str(NOBODY)})
    assert code == 2 and f"or the sudo invoker's (uid {NOBODY}), mode 0600" in out, out


_TLS_FILES = (("ca", "ca.pem"), ("cert", "host.pem"), ("key", "host.key"))


def test_sudo_uid_means_nothing_to_a_process_not_root() -> None:
    """SUDO_UID is root's environment only under sudo: a process of another user (uid 65533
    here) sets its own (`SUDO_UID=65534 mgmt ...`, or one left from `sudo -u agent -s`). On
    main 8623533e such a process took uid 65534's files as its own: `mgmt status --cluster`
    as uid 65533 with SUDO_UID=65534 trusted a `ca.pem` in 65534's directory (exit 1, the
    cluster tried with their CA). Now refused as without SUDO_UID (exit 2, who owns it)."""
    with searchable_dir("mgmt-sudo-uid-") as top:  # uid 65533 must search it
        ca = CA(top / "ca")
        leaf = ca.leaf("op")
        theirs, mine = top / "theirs", top / "mine"
        theirs.mkdir(mode=0o755)
        mine.mkdir(mode=0o700)
        shutil.copy(ca.path, theirs / "ca.pem")
        shutil.copy(leaf.cert, mine / "host.pem")
        shutil.copy(leaf.key, mine / "host.key")
        (theirs / "ca.pem").chmod(0o644)
        (mine / "host.key").chmod(0o600)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(theirs)], check=True)
        subprocess.run(["chown", "-R", f"{NOBODY - 1}:{NOBODY - 1}", str(mine)], check=True)
        (port,) = free_ports(1)
        status = ["status", "--cluster", "--prefix", str(mine)]
        status += ["--seeds", f"https://127.0.0.1:{port}", f"--tls-ca={theirs}/ca.pem"]
        status += [f"--tls-cert={mine}/host.pem", f"--tls-key={mine}/host.key"]
        assert SETPRIV is not None
        user = [SETPRIV, f"--reuid={NOBODY - 1}", f"--regid={NOBODY - 1}", "--clear-groups"]
        proc = subprocess.run(
            [*user, *MGMT, *status],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=top,
            env={**os.environ, "SUDO_UID": str(NOBODY)},
            check=False,
        )
        out = proc.stderr + proc.stdout
        assert proc.returncode == 2 and f"{theirs} is owned by uid {NOBODY}: refusing" in out, out


def _refused_but_to_the_invoker(argv: list[str], says: str) -> None:
    """`mgmt ARGV` refused (exit 2, `says`) without SUDO_UID, and with another user's."""
    for env in ({"SUDO_UID": ""}, {"SUDO_UID": str(NOBODY - 1)}):
        code, out = run_mgmt(argv, env=env)
        assert code == 2 and says in out, out


@pytest.mark.skipif(shutil.which("puppet") is None, reason="needs puppet")
def test_puppet_code_and_data_another_user_could_change_are_refused(tmp_path: Path) -> None:
    """--modulepath, --puppet-environment and --hiera-config: a module's manifest and Hiera's
    data become the resources a root agent applies. Before (2026-12-06, ninth session), a
    module uid 65534 wrote in their own directory ran as root: here it made a file of theirs
    choosing. Now refused before anything runs, one line each, exit 2, naming who controls it;
    the same tree of root's runs."""
    mods = tmp_path / "mods"
    mods.mkdir(mode=0o755)
    os.chown(mods, NOBODY, NOBODY)
    made = tmp_path / "made-by-them"
    as_nobody(
        mods,
        f'mkdir -p m/manifests && echo \'class m {{ file {{ "{made}": content => "x" }} }}\' '
        "> m/manifests/init.pp",
    )
    run = ["run", "--tmp-prefix", "--converged-timeout=0"]
    code, out = run_mgmt([*run, "--modulepath", str(mods), "puppet", "-e", "include m"], 180)
    assert code == 2 and f"--modulepath: {mods} is owned by uid {NOBODY}" in out, out
    assert not made.exists() and "Traceback" not in out
    # Root's directory, a module of theirs in it: the walk finds it.
    os.chown(mods, 0, 0)
    code, out = run_mgmt([*run, "--modulepath", str(mods), "puppet", "-e", "include m"], 180)
    assert code == 2 and f"--modulepath: {mods}/m is owned by uid {NOBODY}" in out, out
    assert not made.exists()
    # An environment and a global hiera.yaml: their data/ beside it, or a file others may write.
    env = tmp_path / "env"
    (env / "data").mkdir(parents=True)
    (env / "hiera.yaml").write_text("---\nversion: 5\n")
    (env / "data" / "common.yaml").write_text("---\n")
    os.chown(env / "data" / "common.yaml", NOBODY, NOBODY)
    code, out = run_mgmt([*run, "--puppet-environment", str(env), "puppet", "-e", "notice(1)"])
    assert code == 2 and f"--puppet-environment: {env}/data/common.yaml is owned by uid" in out
    code, out = run_mgmt([*run, "--hiera-config", f"{env}/hiera.yaml", "puppet", "-e", "notice(1)"])
    assert code == 2 and f"--hiera-config: {env}/data/common.yaml is owned by uid" in out, out
    os.chown(env / "data" / "common.yaml", 0, 0)
    (env / "hiera.yaml").chmod(0o666)
    code, out = run_mgmt(
        ["check", "--hiera-config", f"{env}/hiera.yaml", "puppet", "-e", "notice(1)"]
    )
    assert code == 2 and f"{env}/hiera.yaml can be written by others (mode 0666)" in out, out
    # All root's: it runs (their module, now root's, makes its file).
    (env / "hiera.yaml").chmod(0o644)
    subprocess.run(["chown", "-R", "0:0", str(mods)], check=True)
    flags = ["--modulepath", str(mods), "--puppet-environment", str(env)]
    code, out = run_mgmt([*run, *flags, "puppet", "-e", "include m"], 180)
    assert code == 0 and made.exists(), out


def test_the_sudo_invokers_own_sign_key_is_taken(tmp_path: Path) -> None:
    """`sudo mgmt deploy --prefix /var/lib/mgmt --sign-key ~/.ssh/deploy` (docs/deploys.md:
    the host's credentials are root's): the operator's key, 0600 in their 0700 ~/.ssh, was
    refused by the ninth session's change ("~/.ssh is owned by uid 1000"), though they may
    name any key root can read anyway. Now the sudo invoker's (SUDO_UID; uid 65534 here, a
    real other user's ssh-keygen key) counts as this user's: the command gets as far as the
    cluster (none listens: exit 1). Without SUDO_UID, or another user's, or theirs 0644:
    refused as before."""
    program = tmp_path / "g.yaml"
    program.write_text("graph: g\n")
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)
    as_nobody(home, "mkdir -m 0700 .ssh && ssh-keygen -q -t ed25519 -N '' -f .ssh/deploy")
    key = home / ".ssh" / "deploy"
    (port,) = free_ports(1)
    deploy = ["deploy", "--insecure-cluster", "--seeds", f"http://127.0.0.1:{port}"]
    deploy += ["--prefix", str(tmp_path / "no-agent"), "--sign-key", str(key)]
    deploy += ["yaml", str(program)]
    code, out = run_mgmt(deploy, 120, env={"SUDO_UID": str(NOBODY)})
    assert code == 1 and "no etcd member reachable" in out, out
    _refused_but_to_the_invoker(deploy, f"--sign-key: {home} is owned by uid {NOBODY}")
    as_nobody(home, "chmod 0644 .ssh/deploy")
    code, out = run_mgmt(deploy, env={"SUDO_UID": str(NOBODY)})
    assert code == 2 and f"or, under sudo, uid {NOBODY}'s with mode 0600" in out, out


@pytest.mark.skipif(shutil.which("puppet") is None, reason="needs puppet")
def test_a_manifests_own_environment_another_user_could_change_is_refused(
    tmp_path: Path,
) -> None:
    """A control repository (manifests/site.pp, hiera.yaml, modules/) of root's is the
    manifest's environment without a flag; its modules/ holds uid 65534's module. Named with
    --puppet-environment it is refused (above); found from the manifest, only the directory
    itself was looked at until the ninth session's review: their module ran as root and
    made a file of their choosing. Now the same refusal, exit 2, one line; root's, it runs."""
    ctl = tmp_path / "ctl"
    (ctl / "manifests").mkdir(parents=True)
    (ctl / "modules").mkdir()
    (ctl / "hiera.yaml").write_text("---\nversion: 5\n")
    (ctl / "manifests" / "site.pp").write_text("include m\n")
    (ctl / "modules" / "m").mkdir()
    os.chown(ctl / "modules" / "m", NOBODY, NOBODY)
    made = tmp_path / "made-by-them"
    as_nobody(
        ctl / "modules" / "m",
        f'mkdir manifests && echo \'class m {{ file {{ "{made}": content => "x" }} }}\' '
        "> manifests/init.pp",
    )
    run = ["run", "--tmp-prefix", "--converged-timeout=0", "puppet", str(ctl / "manifests/site.pp")]
    code, out = run_mgmt(run, 180)
    assert code == 2 and out.count("\n") == 1, out
    assert f"its environment {ctl} (hiera.yaml there): {ctl}/modules/m is owned by uid" in out
    assert not made.exists() and "Traceback" not in out
    subprocess.run(["chown", "-R", "0:0", str(ctl)], check=True)
    code, out = run_mgmt(run, 180)
    assert code == 0 and made.exists(), out


def _program_and_key(tmp_path: Path, mode: int) -> tuple[Path, Path]:
    """An empty graph to deploy, and the directory (made with `mode`) of a new Ed25519 key `k`
    (ssh-keygen's: 0600, this user's)."""
    program = tmp_path / "g.yaml"
    program.write_text("graph: g\n")
    keys = tmp_path / "keys"
    keys.mkdir(mode=mode)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "k")], check=True
    )
    return program, keys


def test_a_sign_key_another_user_could_change_or_read_is_refused(tmp_path: Path) -> None:
    """`mgmt deploy --sign-key`: before (2026-12-06, ninth session) an Ed25519 key was read as
    given and signed with in-process: 0644 (`ssh-keygen -Y sign` itself refuses it), uid
    65534's own, or in their directory, where they could swap it for theirs. Now as
    --cluster-password-file: refused before connecting, one line, exit 2."""
    program, keys = _program_and_key(tmp_path, 0o755)
    (port,) = free_ports(1)
    deploy = ["deploy", "--insecure-cluster", "--seeds", f"http://127.0.0.1:{port}"]
    deploy += ["--prefix", str(tmp_path / "no-agent")]

    def refused(key: Path, says: str) -> None:
        code, out = run_mgmt([*deploy, "--sign-key", str(key), "yaml", str(program)])
        assert code == 2 and out.count("\n") == 1 and says in out, out
        assert "Traceback" not in out

    (keys / "k").chmod(0o644)
    refused(keys / "k", f"{keys}/k (owner uid 0, mode 0644): a private key must be")
    (keys / "k").chmod(0o640)  # root's own key: ssh's rule (ssh-keygen -Y sign's), no group
    refused(keys / "k", "must be this user's (uid 0) with mode 0600\n")
    (keys / "k").chmod(0o600)
    os.chown(keys / "k", NOBODY, NOBODY)
    refused(keys / "k", f"--sign-key: {keys}/k is owned by uid {NOBODY}: refusing to sign")
    os.chown(keys / "k", 0, 0)
    os.chown(keys, NOBODY, NOBODY)
    refused(keys / "k", f"--sign-key: {keys} is owned by uid {NOBODY}: refusing to sign")
    os.chown(keys, 0, 0)
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", NOBODY, NOBODY)
    as_nobody(tmp_path / "theirs", "ln -s ../keys/k k")  # their link to root's key
    refused(tmp_path / "theirs" / "k", "refusing to sign")
    # Root's, 0600, in root's directory: taken; no cluster listens there (exit 1).
    code, out = run_mgmt([*deploy, "--sign-key", str(keys / "k"), "yaml", str(program)], 120)
    assert code == 1 and "no etcd member reachable" in out, out


def test_a_relative_sign_key_is_read_from_the_current_directory(tmp_path: Path) -> None:
    """`mgmt deploy --sign-key k` from the key's directory: the checks took `k` from the
    current directory, the read (safefs.open_trusted) from "/": "cannot read it: No such file
    or directory" (or /k read, unchecked, had it existed) after the ninth session's change;
    BASE read it. Now the key is read where it was checked: the command gets as far as the
    cluster (none listens: exit 1)."""
    from tests.e2e.helpers import MGMT

    program, keys = _program_and_key(tmp_path, 0o700)
    (port,) = free_ports(1)
    argv = [*MGMT, "deploy", "--insecure-cluster", "--seeds", f"http://127.0.0.1:{port}"]
    argv += ["--prefix", str(tmp_path / "no-agent"), "--sign-key", "k", "yaml", str(program)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        argv, cwd=keys, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    out = done.stderr + done.stdout
    assert done.returncode == 1 and "no etcd member reachable" in out, out


async def test_a_proxy_cache_directory_another_user_owns_gets_no_download(tmp_path: Path) -> None:
    """The cache itself root's, a directory in it uid 65534's (left from a tree they once
    owned): reads refused it already, but the writer made the file's directories without
    looking at the ones there, and stored the download in theirs (before 2026-12-06, ninth
    session), where they could swap it. Now it is not kept there, and a warning says why."""
    import urllib.request

    from tests.resources.test_http_server import free_port

    cache = tmp_path / "cache"
    (cache / "sub").mkdir(parents=True)
    os.chown(cache / "sub", NOBODY, NOBODY)
    port = free_port()
    program = tmp_path / "p.mcl"
    program.write_text(
        f"""
        http:server ":{port}" {{}}
        http:server:file "/up/sub/page" {{ data => "genuine\\n", }}
        http:server:file "/up/other/page" {{ data => "kept\\n", }}
        http:server:proxy "/p/" {{
            head => "http://127.0.0.1:{port}/up/", sub => "/p/", cache => "{cache}/",
        }}
        """
    )

    def get(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/p/{path}", timeout=10) as reply:
            return str(reply.read().decode())

    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await daemon.wait_log("converged")
        assert await asyncio.to_thread(get, "sub/page") == "genuine\n"
        await daemon.wait_log(f"not cached: sub/page: sub is owned by uid {NOBODY}")
        assert await asyncio.to_thread(get, "other/page") == "kept\n"
        await daemon.wait_log("cached: other/page")
        assert await daemon.stop() == 0
    assert not (cache / "sub" / "page").exists()
    assert (cache / "other" / "page").read_text() == "kept\n"
