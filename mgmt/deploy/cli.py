"""`mgmt deploy`: an operator's command against a running cluster.

mgmt deploy [flags] yaml FILE | lang FILE.mcl | lang DIR/   push a program as the next deploy
mgmt deploy [flags] --list                                  the deploys kept, newest last
mgmt deploy [flags] --status                                each host's deploy and convergence
mgmt deploy [flags] --rollback N                            a new deploy with N's content

This is the direct path: the command checks, connects and pushes itself. A push is first
offered to the local agent (`client`, before this module is imported), unless --direct.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ValidationError, WorldError
from engine.limits import DEFAULT_MAX_RESOURCES, set_max_resources
from engine.params import parse_int
from mgmt import default_prefix, warn_misspelled_env
from mgmt.config import (
    DEFAULT_MAX_GRAPH_SIZE,
    DEFAULT_MAX_STEPS,
    ExitCode,
    set_max_program_size,
    set_max_steps,
)
from mgmt.deploy import DeployError
from mgmt.deploy.client import UNSIGNED, Timings
from mgmt.usage import Parser

if TYPE_CHECKING:
    from mgmt.cluster.client import EtcdClient
    from mgmt.deploy.bundle import Bundle
    from mgmt.deploy.store import Record

CONNECT_WAIT = 5.0  # seconds to reach a member before giving up
DEFAULT_SEEDS = "https://127.0.0.1:2379"  # without --seeds, and no agent's URLs at --prefix


class Refused(DeployError):
    """Bad input (a bad program, flag or file): exit 2, nothing stored."""


def _int(text: str) -> int:
    try:
        return parse_int(text.strip())
    except ValidationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def connection_args(parser: argparse.ArgumentParser) -> None:
    """How to reach the cluster: a host's own credentials, or files given."""
    parser.add_argument(
        "--seeds",
        metavar="URLS",
        help="etcd client URLs of the cluster (comma-separated; default: those the agent at "
        f"--prefix reaches it at, DIR/cluster-urls.json, else {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--prefix",
        type=Path,
        default=Path(os.environ.get("MGMT_PREFIX") or default_prefix()),  # as `mgmt run`'s
        metavar="DIR",
        help="a host's state directory: its certificate in DIR/cluster-tls/ (or the files its "
        "agent was given, DIR/cluster-tls.json) is used unless --tls-* are given (default "
        "$MGMT_PREFIX, else mgmt run's: $STATE_DIRECTORY, "
        "non-root ~/.cache/mgmt, root /var/lib/mgmt)",
    )
    parser.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA (PEM) of the cluster")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    parser.add_argument("--cluster-user", metavar="NAME", help="etcd user")
    parser.add_argument(
        "--cluster-password-file", type=Path, metavar="FILE", help="the etcd user's password"
    )
    parser.add_argument(
        "--insecure-cluster", action="store_true", help="plain http (development only)"
    )


def denied(path: Path | str, reason: str | None, prefix: Path, instead: str) -> str:
    """One line for a file of an agent's prefix this user may not read (the prefix is its
    agent's user's alone, 0700): the file, who may read it, and what to give instead. Every
    command that reads a prefix's files says it so (`mgmt status`, `--cluster`, `mgmt deploy`)."""
    import pwd

    try:
        owner = pwd.getpwuid(prefix.stat().st_uid).pw_name
    except (OSError, KeyError):
        owner = "the agent's user"
    return f"cannot read {path}: {reason}: {prefix} is {owner}'s alone: run as {owner}, or give {instead}"


def _client(args: argparse.Namespace) -> EtcdClient:
    """The cluster's client from the flags; Refused on bad input (a prefix's file this user may
    not read included: said in one line, see `denied`)."""
    try:
        return _new_client(args)
    except PermissionError as err:
        if not Path(err.filename).is_relative_to(args.prefix):  # a --tls-* file given
            raise Refused(f"cannot read {err.filename}: {err.strerror}") from None
        instead = "--prefix DIR (a host's state directory this user may read), or --tls-*"
        raise Refused(denied(err.filename, err.strerror, args.prefix, instead)) from None


