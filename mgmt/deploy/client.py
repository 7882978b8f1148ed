"""`mgmt deploy`'s thin path: the local agent checks and stores the deploy (docs/deploys.md).

`mgmt/__main__` hands `mgmt deploy ...` here before importing the CLI. When a local agent
running deploys listens on `<prefix>/deploy.sock` (`server`), this process imports almost
nothing (no asyncio, argparse, grpc or language): it reads the program's files, sends them,
signs the record the agent makes with the operator's key (in-process for an unencrypted
Ed25519 key, by OpenSSL through ctypes; `ssh-keygen -Y sign` otherwise: the same SSHSIG
bytes) and prints what the agent says. The agent checks the program as `mgmt check` does,
refuses a record it would not run itself (its trusted keys), and stores it with the
transaction of the direct path (parent check, `--force`, `--keep`).

`main` returns None (the caller runs the direct path, `mgmt.deploy.cli`, unchanged) when:
the command is not a push of `yaml FILE`/`lang FILE|DIR/` with the flags below (`--list`,
`--status`, `--rollback`, `--tls-*`, `--cluster-user`, `--insecure-cluster`, `--direct`,
`--help` stay direct), no agent answers on the socket, the agent runs as a user neither
root nor this one (it would choose what the operator's key signs), the agent refuses this user or cannot
push (not connected, not this cluster, its etcd user may not write deploys), the files are
not plain (a symbolic link, too many or too large) or the key is one whose fingerprint
`ssh-keygen` must read, or the agent's check failed on a missing file (the direct path,
reading the operator's own filesystem, says what is missing). Nothing is stored before the
fallback.
"""

from __future__ import annotations

import _json  # not `json` (nor `base64`): they import `re` and `enum`, ~5-25 ms of this command
import _socket  # not `socket`: its enums and selectors cost this command ~5 ms
import binascii
import os
import struct
import sys
import time

from mgmt import default_prefix, warn_misspelled_env
from mgmt.sockaddr import Address

TYPE_CHECKING = False  # not `typing`'s: importing it costs this command 3-4 ms
if TYPE_CHECKING:
    from typing import Any

SOCKET = "deploy.sock"  # in the agent's prefix
MAX_MESSAGE = 4 << 20  # bytes of one message (a bundle is at most 1 MiB, base64 in JSON)
MAX_FILES = 1000  # bundle.MAX_FILES (not imported: dataclasses, shutil, tempfile; tested)
MAX_BYTES = 1 << 20  # bundle.MAX_BLOB
MAX_WALK = 5000  # directory entries looked at for a `lang FILE.mcl`'s modules
WAIT = 60.0  # seconds for one answer of the agent (a big program's check takes a while)
VALUED = ("--seeds", "--prefix", "--sign-key", "--keep", "--max-graph-size", "--max-resources")
NUMBERS = ("--keep", "--max-graph-size", "--max-resources")  # of VALUED
SWITCHES = ("--unsigned", "--force", "--timings")
UNSIGNED = (  # both paths say it
    "mgmt: WARNING: pushing an UNSIGNED deploy: only hosts run with --allow-unsigned-deploys "
    "will run it"
)


class Fallback(Exception):
    """The thin path cannot be taken: the direct path runs (nothing was stored)."""


class Timings:
    """When each step of the command ended, in ms since the process started (`--timings`)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = [("imports", self._now())]

    @staticmethod
    def _now() -> float:
        # The process's own start (Linux: /proc, in clock ticks since boot) on the same clock.
        try:
            with open("/proc/self/stat") as stat:
                ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            started = ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0
        return (time.clock_gettime(time.CLOCK_BOOTTIME) - started) * 1000

    def mark(self, step: str) -> None:
        self.marks.append((step, self._now()))

    def line(self) -> str:
        steps = ", ".join(f"{step} {at:.0f}" for step, at in sorted(self.marks, key=lambda m: m[1]))
        return f"timings (ms since the process started): {steps}"


# the wire: a 4-byte length, then JSON ---------------------------------------------------------
# By `json`'s own C parts (`_json`), without importing `json`: the same bytes as
# `json.dumps(message, separators=(",", ":"))`, the same objects as `json.loads` (tested).


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


_ENCODE = _json.make_encoder(
    None, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, True
)


class _Parsing:
    """What `_json`'s scanner reads of `json.JSONDecoder`: strict, without hooks."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int

    @staticmethod
    def parse_constant(name: str) -> float:  # NaN, Infinity, -Infinity: as json.loads
        return float(name.replace("Infinity", "inf"))


