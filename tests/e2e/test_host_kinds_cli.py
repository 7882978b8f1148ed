"""Host kinds from the command line, where a graph used to loop or pass silently: each one
now fails or is refused in one line, and the run ends."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import secrets
import struct
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt, run_once


def test_augeas_without_a_lens_for_its_file_fails_once_and_the_run_ends(tmp_path: Path) -> None:
    conf = tmp_path / "nolens_config"
    conf.write_text("Port 22\n")
    before = os.stat(conf).st_mtime_ns
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: a\nresources:\n  augeas:\n"
        f"    - name: x\n      file: {conf}\n      sets: [{{path: Port, value: '2222'}}]\n"
    )
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout=1", "--max-runtime=60", "yaml", str(graph)]
    )
    assert code == 1, out
    assert f"augeas[x]: failed: augeas: no Augeas lens handles {conf}: give `lens`" in out
    assert "set to" not in out and "saved" not in out
    assert conf.read_text() == "Port 22\n" and os.stat(conf).st_mtime_ns == before


def test_a_tar_archive_inside_its_input_is_refused_at_load(tmp_path: Path) -> None:
    """Before, each archive held the last one and its write was the next event: it grew
    forever. Now it is refused as gzip refuses its own path: exit 2, nothing written."""
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "a").write_text("a\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: t\nresources:\n  tar:\n    - {{name: {tmp_path}/self/sub/self.tar, "
        f"inputs: [{tmp_path}/other, {tmp_path}/self/]}}\n"
    )
    code, out = run_once("yaml", graph)
    assert code == 2, out
    assert (
        f"{graph}:4: tar[{tmp_path}/self/sub/self.tar]: inputs[1]: {tmp_path}/self/ holds "
        f"the archive {tmp_path}/self/sub/self.tar: put the archive outside its inputs"
    ) in out
    assert not (tmp_path / "self" / "sub").exists()


def test_a_timer_below_the_floor_is_refused_and_ticks_are_quiet(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: t\nresources:\n  timer:\n    - {name: fast, interval: 0.000001}\n")
    code, out = run_once("yaml", graph)
    assert code == 2, out
    assert f"{graph}:4: timer[fast]: interval: must be at least 0.01 seconds, got 1e-06" in out
    graph.write_text("graph: t\nresources:\n  timer:\n    - {name: slow, interval: 0.05}\n")
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout=1", "--max-runtime=3", "yaml", str(graph)]
    )
    assert "tick" not in out  # at debug level only


@pytest.mark.host
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
def test_a_user_and_its_own_group_removed_in_one_graph_fail_nothing(tmp_path: Path) -> None:
    """The group comes first in the file; groupdel refuses a user's primary group, so before,
    the run logged `group[...]: failed: groupdel exited with code 8` and recovered later. Now
    the absent group of the absent user's name comes after it (automatic edge)."""
    name = f"mgmt-test-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--user-group", name], check=True, capture_output=True)
    try:
        graph = tmp_path / "g.yaml"
        graph.write_text(
            "graph: cleanup\nresources:\n"
            f"  group:\n    - {{name: {name}, state: absent}}\n"
            f"  user:\n    - {{name: {name}, state: absent}}\n"
        )
        code, out = run_once("yaml", graph)
        assert code == 0, out
        assert "failed" not in out, out
        for database in ("/etc/passwd", "/etc/group"):
            with open(database) as handle:
                assert f"\n{name}:" not in "\n" + handle.read()
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.mark.host
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
def test_users_and_their_primary_group_of_another_name_removed_in_one_graph(
    tmp_path: Path,
) -> None:
    """Two users whose primary group has another name, all three absent, the group first in
    the file: before, `group[...]: failed: groupdel exited with code 8` (a hand edge was
    needed); now the users naming it are removed first (automatic edge), and two users naming
    one group are not refused as managing one thing."""
    group = f"mgmt-test-{secrets.token_hex(3)}"
    users = [f"mgmt-test-{secrets.token_hex(3)}" for _ in range(2)]
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    for user in users:
        subprocess.run(["useradd", "--gid", group, user], check=True, capture_output=True)
    try:
        graph = tmp_path / "g.yaml"
        listed = "".join(
            f"    - {{name: {user}, state: absent, group: {group}}}\n" for user in users
        )
        graph.write_text(
            "graph: cleanup\nresources:\n"
            f"  group:\n    - {{name: {group}, state: absent}}\n  user:\n{listed}"
        )
        code, out = run_once("yaml", graph)
        assert code == 0, out
        assert "failed" not in out, out
        with open("/etc/group") as handle:
            assert f"\n{group}:" not in "\n" + handle.read()
    finally:
        for user in users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.mark.host
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
def test_a_file_owned_by_a_user_the_graph_makes_under_noop_then_for_real(tmp_path: Path) -> None:
    """The file is first in the graph, its owner and group made by resources after it. Under
    --noop it said `failed: owner: no such user`; now it says what it would do and that the
    owner is not yet on this host. For real, the automatic edges run the group and the user
    first: the file is made owned by them."""
    user, group = f"mgmt-test-{secrets.token_hex(3)}", f"mgmt-test-{secrets.token_hex(3)}"
    path = tmp_path / "owned"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n"
        f"  file:\n    - {{name: '{path}', state: exists, content: 'x', owner: {user}, "
        f"group: {group}, mode: '0640'}}\n"
        f"  user:\n    - {{name: {user}, state: exists, group: {group}}}\n"
        f"  group:\n    - {{name: {group}, state: exists}}\n"
    )
    try:
        args = ["run", "--tmp-prefix", "--converged-timeout=0", "--noop", "yaml", str(graph)]
        code, out = run_mgmt(args)
        assert code == 0 and "failed" not in out, out
        assert f"file[{path}]: would create {path}" in out
        assert (
            f"file[{path}]: would make {path} owned by user {user} and group {group} (not yet "
            "on this host: made by an earlier resource)"
        ) in out
        assert not path.exists()
        code, out = run_once("yaml", graph)
        assert code == 0 and "failed" not in out, out
        st = path.stat()
        assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (user, group)
    finally:
        subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


