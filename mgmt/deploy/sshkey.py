"""SSH keys and signatures in-process: the wire format, fingerprints, the SSHSIG envelope.

Light on purpose (binascii, hashlib, struct; not `base64`, which imports `re`): `mgmt deploy`'s
thin client (`client`) imports it, and so does `sign`, which runs `ssh-keygen` for anything
this module does not do itself:

- a key's fingerprint, read from a public key file or from the public half of an OpenSSH
  private key (stored unencrypted even when the private half is encrypted);
- an Ed25519 signature by an unencrypted OpenSSH private key, made here exactly as
  `ssh-keygen -Y sign` makes it (OpenSSH's PROTOCOL.sshsig, sha512, armored in lines of 70):
  Ed25519 is deterministic, so the bytes are the same as ssh-keygen's. OpenSSL signs (the
  libcrypto `hashlib` uses, through ctypes), else the `cryptography` package. An encrypted key, a key
  held by ssh-agent (its public key given) or another key type: None, ssh-keygen signs.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import struct

TYPE_CHECKING = False  # not `typing`'s: the thin client imports this module
if TYPE_CHECKING:
    from typing import Any

NAMESPACE = "mgmt-deploy"
ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
MAGIC = b"SSHSIG"
ED25519 = b"ssh-ed25519"
HASHES = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}
_OPENSSH_KEY = b"openssh-key-v1\0"
_LINE = 70  # base64 columns of an armored signature, as ssh-keygen writes it


class Reader:
    """SSH wire format (RFC 4251): uint32 and length-prefixed strings; ValueError when short."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def done(self) -> bool:
        return self.at == len(self.data)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob (the wire format), as OpenSSH writes it."""
    return "SHA256:" + _b64(hashlib.sha256(blob).digest()).rstrip("=")


def _openssh_private(text: bytes) -> Reader | None:
    """A reader after the magic of an OpenSSH private key file, or None."""
    if not text.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        return None
    body = b"".join(line for line in text.splitlines()[1:] if not line.startswith(b"--"))
    raw = binascii.a2b_base64(body, strict_mode=True)
    if not raw.startswith(_OPENSSH_KEY):
        return None
    return Reader(raw[len(_OPENSSH_KEY) :])


KEY_MAX = 1 << 16  # bytes of a --sign-key file: an RSA 16384 key is ~13 KB


def is_private(text: bytes) -> bool:
    """Whether a key file's text is a private key (OpenSSH's or PEM's), not a public one."""
    return b"PRIVATE KEY-----" in text


def key_mode_ok(uid: int, mode: int) -> bool:
    """ssh's rule for a private key file of owner `uid` and `mode`: this user's with no access
    for group or others, or root's readable by its group at most (PostgreSQL's rule: Debian's
    0640 root:ssl-cert; mgmt.cluster.pki.check_key)."""
    if uid == os.geteuid():
        return not mode & 0o077
    return uid == 0 and not mode & 0o037


def read_simple(path: str) -> bytes | None:
    """The key file `path` when nothing about it needs a closer look (the thin client's path):
    no symlink on its way, every directory above it root's or this user's and writable by
    nobody else (a sticky one of root's passes), the file a regular one of root's or this
    user's that nobody else may write, a private key readable by nobody else (key_mode_ok).
    None otherwise: `sign.read_key` decides, and says why. A few stat calls."""
    full = os.path.abspath(path)
    if os.path.realpath(full) != full:
        return None
    parent = os.path.dirname(full)
    while True:
        st = os.stat(parent)
        if st.st_uid not in (0, os.geteuid()):
            return None
        if st.st_mode & 0o022 and not (st.st_uid == 0 and st.st_mode & 0o1000):
            return None
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_uid not in (0, os.geteuid()):
            return None
        if st.st_mode & 0o022 or st.st_size > KEY_MAX:
            return None
        text = os.read(fd, KEY_MAX + 1)
    finally:
        os.close(fd)
    if len(text) > KEY_MAX or (is_private(text) and not key_mode_ok(st.st_uid, st.st_mode)):
        return None
    return text


def public_blob(text: bytes) -> bytes | None:
    """The public key blob of a public key file (`type base64 [comment]`) or of an OpenSSH
    private key (its public half is stored unencrypted); None for anything else."""
    try:
        reader = _openssh_private(text)
        if reader is not None:
            for _ in range(3):  # cipher name, kdf name, kdf options
                reader.string()
            return reader.string() if reader.uint32() == 1 else None
        if text.startswith(b"-----"):
            return None
        fields = text.split()
        if len(fields) >= 2 and b"-cert-" in fields[0]:
            return None  # a certificate: its fingerprint is its key's, not its blob's
        if len(fields) >= 2 and b"\n" not in text.strip():
            blob = binascii.a2b_base64(fields[1], strict_mode=True)
            return blob if Reader(blob).string() == fields[0] else None
    except (ValueError, binascii.Error):
        return None
    return None


