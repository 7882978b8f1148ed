"""Bundles and signatures: real files, real ssh-keygen."""

from __future__ import annotations

import base64
import hashlib
import json
import string
import struct
import subprocess
from pathlib import Path

import pytest

from mgmt.deploy import DeployError, sshkey
from mgmt.deploy import sign as signing
from mgmt.deploy.bundle import Bundle, read_program
from mgmt.deploy.store import Record, new_record
from tests.mgmt.deploy.keys import make_key, trusted_file


def test_a_lang_dir_carries_every_file_and_extracts_whole(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "files" / "etc").mkdir(parents=True)
    (src / "main.mcl").write_text('print "p" {\n\tmsg => "hi",\n}\n')
    (src / "files" / "etc" / "motd").write_bytes(b"\xffbinary")
    bundle = read_program("lang", src)
    assert bundle.entry == "main.mcl"
    assert sorted(bundle.files) == ["files/etc/motd", "main.mcl"]
    again = Bundle.decode(bundle.encode())
    assert again == bundle and again.hash == bundle.hash
    entry = again.extract(tmp_path / "out" / "1")
    assert entry == tmp_path / "out" / "1" / "main.mcl"
    assert (tmp_path / "out" / "1" / "files" / "etc" / "motd").read_bytes() == b"\xffbinary"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["1"]  # no temporary left


def test_a_deploy_over_the_limit_says_its_size(tmp_path: Path) -> None:
    """tester9's finding: under 1 MiB of files is over 1 MiB encoded; the error said neither."""
    src = tmp_path / "src"
    (src / "files").mkdir(parents=True)
    (src / "main.mcl").write_text('print "p" {\n\tmsg => "hi",\n}\n')
    (src / "files" / "blob").write_bytes(bytes(range(256)) * 3700)  # 947,200 bytes
    with pytest.raises(DeployError) as raised:
        read_program("lang", src)
    message = str(raised.value)
    assert message.startswith(f"{src}: the encoded deploy is 1,2"), message
    assert "over the limit of 1,048,576" in message and "2 files hold 947,2" in message


def test_a_yaml_file_carries_the_files_dir_beside_it(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a").write_text("a")
    (tmp_path / "g.yaml").write_text("graph: g\n")
    (tmp_path / "other.yaml").write_text("not carried")
    assert sorted(read_program("yaml", tmp_path / "g.yaml").files) == ["files/a", "g.yaml"]


def test_a_lang_file_carries_the_modules_it_imports(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "greet.mcl").write_text('$who = "world"\n')
    (tmp_path / "unused.mcl").write_text("not carried\n")
    (tmp_path / "main.mcl").write_text(
        'import "lib/greet.mcl" as greet\nprint "p" {\n\tmsg => "hi " + $greet.who,\n}\n'
    )
    assert sorted(read_program("lang", tmp_path / "main.mcl").files) == [
        "lib/greet.mcl",
        "main.mcl",
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "main.mcl").write_text(
        'import "../lib/greet.mcl" as greet\nprint "p" {\n\tmsg => $greet.who,\n}\n'
    )
    with pytest.raises(DeployError, match="outside the program's directory"):
        read_program("lang", tmp_path / "sub" / "main.mcl")
    # `lang DIR/` too: the check read ../lib from this machine, every host then refused it
    # (`import "../lib/greet.mcl": no such file`).
    with pytest.raises(DeployError, match="outside the program's directory"):
        read_program("lang", tmp_path / "sub")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", ""])
def test_a_bundle_naming_a_file_outside_is_refused(name: str) -> None:
    doc = {"entry": "main.mcl", "frontend": "lang", "files": {"main.mcl": "", name: "eA=="}}
    with pytest.raises(DeployError, match="bad file name"):
        Bundle.decode(json.dumps(doc).encode())


def test_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "main.mcl").write_text("")
    (tmp_path / "secret").symlink_to("/etc/shadow")
    with pytest.raises(DeployError, match="symbolic link"):
        read_program("lang", tmp_path)


