"""What a host runs: its --trusted-keys and --allow-unsigned-deploys, asked of a deploy by the
host (`source`) and, before the deploy is stored, by its deploy socket (`server`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgmt.deploy import DeployError
from mgmt.deploy import sign as signing
from mgmt.deploy.status import UNSIGNED
from mgmt.deploy.store import Record


@dataclass
class Policy:
    """What this host accepts and when it switches (from the Config)."""

    trusted_keys: Path | None
    allow_unsigned: bool
    together: bool
    max_graph_size: int


def signed_for(rec: Record, policy: Policy) -> str:
    """Why this host would run `rec` unverified ("unsigned" or "no --trusted-keys", with
    --allow-unsigned-deploys), "" if its signature is by a key it trusts; DeployError if it
    would refuse it (blocking: reads the trusted keys). `source.verify` asks it of every deploy,
    the deploy socket (`server`) of a record before it is stored."""
    if rec.signature and policy.trusted_keys is not None:
        _, key = signing.verify(rec.payload(), rec.signature, policy.trusted_keys, rec.key)
        if key != rec.key:
            raise DeployError(f"its record names the key {rec.key}, it was signed by {key}")
        return ""
    if not policy.allow_unsigned:
        if rec.signature:
            raise DeployError("signed, but this host has no --trusted-keys to verify it")
        raise DeployError(
            "unsigned (hosts run unsigned deploys only with --allow-unsigned-deploys)"
        )
    return UNSIGNED if not rec.signature else "no --trusted-keys"
