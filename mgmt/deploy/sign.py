"""SSH signatures over deploys: `ssh-keygen -Y sign` / `-Y verify`, namespace `mgmt-deploy`.

Why SSH signatures rather than OpenPGP: every operator already has an SSH key (often in an
agent or on a hardware token), every host already has `ssh-keygen` (OpenSSH >= 8.1), git signs
commits in the same format (`gpg.format ssh`), and the trusted keys are one plain text file in
the `allowed_signers` format (`principal key-type key`), no keyring, trust database or agent
state on the hosts. The namespace keeps a deploy signature from being valid as anything else
(a git commit, a file signature), and the other way round.

Every call runs `ssh-keygen` with an argv list and a timeout, in a thread (callers on an event
loop use `asyncio.to_thread`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from mgmt.deploy import DeployError

NAMESPACE = "mgmt-deploy"
TIMEOUT = 10.0  # seconds for one ssh-keygen (an agent asking for a touch takes a while)
_FINGERPRINT = re.compile(r"\b(SHA256:[A-Za-z0-9+/=]+)")


def _ssh_keygen(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args],
            input=data,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise DeployError("ssh-keygen not found: install OpenSSH (>= 8.1)") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"ssh-keygen {args[0]} {args[1]} took more than {TIMEOUT}s") from None


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    return " ".join(text.split()) or f"exit code {proc.returncode}"


def key_fingerprint(key: Path) -> str:
    """The SHA256 fingerprint of a key file (private or public), as `ssh-keygen -l` says."""
    if not key.is_file():
        raise DeployError(f"--sign-key: no such file: {key}")
    proc = _ssh_keygen(["-l", "-f", str(key)])
    match = _FINGERPRINT.search(proc.stdout.decode(errors="replace"))
    if proc.returncode != 0 or match is None:
        raise DeployError(f"--sign-key {key}: not an SSH key: {_said(proc)}")
    return match.group(1)


def sign(payload: bytes, key: Path) -> str:
    """Sign `payload` with the private key `key` (or the public key of a key held by
    ssh-agent); returns the armored signature."""
    proc = _ssh_keygen(["-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE], payload)
    if proc.returncode != 0:
        raise DeployError(f"--sign-key {key}: cannot sign: {_said(proc)}")
    return proc.stdout.decode()


# (trusted file's identity, signing key's fingerprint) -> its principal in that file: a key
# seen before is verified with one ssh-keygen run instead of two.
_principals: dict[tuple[tuple[int, int, int, int], str], str] = {}


def verify(payload: bytes, signature: str, trusted: Path, key: str = "") -> tuple[str, str]:
    """Check `signature` over `payload` against the allowed_signers file `trusted`; returns
    (principal, key fingerprint); DeployError saying why it is refused. `key`: the
    fingerprint the signature claims (it finds a principal found before for it)."""
    try:
        st = trusted.stat()
    except OSError as err:
        raise DeployError(f"--trusted-keys: {err.strerror or err}: {trusted}") from None
    file_id = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with tempfile.TemporaryDirectory(prefix="mgmt-sig-") as tmp:
        sig = Path(tmp) / "deploy.sig"
        sig.write_text(signature)
        cached = _principals.get((file_id, key)) if key else None
        if cached is not None:
            proc = _verify_as(cached, payload, sig, trusted)
            if proc.returncode == 0:
                return cached, _fingerprint_of(proc)
        found = _ssh_keygen(["-Y", "find-principals", "-f", str(trusted), "-s", str(sig)])
        principals = [p for p in found.stdout.decode(errors="replace").splitlines() if p]
        if found.returncode != 0 or not principals:
            raise DeployError(f"not signed by a key in {trusted}")
        proc = _verify_as(principals[0], payload, sig, trusted)
    if proc.returncode != 0:
        raise DeployError(f"bad signature: {_said(proc)}")
    fingerprint = _fingerprint_of(proc)
    _principals[(file_id, fingerprint)] = principals[0]
    return principals[0], fingerprint


def _verify_as(
    principal: str, payload: bytes, sig: Path, trusted: Path
) -> subprocess.CompletedProcess[bytes]:
    argv = ["-Y", "verify", "-f", str(trusted), "-I", principal, "-n", NAMESPACE]
    return _ssh_keygen([*argv, "-s", str(sig)], payload)


def _fingerprint_of(proc: subprocess.CompletedProcess[bytes]) -> str:
    match = _FINGERPRINT.search(proc.stdout.decode(errors="replace"))
    return match.group(1) if match else ""
