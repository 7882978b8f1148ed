"""Per-host etcd identities: which host may write which keys (docs/security.md, attribution).

With `--cluster-cert-dir` (certificates minted by the operator, `mgmt cluster mint-cert`), etcd
authentication is on and etcd takes a client certificate's CN as the user name:

- a *core* host (certificate minted with `--core`: it carries the DNS name `CORE_SAN`, which
  etcd's peer port requires) is a user with etcd's root role: it may run a member, and the
  leader among them changes membership, defragments, withdraws a gone host's exports;
- any other host is a user with its own role (`role_name(host)`): it reads everything under
  `/_mgmt/`, writes its own keys (`HOST_KEYS`) and the shared ones (`SHARED_KEYS`), nothing else.

So a record under `/_mgmt/exported/<host>/` was written by `<host>` or by a core member.

`bootstrap()` runs once, on the first host, before authentication is on; `admit()` creates a new
host's user (run by a core member, `mgmt cluster admit HOST`), before that host starts: with
authentication on, etcd refuses every request of a certificate whose CN is not a user.
"""

from __future__ import annotations

from aetcd import rpc

from engine.errors import ValidationError, WorldError
from engine.world import EXPORTED, HOST_STRINGS, ROOT, SCHEDULE, STRINGS
from mgmt.cluster import OPERATOR, ROOT_ROLE, NotAdmitted, check_host
from mgmt.cluster.client import EtcdClient, range_end
from mgmt.cluster.pki import TLSFiles

HOSTS = ROOT + "hosts/"  # every agent's liveness key, bound to its lease
VOLUNTEERS = ROOT + "volunteers/"  # hosts offering to run a member
NOMINATED = ROOT + "nominated/"  # written by the leader (root) only
IDEAL = ROOT + "ideal_cluster_size"

# A host's own keys, which its role may write: (template of its host name, True: every key
# under it, False: that one key). A new per-host key family is one line here; its host name must
# come first (one etcd key range per host: a role cannot name `<anything>/<host>`).
HOST_KEYS: tuple[tuple[str, bool], ...] = (
    (EXPORTED + "{host}/", True),
    (HOST_STRINGS + "{host}/", True),
    (SCHEDULE + "{host}/", True),
    (HOSTS + "{host}", False),
    (VOLUNTEERS + "{host}", False),
    (ROOT + "deploy-status/{host}", False),  # its deploy status (mgmt.deploy.status)
    (ROOT + "host-status/{host}", False),  # its resources' summary (mgmt.status.cluster)
)
# Keys every admitted host may write: shared by design (a `kv` without `mapped`), so a value
# there says nothing of who wrote it.
SHARED_KEYS: tuple[tuple[str, bool], ...] = ((STRINGS, True),)
# What every admitted host may read.
READABLE = ROOT
# An operator's etcd user (`mgmt cluster mint-cert --operator NAME`): it reads what hosts read
# and writes the deploys only (mgmt.deploy.store), so it can push code and nothing else.
DEPLOY_KEYS = ROOT + "deploy/"


def role_name(host: str) -> str:
    return f"mgmt-host:{host}"


def permissions(host: str) -> list[rpc.Permission]:
    """The permissions of `host`'s role: read /_mgmt/, write its own and the shared keys."""
    perms = [_perm(rpc.Permission.READ, READABLE, True)]
    for template, prefix in HOST_KEYS:
        perms.append(_perm(rpc.Permission.READWRITE, template.format(host=host), prefix))
    for key, prefix in SHARED_KEYS:
        perms.append(_perm(rpc.Permission.READWRITE, key, prefix))
    return perms


def operator_user(name: str) -> str:
    """The etcd user (a certificate's CN) of the operator `name`; ValidationError if bad."""
    if not name or not name.isprintable() or name != name.strip() or any(c in name for c in "/:"):
        raise ValidationError(
            f"{name!r} cannot be an operator's name (non-empty, printable, no '/' or ':')",
            "--operator",
        )
    return OPERATOR + name


def operator_permissions() -> list[rpc.Permission]:
    """An operator's role: read /_mgmt/, write the deploys."""
    return [
        _perm(rpc.Permission.READ, READABLE, True),
        _perm(rpc.Permission.READWRITE, DEPLOY_KEYS, True),
    ]


def _perm(kind: int, key: str, prefix: bool) -> rpc.Permission:
    raw = key.encode()
    return rpc.Permission(permType=kind, key=raw, range_end=range_end(raw) if prefix else b"")


async def admit(client: EtcdClient, host: str, core: bool) -> None:
    """Create `host`'s user (no password: its certificate is its credential) with the root role
    (`core`) or its own role. Running it again is harmless (it also widens a host to core)."""
    check_host(host)
    if core:
        await _add_user(client, host, ROOT_ROLE, [])
    else:
        await _add_user(client, host, role_name(host), permissions(host))


