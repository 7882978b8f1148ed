"""`mgmt status [--prefix DIR] [--json]`: the running agent's resources and their states;
`mgmt status --cluster [--seeds URLS] [--json]`: every host of the cluster.

It asks the agent through its status socket (`<prefix>/status.sock`, readable by the agent's
user alone) and prints a table: each resource, its state and since when, its last change, for
a failed one its last error, for a pending one what it waits for (`waits for exec[x]
(failed)`); then whether the graph is converged, since when, and what is wrong with the
program if anything is (`program error: ...`: its last edit does not compile, or a function
fails; the host does not run what it was asked to). `--json` prints the agent's
snapshot as it is, for scripts (`program_error`). An agent that runs the cluster's deploys
says which (`deploy: 7`, `deploy: 7 (UNSIGNED)`, `deploy: none yet, waiting for the first`) and
a newer deploy it refused and why (`; refused deploy 8: ...`; `deploy` in the JSON). Exit code:
0 when nothing has failed, 1 when a resource has failed (`failed`, or `retrying`: it failed and
a retry is due; SINCE is when its failures began), the program has an error, the reversal
of a resource that left the graph failed (`reversal failed: file[/x]: ...`; `reversals` in the
JSON), a newer deploy was refused, or the kernel's inotify limit leaves resources unwatched
(`unwatched: N resources ...`, their STATE `converged,unwatched`; `unwatched` in the JSON:
how many, and per resource) (usable as a check: `mgmt status || alert`), 2 when no agent answers
or when another user controls the prefix (or a directory above it): whatever answers on its
socket could be theirs (with --json, `{"error": why}` on stdout too).

With --cluster it reads the cluster instead (etcd at --seeds, with this host's certificate in
`<prefix>/cluster-tls/`, the files its agent was given (`<prefix>/cluster-tls.json`:
--cluster-cert-dir) or --tls-*, as `mgmt deploy` does) and prints one row per host: alive,
the deploy it runs (`7 (UNSIGNED)` or `7 (UNVERIFIED)` when run unverified), converged since
when, its resources, how many failed and the last error (mgmt.deploy.status.report: what
`mgmt deploy --status` prints too). Exit code 1 when a host is
down (its agent gone without leaving, or unreachable: its lease expired) or has a failed
resource, or when the cluster cannot be reached; a host stopped cleanly reads `left` and is no
failure. `--cluster --forget HOST` deletes the rows of a host that left or is down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from mgmt import warn_misspelled_env
from mgmt.config import ExitCode
from mgmt.listing import resource_count
from mgmt.sockaddr import Address
from mgmt.status.model import FAILING
from mgmt.status.unixsock import SOCKET
from mgmt.usage import Parser

TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    from mgmt.deploy.cli import connection_args

    parser = Parser(
        prog="mgmt status",
        description="The running agent's resources and their states, or (--cluster) every host's.",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="every host of the cluster (reached at --seeds), not this agent",
    )
    parser.add_argument(
        "--forget",
        metavar="HOST",
        help="with --cluster: delete the rows of HOST, which left or is down (refused while its "
        "agent is alive)",
    )
    parser.add_argument("--json", action="store_true", help="the data, as JSON")
    connection_args(parser)  # --prefix: the agent's (its socket, and its cluster certificate)
    return parser


def main(argv: list[str]) -> int:
    warn_misspelled_env()  # it reads MGMT_PREFIX
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.forget is not None:
        from engine.errors import ValidationError
        from mgmt.cluster import check_host

        if not args.cluster:
            parser.error("--forget HOST needs --cluster")
        try:
            check_host(args.forget, "--forget")
        except ValidationError as err:
            parser.error(str(err))
    if args.cluster:
        from mgmt.deploy.cli import status_main

        return status_main(args)
    path = args.prefix / SOCKET
    from engine.safefs import others_control

    if why := others_control(str(args.prefix)):  # their socket would say what they like
        return _no_answer(args, f"--prefix: {why}: refusing to believe what answers on {path}")
    try:
        snapshot = asyncio.run(fetch(path))
    except PermissionError as err:  # another user's agent: not "no agent answers"
        from mgmt.deploy.cli import denied

        instead = "--prefix DIR of an agent of this user"
        return _no_answer(args, denied(path, err.strerror, args.prefix, instead))
    except TimeoutError:
        return _no_answer(args, silent(path, args.prefix))
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        if isinstance(err, FileNotFoundError | ConnectionRefusedError):
            reason += _tmp_agents(args.prefix)
        return _no_answer(args, f"no agent answers on {path}: {reason}")
    text = json.dumps(snapshot, indent=2) + "\n" if args.json else table(snapshot)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as err:  # a full disk (`> file`): said, not a traceback
        print(f"mgmt status: cannot write the status: {err.strerror or err}", file=sys.stderr)
        return int(ExitCode.FAILED)
    return int(ExitCode.FAILED if failed(snapshot) else ExitCode.OK)


async def fetch(path: Path) -> Any:
    """GET /api/status over the agent's socket."""
    async with asyncio.timeout(TIMEOUT):
        with Address(path) as where:  # (a deep prefix: through its directory's descriptor)
            reader, writer = await asyncio.open_unix_connection(where)
        try:
            writer.write(b"GET /api/status HTTP/1.1\r\nHost: mgmt\r\n\r\n")
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"unexpected answer {head[:60]!r}")
    return json.loads(body)


