"""Every example graph runs in cron mode with the real `mgmt` command, twice.

The first run converges (exit 0); the second run of an idempotent example logs no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import ROOT, run_mgmt
from tests.fakes.systemd import fake_systemd_process
from tests.mgmt.cluster.helpers import cluster_env
from tests.systemd_fixture import systemd_env

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Examples that run commands or print on every run: their second run is not silent.
RERUNS = {
    "exec.yaml",
    "exec-watch.yaml",
    "retry.yaml",
    "diamond.yaml",
    "msg.yaml",
    "noop.yaml",
    "print.yaml",
    "timer.yaml",
    "exec-chain.yaml",
    "sema.yaml",
    "sendrecv.yaml",
    "noop-meta.yaml",
    # libvirt's test driver keeps its state in the mgmt process: every run defines anew.
    "virt.yaml",
    "virt-network.yaml",
    "virt-many.yaml",
    "virt-restart.yaml",
    # each run has a fresh one-member cluster (--tmp-prefix): the keys are written anew.
    "kv.yaml",
    "json-edit-etcd.yaml",
    # each run has a fresh var dir (--tmp-prefix): without mgmt's stamps, archives are rebuilt.
    "archive.yaml",
    # noop: it reports what it would do on every run.
    "net.yaml",
    "schedule.yaml",
    # test logs its params on every check; value stores anew under each --tmp-prefix; the
    # http server logs the port it listens on.
    "test.yaml",
    "value.yaml",
    "http-server.yaml",
    "tftp.yaml",
    "dhcp.yaml",
    "http-server-proxy.yaml",
    "http-server-ui.yaml",
    # exit asks the agent to end on every run; password is made anew under each --tmp-prefix.
    "exit.yaml",
    "password.yaml",
}
# Examples whose runs end with another code than 0: the exit kind's.
CODES = {"exit.yaml": 3}
# What the first run must leave behind: path -> content (None: must not exist).
STATE: dict[str, dict[str, str | None]] = {
    "hello.yaml": {"/tmp/mgmt/hello": "hello world\n"},
    "print.yaml": {"/tmp/mgmt/print/config": "setting = 1\n"},
    "file-chain.yaml": {"/tmp/mgmt/chain/1": "one\n", "/tmp/mgmt/chain/2": "two\n"},
    "file-seed.yaml": {
        "/tmp/mgmt/seed/app.conf": "# edit me: mgmt writes this file once\n",
        "/tmp/mgmt/conf.d/site.conf": "listen 127.0.0.1\n",
    },
    "exec-chain.yaml": {"/tmp/mgmt/exec-chain/log": "a\nb\nc\n"},
    "fan-out.yaml": {f"/tmp/mgmt/fan-out/{i}": f"{i}\n" for i in range(1, 5)},
    "fan-in.yaml": {"/tmp/mgmt/fan-in/all": "a\nb\nc\n"},
    "poll.yaml": {"/tmp/mgmt/poll/file": "polled\n"},
    "limit.yaml": {"/tmp/mgmt/limit/file": "limited\n"},
    "retry.yaml": {"/tmp/mgmt/retry/done": "ok\n"},
    "noop-meta.yaml": {
        "/tmp/mgmt/noop-meta/applied": "yes\n",
        "/tmp/mgmt/noop-meta/reported": None,
    },
    "autoedges.yaml": {
        "/tmp/mgmt/autoedges/a/b/leaf": "leaf\n",
        "/tmp/mgmt/autoedges/a/ran": "ran\n",
    },
    "sendrecv.yaml": {"/tmp/mgmt/sendrecv/kernel": "Linux\n"},
    "hidden.yaml": {"/tmp/mgmt/hidden/never": None, "/tmp/mgmt/hidden/after": "after\n"},
    "file-absent.yaml": {"/tmp/mgmt/absent/stale": None, "/tmp/mgmt/absent/keep": "kept\n"},
    "swap1.yaml": {"/tmp/mgmt/swap/kept": "kept\n", "/tmp/mgmt/swap/old": "old\n"},
    "swap2.yaml": {"/tmp/mgmt/swap/kept": "kept\n", "/tmp/mgmt/swap/new": "new\n"},
    "json-edit.yaml": {
        "/tmp/mgmt/json-edit/doc.json": '{\n\t"feature flags": {\n\t\t"beta": {\n\t\t\t"enabled": '
        'true,\n\t\t\t"percent": 25\n\t\t}\n\t},\n\t"generation": 7,\n\t"service": {\n\t\t'
        '"region": "ca"\n\t}\n}\n'
    },
    "augeas.yaml": {
        "/tmp/mgmt/augeas/sshd_config": "# ours\nPort 22\nX11Forwarding false\nMaxAuthTries 3\n"
    },
    "sysctl.yaml": {"/tmp/mgmt/sysctl/99-net.ipv4.ip_forward.conf": "net.ipv4.ip_forward = 1\n"},
    "http-server.yaml": {"/tmp/mgmt/http/ks-copy.cfg": "text\nreboot\n"},
    "tftp.yaml": {"/tmp/mgmt/tftp/got": "hello from tftp\n"},
    "http-server-proxy.yaml": {
        "/tmp/mgmt/proxy/cowsay.rpm": "moo\n",
        "/tmp/mgmt/proxy/cache/38/cowsay.rpm": "moo\n",
    },
    "line.yaml": {"/tmp/mgmt/line/app.conf": "enabled = yes\n"},
    "exit.yaml": {"/tmp/mgmt/exit/report": "done\n"},
    "ssh-authorized-key.yaml": {
        "/tmp/mgmt/ssh/authorized_keys": 'command="/usr/local/bin/deploy",no-pty,'
        "no-agent-forwarding ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH deploy-bot@ci\n"
    },
    **{f"cluster-h{i}.yaml": {f"/tmp/mgmt/cluster/h{i}": f"hello from h{i}\n"} for i in (1, 2, 3)},
}
# Log lines the first run must show.
LOGS = {
    "virt.yaml": "virt[vm1]: started",
    "virt-network.yaml": "virt:network[labnet]: started the network",
    "virt-many.yaml": "virt[batch]: created (transient, running)",
    "virt-restart.yaml": "virt[app]: started",
    "notify.yaml": "print[reload]: msg: app.conf changed: reloading the app",
    "noop-meta.yaml": "file[reported]: would create /tmp/mgmt/noop-meta/reported",
    "sema.yaml": "exec[n1]",
    "svc.yaml": "svc[ssh]: started ssh.service",
    "cron.yaml": "cron[mgmt-tmp-cleanup]: started mgmt-tmp-cleanup.timer",
    "hostname.yaml": "hostname[web1]: static hostname set to 'web1'",
    # The key only where the name is not it (the name starts every line).
    "gsettings.yaml": (
        "gsettings[org.gnome.desktop.interface clock-show-seconds]: the value changed"
    ),
    "kv.yaml": "kv[app-version]: app/version set",
    "json-edit-etcd.yaml": "json:edit[inventory]: edited etcd:///inventory/hosts: ",
    "net.yaml": "net[mgmt-example0]: would configure mgmt-example0 (there is no interface",
    "test.yaml": "test[receiver]: AnotherStr: hello from the sender",
    "value.yaml": "print[show]: msg: 3",
    "http-server.yaml": "http:client[/tmp/mgmt/http/ks-copy.cfg]: downloaded",
    "http-server-proxy.yaml": "http:server:proxy[/fedora/releases/]: cached: 38/cowsay.rpm",
    "http-server-ui.yaml": "print[level]: msg: 2",
    "schedule.yaml": "schedule[demo/archive]: joined the pool 'demo/archive' without a lease",
    "tftp.yaml": "tftp:server[127.0.0.1:16969]: sent /hello to 127.0.0.1: 16 bytes",
    "dhcp.yaml": "dhcp:server[127.0.0.1:16767]: listening on udp 127.0.0.1:16767 on lo",
    "deploy-tar.yaml": "deploy:tar[/tmp/mgmt/deploy-tar/site.tar]: archived",
}

SSH_UNIT = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"


@contextlib.contextmanager
def gsettings_env() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as config:
        yield {"GSETTINGS_BACKEND": "keyfile", "XDG_CONFIG_HOME": config}


# Examples that talk to a service: example -> context manager yielding the env that points
# the `mgmt` subprocess at a stand-in for it (both runs of the example share one).
CONTEXTS: dict[str, Callable[[], contextlib.AbstractContextManager[dict[str, str]]]] = {
    # A real systemd (systemd --user, contained: tests/systemd_fixture.py).
    "svc.yaml": functools.partial(systemd_env, units={"ssh.service": SSH_UNIT}),
    "cron.yaml": systemd_env,
    "hostname.yaml": fake_systemd_process,
    # GLib's keyfile backend in a directory of the test's own (not the user's dconf).
    "gsettings.yaml": gsettings_env,
    # etcd on free ports (not 2379/2380) with short timings.
    **dict.fromkeys(
        [
            "kv.yaml",
            "json-edit-etcd.yaml",
            "schedule.yaml",
            "cluster-h1.yaml",
            "cluster-h2.yaml",
            "cluster-h3.yaml",
        ],
        cluster_env,
    ),
}


@pytest.fixture
def example_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Extra environment for the example under test (see CONTEXTS)."""
    context = CONTEXTS.get(request.node.callspec.params["example"].name)
    with context() if context else contextlib.nullcontext({}) as env:
        yield env


