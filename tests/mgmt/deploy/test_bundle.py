"""Bundles and signatures: real files, real ssh-keygen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgmt.deploy import DeployError
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
    with pytest.raises(DeployError, match="not signed by a key in"):
        signing.verify(payload, signature, trusted, key)