_SCAN = _json.make_scanner(_Parsing())  # type: ignore[arg-type]  # typeshed: a JSONDecoder
_BLANK = " \t\n\r"


def dumps(message: dict[str, Any]) -> bytes:
    return "".join(_ENCODE(message, 0)).encode()


def loads(data: bytes) -> object:
    """`json.loads` of UTF-8 `data`; ValueError when it is not one JSON value."""
    text = data.decode()
    start = len(text) - len(text.lstrip(_BLANK))
    try:
        value, end = _SCAN(text, start)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip(_BLANK):
        raise ValueError("extra data after JSON")
    return value


def b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def b64decode(text: str) -> bytes:
    """Strict base64 (`base64.b64decode(text, validate=True)`); binascii.Error (a ValueError)."""
    return binascii.a2b_base64(text, strict_mode=True)


def send(sock: _socket.socket, message: dict[str, Any]) -> None:
    data = dumps(message)
    sock.sendall(struct.pack(">I", len(data)) + data)


def _exactly(sock: _socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise Fallback("the agent closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock: _socket.socket) -> dict[str, Any]:
    (size,) = struct.unpack(">I", _exactly(sock, 4))
    if size > MAX_MESSAGE:
        raise Fallback(f"a message of {size} bytes")
    try:
        message = loads(_exactly(sock, size))
    except ValueError:  # UnicodeDecodeError too
        raise Fallback("not a message") from None
    if not isinstance(message, dict):
        raise Fallback("not a message")
    return message


# the command line -----------------------------------------------------------------------------


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The flags and target of a push the thin path can make, or None (the direct path parses
    it, and says what is wrong with it)."""
    opts: dict[str, Any] = {"target": []}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in VALUED:
            if not eq:
                value = next(args, "")
            if not value or value.startswith("-") or name in opts:
                return None
            opts[name] = value
        elif name in SWITCHES and not eq:
            opts[name] = True
        elif arg.startswith("-"):
            return None
        else:
            opts["target"].append(arg)
    target = opts["target"]
    if len(target) != 2 or target[0] not in ("yaml", "lang"):
        return None
    if ("--sign-key" in opts) == bool(opts.get("--unsigned")):
        return None
    for name in NUMBERS:
        if name in opts and not (opts[name].isdigit() and opts[name].isascii()):
            return None
    if int(opts.get("--keep", "1")) < 1:
        return None
    return opts


# the program's files --------------------------------------------------------------------------


def _walk(root: str, files: dict[str, bytes], under: str, modules: bool = False) -> None:
    """Every regular file under `root`, into `files` as `under` + its relative name (as
    `bundle._tree` reads them); Fallback on a symbolic link (the direct path refuses it), too
    many or too large files. `modules`: only the files a `lang FILE.mcl`'s imports may read
    (`.mcl`, `metadata.yaml`), not in hidden directories nor in `files/`, links skipped (an
    import of one fails the agent's check on a missing file: the direct path then runs)."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if modules:
            top = rel == "."
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            dirnames[:] = [d for d in dirnames if not (top and d == "files")]
        dirnames.sort()
        seen += len(dirnames) + len(filenames)
        if seen > MAX_WALK:
            raise Fallback(f"more than {MAX_WALK} entries under {root}")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if modules and not (name.endswith(".mcl") or name == "metadata.yaml"):
                continue
            if os.path.islink(path):
                if modules:
                    continue
                raise Fallback(f"{path}: a symbolic link")
            if os.path.isfile(path):
                _add(files, under + (name if rel == "." else f"{rel}/{name}"), path)
        if not modules and any(os.path.islink(os.path.join(dirpath, d)) for d in dirnames):
            raise Fallback(f"{dirpath}: a symbolic link to a directory")


def _add(files: dict[str, bytes], key: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            files[key] = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise Fallback(f"{path}: {err}") from None
    if len(files) > MAX_FILES or sum(map(len, files.values())) > MAX_BYTES:
        raise Fallback("too many or too large files")


def read_files(frontend: str, path: str) -> tuple[str, str, dict[str, bytes]]:
    """(the program's name among the files, "" for `lang DIR/`; the directory they are read
    from, resolved; the files): the files the direct path reads (`bundle.program_files`), and
    for `lang FILE.mcl` every file its imports may read, which the agent narrows down."""
    files: dict[str, bytes] = {}
    if frontend == "lang" and os.path.isdir(path):
        _walk(path, files, "")
        return "", os.path.realpath(path), files
    if not os.path.isfile(path) or os.path.islink(path):
        raise Fallback(f"{path}: not a regular file")
    base, name = os.path.dirname(os.path.realpath(path)), os.path.basename(path)
    if frontend == "lang":
        _walk(base, files, "", modules=True)
    if os.path.isdir(os.path.join(base, "files")):
        if os.path.islink(os.path.join(base, "files")):
            raise Fallback("files/: a symbolic link")
        _walk(os.path.join(base, "files"), files, "files/")
    _add(files, name, path)
    return name, base, files


# the push -------------------------------------------------------------------------------------


_key_text: dict[str, bytes | None] = {}  # --sign-key's text, read (and checked) once


def _read_key(key: str) -> bytes | None:
    """sshkey.read_simple(key), once per command: the fingerprint sent and the signature
    made are of the same bytes (and the checks, ~80 us, are not made twice)."""
    from mgmt.deploy import sshkey

    if key not in _key_text:
        _key_text[key] = sshkey.read_simple(key)
    return _key_text[key]


def _signature(payload: bytes, key: str) -> str:
    from mgmt.deploy import sshkey

    text = _read_key(key)  # checked by _fingerprint before anything was sent
    signature = None if text is None else sshkey.sign_here(payload, text)
    if signature is None:  # an encrypted key, one in ssh-agent, another type: ssh-keygen
        from pathlib import Path

        from mgmt.deploy.sign import sign

        signature = sign(payload, Path(key))
    return signature


def _fingerprint(key: str) -> str:
    from mgmt.deploy import sshkey

    try:  # a key another user could change, or readable by others: the full path refuses it
        text = _read_key(key)
        blob = None if text is None else sshkey.public_blob(text)
    except OSError:
        blob = None
    if blob is None:
        raise Fallback(f"{key}: not a key whose fingerprint is read here")
    return sshkey.fingerprint(blob)


def push(opts: dict[str, Any], timings: Timings | None) -> int:
    """Push through the agent; the exit code, or Fallback before anything is stored."""
    prefix = opts.get("--prefix") or os.environ.get("MGMT_PREFIX") or default_prefix()
    sock = _connect(prefix)
    try:
        if timings:
            timings.mark("connected")
        frontend, path = opts["target"]
        name, base, files = read_files(frontend, path)
        key = opts.get("--sign-key")
        request = {
            "frontend": frontend,
            "path": path,
            "name": name,
            "base": base,
            "files": {k: b64encode(v) for k, v in files.items()},
            "key": _fingerprint(key) if key else "",
            "force": bool(opts.get("--force")),
            "keep": int(opts.get("--keep", "0")),
            "max_graph_size": int(opts.get("--max-graph-size", "0")),
            "max_resources": int(opts["--max-resources"]) if "--max-resources" in opts else None,
            "seeds": opts.get("--seeds", ""),
        }
        try:
            send(sock, request)
            if key:  # while the agent checks: what signing needs (ctypes, OpenSSL)
                from mgmt.deploy import sshkey

                sshkey.load_openssl()
            return _conversation(sock, key, timings)
        except OSError as err:
            raise Fallback(f"the agent: {err}") from None
    finally:
        sock.close()


def _connect(prefix: str) -> _socket.socket:
    """A connection to the local agent's socket in `prefix`; Fallback if none answers, or if
    it is not one to trust (_trusted)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(WAIT)
        try:
            with Address(os.path.join(prefix, SOCKET)) as where:  # (any depth: mgmt.sockaddr)
                sock.connect(where)
        except OSError as err:
            raise Fallback(f"no agent: {err}") from None
        _trusted(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def would_run(prefix: str, record: bytes, seeds: str) -> str | None:
    """Why the local agent (its socket in `prefix`, in the cluster of `seeds`) would not run a
    deploy's record (its key is not trusted...), or None: it would, or no agent of that
    cluster answers (the hosts decide then). The
    direct path's `--rollback` asks it before storing, as a push through the agent is checked
    (blocking)."""
    try:
        sock = _connect(prefix)
    except Fallback:
        return None
    try:
        send(sock, {"would_run": b64encode(record), "seeds": seeds})
        answer = receive(sock)
    except (OSError, Fallback):
        return None
    finally:
        sock.close()
    return str(answer["error"]) if "error" in answer else None


def _trusted(sock: _socket.socket) -> None:
    """Fallback unless the agent listening is root or this user: another user's (a prefix it
    could write in) would get the program's files and choose what the operator's key signs."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid not in (0, os.geteuid()):
        raise Fallback(f"the socket's agent runs as uid {uid}, neither root nor this user")


def _conversation(sock: _socket.socket, key: str | None, timings: Timings | None) -> int:
    checked = False  # from then on the agent may store it: no fallback but its own
    while True:
        try:
            message = receive(sock)
        except (OSError, Fallback) as err:
            if not checked:
                raise Fallback(str(err)) from None
            print(
                f"mgmt: the local agent did not answer ({err}): the deploy may have been "
                "stored; see `mgmt deploy --list`",
                file=sys.stderr,
            )
            return 1
        if "fallback" in message:  # the agent stored nothing
            raise Fallback(str(message["fallback"]))
        if "checked" in message:
            checked = True
            if timings:
                timings.mark("checked")
            if key is None:
                print(UNSIGNED, file=sys.stderr)
        elif "sign" in message:
            assert key is not None
            try:
                signature = _signature(b64decode(message["sign"]), key)
            except Exception as err:  # DeployError, OSError: said once, nothing stored
                send(sock, {"error": str(err)})
                print(f"mgmt: {err}", file=sys.stderr)
                return 1
            if timings:
                timings.mark("signed")
            send(sock, {"signature": signature})
        elif "done" in message:
            if timings:
                timings.mark("stored")
            print(f"{message['done']} (through the local agent)", file=sys.stderr)
            return 0
        else:  # "error": the agent refused it (a bad program, a race), nothing stored
            for line in message.get("lines", []):
                print(str(line), file=sys.stderr)
            print(f"mgmt: {message.get('error')}", file=sys.stderr)
            return int(message.get("code", 1))


def main(argv: list[str]) -> int | None:
    """`mgmt deploy ARGV` through the local agent: its exit code, or None (run the direct
    path, `mgmt.deploy.cli.deploy_main`)."""
    started = Timings()
    warn_misspelled_env()  # it reads MGMT_PREFIX
    opts = parse(argv)
    if opts is None:
        return None
    timings = started if opts.get("--timings") else None
    try:
        code = push(opts, timings)
    except Fallback:
        return None
    if timings:
        timings.mark("closed")
        print(timings.line(), file=sys.stderr)
    return code
