"""remote: run this agent's program on another host over SSH (mgmt's remote).

mgmt's sequence, with mgmt's params: connect (a key: `ssh_id`, or ~/.ssh's keys and the
ssh-agent; a password only from the `remote` URL with `allow_cleartext_password`, never
logged), make the private working directory (`/var/lib/mgmt/remote/<uid>/` with `caching`,
else `~/.mgmt/remote/<uid>/`; each component checked: no symlink, 0700), copy what the remote
needs, start the agent there, and with `transient` wait for it to exit (converged, with
`converger_timeout`) and stop it when this resource stops.

What is copied, and why it differs from mgmt (one static binary, whose child then joins the
cluster and receives the deploy from etcd):
- our packages as one zipapp, `mgmt.pyz`, built deterministically from the running code
  (sorted, fixed dates), so its sha256 names it: it is copied only when the remote's
  differs (`caching` keeps it between runs). It runs under the remote's `python` (ours: a
  Python >= 3.11 with our dependencies; `install_deps` makes a venv there and pip-installs
  them when they are missing);
- the program this agent runs (`handle.program`, engine.program: the running deploy's files,
  or the local program's), into `program-<digest>/`, which the child runs (`mgmt run
  lang|yaml`); a new program restarts it. `tunnelled`: a reverse SSH tunnel from
  `tunnel_addr` there to this agent's etcd, and the child joins the cluster through it
  (`--seeds`, `--no-server`, a copy of the cluster's CA: engine.world.JoinInfo).

The child's pid is kept in the working directory; it is found again (its /proc cmdline must
name our zipapp: a recycled pid is not ours), waited for and stopped by a small Python helper
run over SSH (`pidfd`: an event, no polling; SIGINT, then SIGKILL after 30 s).
See docs/resources/remote.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import shlex
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.program import Program
from engine.resource import Resource, register
from engine.world import join_info
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.programwatch import current_program, follow_program

if TYPE_CHECKING:
    import asyncssh

RUNNING, STOPPED = "running", "stopped"
DEFAULT_USER, DEFAULT_PORT = "root", 22
DEFAULT_TUNNEL_ADDR = "127.0.0.1:2379"
CACHE_PREFIX = "/var/lib/mgmt/remote"  # mgmt's remoteCachePrefix
USER_PREFIX = ".mgmt/remote"  # beneath the remote user's home (mgmt's remoteUserPrefix)
UID_LENGTH = 10  # hex digits of the working directory's name
PYZ, PID, LOG, CHILD_PREFIX = "mgmt.pyz", "pid", "mgmt.log", "prefix"
RAN = "program"  # the program folder the child was started with
EXIT_TIMEOUT = 30  # seconds a stopped child gets after SIGINT before SIGKILL (mgmt's)
STARTUP_GRACE = 3  # seconds a started persistent child must live to count as started
CONNECT_TIMEOUT = 30
COMMAND_TIMEOUT = 120  # a bound on every short remote command (not on a transient wait)
PACKAGES = ("engine", "resources", "mgmt")

# Runs on the remote host: `status`, `wait [SECONDS]`, `stop SECONDS` on the child whose pid
# is in PIDFILE and whose command line names MARKER (our zipapp). Exit codes: status 0 running,
# 1 not; wait 0 exited (or not running), 3 still running after SECONDS; stop 0 stopped. A
# wait without SECONDS also ends (4) when its stdin does: the SSH channel closed, nobody waits.
HELPER = r"""
import os, select, signal, sys
action, pidfile, marker = sys.argv[1:4]
arg = float(sys.argv[4]) if len(sys.argv) > 4 else None
try:
    pid = int(open(pidfile).read().strip())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        ours = marker.encode() in f.read().split(b"\0")
    fd = os.pidfd_open(pid) if ours else None
except (OSError, ValueError):
    fd = None
if action == "status":
    sys.exit(0 if fd is not None else 1)
if fd is None:
    sys.exit(0)
if action == "wait":
    ready = select.select([fd] if arg is not None else [fd, 0], [], [], arg)[0]
    sys.exit(0 if fd in ready else 4 if ready else 3)
