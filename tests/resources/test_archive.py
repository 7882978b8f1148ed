"""gzip and tar: the idempotency timeline on real files, with their inotify watches."""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources.gzip import GzipRes
from resources.tar import TarRes
from tests.conftest import Running


async def test_gzip_timeline_from_a_file(
    run_resource: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    source = tmp_path / "input"
    source.write_bytes(b"hello world\n" * 100)
    out = tmp_path / "input.gz"
    res = GzipRes(name=str(out), input=str(source), level=9)
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False  # noop: reports, writes nothing
    assert not out.exists()
    assert f"would compress {source} into {out} (it is missing)" in caplog.text
    assert await res.check_apply(True) is False
    assert gzip.decompress(out.read_bytes()) == source.read_bytes()
    assert f"compressed 1200 bytes of {source} into {out}" in caplog.text
    await running.handle.next_event()  # our own write, seen by the watch
    assert await res.check_apply(True) is True
    source.write_bytes(b"changed\n")  # the input changed: compressed again
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert gzip.decompress(out.read_bytes()) == b"changed\n"
    assert await res.check_apply(True) is True
    out.write_bytes(b"garbage")  # the output was edited: rewritten
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert gzip.decompress(out.read_bytes()) == b"changed\n"
    assert await res.check_apply(True) is True


async def test_gzip_content_levels_and_missing_input(run_resource: object, tmp_path: Path) -> None:
    for level in (-2, -1, 0, 1):
        res = GzipRes(name=str(tmp_path / f"c{level}.gz"), content="data\n", level=level)
        await run_resource(res, watch=False)  # type: ignore[operator]
        assert await res.check_apply(True) is False
        assert gzip.decompress((tmp_path / f"c{level}.gz").read_bytes()) == b"data\n"
        assert await res.check_apply(True) is True
    missing = GzipRes(name=str(tmp_path / "m.gz"), input=str(tmp_path / "nope"))
    await run_resource(missing, watch=False)  # type: ignore[operator]
    assert await missing.check_apply(False) is False  # noop: an earlier resource may make it
    with pytest.raises(ResourceError, match="does not exist"):
        await missing.check_apply(True)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "relative.gz"}, "name"),
        ({"name": "/x/dir/"}, "name"),
        ({"name": "/x.gz", "input": "rel"}, "input"),
        ({"name": "/x.gz", "level": 10}, "level"),
        ({"name": "/x.gz", "input": "/x.gz"}, "input"),
    ],
)
def test_gzip_validation(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        GzipRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return archive.getnames()


async def test_tar_timeline_and_rsync_rule(run_resource: object, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "a").write_text("a\n")
    (tree / "dir" / "deep").write_text("deep\n")
    single = tmp_path / "single"
    single.write_text("one\n")
    out = tmp_path / "out.tar"
    res = TarRes(name=str(out), inputs=[f"{tree}/", str(single), str(tree)], format=8)
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False
    assert not out.exists()
    assert await res.check_apply(True) is False
    assert _names(out.read_bytes()) == [
        "a",
        "dir",
        "dir/deep",
        "single",
        "tree",
        "tree/a",
        "tree/dir",
        "tree/dir/deep",
    ]
    await running.handle.next_event()
    assert await res.check_apply(True) is True
    (tree / "dir" / "deep").write_text("changed\n")  # deep in a tree: seen, re-archived
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    with tarfile.open(out) as archive:
        member = archive.extractfile("dir/deep")
        assert member is not None and member.read() == b"changed\n"
    assert await res.check_apply(True) is True
    (tree / "new").mkdir()  # an empty directory counts too
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert "new" in _names(out.read_bytes())


async def test_tar_refuses_special_files_and_missing_inputs(
    run_resource: object, tmp_path: Path
) -> None:
    """Each refusal names the input it is about: a link deep in a tree (walked through
    directory descriptors: no link inside a tree is followed), a FIFO given as an input (never
    opened to read: that would wait for a writer), a missing input."""
    (tmp_path / "t" / "d").mkdir(parents=True)
    (tmp_path / "t" / "d" / "link").symlink_to("/etc/passwd")
    (tmp_path / "plain").write_text("x\n")
    os.mkfifo(tmp_path / "fifo")
    res = TarRes(name=str(tmp_path / "o.tar"), inputs=[str(tmp_path / "plain"), f"{tmp_path}/t/"])
    await run_resource(res, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError) as err:
        await res.check_apply(True)
    assert str(err.value) == (
        f"inputs[1]: cannot archive {tmp_path}/t/d/link: not a regular file or directory"
    )
    fifo = TarRes(
        name=str(tmp_path / "f.tar"), inputs=[str(tmp_path / "plain"), f"{tmp_path}/fifo"]
    )
    await run_resource(fifo, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError) as err:
        await fifo.check_apply(True)
    assert str(err.value) == (
        f"inputs[1]: cannot archive {tmp_path}/fifo: not a regular file or directory"
    )
    gone = TarRes(name=str(tmp_path / "g.tar"), inputs=[str(tmp_path / "nope")])
    await run_resource(gone, watch=False)  # type: ignore[operator]
    assert await gone.check_apply(False) is False
    with pytest.raises(ResourceError, match=rf"^inputs\[0\] {tmp_path}/nope does not exist$"):
        await gone.check_apply(True)
    assert not any((tmp_path / name).exists() for name in ("o.tar", "f.tar", "g.tar"))
    with pytest.raises(ValidationError) as err:
        TarRes(name="/x.tar", format=3).validate()
    assert err.value.key == "format"


def test_tar_inside_an_input_or_equal_to_one_is_refused() -> None:
    for inputs, index in ((["/srv/a", "/srv/site"], 1), (["/srv/site/"], 0), (["/srv/x.tar"], 0)):
        archive = "/srv/x.tar" if index == 0 and inputs[0] == "/srv/x.tar" else "/srv/site/x.tar"
        with pytest.raises(ValidationError, match="holds the archive") as err:
            TarRes(name=archive, inputs=inputs).validate()
        assert err.value.key == f"inputs[{index}]"
    TarRes(name="/srv/site.tar", inputs=["/srv/site/", "/srv/sites"]).validate()  # beside: fine