def test_a_program_that_is_not_a_file_is_named_as_mgmt_check_names_it(tmp_path: Path) -> None:
    """A directory or a FIFO given as `yaml FILE` was "no such file"."""
    import os

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, why in (
        ("dir", "a directory"),
        ("fifo", "not a regular file"),
        ("missing", "No such file or directory"),
    ):
        with pytest.raises(DeployError) as err:
            read_program("yaml", tmp_path / name)
        assert str(err.value) == f"{tmp_path / name}: cannot read: {why}"


def test_a_file_past_the_limit_is_read_no_further(tmp_path: Path) -> None:
    """A 10 GB file under files/ was read whole (memory), then refused: now the read stops
    at the limit (a sparse 256 MiB file here: at most ~1 MiB read)."""
    import tracemalloc

    (tmp_path / "g.yaml").write_text("graph: g\n")
    (tmp_path / "files").mkdir()
    with open(tmp_path / "files" / "big", "wb") as big:
        big.truncate(256 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DeployError, match="exceed 1048576 bytes"):
            read_program("yaml", tmp_path / "g.yaml")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def record_of(bundle: Bundle) -> Record:
    return new_record(bundle, 1, 0)


def test_signatures_verify_only_for_trusted_keys_and_untouched_records(tmp_path: Path) -> None:
    alice, mallory = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    trusted = trusted_file(tmp_path, alice)
    rec = record_of(Bundle("yaml", "g.yaml", {"g.yaml": b"graph: g\n"}))
    payload = rec.payload()
    signature = signing.sign(payload, alice.private)
    principal, key = signing.verify(payload, signature, trusted)
    assert principal == "alice" and key == signing.key_fingerprint(alice.public)
    with pytest.raises(DeployError, match="bad signature"):
        signing.verify(payload.replace(b'"id":1', b'"id":2'), signature, trusted)
    with pytest.raises(DeployError, match="not signed by a key in"):
        signing.verify(payload, signing.sign(payload, mallory.private), trusted)
    with pytest.raises(DeployError, match="not signed by a key in"):
        signing.verify(payload, "garbage", trusted)
    # Verified again with the principal found before (one ssh-keygen): the same answers.
    assert signing.verify(payload, signature, trusted, key) == (principal, key)
    with pytest.raises(DeployError, match="bad signature"):
        signing.verify(payload.replace(b'"id":1', b'"id":2'), signature, trusted, key)
    # The file no longer trusts alice: refused, whatever was found before.
    trusted.write_text(mallory.allowed())
    with pytest.raises(DeployError, match="not signed by a key in") as err:
        signing.verify(payload, signature, trusted, key)
    assert str(err.value) == f"not signed by a key in {trusted}"  # nothing more to say
    # Her line has expired (tester6's finding 10): ssh-keygen's reason, not only "not signed".
    trusted.write_text(f'alice valid-before="20200101" {alice.public.read_text().strip()}\n')
    with pytest.raises(DeployError) as err:
        signing.verify(payload, signature, trusted)
    said = str(err.value)
    assert said.startswith(f"not signed by a key in {trusted}: {trusted}:1: key has expired"), said


def test_an_unencrypted_ed25519_key_signs_in_process_as_ssh_keygen_does(tmp_path: Path) -> None:
    alice = make_key(tmp_path, "alice")
    payload = record_of(Bundle("yaml", "g.yaml", {"g.yaml": b"graph: g\n"})).payload()
    argv = ["ssh-keygen", "-Y", "sign", "-q", "-f", str(alice.private), "-n", signing.NAMESPACE]
    said = subprocess.run(argv, input=payload, capture_output=True, check=True, timeout=30)
    here = sshkey.sign_here(payload, alice.private.read_bytes())
    assert here == said.stdout.decode()  # Ed25519 is deterministic: the same bytes
    # Signed by OpenSSL (hashlib's libcrypto) here; the cryptography package agrees.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    found = sshkey.ed25519_seed(alice.private.read_bytes())
    assert found is not None
    message = sshkey.signed_data(payload)
    by_openssl = sshkey._openssl_ed25519(found[1], message)
    assert by_openssl == Ed25519PrivateKey.from_private_bytes(found[1]).sign(message)
    # An encrypted key, or a public key (one held by ssh-agent): ssh-keygen's to sign.
    locked = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)],
        check=True,
        timeout=30,
    )
    assert sshkey.sign_here(payload, locked.read_bytes()) is None
    assert sshkey.sign_here(payload, alice.public.read_bytes()) is None
    assert sshkey.public_blob(locked.read_bytes()) is not None


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_a_key_fingerprint_is_read_from_the_file_as_ssh_keygen_says(
    tmp_path: Path, kind: str
) -> None:
    key = tmp_path / kind
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True, timeout=30
    )
    said = (
        subprocess.run(
            ["ssh-keygen", "-l", "-f", str(key)], capture_output=True, check=True, timeout=30
        )
        .stdout.split()[1]
        .decode()
    )
    assert sshkey.public_blob(key.read_bytes()) is not None  # no ssh-keygen for these
    assert signing.key_fingerprint(key) == said
    assert signing.key_fingerprint(key.with_suffix(".pub")) == said
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(DeployError, match="not an SSH key"):
        signing.key_fingerprint(tmp_path / "junk")


