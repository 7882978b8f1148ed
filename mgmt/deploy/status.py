"""Each host's deploy status in the cluster, and the `mgmt deploy --status` table.

Every agent that runs deploys keeps `/_mgmt/deploy-status/<host>` (JSON `HostStatus`) up to
date: the deploy it runs, the one it has ready (verified, waiting to switch together), whether
its graph is converged, and the last deploy it refused and why. The key is not leased: a host
that is down keeps its last status, and `alive` (its `/_mgmt/hosts/<host>` liveness key) says
it is down.

A host that stops cleanly (SIGTERM, `systemctl stop`) writes `left` (the time) into its summary
before it leaves: its row then reads `left`, not `down`, and is no failure (exit 0). A host
that left or is down keeps its rows until it comes back or an operator forgets it
(`forget`, `mgmt status --cluster --forget HOST`).

Every clustered agent also keeps `/_mgmt/host-status/<host>` (JSON, mgmt.status.cluster): its
resources, how many have failed and the last error, converged or not and since when, and its
program's error if it has one (a row then reads `failed`: the host does not run what it was
asked to, e.g. a deploy that cannot run while an older deploy's graph still runs).

`host_statuses(client)` is the data (every host's, from any host or an operator's machine),
merging the three; `report(rows, as_json)` the text and exit code that `mgmt deploy --status`
and `mgmt status --cluster` print (one code path), and the agent's status page shows the rows
live.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient
from mgmt.config import ExitCode

STATUS = "/_mgmt/deploy-status/"
HOSTS = "/_mgmt/hosts/"  # every live agent's leased key (mgmt.cluster.cluster)
SUMMARY = "/_mgmt/host-status/"  # every clustered agent's resources (mgmt.status.cluster)
# Not stored in the deploy status: read from the liveness key and the summary.
# A host writes its own summary: `since` beyond this (or NaN, infinite) is unreadable. 1e300
# stopped `mgmt status --cluster` with a traceback (time_t), and NaN or Infinity made the page's
# JSON one no browser parses.
MAX_TIME = 2.0**33  # seconds since the epoch: the year 2242
# Keys per prefix read in one transaction: 3 x 8 values of etcd's largest (1.5 MiB) stay within
# the client's receive limit (64 MiB).
SMALL = 8
_READ = (
    "alive",
    "runs_deploys",
    "reports",
    "resources",
    "failed",
    "since",
    "last_error",
    "left",
    "program_error",
    "stale",
)


UNSIGNED = "unsigned"  # a host's `unverified`: it runs an unsigned deploy


def status_key(host: str) -> str:
    return STATUS + host


@dataclass
class HostStatus:
    host: str
    running: int = 0  # the deploy it runs (0: none)
    ready: int = 0  # the newest deploy it has verified and prepared
    converged: bool = False  # its graph is converged
    refused: int = 0  # the last deploy it refused (0: none)
    # Why it refused it. (Why the running deploy fails is its summary's `program_error`.)
    error: str = ""
    # Why the running deploy was not verified (run with --allow-unsigned-deploys): UNSIGNED,
    # or "no --trusted-keys" (signed, but the host has no key to verify it); "" if it was.
    unverified: str = ""
    alive: bool = False  # its agent holds its liveness key (not stored: read from hosts/)
    runs_deploys: bool = False  # it has a status key (not stored: a host that runs no
    # deploys, e.g. `mgmt run yaml FILE`, has none)
    # From its summary (not stored here): whether it has one, its resources, how many are
    # failing (retrying ones and failed reversals counted in: mgmt.status.cluster.summary)
    # and the last error of one, since when it is converged (or not: 0).
    reports: bool = False
    resources: int = 0
    failed: int = 0
    since: float = 0.0
    last_error: str = ""
    left: float = 0.0  # when it stopped cleanly (its summary's `left`): 0 if it did not
    # What is wrong with its program (its summary's; "": nothing): its last edit does not
    # compile, or a function fails (e.g. a deploy that checked but cannot run: the graph of an
    # older one still runs). The host does not run what it was asked to: it has failed.
    program_error: str = ""
    # Read without a quorum (`host_statuses(stale=True)`): `alive` is unknown (not stored).
    stale: bool = False

    def encode(self) -> bytes:
        doc = asdict(self)
        for name in _READ:
            del doc[name]
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def warning(self) -> str:
        """UNSIGNED or UNVERIFIED beside the deploy it runs ("" if verified or none): what
        the table and the page show (a host writes its own status: a label, never its text)."""
        if not self.running or not self.unverified:
            return ""
        return "UNSIGNED" if self.unverified == UNSIGNED else "UNVERIFIED"

    def doc(self) -> dict[str, Any]:
        """The row as JSON (`--json`, the status page): its fields, `state` and `warning`."""
        return {**asdict(self), "state": self.state, "warning": self.warning}

    @property
    def state(self) -> str:
        """left (stopped cleanly), down (no live agent otherwise), failed (a resource has, or
        its program has an error), converged or converging; unknown when read without a
        quorum (`stale`)."""
        if self.stale:
            return "unknown"
        if not self.alive:
            return "left" if self.left else "down"
        if self.failed or self.program_error:
            return "failed"
        return "converged" if self.converged else "converging"

    def merge_summary(self, data: bytes) -> None:
        """Read the host's summary (mgmt.status.cluster.summary) into this row."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            converged, since = doc["converged"], doc["since"] or 0.0
            resources, failed, error = doc["resources"], doc["failed"], doc["error"]
            left = doc.get("left", 0.0)
            program_error = doc.get("program_error", "")
            if not (
                type(converged) is bool
                and _time(since)
                and _time(left)
                and type(resources) is int
                and type(failed) is int
                and resources >= 0
                and failed >= 0
                and type(error) is str
                and type(program_error) is str
            ):
                raise TypeError("a field of the wrong type")
        except (ValueError, TypeError, KeyError):
            self.reports, self.last_error = True, "unreadable summary"
            return
        self.reports, self.resources, self.failed = True, resources, failed
        if not self.runs_deploys:  # else its deploy status says (not converged as it stops)
            self.converged = converged
        # A row converged since a time, or not converged and since no time: a host stopped
        # cleanly read `no` with its summary's time.
        self.since = float(since) if converged and self.converged else 0.0
        self.last_error = error
        self.left = float(left)
        self.program_error = program_error

    @classmethod
    def decode(cls, host: str, data: bytes) -> HostStatus:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            return cls(host, error="unreadable status", runs_deploys=True)
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = doc.get(f.name)
            if (
                f.name != "host"
                and f.name not in _READ
                and type(value) is type(getattr(cls, f.name))
            ):
                values[f.name] = value
        return cls(host, runs_deploys=True, **values)