def _ed25519_key() -> str:
    """A well-formed ssh-ed25519 public key (its 32 bytes made up), as authorized_keys has it."""
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + bytes([7] * 32)
    return base64.b64encode(blob).decode()


def test_a_file_fighting_a_sysctl_or_an_authorized_key_over_one_file_names_both(
    tmp_path: Path,
) -> None:
    """A `file` copying a `source` that lacks a sysctl's line, or an authorized key, of its
    path (what the load-time check cannot read): each rewrote the file the other had just
    written (~250 times a second) and the warning of a fought-over file never came (the file
    resource's writes were not counted). Now it names both (resources/_lib/rewrites.py `wrote`)."""
    conf, keys, mine = tmp_path / "99-x.conf", tmp_path / "authorized_keys", tmp_path / "mine"
    mine.write_text("# mine\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        f"    - {{name: '{conf}', state: exists, source: '{mine}'}}\n"
        f"    - {{name: '{keys}', state: exists, source: '{mine}', mode: '0600'}}\n"
        "  sysctl:\n"
        f"    - {{name: net.ipv4.ip_default_ttl, value: '77', path: '{conf}', runtime: false}}\n"
        "  ssh:authorized_key:\n"
        f"    - {{name: k, file: '{keys}', state: exists, type: ssh-ed25519, "
        f"key: {_ed25519_key()}}}\n"
    )
    _code, out = run_mgmt(["run", "--tmp-prefix", "--max-runtime=4", "yaml", str(graph)], 120)
    assert "Traceback" not in out, out
    for path, other in ((conf, "sysctl[net.ipv4.ip_default_ttl]"), (keys, "ssh:authorized_key[k]")):
        said = [line for line in out.splitlines() if f"{path} was rewritten " in line]
        assert said, out[-3000:]
        assert f"file[{path}]" in said[0] and other in said[0], said[0]


