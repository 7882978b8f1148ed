"""The cluster's own CA (mgmt.cluster.pki): files, modes, certificates, bad CA directories."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import ValidationError, WorldError
from mgmt.cluster.options import from_config
from mgmt.cluster.pki import create_ca, load_ca, mint, san_names
from mgmt.config import Config


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
