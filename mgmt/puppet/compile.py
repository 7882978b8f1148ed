"""Compiling a Puppet manifest into its catalog with the real Puppet (`puppet catalog compile`).

Puppet runs as a subprocess (argv, bounded by a timeout) with every directory it writes to
(vardir, confdir, codedir, ...) in a fresh private temporary directory that is removed after
the run: the host's /etc/puppet and /var/cache/puppet are neither read nor changed, and nothing
another user wrote is used. Puppet dies with the agent (resources._lib.proc.dies_with_agent), and
the directory is a locked temporary prefix (mgmt.tmpprefix): a killed agent's is removed by the
next compile's sweep (of any agent of the user's), or the next `--tmp-prefix` run's. The
environment (Hiera's environment layer: `hiera.yaml`,
`data/`; `modules/`) is the directory `--puppet-environment` names, or the manifest's own
(Manifest.environment_of), linked from the private codedir. Modules come from `--modulepath`'s directories, then Debian's
/usr/share/puppet/modules (where the cron, host and mount types live since Puppet 6).

A compile also says which files the manifest depended on (`Compiled.files`, or a refusal's
`CompileFailed.files`), to be watched as the manifest is: Puppet's debug lines name each
manifest it imports (a module's class or defined type) and each template it retrieves
(`template()`, `epp()`: found in the module path as Puppet finds it), and Hiera's explanation
of each lookup names its hiera.yaml and the data files of its hierarchy (its three layers: a
global hiera.yaml named by `--hiera-config`, the environment directory's, each module's); a class, defined type, template or data file it
could not find is where Puppet looked for it, so writing it compiles again. `file()` logs
nothing: what it reads is not known, not watched (SIGHUP).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import MgmtError, ResourceError
from mgmt.config import DEFAULT_MAX_GRAPH_SIZE
from mgmt.tmpprefix import TmpPrefix
from mgmt.yamlgraph import GraphFileError
from resources._lib.proc import dies_with_agent, run_command

if TYPE_CHECKING:
    from collections.abc import Callable

    from mgmt.config import Config

log = logging.getLogger("puppet")

PUPPET = "puppet"
MODULEPATH = "/usr/share/puppet/modules"
ENVIRONMENT = "production"  # the name of the compile's environment (Puppet's default)
TIMEOUT = 300.0  # seconds a compile may take (facter alone takes one or two)
# "(file: /x.pp, line: 3, column: 7)" at the end of Puppet's error messages; "(line: 1,
# column: 26)" for inline code, "(file: /x.pp)" at the end of the input.
_WHERE = re.compile(
    r"\s*\((?:file: (?P<file>[^,)]+))?(?:, )?(?:line: (?P<line>\d+)(?:, column: (?P<col>\d+))?)?\)"
)


# Puppet's debug lines naming what a compile reads: a manifest imported (a module's class or
# defined type), a template retrieved (`template()`, `epp()`: module/file, or a path).
_READ = re.compile(
    r"^Debug: (?:importing '(?P<file>/[^']+)'"
    r"|Scope\(.*\): Retrieving (?:epp )?template (?P<name>\S+)$)",
    re.M,
)
# Hiera's explanation of each lookup (in Puppet's debug output): the hiera.yaml it used and
# each data file of its hierarchy, there or not ("Path not found": writing it changes what
# the lookup finds).
_HIERA = re.compile(r'^\s+(?:Using configuration|Path) "(?P<file>/[^"]+)"$', re.M)
# What a refused compile could not find: a class, or a defined type (a module's manifest).
_NOT_FOUND = re.compile(
    r"Could not find (?:declared )?class (?:::)?(?P<cls>[\w:]+)"
    r"|Unknown resource type: '(?P<type>[\w:]+)'"
)


def _check_trusted(modulepath: list[str], environment: Path | None, hiera: Path | None) -> None:
    """GraphFileError, one line each, naming the flag, the path and who controls it, when
    another local user could change Puppet code or data the flags name: a module's manifests
    and an environment's data become resources the agent applies as its user (root), and a
    compile runs a module's functions. Each tree is walked (`safefs.others_control_tree`);
    for --hiera-config, the file and the `data/` beside it (Hiera's default datadir). Before
    2026-12-06 (ninth session) they were read as given."""
    from engine.safefs import others_control, others_control_tree

    named: list[tuple[str, str, bool]] = [("--modulepath", d, True) for d in modulepath]
    if environment is not None:
        named.append(("--puppet-environment", str(environment), True))
    if hiera is not None:
        named += [
            ("--hiera-config", str(hiera), False),
            ("--hiera-config", str(hiera.parent / "data"), True),
        ]
    problems = []
    for flag, path, tree in named:
        if why := (others_control_tree if tree else others_control)(path):
            problems.append(
                f"{flag}: {why}: refusing to read Puppet code or data there (it becomes what "
                f"this agent, uid {os.geteuid()}, applies): keep it owned by root (or this "
                "agent's user), writable only by them"
            )
    if problems:
        raise GraphFileError(problems)


@dataclass(frozen=True)
class Manifest:
    """What to compile: a manifest file, or inline code (`-e`)."""

    file: Path | None = None
    code: str | None = None
    modulepath: str = MODULEPATH
    # Hiera's environment layer: an environment directory (hiera.yaml, data/, modules/), named
    # (`--puppet-environment`); None: the manifest's own, if it has one (`environment_of`).
    environment: Path | None = None
    hiera_config: Path | None = None  # Hiera's global layer (`--hiera-config`)
    max_size: int = DEFAULT_MAX_GRAPH_SIZE  # bytes of the manifest file or code (--max-graph-size)

    @classmethod
    def of(cls, config: Config) -> Manifest:
        """The manifest `config` names: its `--modulepath` directories first (absolute)."""
        given = [os.path.abspath(d) for d in config.modulepath.split(":") if d]
        named = [config.puppet_environment, config.hiera_config]
        environment, hiera = (Path(os.path.abspath(p)) if p else None for p in named)
        _check_trusted(given, environment, hiera)
        modulepath = ":".join([*given, MODULEPATH])
        made = cls(config.file, config.code, modulepath, environment, hiera, config.max_graph_size)
        if environment is None:
            made._check_own_environment()
        return made

    def _check_own_environment(self) -> None:
        """GraphFileError when the manifest's own environment (`environment_of`: its hiera.yaml,
        data/ and modules/, used without a flag) holds what another local user could change,
        as `--puppet-environment` naming the same directory is refused (`_check_trusted`).
        Until the ninth session's review only that directory itself was looked at: uid
        65534's module in a root-owned control repository's modules/ was compiled."""
        from engine.safefs import others_control_tree

        try:
            own, _, _ = self.environment_of()
        except OSError:
            return  # a missing manifest: the compile says so
        if own is not None and (why := others_control_tree(str(own))):
            raise GraphFileError(
                [
                    f"{self.label}: its environment {own} (hiera.yaml there): {why}: refusing "
                    f"to read Puppet code or data there (it becomes what this agent, uid "
                    f"{os.geteuid()}, applies): keep it owned by root (or this agent's user), "
                    "writable only by them"
                ]
            )

    def environment_of(self) -> tuple[Path | None, Path | None, list[str]]:
        """The environment directory of the compile, the hiera.yaml to watch (written, it
        makes the directory the environment) and a warning: the named directory, or the
        manifest's (its parent if that is `manifests/`, a control repository's layout) if it
        holds a `hiera.yaml` and only its owner (or root) may write to it: a `hiera.yaml`
        planted in a shared directory (/tmp) is not read."""
        if self.environment is not None or self.file is None:
            hiera = self.environment / "hiera.yaml" if self.environment else None
            return self.environment, hiera, []
        directory = self.file.absolute()
        directory = directory if directory.is_dir() else directory.parent
        if directory.name == "manifests":
            directory = directory.parent
        hiera = directory / "hiera.yaml"
        from engine.safefs import writable_by_others

        info = directory.stat()  # the manifest's directory, or the parent of its manifests/
        theirs = info.st_uid not in (0, os.geteuid())
        if theirs or writable_by_others(info, os.path.realpath(directory)):
            if not hiera.is_file():
                return None, None, []
            why = f"others may write to {directory} (name it with --puppet-environment to use it)"
            return None, None, [f"{hiera}: not used: {why}"]
        return (directory if hiera.is_file() else None), hiera, []

    @property
    def label(self) -> str:
        """How errors name the input."""
        return str(self.file) if self.file is not None else "<puppet -e>"


@dataclass
class Compiled:
    """A manifest's catalog (Puppet's JSON) and the files the compile depended on."""

    catalog: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modulepath: str = MODULEPATH  # the environment's modules/, then the manifest's modulepath


class CompileFailed(GraphFileError):
    """A manifest that does not compile (or translate), and the files it depended on or looked
    for: the edit that fixes it may be to one of them."""

    def __init__(self, problems: list[str], files: list[Path]) -> None:
        super().__init__(problems)
        self.files = files


def isolated(work: Path) -> list[str]:
    """Puppet's options that keep it to `work` (every directory it reads its settings from
    or writes to, made by Puppet there) and its output plain text (no colour codes)."""
    argv = ["--color=false"]
    for setting in ("vardir", "confdir", "codedir", "rundir", "logdir", "publicdir"):
        argv += [f"--{setting}", str(work / setting)]
    return argv


async def compile_catalog(manifest: Manifest, hostname: str, timeout: float = TIMEOUT) -> Compiled:
    """The catalog of `manifest` for node `hostname`, and the files it depended on;
    CompileFailed with Puppet's own message (one line, `FILE:LINE:COL: puppet: ...`) if it
    does not compile."""
    own = [manifest.file.absolute()] if manifest.file is not None else []
    if shutil.which(PUPPET) is None:
        raise CompileFailed(
            [f"{manifest.label}: puppet is not installed (Debian: apt-get install puppet-agent)"],
            own,
        )
    environment, warnings = _inputs(manifest, own)
    private = await _private_dir(manifest, own)
    work = private.path
    try:
        argv = [*dies_with_agent(), PUPPET, "catalog", "compile", "--render-as", "json"]
        # (debug: the files it reads)
        argv += [*isolated(work), "--log_level=debug", "--certname", hostname]
        argv += ["--basemodulepath", manifest.modulepath]
        if manifest.hiera_config is not None:
            argv += ["--hiera_config", str(manifest.hiera_config)]
        link = work / "codedir" / "environments" / ENVIRONMENT
        if environment is not None:  # as Puppet finds it in its environmentpath: a link
            link.parent.mkdir(parents=True)  # in our private directory, its files given
            link.symlink_to(environment, target_is_directory=True)  # back their paths below
            argv += ["--environment", ENVIRONMENT]
        if manifest.file is not None:
            argv += ["--manifest", str(manifest.file.absolute())]
        else:
            argv += ["--code", manifest.code or ""]
        try:
            code, out, err = await run_command(
                argv, timeout=timeout, ok=None, label="puppet catalog compile"
            )
        except ResourceError as error:
            raise CompileFailed([f"{manifest.label}: {error}"], own) from None
    finally:
        private.close()
    if environment is not None:
        out, err = (text.replace(str(link), str(environment)) for text in (out, err))
    files = [*own, *_read(manifest, out)]
    if code != 0:  # (a silent failure names the last manifest or template read, not Hiera's)
        last = next((f for f in reversed(files) if f.suffix in _CODE), own[0] if own else None)
        failure = _failure(manifest, err or out, code, last)
        if last is not None and failure == f"{last}: {SILENT.format(code=code)}":
            failure = await _erb_syntax(last) or failure
        files += _looked_for(manifest, failure)
        raise CompileFailed([failure], list(dict.fromkeys(files)))
    files = list(dict.fromkeys(files))
    # The catalog is the last line (one line of JSON), after the debug lines.
    start = out.rfind("\n{", 0, len(out.rstrip()))
    try:
        catalog = json.loads(out[start + 1 :])
    except ValueError:
        catalog = None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("resources"), list):
        raise CompileFailed([f"{manifest.label}: puppet printed no catalog: {out[-200:]!r}"], files)
    modulepath = manifest.modulepath
    if environment is not None:  # Puppet's: the environment's modules, then the base's
        modulepath = f"{environment / 'modules'}:{modulepath}"
    return Compiled(catalog, files, warnings, modulepath)


async def _private_dir(manifest: Manifest, own: list[Path]) -> TmpPrefix:
    """The compile's directory: 0700, new, ours alone; locked while it runs, so that a killed
    agent's is swept by the next compile (this one sweeps those beside it: an agent run as a
    service, `--prefix`, makes no `--tmp-prefix` run that would), or `--tmp-prefix` run
    (mgmt.tmpprefix)."""
    try:
        private = TmpPrefix(swept=False)
    except (OSError, MgmtError) as problem:  # e.g. $TMPDIR another user controls
        raise CompileFailed([f"{manifest.label}: puppet's directory: {problem}"], own) from None
    try:
        await private.sweep_killed(log)
    except BaseException:
        private.close()
        raise
    return private


def _inputs(manifest: Manifest, own: list[Path]) -> tuple[Path | None, list[str]]:
    """The environment directory of the compile and a warning (Manifest.environment_of);
    CompileFailed for a manifest, a `--hiera-config` or a `--puppet-environment` that cannot
    be read: Puppet compiles a missing manifest as an empty one (every resource would go),
    and a missing hiera.yaml or environment as none (every lookup would take its default).
    Adds to `own` (the files watched) the hiera.yamls of the global and environment layers."""
    if manifest.file is not None:
        size = _readable(manifest.file, manifest.label, own)
    else:
        size = len((manifest.code or "").encode())
    if size > manifest.max_size:  # Puppet read 17 MiB of comments with 760 MB of memory
        raise CompileFailed(
            [
                f"{manifest.label}:1: the manifest is larger than {manifest.max_size:,} bytes "
                "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
            ],
            own,
        )
    environment, hiera, warnings = manifest.environment_of()
    own += [p for p in (hiera, manifest.hiera_config) if p is not None]
    if manifest.hiera_config is not None:
        _readable(manifest.hiera_config, f"{manifest.hiera_config} (--hiera-config)", own, "file")
    if manifest.environment is not None:
        label = f"{manifest.environment} (--puppet-environment)"
        _readable(manifest.environment, label, own, "directory")
    return environment, warnings


def _readable(path: Path, label: str, own: list[Path], kind: str = "") -> int:
    """The size of `path` (0 for a directory); CompileFailed unless it is a regular file or a
    directory (`kind`: only that one, "file" or "directory"): Puppet takes a missing one as
    empty, and a FIFO held it until the compile's timeout (300 s), waiting for a writer.
    `own`: the files watched, where the fix is written."""
    try:
        info = path.stat()
    except OSError as missing:  # (its cause: a missing file at the start exits 75, as yaml's)
        raise CompileFailed([f"{label}: cannot read: {missing.strerror}"], own) from missing
    is_file, is_dir = stat.S_ISREG(info.st_mode), stat.S_ISDIR(info.st_mode)
    if not {"file": is_file, "directory": is_dir}.get(kind, is_file or is_dir):
        raise CompileFailed([f"{label}: cannot read: not a {kind or 'regular file'}"], own)
    return info.st_size if is_file else 0


def _read(manifest: Manifest, out: str) -> list[Path]:
    """The files a compile read, from its debug lines (`out`): Hiera's configurations and
    data files (those it looked for too), each manifest imported, each template retrieved
    (where Puppet finds it)."""
    files = [Path(m["file"]) for m in _HIERA.finditer(out)]
    dirs = [Path(d) for d in manifest.modulepath.split(":") if d]
    for m in _READ.finditer(out):
        name = m["name"] or ""
        if m["file"] or name.startswith("/"):
            files.append(Path(m["file"] or name))
        else:
            module, _, rest = name.partition("/")
            files += _in_module(dirs, module, f"templates/{rest}")
    return files


def _looked_for(manifest: Manifest, failure: str) -> list[Path]:
    """The file a refusal names, and where Puppet looked for what it could not find."""
    files = [Path(failure.split(":", 1)[0])] if failure.startswith("/") else []
    dirs = [Path(d) for d in manifest.modulepath.split(":") if d]
    for m in _NOT_FOUND.finditer(failure):
        module, *inner = (m["cls"] or m["type"]).lower().split("::")
        files += _in_module(dirs, module, "manifests/init.pp")
        if inner:
            files += _in_module(dirs, module, "manifests/" + "/".join(inner) + ".pp")
    return files


def module_file(uri: str, modulepath: str) -> list[Path]:
    """Where `puppet apply` looks for a file `source` (`puppet:///modules/MODULE/PATH`):
    `MODULE/files/PATH` in the first directory of `modulepath` holding MODULE (the last path,
    if it is there), and in those before it. ValueError for what is not a module's file: a
    server's (`puppet://HOST/`), another mount point (`puppet:///files/`: a file server's)."""
    server, _, rest = uri.removeprefix("puppet://").partition("/")
    mount, _, rest = rest.partition("/")
    module, _, path = rest.partition("/")
    if server or mount != "modules" or not module:
        raise ValueError(
            "only puppet:///modules/MODULE/PATH translates (a module's files/, in the module "
            "path); a Puppet server's files and other mount points have no translation"
        )
    if ".." in path.split("/"):
        raise ValueError("a path out of the module's files/ has no translation")
    dirs = [Path(d) for d in modulepath.split(":") if d]
    return _in_module(dirs, module, f"files/{path}".rstrip("/"))


def _in_module(dirs: list[Path], module: str, path: str) -> list[Path]:
    """Where Puppet looks for `path` of `module`: in the first directory holding the module;
    those before it, where it may appear, too."""
    found = []
    for directory in dirs:
        found.append(directory / module / path)
        if (directory / module).is_dir():
            break
    return found


def _failure(manifest: Manifest, output: str, code: int, last: Path | None) -> str:
    """Puppet's first error, as one line naming the file, line and column it gives: a
    template's own (an EPP syntax error's, an ERB template's `Filepath:` and `Line:`) rather
    than the call's, which follows as `(from FILE:LINE:COL)`. Without one (a Ruby syntax error
    in an ERB template ends Puppet 7 silently: see `_erb_syntax`), the file it read last
    (`last`). The names of the manifest and of `last` are found whole in Puppet's output,
    whatever they hold: a `, `, a `)` or a newline in one cut its place short before (the
    place `_WHERE` reads ends at the first of them; Puppet's lines are split at newlines)."""
    names = sorted({str(one) for one in (manifest.file, last) if one is not None}, key=len)
    # Each as a token of no `, `, `)` nor newline, its suffix kept (`.epp`: _is_template).
    tokens = {f"\0{n}\0{Path(name).suffix}": name for n, name in enumerate(reversed(names))}

    def real(text: str) -> str:
        for token, name in tokens.items():
            text = text.replace(token, name)
        return text

    for token, name in tokens.items():
        output = output.replace(name, token)
    return real(_said(manifest, output, code, last, real))


def _said(
    manifest: Manifest, output: str, code: int, last: Path | None, real: Callable[[str], str]
) -> str:
    """_failure's line, from an output whose own file names stand as tokens (`real`: the
    text with its names back)."""
    lines = [line for line in output.splitlines() if not line.startswith("Error: Facter:")]
    errors = _errors(lines)
    if not errors and (last is not None or not lines):
        return f"{last or manifest.label}: {SILENT.format(code=code)}"
    if not errors:
        tail = "\n".join(lines).strip()[-300:]
        return f"{manifest.label}: puppet exited with code {code}: {tail}"
    message = re.sub(r" on node \S+$", "", errors[0])
    message, template = _template_detail(message)
    wheres = [m for m in _WHERE.finditer(message) if m["file"] or m["line"]]
    place, line, col = manifest.label, None, None
    if wheres:
        where = wheres[-1]
        message = (message[: where.start()] + message[where.end() :]).strip()
        place, line, col = where["file"] or place, where["line"], where["col"]
        inner = wheres[-2] if len(wheres) > 1 else None
        if template is None and inner is not None and _is_template(inner["file"]):
            # An EPP template's error, then the call's place: the template's comes first.
            template = (inner["file"], inner["line"], inner["col"])
            message = (message[: inner.start()] + message[inner.end() :]).strip()
    if line is None and "end of input" in message:
        line = _last_line(manifest, real(where["file"]) if wheres and where["file"] else None)
    if template is not None:
        message += f" (from {_place(place, line, col)})"
        place, line, col = template
    return f"{_place(place, line, col)}: puppet: {message}"


_CODE = (".pp", ".erb", ".epp")  # what Puppet reads that may end a compile silently
# What a compile that ends silently says (Puppet 7 on a Ruby syntax error in an ERB template).
SILENT = "puppet exited with code {code}, saying nothing more, after reading it"


def _errors(lines: list[str]) -> list[str]:
    """Puppet's `Error:` messages, each with the lines that continue it (indented, as an ERB
    template's `Filepath:`, `Line:` and `Detail:`) joined to it by newlines."""
    errors: list[str] = []
    joined = True  # whether the line before is part of an error
    for line in lines:
        if line.startswith("Error: "):
            errors.append(line.removeprefix("Error: ").strip())
        elif errors and joined and line.startswith(" "):
            errors[-1] += "\n" + line.strip()
            continue
        joined = line.startswith("Error: ")
    return errors


Place = tuple[str, str | None, str | None]  # a file, its line and column if known

# An ERB template's error (Puppet's TemplateWrapper): "...Failed to parse template m/a.erb:",
# then its file, line and what Ruby said, each on a line of its own.
_TEMPLATE = re.compile(
    r":?\nFilepath: (?P<file>.+)\nLine: (?P<line>\d+)(?:\nDetail: (?P<detail>.*))?"
)


def _template_detail(message: str) -> tuple[str, Place | None]:
    """`message` on one line, and the template file and line it names (ERB), or None."""
    found = _TEMPLATE.search(message)
    if found is None:
        return " ".join(message.split("\n")), None
    detail = f": {found['detail']}" if found["detail"] else ""
    rest = message[found.end() :].replace("\n", " ")
    return f"{message[: found.start()]}{detail}{rest}", (found["file"], found["line"], None)


def _is_template(file: str | None) -> bool:
    return file is not None and file.endswith((".epp", ".erb"))


def _place(file: str, line: str | None, col: str | None) -> str:
    return file + (":" + line if line else "") + (":" + col if col else "")


# Compiles (never runs) an ERB template's Ruby as Puppet makes it (Puppet::Util.create_erb:
# trim_mode "-"; ERB#result evaluates it from line 0, its magic comment's); prints what Ruby
# says of a syntax error.
_ERB_CHECK = """
src = ERB.new(File.read(ARGV[0], encoding: "UTF-8"), trim_mode: "-").src
begin
  RubyVM::InstructionSequence.compile(src, ARGV[0], ARGV[0], 0)
rescue SyntaxError => e
  puts e.message
end
"""


async def _erb_syntax(template: Path) -> str | None:
    """`FILE:LINE: ruby: syntax error, ...` for an ERB template with a Ruby syntax error (which
    Puppet 7 does not report), found by compiling its Ruby as Puppet does; None if none is
    found (not an ERB template, no Ruby, another failure)."""
    ruby = shutil.which("ruby")
    if template.suffix != ".erb" or ruby is None:
        return None
    argv = [ruby, "-rerb", "-e", _ERB_CHECK, str(template)]
    try:
        _, out, _ = await run_command(argv, timeout=30, ok=None, label="ruby")
    except ResourceError:
        return None
    first = out.strip().split("\n", 1)[0]
    found = re.match(rf"{re.escape(str(template))}:(\d+): (.+)", first)
    return f"{template}:{found[1]}: ruby: {found[2]}" if found else None


def _last_line(manifest: Manifest, file: str | None) -> str | None:
    """The line "end of input" is on: the last one (of `file`, a module's manifest, if named)."""
    try:
        if file is not None:
            text: str | None = Path(file).read_text()
        else:
            text = manifest.code if manifest.file is None else manifest.file.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return str(max(1, len((text or "").rstrip("\n").split("\n"))))
