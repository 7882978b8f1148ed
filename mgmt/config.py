"""The agent's configuration: one dataclass, the single source of truth for every option.

Each field's metadata gives its flag and help; the CLI is generated from it, and every flag
also reads `MGMT_<FLAG>` from the environment (e.g. MGMT_CONVERGED_TIMEOUT=5).
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.limits import DEFAULT_MAX_RESOURCES
from mgmt import default_prefix

DEFAULT_MAX_GRAPH_SIZE = 16 << 20  # bytes (docs/graph-format.md#limits)

# The largest mcl program (or module) file, in bytes: `--max-graph-size` too, set once per
# process by each command (mgmt run, check, deploy), as engine.limits' --max-resources is;
# here, not in mgmt.lang, so that a graph file's command does not import the language.
_max_program_size = [DEFAULT_MAX_GRAPH_SIZE]


def set_max_program_size(limit: int) -> None:
    """This process's `--max-graph-size`, for program files too (docs/language.md)."""
    _max_program_size[0] = limit


# The steps one mcl evaluation pass may take (`--max-steps`: mgmt.lang.values.budget), set
# once per process by each command as the two above are.
DEFAULT_MAX_STEPS = 16 << 20
_max_steps = [DEFAULT_MAX_STEPS]


def set_max_steps(limit: int) -> None:
    """This process's `--max-steps` (docs/language.md, "Limits")."""
    _max_steps[0] = limit


def max_steps() -> int:
    return _max_steps[0]


def max_program_size() -> int:
    return _max_program_size[0]


class ExitCode(enum.IntEnum):
    OK = 0  # converged, or stopped cleanly
    FAILED = 1  # resources failed (or did not converge within --max-runtime)
    USAGE = 2  # bad input: graph file, flags
    CHANGED = 3  # --detailed-exitcodes: changes made (or, with --noop, would be), none failed
    # A host problem at the start that may pass (sysexits' EX_TEMPFAIL): the prefix's disk is
    # full, the graph file is missing (engine.errors.transient). The unit restarts on it, not
    # on USAGE (RestartPreventExitStatus=2): fixed, the host is managed again without a human.
    UNAVAILABLE = 75


def opt(help: str, **kwargs: Any) -> Any:
    """Field metadata for a CLI option (the flag is the field name with dashes)."""
    return {"help": help, **kwargs}


