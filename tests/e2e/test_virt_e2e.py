"""virt end to end: the real `mgmt run` daemon on an example graph (uri test:///default).

The daemon's test-driver state lives in its own process, so nothing here can act on the domain
from outside (tests/resources/test_virt.py does that in-process); these tests check the
daemon's behaviour through its logs: the example converges, and editing `cpus` in the graph file
is applied live through a graph swap (hot-plugged, the machine is not redefined or restarted).
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.helpers import ROOT, Daemon, run_mgmt

EXAMPLE = ROOT / "examples" / "virt.yaml"


def replace_text(path: Path, old: str, new: str) -> None:
    """Edit the graph file the way editors do: write a new file, rename it over the old one."""
    text = path.read_text()
    assert old in text
    tmp = path.with_suffix(".new")
    tmp.write_text(text.replace(old, new))
    tmp.replace(path)


async def test_cpus_edit_is_hot_plugged_through_a_graph_swap(tmp_path: Path) -> None:
    graph = tmp_path / "virt.yaml"
    graph.write_text(EXAMPLE.read_text())
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("virt[vm1]: started")
        await daemon.wait_log("converged: the 1 resource")
        before = len(daemon.lines)
        replace_text(graph, "cpus: 2\n", "cpus: 4\n")
        await daemon.wait_log("virt[vm1]: cpus hot-plugged: 2 -> 4")
        await daemon.wait_log("graph swap: 0 kept, 1 stopped, 1 started")
        replace_text(graph, "cpus: 4\n", "cpus: 1\n")
        await daemon.wait_log("virt[vm1]: cpus hot-unplugged: 4 -> 1")
        after = daemon.lines[before:]
        for word in ("defined", "started", "shut down", "created"):
            assert not any(f"virt[vm1]: {word}" in line for line in after), daemon.log
        daemon.signal(signal.SIGINT)
        assert await daemon.wait() == 0, daemon.log


async def test_change_needing_a_restart_fails_clearly_by_default(tmp_path: Path) -> None:
    graph = tmp_path / "virt.yaml"
    graph.write_text(
        EXAMPLE.read_text().replace("maxcpus: 8\n", "maxcpus: 8\n      hotcpus: false\n")
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged: the 1 resource")
        replace_text(graph, "cpus: 2\n", "cpus: 3\n")
        await daemon.wait_log("virt[vm1]: failed: cpus: 2 -> 3 with hotcpus false")
        assert "restartondiverge is 'error'" in daemon.log
        replace_text(
            graph, "hotcpus: false\n", "hotcpus: false\n      restartondiverge: ifneeded\n"
        )
        await daemon.wait_log(
            "virt[vm1]: shut down to restart it (cpus: 2 -> 3 with hotcpus false)"
        )
        await daemon.wait_log("virt[vm1]: started", count=2)
        daemon.signal(signal.SIGINT)
        assert await daemon.wait() == 0, daemon.log


def test_noop_reports_what_it_would_do() -> None:
    args = ["run", "--noop", "--converged-timeout=0", "--max-runtime=60", "--tmp-prefix"]
    code, out = run_mgmt([*args, "yaml", str(EXAMPLE)])
    assert code == 0, out
    assert "virt[vm1]: would define the domain" in out
    assert "virt[vm1]: would start the domain" in out
    assert "virt[vm1]: defined" not in out


def test_auth_from_the_language_never_shows_the_password(tmp_path: Path) -> None:
    """mgmt's `virt` `auth` struct, on a test-driver node that asks for credentials: the run
    converges; a wrong password is a clear error; neither password is in any output line."""
    secret, wrong = "pw-4f2-kept-out-of-logs", "pw-wrong-9x1-kept-out"
    node = tmp_path / "node.xml"
    node.write_text(f"<node><auth><user password='{secret}'>alice</user></auth></node>\n")
    program = tmp_path / "vm.mcl"
    body = (
        'virt "vm1" {\n\turi => "test://NODE",\n\tstate => "running",\n'
        '\tauth => struct{username => "alice", password => "PW",},\n}\n'
    ).replace("NODE", str(node))
    program.write_text(body.replace("PW", secret))
    args = ["run", "--tmp-prefix", "--verbose", "--converged-timeout=1", "lang", str(program)]
    code, out = run_mgmt(args)
    assert code == 0 and "virt[vm1]: started" in out, out
    assert secret not in out
    program.write_text(body.replace("PW", wrong))
    code, out = run_mgmt(args)
    assert code != 0 and "authentication failed" in out, out
    assert wrong not in out and secret not in out


async def test_network_example_converges_and_a_new_host_is_added_live(tmp_path: Path) -> None:
    """examples/virt-network.mcl in the daemon: the hosts and the range group into the
    network's vertex, which defines and starts it; a host added to the program is added to
    the running network as a DHCP entry (no redefinition, no restart)."""
    program = tmp_path / "net.mcl"
    program.write_text((ROOT / "examples" / "virt-network.mcl").read_text())
    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await daemon.wait_log("converged: the 1 resource")  # the network's vertex alone
        for line in (
            "virt:network[mgmtnet]: defined the network",
            "virt:network[mgmtnet]: started the network",
        ):
            assert line in daemon.log
        before = len(daemon.lines)
        text = program.read_text() + (
            'virt:network:host "cache" {\n\tmac => "52:54:00:00:00:21",\n'
            '\tip => "192.168.42.21/24",\n}\n'
        )
        tmp = program.with_suffix(".new")
        tmp.write_text(text)
        tmp.replace(program)
        await daemon.wait_log("added dhcp host 52:54:00:00:00:21 (cache, 192.168.42.21)")
        after = "\n".join(daemon.lines[before:])
        assert "defined the network" not in after and "started the network" not in after
        daemon.signal(signal.SIGINT)
        assert await daemon.wait() == 0, daemon.log


def test_without_the_binding_check_warns_and_the_run_says_how_to_get_it(tmp_path: Path) -> None:
    """tester14's finding 3: on a host without libvirt-python `mgmt check` said `ok` (only the
    run failed), and the run's hint was `pip install 'mgmt[virt]'`, which outside the checkout
    asks PyPI for another project. check warns (the program is fine: another host may have the
    binding); both name this installation's own pip and the binding."""
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "libvirt.py").write_text('raise ImportError("No module named libvirt")\n')
    env = {"PYTHONPATH": str(hidden)}
    how = "-m pip install 'libvirt-python>=9.0'"
    for example in ("virt.yaml", "virt-network.mcl"):
        code, out = run_mgmt(["check", str(ROOT / "examples" / example)], env=env)
        assert code == 0 and out.endswith(f"{example}: ok\n"), out
        assert out.startswith("warning: virt") and f"python {how}" in out, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", str(EXAMPLE)], env=env)
    assert code == 1 and f"python {how}" in out and "mgmt[virt]" not in out, out