async def host_statuses(client: EtcdClient, stale: bool = False) -> list[HostStatus]:
    """Every host that has a deploy status or a summary, or is alive, by name. `stale`: read
    as the connected member knows them (it answers without a quorum); whether an agent is
    alive is then unknown (no lease expires without a leader): each row says so."""
    read = await _small_read(client, stale)
    if read is None:  # many hosts: each prefix in pages (see EtcdClient.scan)
        raw, _ = await client.get_prefix(STATUS.encode(), stale)
        alive, _ = await client.get_prefix(HOSTS.encode(), stale)
        summaries, _ = await client.get_prefix(SUMMARY.encode(), stale)
    else:
        raw, alive, summaries = read
    rows = {
        key.decode()[len(STATUS) :]: HostStatus.decode(key.decode()[len(STATUS) :], value)
        for key, value in raw.items()
    }
    for key in alive:
        host = key.decode()[len(HOSTS) :]
        rows.setdefault(host, HostStatus(host)).alive = True
    for key, value in summaries.items():
        host = key.decode()[len(SUMMARY) :]
        rows.setdefault(host, HostStatus(host)).merge_summary(value)
    for row in rows.values():
        row.stale = stale
    return [rows[h] for h in sorted(rows)]


async def quorum_note(client: EtcdClient) -> str:
    """ "" if the cluster has a quorum (or it cannot be told), else what `mgmt status
    --cluster` says above its stale rows: how many voting members answer, which do not (the
    voters probed: a command's; an agent knows it from its lease, `Cluster.no_quorum`)."""
    try:
        up, down = await client.voters_answering()
    except WorldError:
        return ""
    if len(up) > (len(up) + len(down)) // 2:
        return ""
    names = sorted(m.name or str(m.id) for m in down)
    return no_quorum_note(len(up), len(up) + len(down), names, client.endpoint)


def no_quorum_note(up: int, voters: int, silent: list[str], endpoint: str | None) -> str:
    """The line above stale rows (`mgmt status --cluster`, the agent's status)."""
    return (
        f"cluster: no quorum: {up} of {voters} voting members reachable (unreachable: "
        f"{', '.join(silent)}); the rows are as {endpoint} last knew them, whether each agent "
        f"is alive is unknown (?)"
    )