def _new_client(args: argparse.Namespace) -> EtcdClient:
    from mgmt.cluster.client import EtcdClient
    from mgmt.cluster.options import check_url, split_urls
    from mgmt.cluster.pki import HOST_CERT, HOST_KEY, TLSFiles, check_credentials

    if args.seeds is None:  # the agent's at --prefix, else the default (said on failure)
        from mgmt.cluster.cluster import URLS_FILE, agent_urls

        found = agent_urls(args.prefix)
        args.seeds = ",".join(found) or DEFAULT_SEEDS
        args.seeds_from = (
            f" (the agent's, from {args.prefix / URLS_FILE}; or give --seeds)"
            if found
            else f" (no agent's URLs in {args.prefix / URLS_FILE}: give --seeds or --prefix)"
        )
    urls = split_urls(args.seeds)
    if not urls:
        raise Refused("--seeds: no URL given")
    try:
        for url in urls:
            check_url(url, "--seeds", args.insecure_cluster)
    except ValidationError as err:
        raise Refused(str(err)) from None
    tls = TLSFiles()
    if not args.insecure_cluster:
        own = args.prefix / "cluster-tls"
        tls = TLSFiles(
            args.tls_ca or own / "ca.pem",
            args.tls_cert or own / HOST_CERT,
            args.tls_key or own / HOST_KEY,
        )
        if not (args.tls_ca or args.tls_cert or args.tls_key or (own / "ca.pem").exists()):
            from mgmt.cluster.cluster import agent_tls

            tls = agent_tls(args.prefix) or tls  # its --cluster-cert-dir (or --tls-*) files
        files = (("--tls-ca", tls.ca), ("--tls-cert", tls.cert), ("--tls-key", tls.key))
        for flag, path in files:
            if path is not None and not path.is_file():
                if path.parent != own:
                    raise Refused(f"{flag}: no such file: {path}")
                if args.tls_ca or args.tls_cert or args.tls_key:  # the others given: not this
                    raise Refused(
                        f"{flag} not given (and no {path}): give --tls-ca, --tls-cert and "
                        "--tls-key together"
                    )
                raise Refused(_no_credentials(args.prefix, path))
        try:
            check_credentials(tls)
        except WorldError as err:
            raise Refused(str(err)) from None
    password = None
    if args.cluster_user is not None:
        if args.cluster_password_file is None:
            raise Refused("--cluster-user needs --cluster-password-file")
        from engine import safefs
        from mgmt.cluster.options import read_password  # as the agent's (ssh's rule)

        try:  # under sudo, the invoker's own file too (as pki.check_credentials takes theirs)
            with safefs.invoker_trusted(safefs.sudo_invoker()):
                password = read_password(args.cluster_password_file)
        except ValidationError as err:
            raise Refused(str(err)) from None
    return EtcdClient(urls, tls=tls, user=args.cluster_user, password=password, name="deploy")


def _no_credentials(prefix: Path, missing: Path) -> str:
    """What is wrong when the prefix (no --tls-* given) holds none of a host's credentials:
    it does not exist (a typo), or it is not a shared-CA host's (per-host identities keep
    their certificate in --cluster-cert-dir); and which flags give them."""
    if prefix.is_dir():
        what = f"the prefix {prefix} holds no cluster credentials (no {missing})"
    elif os.path.lexists(prefix):
        what = f"the prefix {prefix} is not a directory"
    else:
        what = f"the prefix {prefix} does not exist"
    return (
        f"{what}: give --prefix DIR of a host of the cluster (shared CA), or "
        "--tls-ca/--tls-cert/--tls-key: ca.pem, host.pem and host.key of a --cluster-cert-dir "
        "or of an operator's credentials"
    )


async def _connected(args: argparse.Namespace) -> EtcdClient:
    client = _client(args)
    if not await client.wait_connected(CONNECT_WAIT):
        await client.close()
        raise _unreachable(args, client)
    return client


def _unreachable(args: argparse.Namespace, client: EtcdClient) -> DeployError:
    """No member answered: which URLs were tried (and where they came from), and why."""
    tried = f"{args.seeds}{getattr(args, 'seeds_from', '')}"
    return DeployError(f"no etcd member reachable at {tried}: {client.last_error}")


# mgmt deploy --------------------------------------------------------------------------------


def deploy_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mgmt deploy",
        description="Push a program to the cluster as its next deploy (checked as `mgmt check` "
        "does, signed, stored in one transaction); list or roll back deploys.",
    )
    connection_args(parser)
    parser.add_argument(
        "--sign-key",
        type=Path,
        metavar="FILE",
        help="SSH private key signing the deploy (or the public key of one in ssh-agent)",
    )
    parser.add_argument(
        "--unsigned",
        action="store_true",
        help="push without a signature: only hosts run with --allow-unsigned-deploys take it "
        "(development only)",
    )
    parser.add_argument(
        "--force", action="store_true", help="put it on top even if a deploy was pushed meanwhile"
    )
    parser.add_argument(
        "--keep",
        type=_int,
        default=10,
        metavar="K",
        help="deploys kept in the cluster, the oldest compacted (default 10)",
    )
    parser.add_argument("--list", action="store_true", help="list the deploys kept")
    parser.add_argument(
        "--status",
        action="store_true",
        help="each host's deploy (running, ready, refused) and whether it is converged",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --status: the rows as JSON (as `mgmt status --cluster --json`)",
    )
    parser.add_argument(
        "--rollback", type=_int, metavar="N", help="push a new deploy whose content is deploy N's"
    )
    parser.add_argument(
        "--max-graph-size",
        type=_int,
        default=DEFAULT_MAX_GRAPH_SIZE,
        metavar="BYTES",
        help="refuse a graph file larger than BYTES, as mgmt check does",
    )
    parser.add_argument(
        "--max-resources",
        type=_int,
        default=DEFAULT_MAX_RESOURCES,
        metavar="N",
        help="refuse a graph of more than N resources (or N edges), as mgmt check does",
    )
    parser.add_argument(
        "--max-steps",
        type=_int,
        default=DEFAULT_MAX_STEPS,
        metavar="N",
        help="refuse an mcl program taking more than N steps in one evaluation, as mgmt check does",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="push from this process even when a local agent offers to (its deploy socket)",
    )
    parser.add_argument(
        "--timings",
        action="store_true",
        help="print when each step ended (ms since the process started): imports, check, "
        "connection, signature, transaction",
    )
    parser.add_argument(
        "target", nargs="*", metavar="FRONTEND", help="`yaml FILE`, `lang FILE.mcl`, `lang DIR/`"
    )
    return parser


def deploy_main(argv: list[str], exit_now: bool = False) -> int:
    """`mgmt deploy ...`: its exit code. `exit_now` (the `mgmt` program itself, not a caller
    in-process): once done, exit without the interpreter's teardown of the compiler's and
    gRPC's objects (0.1-0.4 s, more than the rest of a push after the check)."""
    warn_misspelled_env()  # it reads MGMT_PREFIX (once: the thin path may have said it)
    parser = deploy_parser()
    args = parser.parse_intermixed_args(argv)
    actions = sum([bool(args.target), args.list, args.status, args.rollback is not None])
    if actions != 1:
        parser.error("give one of: `yaml FILE`, `lang FILE|DIR/`, --list, --status, --rollback N")
    if args.target and (len(args.target) != 2 or args.target[0] not in ("yaml", "lang")):
        parser.error(f"expected `yaml FILE` or `lang FILE|DIR/`, got {' '.join(args.target)!r}")
    if args.keep < 1:
        parser.error(f"--keep: must be >= 1, got {args.keep}")
    if args.json and not args.status:
        parser.error("--json is for --status")
    if (args.target or args.rollback is not None) and (args.sign_key is None) == (
        not args.unsigned
    ):
        parser.error("give --sign-key FILE (or --unsigned, for development)")
    code = _run(_deploy(args, Timings() if args.timings else None))
    if exit_now:  # the client is closed, ssh-keygen reaped, the threads joined: nothing runs
        try:
            for handler in logging.getLogger().handlers:  # lines a stopped loop left pending
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            return code  # let the interpreter say it
        os._exit(code)
    return code


