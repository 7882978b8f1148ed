"""The cluster's own certificate authority: mutual TLS for etcd's client and peer ports.

By default (docs/security.md) every etcd port of the cluster speaks TLS and requires a client
certificate signed by the cluster's CA: the first host creates the CA (ECDSA P-256) in
`<prefix>/cluster-ca/` (or `--cluster-ca-dir`), and every host, at every start, mints its own
certificate from it (CN = the host name; SANs = the addresses of its URLs, localhost) into
`<prefix>/cluster-tls/`. A joining host needs a copy of the CA (`--cluster-ca-dir`).

Directories are 0700, keys 0600, every file is written atomically (a temp file in the same
directory, fsynced, renamed). Blocking: call it in a thread. `cryptography` is imported here
only, when a cluster starts.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from engine import safefs
from engine.errors import ResourceError, WorldError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_CERT = "ca.pem"  # the cluster CA's files in its directory
CA_KEY = "ca.key"
HOST_CERT = "host.pem"
HOST_KEY = "host.key"
VALIDITY = datetime.timedelta(days=3650)  # no rotation yet: see docs/security.md
# How far back a certificate's validity starts: a host whose clock is ahead of the cluster's
# (a VM restored from a snapshot, an RTC off until NTP syncs) by up to this much is still
# accepted; a host's certificate is minted again at every start anyway.
BACKDATE = datetime.timedelta(days=1)
# A DNS name only core hosts' certificates carry (per-host identities, mgmt/cluster/identity.py):
# etcd's peer port then takes no other certificate (`--peer-cert-allowed-hostname`), so a
# confined host cannot speak raft, whose proposals carry a user name etcd does not check.
CORE_SAN = "core.mgmt.invalid"


@dataclass(frozen=True)
class TLSFiles:
    """The TLS files of one side of an etcd connection (given by flags, or minted here)."""

    # PEM CA bundle that verifies the other side (None: system roots as a client, no
    # client-certificate check as a server).
    ca: Path | None = None
    # PEM certificate and key this side presents.
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None or self.ca is not None


def has_ca(directory: Path) -> bool:
    """Whether `directory` holds a cluster CA (its certificate and key)."""
    return (directory / CA_CERT).is_file() and (directory / CA_KEY).is_file()


def _private_dir(directory: Path) -> None:
    """`directory` made (or kept) 0700 and ours, below directories only we control."""
    try:
        safefs.private_dir(directory)
    except ResourceError as err:
        raise WorldError(str(err)) from err


def names_core(name: str) -> bool:
    """Whether a certificate naming `name` (a DNS SAN) would pass etcd's peer-port check for
    CORE_SAN: Go's host name matching ignores case and a trailing dot, and a wildcard stands
    for one label (`*.mgmt.invalid`)."""
    name = name.lower().rstrip(".")
    return name in (CORE_SAN, "*." + CORE_SAN.split(".", 1)[1])


def check_key(path: Path) -> None:
    """WorldError unless the private key `path` is this agent's: a regular file owned by its
    user with no access for group or others (ssh's rule), or owned by root and readable by its
    group at most (PostgreSQL's rule: Debian's `/etc/ssl/private` keys are 0640 root:ssl-cert,
    the agent's user in ssl-cert; systemd's LoadCredential= on a file system with ACLs shows
    0440 root's files, the ACL's mask). Never writable but by its owner, never readable by
    others."""
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == 0 and stat.S_ISREG(st.st_mode) and not mode & 0o037:
        return
    rule = "mode 0600 (or root's, 0640 for its group)"
    _check_file(path, st, not mode & 0o077, "a private key", rule)


def check_read_dir(directory: Path, what: str) -> None:
    """WorldError unless only root and this agent's user can change the directory `directory`
    that credentials are read from (`what`), every directory above it and a link on the way
    (safefs.others_control: owned by either, writable by nobody else). It need not be ours:
    root's 0500 `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential=, with an ACL for a unit's
    `User=`) or root's 0710 `/etc/ssl/private` is trusted as root's files in it are, root
    being able to change anything anyway."""
    if why := safefs.others_control(str(directory)):
        raise WorldError(
            f"{why}: refusing to trust {what} in {directory} (another user could swap them: "
            "keep it and the directories above it owned by root or this agent's user, "
            "writable only by them)"
        )
    if os.path.lexists(directory) and not directory.is_dir():
        raise WorldError(f"{directory} is not a directory")


def _readable(path: Path) -> None:
    """WorldError unless this agent may read `path` (its mode and ACL, as the kernel decides)."""
    if not os.access(path, os.R_OK, effective_ids=True):
        raise WorldError(f"{path} cannot be read by this agent's user (uid {os.geteuid()})")


def check_ca_dir(ca_dir: Path) -> None:
    """WorldError unless the CA directory is only root's and ours to change (`check_read_dir`),
    its key, if there, is ours alone (or root's, `check_key`) and its certificate writable by
    nobody else, both readable by us: a CA another local user planted would sign this host's
    certificate, and a `ca.pem` they could write (a bundle of it and theirs) would have etcd
    trust their CA too. A CA is created only in a directory of ours (`options._ca_dir`)."""
    check_read_dir(ca_dir, "the cluster CA")
    if (ca_dir / CA_KEY).exists():
        check_key(ca_dir / CA_KEY)
        _readable(ca_dir / CA_KEY)
    if (ca_dir / CA_CERT).exists():  # copied as read into cluster-tls/ca.pem: etcd trusts it
        check_cert(ca_dir / CA_CERT)
        _readable(ca_dir / CA_CERT)


def check_cert_dir(directory: Path) -> None:
    """WorldError unless a host's credentials directory (`--cluster-cert-dir`) is only root's
    and ours to change (`check_read_dir`: root's `$CREDENTIALS_DIRECTORY` included), its
    certificates are files of ours or root's writable by nobody else, its key ours alone (or
    root's, `check_key`), all three readable by us: a local user who could swap `ca.pem` would
    have etcd trust their CA, and a core host's `root` name in a certificate they mint."""
    check_read_dir(directory, "this host's credentials")
    files = host_files(directory)
    for path in (files.ca, files.cert, files.key):
        assert path is not None
        (check_key if path == files.key else check_cert)(path)
        _readable(path)


def check_cert(path: Path) -> None:
    """WorldError unless the certificate `path` is a file of this agent's user (or root's) that
    nobody else may write (safefs.writable_by_others: root's group may): whoever could swap a
    CA would be trusted as the cluster."""
    st = os.lstat(path)
    ok = not safefs.writable_by_others(st, str(path))
    _check_file(path, st, ok, "a certificate", "writable by nobody else")


def _check_file(path: Path, st: os.stat_result, mode_ok: bool, what: str, rule: str) -> None:
    """WorldError unless `path` (its lstat `st`) is a regular file (a symlink is not followed)
    owned by this process's user or by root (ssh's rule: root's `install -m 0644 ca.pem` into
    the agent's own CA directory was refused to an agent of another user, eighth session's
    review), or by the sudo invoker of an operator's command (`check_credentials`), and
    `mode_ok`."""
    if stat.S_ISREG(st.st_mode) and safefs.trusted_owner(st.st_uid) and mode_ok:
        return
    invoker = safefs.trusted_invoker()
    also = f", or the sudo invoker's (uid {invoker})" if invoker not in (None, 0) else ""
    raise WorldError(
        f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): {what} must be "
        f"a file owned by this agent's user (uid {os.geteuid()}) or root{also}, {rule}"
    )


def check_given(path: Path) -> None:
    """WorldError unless only root and this agent's user can change the file `path` the agent
    was given (--tls-ca, --tls-cert, --tls-key and the --peer-tls-* ones, read by etcd and the
    agent at every start): the file, every directory above it, and a symlink on the way
    (engine.safefs.others_control). Another local user who could swap `--tls-ca` would have
    this host's etcd trust their CA, and the certificate they mint from it write the cluster."""
    if why := safefs.others_control(str(path)):
        raise WorldError(
            f"{why}: refusing to trust {path} (another user could swap it: keep it and the "
            "directories above it owned by root or this agent's user, writable only by them)"
        )


def check_credentials(files: TLSFiles) -> None:
    """WorldError unless an operator's credentials (`mgmt deploy`, `mgmt status --cluster`,
    `mgmt cluster admit --cert-dir`: a host's `<prefix>/cluster-tls/`, a `--cluster-cert-dir`
    or the --tls-* files) are this user's to trust: only root and this user can change each
    file, a directory above it or a link on the way (`check_given`), the certificates writable
    by nobody else, the key not readable by others (`check_key`, where its links lead). The
    directories need not be this user's own: root's 0700 one for root, systemd's
    /run/credentials/UNIT (root's) for a service's user. Another local user's CA would have
    the command trust their server as the cluster, and give it the deploy (or the admission).
    Under sudo, the invoker's own files count as this user's (`safefs.invoker_trusted`, as
    `--sign-key` takes theirs): `sudo mgmt status --cluster --tls-key ~/creds/op.key`; a third
    user's are refused. Whoever runs the command names the files it trusts anyway, and their
    own gives them nothing they could not have by naming others (`--insecure-cluster --seeds`
    of a listener of theirs sends the same password in clear)."""
    with safefs.invoker_trusted(safefs.sudo_invoker()):
        for path in (files.ca, files.cert, files.key):
            if path is None:
                continue
            check_given(path)
            (check_key if path == files.key else check_cert)(Path(os.path.realpath(path)))


def check_new_or_private(directory: Path) -> None:
    """WorldError unless `directory` is missing (it will be made 0700) or already private: ours,
    mode 0700 or tighter, below directories only we control. For the operator's `mgmt cluster
    mint-cert`, which must never tighten (chmod) a directory it was pointed at, nor its files."""
    try:
        safefs.check_private(directory)
    except ResourceError as err:
        raise WorldError(str(err)) from err
    if directory.exists():
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            raise WorldError(
                f"{directory} is mode {mode:04o}: give a new directory, or a private one (0700); "
                "nothing in it was changed"
            )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `path` atomically with `mode` (set before any byte is written)."""
    fd, tmp = tempfile.mkstemp(prefix=".mgmt.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_ca(directory: Path, name: str = "mgmt cluster CA") -> bool:
    """Create a CA in `directory` unless one is there; True if one was created."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if has_ca(directory):
        return False
    _private_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(directory / CA_KEY, pem_key, 0o600)  # the key first: a certificate means both exist
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _usage(ca: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def load_ca(
    ca_dir: Path,
) -> tuple[bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA's certificate (PEM and parsed) and key; WorldError if they cannot be used."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    check_ca_dir(ca_dir)
    try:
        ca_pem = (ca_dir / CA_CERT).read_bytes()
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), None)
    except (OSError, ValueError, TypeError) as err:
        raise WorldError(f"cannot read the cluster CA in {ca_dir}: {err}") from err
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise WorldError(f"{ca_dir / CA_KEY}: expected an EC private key")
    if ca_key.public_key() != ca_cert.public_key():
        raise WorldError(f"{ca_dir}: {CA_KEY} is not the key of {CA_CERT}")
    return ca_pem, ca_cert, ca_key


def san_names(hostname: str, urls: Iterable[str]) -> list[str]:
    """The names a host's certificate must carry: its URLs' hosts, localhost and loopback."""
    names = ["localhost", "127.0.0.1", "::1", hostname]
    for url in urls:
        host = urlsplit(url).hostname
        if host and host not in ("0.0.0.0", "::"):
            names.append(host)
    return list(dict.fromkeys(names))


def mint(
    ca_dir: Path, out_dir: Path, hostname: str, names: Iterable[str], core: bool = False
) -> TLSFiles:
    """A host's certificate (server and client) signed by the CA in `ca_dir`, with a copy of
    the CA certificate, written to `out_dir`; WorldError if the CA cannot be read. `core`: it
    also carries CORE_SAN (per-host identities: it may run an etcd member)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_pem, ca_cert, ca_key = load_ca(ca_dir)
    sans: list[x509.GeneralName] = []
    for name in [*names, *([CORE_SAN] if core else [])]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            with contextlib.suppress(ValueError, UnicodeError):
                sans.append(x509.DNSName(name.encode("idna").decode()))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if sans:  # (none: an operator's client certificate; cryptography >= 51 refuses an empty one)
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _private_dir(out_dir)
    files = TLSFiles(out_dir / CA_CERT, out_dir / HOST_CERT, out_dir / HOST_KEY)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert files.key is not None and files.cert is not None and files.ca is not None
    _write(files.key, pem_key, 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.ca, ca_pem, 0o644)
    return files


def host_files(directory: Path) -> TLSFiles:
    """The files of a host's credentials directory (what `mint` writes)."""
    return TLSFiles(directory / CA_CERT, directory / HOST_CERT, directory / HOST_KEY)


def read_identity(cert: Path) -> tuple[str, bool]:
    """A host certificate's CN (its etcd user name) and whether it is a core host's (it carries
    CORE_SAN); WorldError if it cannot be read."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as err:
        raise WorldError(f"cannot read the certificate {cert}: {err}") from err
    names = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = sans.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    return (str(names[0].value) if names else ""), CORE_SAN in dns