async def admit_operator(client: EtcdClient, name: str) -> None:
    """Create the operator `name`'s user (`operator_user`) and role (`operator_permissions`)."""
    await _add_user(client, operator_user(name), f"mgmt-operator:{name}", operator_permissions())


async def _add_user(client: EtcdClient, user: str, role: str, perms: list[rpc.Permission]) -> None:
    """`user` (no password: its certificate is its credential) with `role`, which is created
    with `perms` unless it is root's. Running it again is harmless."""
    options = rpc.UserAddOptions(no_password=True)
    await client.auth_request(
        "UserAdd", rpc.AuthUserAddRequest(name=user, options=options), exists_ok=True
    )
    if role != ROOT_ROLE:
        await client.auth_request("RoleAdd", rpc.AuthRoleAddRequest(name=role), exists_ok=True)
        for perm in perms:
            request = rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
            await client.auth_request("RoleGrantPermission", request)
    await client.auth_request("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))


async def is_core(client: EtcdClient, host: str) -> bool:
    """Whether `host` is a user with etcd's root role (a core host). Root only."""
    try:
        user = await client.auth_request("UserGet", rpc.AuthUserGetRequest(name=host))
    except WorldError as err:
        if "user name not found" in str(err):
            return False
        raise
    return ROOT_ROLE in user.roles


async def sync_roles(client: EtcdClient) -> list[str]:
    """Give every confined host's role the permissions `permissions()` lists now (a key family
    added to HOST_KEYS since it was admitted); the hosts whose role changed. Root only: run by
    a core host whenever its member is ready."""
    prefix = role_name("")
    roles = await client.auth_request("RoleList", rpc.AuthRoleListRequest())
    changed = []
    for role in (r for r in roles.roles if r.startswith(prefix)):
        got = await client.auth_request("RoleGet", rpc.AuthRoleGetRequest(role=role))
        have = {(p.permType, bytes(p.key), bytes(p.range_end)) for p in got.perm}
        host = role.removeprefix(prefix)
        for perm in permissions(host):
            if (perm.permType, perm.key, perm.range_end) not in have:
                request = rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
                await client.auth_request("RoleGrantPermission", request)
                changed.append(host)
    return sorted(set(changed))


async def bootstrap(client: EtcdClient, host: str) -> None:
    """On the first (core) host of a new cluster: etcd's root user and role (no password: a
    certificate with CN 'root' is never minted), this host as a core user, authentication on."""
    await client.auth_request("RoleAdd", rpc.AuthRoleAddRequest(name=ROOT_ROLE), exists_ok=True)
    options = rpc.UserAddOptions(no_password=True)
    await client.auth_request(
        "UserAdd", rpc.AuthUserAddRequest(name=ROOT_ROLE, options=options), exists_ok=True
    )
    request = rpc.AuthUserGrantRoleRequest(user=ROOT_ROLE, role=ROOT_ROLE)
    await client.auth_request("UserGrantRole", request)
    await admit(client, host, core=True)
    await client.auth_request("AuthEnable", rpc.AuthEnableRequest())


def not_admitted(host: str, why: str) -> NotAdmitted:
    """The error of a host whose certificate's CN is not an etcd user (yet)."""
    return NotAdmitted(
        f"this host ({host}) is not admitted to the cluster ({why}): run `mgmt cluster admit "
        f"{host} --cert-dir DIR` on a core member (DIR: that member's --cluster-cert-dir), "
        "then start it again",
        "--cluster-cert-dir",
    )


async def admit_remote(
    endpoints: list[str],
    tls: TLSFiles,
    host: str,
    core: bool,
    timeout: float = 5.0,
    *,
    operator: bool = False,
) -> None:
    """`mgmt cluster admit`: admit `host` (or the operator `host`) through the cluster at
    `endpoints`, connected with a core member's credentials `tls`; WorldError (one line) if it
    cannot be done."""
    client = EtcdClient(endpoints, tls=tls, call_timeout=timeout / 2, retry_for=timeout)
    try:
        if not await client.wait_connected(timeout):
            raise WorldError(
                f"no etcd member reachable at {','.join(endpoints)}: "
                f"{client.last_error or 'timeout'}"
            )
        try:
            await (admit_operator(client, host) if operator else admit(client, host, core))
        except WorldError as err:
            if "permission denied" in str(err) or "not enabled" in str(err):
                raise WorldError(
                    f"{err} (admitting needs a core member's credentials, of a cluster started "
                    "with --cluster-cert-dir)"
                ) from None
            raise
    finally:
        await client.close()