def _run(coro: object) -> int:
    # The command says itself what went wrong with the cluster, once (`client.last_error`).
    logging.getLogger("cluster").setLevel(logging.ERROR)
    try:
        return int(asyncio.run(coro))  # type: ignore[arg-type]
    except Refused as err:
        print(f"mgmt: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except (DeployError, WorldError) as err:  # the cluster refused or could not be reached
        print(f"mgmt: {err}", file=sys.stderr)
        return int(ExitCode.FAILED)
    except KeyboardInterrupt:
        return int(ExitCode.FAILED)


async def _deploy(args: argparse.Namespace, timings: Timings | None = None) -> ExitCode:
    bundle: Bundle | None = None
    client = _client(args)

    async def connect() -> bool:
        connected = await client.wait_connected(CONNECT_WAIT)
        if timings:
            timings.mark("connected")
        return connected

    # Connecting (TLS, authentication) overlaps with the check; a bad program is still
    # refused (exit 2) before anything is asked of the cluster, reachable or not.
    connecting = asyncio.create_task(connect())
    try:
        if args.target:
            bundle = await asyncio.to_thread(
                _read_checked, args.target[0], Path(args.target[1]), args
            )
            if timings:
                timings.mark("checked")
        if not await connecting:
            raise _unreachable(args, client)
        if args.list:
            print(await list_text(client))
            return ExitCode.OK
        if args.status:
            return await cluster_status(client, args.json)
        return await _push(client, args, bundle, timings)
    finally:
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await client.close()
        if timings:
            timings.mark("closed")
            print(timings.line(), file=sys.stderr)


def _read_checked(frontend: str, path: Path, args: argparse.Namespace) -> Bundle:
    """The program's bundle, checked as `mgmt check` checks it; Refused on any problem."""
    from mgmt.deploy.bundle import read_checked

    set_max_resources(args.max_resources)
    set_max_program_size(args.max_graph_size)
    set_max_steps(args.max_steps)
    try:
        bundle, problems = read_checked(frontend, path, args.max_graph_size)
    except DeployError as err:
        raise Refused(str(err)) from None
    if problems:
        for problem in problems[:-1]:
            print(problem, file=sys.stderr)
        raise Refused(f"{problems[-1]} (nothing deployed)")
    if args.sign_key is not None:
        from mgmt.deploy.sign import key_fingerprint

        try:
            key_fingerprint(args.sign_key)
        except DeployError as err:
            raise Refused(str(err)) from None
    return bundle


async def _push(
    client: EtcdClient, args: argparse.Namespace, bundle: Bundle | None, timings: Timings | None
) -> ExitCode:
    from mgmt.deploy.bundle import Bundle
    from mgmt.deploy.store import blob, push, record, record_maker

    rollback_of = 0
    if args.rollback is not None:
        rec = await record(client, args.rollback)
        data = await blob(client, rec.hash) if rec is not None else None
        if rec is None or data is None:
            raise Refused(f"--rollback: deploy {args.rollback} is not kept (see --list)")
        bundle, rollback_of = Bundle.decode(data), rec.id
        await asyncio.to_thread(_signed_as_kept, rec, bundle, args.unsigned)
    assert bundle is not None
    if args.unsigned:
        print(UNSIGNED, file=sys.stderr)
    try:
        make = await asyncio.to_thread(record_maker, bundle, args.sign_key, rollback_of)
    except DeployError as err:
        raise Refused(str(err)) from None

    async def signed(deploy_id: int, parent: int) -> Record:
        rec = await make(deploy_id, parent)
        if timings:
            timings.mark("signed")
        if rollback_of:  # as a push through the local agent is: refused before it is stored
            from mgmt.deploy.client import would_run

            why = await asyncio.to_thread(would_run, str(args.prefix), rec.encode(), args.seeds)
            if why is not None:
                raise DeployError(why)
        return rec

    rec = await push(client, bundle, signed, force=args.force, keep=args.keep)
    if timings:
        timings.mark("stored")
    what = f" (the content of deploy {rollback_of})" if rollback_of else ""
    print(f"deploy {rec.id}{what}: {rec.frontend} {rec.entry}, {rec.hash[:12]}", file=sys.stderr)
    return ExitCode.OK


def _signed_as_kept(rec: Record, bundle: Bundle, unsigned: bool) -> None:
    """DeployError unless `bundle` is the content deploy `rec` was pushed with and `rec` is
    signed as it says (or unsigned, for an `--unsigned` rollback): a rollback signs it anew,
    and anyone who may write the cluster may have changed its blob or its record since."""
    from mgmt.deploy.sign import signer

    where = f"--rollback: deploy {rec.id}"
    if bundle.hash != rec.hash:
        raise DeployError(
            f"{where}: its blob does not match the hash its record names ({rec.hash[:12]}): "
            "changed in the cluster; push its source again"
        )
    if not rec.signature:
        if unsigned:
            return
        raise DeployError(f"{where} is unsigned: push its source again, signed (or --unsigned)")
    try:
        key = signer(rec.payload(), rec.signature)
    except DeployError as err:
        raise DeployError(f"{where}: its record: {err}") from None
    if key != rec.key:
        raise DeployError(f"{where}: its record names key {rec.key}, its signature is {key}'s")


async def cluster_status(client: EtcdClient, as_json: bool = False) -> ExitCode:
    """Print every host's row (`mgmt deploy --status`, `mgmt status --cluster`); FAILED when a
    host is down, has a failed resource or refused a deploy newer than the one it runs."""
    from mgmt.deploy.status import host_statuses, quorum_note, report

    # Without a quorum a (linearizable) read waits for a leader until it times out: the
    # voting members are asked first (each answers without one), and then the rows read as
    # the connected member knows them, said to be stale. Before, 6 s and `Deadline Exceeded`.
    note = await quorum_note(client)
    text, code = report(await host_statuses(client, stale=bool(note)), as_json)
    if note:
        print(note, file=sys.stderr if as_json else sys.stdout)
    print(text)
    return ExitCode.FAILED if note else code


def status_main(args: argparse.Namespace) -> int:
    """`mgmt status --cluster`: `args` from a parser given `connection_args`."""

    async def run() -> ExitCode:
        client = await _connected(args)
        try:
            if getattr(args, "forget", None) is not None:
                return await _forget(client, args.forget)
            return await cluster_status(client, args.json)
        finally:
            await client.close()

    return _run(run())


async def _forget(client: EtcdClient, host: str) -> ExitCode:
    """`mgmt status --cluster --forget HOST`."""
    from mgmt.deploy.status import HostAlive, forget

    try:
        if not await forget(client, host):
            raise Refused(f"no rows of host {host!r} in the cluster")
    except HostAlive as err:
        raise Refused(str(err)) from None
    print(f"forgot {host}: its deploy status and summary are deleted")
    return ExitCode.OK


async def list_text(client: EtcdClient) -> str:
    """The deploys kept, newest last, with the hosts running each."""
    from mgmt.deploy.status import host_statuses, shown
    from mgmt.deploy.store import records

    rows = [["ID", "TIME", "KEY", "HASH", "PROGRAM", "HOSTS"]]
    statuses = await host_statuses(client)
    for rec in await records(client):
        when = datetime.datetime.fromtimestamp(rec.time, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        hosts = ",".join(s.host for s in statuses if s.running == rec.id) or "-"
        program = f"{rec.frontend} {rec.entry}"
        if rec.rollback_of:
            program += f" (rollback to {rec.rollback_of})"
        if rec.key_id != rec.id:  # hosts refuse it: an old record put under a newer id
            program += f" (REPLAYED: the record of deploy {rec.id})"
        row = [str(rec.key_id), when, rec.key or "UNSIGNED", rec.hash[:12], program, hosts]
        rows.append([shown(cell) for cell in row])  # a record is anyone's who writes etcd
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