def test_a_host_verifies_an_ed25519_signature_itself_only_when_it_is_good(tmp_path: Path) -> None:
    """In-process verification accepts exactly what ssh-keygen accepts for an Ed25519 key on
    a line without options, and leaves everything else to ssh-keygen (None)."""
    alice, mallory = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    trusted = trusted_file(tmp_path, alice).read_bytes()
    payload = record_of(Bundle("yaml", "g.yaml", {"g.yaml": b"graph: g\n"})).payload()
    signature = signing.sign(payload, alice.private)
    fingerprint = signing.key_fingerprint(alice.public)
    assert signing.verify_here(payload, signature, trusted) == ("alice", fingerprint)
    assert signing.verify_here(payload + b" ", signature, trusted) is None
    assert signing.verify_here(payload, signing.sign(payload, mallory.private), trusted) is None
    assert signing.verify_here(payload, "garbage", trusted) is None
    # A signature in another namespace (e.g. a signed git commit) is not a deploy's.
    other = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-q", "-f", str(alice.private), "-n", "git"],
        input=payload,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert signing.verify_here(payload, other, trusted) is None
    # A line with options (here: other namespaces only) is ssh-keygen's to judge: it refuses.
    restricted = tmp_path / "restricted"
    restricted.write_text(f'alice namespaces="git" {alice.public.read_text().strip()}\n')
    assert signing.verify_here(payload, signature, restricted.read_bytes()) is None
    with pytest.raises(DeployError):
        signing.verify(payload, signature, restricted)
    # One flipped bit in the signature itself.
    body = signature.strip().splitlines()
    raw = bytearray(base64.b64decode("".join(body[1:-1])))
    raw[-1] ^= 1
    flipped = "\n".join([body[0], base64.b64encode(bytes(raw)).decode(), body[-1]])
    assert signing.verify_here(payload, flipped, trusted) is None


