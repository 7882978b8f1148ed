"""Puppet catalogs, compiled by the real Puppet, translated into our graph (nothing applied).

One compile (a few seconds: facter) serves every test of the module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.graph import Graph
from mgmt.puppet.compile import MODULEPATH, CompileFailed, Manifest, compile_catalog
from mgmt.puppet.translate import translate
from mgmt.yamlgraph import GraphFileError
from tests.pysource import parse

pytestmark = pytest.mark.slow

MANIFEST = textwrap.dedent(
    """\
    define site::vhost($port) {
      file { "/srv/${title}.conf": content => "port ${port}\\n" }
      exec { "check-${title}": command => "/bin/true", refreshonly => true,
             subscribe => File["/srv/${title}.conf"] }
    }
    class base {
      file { '/srv': ensure => directory }
      package { 'puppet-agent': ensure => latest }
    }
    class app {
      site::vhost { 'a': port => 80 }
      site::vhost { 'b': port => 81 }
      service { 'nginx.service': ensure => stopped, enable => false }
    }
    include base
    include app
    Class['base'] -> Class['app']
    file { 'named': path => '/srv/named/', ensure => absent }
    file { '/srv/current': ensure => link, target => 'releases/42' }
    file { '/srv/old': ensure => '/srv/current', force => true }
    file { '/srv/tree': ensure => directory, source => 'file:///etc/skel', recurse => true,
           purge => true, force => true }
    exec { 'multi':
      command => ['/usr/bin/printf', '%s', 'x'], onlyif => ['test -d /srv', 'true'],
      unless => 'false', creates => ['/srv/m1', '/srv/m2'], environment => ['A=1'],
      path => ['/bin', '/usr/bin'], tries => 3, try_sleep => 2, timeout => 30, cwd => '/srv',
    }
    cron { 'weekly job': command => '/bin/true', special => 'weekly' }
    cron { 'months': command => '/bin/true', minute => 5, hour => '1-3', monthday => '*/2',
           month => ['jan', 'jul'] }
    cron { 'sundays': command => '/bin/true', minute => 0, weekday => ['sunday', 6] }
    cron { 'gone': ensure => absent }
    user { 'svcuser': uid => 4321, gid => 100, groups => ['adm'], home => '/srv/u' }
    user { 'olduser': ensure => absent, uid => 4323 }
    group { 'svcgroup': gid => 4322 }
    package { 'oldpkg': ensure => purged }
    package { 'pinned': ensure => '1.2-3' }
    notify { 'n': message => 'hi', noop => true }
    mount { '/mnt/scratch': ensure => mounted, device => 'tmpfs', fstype => 'tmpfs',
            options => 'size=16m,noatime', dump => 0, pass => 0 }
    mount { '/mnt/old': ensure => absent }
    host { 'db.example.net': ip => '10.0.0.9', host_aliases => ['db', 'pg'], comment => 'main',
           target => '/srv/hosts' }
    host { 'old.example.net': ensure => absent }
    """
)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("pp") / "site.pp"
    path.write_text(MANIFEST)
    return asyncio.run(compile_catalog(Manifest(file=path), "node1")).catalog


@pytest.fixture(scope="module")
def graph(catalog: Any) -> Graph:
    return translate(catalog, "site.pp").graph


def params(graph: Graph, kind: str, name: str) -> dict[str, Any]:
    res = graph.vertices[(kind, name)]
    return {k: v for k, v in vars(res).items() if not k.startswith("_") and v not in (None, [], {})}


def test_defines_and_classes_are_flattened_with_their_relationships(graph: Graph) -> None:
    keys = set(graph.vertices)
    edges = {(src, dst): edge for src, dst, edge in graph.edges()}
    assert {("file", "/srv/a.conf"), ("exec", "check-a"), ("exec", "check-b")} <= keys
    assert not [k for k in keys if k[0] in ("class", "stage") or "vhost" in k[1]]
    # subscribe: a notify edge; Class['base'] -> Class['app']: every pair of their resources.
    assert edges[("file", "/srv/a.conf"), ("exec", "check-a")].notify
    for src in (("file", "/srv/"), ("pkg", "puppet-agent")):
        for dst in (("file", "/srv/b.conf"), ("exec", "check-b"), ("svc", "nginx")):
            assert not edges[src, dst].notify


def test_file_translation(graph: Graph) -> None:
    assert params(graph, "file", "/srv/")["state"] == "exists"
    assert params(graph, "file", "/srv/named")["state"] == "absent"  # the path param, no slash
    link = graph.vertices[("file", "/srv/current")]
    assert (link.symlink, link.source, link.force) == (True, "releases/42", False)
    old = graph.vertices[("file", "/srv/old")]
    assert (old.symlink, old.source, old.force) == (True, "/srv/current", True)
    tree = params(graph, "file", "/srv/tree/")
    assert (tree["source"], tree["recurse"], tree["purge"], tree["force"]) == (
        "/etc/skel/",
        True,
        True,
        True,
    )


def test_exec_translation(graph: Graph) -> None:
    multi = graph.vertices[("exec", "multi")]
    assert (multi.cmd, multi.args, multi.shell) == ("/usr/bin/printf", ["%s", "x"], None)
    assert multi.ifcmd == (
        "(test -d /srv\n) && (true\n) && ! (false\n) && [ ! -e '/srv/m1' ] && [ ! -e '/srv/m2' ]"
    )
    assert multi.ifshell == "/bin/sh" and multi.cwd == "/srv" and multi.timeout == 30
    assert multi.env == {"PATH": "/bin:/usr/bin", "A": "1"}
    assert (multi.meta.retry, multi.meta.delay) == (2, 2000)
    check = graph.vertices[("exec", "check-a")]
    assert check.refreshonly and check.shell == "/bin/sh" and check.timeout == 300


def test_package_service_user_group_notify(graph: Graph) -> None:
    assert graph.vertices[("pkg", "puppet-agent")].state == "newest"
    assert graph.vertices[("pkg", "oldpkg")].state == "uninstalled"
    assert graph.vertices[("pkg", "pinned")].state == "1.2-3"
    nginx = graph.vertices[("svc", "nginx")]
    assert (nginx.state, nginx.startup) == ("stopped", "disabled")
    user = graph.vertices[("user", "svcuser")]
    assert (user.state, user.uid, user.gid, user.groups) == ("exists", 4321, 100, ["adm"])
    assert user.homedir == "/srv/u"
    old = graph.vertices[("user", "olduser")]
    assert (old.state, old.uid) == ("absent", None)  # Puppet ignores an absent user's uid
    assert graph.vertices[("group", "svcgroup")].gid == 4322
    note = graph.vertices[("msg", "n")]
    assert note.body == "hi" and note.meta.noop


def test_mount_translation(graph: Graph) -> None:
    scratch = graph.vertices[("mount", "/mnt/scratch")]
    assert (scratch.state, scratch.device, scratch.type) == ("exists", "tmpfs", "tmpfs")
    assert scratch.options == {"size": "16m", "noatime": ""}
    assert graph.vertices[("mount", "/mnt/old")].state == "absent"


def test_host_translation(graph: Graph) -> None:
    db = graph.vertices[("host", "db.example.net")]
    assert (db.state, db.ip, db.aliases, db.comment) == ("exists", "10.0.0.9", ["db", "pg"], "main")
    assert db.target == "/srv/hosts"
    assert graph.vertices[("host", "old.example.net")].state == "absent"


def test_cron_becomes_a_systemd_calendar(graph: Graph) -> None:
    weekly = graph.vertices[("cron", "puppet-weekly-job")]
    assert (weekly.trigger, weekly.time, weekly.cmd) == ("OnCalendar", "weekly", "/bin/true")
    months = graph.vertices[("cron", "puppet-months")]
    assert months.time == "*-01,07-01/2 01..03:05:00"
    assert graph.vertices[("cron", "puppet-sundays")].time == "Sun,Sat *-*-* *:00:00"
    assert graph.vertices[("cron", "puppet-gone")].state == "absent"


def test_purged_packages_warn(catalog: Any) -> None:
    warnings = translate(catalog, "site.pp").warnings
    assert any("Package[oldpkg]: purged" in w for w in warnings)


def test_every_untranslatable_resource_is_listed(catalog: Any) -> None:
    bad = dict(catalog)
    bad["resources"] = [
        *catalog["resources"],
        {"type": "Tidy", "title": "/t", "file": "/x.pp", "line": 3, "kind": "compilable_type"},
        {
            "type": "Service",
            "title": "s",
            "file": "/x.pp",
            "line": 4,
            "kind": "compilable_type",
            "parameters": {"restart": "/bin/x", "ensure": "running"},
        },
        {
            "type": "Cron",
            "title": "c",
            "file": "/x.pp",
            "line": 5,
            "kind": "compilable_type",
            "parameters": {"command": "/bin/true", "monthday": 1, "weekday": 1},
        },
    ]
    with pytest.raises(GraphFileError) as err:
        translate(bad, "site.pp")
    assert err.value.problems == [
        "/x.pp:3: Tidy[/t]: no translation for Puppet type Tidy",
        "/x.pp:4: Service[s]: no translation for param restart",
        "/x.pp:5: Cron[c]: monthday and weekday both set: cron runs when either matches, a "
        "systemd calendar only when both do",
    ]
    fallback = translate(bad, "site.pp", fallback=Path("/p")).graph
    tidy = fallback.vertices[("exec", "puppet resource Tidy[/t]")]
    assert (tidy.cmd, tidy.args[0], tidy.args[-2:]) == ("puppet", "resource", ["tidy", "/t"])
    # Plain text, and the settings and state of its own directory, not the host's.
    assert "--color=false" in tidy.args and tidy.args[2:4] == ["--vardir", "/p/vardir"]


def test_compile_errors_carry_puppets_message_and_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.pp"
    path.write_text("notify { 'x':\n  message => $undefined_function(),\n}\n")
    with pytest.raises(GraphFileError) as err:
        asyncio.run(compile_catalog(Manifest(file=path), "node1"))
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}:2:") and ": puppet: " in problem, problem


def test_every_compile_error_names_its_line(tmp_path: Path) -> None:
    """Puppet gives `(line: 1, column: 26)` without a file for inline code, and no line at all
    at the end of the input: both still become `FILE:LINE[:COL]: puppet: ...`."""
    path = tmp_path / "open.pp"
    path.write_text("notify { 'a': }\n\nfile { '/x':\n")
    cases = (
        (Manifest(file=path), f"{path}:3: puppet: ", "Syntax error at end of input"),
        (Manifest(code="notify { 'x': "), "<puppet -e>:1: puppet: ", "at end of input"),
        (Manifest(code="notify { 'x': message => }"), "<puppet -e>:1:26: puppet: ", "at '}'"),
    )
    for manifest, place, words in cases:
        with pytest.raises(GraphFileError) as err:
            asyncio.run(compile_catalog(manifest, "node1"))
        (problem,) = err.value.problems
        assert problem.startswith(place) and problem.endswith(words), problem


@pytest.mark.parametrize("name", ["a, b.pp", "c).pp", "d\ne.pp", "f (1).pp"])
def test_a_manifests_name_of_any_bytes_keeps_its_errors_place(tmp_path: Path, name: str) -> None:
    """ops lead 5: a manifest named with `, `, `)` or a newline lost its error's place:
    `/x/a, b.pp: puppet: ...` (no line), `/x/c: puppet: ... on File[/x].pp, line: 2)`, and a
    newline cut Puppet's line there (`(file: /x/d`). The name is found whole."""
    path = tmp_path / name
    path.write_text("notify { 'a': }\nnotify { 'x':\n  bogus => 1,\n}\n")
    with pytest.raises(GraphFileError) as err:
        asyncio.run(compile_catalog(Manifest(file=path), "node1"))
    (problem,) = err.value.problems
    shown = str(path).replace("\n", "\\n")  # (a newline is shown escaped: one line)
    assert problem.startswith(f"{shown}:2: puppet: "), problem
    assert "bogus" in problem and problem.endswith("on Notify[x]"), problem