def test_a_file_whose_content_lacks_a_sysctl_line_or_a_key_of_it_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """A `file` whose `content` leaves out the line a sysctl persists, or the key an
    ssh:authorized_key keeps, in its path: refused at load, naming both (before: they fought
    at run time, unnamed). A content that holds the edit is no fight: accepted."""
    conf, keys = tmp_path / "99-x.conf", tmp_path / "keys"
    key = _ed25519_key()
    sysctl = f"{{name: net.ipv4.ip_default_ttl, value: '77', path: '{conf}', runtime: false}}"
    authorized = f"{{name: k, file: '{keys}', state: exists, type: ssh-ed25519, key: {key}}}"
    said = (
        f"sysctl[net.ipv4.ip_default_ttl] edits {conf}, whose whole content file[{conf}] "
        "writes: each would undo the other's change, forever"
    )
    for graph, text, where in (
        (
            tmp_path / "g.yaml",
            f"graph: g\nresources:\n  file:\n    - {{name: '{conf}', content: \"# mine\\n\"}}\n"
            f"  sysctl:\n    - {sysctl}\n",
            "6: sysctl[net.ipv4.ip_default_ttl]: ",
        ),
        (
            tmp_path / "g.mcl",
            f'file "{conf}" {{\n  content => "# mine\\n",\n}}\n'
            f'sysctl "net.ipv4.ip_default_ttl" {{\n  value => "77", path => "{conf}", '
            "runtime => false,\n}\n",
            "4:1: ",
        ),
    ):
        graph.write_text(text)
        code, out = run_mgmt(["check", str(graph)])
        assert code == 2, out
        assert f"{graph}:{where}{said}" in out, out
        assert "(declared at " in out, out
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n    - {{name: '{keys}', content: \"# none\\n\"}}\n"
        f"  ssh:authorized_key:\n    - {authorized}\n"
    )
    code, out = run_mgmt(["check", str(graph)])
    assert code == 2, out
    assert f"{graph}:6: ssh:authorized_key[k]: ssh:authorized_key[k] edits {keys}, whose" in out
    graph.write_text(  # the file's content holds the line: they agree
        "graph: g\nresources:\n  file:\n"
        f"    - {{name: '{conf}', content: \"# mine\\nnet.ipv4.ip_default_ttl = 77\\n\"}}\n"
        f"  sysctl:\n    - {sysctl}\n"
    )
    code, out = run_mgmt(["check", str(graph)])
    assert code == 0, out


def _both_front_ends_refuse(tmp_path: Path, yaml_text: str, mcl_text: str, said: str) -> str:
    """`mgmt check` of the graph as YAML and as mcl: exit 2, `said` after FILE:LINE: (what
    is refused is on the last line of each); their outputs, joined."""
    outs = []
    for graph, text in (("g.yaml", yaml_text), ("g.mcl", mcl_text)):
        (tmp_path / graph).write_text(text)
        code, out = run_mgmt(["check", str(tmp_path / graph)])
        assert code == 2, out
        line = yaml_text.count("\n") if graph == "g.yaml" else f"{mcl_text.count(chr(10))}:1"
        assert f"{tmp_path / graph}:{line}: {said}" in out, out
        outs.append(out)
    return "".join(outs)


def test_the_refusal_of_a_password_in_a_remote_name_does_not_show_it(tmp_path: Path) -> None:
    url = "ssh://root:hunter2pw@127.0.0.1:22711/"
    out = _both_front_ends_refuse(
        tmp_path,
        f"graph: r\nresources:\n  remote:\n    - name: {url}\n",
        f'remote "{url}" {{}}\n',
        "remote[ssh://root:***@127.0.0.1:22711/]: name: a password in the name would be logged",
    )
    assert "hunter2pw" not in out


def test_two_passwords_kept_in_one_place_are_refused(tmp_path: Path) -> None:
    """`a/b` and `a_b` map to one var dir (a '/' is kept as '_'): before, they shared one kept
    password; now the second is refused, in both front-ends, before anything runs."""
    _both_front_ends_refuse(
        tmp_path,
        "graph: p\nresources:\n  password:\n    - name: a/b\n    - name: a_b\n",
        'password "a/b" {}\npassword "a_b" {}\n',
        "password[a_b]: name: password[a/b] would keep its password in the same place",
    )
