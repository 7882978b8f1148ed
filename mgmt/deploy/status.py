"""Each host's deploy status in the cluster, and the `mgmt deploy --status` table.

Every agent that runs deploys keeps `/_mgmt/deploy-status/<host>` (JSON `HostStatus`) up to
date: the deploy it runs, the one it has ready (verified, waiting to switch together), whether
its graph is converged, and the last deploy it refused and why. The key is not leased: a host
that is down keeps its last status, and `alive` (its `/_mgmt/hosts/<host>` liveness key) says
it is down.

`host_statuses(client)` is the data (every host's, from any host or an operator's machine);
`table(rows)` the text `mgmt deploy --status` prints. `mgmt status` (one agent's resources,
through its status socket) can show a row of it, or grow a cluster view from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from mgmt.cluster.client import EtcdClient

STATUS = "/_mgmt/deploy-status/"
HOSTS = "/_mgmt/hosts/"  # every live agent's leased key (mgmt.cluster.cluster)


def status_key(host: str) -> str:
    return STATUS + host


@dataclass
class HostStatus:
    host: str
    running: int = 0  # the deploy it runs (0: none)
    ready: int = 0  # the newest deploy it has verified and prepared
    converged: bool = False  # its graph is converged
    refused: int = 0  # the last deploy it refused (0: none)
    error: str = ""  # why it refused it, or why the running deploy fails
    alive: bool = False  # its agent holds its liveness key (not stored: read from hosts/)
    runs_deploys: bool = False  # it has a status key (not stored: a host that runs no
    # deploys, e.g. `mgmt run yaml FILE`, has none)

    def encode(self) -> bytes:
        doc = asdict(self)
        del doc["alive"], doc["runs_deploys"]
        return json.dumps(doc, sort_keys=True).encode()

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
            if f.name not in ("host", "alive", "runs_deploys") and type(value) is type(
                getattr(cls, f.name)
            ):
                values[f.name] = value
        return cls(host, runs_deploys=True, **values)


async def host_statuses(client: EtcdClient) -> list[HostStatus]:
    """Every host that has a deploy status or is alive, by name."""
    raw, _ = await client.get_prefix(STATUS.encode())
    alive, _ = await client.get_prefix(HOSTS.encode())
    rows = {
        key.decode()[len(STATUS) :]: HostStatus.decode(key.decode()[len(STATUS) :], value)
        for key, value in raw.items()
    }
    for key in alive:
        host = key.decode()[len(HOSTS) :]
        rows.setdefault(host, HostStatus(host)).alive = True
    return [rows[h] for h in sorted(rows)]


def _shown(text: str) -> str:
    """`text` on one line, control characters escaped: a host writes its own status, and its
    `error` must not add rows (another host's) or terminal escapes to the operator's table."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def table(rows: list[HostStatus]) -> str:
    """A plain text table, one host per line."""
    header = ["HOST", "ALIVE", "DEPLOY", "READY", "CONVERGED", "REFUSED"]
    lines = [header]
    for row in rows:
        error = _shown(row.error)
        refused = f"{row.refused}: {error}" if row.refused else (error or "-")
        lines.append(
            [
                _shown(row.host),
                "yes" if row.alive else "no",
                str(row.running or "-"),
                str(row.ready or "-"),
                "yes" if row.converged else "no",
                refused,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )
