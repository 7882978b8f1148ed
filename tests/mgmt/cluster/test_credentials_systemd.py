"""A host's credentials given by systemd's LoadCredential= (`$CREDENTIALS_DIRECTORY`) to a
non-root agent (a unit with `User=`): what the real manager makes, and that the agent takes it
as its `--cluster-cert-dir`.

systemd 252 (Debian 12) mounts a ramfs there, which keeps no ACL: the directory and the files
are given to the unit's user (0500, 0400). On a file system with ACLs (the tmpfs systemd mounts
when ramfs cannot be, or the plain directory it falls back to without the right to mount) they
stay root's, 0500 and 0400 with an ACL entry for the user: `ls` shows 0550 and 0440, the ACL's
mask. The second form was refused by main 6729fd9a (`... is owned by uid 0, not by this agent
(uid 65534): refusing to keep state there`). Shown here with the contained manager
(tests/systemd_fixture.py): its mount namespace is private, so the credentials' directory is
made a shared mount in it first (as `/` is on a host) for the manager's mount to reach the
unit; the tmpfs is mounted there before the unit starts, which systemd then uses as its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt.cluster.pki import create_ca, mint
from tests.e2e.helpers import NOBODY, searchable_dir
from tests.systemd_fixture import ROOT, RealSystemd, start, stop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("nsenter") is None, reason="needs root and nsenter"
    ),
]

# What the unit runs: the directory's and files' owner, mode and ACL, then the agent's check of
# its --cluster-cert-dir (mgmt.cluster.options.from_config), as JSON on stdout.
PROBE = """
import json, os, stat, sys
sys.path.insert(0, sys.argv[2])  # the tree under test, not the one installed
from pathlib import Path
from mgmt.cluster.options import from_config
from mgmt.config import Config

def shown(path):
    st = os.lstat(path)
    try:
        acl = len(os.getxattr(path, "system.posix_acl_access")) > 28
    except OSError:
        acl = False
    return [st.st_uid, stat.S_IMODE(st.st_mode), acl]

found = Path(os.environ["CREDENTIALS_DIRECTORY"])
out = {"uid": os.geteuid(), ".": shown(found)}
out.update((p.name, shown(p)) for p in sorted(found.iterdir()))
try:
    from_config(Config(hostname="h", prefix=Path(sys.argv[1]), cluster_cert_dir=found))
    out["check"] = "ok"
except Exception as err:
    out["check"] = str(err)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sources() -> Iterator[Path]:
    """A core host's credentials (ca.pem, host.pem, host.key), root's, for LoadCredential=."""
    with searchable_dir("mgmt-creds-") as top:  # the units' prefixes are below it
        create_ca(top / "ca")
        mint(top / "ca", top / "host", "h", ["localhost"], core=True)
        (top / "probe.py").write_text(PROBE)
        yield top


@pytest.fixture(scope="module")
def manager() -> Iterator[RealSystemd]:
    """A manager of the module's own, in a directory others may search (pytest's is 0700): the
    unit's user reaches its credentials below it, as below /run on a host."""
    with searchable_dir("mgmt-creds-systemd-") as top:
        started = start(top)
        try:
            yield started
        finally:
            stop(top)


def _in_manager(manager: RealSystemd, script: str) -> None:
    """Run `script` (sh) in the manager's own mount namespace."""
    argv = ["nsenter", "-t", str(manager.pid), "-m", "sh", "-c", script]
    subprocess.run(argv, check=True, timeout=30, capture_output=True)


@pytest.fixture(scope="module")
def credentials(manager: RealSystemd) -> Path:
    """The manager's credentials directory, shared in its namespace (as /run is on a host), below
    a runtime directory others may search (as /run is)."""
    runtime = Path(manager.vars["XDG_RUNTIME_DIR"])
    runtime.chmod(0o755)
    top = runtime / "credentials"
    _in_manager(
        manager, f"mkdir -p -m 0755 {top} && mount --bind {top} {top} && mount --make-shared {top}"
    )
    return top


async def _run(manager: RealSystemd, sources: Path, user: str, acl_fs: bool) -> dict[str, object]:
    """A oneshot unit (with `user`: User= and Group=) given the host's credentials; its probe's
    JSON. `acl_fs`: a tmpfs (which keeps ACLs) mounted where its credentials go."""
    name = manager.name("creds") + ".service"
    out = sources / f"{name}.json"
    loads = "".join(
        f"LoadCredential={n}:{sources / 'host' / n}\n" for n in ("ca.pem", "host.pem", "host.key")
    )
    manager.write_unit(
        name,
        f"[Service]\nType=oneshot\n{user}\n{loads}WorkingDirectory={ROOT}\n"
        f"StandardOutput=truncate:{out}\nStandardError=truncate:{out}.err\n"
        f"ExecStart={sys.executable} {sources / 'probe.py'} {sources / name} {ROOT}\n",
    )
    if acl_fs:
        where = Path(manager.vars["XDG_RUNTIME_DIR"]) / "credentials" / name
        _in_manager(manager, f"mkdir -m 0700 {where} && mount -t tmpfs -o mode=0700 tmpfs {where}")
    await manager.systemctl("daemon-reload")
    await manager.systemctl("start", name)
    result: dict[str, object] = json.loads(out.read_text())
    return result


@pytest.mark.usefixtures("credentials")
async def test_load_credential_with_user_is_taken_as_the_cluster_cert_dir(
    manager: RealSystemd, sources: Path
) -> None:
    user = f"User={NOBODY}\nGroup={NOBODY}"
    ramfs = await _run(manager, sources, user, acl_fs=False)
    assert ramfs["uid"] == NOBODY
    if ramfs["."] == [NOBODY, 0o500, False]:  # ramfs (systemd 252): given to the user
        for name in ("ca.pem", "host.pem", "host.key"):
            assert ramfs[name] == [NOBODY, 0o400, False], ramfs
    else:  # tmpfs (a later systemd): root's, with an ACL
        assert ramfs["."] == [0, 0o550, True], ramfs
    assert ramfs["check"] == "ok", ramfs
    acl = await _run(manager, sources, user, acl_fs=True)
    assert acl["."] == [0, 0o550, True], acl  # 0500 and user:65534:r-x (the mask r-x)
    for name in ("ca.pem", "host.pem", "host.key"):
        assert acl[name] == [0, 0o440, True], acl  # 0400 and user:65534:r-- (the mask r--)
    assert acl["check"] == "ok", acl  # main: "... is owned by uid 0, not by this agent"


@pytest.mark.usefixtures("credentials")
async def test_load_credential_without_user_is_roots_0400(
    manager: RealSystemd, sources: Path
) -> None:
    for acl_fs in (False, True):
        found = await _run(manager, sources, "", acl_fs=acl_fs)
        assert found["uid"] == 0 and found["."] == [0, 0o500, False], found
        for name in ("ca.pem", "host.pem", "host.key"):
            assert found[name] == [0, 0o400, False], found
        assert found["check"] == "ok", found
