"""--max-resources: a front-end stops building a graph at the limit (tester6's finding 1).

Through the real CLI (`mgmt check`, `mgmt run`), the real agent with inotify on the program's
input, and the front-ends' own builders (mcl, YAML, Puppet's catalog translation)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.limits import DEFAULT_MAX_RESOURCES, limited_to, max_resources, set_max_resources
from mgmt.agent import Agent, open_lang
from mgmt.config import Config, ExitCode
from mgmt.lang.source import LangSource
from mgmt.puppet.translate import translate
from mgmt.yamlgraph import GraphFileError, parse
from tests.e2e.helpers import has_content, run_mgmt, wait_path

RANGE = """import "iter"
import "fmt"
for $i, $n in iter.range(COUNT) {
	file fmt.printf("TMP/f%d", $n) {
		content => "x\\n",
	}
}
"""


def program(tmp_path: Path, count: int | str, name: str = "main.mcl") -> Path:
    path = tmp_path / name
    text = RANGE.replace("COUNT", str(count)).replace("TMP", str(tmp_path / "out"))
    path.write_text(text)
    return path


@pytest.fixture
def limit() -> Iterator[None]:
    """This process's limit set low for the test, then back to the default."""
    set_max_resources(10)
    yield
    set_max_resources(DEFAULT_MAX_RESOURCES)


def test_the_default_keeps_issue_16s_100000_files_and_refuses_ten_times_more() -> None:
    assert max_resources() == DEFAULT_MAX_RESOURCES
    assert 100_000 < DEFAULT_MAX_RESOURCES < 1_000_000


def test_a_runaway_loop_fails_at_the_limit_in_check_and_run(tmp_path: Path) -> None:
    """iter.range(1000000) with the default: refused at the loop without building 1,000,000
    resources first (the run's time bound is generous: it only keeps the test from hanging)."""
    huge = program(tmp_path, 1_000_000)
    code, out = run_mgmt(["check", str(huge)], timeout=120)
    assert code == 2, out
    assert out.strip() == (
        f"{huge}:3:1: the loop declares more than 400,000 resources and edges together "
        "(--max-resources, MGMT_MAX_RESOURCES: a graph has at most 200,000 of each)"
    )
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout=0", "--max-resources=50", "lang", str(huge)]
    )
    assert code == 2, out
    assert f"{huge}:3:1: the loop declares more than 100 resources" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "out").exists()


def test_the_limit_is_inclusive_and_counted_in_the_graph(tmp_path: Path) -> None:
    at = program(tmp_path, 20)
    code, out = run_mgmt(["check", "--max-resources", "20", str(at)])
    assert code == 0, out
    code, out = run_mgmt(["check", str(at)], env={"MGMT_MAX_RESOURCES": "19"})
    assert code == 2, out
    assert out.strip() == (
        f"{at}:4:2: the program declares more than 19 resources (--max-resources, "
        "MGMT_MAX_RESOURCES)"
    )


def test_a_yaml_graph_stops_at_the_limit_naming_its_line(tmp_path: Path, limit: None) -> None:
    items = "".join(f"    - {{name: f{i}, path: /tmp/f{i}}}\n" for i in range(12))
    with pytest.raises(GraphFileError) as err:
        parse(f"graph: g\nresources:\n  file:\n{items}", "g.yaml")
    assert err.value.problems == [
        "g.yaml:14: resources.file: more than 10 resources (--max-resources, MGMT_MAX_RESOURCES)"
    ]
    edges = "".join(
        f"  - {{name: e{i}, from: {{kind: noop, name: a}}, to: {{kind: noop, name: b}}}}\n"
        for i in range(11)
    )
    with pytest.raises(GraphFileError) as err:
        parse(
            f"graph: g\nresources:\n  noop:\n    - {{name: a}}\n    - {{name: b}}\nedges:\n{edges}"
        )
    assert err.value.problems == [
        "<graph>:17: edges: more than 10 edges (--max-resources, MGMT_MAX_RESOURCES)"
    ]


def test_a_puppet_catalog_stops_at_the_limit(limit: None) -> None:
    notify = [
        {"type": "Notify", "title": f"n{i}", "kind": "compilable_type", "parameters": {}}
        for i in range(11)
    ]
    with pytest.raises(GraphFileError) as err:
        translate({"resources": notify}, "site.pp")
    (problem,) = err.value.problems
    assert problem.endswith(
        "Notify[n10]: the catalog has more than 10 resources (--max-resources, MGMT_MAX_RESOURCES)"
    ), problem


async def test_over_the_limit_at_run_time_keeps_the_last_good_graph(
    tmp_path: Path, limit: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The count read from a file the program watches: 3 files, then 50 (refused, the three
    still enforced), then 4 again."""
    caplog.set_level(logging.INFO, "lang")
    (tmp_path / "count").write_text("3\n")
    path = tmp_path / "main.mcl"
    text = RANGE.replace("COUNT", 'convert.parse_int(strings.trim_space(os.readfile("TMP/count")))')
    text = text.replace("TMP/f", str(tmp_path / "out") + "/f").replace("TMP", str(tmp_path))
    path.write_text('import "os"\nimport "strings"\nimport "convert"\n' + text)
    (tmp_path / "out").mkdir()
    config = Config(frontend="lang", file=path, prefix=tmp_path / "prefix", hostname="t")
    source, first = await open_lang(config)
    assert isinstance(source, LangSource) and first is not None
    agent = Agent(config, config.prefix, source)
    task = asyncio.create_task(agent.run(first))
    try:
        await wait_path(tmp_path / "out/f2", has_content("x\n"))
        (tmp_path / "count").write_text("50\n")
        async with asyncio.timeout(30):
            while "keeping the last good graph" not in caplog.text:
                await source.evaluated.wait()
                source.evaluated.clear()
        assert "more than 20 resources and edges together" in caplog.text, caplog.text
        assert "keeping the last good graph" in source.problem
        (tmp_path / "out/f1").write_text("drift\n")  # the last good graph still runs
        await wait_path(tmp_path / "out/f1", has_content("x\n"))
        assert not (tmp_path / "out/f3").exists()
        (tmp_path / "count").write_text("4\n")
        await wait_path(tmp_path / "out/f3", has_content("x\n"))
    finally:
        agent.stopping.set()
        async with asyncio.timeout(10):
            assert await task == ExitCode.OK


async def test_a_limit_given_for_one_check_is_that_threads_alone() -> None:
    """leftovers5 3: the agent checks a `mgmt deploy --max-resources N` pushed through its
    socket in a worker thread with N; its own graphs (the loop, other threads) keep its own."""
    started, release = threading.Event(), threading.Event()

    def check() -> int:
        with limited_to(3):
            started.set()
            release.wait(10)
            return max_resources()

    checking = asyncio.create_task(asyncio.to_thread(check))
    assert await asyncio.to_thread(started.wait, 10)
    try:
        assert max_resources() == DEFAULT_MAX_RESOURCES  # the loop's, while the check runs
        assert await asyncio.to_thread(max_resources) == DEFAULT_MAX_RESOURCES
    finally:
        release.set()
    assert await checking == 3
    assert max_resources() == DEFAULT_MAX_RESOURCES
    with limited_to(None):
        assert max_resources() == DEFAULT_MAX_RESOURCES
