"""examples/http-server-ui.mcl run by the real `mgmt` (its etcd on free ports): a save on the
page goes into the cluster and back into the program (world.getval), a value is sent along
a send/recv edge; in a real browser (headless Chromium, as the status page's tests), a change
typed in the page is saved, and a change made elsewhere is shown on the page at once."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resources._lib.httpd import fetch
from tests.e2e.helpers import ROOT, Daemon
from tests.e2e.test_status_page import browser, free_port, until
from tests.mgmt.cluster.helpers import cluster_env

__all__ = ["browser"]  # the fixture

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The example on a free port, with its cluster's etcd on free ports; and its UI's URL."""
    port = free_port()
    path = tmp_path / "ui.mcl"
    path.write_text((ROOT / "examples/http-server-ui.mcl").read_text().replace("18484", str(port)))
    with cluster_env() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield path, f"http://127.0.0.1:{port}/ui/"


async def save(ui: str, ident: str, value: str) -> tuple[int, Any]:
    body = urllib.parse.urlencode({"id": ident, "value": value}).encode()
    reply = await fetch(ui + "save/", method="POST", headers=FORM, body=body)
    return reply.status, json.loads(reply.body)


async def test_a_save_goes_through_the_cluster_into_the_program(
    program: tuple[Path, str],
) -> None:
    path, ui = program
    async with Daemon(["run", "--tmp-prefix", "lang", str(path)]) as daemon:
        await daemon.wait_log("print[level]: msg: 2", timeout=60)
        await daemon.wait_log("listening on 127.0.0.1")
        assert await save(ui, "text1", "hello") == (200, None)
        await daemon.wait_log("test[text1]: AnotherStr: hello")  # web -> etcd -> getval -> test
        assert await save(ui, "range1", "4") == (200, None)
        await daemon.wait_log("print[level]: msg: 4")  # sent along the edge
        assert await save(ui, "range1", "6") == (400, {"error": "bad data: 6 is outside 0..5"})
        reply = await fetch(ui + "list/text1")
        assert json.loads(reply.body) == {"value": "hello"}


@pytest.mark.slow
async def test_the_page_saves_and_shows_changes_live(
    browser: Any, program: tuple[Path, str]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, ui = program
    async with Daemon(["run", "--tmp-prefix", "lang", str(path)]) as daemon:
        await daemon.wait_log("listening on 127.0.0.1", timeout=60)
        await daemon.wait_log("print[level]: msg: 2")
        browser.get(ui)  # redirected to index.html
        await until(
            browser,
            lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"),
            20,
        )
        assert browser.title == "mgmt http ui"
        text1 = browser.find_element(By.ID, "text1")
        range1 = browser.find_element(By.ID, "range1")
        assert range1.get_attribute("value") == "2"
        # Typed on the page: saved into the cluster, read back by the program.
        text1.send_keys("typed", Keys.TAB)  # leaving the field is its change event
        await daemon.wait_log("test[text1]: AnotherStr: typed")
        # Changed by another client: the page shows it at once (its long poll answers).
        assert await save(ui, "range1", "5") == (200, None)
        await until(browser, lambda: range1.get_attribute("value") == "5", 10)
        await daemon.wait_log("print[level]: msg: 5")
        assert await save(ui, "text1", "from elsewhere") == (200, None)
        await until(browser, lambda: text1.get_attribute("value") == "from elsewhere", 10)