def test_a_compile_names_the_module_files_it_read_or_looked_for(tmp_path: Path) -> None:
    """What the daemon watches: the manifest, the environment's hiera.yaml (beside it), each
    module manifest imported, each template
    (`template()`, `epp()`) found in the module path; after a refusal, the file the error
    names and where Puppet looked for a class or template it could not find."""
    mods = tmp_path / "mods"
    (mods / "web/manifests").mkdir(parents=True)
    (mods / "web/templates").mkdir()
    (mods / "web/manifests/init.pp").write_text(
        "class web {\n  include web::conf\n"
        "  notify { 'a': message => template('web/a.erb') }\n"
        "  notify { 'b': message => epp('web/b.epp') }\n"
        "  notify { 'f': message => file('web/f.txt') }\n}\n"
    )
    (mods / "web/manifests/conf.pp").write_text("class web::conf { notify { 'c': } }\n")
    (mods / "web/templates/a.erb").write_text("a <%= 1 %>")
    (mods / "web/templates/b.epp").write_text("b")
    (mods / "web/files").mkdir()
    (mods / "web/files/f.txt").write_text("f")  # file(): Puppet logs nothing naming it
    site = tmp_path / "site.pp"
    site.write_text("include web\n")
    path = f"{mods}:{MODULEPATH}"
    compiled = asyncio.run(compile_catalog(Manifest(file=site, modulepath=path), "node1"))
    web = mods / "web"
    hiera = tmp_path / "hiera.yaml"  # the environment's, when written (none yet)
    assert compiled.files == [
        site,
        hiera,
        web / "manifests/init.pp",
        web / "manifests/conf.pp",
        web / "templates/a.erb",
        web / "templates/b.epp",
    ]  # not web/files/f.txt (docs/puppet.md: what is not watched, and why)
    (mods / "web/manifests/conf.pp").write_text("class web::conf {\n  notify { 'c': }\n")
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=site, modulepath=path), "node1"))
    (problem,) = err.value.problems
    assert problem.startswith(f"{web}/manifests/conf.pp:2: puppet: Syntax error"), problem
    assert web / "manifests/conf.pp" in err.value.files
    (mods / "web/manifests/conf.pp").write_text("class web::conf { }\n")
    (mods / "web/templates/a.erb").write_text("<%= @x.y( %>")  # Puppet 7 exits, silent
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=site, modulepath=path), "node1"))
    (problem,) = err.value.problems
    said = "ruby: syntax error, unexpected ';', expecting ')'"  # Puppet 7 said nothing: Ruby
    assert problem.startswith(f"{web}/templates/a.erb:1: {said}"), problem
    site.write_text("include web::extra, db\n")
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=site, modulepath=path), "node1"))
    assert "Could not find class ::web::extra" in err.value.problems[0]
    assert err.value.files == [site, hiera, web / "manifests/init.pp", web / "manifests/extra.pp"]
    site.write_text("notify { 'x': message => epp('db/x.epp') }\n")
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=site, modulepath=path), "node1"))
    missing = [Path(d, "db/templates/x.epp") for d in path.split(":")]
    assert err.value.files == [site, hiera, *missing], err.value.problems


