"""The agent's side of `mgmt deploy`'s thin path: `<prefix>/deploy.sock` (see `client`).

An agent running deploys (`mgmt run empty`, `run --deploy`) listens there once it is in the
cluster. It has the language loaded and etcd connected, which a `mgmt deploy` process would
spend 300 ms of CPU getting. For each connection it:

1. checks the caller: only root or the agent's own user (SO_PEERCRED), who can read the
   agent's etcd credentials in its prefix anyway; the socket is 0600 in the 0700 prefix;
2. writes the files sent into a private directory and reads the program from there with the
   direct path's own functions (`bundle.read_program`: the same files, the same hash) and
   checks it as `mgmt check` does (`check.check_program`); a bad program is refused with the
   same lines, its paths the operator's, exit 2, nothing stored;
3. pushes it with the direct path's transaction (`store.push`: parent check, `--force`,
   `--keep`), with its own etcd connection; the record it makes for each parent is sent to
   the caller, who signs it with the operator's key and sends the signature back. A record
   this host would refuse to run (`policy.signed_for`: a key not in its --trusted-keys, or
   unsigned without --allow-unsigned-deploys) is refused, exit 1, before it is stored: every
   host is given the same trusted keys, so the others would refuse it too.

The agent never signs: every host still verifies the operator's signature against its own
trusted keys. Whatever it cannot answer as the direct path would (a file it cannot see, a
cluster it is not in, an etcd user that may not write deploys, no connection) it answers with
`fallback`, before storing anything: the command then runs the direct path.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import WorldError
from engine.limits import limited_to
from engine.tasks import TaskSet
from mgmt.deploy import DeployError
from mgmt.deploy.bundle import LANG_ENTRY, Bundle, read_checked
from mgmt.deploy.client import MAX_MESSAGE, SOCKET, b64decode, b64encode, dumps, loads
from mgmt.deploy.policy import Policy, signed_for
from mgmt.deploy.store import KEEP, NoQuorum, Record, new_record, push, quorate_head
from mgmt.sockaddr import SERVER, Address

if TYPE_CHECKING:
    from mgmt.cluster.client import EtcdClient

log = logging.getLogger("deploy")

SIGN_WAIT = 60.0  # seconds the agent waits for the caller's signature (ssh-agent, a token)
READ_WAIT = 30.0  # seconds for the caller's request
MISSING = ("no such file", "no such directory")  # the direct path reads the operator's files


class Fallback(Exception):
    """Not answered here: the command runs the direct path (nothing stored)."""


class Refused(Exception):
    """A problem the command reports as the direct path would: lines, then the last one."""

    def __init__(self, lines: list[str], code: int) -> None:
        super().__init__(lines[-1])
        self.lines, self.code = lines, code


class DeployServer:
    """`<prefix>/deploy.sock` of an agent running deploys; `start`, then `aclose`."""

    def __init__(self, prefix: Path, client: EtcdClient, policy: Policy, hostname: str) -> None:
        self.path = prefix / SOCKET
        self.work = prefix / "deploy"
        self.client = client
        self.policy = policy  # this host's: what it would run
        self.hostname = hostname
        self.max_graph_size = policy.max_graph_size
        self.pushed = 0  # deploys stored through the socket (tests read it in the log)
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()  # one push at a time: each is a few ms of the agent's
        self._tasks = TaskSet("deploy socket", log)

    async def start(self) -> None:
        await asyncio.to_thread(_remove_stale, self.path)
        with Address(self.path) as where:  # (a deep prefix: through its directory's descriptor)
            self._server = await asyncio.start_unix_server(
                self._connected, path=where, limit=MAX_MESSAGE, **SERVER
            )
        await asyncio.to_thread(os.chmod, self.path, 0o600)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            await asyncio.to_thread(_remove_stale, self.path)
        await self._tasks.close()

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.spawn(self._serve(reader, writer), "deploy socket connection")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid not in (0, os.geteuid()):
                log.warning(
                    "deploy socket: refused uid %d (only root and the agent's user, uid %d, "
                    "may push through it)",
                    uid,
                    os.geteuid(),
                )
                await _send(writer, {"fallback": f"uid {uid} may not use the agent's socket"})
                return
            async with asyncio.timeout(READ_WAIT):
                request = await _receive(reader)
            async with self._lock:
                await _send(writer, await self._answer(request, reader, writer))
        except (OSError, EOFError, TimeoutError) as err:  # the caller went away
            log.debug("deploy socket: %s", err)
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # not our client's
            log.warning("deploy socket: a bad request (%s: %s)", type(err).__name__, err)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if not self.client.connected.is_set():
                raise Fallback("the agent is not connected to the cluster")
            if request.get("seeds") and not await self._ours(str(request["seeds"])):
                raise Fallback(f"{request['seeds']}: not the agent's cluster")
            if "would_run" in request:  # a --rollback's record, before the command stores it
                rec = Record.decode(b64decode(request["would_run"]), "the record sent")
                await asyncio.to_thread(self._would_run, rec, "")
                return {"ok": True}
            max_size = int(request.get("max_graph_size") or self.max_graph_size)
            try:  # before the check: after it, the caller may think something was stored
                keep, force = int(request.get("keep") or KEEP), bool(request["force"])
                limit = request.get("max_resources")  # None: not given, the agent's own
                limit = None if limit is None else int(limit)
            except (KeyError, TypeError, ValueError) as err:
                raise Fallback(f"not a request: {err}") from None
            newest = asyncio.create_task(quorate_head(self.client))  # meanwhile: less waiting
            try:
                bundle = await asyncio.to_thread(
                    checked_bundle, request, self.work, max_size, limit
                )
            except BaseException:
                newest.cancel()
                await asyncio.gather(newest, return_exceptions=True)
                raise
            checked = loop.time()
            await _send(writer, {"checked": True})
            key = str(request.get("key") or "")

            async def make(deploy_id: int, parent: int) -> Record:
                rec = replace(new_record(bundle, deploy_id, parent), key=key)
                if key:
                    await _send(writer, {"sign": b64encode(rec.payload())})
                    async with asyncio.timeout(SIGN_WAIT):
                        answer = await _receive(reader)
                    if not isinstance(answer.get("signature"), str):
                        raise EOFError("the caller did not sign")
                    rec = replace(rec, signature=answer["signature"])
                await asyncio.to_thread(self._would_run, rec)
                return rec

            known = await newest
            rec = await push(self.client, bundle, make, force=force, keep=keep, known=known)
        except Fallback as err:
            log.info("deploy socket: the command pushes itself: %s", err)
            return {"fallback": str(err)}
        except Refused as err:
            return {"error": str(err), "lines": err.lines[:-1], "code": err.code}
        except (DeployError, WorldError) as err:
            parent = "refused: its parent" in str(err) or "kept changing" in str(err)
            if parent or isinstance(err, NoQuorum):  # the command would meet it too
                return {"error": str(err), "code": 1}
            log.info("deploy socket: the command pushes itself: %s", err)  # e.g. permissions
            return {"fallback": str(err)}
        self.pushed += 1
        log.info(
            "deploy %d pushed through the deploy socket (checked in %.0f ms, then signed and "
            "stored in %.0f ms)",
            rec.id,
            (checked - started) * 1000,
            (loop.time() - checked) * 1000,
        )
        return {"done": f"deploy {rec.id}: {rec.frontend} {rec.entry}, {rec.hash[:12]}"}

    def _would_run(self, rec: Record, anyway: str = "; --direct stores it anyway") -> None:
        """Refused (exit 1) unless this host would run `rec` (blocking: reads its trusted
        keys; for a key other than Ed25519, `ssh-keygen`). `anyway`: how to store it still."""
        try:
            signed_for(rec, self.policy)
        except DeployError as err:
            log.info("deploy socket: deploy %d refused before it was stored: %s", rec.id, err)
            raise Refused(
                [
                    f"deploy {rec.id} refused, nothing stored: this host ({self.hostname}) would "
                    f"not run it: {err} (hosts share their trusted keys: the others would "
                    f"not either{anyway})"
                ],
                1,
            ) from None

    async def _ours(self, seeds: str) -> bool:
        """Whether any of `seeds` is a client URL of this agent's cluster."""
        from mgmt.cluster.options import split_urls

        given = {u.rstrip("/") for u in split_urls(seeds)}
        if given & {u.rstrip("/") for u in self.client.endpoints}:
            return True  # no round trip: the members this agent knows
        members = await self.client.members()
        return bool(given & {u.rstrip("/") for m in members for u in m.client_urls})