def table(snapshot: dict[str, Any]) -> str:
    """The snapshot as text: a summary line, then one row per resource."""
    counts = snapshot["counts"]
    total = sum(counts.values())
    if snapshot["converged"]:
        head = f"converged since {_clock(snapshot['converged_since'])}"
    else:
        head = "not converged"
    parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [f"{_printable(snapshot['host'])}: {head}; {resource_count(total)}: {parts or 'none'}"]
    if snapshot.get("program_error"):
        lines.append(f"program error: {_printable(snapshot['program_error'])}")
    if snapshot.get("cluster_note"):
        lines.append(f"cluster: {_printable(snapshot['cluster_note'])}")
    if unwatched := snapshot.get("unwatched"):
        out = "out of inotify watches"
        if snapshot.get("unwatched_limit") == "fs.inotify.max_user_instances":
            out = "no inotify instance left, until the agent restarts"
        lines.append(
            f"unwatched: {resource_count(unwatched)} ({out}: their drift is unseen until they "
            "are checked again; the agent's log says which limit to raise)"
        )
    for rev in snapshot.get("reversals", ()):  # left the graph, not undone (yet)
        lines.append(_printable(f"reversal {rev['state']}: {rev['id']}: {rev['error']}"))
    if deploy := snapshot.get("deploy"):
        lines.append(_printable(deploy_line(deploy)))
    rows = [("RESOURCE", "STATE", "SINCE", "LAST CHANGE / ERROR")]
    for v in snapshot["vertices"]:
        detail = f"error: {v['error']}" if v["error"] else v["last_change"]
        if v.get("next_check"):  # failed with an error that may pass: checked again on its own
            detail = f"next check {_clock(v['next_check'])}; {detail}"
        if v.get("next_try"):  # retrying: its next attempt, and how many are left after it
            left = v.get("tries_left", -1)
            more = "retrying for ever" if left < 0 else f"{left} left"
            detail = f"next try {_clock(v['next_try'])} ({more}); {detail}"
        if v.get("waits"):
            detail = "waits for " + ", ".join(f"{w['id']} ({w['state']})" for w in v["waits"])
        if v.get("churn"):  # engine.churn
            detail = f"changed behind our back {v['churn']} times; {detail}"
        state = f"{v['state']},unwatched" if v.get("unwatched") else v["state"]
        rows.append((_printable(v["id"]), state, _clock(v["since"]), _printable(detail)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def deploy_line(deploy: dict[str, Any]) -> str:
    """The deploy the host runs (`deploy: 7`, `deploy: 7 (UNSIGNED)`, `deploy: none yet,
    waiting for the first`), and one newer it refused (`; refused deploy 8: why`)."""
    running = deploy.get("running") or 0
    if not running:
        line = "deploy: none yet, waiting for the first"
    else:
        warning = deploy.get("warning")
        line = f"deploy: {running}" + (f" ({warning})" if warning else "")
    if deploy.get("refused"):
        line += f"; refused deploy {deploy['refused']}: {deploy.get('error') or '?'}"
    return line


def failed(snapshot: dict[str, Any]) -> bool:
    """Something has failed: a resource (`failed`, or `retrying`: its last attempt failed,
    however many retries it has left), the program, the reversal of a resource that left
    the graph, a deploy this host refused (newer than the one it runs: it does not run what
    was pushed), the cluster's quorum (`cluster_note`), or a resource the kernel's inotify
    limit leaves unwatched (`unwatched`: its drift goes unseen)."""
    deploy = snapshot.get("deploy") or {}
    reversals = snapshot.get("reversals", ())
    counts = snapshot["counts"]
    return bool(
        any(counts.get(state) for state in FAILING)
        or snapshot.get("program_error")
        or deploy.get("refused")
        or snapshot.get("cluster_note")
        or snapshot.get("unwatched")
        or any(rev["state"] == "failed" for rev in reversals)
    )


def _clock(seconds: float | None) -> str:
    """HH:MM:SS today, with its date (YYYY-MM-DD HH:MM:SS) another day: a resource failed
    since yesterday read as if today (tester15)."""
    if not seconds:
        return "-"
    when = time.localtime(seconds)
    if time.strftime("%Y-%m-%d", when) != time.strftime("%Y-%m-%d"):
        return time.strftime("%Y-%m-%d %H:%M:%S", when)
    return time.strftime("%H:%M:%S", when)


# /proc/PID/stat's states that say why a live agent does not answer
_STATES = {
    "T": "stopped (SIGSTOP, ^Z: `kill -CONT {pid}` resumes it)",
    "t": "stopped by a debugger (ptrace)",
    "D": "waiting on a disk or a file system (state D)",
    "Z": "a zombie (it ended; its parent has not reaped it)",
}


def silent(path: Path, prefix: Path) -> str:
    """The message for a socket that took the connection and said nothing for TIMEOUT s:
    which agent holds the prefix (its lock file's pid, when it runs mgmt) and, from its
    /proc state, why it may not answer. Before (opsuser, 2026-12-06) it was `no agent answers
    on ...: TimeoutError` for an agent that `systemctl status` showed running."""
    from mgmt.tmpprefix import AGENT_LOCK, LOCK

    waited = f"did not answer on {path} within {TIMEOUT:g} s"
    try:
        try:
            held = (prefix / AGENT_LOCK).read_text()
        except FileNotFoundError:  # a --tmp-prefix run's prefix: its run's lock holds the pid
            held = (prefix / LOCK).read_text()
        pid = int(held.split()[0])
        proc = Path(f"/proc/{pid}")
        # The state first: reading a process's cmdline takes its memory map's lock, which an
        # agent in state D may hold (the read would hang as the agent does); stat's does not.
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        if state != "D" and b"mgmt" not in (proc / "cmdline").read_bytes():
            raise ValueError("another program")
    except (OSError, ValueError, IndexError):
        return f"no agent answers on {path}: it said nothing within {TIMEOUT:g} s"
    why = _STATES.get(state, "running: busy or wedged")
    return f"the agent (pid {pid}) {waited}: it is {why.format(pid=pid)}"


def _tmp_agents(prefix: Path) -> str:
    """Where the agents of this user run with --tmp-prefix (their prefix is theirs alone, made
    at their start: `mgmt status` without --prefix cannot know it), as more of the message
    that no agent answers at `prefix` ("": none runs)."""
    from mgmt.tmpprefix import running

    found = [(path, pid) for path, pid in running() if path != prefix]
    if not found:
        return ""
    runs = "; ".join(f"pid {pid}: mgmt status --prefix {path}" for path, pid in found[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return f"; an agent of this user runs with --tmp-prefix ({runs}{more})"


def _no_answer(args: argparse.Namespace, message: str) -> int:
    """`mgmt status: MESSAGE` on stderr, and with --json `{"error": MESSAGE}` on stdout (a
    `mgmt status --json | jq` reads why); exit 2."""
    print(f"mgmt status: {message}", file=sys.stderr)
    if args.json:
        with contextlib.suppress(OSError):
            sys.stdout.write(json.dumps({"error": message}) + "\n")
            sys.stdout.flush()
    return int(ExitCode.USAGE)


def _printable(text: str) -> str:
    """Control characters escaped (`\\x1b`): an error may quote a command's output, which must
    not drive the terminal of whoever runs `mgmt status`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
