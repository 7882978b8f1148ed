"""The cluster's own CA (mgmt.cluster.pki): files, modes, certificates, bad CA directories."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import ValidationError, WorldError
from mgmt.cluster.options import from_config
from mgmt.cluster.pki import create_ca, load_ca, mint, san_names
from mgmt.config import Config
from tests.e2e.helpers import searchable_dir
from tests.mgmt.cluster.certs import CA


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_ca_is_created_once_private_and_atomically(tmp_path: Path) -> None:
    ca = tmp_path / "prefix" / "cluster-ca"
    assert create_ca(ca)
    assert mode(ca) == 0o700 and mode(ca / "ca.key") == 0o600 and mode(ca / "ca.pem") == 0o644
    before = (ca / "ca.pem").read_bytes()
    assert not create_ca(ca)  # there already: kept
    assert (ca / "ca.pem").read_bytes() == before
    assert sorted(p.name for p in ca.iterdir()) == ["ca.key", "ca.pem"]  # no temp file left
    cert = x509.load_pem_x509_certificate(before)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_host_certificate_names_the_host_and_its_addresses(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca")
    names = san_names("web1", ["https://10.0.0.5:2379", "https://0.0.0.0:2380", "https://db:1"])
    assert names == ["localhost", "127.0.0.1", "::1", "web1", "10.0.0.5", "db"]
    files = mint(tmp_path / "ca", tmp_path / "tls", "web1", names)
    assert files.cert is not None and files.key is not None and files.ca is not None
    assert mode(tmp_path / "tls") == 0o700 and mode(files.key) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.5") in sans.get_values_for_type(x509.IPAddress)
    assert {"localhost", "web1", "db"} <= set(sans.get_values_for_type(x509.DNSName))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_an_unusable_ca_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    create_ca(ca)
    other = tmp_path / "other"
    create_ca(other)
    (ca / "ca.key").write_bytes((other / "ca.key").read_bytes())
    with pytest.raises(WorldError, match=r"ca\.key is not the key of ca\.pem"):
        load_ca(ca)
    (ca / "ca.pem").write_text("garbage\n")
    with pytest.raises(WorldError, match="cannot read the cluster CA"):
        load_ca(ca)
    config = Config(hostname="h", seeds="https://127.0.0.1:2379", cluster_ca_dir=ca)
    with pytest.raises(ValidationError, match="--cluster-ca-dir: cannot read the cluster CA"):
        from_config(config)
    (ca / "ca.key").unlink()  # a certificate without its key is never replaced by a new CA
    with pytest.raises(ValidationError, match=r"holds one of ca\.pem and ca\.key, not both"):
        from_config(Config(hostname="h", cluster_ca_dir=ca))
    assert (ca / "ca.pem").read_text() == "garbage\n"


def test_the_key_is_ecdsa_p256(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca")
    _, _, key = load_ca(tmp_path / "ca")
    assert isinstance(key.curve, ec.SECP256R1)


NOBODY = 65534  # another local user (the tests run as root: os.chown)


def refused(prefix: Path, flag: str, **config: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        from_config(Config(hostname="h", prefix=prefix, **config))
    message = str(caught.value)
    assert message.startswith(f"{flag}: ") and "\n" not in message, message
    return message


def test_a_ca_another_user_planted_is_never_trusted(tmp_path: Path) -> None:
    """Issue 11's tester: prefix /tmp/mgmt/h1 created first by uid 65534, with a CA of theirs
    in cluster-ca/: the host certificate came out signed by the attacker's CA."""
    prefix = tmp_path / "mgmt" / "h1"
    create_ca(prefix / "cluster-ca")  # the attacker's CA (made by root here, then given away)
    for path in (prefix, prefix / "cluster-ca", *(prefix / "cluster-ca").iterdir()):
        os.chown(path, NOBODY, NOBODY)
    prefix.chmod(0o755)
    message = refused(prefix, "--prefix")
    assert f"{prefix} is owned by uid {NOBODY}" in message
    # A directory above the prefix owned by them: they could rename the prefix away.
    message = refused(tmp_path / "mgmt" / "h1" / "sub", "--prefix")
    assert f"{prefix} is owned by uid {NOBODY}" in message
    # The same CA given with --cluster-ca-dir.
    message = refused(tmp_path / "ours", "--cluster-ca-dir", cluster_ca_dir=prefix / "cluster-ca")
    assert f"{prefix} is owned by uid {NOBODY}" in message
    with pytest.raises(WorldError, match=f"is owned by uid {NOBODY}"):
        mint(prefix / "cluster-ca", tmp_path / "tls", "h", ["localhost"])
    assert not (tmp_path / "tls").exists()