async def _small_read(
    client: EtcdClient, serializable: bool = False
) -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]] | None:
    """The three prefixes in one read-only transaction (one round trip: every host reads
    them again at each host's status change), or None when one holds more than SMALL keys
    (their values, which each host writes, could then pass the client's receive limit)."""
    from aetcd import rpc

    from mgmt.cluster.client import range_end

    ops = [
        rpc.RequestOp(
            request_range=rpc.RangeRequest(
                key=p.encode(),
                range_end=range_end(p.encode()),
                limit=SMALL,
                serializable=serializable,  # every range: etcd serves the transaction locally
            )
        )
        for p in (STATUS, HOSTS, SUMMARY)
    ]
    response = await client.txn([], ops, what=f"list {STATUS}, {HOSTS}, {SUMMARY}")
    ranges = [r.response_range for r in response.responses]
    if any(r.more for r in ranges):
        return None
    status, alive, summaries = ({bytes(kv.key): bytes(kv.value) for kv in r.kvs} for r in ranges)
    return status, alive, summaries


def _time(value: object) -> bool:
    """A time a host wrote: seconds since the epoch, at most MAX_TIME (also refuses NaN and
    infinities)."""
    return type(value) in (int, float) and 0 <= value < MAX_TIME  # type: ignore[operator]


async def forget(client: EtcdClient, host: str) -> bool:
    """Delete the rows of `host`, which left or is down (its deploy status and summary);
    False if it has none. Refused (`HostAlive`) while its agent is alive: it would write them
    again. Needs the right to write another host's keys (a core host's, or a shared
    certificate's: an operator's certificate writes deploys only)."""
    from aetcd import rpc

    alive = rpc.Compare(
        key=(HOSTS + host).encode(), target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL
    )
    deletes = [
        rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=(prefix + host).encode()))
        for prefix in (STATUS, SUMMARY)
    ]
    response = await client.txn([alive], deletes, what=f"forget {host}")
    if not response.succeeded:
        raise HostAlive(f"{host} is alive: stop its agent first (it writes its rows again)")
    return any(r.response_delete_range.deleted for r in response.responses)


class HostAlive(Exception):
    """`forget` of a host whose agent runs."""


def exit_code(rows: list[HostStatus]) -> ExitCode:
    """FAILED when a host is down (its agent gone without leaving, or unreachable: its lease
    expired), has a failed resource or reversal or a program error, or refused a deploy newer than the one it runs (an untrusted key: it does
    not run what was pushed); OK otherwise, a host that left cleanly included (a check:
    `mgmt status --cluster || alert`)."""
    if any(row.state in ("down", "failed") or row.refused > row.running for row in rows):
        return ExitCode.FAILED
    return ExitCode.OK


def report(rows: list[HostStatus], as_json: bool = False) -> tuple[str, ExitCode]:
    """What `mgmt deploy --status` and `mgmt status --cluster` print, and their exit code."""
    text = json.dumps([row.doc() for row in rows], indent=2) if as_json else table(rows)
    return text, exit_code(rows)


def shown(text: str) -> str:
    """`text` on one line, control characters escaped: a host writes its own status, and its
    `error` must not add rows (another host's) or terminal escapes to the operator's table (nor
    a record's fields to `mgmt deploy --list`)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def table(rows: list[HostStatus]) -> str:
    """A plain text table, one host per line."""
    header = ["HOST", "ALIVE", "DEPLOY", "READY", "CONVERGED", "SINCE", "RESOURCES", "FAILED"]
    header.append("REFUSED / LAST ERROR")
    lines = [header]
    for row in rows:
        error = shown(row.error)
        refused = f"{row.refused}: {error}" if row.refused else error
        last = shown(row.last_error)
        if row.program_error:
            last = "; ".join(t for t in (f"program: {shown(row.program_error)}", last) if t)
        lines.append(
            [
                shown(row.host),
                _alive(row),
                f"{row.running} ({row.warning})" if row.warning else str(row.running or "-"),
                str(row.ready or "-"),
                _converged(row),
                _clock(row.since) if row.alive or row.stale else "-",
                str(row.resources) if row.reports else "-",
                str(row.failed) if row.reports else "-",
                "; ".join(t for t in (refused, last) if t) or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


def _converged(row: HostStatus) -> str:
    """Its CONVERGED cell: unknown without a quorum, `no` for a host whose agent is not alive
    (down or left: its last summary said converged, but nothing converges it now; before
    2026-12-05 it read `yes`, and a script reading that column was misled)."""
    if row.stale:
        return "?"
    return "yes" if row.converged and row.alive else "no"


def _alive(row: HostStatus) -> str:
    if row.stale:
        return "?"
    if row.alive:
        return "yes"
    return f"left {_clock(row.left)}" if row.left else "no"


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds)) if seconds else "-"