def test_every_ignored_param_is_in_the_docs() -> None:
    """docs/puppet.md: a param is translated, ignored for a reason the table gives, or an
    error. Each name `_ignore` drops is in the table, as `ignored: ... name`."""
    import ast

    from mgmt.puppet import translate as module

    tree = parse(Path(module.__file__))
    ignored = {
        arg.value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "_ignore"
        for arg in call.args[1:]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    } - {"name"}  # the namevar: the title, translated
    docs = (Path(__file__).parents[2] / "docs/puppet.md").read_text()
    rows = [line for line in docs.splitlines() if line.startswith("| `") and "ignored" in line]
    missing = {
        n for n in ignored if not any(f"`{n}`" in row.split("ignored", 1)[1] for row in rows)
    }
    assert ignored and not missing, missing
    # The metaparams every type ignores: in the paragraph after the table, with why.
    (meta,) = [p for p in docs.split("\n\n") if p.startswith("Every resource accepts `noop`")]
    assert not [n for n in module.IGNORED_META if f"`{n}` (" not in meta], meta


def test_allowdupe_false_allows_no_duplicate() -> None:
    user = {"type": "User", "title": "u", "kind": "compilable_type"}
    for value, allowed in ((False, False), ("true", True)):
        catalog = {"resources": [{**user, "parameters": {"allowdupe": value, "uid": 5}}]}
        res = translate(catalog, "site.pp").graph.vertices[("user", "u")]
        assert bool(res.allowduplicateuid) is allowed


