"""Cluster options from the Config: URL lists, TLS, auth, checked before anything starts.

Rules (docs/security.md): by default every etcd port speaks TLS and requires a client
certificate from the cluster's CA (`https://` URLs); this host's certificate is minted at start
from the CA in `--cluster-ca-dir` (default `<prefix>/cluster-ca/`, created by the first host),
or given as files (`--tls-ca/--tls-cert/--tls-key`; peer URLs: `--peer-tls-*`, which default to
the `--tls-*` ones). A joining host (`--seeds`) must bring its credentials. `--insecure-cluster`
is the old plain mode: `http://`, no certificates (development only). The password comes from a
file and is never logged (`Options.__repr__` hides it).
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine import safefs
from engine.errors import ResourceError, ValidationError, WorldError
from engine.params import hide_secret
from mgmt.address import split_url
from mgmt.cluster import OPERATOR, check_host
from mgmt.cluster.pki import (
    CA_CERT,
    CA_KEY,
    TLSFiles,
    check_ca_dir,
    check_cert_dir,
    check_given,
    check_key,
    has_ca,
    host_files,
    load_ca,
    read_identity,
)

if TYPE_CHECKING:
    from mgmt.config import Config

# Where etcd listens by default (the scheme: https, or http with --insecure-cluster).
DEFAULT_CLIENT_ADDR = "127.0.0.1:2379"
DEFAULT_SERVER_ADDR = "127.0.0.1:2380"
DEFAULT_IDEAL_SIZE = 5  # --ideal-cluster-size's default (mgmt's chooser's too)
_DURATION = re.compile(r"\d+(\.\d+)?(ns|us|ms|s|m|h)?")


@dataclass(frozen=True)
class Options:
    hostname: str
    # Client URLs of existing members to join through (empty: start a new cluster).
    seeds: list[str]
    # Where this host's etcd listens for clients and for peers, and what it advertises.
    client_urls: list[str]
    server_urls: list[str]
    advertise_client_urls: list[str]
    advertise_server_urls: list[str]
    ideal_cluster_size: int
    no_server: bool
    tls: TLSFiles
    peer_tls: TLSFiles
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    heartbeat_ms: int = 100
    election_ms: int = 1000
    quota_bytes: int = 0
    compaction_retention: str = "10m"
    # Mint this host's certificate at start from the CA in this directory (then `tls` and
    # `peer_tls` are filled in); None: the files in `tls`/`peer_tls` as given.
    ca_dir: Path | None = None
    # Create that CA if it is not there yet (the first host of a cluster).
    create_ca: bool = False
    # --insecure-cluster: plain http, no certificates (warned about at start).
    insecure: bool = False
    # Seconds a gone host's exports stay before the leader withdraws them (-1: kept).
    export_grace: float = 300
    # Per-host etcd identities (--cluster-cert-dir, mgmt/cluster/identity.py): etcd auth on,
    # each host's certificate CN its user; `core`: its certificate may run a member (root).
    identities: bool = False
    core: bool = True

    @property
    def call_timeout(self) -> float:
        """Seconds one etcd request may take before it is retried (elsewhere): a write caught
        in a leader election never completes, so this is two election timeouts (>= 0.5 s)."""
        return max(0.5, 2 * self.election_ms / 1000)

    @property
    def lease_ttl(self) -> int:
        """Seconds a dead agent keeps its liveness key: 3 election timeouts, at least 2 s."""
        return max(2, math.ceil(3 * self.election_ms / 1000))


def split_urls(text: str) -> list[str]:
    """URLs separated by commas, semicolons or white space (as mgmt splits them)."""
    return text.replace(",", " ").replace(";", " ").split()


def check_url(url: str, flag: str, insecure: bool) -> None:
    parts = split_url(url, flag)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValidationError(f"expected URLs like https://127.0.0.1:2379, got {url!r}", flag)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ValidationError(f"{url!r} needs an explicit port", flag)
    if parts.scheme == "http" and not insecure:
        raise ValidationError(
            f"{url!r}: plain http lets any local user write the cluster (and so make this host "
            "apply what they write); use https:// (mutual TLS with the cluster's CA, the "
            "default) or --insecure-cluster (development only)",
            flag,
        )


def from_config(config: Config, prefix: Path | None = None) -> Options:
    """Build and check the options; ValidationError (naming the flag) on any problem.

    `prefix`: the state directory the run uses (default `config.prefix`), where the cluster CA
    lives unless `--cluster-ca-dir` says otherwise."""
    # The name keys this host's etcd entries (hosts/<name>, exported/<name>/...): one with a
    # '/' would overlap another host's, whose withdrawal would then delete this one's too.
    check_host(config.hostname, "--hostname")
    insecure = config.insecure_cluster
    scheme = "http" if insecure else "https"
    lists: dict[str, list[str]] = {}
    for name in ("seeds", "client_urls", "server_urls"):
        lists[name] = split_urls(getattr(config, name))
    lists["client_urls"] = lists["client_urls"] or [f"{scheme}://{DEFAULT_CLIENT_ADDR}"]
    lists["server_urls"] = lists["server_urls"] or [f"{scheme}://{DEFAULT_SERVER_ADDR}"]
    lists["advertise_client_urls"] = (
        split_urls(config.advertise_client_urls) or lists["client_urls"]
    )
    lists["advertise_server_urls"] = (
        split_urls(config.advertise_server_urls) or lists["server_urls"]
    )
    for name, urls in lists.items():
        for url in urls:
            check_url(url, "--" + name.replace("_", "-"), insecure)
    tls = TLSFiles(config.tls_ca, config.tls_cert, config.tls_key)
    identities, core = _identity(config, tls, lists["seeds"])
    if identities:
        assert config.cluster_cert_dir is not None
        tls = host_files(config.cluster_cert_dir)
    peer_tls = TLSFiles(
        config.peer_tls_ca or tls.ca,
        config.peer_tls_cert or tls.cert,
        config.peer_tls_key or tls.key,
    )
    for flag, files in (("tls", tls), ("peer-tls", peer_tls)):
        if (files.cert is None) != (files.key is None):
            raise ValidationError("give both a certificate and its key", f"--{flag}-cert")
        for what in ("ca", "cert", "key"):
            path = getattr(files, what)
            if path is not None and not path.is_file():
                raise ValidationError(f"no such file: {path}", f"--{flag}-{what}")
    prefix = prefix or config.prefix
    try:  # etcd's data, this host's key and (by default) the CA live there
        safefs.check_private(prefix)
    except (OSError, ResourceError) as err:
        raise ValidationError(str(err), "--prefix") from None
    for flag, files in (("tls", tls), ("peer-tls", peer_tls)):
        for what in ("ca", "cert", "key"):
            path = getattr(files, what)
            try:
                if path is not None:
                    check_given(path)  # theirs to swap: their CA, their certificate
                    if what == "key":  # where its links lead (Let's Encrypt's live/ ->
                        check_key(Path(os.path.realpath(path)))  # archive/), checked above
            except (OSError, WorldError) as err:
                raise ValidationError(str(err), f"--{flag}-{what}") from None
    ca_dir = None if identities else _ca_dir(config, prefix, lists["seeds"], tls, peer_tls)
    if ca_dir is None:
        _check_https(lists["client_urls"], tls, "--client-urls", "--tls-cert")
        _check_https(lists["server_urls"], peer_tls, "--server-urls", "--peer-tls-cert")
    user, password = _credentials(config)
    ideal = DEFAULT_IDEAL_SIZE if config.ideal_cluster_size < 0 else config.ideal_cluster_size
    if ideal < 1:  # a negative one is mgmt's "the default" (its own default is -1)
        raise ValidationError(
            f"must be >= 1 (or -1: the default, {DEFAULT_IDEAL_SIZE}), got "
            f"{config.ideal_cluster_size}",
            "--ideal-cluster-size",
        )
    if config.etcd_heartbeat_interval < 1 or config.etcd_election_timeout < (
        5 * config.etcd_heartbeat_interval
    ):
        raise ValidationError(
            "needs heartbeat >= 1 ms and an election timeout of at least 5 heartbeats, got "
            f"{config.etcd_heartbeat_interval} and {config.etcd_election_timeout}",
            "--etcd-election-timeout",
        )
    if config.export_grace < -1:
        raise ValidationError(
            f"must be -1 (keep) or >= 0 seconds, got {config.export_grace}", "--export-grace"
        )
    if not _DURATION.fullmatch(config.etcd_compaction_retention):
        raise ValidationError(
            f"expected a duration like 10m or 1h (0: never), got "
            f"{config.etcd_compaction_retention!r}",
            "--etcd-compaction-retention",
        )
    return Options(
        hostname=config.hostname,
        seeds=lists["seeds"],
        client_urls=lists["client_urls"],
        server_urls=lists["server_urls"],
        advertise_client_urls=lists["advertise_client_urls"],
        advertise_server_urls=lists["advertise_server_urls"],
        ideal_cluster_size=ideal,
        no_server=config.no_server or not core,  # a confined host runs no member
        tls=tls,
        peer_tls=peer_tls,
        user=user,
        password=password,
        heartbeat_ms=config.etcd_heartbeat_interval,
        election_ms=config.etcd_election_timeout,
        quota_bytes=config.etcd_quota_backend_bytes,
        compaction_retention=config.etcd_compaction_retention,
        ca_dir=ca_dir,
        create_ca=ca_dir is not None and not lists["seeds"],
        insecure=insecure,
        export_grace=config.export_grace,
        identities=identities,
        core=core,
    )


def _identity(config: Config, tls: TLSFiles, seeds: list[str]) -> tuple[bool, bool]:
    """(per-host identities?, a core host?) from --cluster-cert-dir (not given: (False, True))."""
    directory = config.cluster_cert_dir
    if directory is None:
        return False, True
    flag = "--cluster-cert-dir"
    peer = (config.peer_tls_ca, config.peer_tls_cert, config.peer_tls_key)
    if config.insecure_cluster or tls.enabled or any(peer) or config.cluster_ca_dir is not None:
        raise ValidationError(
            "give it alone: not with --insecure-cluster, --cluster-ca-dir or --tls-*", flag
        )
    if config.cluster_user is not None or config.cluster_password_file is not None:
        raise ValidationError(
            "per-host identities replace --cluster-user/--cluster-password-file", flag
        )
    files = host_files(directory)
    for path in (files.ca, files.cert, files.key):
        assert path is not None
        if not path.is_file():
            raise ValidationError(
                f"no {path.name} in {directory}: mint this host's credentials there with "
                f"`mgmt cluster mint-cert {config.hostname} --ca-dir CA --out {directory}`",
                flag,
            )
    try:
        assert files.cert is not None
        check_cert_dir(directory)
        name, core = read_identity(files.cert)
    except (OSError, WorldError) as err:
        raise ValidationError(str(err), flag) from None
    if name.startswith(OPERATOR):  # its etcd user may write the deploys only: never an agent
        raise ValidationError(
            f"{files.cert} is an operator's certificate ({name!r}): it pushes deploys "
            "(mgmt deploy --tls-*) and runs no agent: give this host its own (mgmt cluster "
            "mint-cert HOST)",
            flag,
        )
    if name != config.hostname:
        raise ValidationError(
            f"{files.cert} is {name!r}'s certificate, not this host's ({config.hostname!r}): "
            "etcd would take this host for that one",
            flag,
        )
    if not seeds and not core:
        raise ValidationError(
            "the first host of a cluster must be a core host (mint its certificate with "
            "--core); give --seeds to join one",
            flag,
        )
    return True, core


def _ca_dir(
    config: Config, prefix: Path, seeds: list[str], tls: TLSFiles, peer_tls: TLSFiles
) -> Path | None:
    """The CA this host mints its certificate from (None: files given, or insecure)."""
    given = [f for f in (tls, peer_tls) if f.cert is not None or f.ca is not None]
    if config.insecure_cluster:
        return None
    if given:
        if config.cluster_ca_dir is not None:
            raise ValidationError(
                "give either --cluster-ca-dir or --tls-ca/--tls-cert/--tls-key, not both",
                "--cluster-ca-dir",
            )
        for flag, files in (("tls", tls), ("peer-tls", peer_tls)):
            if files.ca is None or files.cert is None:
                raise ValidationError(
                    "mutual TLS needs a CA, a certificate and its key (without the CA, etcd "
                    "would take clients without a certificate)",
                    f"--{flag}-ca" if files.ca is None else f"--{flag}-cert",
                )
        return None
    ca_dir = config.cluster_ca_dir or prefix / "cluster-ca"
    try:
        check_ca_dir(ca_dir)  # before anything in it is read or created
    except (OSError, WorldError) as err:
        raise ValidationError(str(err), "--cluster-ca-dir") from None
    if (ca_dir / CA_CERT).exists() != (ca_dir / CA_KEY).exists():  # never overwrite a half
        raise ValidationError(
            f"{ca_dir} holds one of {CA_CERT} and {CA_KEY}, not both: the CA needs both",
            "--cluster-ca-dir",
        )
    if has_ca(ca_dir):
        try:
            load_ca(ca_dir)
        except WorldError as err:
            raise ValidationError(str(err), "--cluster-ca-dir") from None
    elif not seeds:  # the first host creates the CA there: a directory of ours (or none yet)
        try:
            safefs.check_private(ca_dir)
        except (OSError, ResourceError) as err:
            raise ValidationError(
                f"no cluster CA there to read, and this host would create one: {err}",
                "--cluster-ca-dir",
            ) from None
    else:
        if config.cluster_ca_dir is None:
            raise ValidationError(
                "joining a cluster needs its credentials: --cluster-ca-dir DIR (a copy of the "
                "first host's <prefix>/cluster-ca/: ca.pem and ca.key) or "
                "--tls-ca/--tls-cert/--tls-key; --insecure-cluster for plain http "
                "(development only)",
                "--seeds",
            )
        raise ValidationError(
            f"no cluster CA in {ca_dir} ({CA_CERT} and {CA_KEY}): copy the first host's "
            "<prefix>/cluster-ca/ there",
            "--cluster-ca-dir",
        )
    return ca_dir


def _check_https(urls: list[str], files: TLSFiles, flag: str, cert_flag: str) -> None:
    if any(u.startswith("https://") for u in urls) and files.cert is None:
        raise ValidationError(f"https listeners need a certificate ({cert_flag})", flag)


def _credentials(config: Config) -> tuple[str | None, str | None]:
    if config.cluster_user is None and config.cluster_password_file is None:
        return None, None
    if config.cluster_user is None or config.cluster_password_file is None:
        raise ValidationError(
            "etcd authentication needs both --cluster-user and --cluster-password-file",
            "--cluster-user",
        )
    password = read_password(config.cluster_password_file)
    if not password:
        raise ValidationError("the password file is empty", "--cluster-password-file")
    hide_secret(password)  # "***" in any line or status text that would show it
    return config.cluster_user, password


PASSWORD_MAX = 4096  # bytes of a password file at most (etcd's own limit is bcrypt's 72)


def read_password(path: Path) -> str:
    """The password in `path`: a regular file that only root and this agent's user can change
    (nor swap through a directory above it or a symlink: safefs.others_control) and that
    others may not read; its group may (root's 0640 file of a group the agent's user is in,
    the 0440 that systemd's LoadCredential= shows for its ACL when the unit has a User=, on a
    file system with ACLs; systemd 252's ramfs gives the file to that user, 0400). A
    FIFO is refused, never waited on; a file larger than PASSWORD_MAX (a link to /dev/zero) is
    refused unread."""
    flag = "--cluster-password-file"
    if (given := _given_fd(path)) is not None:
        return _decoded(path, _read_given(path, given))
    if why := safefs.others_control(str(path)):
        raise ValidationError(
            f"{why}: refusing to read the cluster's password there (another user could swap it: "
            "keep it and the directories above it owned by root or this agent's user, writable "
            "only by them)",
            flag,
        )
    try:
        with safefs.closing(safefs.open_regular(str(path))) as fd:
            st = os.fstat(fd)
            if st.st_mode & 0o007:
                raise ValidationError(
                    f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): "
                    "the cluster's password must not be readable by others (mode 0600, or "
                    "0640 for a group)",
                    flag,
                )
            data = safefs.read_limited(fd, PASSWORD_MAX)
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror or err}", flag) from None
    except ResourceError as err:  # a symlink swapped in since
        raise ValidationError(f"cannot read {path}: {err}", flag) from None
    return _decoded(path, data)


def _decoded(path: Path, data: bytes | None) -> str:
    flag = "--cluster-password-file"
    if data is None:
        raise ValidationError(f"{path} is larger than {PASSWORD_MAX} bytes", flag)
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not UTF-8 text", flag) from None


_GIVEN_FD = re.compile(r"/(?:dev|proc/self)/fd/([0-9]+)|/dev/stdin")


def _given_fd(path: Path) -> int | None:
    """The descriptor N of `/dev/fd/N`, `/proc/self/fd/N` or `/dev/stdin` (a shell's
    `<(pass show etcd)`, `< file`): one the agent was started with, the operator's. Its path
    cannot be walked (`pipe:[...]` is no file), so it is read from the descriptor itself."""
    match = _GIVEN_FD.fullmatch(os.path.normpath(str(path)))
    return None if match is None else int(match[1] or 0)


def _read_given(path: Path, fd: int) -> bytes | None:
    """At most PASSWORD_MAX bytes of the operator's descriptor `fd` (None: more): a pipe is
    read to its end (the operator's, as stdin is: no other user could have handed it to us),
    a regular file as a named one is (not readable by others); anything else is refused."""
    flag = "--cluster-password-file"
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if st.st_mode & 0o007:
                raise ValidationError(
                    f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): "
                    "the cluster's password must not be readable by others",
                    flag,
                )
            return safefs.read_limited(fd, PASSWORD_MAX)
        if not stat.S_ISFIFO(st.st_mode):
            raise ValidationError(f"{path} is neither a pipe nor a regular file", flag)
        chunks, size = [], 0
        while size <= PASSWORD_MAX and (chunk := os.read(fd, PASSWORD_MAX + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror or err}", flag) from None
    return b"".join(chunks) if size <= PASSWORD_MAX else None
