"""SSH signatures over deploys: `ssh-keygen -Y sign` / `-Y verify`, namespace `mgmt-deploy`.

Why SSH signatures rather than OpenPGP: every operator already has an SSH key (often in an
agent or on a hardware token), every host already has `ssh-keygen` (OpenSSH >= 8.1), git signs
commits in the same format (`gpg.format ssh`), and the trusted keys are one plain text file in
the `allowed_signers` format (`principal key-type key`), no keyring, trust database or agent
state on the hosts. The namespace keeps a deploy signature from being valid as anything else
(a git commit, a file signature), and the other way round.

Signing runs `ssh-keygen -Y sign` (the key may be in an agent, on a token, or need its
passphrase). Three things are done in-process instead (`sshkey`), to keep a deploy's latency
low (each `ssh-keygen` costs a process, ~10 ms, more on a busy host):

- an unencrypted Ed25519 private key signs here, the same bytes as `ssh-keygen -Y sign`;
- a key's fingerprint is read from the key file (a public key, or the public half of an OpenSSH
  private key); `ssh-keygen -l` only for other formats;
- a host verifies an Ed25519 signature whose key is on a line of its trusted keys file without
  options (valid for every namespace, at any time) itself: the SSHSIG format (OpenSSH's
  PROTOCOL.sshsig) and the `cryptography` package's Ed25519. It can only accept: anything else
  (another key type, a line with options, a signature that does not verify) goes to
  `ssh-keygen -Y find-principals` and `-Y verify`, which decide and say why they refuse.

Every `ssh-keygen` runs with an argv list and a timeout, in a thread (callers on an event loop
use `asyncio.to_thread`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

from engine import safefs
from engine.errors import MgmtError
from mgmt.deploy import DeployError, sshkey

NAMESPACE = sshkey.NAMESPACE

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


def _why_not_found(proc: subprocess.CompletedProcess[bytes]) -> str:
    """What `ssh-keygen -Y find-principals` said besides that no principal matched (the key's
    line has expired: `tk:3: key has expired: ...`), as `: ...`; "" if nothing else."""
    lines = proc.stderr.decode(errors="replace").splitlines()
    said = [line.strip() for line in lines if line.strip() and "No principal matched" not in line]
    return f": {'; '.join(said)}" if said else ""


def read_key(key: Path) -> bytes:
    """The text of the --sign-key file, read only if no other local user could change it (the
    file, a directory above it, a symlink on the way: safefs.others_control), a regular file
    (a FIFO is never waited on) of at most KEY_MAX bytes, and, a private key, readable by
    nobody else (ssh's rule, which `ssh-keygen -Y sign` applies itself: the in-process signer
    did not, before 2026-12-06, ninth session, and signed with a 0644 key or one of another
    user's). Under sudo the invoking user (SUDO_UID) counts as this user does: `sudo mgmt
    deploy --prefix /var/lib/mgmt --sign-key ~/.ssh/deploy` (docs/deploys.md) was refused from
    the ninth session's change to its review (~/.ssh "owned by uid 1000"), though whoever runs
    it may name any key root can read anyway. DeployError naming the file otherwise."""
    invoker = safefs.sudo_invoker()
    with safefs.invoker_trusted(invoker):
        return _read_key(key, invoker)


def _read_key(key: Path, invoker: int | None) -> bytes:
    if not key.is_file():
        from mgmt.deploy.bundle import not_a_file

        raise DeployError(f"--sign-key: {key}: cannot read: {not_a_file(key)}")
    if why := safefs.others_control(str(key)):
        raise DeployError(
            f"--sign-key: {why}: refusing to sign with {key} (another user could swap it: keep "
            "it and the directories above it owned by root or this user, writable only by them)"
        )
    try:
        with safefs.closing(safefs.open_regular(str(key))) as fd:
            st = os.fstat(fd)
            text = safefs.read_limited(fd, sshkey.KEY_MAX)
    except OSError as err:
        raise DeployError(f"--sign-key {key}: cannot read it: {err.strerror or err}") from None
    except MgmtError as err:  # a symlink swapped in since
        raise DeployError(f"--sign-key {key}: cannot read it: {err}") from None
    if text is None:
        raise DeployError(f"--sign-key {key}: larger than {sshkey.KEY_MAX} bytes: not a key")
    if invoker is not None and st.st_uid == invoker != os.geteuid():
        mode_ok = not st.st_mode & 0o077  # their own key, under ssh's rule (theirs)
    else:
        mode_ok = sshkey.key_mode_ok(st.st_uid, st.st_mode)
    if sshkey.is_private(text) and not mode_ok:
        # Root's own key is under ssh's rule (0600), as `ssh-keygen -Y sign` run by root is:
        # the group clause is for another user's agent (and was said to root, whose 0640 key
        # it refused, until the ninth session's review).
        group = ", or root's readable by its group at most (0640)" if os.geteuid() else ""
        if invoker is not None and invoker != os.geteuid():
            group += f", or, under sudo, uid {invoker}'s with mode 0600"
        raise DeployError(
            f"--sign-key: {key} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): "
            f"a private key must be this user's (uid {os.geteuid()}) with mode 0600{group}"
        )
    return text


def key_fingerprint(key: Path) -> str:
    """The SHA256 fingerprint of a key file (private or public), as `ssh-keygen -l` says."""
    blob = sshkey.public_blob(read_key(key))
    if blob is not None:
        return sshkey.fingerprint(blob)
    proc = _ssh_keygen(["-l", "-f", str(key)])
    match = _FINGERPRINT.search(proc.stdout.decode(errors="replace"))
    if proc.returncode != 0 or match is None:
        raise DeployError(f"--sign-key {key}: not an SSH key: {_said(proc)}")
    return match.group(1)


def sign(payload: bytes, key: Path) -> str:
    """Sign `payload` with the private key `key` (or the public key of a key held by
    ssh-agent); returns the armored signature. An unencrypted Ed25519 key is used in-process
    (the same bytes as ssh-keygen's), any other with `ssh-keygen -Y sign`."""
    here = sshkey.sign_here(payload, read_key(key))
    if here is not None:
        return here
    proc = _ssh_keygen(["-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE], payload)
    if proc.returncode != 0:
        raise DeployError(f"--sign-key {key}: cannot sign: {_said(proc)}")
    return proc.stdout.decode()


def signer(payload: bytes, signature: str) -> str:
    """The fingerprint of the key whose valid signature over `payload` (in our namespace)
    `signature` is, whatever key that is (`ssh-keygen -Y check-novalidate`: no trusted keys
    file); DeployError if it does not verify."""
    with tempfile.TemporaryDirectory(prefix="mgmt-sig-") as tmp:
        sig = Path(tmp) / "deploy.sig"
        sig.write_text(signature)
        argv = ["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)]
        proc = _ssh_keygen(argv, payload)
    fingerprint = _fingerprint_of(proc)
    if proc.returncode != 0 or not fingerprint:
        raise DeployError(f"bad signature: {_said(proc)}")
    return fingerprint


# (trusted file's identity, signing key's fingerprint) -> its principal in that file: a key
# seen before is verified with one ssh-keygen run instead of two.
_principals: dict[tuple[tuple[int, int, int, int], str], str] = {}


def check_trusted(trusted: Path) -> None:
    """DeployError unless only root or this agent's user can change the trusted keys file
    (sshd's StrictModes for authorized_keys): a file owned by one of them, writable by nobody
    else, below directories only they control (a sticky /tmp passes). Whoever could add a line
    to it could make this host run anything, as root."""
    real = Path(os.path.realpath(trusted))
    try:
        fd, missing = safefs.walk(str(real.parent), check=safefs.trusted_dir)
        with safefs.closing(fd):
            st = None if missing else safefs.lstat_at(fd, real.name)
    except (OSError, MgmtError) as err:
        raise DeployError(f"--trusted-keys: {err}") from None
    if st is None:
        raise DeployError(f"--trusted-keys: cannot read {trusted}: no such file")
    mode = stat.S_IMODE(st.st_mode)
    others = safefs.writable_by_others(st, str(real))
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) or others:
        raise DeployError(
            f"--trusted-keys: {trusted} (owner uid {st.st_uid}, mode {mode:04o}): whoever can "
            "change it can make this host run anything; it must be a file owned by root or "
            "this agent's user, writable by nobody else (0644 or stricter)"
        )
    # The path as given, not only where it leads now: it is read again by its path after this
    # check (here, then by ssh-keygen), so a link on the way that another user controls (theirs,
    # or in a directory of theirs) could lead to a file of theirs by then.
    if why := safefs.others_control(str(trusted)):
        raise DeployError(
            f"--trusted-keys: {why}: whoever can change it can make this host run anything"
        )


def verify(payload: bytes, signature: str, trusted: Path, key: str = "") -> tuple[str, str]:
    """Check `signature` over `payload` against the allowed_signers file `trusted`; returns
    (principal, key fingerprint); DeployError saying why it is refused. `key`: the
    fingerprint the signature claims (it finds a principal found before for it)."""
    check_trusted(trusted)
    try:
        st = trusted.stat()
    except OSError as err:
        raise DeployError(f"--trusted-keys: {err.strerror or err}: {trusted}") from None
    try:
        accepted = verify_here(payload, signature, trusted.read_bytes())
    except OSError as err:
        raise DeployError(f"--trusted-keys: {err.strerror or err}: {trusted}") from None
    if accepted is not None:
        return accepted
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
            raise DeployError(f"not signed by a key in {trusted}{_why_not_found(found)}")
        proc = _verify_as(principals[0], payload, sig, trusted)
    if proc.returncode != 0:
        raise DeployError(f"bad signature: {_said(proc)}")
    fingerprint = _fingerprint_of(proc)
    _principals[(file_id, fingerprint)] = principals[0]
    return principals[0], fingerprint


def verify_here(payload: bytes, signature: str, trusted: bytes) -> tuple[str, str] | None:
    """(principals, key fingerprint) if `signature` is a valid Ed25519 SSH signature over
    `payload` in our namespace by a key on a line of `trusted` (allowed_signers) that has no
    options; None otherwise (`ssh-keygen` decides then)."""
    from cryptography.exceptions import InvalidSignature  # hosts only: not `mgmt deploy`'s
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    blob = sshkey.dearmor(signature)
    if blob is None:
        return None
    try:
        sig = sshkey.Reader(blob)
        if sig.take(len(sshkey.MAGIC)) != sshkey.MAGIC or sig.uint32() != 1:
            return None
        public, namespace, reserved, hash_name, signed = (sig.string() for _ in range(5))
        if not sig.done() or namespace != NAMESPACE.encode() or hash_name not in sshkey.HASHES:
            return None
        if reserved:  # ssh-keygen verifies over an empty one, whatever the signature carries
            return None
        key, inner = sshkey.Reader(public), sshkey.Reader(signed)
        if key.string() != sshkey.ED25519 or inner.string() != sshkey.ED25519:
            return None
        raw_key, raw_sig = key.string(), inner.string()
        if not (key.done() and inner.done() and len(raw_key) == 32 and len(raw_sig) == 64):
            return None
        principals = _trusting(trusted, public)
        if principals is None:
            return None
        message = sshkey.signed_data(payload, hash_name, reserved)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, message)
    except (ValueError, binascii.Error, InvalidSignature):
        return None
    return principals, sshkey.fingerprint(public)


# A principal taken as a plain name: anything else (patterns `*` `?`, negation `!`, quotes,
# control bytes, an empty name in a list) is ssh-keygen's to match.
_PRINCIPAL = re.compile(rb"[A-Za-z0-9._@+=:/-]+")


def _trusting(trusted: bytes, public: bytes) -> str | None:
    """The first principal of the first line of an allowed_signers file that trusts the key
    `public` with no options (`principals ssh-ed25519 BASE64 [comment]`), or None.

    Lines are what ssh-keygen reads (ending in LF); one holding a byte that ssh-keygen and
    `bytes.split` take differently (CR, VT, FF, NUL) is left to ssh-keygen."""
    encoded = base64.b64encode(public)
    for raw in trusted.split(b"\n"):
        line = raw.removesuffix(b"\r")
        if any(c in line for c in b"\r\x0b\x0c\x00"):
            continue
        fields = line.split()
        if len(fields) < 3 or fields[1] != sshkey.ED25519 or fields[2] != encoded:
            continue
        names = fields[0].split(b",")
        if all(_PRINCIPAL.fullmatch(name) for name in names):
            return names[0].decode()
    return None


def _verify_as(
    principal: str, payload: bytes, sig: Path, trusted: Path
) -> subprocess.CompletedProcess[bytes]:
    argv = ["-Y", "verify", "-f", str(trusted), "-I", principal, "-n", NAMESPACE]
    return _ssh_keygen([*argv, "-s", str(sig)], payload)


def _fingerprint_of(proc: subprocess.CompletedProcess[bytes]) -> str:
    match = _FINGERPRINT.search(proc.stdout.decode(errors="replace"))
    return match.group(1) if match else ""