def _group_writable(path: Path, gid: int) -> None:
    os.chown(path, -1, gid)
    path.chmod(0o775)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        # The CA directory itself theirs, or writable by others: ca.key could be swapped.
        (lambda ca: os.chown(ca, NOBODY, NOBODY), "cluster-ca is owned by uid 65534"),
        (lambda ca: ca.chmod(0o777), "can be written by others (mode 0777)"),
        # Its group a group of users (root's group is root's: safefs.writable_by_others).
        (lambda ca: _group_writable(ca.parent, 50), "can be written by others (mode 0775)"),
        # The key: theirs, or readable by others.
        (lambda ca: os.chown(ca / "ca.key", NOBODY, NOBODY), "(owner uid 65534, mode 0600)"),
        (lambda ca: (ca / "ca.key").chmod(0o644), "(owner uid 0, mode 0644): a private key"),
        (lambda ca: (ca / "ca.key").chmod(0o660), "mode 0660"),  # root's: its group may read
        (lambda ca: (ca / "ca.key").chmod(0o604), "mode 0604"),
    ],
)
def test_an_unsafe_ca_dir_is_refused_naming_the_path(
    tmp_path: Path, setup: Callable[[Path], None], expected: str
) -> None:
    ca = tmp_path / "etc" / "cluster-ca"
    create_ca(ca)
    setup(ca)
    message = refused(tmp_path / "prefix", "--cluster-ca-dir", cluster_ca_dir=ca)
    assert expected in message and str(tmp_path) in message