@dataclass(kw_only=True)
class Config:
    """What a run of the agent does: the options of `mgmt run`, one object (mgmt.cli builds it)."""

    # Where the graph comes from: "yaml" (a graph file), "lang" (an mcl program), "puppet" (a
    # Puppet manifest) or "empty".
    frontend: str = "yaml"
    # The graph file (for the yaml front-end), program or manifest.
    file: Path | None = None
    # Inline Puppet code (`mgmt run puppet -e CODE`), instead of a file.
    code: str | None = None

    hostname: str = field(
        default_factory=socket.gethostname,
        metadata=opt("this host's name in the cluster and in logs"),
    )
    prefix: Path = field(
        default_factory=lambda: Path(default_prefix()),
        metadata=opt(
            "state directory (per-resource state, etcd data); default, as mgmt's: "
            "$STATE_DIRECTORY, else for non-root $XDG_CACHE_HOME/mgmt or ~/.cache/mgmt, else "
            "/var/lib/mgmt",
            metavar="DIR",
        ),
    )
    tmp_prefix: bool = field(
        default=False, metadata=opt("use a fresh temporary directory as the prefix")
    )
    # The agent has the process to itself (the CLI): it may freeze the heap after each graph
    # swap (engine/heap.py), and logs what Python writes to stderr itself (mgmt/log.py). Not
    # an option: tests run many agents in one process.
    own_process: bool = False
    converged_timeout: int = field(
        default=-1,
        metadata=opt(
            "exit once the graph has been converged for N seconds (-1: run forever)",
            metavar="N",
        ),
    )
    converger_timeout: int = field(
        default=-1,
        metadata=opt(
            "mgmt's newer spelling: with --converged-exit, same as --converged-timeout",
            metavar="N",
        ),
    )
    converged_exit: bool = field(
        default=False, metadata=opt("exit when converged for --converger-timeout seconds")
    )
    max_runtime: int = field(
        default=0,
        metadata=opt("stop after N seconds whatever the state (0: no limit)", metavar="N"),
    )
    noop: bool = field(default=False, metadata=opt("report what would change, change nothing"))
    detailed_exitcodes: bool = field(
        default=False,
        metadata=opt(
            "exit 3 when changes were made (with --noop: would be) and none failed; 0 nothing "
            "changed, 1 a failure or a run stopped with work undone, 2 bad input (Puppet's "
            "name; its codes: docs/operations.md)"
        ),
    )
    sema: int = field(
        default=0, metadata=opt("at most N check_applies at once (0: no limit)", metavar="N")
    )
    no_watch: bool = field(default=False, metadata=opt("do not watch the graph file for edits"))
    nice: int = field(
        default=0,
        metadata=opt(
            "run at nice level N (-20 to 19; below 0 needs root): repairs drift sooner while "
            "other work keeps the CPUs busy (mgmt.priority)",
            metavar="N",
        ),
    )
    graphviz: Path | None = field(
        default=None, metadata=opt("write the graph in Graphviz dot format to FILE", metavar="FILE")
    )
    no_autoedges: bool = field(
        default=False, metadata=opt("add no automatic edges (file -> parent dir, ...)")
    )
    puppet_fallback: bool = field(
        default=False,
        metadata=opt(
            "run Puppet resources without a translation through `puppet resource` "
            "(default: refuse the manifest, listing them)"
        ),
    )
    modulepath: str = field(
        default="",
        metadata=opt(
            "with puppet: directories of Puppet modules (DIR:DIR...), searched before Debian's "
            "/usr/share/puppet/modules; their files a manifest uses are watched as it is",
            metavar="DIRS",
        ),
    )
    hiera_config: Path | None = field(
        default=None,
        metadata=opt(
            "with puppet: Hiera's global layer, a hiera.yaml (Puppet's --hiera_config; the "
            "host's /etc/puppet/hiera.yaml is not read unless named); watched as the manifest is",
            metavar="FILE",
        ),
    )
    puppet_environment: Path | None = field(
        default=None,
        metadata=opt(
            "with puppet: the environment directory (a control repository: hiera.yaml, data/, "
            "modules/); default: the manifest's directory (its parent for manifests/) if it "
            "holds a hiera.yaml",
            metavar="DIR",
        ),
    )
    no_autogroup: bool = field(
        default=False, metadata=opt("merge no compatible resources (e.g. pkg) into one vertex")
    )
    prometheus: bool = field(default=False, metadata=opt("serve Prometheus metrics on /metrics"))
    status: bool = field(
        default=False,
        metadata=opt(
            "serve the live status page (/, /api/status, /api/events) on --prometheus-listen's "
            "address, beside /metrics"
        ),
    )
    prometheus_listen: str = field(
        default="127.0.0.1:9233",
        metadata=opt(
            "HOST:PORT for --prometheus and --status; :PORT means 127.0.0.1:PORT; a non-loopback "
            "HOST (e.g. 0.0.0.0) is served over the cluster's TLS, a client certificate from "
            "its CA required",
            metavar="HOST:PORT",
        ),
    )
    max_graph_size: int = field(
        default=DEFAULT_MAX_GRAPH_SIZE,
        metadata=opt(
            "refuse a graph or mcl program file larger than BYTES (also for mgmt check)",
            metavar="BYTES",
        ),
    )
    max_resources: int = field(
        default=DEFAULT_MAX_RESOURCES,
        metadata=opt(
            "refuse a graph of more than N resources (or N edges), counted while it is built: "
            "a runaway program fails there, the last good graph kept (also for mgmt check, "
            "mgmt deploy)",
            metavar="N",
        ),
    )
    max_steps: int = field(
        default=DEFAULT_MAX_STEPS,
        metadata=opt(
            "refuse an mcl program that takes more than N steps in one evaluation (an item of "
            "a list or 16 bytes of a str built, a function applied, a loop's iteration): a "
            "runaway program fails there, the last good graph kept (also for mgmt check, mgmt "
            "deploy)",
            metavar="N",
        ),
    )
    # cluster (DESIGN §6; docs/clustering.md) ------------------------------------------
    seeds: str = field(
        default="",
        metadata=opt(
            "join the cluster through these etcd client URLs (comma-separated)", metavar="URLS"
        ),
    )
    client_urls: str = field(
        default="",
        metadata=opt(
            "URLs this host's etcd serves clients on (default https://127.0.0.1:2379)",
            metavar="URLS",
        ),
    )
    server_urls: str = field(
        default="",
        metadata=opt(
            "URLs this host's etcd serves peers on (default https://127.0.0.1:2380)", metavar="URLS"
        ),
    )
    advertise_client_urls: str = field(
        default="",
        metadata=opt(
            "client URLs announced to the cluster (default: --client-urls)", metavar="URLS"
        ),
    )
    advertise_server_urls: str = field(
        default="",
        metadata=opt("peer URLs announced to the cluster (default: --server-urls)", metavar="URLS"),
    )
    ideal_cluster_size: int = field(
        default=5,
        metadata=opt(
            "etcd members the cluster grows to from volunteers (first host only; -1: the "
            "default, as in mgmt)",
            metavar="N",
        ),
    )
    no_server: bool = field(
        default=False, metadata=opt("never run an etcd member: stay a client of the cluster")
    )
    export_grace: int = field(
        default=300,
        metadata=opt(
            "withdraw a host's exports N seconds after its agent is gone (its lease expired; "
            "applied by the cluster's leader; -1: keep them)",
            metavar="N",
        ),
    )
    tls_ca: Path | None = field(
        default=None,
        metadata=opt(
            "CA (PEM) verifying etcd servers, and clients of this host's etcd", metavar="FILE"
        ),
    )
    tls_cert: Path | None = field(
        default=None,
        metadata=opt(
            "certificate (PEM) this host's etcd serves and this agent presents", metavar="FILE"
        ),
    )
    tls_key: Path | None = field(
        default=None, metadata=opt("private key (PEM) of --tls-cert", metavar="FILE")
    )
    peer_tls_ca: Path | None = field(
        default=None,
        metadata=opt("CA (PEM) for etcd peer traffic (default: --tls-ca)", metavar="FILE"),
    )
    peer_tls_cert: Path | None = field(
        default=None,
        metadata=opt(
            "certificate (PEM) for etcd peer traffic (default: --tls-cert)", metavar="FILE"
        ),
    )
    peer_tls_key: Path | None = field(
        default=None,
        metadata=opt("private key (PEM) of --peer-tls-cert (default: --tls-key)", metavar="FILE"),
    )
    cluster_user: str | None = field(
        default=None, metadata=opt("etcd user (with --cluster-password-file)", metavar="NAME")
    )
    cluster_password_file: Path | None = field(
        default=None,
        metadata=opt("file holding the etcd user's password (never logged)", metavar="FILE"),
    )
    cluster_ca_dir: Path | None = field(
        default=None,
        metadata=opt(
            "the cluster's CA (ca.pem, ca.key) this host mints its certificate from; the first "
            "host creates it (default <prefix>/cluster-ca), joiners need a copy",
            metavar="DIR",
        ),
    )
    cluster_cert_dir: Path | None = field(
        default=None,
        metadata=opt(
            "this host's own credentials (ca.pem, host.pem, host.key), minted by the operator "
            "with `mgmt cluster mint-cert`: per-host etcd identities, so that a host writes only "
            "its own keys (recommended for real clusters; docs/security.md)",
            metavar="DIR",
        ),
    )
    insecure_cluster: bool = field(
        default=False,
        metadata=opt(
            "plain http cluster, no TLS, no client certificates (development only: any local "
            "user can write the cluster)"
        ),
    )
    etcd_heartbeat_interval: int = field(
        default=100, metadata=opt("etcd raft heartbeat interval in ms", metavar="MS")
    )
    etcd_election_timeout: int = field(
        default=1000,
        metadata=opt(
            "etcd election timeout in ms (also sets how soon a dead host is replaced)", metavar="MS"
        ),
    )
    etcd_quota_backend_bytes: int = field(
        default=512 << 20,
        metadata=opt("etcd storage quota in bytes (0: etcd's 2 GiB)", metavar="BYTES"),
    )
    etcd_compaction_retention: str = field(
        default="10m",
        metadata=opt(
            "etcd history kept before compaction, e.g. 10m, 1h (0: never)", metavar="DURATION"
        ),
    )
    # deploys (docs/deploys.md) -----------------------------------------------------------
    deploy: bool = field(
        default=False,
        metadata=opt(
            "make the program a deploy: the cluster's first one if it has none; then run the "
            "newest deploy, as `mgmt run empty` does"
        ),
    )
    trusted_keys: Path | None = field(
        default=None,
        metadata=opt(
            "SSH keys whose deploys this host runs (ssh-keygen's allowed_signers format: "
            "`principal key-type key` per line)",
            metavar="FILE",
        ),
    )
    allow_unsigned_deploys: bool = field(
        default=False,
        metadata=opt(
            "also run unsigned or unverifiable deploys (development only: whoever can write "
            "the cluster can then make this host run anything)"
        ),
    )
    deploy_switch: str = field(
        default="now",
        metadata=opt(
            "now: run a new deploy as soon as this host has it; together: once every live "
            "host has it ready",
            choices=["now", "together"],
        ),
    )
    sign_key: Path | None = field(
        default=None,
        metadata=opt("SSH key signing the program --deploy pushes", metavar="FILE"),
    )
    log_format: str = field(
        default="text", metadata=opt("text (one line per event) or json", choices=["text", "json"])
    )
    verbose: bool = field(default=False, metadata=opt("log debug lines too"))
    quiet: bool = field(
        default=False,
        metadata=opt(
            "log warnings and errors only, and the run's summary when something changed, "
            "failed or would change (--noop): a cron run that changed nothing says nothing"
        ),
    )

    @property
    def exit_after(self) -> int:
        """Seconds converged after which to exit, or -1 (both mgmt spellings)."""
        if self.converged_timeout >= 0:
            return self.converged_timeout
        if self.converged_exit and self.converger_timeout >= 0:
            return self.converger_timeout
        return -1

    @property
    def prefix_parent_required(self) -> bool:
        """Whether the prefix's parent must exist (a missing one: exit 75, nothing made): for a
        prefix given, yes (a mount not there yet); the default one's parents are made, as mgmt
        makes them (a fresh user's ~/.cache)."""
        return self.prefix != Path(default_prefix())

    def unused_listen(self) -> str:
        """The warning for a --prometheus-listen given (not its default) that serves less than
        it reads as: /metrics needs --prometheus too (mgmt also ignores the address without it,
        unsaid: a scrape got 404s, tester17); "" when it serves what was asked."""
        listen = self.prometheus_listen
        if self.prometheus or listen == Config.prometheus_listen:
            return ""
        if self.status:
            return (
                f"--prometheus-listen {listen} without --prometheus: the status page is served "
                "there, /metrics is not (add --prometheus)"
            )
        return (
            f"--prometheus-listen {listen} without --prometheus or --status: nothing is served "
            "there (add --prometheus for /metrics, --status for the page)"
        )


def option_fields() -> list[Any]:
    """The Config fields that are CLI options (those with help metadata)."""
    return [f for f in fields(Config) if "help" in f.metadata]