# Examples that change this host's users, groups or packages: `host_restored` undoes what they
# created (and skips one that would remove something that exists here). Removal order: users
# before their groups.
HOST_KINDS = ("user", "group", "pkg")
HOST_LOCK = Path("/tmp/mgmt-test-host.lock")  # test runs on one host take turns with these
UNDO = {"user": ["userdel"], "group": ["groupdel"], "pkg": ["dpkg", "--remove"]}
ROOT_OK = os.geteuid() == 0
APT_OK = ROOT_OK and shutil.which("apt-get") is not None
MARKS = {
    "pkg.yaml": [pytest.mark.apt, pytest.mark.skipif(not APT_OK, reason="needs apt-get and root")],
    "user.yaml": [pytest.mark.skipif(not ROOT_OK, reason="needs root")],
    "group.yaml": [pytest.mark.skipif(not ROOT_OK, reason="needs root")],
}


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(300):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def _exists(kind: str, name: str) -> bool:
    try:
        if kind == "user":
            return bool(pwd.getpwnam(name))
        if kind == "group":
            return bool(grp.getgrnam(name))
    except KeyError:
        return False
    _, out = asyncio.run(_run("dpkg-query", "--show", "--showformat=${db:Status-Abbrev}", name))
    return out.startswith("ii")


@pytest.fixture(autouse=True)
def host_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the users, groups and packages an example created (see HOST_KINDS)."""
    callspec = getattr(request.node, "callspec", None)
    example = callspec.params.get("example") if callspec else None
    resources = (yaml.safe_load(example.read_text()) or {}).get("resources") if example else None
    targets = [
        (kind, res["name"], res.get("state"))
        for kind in HOST_KINDS
        for res in (resources or {}).get(kind) or []
    ]
    if not targets:
        yield
        return
    with HOST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # bounded by pytest-timeout
        for kind, name, state in targets:
            if state in ("absent", "uninstalled") and _exists(kind, name):
                pytest.skip(f"{kind} {name} exists on this host: the example would remove it")
        created = [(k, n) for k, n, state in targets if state not in ("absent", "uninstalled")]
        created += [("group", n) for k, n in created if k == "user"]  # useradd's namesake group
        created = [(k, n) for k, n in created if not _exists(k, n)]
        yield
        for kind, name in sorted(created, key=lambda item: HOST_KINDS.index(item[0])):
            if _exists(kind, name):
                asyncio.run(_run(*UNDO[kind], name))


def test_there_is_an_example_per_kind() -> None:
    import resources
    from engine.resource import lookup

    text = "\n".join(path.read_text() for path in EXAMPLES)
    # An mcl example counts too when a test runs it (remote.mcl: tests/e2e/test_remote_e2e.py).
    mcl = "\n".join(path.read_text() for path in sorted((ROOT / "examples").glob("*.mcl")))
    for kind, module in resources.KINDS.items():
        assert lookup(kind) is not None, f"module {module} registers no kind {kind!r}"
        used = f"\n  {kind}:\n" in text or f"\n\t{kind} " in mcl or f"\n{kind} " in mcl
        assert used, f"no example uses kind {kind!r}"


@pytest.mark.parametrize(
    "example", [pytest.param(p, id=p.name, marks=MARKS.get(p.name, [])) for p in EXAMPLES]
)
def test_example_converges(example: Path, example_env: dict[str, str], tmp_path: Path) -> None:
    # The examples manage /tmp/mgmt/...: each test runs its copy under a directory of its own.
    root = str(tmp_path / "root")

    def here(text: str) -> str:
        return text.replace("/tmp/mgmt", root)

    graph = tmp_path / example.name
    graph.write_text(here(example.read_text()))
    args = [
        "run",
        "--converged-timeout=0",
        "--max-runtime=60",
        "--tmp-prefix",
        "yaml",
        str(graph),
    ]
    code, out = run_mgmt(args, env=example_env)
    assert code == CODES.get(example.name, 0), out
    for path, content in STATE.get(example.name, {}).items():
        if content is None:
            assert not Path(here(path)).exists(), path
        else:
            assert Path(here(path)).read_text() == content, path
    if example.name in LOGS:
        assert here(LOGS[example.name]) in out
    code, out = run_mgmt(args, env=example_env)
    assert code == CODES.get(example.name, 0), out
    if example.name not in RERUNS:
        changes = [line for line in out.splitlines() if " engine: " in line]
        assert changes == [], out


async def test_swap_pair_in_a_running_daemon(tmp_path: Path) -> None:
    """examples/swap1.yaml then swap2.yaml in one daemon: kept, stopped, started."""
    from tests.e2e.helpers import Daemon, has_content, signal, wait_path

    # Under a directory of its own, as the examples' test above (before 2026-12-06 it wrote
    # /tmp/mgmt/swap itself, and left it).
    root, graph = tmp_path / "root", tmp_path / "graph.yaml"

    def copy(name: str) -> None:
        text = (ROOT / "examples" / name).read_text()
        graph.write_text(text.replace("/tmp/mgmt/", f"{root}/"))

    copy("swap1.yaml")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(root / "swap/old", has_content("old\n"))
        await daemon.wait_log("converged")
        copy("swap2.yaml")
        await wait_path(root / "swap/new", has_content("new\n"))
        await daemon.wait_log("graph swap: 1 kept, 1 stopped, 1 started")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory owned by another uid")
@pytest.mark.parametrize("name", ["exec-chain.yaml", "sema.yaml", "fan-in.yaml", "exec.yaml"])
def test_examples_refuse_a_mgmt_directory_another_user_made(tmp_path: Path, name: str) -> None:
    """tester13 #6: a user who made /tmp/mgmt first and planted a link where an example's
    root shell appends (`echo a >> /tmp/mgmt/exec-chain/log`) had root append to any file.
    Run with /tmp/mgmt moved to a directory uid 1001 owns, holding their links: the example
    refuses, the victim is untouched. (The same run in a directory of ours passes: the
    examples' own test above.)"""
    theirs = tmp_path / "mgmt"
    stem = name.removesuffix(".yaml")
    (theirs / stem).mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("root:original\n")
    victim.chmod(0o600)
    made = tmp_path / "made-by-root"  # where a dangling link would have root create a file
    for planted in ("log", "disk"):
        (theirs / stem / planted).symlink_to(victim)
    for planted in ("all", "greeting"):  # `creates` guards: a link to a file would skip them
        (theirs / stem / planted).symlink_to(made)
    for path in (theirs, theirs / stem, *(theirs / stem).iterdir()):
        os.chown(path, 1001, 1001, follow_symlinks=False)
    text = (ROOT / "examples" / name).read_text().replace("/tmp/mgmt", str(theirs))
    graph = tmp_path / name
    graph.write_text(text)
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", "yaml", str(graph)])
    assert code != 0 and f"refusing: {theirs}/{stem} is not a directory of this user" in out, out
    assert victim.read_text() == "root:original\n" and not made.exists()


def test_the_seed_example_keeps_an_edited_seed_and_gives_the_tree_its_mode(tmp_path: Path) -> None:
    """examples/file-seed.yaml: an existing app.conf keeps its content (`replace: false`) and
    gets its mode; every entry of the copied tree gets `mode` (`recurse_mode`)."""
    root = tmp_path / "root"
    graph = tmp_path / "file-seed.yaml"
    graph.write_text(
        (ROOT / "examples" / "file-seed.yaml").read_text().replace("/tmp/mgmt", str(root))
    )
    (root / "seed").mkdir(parents=True)
    (root / "seed" / "app.conf").write_text("edited by the operator\n")
    args = ["run", "--converged-timeout=0", "--max-runtime=60", "--tmp-prefix", "yaml", str(graph)]
    code, out = run_mgmt(args)
    assert code == 0, out
    assert (root / "seed" / "app.conf").read_text() == "edited by the operator\n"
    assert (root / "seed" / "app.conf").stat().st_mode & 0o7777 == 0o600
    assert (root / "conf.d" / "site.conf").stat().st_mode & 0o7777 == 0o640
    assert (root / "conf.d").stat().st_mode & 0o7777 == 0o750
