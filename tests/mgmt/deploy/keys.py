"""Real SSH keys for the deploy tests (ssh-keygen, as an operator makes them)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Key:
    private: Path
    principal: str

    @property
    def public(self) -> Path:
        return self.private.with_suffix(".pub")

    def allowed(self) -> str:
        """This key's line in an allowed_signers file."""
        return f"{self.principal} {self.public.read_text().strip()}\n"


def make_key(directory: Path, principal: str) -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{principal}.key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(path)],
        check=True,
        timeout=30,
    )
    path.with_suffix(".key.pub").rename(path.with_suffix(".pub"))
    return Key(path, principal)


def trusted_file(directory: Path, *keys: Key) -> Path:
    path = directory / "trusted_keys"
    path.write_text("".join(k.allowed() for k in keys))
    return path
