"""Deploys: signed programs pushed to the cluster and run by every host (docs/deploys.md).

- `bundle`: the files of a program (`yaml FILE`, `lang FILE.mcl`, `lang DIR/`), encoded as one
  content-addressed blob;
- `sign`: SSH signatures (`ssh-keygen -Y sign/verify`, namespace `mgmt-deploy`);
- `store`: the etcd keys under `/_mgmt/deploy/` and the one transaction that appends a deploy;
- `policy`: which deploys a host runs (its trusted keys), asked by `source` and `server`;
- `source`: what an agent runs (`mgmt run empty`): the newest deploy, verified, swapped in live;
- `status`: each host's deploy and convergence (`/_mgmt/deploy-status/<host>`);
- `sshkey`: SSH keys and signatures in-process (fingerprints, Ed25519 signing);
- `cli`: `mgmt deploy` (`--list`, `--status`, `--rollback N`), pushing from its own process;
- `client` and `server`: `mgmt deploy`'s thin path, through the local agent's deploy socket.

Importing this package is cheap (the thin client imports it): the etcd client is imported by
`store` and `source` only, after `mgmt.cluster` (grpc's environment).
"""

from __future__ import annotations

from engine.errors import MgmtError


class DeployError(MgmtError):
    """A deploy that cannot be made, read, verified or run (one line, says why)."""
