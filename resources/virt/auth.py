"""Credentials for a libvirt connection (mgmt's VirtAuth) and how a connection is opened.

The password is a secret: it is kept out of every repr (so out of logs, error messages and
the status page), and libvirt's own errors never echo it. Resources share a connection only
when their URI and their credentials are the same (resources/virt/pool.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resources.virt.lib import load_libvirt


@dataclass(kw_only=True, frozen=True)
class VirtAuth:
    """A username and password that libvirt asks for when the URI's transport needs them
    (e.g. SASL on `qemu+tcp://`, or a test-driver node with `<auth>`)."""

    # The user name libvirt asks for (VIR_CRED_AUTHNAME). Default "".
    username: str = ""
    # The password libvirt asks for (VIR_CRED_PASSPHRASE); never shown. Default "".
    password: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"VirtAuth(username={self.username!r}, password=<{'set' if self.password else 'empty'}>)"


def open_connection(uri: str, auth: VirtAuth | None) -> Any:
    """Open `uri` (blocking: run it in a worker thread). With credentials, libvirt's callback
    answers its questions with them; if that fails, a plain connection is tried (mgmt does the
    same: a URI that needs no credentials still opens), and if that fails too the error is the
    first one, which says why the credentials did not do."""
    libvirt = load_libvirt()
    if auth is None:
        return libvirt.open(uri)

    def answer(creds: list[list[Any]], _opaque: Any) -> int:
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = auth.username
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = auth.password
        return 0

    wanted = [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE]
    try:
        return libvirt.openAuth(uri, [wanted, answer, None], 0)
    except libvirt.libvirtError as first:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError:
            raise first from None
