"""The cluster: a supervised etcd core, membership, the etcd World, exported resources.

Imported lazily: this module is light (no etcd client) and only answers whether a run needs the
cluster at all; `mgmt.cluster.link.ClusterLink` (which imports grpc and aetcd) is imported
only when it does. A plain local cron run starts no etcd and imports no etcd client.
"""

from __future__ import annotations

import os

# Read by grpc when it is imported, which the first module importing aetcd does (this package's
# modules, and mgmt.deploy.store, whose package imports this one first): gRPC's core logs on
# stderr itself (`E1205 ... Corruption detected.`, several lines a second while a TLS handshake
# is refused) beside the error it raises, which the client says once in words (a clock, a CA:
# mgmt.cluster.client.tls_refusal): none unless the operator asks (GRPC_VERBOSITY=error|info);
# and we fork etcd.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from typing import TYPE_CHECKING

from engine.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from engine.graph import Key
    from mgmt.config import Config
    from mgmt.yamlgraph import Loaded


class NotAdmitted(ValidationError):
    """This host's certificate is not an etcd user of the cluster (mgmt.cluster.identity): it
    must be admitted (`mgmt cluster admit HOST`) before it can start."""


class HostnameTaken(NotAdmitted):
    """Another agent runs under this host's name (its liveness key is held and renewed): the
    run is refused before it writes anything (mgmt.cluster.cluster)."""


# Kinds whose presence in a graph needs the cluster.
CLUSTER_KINDS = frozenset({"kv", "schedule"})


def flags_given(config: Config) -> bool:
    """Any cluster flag given explicitly (they start or join the cluster even for no graph)."""
    return bool(
        config.seeds
        or config.client_urls
        or config.server_urls
        or config.advertise_client_urls
        or config.advertise_server_urls
        or config.no_server
    )


def needs_cluster(config: Config, loaded: Loaded, keys: Iterable[Key] | None = None) -> bool:
    """Whether this run must start or join the cluster (DESIGN §6: lazily, only if needed).
    `keys`: only these resources can need it (the others did not need it before a swap)."""
    if config.frontend == "empty" or flags_given(config):
        return True
    if loaded.exported or loaded.collect or loaded.cluster:
        return True
    vertices = loaded.graph.vertices
    return any(
        kind in CLUSTER_KINDS or vertices[(kind, name)].needs_world()
        for kind, name in (vertices if keys is None else (k for k in keys if k in vertices))
    )


ROOT_ROLE = "root"  # etcd's administrator role
OPERATOR = "operator:"  # the etcd user of operator NAME is operator:NAME


def check_host(host: str, key: str = "HOST") -> None:
    """ValidationError unless `host` can be an etcd identity (a certificate's CN)."""
    if (
        not host
        or "/" in host
        or not host.isprintable()  # a newline would forge log lines naming another host
        or host != host.strip()
        or host == ROOT_ROLE
        or host.startswith(OPERATOR)  # an operator's identity is never a host's
    ):
        raise ValidationError(
            f"{host!r} cannot be a host's identity (non-empty, printable, no '/', not 'root', "
            f"not starting with {OPERATOR!r}: an operator's)",
            key,
        )