signal.pidfd_send_signal(fd, signal.SIGINT)
if not select.select([fd], [], [], arg)[0]:
    signal.pidfd_send_signal(fd, signal.SIGKILL)
    select.select([fd], [], [], 10)
"""


@dataclass(frozen=True)
class Target:
    """A parsed `remote` URL (mgmt's urlInfo)."""

    host: str
    port: int
    user: str
    password: str | None  # secret: never in a log line or an error


def parse_remote(raw: str) -> Target:
    """`ssh://user[:password]@host[:port][/]`, `host` or `host:port` (mgmt's rules)."""
    text = raw if "://" in raw else "ssh://" + raw
    # The messages name no part of the URL: a raw '/', '?', '#' or '@' in a password splits
    # it elsewhere, and a fragment of the password is then taken for the port or the path.
    encode = "a '/', '?', '#' or '@' in the user or password must be percent-encoded"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        raise ValueError(f"cannot parse it: a bad port? ({encode})") from None
    if url.scheme != "ssh":
        raise ValueError(f"unknown scheme {url.scheme!r}: expected ssh://")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"a path, a query or a fragment ({encode})")
    if not url.hostname:
        raise ValueError("no host")
    user = unquote(url.username) if url.username else DEFAULT_USER  # as Go's url.Parse
    password = unquote(url.password) if url.password is not None else None
    return Target(url.hostname, port or DEFAULT_PORT, user, password)


def redacted(raw: str) -> str:
    """The URL without its password, for messages."""
    t = parse_remote(raw)
    return f"ssh://{t.user}@{t.host}:{t.port}/"


