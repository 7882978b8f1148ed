"""The Puppet front-end end to end: the real Puppet compiles, the real `mgmt` runs the catalog.

The manifest of every type (services, cron jobs, users and groups) is run in
tests/e2e/test_puppet_host_e2e.py: it changes this machine's users (the host lock), and the
tests of a file that takes it all run on one worker (docs/testing.md). Each Puppet compile
takes a few seconds (facter), so the tests share manifests where they can.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, Daemon, has_content, run_mgmt, run_once, wait_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def test_an_edited_manifest_is_swapped_in_and_a_bad_edit_keeps_the_graph(
    tmp_path: Path,
) -> None:
    pp = tmp_path / "site.pp"
    out = tmp_path / "out"
    pp.write_text(f"file {{ '{out}': content => \"one\\n\" }}\n")
    prefix = tmp_path / "prefix"
    async with Daemon(["run", "--prefix", str(prefix), "puppet", str(pp)]) as daemon:
        await wait_path(out, has_content("one\n"), timeout=60)
        pp.write_text(f"file {{ '{out}': content => \"two\\n\" }}\n")
        await wait_path(out, has_content("two\n"), timeout=60)
        pp.write_text(f"file {{ '{out}': content => \"three\\n\" \n")
        await daemon.wait_log("keeping the running graph", timeout=60)
        assert "Syntax error" in daemon.log
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 1 and "program error: " in text, text  # not what it was asked to run
        out.unlink()  # still enforced
        await wait_path(out, has_content("two\n"))
        # A deleted manifest is a program error (Puppet compiled it as an empty catalog: its
        # resources left the graph), and one created again is read at its writer's close.
        pp.unlink()
        await daemon.wait_log("site.pp: cannot read: No such file or directory", timeout=60)
        with pp.open("w") as writer:  # empty until written
            out.unlink()  # the daemon has seen the creation once this is repaired
            await wait_path(out, has_content("two\n"))
            writer.write(f"file {{ '{out}': content => \"four\\n\" }}\n")
        await wait_path(out, has_content("four\n"), timeout=60)
        assert "1 stopped, 0 started" not in daemon.log, daemon.log
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_an_edited_module_or_template_is_swapped_in_as_the_manifest_is(
    tmp_path: Path,
) -> None:
    """A module's manifest (`--modulepath`) and the templates it uses (`template()`, `epp()`)
    are watched as site.pp is: an edit compiles again and swaps; a bad one is refused with its
    file and line, the running graph kept; a class a refused edit looked for compiles again
    once written."""
    t = tmp_path
    web = t / "mods/web"
    (web / "manifests").mkdir(parents=True)
    (web / "templates").mkdir()
    (web / "manifests/init.pp").write_text(
        "class web {\n  include web::conf\n"
        f"  file {{ '{t}/a': content => template('web/a.erb') }}\n"
        f"  file {{ '{t}/b': content => epp('web/b.epp') }}\n}}\n"
    )
    conf = web / "manifests/conf.pp"
    conf.write_text(f"class web::conf {{ file {{ '{t}/c': content => 'c1' }} }}\n")
    (web / "templates/a.erb").write_text("a1")
    (web / "templates/b.epp").write_text("b1")
    pp = t / "site.pp"
    pp.write_text("include web\n")
    prefix = t / "prefix"
    args = ["run", "--prefix", str(prefix), "--modulepath", str(t / "mods"), "puppet", str(pp)]
    async with Daemon(args) as daemon:
        await wait_path(t / "c", has_content("c1"), timeout=60)
        (web / "templates/a.erb").write_text("a2")
        await wait_path(t / "a", has_content("a2"), timeout=60)
        (web / "templates/b.epp").write_text("b2")
        await wait_path(t / "b", has_content("b2"), timeout=60)
        conf.write_text(f"class web::conf {{ file {{ '{t}/c': content => 'c2' }} }}\n")
        await wait_path(t / "c", has_content("c2"), timeout=60)
        conf.write_text(f"class web::conf {{\n  file {{ '{t}/c': content => 'c3' }}\n")
        await daemon.wait_log("keeping the running graph", timeout=60)
        assert f"{conf}:2: puppet: Syntax error at end of input" in daemon.log
        (t / "c").unlink()  # still enforced
        await wait_path(t / "c", has_content("c2"))
        conf.write_text(f"class web::conf {{ file {{ '{t}/c': content => 'c3' }} }}\n")
        await wait_path(t / "c", has_content("c3"), timeout=60)
        pp.write_text("include web, db\n")  # no module db yet: refused, and looked for
        await daemon.wait_log("Could not find class ::db", timeout=60)
        (t / "mods/db/manifests").mkdir(parents=True)
        (t / "mods/db/manifests/init.pp").write_text(
            f"class db {{ file {{ '{t}/d': content => 'd' }} }}\n"
        )
        await wait_path(t / "d", has_content("d"), timeout=60)
        code, text = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0, text
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_the_modules_of_inline_code_are_watched_too(tmp_path: Path) -> None:
    t = tmp_path
    (t / "mods/m/manifests").mkdir(parents=True)
    init = t / "mods/m/manifests/init.pp"
    init.write_text(f"class m {{ file {{ '{t}/out': content => 'one' }} }}\n")
    args = ["run", "--tmp-prefix", "--modulepath", str(t / "mods"), "puppet", "-e", "include m"]
    async with Daemon(args) as daemon:
        await wait_path(t / "out", has_content("one"), timeout=60)
        init.write_text(f"class m {{ file {{ '{t}/out': content => 'two' }} }}\n")
        await wait_path(t / "out", has_content("two"), timeout=60)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_a_bad_manifest_fails_with_puppets_message_and_changes_nothing(tmp_path: Path) -> None:
    pp = tmp_path / "bad.pp"
    pp.write_text(f"file {{ '{tmp_path}/x': content => 'x' }}\nnotify {{ 'n': message => }}\n")
    code, out = run_once("puppet", pp)
    assert code == 2, out
    errors = [line for line in out.splitlines() if "Syntax error" in line]
    assert len(errors) == 1 and f"{pp}:2:" in errors[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("template", "text", "said"),
    [
        # Puppet 7 ends silently on a Ruby syntax error: Ruby itself names the line.
        ("a.erb", "one\n<% if @x %>\n<% end end %>\n", ":3: ruby: syntax error, unexpected"),
        ("a.erb", "one\n\n<%= @x.nosuch %>\n", ":3: puppet: Evaluation Error: "),
        ("a.epp", "one\n<% if $x { %>\n<% } } %>\n", ":3:6: puppet: Evaluation Error: "),
    ],
    ids=["erb-syntax", "erb-runtime", "epp-syntax"],
)
def test_a_bad_template_is_refused_at_its_own_line(
    tmp_path: Path, template: str, text: str, said: str
) -> None:
    """leftovers5 4: an error in a template named the manifest's call (EPP, an ERB runtime
    error) or no line at all (an ERB syntax error): now the template's file and line, the call
    after it; exit 2, nothing applied, through `mgmt run` and `mgmt check` alike."""
    templates = tmp_path / "mods/web/templates"
    templates.mkdir(parents=True)
    (templates / template).write_text(text)
    call = "template('web/a.erb')" if template.endswith(".erb") else "epp('web/a.epp', {x => 1})"
    pp = tmp_path / "site.pp"
    pp.write_text(f"$x = true\nfile {{ '{tmp_path}/out': content => {call} }}\n")
    mods = ["--modulepath", str(tmp_path / "mods")]
    for argv in (["run", "--tmp-prefix", "--converged-timeout=0"], ["check"]):
        code, out = run_mgmt([*argv, *mods, "puppet", str(pp)])
        assert code == 2, out
        (line,) = [line for line in out.splitlines() if str(templates) in line]
        assert f"{templates / template}{said}" in line, out
        assert "ruby:" in said or f"(from {pp}:2:" in line, out
        assert "Traceback" not in out and not (tmp_path / "out").exists()


def test_types_without_a_translation_are_listed_or_run_through_puppet_resource(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "core.1").write_text("x")
    code = (
        f"tidy {{ '{old}': age => '0', recurse => true, matches => 'core.*' }}\n"
        "package { 'puppet-agent': ensure => installed, install_options => ['--x'] }\n"
    )
    status, out = run_mgmt(["check", "-e", code])
    assert status == 2, out
    assert f"<puppet -e>:1: Tidy[{old}]: no translation for Puppet type Tidy" in out
    assert "<puppet -e>:2: Package[puppet-agent]: no translation for param install_options" in out
    # `mgmt check` takes the fallback as `mgmt run` does, and applies nothing.
    status, out = run_mgmt(["check", "--puppet-fallback", "-e", code.splitlines()[0]], 120)
    assert status == 0, out
    assert "runs through `puppet resource` (--puppet-fallback)" in out
    assert (old / "core.1").exists()
    # With the fallback, `puppet resource` itself applies the tidy: its output plain text,
    # its settings and state in the agent's prefix (not the host's /var/cache/puppet).
    prefix = tmp_path / "prefix"
    status, out = run_mgmt(
        [
            "run",
            "--prefix",
            str(prefix),
            "--converged-timeout",
            "0",
            "--puppet-fallback",
            "puppet",
            "-e",
            code.splitlines()[0],
        ],
        120,
    )
    assert status == 0, out
    assert not (old / "core.1").exists()
    assert "\x1b" not in out and "Notice: " in out, out
    assert (prefix / "puppet/vardir/state/state.yaml").exists()


def test_the_example_manifest_converges(tmp_path: Path) -> None:
    example = (ROOT / "examples/puppet.pp").read_text()
    pp = tmp_path / "puppet.pp"
    pp.write_text(example.replace("/tmp/mgmt", str(tmp_path)))
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert (tmp_path / "puppet/motd").read_text().startswith("managed by Puppet code")
    assert (tmp_path / "puppet/motd.log").exists()  # created, so the exec was refreshed


def test_a_numeric_mode_gives_directories_the_search_bit_as_puppet_does(tmp_path: Path) -> None:
    """Puppet adds `x` wherever a numeric mode has `r` on a directory: `0644` is 0755 there
    (`X` where the tree may hold files too), else nobody can enter the directory."""
    t = tmp_path
    (t / "tree").mkdir()
    (t / "loose").mkdir()
    (t / "there").mkdir()
    pp = t / "modes.pp"
    pp.write_text(
        f"file {{ '{t}/d': ensure => directory, mode => '0644' }}\n"
        f"file {{ '{t}/tree': ensure => directory, recurse => true, mode => '0640' }}\n"
        f"file {{ '{t}/f': ensure => file, content => 'x', mode => '0644' }}\n"
        # No ensure, or present: whatever exists (here a directory) is managed.
        f"file {{ '{t}/loose': mode => '0604' }}\n"
        f"file {{ '{t}/there': ensure => present, mode => '0640' }}\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 0, out
    modes = {
        name: (t / name).stat().st_mode & 0o7777 for name in ("d", "tree", "f", "loose", "there")
    }
    assert modes == {"d": 0o755, "tree": 0o750, "f": 0o644, "loose": 0o705, "there": 0o750}


def test_onlyif_and_unless_may_end_with_a_comment(tmp_path: Path) -> None:
    """`onlyif => 'test -d /tmp # the tmp dir'` runs through /bin/sh in Puppet: the comment
    must not swallow the guard's closing parenthesis (the exec then never ran, silently)."""
    t = tmp_path
    pp = t / "guards.pp"
    pp.write_text(
        f"exec {{ 'yes': command => 'touch {t}/yes', path => ['/usr/bin', '/bin'],\n"
        "  onlyif => ['test -d /tmp # the tmp dir', 'true'], unless => 'false # never' }\n"
        f"exec {{ 'no': command => 'touch {t}/no', path => ['/usr/bin', '/bin'],\n"
        "  unless => 'true # always' }\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert (t / "yes").exists() and not (t / "no").exists(), out


def test_a_file_without_ensure_is_left_missing_as_puppet_does(tmp_path: Path) -> None:
    """No `ensure`, no `content` or `source`: Puppet manages only what exists (the real
    `puppet apply` leaves `missing` absent); relationships through it still order the rest."""
    t = tmp_path
    (t / "there").write_text("x")
    pp = t / "loose.pp"
    pp.write_text(
        f"file {{ '{t}/missing': mode => '0600' }}\n"
        f"file {{ '{t}/there': mode => '0600' }}\n"
        f"file {{ '{t}/made': content => 'y' }}\n"
        f"exec {{ 'after': command => '/bin/touch {t}/after', require => File['{t}/missing'] }}\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert not (t / "missing").exists(), out
    assert (t / "there").stat().st_mode & 0o7777 == 0o600
    assert (t / "made").read_text() == "y" and (t / "after").exists()


def test_resource_defaults_apply_as_puppet_applies_them(tmp_path: Path) -> None:
    """`File { mode => ..., owner => ... }` gives every file its attributes: Puppet (the real
    `puppet apply` does so) sets a link's owner on the link itself and ignores its mode, and
    only removes an absent path. `links => manage` is Puppet's default, and ours."""
    t = tmp_path
    (t / "gone").write_text("x")
    pp = t / "defaults.pp"
    pp.write_text(
        "File { mode => '0600', owner => 'nobody', group => 'nogroup', links => manage }\n"
        f"file {{ '{t}/f': ensure => file, content => 'x', owner => 'root', group => 'root' }}\n"
        f"file {{ '{t}/link': ensure => link, target => '{t}/f' }}\n"
        f"file {{ '{t}/gone': ensure => absent }}\n"
    )
    code, out = run_mgmt(["check", str(pp)])
    assert code == 0, out
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert (t / "f").stat().st_mode & 0o7777 == 0o600
    link = (t / "link").lstat()
    assert os.readlink(t / "link") == f"{t}/f" and pwd.getpwuid(link.st_uid).pw_name == "nobody"
    assert not (t / "gone").exists()
    code, out = run_mgmt(["check", "-e", f"file {{ '{t}/f': content => 'x', links => follow }}"])
    assert code == 2 and "links => 'follow' has no translation" in out, out
    code, out = run_mgmt(["check", "-e", "notify { 'n': schedule => daily, tag => 't' }"])
    assert code == 2 and "schedule => 'daily' has no translation: a Puppet schedule" in out, out


def test_check_graph_prints_a_manifests_translated_catalog(tmp_path: Path) -> None:
    t = tmp_path
    pp = t / "site.pp"
    pp.write_text(
        f"file {{ '{t}/d': ensure => directory }}\n"
        f"file {{ '{t}/d/f': content => 'x', notify => Exec['seen'] }}\n"
        "exec { 'seen': command => '/bin/true', refreshonly => true }\n"
    )
    code, out = run_mgmt(["check", "--graph", str(pp)])
    assert code == 0, out
    lines = out.splitlines()
    for line in (
        f"Vertex: file[{t}/d/]",
        f"Vertex: file[{t}/d/f]",
        "Vertex: exec[seen]",
        f"Edge: file[{t}/d/f] -> exec[seen] # notify",
        f"Edge: file[{t}/d/] -> file[{t}/d/f] # autoedge",
        f"{pp}: ok",
    ):
        assert line in lines, out
    assert not (t / "d").exists()  # nothing applied
    code, out = run_mgmt(["check", "--graph", "-e", f"tidy {{ '{t}': }}"])
    assert code == 2 and "no translation for Puppet type Tidy" in out, out


def test_a_cycle_of_relationships_is_refused_by_check_at_its_resources(tmp_path: Path) -> None:
    """`mgmt check` refuses what `mgmt run` refuses: a cycle, named with where each of its
    relationships was written (the catalog gives lines, not columns), exit 2."""
    pp = tmp_path / "cyc.pp"
    pp.write_text(
        "notify { 'a': require => Notify['b'] }\nnotify { 'b': require => Notify['a'] }\n"
    )
    refused = f"{pp}:1: cycle: msg[a] -> msg[b] -> msg[a] (edges at {pp}:2, {pp}:1)"
    for args in (["check", str(pp)], ["check", "--graph", str(pp)]):
        code, out = run_mgmt(args)
        assert (code, out.strip()) == (2, refused)
    code, out = run_once("puppet", pp)
    assert code == 2 and refused in out, out


def test_a_symlink_at_a_file_is_replaced_or_kept_as_puppet_does(tmp_path: Path) -> None:
    """The real `puppet apply` (links => manage, its default) replaces a symlink at the path
    without force where it makes a file (`ensure => file`, or `content` and no ensure) or a
    directory, never opening the link's target; `ensure => present` keeps the link (its owner
    is the link's own, its content not synced); a real directory is replaced only with force."""
    t = tmp_path
    (t / "tf").write_text("target\n")
    (t / "td").mkdir()
    for name, to in (("a", "tf"), ("b", "td"), ("c", "tf"), ("d", "tf"), ("e", "td")):
        (t / name).symlink_to(to)
    (t / "dir").mkdir()
    pp = t / "links.pp"
    pp.write_text(
        f"file {{ '{t}/a': ensure => file, content => 'a' }}\n"
        f"file {{ '{t}/b': ensure => file, content => 'b', links => manage }}\n"
        f"file {{ '{t}/c': ensure => directory }}\n"
        f"file {{ '{t}/d': content => 'd' }}\n"
        f"file {{ '{t}/e': ensure => present, owner => 'nobody', mode => '0600' }}\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert [(t / n).read_text() for n in "abd"] == ["a", "b", "d"], out
    assert not any((t / n).is_symlink() for n in "abcd") and (t / "c").is_dir()
    assert (
        os.readlink(t / "e") == "td" and pwd.getpwuid((t / "e").lstat().st_uid).pw_name == "nobody"
    )
    assert (t / "tf").read_text() == "target\n" and not list((t / "td").iterdir())
    assert (t / "td").stat().st_mode & 0o7777 == 0o755
    code, out = run_mgmt(
        [
            "run",
            "--tmp-prefix",
            "--converged-timeout",
            "0",
            "puppet",
            "-e",
            f"file {{ '{t}/dir': ensure => file, content => 'x' }}",
        ]
    )
    assert code == 1 and f"{t}/dir is a directory, expected a file: set force" in out, out
    assert (t / "dir").is_dir()


def test_a_number_param_that_is_no_number_is_refused_with_its_line(tmp_path: Path) -> None:
    """Before 2026-12-05 `tries => 'abc'` ended `mgmt run` with a ValueError's traceback."""
    code = (
        f"file {{ '{tmp_path}/x': content => 'x' }}\n"
        "exec { 'e': command => '/bin/true', tries => 'abc', timeout => 'nan' }\n"
        "user { 'u': uid => 'x1' }\n"
    )
    status, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout", "0", "puppet", "-e", code]
    )
    assert status == 2, out
    assert "<puppet -e>:2: Exec[e]: timeout => 'nan': expected a number" in out, out
    assert "<puppet -e>:3: User[u]: uid => 'x1': expected a number" in out, out
    assert "Traceback" not in out and not (tmp_path / "x").exists()


def test_hiera_node_data_beside_the_manifest_and_a_global_hiera_config_are_used(
    tmp_path: Path,
) -> None:
    """tester7's #2: an environment's hiera.yaml (beside the manifest) with node data, and a
    global one (`--hiera-config`); before 2026-12-05 both were ignored, the lookups took
    their defaults."""
    t = tmp_path
    (t / "data" / "nodes").mkdir(parents=True)
    (t / "hiera.yaml").write_text(
        "version: 5\ndefaults: {datadir: data, data_hash: yaml_data}\nhierarchy:\n"
        "  - {name: node, path: 'nodes/%{trusted.certname}.yaml'}\n"
    )
    (t / "data" / "nodes" / "node7.yaml").write_text("motd: from-node\n")
    (t / "global").mkdir()
    (t / "global" / "hiera.yaml").write_text(
        "version: 5\nhierarchy:\n  - {name: g, path: g.yaml, datadir: .}\n"
    )
    (t / "global" / "g.yaml").write_text("banner: from-global\n")
    pp = t / "site.pp"
    pp.write_text(
        '$m = lookup("motd", String, "first", "default")\n'
        '$b = lookup("banner", String, "first", "default")\n'
        f'file {{ "{t}/motd": content => "${{m}} ${{b}}\\n" }}\n'
    )
    hiera = ["--hiera-config", str(t / "global" / "hiera.yaml")]
    run = ["run", "--tmp-prefix", "--converged-timeout=0", "--hostname", "node7"]
    code, out = run_mgmt([*run, *hiera, "puppet", str(pp)], 120)
    assert code == 0, out
    assert (t / "motd").read_text() == "from-node from-global\n"
    code, out = run_mgmt(["check", "--hiera-config", str(t / "nope.yaml"), str(pp)], 120)
    assert code == 2, out
    assert f"{t / 'nope.yaml'} (--hiera-config): cannot read: No such file or directory" in out


async def test_a_modules_files_are_sources_and_watched(tmp_path: Path) -> None:
    """tester7's #3: `source => 'puppet:///modules/M/F'` is `M/files/F` in the module path, as
    `puppet apply` finds it (a directory with `recurse`; of a list, the first that is there):
    an edit of it is copied at once (the file resource watches its source), and writing one
    of a list that comes first compiles again. Other mount points are refused. Before
    2026-12-05 every `puppet:///` source was refused."""
    t = tmp_path
    files = t / "mods/app/files"
    (t / "mods/app/manifests").mkdir(parents=True)
    (files / "tree/sub").mkdir(parents=True)
    (files / "static.txt").write_text("static\n")
    (files / "tree/sub/t").write_text("t\n")
    (files / "default.conf").write_text("default\n")
    (t / "mods/app/manifests/init.pp").write_text(
        "class app {\n"
        f"  file {{ '{t}/static.txt': source => 'puppet:///modules/app/static.txt' }}\n"
        f"  file {{ '{t}/tree': ensure => directory, recurse => true,\n"
        "    source => 'puppet:///modules/app/tree' }\n"
        f"  file {{ '{t}/app.conf': source => ['puppet:///modules/app/node.conf',\n"
        "    'puppet:///modules/app/default.conf'] }\n"
        "}\n"
    )
    pp = t / "site.pp"
    pp.write_text("include app\n")
    mods = ["--modulepath", str(t / "mods")]
    code, out = await asyncio.to_thread(
        run_mgmt, ["check", *mods, "-e", f"file {{ '{t}/x': source => 'puppet:///files/x' }}"], 120
    )
    assert code == 2, out
    assert "source => 'puppet:///files/x': only puppet:///modules/MODULE/PATH translates" in out
    async with Daemon(["run", "--tmp-prefix", *mods, "puppet", str(pp)]) as daemon:
        await wait_path(t / "static.txt", has_content("static\n"), timeout=60)
        await wait_path(t / "tree/sub/t", has_content("t\n"), timeout=60)
        await wait_path(t / "app.conf", has_content("default\n"), timeout=60)
        (files / "static.txt").write_text("edited\n")
        await wait_path(t / "static.txt", has_content("edited\n"), timeout=60)
        (files / "node.conf").write_text("node\n")  # first in the list: taken now
        await wait_path(t / "app.conf", has_content("node\n"), timeout=60)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_absent_with_force_removes_a_directory_tree_and_without_it_none(tmp_path: Path) -> None:
    """tester7's #9, as `puppet apply` does: `ensure => absent, force => true` removes a
    directory with everything in it (a symlink in it removed, its target kept); without
    force no directory is removed, empty or not (Puppet's notice, a warning here), a file is.
    Before 2026-12-05 the first failed (exit 1, with the graph file's terms)."""
    t = tmp_path
    outside = t / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (t / "tree/sub").mkdir(parents=True)
    (t / "tree/sub/x").write_text("x")
    (t / "tree/link").symlink_to(outside)
    (t / "full/sub").mkdir(parents=True)
    (t / "empty").mkdir()
    (t / "file").write_text("f")
    pp = t / "site.pp"
    pp.write_text(
        f"file {{ '{t}/tree': ensure => absent, force => true }}\n"
        f"file {{ ['{t}/full', '{t}/empty', '{t}/file']: ensure => absent }}\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 0, out
    assert not (t / "tree").exists() and not (t / "file").exists()
    assert (outside / "keep").read_text() == "keep"
    assert (t / "full/sub").is_dir() and (t / "empty").is_dir()
    for kept in ("full", "empty"):
        assert f"File[{t}/{kept}]: Not removing directory; use force => true to override" in out


def test_an_exec_not_qualified_without_a_path_is_refused_as_puppet_refuses_it(
    tmp_path: Path,
) -> None:
    """tester7's #11: Puppet's posix provider refuses `command` (each `onlyif`, `unless`)
    whose program is not an absolute path when no `path` is given; before 2026-12-05 it ran
    here with the agent's PATH. The shell provider takes it, as in Puppet."""
    t = tmp_path
    pp = t / "site.pp"
    pp.write_text(
        f"exec {{ 'ok': command => 'touch {t}/shell', provider => shell }}\n"
        f"exec {{ 'rel': command => 'touch {t}/rel' }}\n"
        f"exec {{ 'guard': command => '/bin/touch {t}/guard', unless => ['test -e /x'] }}\n"
    )
    said = (
        "is not qualified and no path was specified. Please qualify the command or specify a path."
    )
    for args in (
        ["check", "--puppet-fallback", str(pp)],
        ["run", "--tmp-prefix", "puppet", str(pp)],
    ):
        code, out = run_mgmt(args, 120)
        assert code == 2, out
        assert f"{pp}:2: Exec[rel]: 'touch' {said}" in out
        assert f"{pp}:3: Exec[guard]: 'test' {said}" in out
    assert not any((t / name).exists() for name in ("shell", "rel", "guard"))  # nothing ran
    pp.write_text(f"exec {{ 'rel': command => 'touch {t}/rel', path => '/usr/bin:/bin' }}\n")
    code, out = run_once("puppet", pp)
    assert code == 0 and (t / "rel").exists(), out


def test_returns_lists_the_exit_codes_that_succeed(tmp_path: Path) -> None:
    """`returns => [0, 2]` (a string command, an argv): one of them is a success, another
    code a failure saying so, and 0 too when not listed, as in Puppet. Before 2026-12-05
    only `returns => 0` translated."""
    t = tmp_path
    pp = t / "site.pp"
    pp.write_text(
        f"exec {{ 'two': command => '/bin/sh -c \"exit 2\" # a comment', returns => [0, 2] }}\n"
        f"exec {{ 'argv': command => ['/bin/sh', '-c', 'exit 3'], returns => 3 }}\n"
        f"exec {{ 'after': command => '/bin/touch {t}/after', require => Exec['two', 'argv'] }}\n"
        f"exec {{ 'one': command => '/bin/sh -c \"exit 1\"', returns => [0, 2] }}\n"
        f"exec {{ 'zero': command => '/bin/true', returns => [2] }}\n"
    )
    code, out = run_once("puppet", pp)
    assert code == 1, out
    assert (t / "after").exists(), out
    assert (
        "exec[one]: failed: cmd exited with code 1; stderr: returned 1 instead of one of [0, 2]"
        in out
    )
    assert (
        "exec[zero]: failed: cmd exited with code 1; stderr: returned 0 instead of one of [2]"
        in out
    )
    assert "failed: exec[one], exec[zero]" in out


def test_an_exec_path_list_passes_to_puppet_resource(tmp_path: Path) -> None:
    """With --puppet-fallback, an exec's `path` given as a list (here by a resource default)
    is passed colon-separated to `puppet resource`; before 2026-12-05 it was refused as a
    list."""
    code = (
        "Exec { path => ['/usr/bin', '/bin'] }\n"
        f"exec {{ 'x': command => 'touch {tmp_path}/ran', refresh => 'true' }}\n"
    )
    run = ["run", "--tmp-prefix", "--converged-timeout=0", "--puppet-fallback", "puppet"]
    status, out = run_mgmt([*run, "-e", code], 120)
    assert status == 0, out
    assert "runs through `puppet resource` (--puppet-fallback)" in out
    assert (tmp_path / "ran").exists(), out


def test_a_missing_manifest_at_the_start_exits_75_as_a_missing_graph_file(tmp_path: Path) -> None:
    """A host problem that may pass (a manifest another tool provisions): 75, which the unit
    restarts on, as for a yaml graph or an mcl program (docs/operations.md, "Restarts"); it
    exited 2, the unit then `failed` for good. A FIFO is bad input: 2. `mgmt check`: 2."""
    missing, fifo = tmp_path / "site.pp", tmp_path / "fifo.pp"
    os.mkfifo(fifo)
    run = ["run", "--tmp-prefix", "--converged-timeout=0", "puppet"]
    for argv, want, why in (
        ([*run, str(missing)], 75, "No such file or directory"),
        ([*run, str(fifo)], 2, "not a regular file"),
        (["check", str(missing)], 2, "No such file or directory"),
    ):
        code, out = run_mgmt(argv, 120)
        assert code == want, out
        (line,) = out.strip().splitlines()
        assert line.endswith(f"{argv[-1]}: cannot read: {why}"), line


def puppet_apply(tmp_path: Path, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `puppet apply` of `manifest`, with its own directories under tmp_path (the
    host's /etc/puppet and /var/cache/puppet are neither read nor changed)."""
    own = tmp_path / "puppet-apply"
    dirs = [f"--{d}={own / d}" for d in ("vardir", "confdir", "codedir", "logdir", "rundir")]
    argv = ["puppet", "apply", "--color=false", "--detailed-exitcodes", *dirs, *args]
    return subprocess.run(
        [*argv, str(manifest)], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_recursive_copy_gives_every_entry_the_mode_as_puppet_apply_does(tmp_path: Path) -> None:
    """user4: `recurse => true, source => ..., mode => '0640'` (or a resource default's mode)
    gives every file copied below the directory 0640 and every directory 0750 in Puppet; before
    2026-12-07 they kept their source's bits here (a module's 0644 file stayed world-readable in
    a directory meant to be 0640) and a drift of their mode was not repaired."""
    files = tmp_path / "mods/app/files/conf.d"
    (files / "sub").mkdir(parents=True)
    (files / "a.conf").write_text("a\n")
    (files / "run.sh").write_text("#!/bin/sh\n")
    (files / "run.sh").chmod(0o755)
    (files / "sub/b.conf").write_text("b\n")
    (files / "sub").chmod(0o755)
    names = ("", "a.conf", "run.sh", "sub", "sub/b.conf")
    modes: dict[str, dict[str, int]] = {}
    for who in ("puppet", "mgmt"):
        out = tmp_path / who
        pp = tmp_path / f"{who}.pp"
        pp.write_text(
            "File { mode => '0640' }\n"
            f"file {{ '{out}': ensure => directory, recurse => true, purge => true,\n"
            "  source => 'puppet:///modules/app/conf.d' }\n"
        )
        mods = ["--modulepath", str(tmp_path / "mods")]
        if who == "puppet":
            done = puppet_apply(tmp_path, pp, *mods)
            assert done.returncode == 2, done.stdout + done.stderr
        else:
            code, said = run_mgmt(
                ["run", "--tmp-prefix", "--converged-timeout=0", *mods, "puppet", str(pp)]
            )
            assert code == 0, said
        modes[who] = {n: (out / n).stat().st_mode & 0o7777 for n in names}
    assert (
        modes["mgmt"]
        == modes["puppet"]
        == {
            "": 0o750,
            "a.conf": 0o640,
            "run.sh": 0o640,
            "sub": 0o750,
            "sub/b.conf": 0o640,
        }
    )
    (tmp_path / "mgmt/a.conf").chmod(0o666)  # drift of an entry's mode: repaired
    again = [
        "run",
        "--tmp-prefix",
        "--converged-timeout=0",
        *mods,
        "puppet",
        str(tmp_path / "mgmt.pp"),
    ]
    code, said = run_mgmt(again)
    assert code == 0 and "mode a.conf 0666 -> 0640" in said, said
    assert (tmp_path / "mgmt/a.conf").stat().st_mode & 0o7777 == 0o640


def test_replace_false_keeps_a_files_content_as_puppet_apply_does(tmp_path: Path) -> None:
    """user4: `replace => false` (a seed file: written once, then the host's) was refused
    before 2026-12-07 (`no translation for param replace`). As `puppet apply`: a file already
    there keeps its content, its mode still managed; a missing one is written, and written
    again once deleted."""
    got: dict[str, tuple[str, str, int]] = {}
    for who in ("puppet", "mgmt"):
        out = tmp_path / who
        out.mkdir()
        (out / "seed").write_text("the host's\n")
        (out / "seed").chmod(0o644)
        pp = tmp_path / f"{who}.pp"
        pp.write_text(
            f"file {{ '{out}/seed': content => \"managed\\n\", replace => false, mode => '0600' }}\n"
            f"file {{ '{out}/new': content => \"managed\\n\", replace => 'no' }}\n"
        )
        if who == "puppet":
            done = puppet_apply(tmp_path, pp)
            assert done.returncode == 2, done.stdout + done.stderr
        else:
            code, said = run_once("puppet", pp)
            assert code == 0, said
        seed = out / "seed"
        got[who] = (seed.read_text(), (out / "new").read_text(), seed.stat().st_mode & 0o7777)
    assert got["mgmt"] == got["puppet"] == ("the host's\n", "managed\n", 0o600)
    (tmp_path / "mgmt/new").write_text("edited\n")
    (tmp_path / "mgmt/seed").unlink()
    code, said = run_once("puppet", tmp_path / "mgmt.pp")
    assert code == 0, said
    assert (tmp_path / "mgmt/new").read_text() == "edited\n"
    assert (tmp_path / "mgmt/seed").read_text() == "managed\n"