def test_a_sticky_root_directory_like_tmp_is_fine_and_the_prefix_is_made_0700(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: others write here, but cannot touch what is ours
    prefix = shared / "mgmt" / "h1"
    opts = from_config(Config(hostname="h", prefix=prefix))
    assert opts.ca_dir is not None
    create_ca(opts.ca_dir)
    mint(opts.ca_dir, prefix / "cluster-tls", "h", ["localhost"])
    # Every directory the agent made is private (before: the prefix came out 0755).
    for path in (shared / "mgmt", prefix, prefix / "cluster-ca", prefix / "cluster-tls"):
        assert mode(path) == 0o700, path
    # Without the sticky bit, the same directory lets others replace the prefix.
    shared.chmod(0o777)
    assert "can be written by others (mode 0777)" in refused(prefix, "--prefix")


def test_a_tls_key_given_as_a_file_must_be_ours_alone(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    leaf = ca.leaf("h")
    leaf.key.chmod(0o644)
    files = {"tls_ca": ca.path, "tls_cert": leaf.cert, "tls_key": leaf.key}
    assert "a private key must be" in refused(tmp_path / "prefix", "--tls-key", **files)


def test_an_agent_of_another_user_takes_roots_ca_certificate() -> None:
    """An agent running as uid 65534 with its own 0700 CA directory, into which root installed
    `ca.pem` (root's, 0644: `install -m 0644`): root could change anything anyway, so its file
    is trusted as ssh trusts root's. Refused on main 776e6558 ('a certificate must be a file
    owned by this agent's user (uid 65534)'); one another user owns still is."""
    import subprocess
    import sys

    from tests.e2e.helpers import NOBODY as nobody
    from tests.e2e.helpers import SETPRIV

    if SETPRIV is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (another real user)")
    with searchable_dir("mgmt-test-ca-") as top:
        ca = top / "ca"
        create_ca(ca)
        os.chown(ca, nobody, nobody)
        os.chown(ca / "ca.key", nobody, nobody)
        check = f"import pathlib, mgmt.cluster.pki as p; p.check_ca_dir(pathlib.Path({str(ca)!r}))"
        argv = [SETPRIV, f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
        run = [*argv, sys.executable, "-c", check]
        cwd = Path(__file__).parents[3]

        def as_nobody() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                run, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
            )

        assert as_nobody().returncode == 0
        os.chown(ca / "ca.pem", 1, 1)  # daemon's
        assert "ca.pem (owner uid 1, mode 0644): a certificate must be" in as_nobody().stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
@pytest.mark.parametrize(
    ("dir_mode", "key_mode", "taken"),
    [
        (0o710, 0o640, True),  # Debian's /etc/ssl/private: root:ssl-cert, the agent in ssl-cert
        # The modes systemd's LoadCredential= shows with a User= on a file system with ACLs
        # (root's 0500/0400 and an ACL: the mask); test_credentials_systemd runs the real one.
        (0o550, 0o440, True),
        (0o710, 0o660, False),  # its group could write it
        (0o710, 0o644, False),  # everybody may read it
        (0o770, 0o640, False),  # its group could swap it
    ],
)
def test_a_key_of_roots_that_the_agents_group_reads_is_taken(
    dir_mode: int, key_mode: int, taken: bool
) -> None:
    """A non-root agent (uid 65534 here, a real other user) in the key's group: root's key
    readable by that group only is its (PostgreSQL's rule; before 2026-12-06, ninth session,
    only a 0600 key of the agent's own was, and Debian's ssl-cert convention was refused)."""
    group = 4242  # a group of its own (setpriv takes a number not in /etc/group)
    with searchable_dir("mgmt-pki-", 0o711) as top:
        leaf = CA(top / "src").leaf("h")
        private = top / "private"
        private.mkdir()
        for name, source in (("ca.pem", CA(top / "src").path), ("host.pem", leaf.cert)):
            shutil.copy(source, private / name)
            (private / name).chmod(0o644)
        shutil.copy(leaf.key, private / "host.key")
        os.chown(private / "host.key", 0, group)
        (private / "host.key").chmod(key_mode)
        os.chown(private, 0, group)
        private.chmod(dir_mode)
        script = (
            "import sys; from pathlib import Path; from mgmt.cluster.pki import "
            "check_credentials, host_files\ntry:\n"
            f"    check_credentials(host_files(Path({str(private)!r})))\n"
            "except Exception as err:\n    sys.exit(str(err))\n"
            f"open({str(private / 'host.key')!r}, 'rb').read()\n"
        )
        argv = ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={group}"]
        proc = subprocess.run(
            [*argv, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[3],
            check=False,
        )
        assert (proc.returncode == 0) == taken, proc.stderr
        if not taken:
            assert str(private) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_non_root_agent_reads_a_ca_from_roots_directory_but_creates_none_there() -> None:
    """An agent of uid 65534 (a real other user) given `--cluster-ca-dir` of root's (0750,
    its group the agent's, ca.key 0640): it reads the CA there, root being able to change
    anything anyway (refused on main 6729fd9a: 'is owned by uid 0, not by this agent'). An
    empty one of root's, on the first host, is refused: the CA is made only in its own."""
    group = 4242
    with searchable_dir("mgmt-pki-") as top:
        ca = top / "ca"
        create_ca(ca)
        os.chown(ca, 0, group)
        ca.chmod(0o750)
        os.chown(ca / "ca.key", 0, group)
        (ca / "ca.key").chmod(0o640)
        (top / "empty").mkdir(mode=0o755)
        script = (
            "import sys; from pathlib import Path; from mgmt.cluster.options import "
            "from_config; from mgmt.config import Config\n"
            "seeds = sys.argv[2] if len(sys.argv) > 2 else ''\n"
            "try:\n"
            f"    from_config(Config(hostname='h', prefix=Path({str(top / 'prefix')!r}), "
            "cluster_ca_dir=Path(sys.argv[1]), seeds=seeds))\n"
            "except Exception as err:\n    sys.exit(str(err))\n"
        )
        argv = ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={group}"]

        def check(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, sys.executable, "-c", script, *args],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=Path(__file__).parents[3],
                check=False,
            )

        proc = check(str(ca), "https://127.0.0.1:2379")
        assert proc.returncode == 0, proc.stderr
        proc = check(str(ca))  # the first host: the CA is there, so only read
        assert proc.returncode == 0, proc.stderr
        proc = check(str(top / "empty"))
        assert "--cluster-ca-dir: no cluster CA there to read, and this host would create" in (
            proc.stderr
        ), proc.stderr
        assert "owned by uid 0, not by this agent" in proc.stderr