@register("remote")
@dataclass(kw_only=True, eq=False)
class RemoteRes(Resource):
    # The host, `ssh://user@host:port/` (user root, port 22 by default; `host` alone works).
    # Default None: the name. A password here needs allow_cleartext_password (never in the
    # name: names are in every log line).
    remote: str | None = None
    # The child's --hostname. Default None: the remote host's own (`hostname` there).
    hostname: str | None = None
    # running or stopped (stopped connects to make sure the child is not running).
    state: str = RUNNING
    # The private key. None: ~/.ssh's default keys and the ssh-agent; "": no key (a password).
    ssh_id: str | None = None
    # The host's key, base64 (a known_hosts line's key part). Default None: ~/.ssh/known_hosts.
    hostkey: str | None = None
    # Prompt for a password (refused: an agent never prompts). Default False.
    interactive: bool = False
    # Seconds to wait for an interactive prompt (mgmt's; unused here). Default 0.
    interactive_timeout: int = 0
    # Interactive password tries (mgmt's; unused here). Default 0.
    max_password_tries: int = 0
    # Allow a password in the `remote` URL (debugging only). Default False.
    allow_cleartext_password: bool = False
    # Keep the working directory (and the zipapp) under /var/lib/mgmt/remote/ between runs;
    # False: under ~/.mgmt/remote/, removed when a transient child is done. Default True.
    caching: bool = True
    # Wait for the child to exit (converged) and stop it when this resource stops; False: it
    # runs on, detached, supervised by the watch. Default True.
    transient: bool = True
    # The child joins this agent's cluster through a reverse SSH tunnel (needs transient).
    # Default True.
    tunnelled: bool = True
    # Where the tunnel listens on the remote host (port 0: any). Default 127.0.0.1:2379.
    tunnel_addr: str = DEFAULT_TUNNEL_ADDR
    # Make a venv on the remote host and pip-install our dependencies if they are missing.
    # Default False.
    install_deps: bool = False
    # The child exits once converged for N seconds (needs transient). Default None: it runs on.
    converger_timeout: int | None = None
    # Ours: the remote interpreter (Python >= 3.11 with our dependencies). Default python3.
    python: str = "python3"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._conn: Any = None  # the SSH connection (asyncssh), while one is open

    @property
    def _remote(self) -> str:
        return self.remote if self.remote else self.name

    def validate(self) -> None:
        super().validate()
        key = "remote" if self.remote else "name"
        try:
            target = parse_remote(self._remote)
        except ValueError as err:
            raise ValidationError(f"{err} (expected ssh://user@host:port/)", key) from None
        if target.password is not None:
            if key == "name":
                raise ValidationError(
                    "a password in the name would be logged: give the URL as `remote`", key
                )
            if not self.allow_cleartext_password:
                raise ValidationError(
                    "a cleartext password in the URL needs allow_cleartext_password", key
                )
        if self.state not in (RUNNING, STOPPED):
            raise ValidationError(f"expected running or stopped, got {self.state!r}", "state")
        if self.interactive:
            raise ValidationError("not supported: an agent never prompts (use a key)", key)
        if self.converger_timeout is not None and self.converger_timeout < 0:
            raise ValidationError("must not be negative", "converger_timeout")
        if self.tunnelled and not self.transient:
            raise ValidationError("needs transient (the tunnel closes with us)", "tunnelled")
        if self.converger_timeout is not None and not self.transient:
            raise ValidationError("needs transient", "converger_timeout")
        host, _, port = self.tunnel_addr.rpartition(":")
        if self.tunnelled and (not host or not port.isdigit()):
            raise ValidationError(f"expected HOST:PORT, got {self.tunnel_addr!r}", "tunnel_addr")
        if self.hostkey is not None:
            try:
                known_key(self.hostkey)
            except ValueError as err:
                raise ValidationError(str(err), "hostkey") from None
        if not self.python.strip():
            raise ValidationError("must not be empty", "python")

    def needs_world(self) -> bool:
        """Tunnelled, the remote agent joins this agent's cluster: it must have one."""
        return self.tunnelled and self.state == RUNNING

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._target = parse_remote(self._remote)
        uid = hashlib.sha256(f"{self.kind}:{self.name}".encode()).hexdigest()[:UID_LENGTH]
        self._uid = uid
        self._wd = ""  # the remote working directory, once made
        self._hostname = self.hostname or ""
        self._interrupted = asyncio.Event()  # the watch was cancelled: we are stopping
        self._started = asyncio.Event()  # a persistent child was (re)started
        self._said_standalone = False
        self._program_changed = asyncio.Event()  # for the watch: an event
        self._new_program = asyncio.Event()  # for a transient child's wait: restart it
        if handle.program is not None:
            handle.on_cleanup(handle.program.subscribe(self._on_program))

    def _on_program(self) -> None:
        self._program_changed.set()
        self._new_program.set()

    async def cleanup(self) -> None:
        await self._disconnect()

    async def watch(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                if not (self.transient or self.state == STOPPED or self.meta.poll):
                    group.create_task(self._watch_child())
                # A new program: an event (the child is restarted with it).
                await follow_program(
                    self.handle, self._program_changed, on_files=self._new_program.set
                )
        finally:
            self._interrupted.set()

    async def _watch_child(self) -> None:
        """A persistent child: an event when it exits."""
        while True:
            await self._started.wait()
            self._started.clear()
            if await self._wait_exit() == 0:
                self.handle.logger.info("the remote agent exited")
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._connect()
                await self._workdir()
            running = await self._helper("status") == 0
        except (TimeoutError, OSError, _ssh_errors()) as err:
            await self._disconnect()
            raise ResourceError(f"{redacted(self._remote)}: {_say(err)}") from None
        if self.state == STOPPED:
            if not running:
                return nothing_to_do(self.handle, "the remote agent is not running")
            stop = Step("stop the remote agent", "stopped the remote agent", self._stop)
            await apply_steps(self.handle, [stop], apply)
            return False
        program = await self._program()
        why = "left running by an earlier run"  # transient: its exit status is not ours to see
        if running and not self.transient:
            if await self._running_program() == _folder(program):
                self._started.set()
                return nothing_to_do(self.handle, "the remote agent runs the program")
            why = f"running another program than {program.origin}"
        if not apply:  # the start itself is below: its steps wait on the remote agent
            verb = "restart" if running else "start"
            start = Step(f"{verb} the remote agent on {redacted(self._remote)}", "")
            await apply_steps(self.handle, [start], apply)
            return False
        if running:
            self.handle.logger.info("restarting the remote agent (%s)", why)
            await self._stop()
        try:
            await self._push(program)
            if self.transient:
                return await self._run_transient(program)
            await self._start_detached(program)
        except (OSError, _ssh_errors()) as err:
            await self._disconnect()
            raise ResourceError(f"{redacted(self._remote)}: {_say(err)}") from None
        return False

    def merge(self, other: Resource) -> Resource:
        """As every kind's, but the URLs a conflict shows are shown without their passwords
        (the message is logged)."""
        if isinstance(other, RemoteRes) and self._remote != other._remote:
            mine, theirs = _shown(self._remote), _shown(other._remote)
            if mine == theirs:
                mine, theirs = f"{mine} (a password)", f"{theirs} (another password)"
            raise ValidationError(f"differs: {mine!r} vs {theirs!r}", "remote")
        return super().merge(other)

    # connection -------------------------------------------------------------------------

    async def _connect(self) -> asyncssh.SSHClientConnection:
        """The open connection, or a new one (asyncssh's errors and OSError on failure)."""
        import asyncssh

        if self._conn is not None and not self._conn.is_closed():
            conn: asyncssh.SSHClientConnection = self._conn
            return conn
        t = self._target
        options: dict[str, Any] = {
            "port": t.port,
            "username": t.user,
            "known_hosts": known_hosts(t.host, t.port, self.hostkey),
            "connect_timeout": CONNECT_TIMEOUT,
        }
        if self.ssh_id == "":
            options["client_keys"] = None
        elif self.ssh_id is not None:
            options["client_keys"] = [_expand(self.ssh_id)]
        if t.password is not None:
            options["password"] = t.password
        self.handle.logger.info("ssh connect %s:%d", t.host, t.port)
        logging.getLogger("asyncssh").setLevel(logging.WARNING)  # a line per channel at INFO
        conn = await asyncssh.connect(t.host, **options)
        self._conn = conn
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def _run(
        self, argv: list[str], timeout: float | None = COMMAND_TIMEOUT
    ) -> tuple[int, str]:
        """Run a command on the remote host (argv quoted for its shell): (exit, output)."""
        conn = await self._connect()
        async with asyncio.timeout(timeout):
            result = await conn.run(shlex.join(argv), check=False)
        out = _text(result.stdout) + _text(result.stderr)
        return (result.exit_status if result.exit_status is not None else 255), out

    async def _wait_exit(self) -> int | None:
        """Wait until the persistent child exits (0); its stdin is the channel's, so the
        remote helper ends with the channel if this task is cancelled (no waiter left)."""
        conn = await self._connect()
        argv = [self.python, "-c", HELPER, "wait", self._path(PID), self._path(PYZ)]
        process = await conn.create_process(shlex.join(argv))
        try:
            result = await process.wait(check=False)
        finally:
            process.close()
        return result.exit_status

    async def _helper(self, action: str, arg: float | None = None) -> int:
        argv = [self.python, "-c", HELPER, action, self._path(PID), self._path(PYZ)]
        if arg is not None:
            argv.append(str(arg))
        code, out = await self._run(argv)
        if code not in (0, 1, 3):
            raise ResourceError(f"{redacted(self._remote)}: {self.python}: {out.strip()[-300:]}")
        return code

    # the working directory --------------------------------------------------------------

    def _path(self, name: str) -> str:
        return f"{self._wd}/{name}"

    async def _workdir(self) -> None:
        """Make the private working directory (mgmt's secureRemoteDir): every component a
        real directory (no symlink), owned by root or the remote user, made 0700; the base
        not writable by others (another user owning a component could swap the zipapp)."""
        if self._wd:
            return
        code, out = await self._run(["id", "-u"])
        if code != 0 or not out.strip().isdigit():
            raise ResourceError(f"cannot read the remote user's uid: {out.strip()[:200]!r}")
        owners = (0, int(out))
        conn = await self._connect()
        async with conn.start_sftp_client() as sftp:
            if self.caching:
                base, parts = os.path.dirname(CACHE_PREFIX), [os.path.basename(CACHE_PREFIX)]
                if not await sftp.exists(base):
                    await sftp.mkdir(base)
            else:
                base, parts = str(await sftp.realpath(".")), USER_PREFIX.split("/")
            attrs = await sftp.lstat(base)
            mode = attrs.permissions or 0
            if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
                raise ResourceError(f"remote: {base} is not a directory (or is a symlink)")
            if mode & 0o022:
                raise ResourceError(f"remote: {base} is writable by other users")
            if attrs.uid not in owners:
                raise ResourceError(f"remote: {base} is owned by uid {attrs.uid}")
            path = base
            for part in [*parts, self._uid]:
                path = f"{path}/{part}"
                if not await sftp.lexists(path):
                    await sftp.mkdir(path)
                attrs = await sftp.lstat(path)
                mode = attrs.permissions or 0
                if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
                    raise ResourceError(f"remote: {path} is not a directory (or is a symlink)")
                if attrs.uid not in owners:
                    raise ResourceError(f"remote: {path} is owned by uid {attrs.uid}")
                await sftp.chmod(path, 0o700)
        self._wd = path
        self.handle.logger.debug("remote working directory: %s", path)

    # what the child needs ---------------------------------------------------------------

    async def _program(self) -> Program:
        return await current_program(self.handle, "to run remotely")

    async def _push(self, program: Program) -> None:
        pyz = await in_thread(zipapp)
        digest = hashlib.sha256(pyz).hexdigest()
        code, out = await self._run(["sha256sum", self._path(PYZ)])
        if code == 0 and out.split()[0] == digest:
            self.handle.logger.info("%s is cached there (%s)", PYZ, digest[:12])
        else:
            self.handle.logger.info("copying %s (%d bytes)", PYZ, len(pyz))
            await self._upload({PYZ: pyz})
        folder = _folder(program)
        code, _ = await self._run(["test", "-f", self._path(f"{folder}/.complete")])
        if code != 0:
            files = {f"{folder}/{name}": data for name, data in program.files.items()}
            files[f"{folder}/.complete"] = b""  # written last: the folder is whole
            await self._upload(files)
            self.handle.logger.info("copied %s (%d files)", program.origin, len(program.files))
        if self.install_deps:
            await self._install_deps()

    async def _upload(self, files: dict[str, bytes]) -> None:
        """Write each file whole (a temp name, then renamed), 0600, in order."""
        conn = await self._connect()
        async with conn.start_sftp_client() as sftp:
            made: set[str] = set()
            for rel, data in files.items():
                parts = PurePosixPath(rel).parts
                path = self._wd
                for part in parts[:-1]:
                    path = f"{path}/{part}"
                    if path not in made and not await sftp.isdir(path):
                        await sftp.mkdir(path)
                    made.add(path)
                final = self._path(rel)
                tmp = f"{final}.tmp"
                async with sftp.open(tmp, "wb", asyncssh_attrs(0o600)) as f:
                    await f.write(data)
                await sftp.posix_rename(tmp, final)

    async def _install_deps(self) -> None:
        check = [self.python, "-c", "import yaml, lark, aetcd, cryptography, asyncssh"]
        if (await self._run(check))[0] == 0:
            return
        venv = self._path("venv")
        self.handle.logger.info("installing our dependencies into %s", venv)
        code, out = await self._run([self.python, "-m", "venv", venv], timeout=600)
        if code == 0:
            pip = [f"{venv}/bin/pip", "install", "--quiet", *requirements()]
            code, out = await self._run(pip, timeout=1800)
        if code != 0:
            raise ResourceError(f"installing our dependencies failed: {out.strip()[-300:]}")
        self.python = f"{venv}/bin/python"

    # the child --------------------------------------------------------------------------

    async def _child_argv(self, program: Program, seeds: list[str] | None = None) -> list[str]:
        if not self._hostname:
            code, out = await self._run(["hostname"])
            name = out.strip()
            if code != 0 or not name or any(c.isspace() for c in name):
                raise ResourceError(f"cannot read the remote hostname: {out.strip()[:200]!r}")
            self._hostname = name
        if self.tunnelled and seeds is None and not self._said_standalone:
            self.handle.logger.warning(
                "tunnelled: this agent has no cluster to tunnel; the remote agent runs the "
                "program standalone"
            )
            self._said_standalone = True
        folder = self._path(_folder(program))
        entry = f"{folder}/" if program.entry == "main.mcl" else f"{folder}/{program.entry}"
        argv = [self.python, self._path(PYZ), "run", "--hostname", self._hostname]
        argv += ["--prefix", self._path(CHILD_PREFIX)]
        if self.converger_timeout is not None:
            argv += ["--converged-timeout", str(self.converger_timeout)]
        return [*argv, *(seeds or []), program.frontend, entry]

    def _launcher(self, argv: list[str], program: Program) -> str:
        """sh: record the pid and the program, then become the agent (output to its log, no
        terminal)."""
        q = shlex.quote
        return (
            f"cd {q(self._wd)} && echo $$ > {q(self._path(PID))} && "
            f"echo {q(_folder(program))} > {q(self._path(RAN))} && "
            f"exec {shlex.join(argv)} > {q(self._path(LOG))} 2>&1 < /dev/null"
        )

    async def _running_program(self) -> str:
        """The program folder the running child was started with ("": unknown)."""
        code, out = await self._run(["cat", self._path(RAN)])
        return out.strip() if code == 0 else ""

    async def _tunnel(self) -> tuple[Any, list[str]] | None:
        """With a cluster here: a reverse tunnel from `tunnel_addr` there to this host's etcd,
        and the flags that make the remote agent join through it (None: no cluster)."""
        join = join_info(self.handle.world) if self.tunnelled else None
        if join is None:
            return None
        if join.ca_dir is None and not join.insecure:
            raise ResourceError(
                "tunnelled: this cluster uses per-host identities; the remote agent would need "
                "its own certificate (not built): use tunnelled => false"
            )
        url = urlsplit(join.url)
        host, _, port = self.tunnel_addr.rpartition(":")
        conn = await self._connect()
        listener = await conn.forward_remote_port(
            host, int(port), url.hostname or "127.0.0.1", url.port or 2379
        )
        there = f"{url.scheme}://{host}:{listener.get_port()}"
        self.handle.logger.info("tunnel: %s there -> %s here", there, join.url)
        flags = ["--seeds", there, "--no-server"]
        if join.insecure:
            flags.append("--insecure-cluster")
        else:
            assert join.ca_dir is not None
            ca = Path(join.ca_dir)
            files = await in_thread(
                lambda: {f"cluster-ca/{n}": (ca / n).read_bytes() for n in ("ca.pem", "ca.key")}
            )
            await self._upload(files)
            flags += ["--cluster-ca-dir", self._path("cluster-ca")]
        return listener, flags

    async def _run_transient(self, program: Program) -> bool:
        tunnel = await self._tunnel()
        try:
            return await self._wait_transient(program, tunnel[1] if tunnel else None)
        finally:
            if tunnel is not None:
                tunnel[0].close()
                if "--cluster-ca-dir" in tunnel[1]:  # the CA's key leaves with the agent
                    with contextlib.suppress(Exception):
                        await self._run(["rm", "-rf", self._path("cluster-ca")])

    async def _wait_transient(self, program: Program, seeds: list[str] | None) -> bool:
        self._new_program.clear()  # the program of this child: a later change restarts it
        argv = await self._child_argv(program, seeds)
        conn = await self._connect()
        self.handle.logger.info("starting the remote agent: %s", shlex.join(argv))
        process = await conn.create_process(f"sh -c {shlex.quote(self._launcher(argv, program))}")
        waited = asyncio.ensure_future(process.wait(check=False))
        interrupted = asyncio.ensure_future(self._interrupted.wait())
        renewed = asyncio.ensure_future(self._new_program.wait())
        try:
            await asyncio.wait([waited, interrupted, renewed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            renewed.cancel()
            if not waited.done():  # we are stopping (mgmt's transient), or the program changed
                self.handle.logger.info(
                    "stopping the transient remote agent%s",
                    ": the program changed" if self._new_program.is_set() else "",
                )
                with contextlib.suppress(Exception):
                    await self._stop()
                waited.cancel()
                await asyncio.gather(waited, return_exceptions=True)
        if not waited.done() or waited.cancelled():
            return False
        code = waited.result().exit_status
        if code != 0:
            tail = await self._log_tail()
            raise ResourceError(f"the remote agent exited with {code}: {tail}")
        self.handle.logger.info("the remote agent converged and exited")
        await self._tidy()
        return True

    async def _start_detached(self, program: Program) -> None:
        argv = await self._child_argv(program)
        self.handle.logger.info("starting the remote agent: %s", shlex.join(argv))
        launch = shlex.quote(self._launcher(argv, program))
        cmd = f"setsid sh -c {launch} > /dev/null 2>&1 < /dev/null &"
        code, out = await self._run(["sh", "-c", cmd])
        if code != 0:
            raise ResourceError(f"cannot start the remote agent: {out.strip()[-300:]}")
        if await self._helper("wait", STARTUP_GRACE) == 0:  # it exited at once
            raise ResourceError(f"the remote agent exited at start: {await self._log_tail()}")
        self._started.set()

    async def _stop(self) -> None:
        await self._helper("stop", EXIT_TIMEOUT)

    async def _log_tail(self) -> str:
        _, out = await self._run(["tail", "-n", "5", self._path(LOG)])
        return " | ".join(line for line in out.strip().splitlines())[-600:]

    async def _tidy(self) -> None:
        """Without caching, remove the working directory once a transient child is done."""
        if self.caching or not self._wd:
            return
        await self._run(["rm", "-rf", "--one-file-system", self._wd])
        self._wd = ""


def _shown(raw: str) -> str:
    """The URL without its password, or a word if it cannot be parsed (validate says why)."""
    try:
        return redacted(raw)
    except ValueError:
        return "an unparsable URL"


def _folder(program: Program) -> str:
    """The working directory's folder holding `program` (named by its digest)."""
    return f"program-{program.digest[:16]}"


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data if isinstance(data, str) else ""


def _expand(path: str) -> str:
    """~ and ~user expanded (reads the passwd database: tiny, local)."""
    return os.path.expanduser(path)


def known_key(text: str) -> str:
    """`TYPE BASE64` for a hostkey given as its base64 part; ValueError if it is not one."""
    try:
        blob = base64.b64decode(text.strip(), validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        kind = blob[4 : 4 + size].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        raise ValueError("expected the base64 key of a known_hosts line") from None
    if not kind.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError(f"expected the base64 key of a known_hosts line, got a {kind!r} blob")
    return f"{kind} {text.strip()}"


def known_hosts(host: str, port: int, hostkey: str | None) -> Any:
    """asyncssh's known_hosts: only `hostkey` when given, else the user's known_hosts file."""
    import asyncssh

    if hostkey is None:
        return os.path.expanduser("~/.ssh/known_hosts")
    return ([asyncssh.import_public_key(known_key(hostkey))], [], [])


def asyncssh_attrs(mode: int) -> Any:
    import asyncssh

    return asyncssh.SFTPAttrs(permissions=mode)


def _ssh_errors() -> type[Exception]:
    import asyncssh

    return asyncssh.Error


def _say(err: BaseException) -> str:
    """One line for a connection error (asyncssh's reason, or the OS's)."""
    if isinstance(err, TimeoutError):
        return f"timed out after {CONNECT_TIMEOUT}s"
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
    return str(reason).splitlines()[0] if str(reason) else type(err).__name__


def zipapp() -> bytes:
    """Our packages as one deterministic zipapp (python mgmt.pyz ...). Run from a zipapp
    itself (a remote of a remote), that zipapp."""
    import engine

    root = Path(engine.__file__).resolve().parents[1]
    if root.is_file():
        return root.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        main = zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0))
        zf.writestr(main, "import sys\nfrom mgmt.__main__ import main\nsys.exit(main())\n")
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*")):
                rel = path.relative_to(root).as_posix()
                if "__pycache__" in rel or not path.is_file() or path.suffix == ".pyc":
                    continue
                info = zipfile.ZipInfo(rel, (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    return out.getvalue()


def requirements() -> list[str]:
    """Our dependencies (pip requirement strings), from the installed distribution."""
    from importlib import metadata

    try:
        wanted = metadata.requires("mgmt") or []
    except metadata.PackageNotFoundError:
        wanted = []
    found = [r for r in wanted if "extra ==" not in r]
    if not found:
        raise ResourceError("install_deps: our dependencies are unknown (mgmt is not installed)")
    return found