def checked_bundle(
    request: dict[str, Any], work: Path, max_size: int, max_resources: int | None = None
) -> Bundle:
    """The bundle of the files sent, read and checked as the direct path reads and checks the
    operator's (blocking), with the command's --max-resources if it gave one (in this thread's
    context only: the agent's graphs keep the agent's); Refused with the problems, their paths
    the operator's."""
    try:
        frontend, name, path = str(request["frontend"]), str(request["name"]), request["path"]
        base = str(request["base"])
        files = {str(k): b64decode(v) for k, v in request["files"].items()}
        sent = Bundle(frontend, name or LANG_ENTRY, files)
        sent.check()
    except (KeyError, TypeError, AttributeError, binascii.Error, DeployError) as err:
        raise Fallback(f"not a request: {err}") from None
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".push-", dir=work)).resolve()
    try:
        root = tmp / "program"
        sent.extract(root)
        try:
            with limited_to(max_resources):
                bundle, problems = read_checked(frontend, root / name if name else root, max_size)
        except DeployError as err:
            raise Fallback(str(err)) from None
        where = str(root / bundle.entry)
        said = str(Path(path) / bundle.entry) if not name else str(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if any(m in p for p in problems for m in MISSING):
        raise Fallback("the check misses a file")
    if problems:
        lines = [
            p.replace(f"{where}:", f"{said}:").replace(f"{root}/", f"{base}/") for p in problems
        ]
        raise Refused([*lines[:-1], f"{lines[-1]} (nothing deployed)"], 2)
    return bundle


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        if size > MAX_MESSAGE:
            raise ValueError(f"a message of {size} bytes")
        message = loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise EOFError("the caller closed the connection") from None
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = dumps(message)
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()


def _remove_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