def ed25519_seed(text: bytes) -> tuple[bytes, bytes] | None:
    """(public key blob, 32-byte seed) of an unencrypted OpenSSH Ed25519 private key, or None
    (encrypted, another type or format: ssh-keygen's to read)."""
    try:
        reader = _openssh_private(text)
        if reader is None:
            return None
        cipher, kdf, _ = reader.string(), reader.string(), reader.string()
        if cipher != b"none" or kdf != b"none" or reader.uint32() != 1:
            return None
        public = reader.string()
        private = Reader(reader.string())
        if private.uint32() != private.uint32():  # the check integers of a decrypted key
            return None
        if private.string() != ED25519:
            return None
        raw_public, secret = private.string(), private.string()
        if Reader(public).string() != ED25519 or len(secret) != 64 or secret[32:] != raw_public:
            return None
        key = Reader(public)
        key.string()
        if key.string() != raw_public:
            return None
    except (ValueError, binascii.Error):
        return None
    return public, secret[:32]


def signed_data(payload: bytes, hash_name: bytes = b"sha512", reserved: bytes = b"") -> bytes:
    """What an SSH signature's key signs for `payload` (PROTOCOL.sshsig)."""
    digest = HASHES[hash_name](payload).digest()
    return MAGIC + b"".join(map(string, (NAMESPACE.encode(), reserved, hash_name, digest)))


def armor(blob: bytes) -> str:
    text = _b64(blob)
    lines = [text[i : i + _LINE] for i in range(0, len(text), _LINE)]
    return "\n".join([ARMOR[0], *lines, ARMOR[1]]) + "\n"


def dearmor(signature: str) -> bytes | None:
    """The blob of an armored signature written as `ssh-keygen -Y sign` writes it (lines
    ending in LF, canonical base64), or None: ssh-keygen judges any other spelling."""
    begin, end = f"{ARMOR[0]}\n", f"\n{ARMOR[1]}"  # after it: ignored, as ssh-keygen does
    if not signature.startswith(begin) or end not in signature:
        return None
    text = signature[len(begin) : signature.index(end)].replace("\n", "")
    try:
        blob = binascii.a2b_base64(text, strict_mode=True)
    except (ValueError, binascii.Error):
        return None
    return blob if _b64(blob) == text else None


def sign_here(payload: bytes, key_text: bytes) -> str | None:
    """The armored signature `ssh-keygen -Y sign -n mgmt-deploy` makes over `payload` with the
    private key `key_text`, if it is an unencrypted OpenSSH Ed25519 key; None otherwise."""
    found = ed25519_seed(key_text)
    if found is None:
        return None
    public, seed = found
    message = signed_data(payload)
    raw = _openssl_ed25519(seed, message)
    if raw is None:
        from mgmt import full_site

        full_site()  # `cryptography` is an installed package
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        raw = Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    inner = string(ED25519) + string(raw)
    fields = (public, NAMESPACE.encode(), b"", b"sha512", inner)
    return armor(MAGIC + struct.pack(">I", 1) + b"".join(map(string, fields)))


_EVP_PKEY_ED25519 = 1087  # OpenSSL's NID_ED25519


_LIBCRYPTO: list[Any] = []  # [the functions] once loaded, [None] if they cannot be


def load_openssl() -> Any:
    """OpenSSL's functions this module signs with (loaded once; None if they cannot be): the
    thin client loads them while the agent checks the program."""
    if not _LIBCRYPTO:
        _LIBCRYPTO.append(_load_openssl())
    return _LIBCRYPTO[0]


def _load_openssl() -> Any:
    try:
        import _hashlib
        import ctypes
    except ImportError:
        return None
    void, size = ctypes.c_void_p, ctypes.c_size_t
    try:
        lib = ctypes.CDLL(_hashlib.__file__)  # its symbols and its libcrypto's
        new_key = lib.EVP_PKEY_new_raw_private_key
        new_key.restype, new_key.argtypes = void, [ctypes.c_int, void, ctypes.c_char_p, size]
        new_ctx = lib.EVP_MD_CTX_new
        new_ctx.restype, new_ctx.argtypes = void, []
        init = lib.EVP_DigestSignInit
        init.restype, init.argtypes = ctypes.c_int, [void, void, void, void, void]
        sign = lib.EVP_DigestSign
        sign.restype = ctypes.c_int
        sign.argtypes = [void, ctypes.c_char_p, ctypes.POINTER(size), ctypes.c_char_p, size]
        free_ctx, free_key = lib.EVP_MD_CTX_free, lib.EVP_PKEY_free
        free_ctx.restype, free_ctx.argtypes = None, [void]
        free_key.restype, free_key.argtypes = None, [void]
    except (OSError, AttributeError):
        return None
    return ctypes, new_key, new_ctx, init, sign, free_ctx, free_key


def _openssl_ed25519(seed: bytes, message: bytes) -> bytes | None:
    """The Ed25519 signature of `message` by OpenSSL's libcrypto, the one `hashlib` is linked
    with (through ctypes: ~3 ms to import, where the `cryptography` package takes 10-40 ms);
    None if it cannot be reached (another build, another platform): `cryptography` signs."""
    lib = load_openssl()
    if lib is None:
        return None
    ctypes, new_key, new_ctx, init, sign, free_ctx, free_key = lib
    size = ctypes.c_size_t
    key = new_key(_EVP_PKEY_ED25519, None, seed, len(seed))
    if not key:
        return None
    ctx = new_ctx()
    try:
        out, length = ctypes.create_string_buffer(64), size(64)
        if not ctx or init(ctx, None, None, None, key) != 1:
            return None
        if sign(ctx, out, ctypes.byref(length), message, len(message)) != 1 or length.value != 64:
            return None
        return bytes(out.raw)
    finally:
        if ctx:
            free_ctx(ctx)
        free_key(key)