async def test_an_unexpected_error_of_a_recompile_keeps_the_graph_and_the_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recompile that fails in a way the front-end did not foresee (a bug some catalog
    meets: here made to happen by a resource titled BOOM) is one line and the source's
    problem; the next edit is compiled again and its catalog yielded (the loop ended with
    "task puppet recompile failed": the manifest was never read again)."""
    import mgmt.puppet.source
    from mgmt.puppet.source import PuppetSource

    real = mgmt.puppet.source.translate

    def translate(catalog: Any, label: str, **kwargs: Any) -> Any:
        if any(r["title"] == "BOOM" for r in catalog["resources"]):
            raise RuntimeError("the translator met a bug")
        return real(catalog, label, **kwargs)

    monkeypatch.setattr(mgmt.puppet.source, "translate", translate)
    caplog.set_level(logging.INFO, "puppet")
    pp = tmp_path / "site.pp"
    pp.write_text("notify { 'one': }\n")
    source = await PuppetSource.open(Manifest(file=pp), hostname="node1", fallback=None)
    reported = asyncio.Event()
    source.on_problem = lambda problem: reported.set()
    try:
        pp.write_text("notify { 'BOOM': }\n")
        async with asyncio.timeout(120):
            await reported.wait()
        line = f"compiling {pp} failed unexpectedly: RuntimeError: the translator met a bug"
        assert source.problem == line
        assert line in caplog.text and "Traceback" not in caplog.text, caplog.text
        pp.write_text("notify { 'two': }\n")
        async with asyncio.timeout(120):
            loaded = await anext(aiter(source))
        assert ("msg", "two") in loaded.graph and source.problem == ""
    finally:
        await source.aclose()


async def test_hiera_data_a_compile_used_or_looked_for_is_watched(tmp_path: Path) -> None:
    """A module's Hiera data (its hiera.yaml, the data files of its hierarchy, as Hiera's
    explanation of each lookup names them in Puppet's debug output): an edit of a data file
    compiles again, and so does writing the file a lookup looked for and did not find (a
    node's own data). Before 2026-12-05 only SIGHUP did."""
    from mgmt.puppet.source import PuppetSource

    module = tmp_path / "modules" / "web"
    (module / "manifests").mkdir(parents=True)
    (module / "data").mkdir()
    (module / "manifests" / "init.pp").write_text(
        "class web($greeting) {\n"
        "  notify { 'g': message => \"${greeting} ${lookup('web::name')}\" }\n"
        "}\n"
    )
    (module / "hiera.yaml").write_text(
        "version: 5\nhierarchy:\n"
        "  - {name: node, path: 'nodes/%{trusted.certname}.yaml'}\n"
        "  - {name: common, path: common.yaml}\n"
    )
    common = module / "data" / "common.yaml"
    common.write_text("web::greeting: hello\nweb::name: world\n")
    pp = tmp_path / "site.pp"
    pp.write_text("include web\n")
    manifest = Manifest(file=pp, modulepath=f"{tmp_path / 'modules'}:{MODULEPATH}")
    source = await PuppetSource.open(manifest, hostname="node1", fallback=None)
    graphs = aiter(source)

    async def message() -> str:
        async with asyncio.timeout(120):
            loaded = await anext(graphs)
        return str(loaded.graph.vertices[("msg", "g")].body)  # type: ignore[attr-defined]

    try:
        assert source.first is not None
        assert source.first.graph.vertices[("msg", "g")].body == "hello world"  # type: ignore[attr-defined]
        renamed = common.with_suffix(".new")
        renamed.write_text("web::greeting: hi\nweb::name: world\n")
        renamed.rename(common)
        assert await message() == "hi world"
        (module / "data" / "nodes").mkdir()  # where the node's own data was looked for
        node = module / "data" / "nodes" / "node1.yaml"
        node.write_text("web::name: node one\n")
        assert await message() == "hi node one"
    finally:
        await source.aclose()


def test_a_manifest_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Puppet read a FIFO at the manifest's name until the compile's timeout (300 s)."""
    import os

    fifo = tmp_path / "site.pp"
    os.mkfifo(fifo)
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=fifo), "node1", timeout=60))
    assert err.value.problems == [f"{fifo}: cannot read: not a regular file"]
    assert err.value.files == [fifo]  # watched: a file written there is compiled


def test_a_manifest_past_the_size_limit_is_refused_before_puppet_reads_it(tmp_path: Path) -> None:
    """Puppet compiled 17 MiB of comments with 760 MB of memory: a manifest (a file, or `-e`
    code) is bounded as a graph file is (--max-graph-size), one line naming it."""
    path = tmp_path / "big.pp"
    path.write_text("# " + "x" * 200 + "\n")
    for manifest, label in (
        (Manifest(file=path, max_size=100), str(path)),
        (Manifest(code="#" * 101, max_size=100), "<puppet -e>"),
    ):
        with pytest.raises(CompileFailed) as err:
            asyncio.run(compile_catalog(manifest, "node1"))
        assert err.value.problems == [
            f"{label}:1: the manifest is larger than 100 bytes "
            "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
        ]
    compiled = asyncio.run(compile_catalog(Manifest(file=path, max_size=203), "node1"))
    assert compiled.catalog["resources"]  # at the limit: compiled (Class[main]...)


def test_a_silent_failure_names_the_manifest_not_hieras_file(tmp_path: Path) -> None:
    """Puppet ends silently on a stack overflow (nesting 5,000 deep): the refusal named the
    last file the compile read, Hiera's hiera.yaml (which does not exist), not the manifest."""
    path = tmp_path / "deep.pp"
    path.write_text("$x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(CompileFailed) as err:
        asyncio.run(compile_catalog(Manifest(file=path), "node1"))
    assert err.value.problems == [
        f"{path}: puppet exited with code 1, saying nothing more, after reading it"
    ]


HIERARCHY = (
    "version: 5\ndefaults: {datadir: data, data_hash: yaml_data}\nhierarchy:\n"
    "  - {name: node, path: 'nodes/%{trusted.certname}.yaml'}\n"
    "  - {name: common, path: common.yaml}\n"
)


async def test_hiera_data_of_the_environment_and_the_global_layer_is_read_and_watched(
    tmp_path: Path,
) -> None:
    """Hiera's three layers, as Puppet has them: the global hiera.yaml (`--hiera-config`),
    the environment's (a control repository: `ENV/hiera.yaml`, `ENV/data/`, its manifest in
    `ENV/manifests/`, its modules in `ENV/modules/`: found by default) and each module's. The
    node's own data is read (trusted.certname: the node's name) and watched, what was looked
    for and not found too; before 2026-12-05 only a module's data was read: every other
    lookup silently took its default."""
    from mgmt.puppet.source import PuppetSource

    env = tmp_path / "control"
    (env / "manifests").mkdir(parents=True)
    (env / "data").mkdir()
    (env / "modules" / "app" / "manifests").mkdir(parents=True)
    (env / "modules" / "app" / "manifests" / "init.pp").write_text(
        "class app($port = 1) { notify { 'port': message => \"${port}\" } }\n"
    )
    (env / "hiera.yaml").write_text(HIERARCHY)
    (env / "data" / "common.yaml").write_text("motd: common\napp::port: 80\n")
    glob = tmp_path / "global"
    (glob / "data").mkdir(parents=True)
    (glob / "hiera.yaml").write_text(HIERARCHY)
    (glob / "data" / "common.yaml").write_text("banner: global\n")
    pp = env / "manifests" / "site.pp"
    pp.write_text(
        "notify { 'motd': message => lookup('motd', String, 'first', 'default') }\n"
        "notify { 'banner': message => lookup('banner', String, 'first', 'default') }\n"
        "include app\n"
    )
    manifest = Manifest(file=pp, hiera_config=glob / "hiera.yaml")
    source = await PuppetSource.open(manifest, hostname="node1", fallback=None)
    graphs = aiter(source)

    def messages(loaded: Any) -> tuple[str, ...]:
        vertices = loaded.graph.vertices
        return tuple(str(vertices[("msg", n)].body) for n in ("motd", "banner", "port"))

    async def changed() -> tuple[str, ...]:
        async with asyncio.timeout(120):
            return messages(await anext(graphs))

    try:
        assert messages(source.first) == ("common", "global", "80")
        (env / "data" / "nodes").mkdir()  # looked for, not found: written, compiled again
        (env / "data" / "nodes" / "node1.yaml").write_text("motd: node one\napp::port: 81\n")
        assert await changed() == ("node one", "global", "81")
        (glob / "data" / "common.yaml").write_text("banner: edited\n")
        assert await changed() == ("node one", "edited", "81")
    finally:
        await source.aclose()


async def test_a_hiera_yaml_written_beside_the_manifest_makes_its_directory_the_environment(
    tmp_path: Path,
) -> None:
    from mgmt.puppet.source import PuppetSource

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "common.yaml").write_text("motd: common\n")
    pp = tmp_path / "site.pp"
    pp.write_text("notify { 'motd': message => lookup('motd', String, 'first', 'default') }\n")
    source = await PuppetSource.open(Manifest(file=pp), hostname="node1", fallback=None)
    try:
        assert source.first is not None
        assert source.first.graph.vertices[("msg", "motd")].body == "default"  # type: ignore[attr-defined]
        (tmp_path / "hiera.yaml").write_text(HIERARCHY)
        async with asyncio.timeout(120):
            loaded = await anext(aiter(source))
        assert loaded.graph.vertices[("msg", "motd")].body == "common"  # type: ignore[attr-defined]
    finally:
        await source.aclose()


def test_a_hiera_yaml_in_a_directory_others_may_write_to_is_not_read(tmp_path: Path) -> None:
    """A hiera.yaml planted in a shared directory (/tmp) must not configure the manifest
    there: it is named in a warning, and read only if named (`--puppet-environment`)."""
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    shared.chmod(0o1777)
    (shared / "hiera.yaml").write_text(HIERARCHY)
    (shared / "data" / "common.yaml").write_text("motd: planted\n")
    pp = shared / "site.pp"
    pp.write_text("notify { 'motd': message => lookup('motd', String, 'first', 'default') }\n")
    compiled = asyncio.run(compile_catalog(Manifest(file=pp), "node1"))
    titles = {r["title"] for r in compiled.catalog["resources"]}
    assert "motd" in titles
    [motd] = [r for r in compiled.catalog["resources"] if r["title"] == "motd"]
    assert motd["parameters"]["message"] == "default"
    assert compiled.warnings == [
        f"{shared / 'hiera.yaml'}: not used: others may write to {shared} "
        "(name it with --puppet-environment to use it)"
    ]
    named = Manifest(file=pp, environment=shared)
    compiled = asyncio.run(compile_catalog(named, "node1"))
    [motd] = [r for r in compiled.catalog["resources"] if r["title"] == "motd"]
    assert motd["parameters"]["message"] == "planted" and compiled.warnings == []


def test_a_named_hiera_config_or_environment_that_is_missing_is_refused(tmp_path: Path) -> None:
    """Puppet takes a missing hiera.yaml (or environment) as none: every lookup would take
    its default, the wrong configuration applied without a word."""
    pp = tmp_path / "site.pp"
    pp.write_text("notify { 'n': }\n")
    for manifest, problem in (
        (
            Manifest(file=pp, hiera_config=tmp_path / "hiera.yaml"),
            f"{tmp_path / 'hiera.yaml'} (--hiera-config): cannot read: No such file or directory",
        ),
        (
            Manifest(file=pp, environment=pp),
            f"{pp} (--puppet-environment): cannot read: not a directory",
        ),
    ):
        with pytest.raises(CompileFailed) as err:
            asyncio.run(compile_catalog(manifest, "node1"))
        assert err.value.problems == [problem]


async def test_a_bad_edit_undone_says_the_running_catalog_runs_on(tmp_path: Path) -> None:
    """The log said why a bad edit was refused, then nothing once it was undone (only
    `mgmt status` cleared); and a refusal compiled twice (an editor's two writes) was said
    twice. As the language's source does, the undo is one line now."""
    from mgmt.puppet.source import PuppetSource

    records: list[logging.LogRecord] = []
    logged = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            logged.set()

    async def said(message: str, count: int = 1) -> list[int]:
        """The levels of the lines saying `message`, once there are `count`."""
        async with asyncio.timeout(120):
            while len(found := [r for r in records if r.getMessage() == message]) < count:
                logged.clear()
                await logged.wait()
        return [r.levelno for r in found]

    handler = Handler(logging.DEBUG)
    puppet = logging.getLogger("puppet")
    puppet.addHandler(handler)
    level = puppet.level
    puppet.setLevel(logging.DEBUG)
    pp = tmp_path / "site.pp"
    good = "notify { 'one': }\n"
    pp.write_text(good)
    source = await PuppetSource.open(Manifest(file=pp), hostname="node1", fallback=None)
    try:
        pp.write_text("notify { 'one': \n")
        await said("keeping the running graph")
        source.reload()  # compiled again (an editor's second write): the same refusal
        assert await said("keeping the running graph", 2) == [logging.ERROR, logging.DEBUG]
        assert "Syntax error at end of input" in source.problem, source.problem
        pp.write_text(good)
        undone = "the manifest compiles to the running catalog again: nothing to swap"
        assert await said(undone) == [logging.INFO]
        assert source.problem == "" and source.graphs == 1
    finally:
        await source.aclose()
        puppet.removeHandler(handler)
        puppet.setLevel(level)


def test_a_compile_sweeps_the_directories_of_killed_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed agent's compile leaves its directory (a locked temporary prefix) in $TMPDIR.
    Until 2026-12-07 (leaks review) only the next `--tmp-prefix` run swept it, which an agent
    run as a service (`--prefix`) never is: the next compile, of any agent of this user, sweeps
    them now. Its own directory is swept by nobody meanwhile; a killed compile's here is a real
    prefix whose lock nobody holds any more."""
    from mgmt.tmpprefix import TmpPrefix

    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(tmp))
    killed = TmpPrefix(swept=False)
    (killed.path / "vardir").mkdir()
    os.close(killed._lock)  # its holder is gone: its lock with it
    assert killed.path.parent == tmp
    path = tmp_path / "site.pp"
    path.write_text("notify { 'hi': }\n")
    asyncio.run(compile_catalog(Manifest(file=path), "node1"))
    assert sorted(tmp.iterdir()) == []