def _ssh_keygen_says(payload: bytes, signature: str, trusted: bytes, tmp: Path) -> str | None:
    """What ssh-keygen alone decides (find-principals, then verify as the first): the
    principal, or None."""
    (tmp / "trusted").write_bytes(trusted)
    (tmp / "sig").write_text(signature)
    found = subprocess.run(
        ["ssh-keygen", "-Y", "find-principals", "-f", str(tmp / "trusted"), "-s", str(tmp / "sig")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    names = found.stdout.decode(errors="replace").split()
    if found.returncode != 0 or not names:
        return None
    argv = ["-f", str(tmp / "trusted"), "-I", names[0], "-n", signing.NAMESPACE]
    verified = subprocess.run(
        ["ssh-keygen", "-Y", "verify", *argv, "-s", str(tmp / "sig")],
        input=payload,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return names[0] if verified.returncode == 0 else None


def _sshsig(private: Path, payload: bytes, reserved: bytes = b"") -> bytes:
    """An SSHSIG blob over `payload` made by hand (sha512), `reserved` both carried and
    signed: what a signer other than ssh-keygen could make."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = sshkey.string(b"ssh-ed25519") + sshkey.string(raw)
    fields = [signing.NAMESPACE.encode(), reserved, b"sha512"]
    signed = b"SSHSIG" + b"".join(map(sshkey.string, [*fields, hashlib.sha512(payload).digest()]))
    inner = sshkey.string(b"ssh-ed25519") + sshkey.string(key.sign(signed))
    head = b"SSHSIG" + struct.pack(">I", 1) + sshkey.string(public)
    return head + b"".join(map(sshkey.string, [*fields, inner]))


def _armor(b64: str, newline: str = "\n") -> str:
    lines = [sshkey.ARMOR[0], *(b64[i : i + 70] for i in range(0, len(b64), 70))]
    return newline.join([*lines, sshkey.ARMOR[1], ""])


def test_a_host_accepts_in_process_only_what_ssh_keygen_accepts(tmp_path: Path) -> None:
    """Differential: each spelling of a signature and of a trusted line is judged in-process
    and by ssh-keygen; the host never accepts what ssh-keygen refuses, nor names another
    principal."""
    alice = make_key(tmp_path, "alice")
    line = alice.public.read_text().split()
    key = f"{line[0]} {line[1]}".encode()
    payload = record_of(Bundle("yaml", "g.yaml", {"g.yaml": b"graph: g\n"})).payload()
    good = base64.b64encode(_sshsig(alice.private, payload)).decode()
    assert good.endswith("==")  # 181 bytes: 4 bits of the last character are not data
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    slop = good[:-3] + alphabet[alphabet.index(good[-3]) ^ 1] + "=="
    reserved = base64.b64encode(_sshsig(alice.private, payload, b"x")).decode()
    signatures = {
        "good": _armor(good),
        "no last newline": _armor(good).rstrip("\n"),
        "reserved field signed as it is": _armor(reserved),
        "CRLF armor": _armor(good, "\r\n"),
        "blank line before the armor": "\n" + _armor(good),
        "non-zero bits past the data": _armor(slop),
    }
    lines = {
        "plain": b"alice " + key + b"\n",
        "a list": b"alice,bob " + key + b"\n",
        "CR before a second principal": b'alice namespaces="git"\rbob ' + key + b"\n",
        "VT for a space": b"alice\x0b" + key + b"\n",
        "FF for a space": b"alice\x0c" + key + b"\n",
        "negated": b"!alice " + key + b"\n",
        "empty name in a list": b"alice, " + key + b"\n",
        "NUL in the name": b"al\0ice " + key + b"\n",
    }
    accepted = []
    for sig_name, signature in signatures.items():
        for line_name, trusted in lines.items():
            here = signing.verify_here(payload, signature, trusted)
            if here is None:
                continue
            accepted.append((sig_name, line_name))
            said = _ssh_keygen_says(payload, signature, trusted, tmp_path)
            assert here[0] == said, (sig_name, line_name, here, said)
    assert accepted == [
        (s, line) for s in ("good", "no last newline") for line in ("plain", "a list")
    ]


def test_a_deploy_signed_with_a_certificate_names_its_key_as_hosts_see_it(tmp_path: Path) -> None:
    """`--sign-key` a certificate (hosts trust its CA: a cert-authority line): the record named
    the hash of the certificate's blob, the hosts the key's fingerprint (`ssh-keygen -l`'s),
    so every such deploy was refused as signed by another key."""
    ca, key = make_key(tmp_path, "ca"), tmp_path / "alice"  # ssh-keygen finds alice beside
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    argv = ["ssh-keygen", "-q", "-s", str(ca.private), "-I", "alice", "-n", "alice"]
    subprocess.run([*argv, f"{key}.pub"], check=True, timeout=30)
    cert = tmp_path / "alice-cert.pub"
    said = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(cert)], capture_output=True, check=True, timeout=30
    ).stdout.split()[1]
    assert signing.key_fingerprint(cert) == said.decode()
    trusted = tmp_path / "trusted"
    trusted.write_text(f"alice cert-authority {ca.public.read_text().strip()}\n")
    payload = record_of(Bundle("yaml", "g.yaml", {"g.yaml": b"graph: g\n"})).payload()
    signature = signing.sign(payload, cert)
    assert signing.verify(payload, signature, trusted) == ("alice", said.decode())
