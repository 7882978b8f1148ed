"""The function graph: values, incremental recomputation, streams, errors and recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mgmt.lang.clock import ManualClock
from mgmt.lang.errors import FuncError, NotReady
from mgmt.lang.streams import load_average_path
from mgmt.lang.values import FrozenDict, Struct
from tests.mgmt.lang.helpers import binding, contents, problems, run, settled, value_of


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3.5),  # mgmt's / is a float division, of ints too
        ("-7 / 2", -3.5),
        ("7.0 / 2.0", 3.5),
        ('"a" + "b"', "ab"),
        ("1 < 2 and not (2 < 1) or false", True),
        ('if 1 > 2 { "x" } else if 2 > 1 { "y" } else { "z" }', "y"),
        ("[1, 2][1]", 2),
        ('{"a" => 1}["a"]', 1),
        ('struct{x => 1, y => "s"}->y', "s"),
        ('"ell" in "hello"', True),
        ("3 in [1, 2]", False),
        ("func($a, $b) { $a * $b }(6, 7)", 42),
    ],
)
def test_expression_values(expr: str, value: object) -> None:
    assert value_of(expr) == value


def test_stdlib_values() -> None:
    prelude = 'import "fmt"\nimport "strings"\nimport "iter"\nimport "map"\nimport "list"\nimport "math"\nimport "convert"'
    assert (
        value_of('fmt.printf("%s=%d %.1f %t %v %v", "a", 5, 2.25, true, [1, 2], 1.0)', prelude)
        == "a=5 2.2 true [1, 2] 1"
    )
    assert value_of('fmt.printf("%05d|%-4s|%x", 42, "ab", 255)', prelude) == "00042|ab  |ff"
    assert value_of('strings.join(strings.split("a,b,c", ","), "-")', prelude) == "a-b-c"
    assert value_of("iter.map([1, 2, 3], func($x) { $x * $x })", prelude) == (1, 4, 9)
    assert value_of("iter.filter(iter.range(6), func($x) { math.mod($x, 2) == 0 })", prelude) == (
        0,
        2,
        4,
    )
    assert value_of('map.keys({"b" => 1, "a" => 2})', prelude) == ("a", "b")
    assert value_of("list.sort(list.uniq([3, 1, 3, 2]))", prelude) == (1, 2, 3)
    assert value_of('convert.str_to_float(" 1.5 ") + convert.to_float(2)', prelude) == 3.5
    assert value_of('{"k" => [1]}', prelude) == FrozenDict({"k": (1,)})
    assert value_of("struct{a => 1}", prelude) == Struct(a=1)


def test_mgmt_compatible_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.getenv as mgmt's: an unset variable is an error `<|>` catches, an empty one is "";
    sys.defaultenv (mgmt's earlier API) gives its default only when unset; structlookup."""
    monkeypatch.setenv("MGMT_T_SET", "123")
    monkeypatch.setenv("MGMT_T_EMPTY", "")
    monkeypatch.delenv("MGMT_T_UNSET", raising=False)
    prelude = 'import "sys"'
    assert value_of('sys.getenv("MGMT_T_SET") <|> "d"', prelude) == "123"
    assert value_of('sys.getenv("MGMT_T_EMPTY") <|> "d"', prelude) == ""
    assert value_of('sys.getenv("MGMT_T_UNSET") <|> "d"', prelude) == "d"
    with pytest.raises(FuncError, match="environment variable not set: MGMT_T_UNSET"):
        value_of('sys.getenv("MGMT_T_UNSET")', prelude)
    assert value_of('sys.defaultenv("MGMT_T_EMPTY", "d")', prelude) == ""
    assert value_of('sys.defaultenv("MGMT_T_UNSET", "d")', prelude) == "d"
    assert value_of('sys.hasenv("MGMT_T_EMPTY")', prelude) is True
    assert value_of('sys.hasenv("MGMT_T_UNSET")', prelude) is False
    assert value_of('structlookup(struct{a => 1, b => "x"}, "b") + "!"') == "x!"


def test_random1_is_drawn_once_per_call_site() -> None:
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "fmt"
        $now = datetime.now()
        noop "a" { comment => fmt.printf("%s %d", random1(12), $now - $now) }
        noop "b" { comment => random1(12) }
        """,
        clock,
    )
    first = {i.name: dict(i.params)["comment"] for i in rt.evaluate()[1]}
    clock.advance(3)  # recomputes "a": its random string stays
    again = {i.name: dict(i.params)["comment"] for i in rt.evaluate()[1]}
    assert first == again
    assert len(first["b"]) == 12 and first["a"][:12] != first["b"]


def test_templates() -> None:
    prelude = 'import "golang"'
    data = 'struct{name => "web", ports => [80, 443], on => true, t => 0}'
    text = (
        '"{{ .Name }}:{{ range .Ports }} {{ . }}{{ end }}'
        '{{ if .On }} on{{ else }} off{{ end }} {{ printf \\"%03d\\" 7 }} {{ .Name | len }}"'
    )
    assert value_of(f"golang.template({text}, {data})", prelude) == "web: 80 443 on 007 3"
    assert value_of('golang.template("{{ datetime_print . }}", 0)', prelude).startswith("1970-01-0")
    # mgmt's template names: `pkg/sub.f` is pkg_sub_f, a top-level builtin gets a leading `_`
    # (so `{{ int2str . }}` of mgmt's template0.mcl is an unknown function, there and here).
    text = '"{{ golang_strings_to_upper . }} {{ _len . }} {{ example_int2str 42 }}"'
    assert value_of(f'golang.template({text}, "ab")', prelude) == "AB 2 42"
    # A constant template's unknown function is found when the program is checked.
    assert problems(f'{prelude}\n$t = golang.template("{{{{ int2str . }}}}", 42)\n') == [
        't.mcl:2:6: golang.template: template: template:1:4: function "int2str" not defined'
    ]
    # As in mgmt a struct is a map of its Title-cased fields, at any depth (a field missing, or
    # not Title-cased, is a missing key: `<no value>`), map keys kept.
    assert value_of('golang.template("{{ .nope }}", struct{a => 1})', prelude) == "<no value>"
    nested = 'struct{x1 => [struct{load_avg => 1.5}], m => {"k" => struct{a => 2}}}'
    text = '"{{ range .X1 }}{{ .Load_avg }}{{ end }} {{ .M.k.A }}"'
    assert value_of(f"golang.template({text}, {nested})", prelude) == "1.5 2"
    assert value_of('golang.template("{{ .a }}", struct{a => 1})', prelude) == "<no value>"


def test_errors_are_values_with_positions() -> None:
    rt = run(
        '$l = [1]\nfile "/tmp/x" { content => "${l[3]}" }'.replace("${l[3]}", "x")
        + '\n$bad = 1 / 0\nnoop "n" { comment => "${b}" }\n$b = if $bad > 0.0 { "a" } else { "b" }\n'
    )
    _changed, _items, error = rt.evaluate()
    assert isinstance(error, FuncError)
    assert str(error) == "t.mcl:3:8: /: can't divide by zero"


def test_only_downstream_cells_recompute_and_equal_results_stop_the_wave(
    tmp_path: Path,
) -> None:
    clock = ManualClock(start=1000.5)
    rt = run(
        """
        import "datetime"
        import "math"
        $now = datetime.now()
        $even = math.mod($now, 2) == 0
        $label = if $even { "even" } else { "odd" }
        $static = "unrelated"
        noop "a" { comment => $label }
        noop "b" { comment => $static }
        """,
        clock,
    )
    changed, items, _ = rt.evaluate()
    assert changed and {i.name: dict(i.params)["comment"] for i in items} == {
        "a": "even",
        "b": "unrelated",
    }
    before = rt.recomputed
    clock.advance(1)  # 1001: odd
    changed, items, _ = rt.evaluate()
    assert changed and dict(items[0].params)["comment"] == "odd"
    # now, even, label, noop a, root: not $static, not noop b
    assert rt.recomputed - before == 5
    before = rt.recomputed
    clock.advance(2)  # 1003: odd again: $even recomputes equal, nothing below it does
    changed, _items, _ = rt.evaluate()
    assert not changed
    assert rt.recomputed - before == 2


def test_history_is_the_value_n_values_ago_as_in_mgmt() -> None:
    """tester7's #7: mgmt's history($x, 1) is the previous value (lang/core/history.go: "the
    Nth oldest value seen"), not the value 1 ms ago; until n + 1 values were seen it has none
    (the program waits, as mgmt's does)."""
    clock = ManualClock(start=500.2)
    rt = run(
        """
        import "datetime"
        import "fmt"
        import "math"
        $now = datetime.now()
        noop "h" { comment => fmt.printf("%d %d %d %d", $h0, $h1, $h3, $prev_half) }
        $h0 = history($now, 0)
        $h1 = history($now, 1)
        $h3 = history($now, 3)
        $half = math.floor($now / 2)
        $prev_half = history($half, 1)
        """,
        clock,
    )
    _changed, items, error = rt.evaluate()
    assert binding(rt, "h0") == 500
    assert isinstance(error, NotReady) and "history has no value yet" in str(error)
    assert rt.waiting and not items
    for now in (501, 502, 503, 504, 505, 506):
        clock.advance(1)
        _changed, items, error = rt.evaluate()
        assert binding(rt, "h1") == now - 1
        if now < 503:
            assert rt.waiting and not items
            continue
        assert error is None
        # $half repeats each value for two seconds: history counts values, not evaluations
        expected = f"{now} {now - 1} {now - 3} {now // 2 - 1}"
        assert dict(items[0].params)["comment"] == expected


def test_delayed_is_the_value_ms_ago() -> None:
    """delayed (not in mgmt) is what history meant here before: the value as it was ms ago,
    the oldest value seen while less than ms of it exists."""
    clock = ManualClock(start=500.2)
    rt = run(
        """
        import "datetime"
        import "fmt"
        $now = datetime.now()
        noop "h" { comment => fmt.printf("%d %d", $h1, $h3) }
        $h1 = delayed($now, 1000)
        $h3 = delayed($now, 3000)
        """,
        clock,
    )
    rt.evaluate()
    assert binding(rt, "now") == 500
    assert binding(rt, "h1") == 500  # no history yet: the oldest value
    for expected in (501, 502, 503, 504):
        clock.advance(1)
        rt.evaluate()
        assert binding(rt, "now") == expected
        assert binding(rt, "h1") == expected - 1
        assert binding(rt, "h3") == max(expected - 3, 500)


def test_debounce_flips_only_after_the_value_held_for_the_hold_time(tmp_path: Path) -> None:
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "math"
        # a square wave: 3 s high, 3 s low... then steady high from 112 on
        $now = datetime.now()
        $high = $now >= 112 or math.mod($now, 6) < 3
        $held = debounce($high, 4000)
        noop "n" { comment => if $held { "on" } else { "off" } }
        """,
        clock,
    )
    seen = []
    for _ in range(20):
        rt.evaluate()
        seen.append((binding(rt, "now"), binding(rt, "high"), binding(rt, "held")))
        clock.advance(1)
    # 100: high (100 % 6 = 4? no: 4 >= 3 -> low); the first value is taken as it is
    assert seen[0] == (100, False, False)
    # the 3 s pulses never last 4 s: the output stays low until high has held 4 s from 112
    assert all(not held for now, _high, held in seen if now < 116)
    assert all(held for now, _high, held in seen if now >= 116)


def test_an_upstream_error_does_not_reset_a_stream(tmp_path: Path) -> None:
    """A glitch of debounce's input (one second of error) keeps its state: no early flip."""
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        $now = datetime.now()
        $glitch = if $now == 105 { 1 / ($now - $now) } else { 0.0 }
        $held = debounce($now >= 104 and $glitch == 0.0, 4000)
        noop "n" { comment => if $held { "on" } else { "off" } }
        """,
        clock,
    )
    seen = {}
    for _ in range(10):
        _changed, _items, error = rt.evaluate()
        now = binding(rt, "now")
        seen[now] = None if error is not None else binding(rt, "held")
        clock.advance(1)
    assert seen[105] is None  # the error: no graph, the last one stays
    # high since 104: the output follows 4 s later, at 108, not at once after the glitch
    assert [seen[t] for t in (103, 104, 106, 107, 108, 109)] == [False] * 4 + [True] * 2


async def test_streams_nothing_reads_stop_even_while_the_program_fails(tmp_path: Path) -> None:
    """A stream whose argument changes every second while another part of the program always
    fails: the streams of the old arguments stop (they are not kept for a full pass)."""
    for second in range(100, 112):
        (tmp_path / f"f{second}").write_text(str(second))
    clock = ManualClock(start=100.5)
    rt = run(
        f"""
        import "datetime"
        import "fmt"
        import "os"
        $now = datetime.now()
        $content = os.readfile(fmt.printf("{tmp_path}/f%d", $now))
        $broken = 1 / ($now - $now)
        noop "n" {{ comment => fmt.printf("%s %f", $content, $broken) }}
        """,
        clock,
    )
    try:
        for _ in range(10):
            _changed, _items, error = rt.evaluate()
            assert error is not None
            clock.advance(1)
        reading = [s for s, _cell in rt.streams.values() if s.name == "os.readfile"]
        assert len(reading) == 1, [s.args for s in reading]
    finally:
        await rt.close()


async def test_readfile_follows_the_file_and_recovers_from_errors(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_text("1.5\n")
    woke = asyncio.Event()
    rt = run(
        f"""
        import "os"
        import "convert"
        import "strings"
        $load = convert.str_to_float(strings.trim_space(os.readfile("{path}")))
        $hold = debounce($load > 1.0, 200)
        noop "n" {{ comment => if $hold {{ "high" }} else {{ "low" }} }}
        """,
        notify=woke.set,
    )
    assert contents(await settled(rt)) == {"n": None}
    assert binding(rt, "load") == 1.5

    async def next_value() -> None:
        async with asyncio.timeout(5):
            while not rt.pending:
                woke.clear()
                await woke.wait()

    try:
        path.write_text("not a number\n")
        await next_value()
        _changed, _items, error = rt.evaluate()
        assert isinstance(error, FuncError) and "cannot parse 'not a number'" in str(error)
        path.write_text("0.5\n")
        await next_value()
        _changed, _items, error = rt.evaluate()
        assert error is None and binding(rt, "load") == 0.5
        path.unlink()
        await next_value()
        _changed, _items, error = rt.evaluate()
        assert isinstance(error, FuncError) and "No such file" in str(error)
    finally:
        await rt.close()


async def test_a_stream_in_an_untaken_branch_is_not_started(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_text("content")
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.10 0.20 0.30 1/100 1\n")
    rt = run(
        f"""
        import "os"
        import "sys"
        $use = os.readfile("{path}") == "file"
        $v = if $use {{ fmt.printf("%f", sys.load()->x1) }} else {{ "none" }}
        import "fmt"
        noop "n" {{ comment => $v }}
        """
    )
    try:
        with load_average_path(str(loadavg)):
            await settled(rt)
            assert binding(rt, "v") == "none"
            assert [s.name for s, _ in rt.streams.values()] == ["os.readfile"]
            path.write_text("file")
            for stream, _cell in rt.streams.values():  # re-read now rather than wait
                await stream._read()  # type: ignore[attr-defined]
            rt.evaluate()
            assert binding(rt, "v") == "0.1"
            assert sorted(s.name for s, _ in rt.streams.values()) == ["os.readfile", "sys.load"]
            path.write_text("back")
            await next(s for s, _ in rt.streams.values() if s.name == "os.readfile")._read()  # type: ignore[attr-defined]
            rt.evaluate()
            assert [s.name for s, _ in rt.streams.values()] == ["os.readfile"]  # load stopped
    finally:
        await rt.close()


async def test_streams_inside_lambdas_are_keyed_by_their_arguments(tmp_path: Path) -> None:
    for name in "ab":
        (tmp_path / name).write_text(name.upper())
    rt = run(
        f"""
        import "golang/strings"
        import "iter"
        import "os"
        $files = iter.map(["a", "b", "a"], func($n) {{ os.readfile("{tmp_path}/" + $n) }})
        noop "n" {{ comment => strings.join($files, "") }}
        """
    )
    try:
        await settled(rt)
        assert binding(rt, "files") == ("A", "B", "A")
        assert len(rt.streams) == 2
    finally:
        await rt.close()


async def test_a_branch_taken_again_restarts_its_streams_and_is_current(tmp_path: Path) -> None:
    flag, data = tmp_path / "flag", tmp_path / "data"
    flag.write_text("on")
    data.write_text("one")
    rt = run(
        f"""
        import "os"
        if os.readfile("{flag}") == "on" {{
            noop "n" {{ comment => os.readfile("{data}") }}
        }}
        """
    )

    async def reread() -> None:  # what the inotify watch does, without waiting for it
        for stream, _cell in list(rt.streams.values()):
            await stream._read()  # type: ignore[attr-defined]

    def comments() -> list[str]:
        _changed, items, error = rt.evaluate()
        assert error is None
        return [dict(i.params)["comment"] for i in items]

    try:
        await settled(rt)
        assert comments() == ["one"]
        flag.write_text("off")
        await reread()
        assert comments() == []
        assert len(rt.streams) == 1  # the data file is no longer watched
        data.write_text("two")  # changed while nobody watched it
        flag.write_text("on")
        await reread()
        await settled(rt)  # the data file's stream starts again: its first read
        assert comments() == ["two"]
    finally:
        await rt.close()


async def test_a_runtimes_close_ends_its_reads_and_joins_their_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leaks, 2026-12-07: the threads os.readfile reads in were one pool for the process's life;
    a read in flight at a program's close ran on after it (ci4: a pytest worker's thread opened
    and closed descriptors during a later test's check of them), and no thread was joined.
    Now the runtime's close waits for its reads and joins their threads; the read here is held
    in its thread until the close has begun."""
    import threading

    import mgmt.lang.streams

    path = tmp_path / "input"
    path.write_text("x\n")
    real, release = mgmt.lang.streams.read_for_program, threading.Event()
    loop, reading, threads = asyncio.get_running_loop(), asyncio.Event(), []

    def held(name: str) -> str:
        if threads:  # the first read alone is held
            return real(name)
        threads.append(threading.current_thread())
        loop.call_soon_threadsafe(reading.set)
        release.wait(30)  # a generous bound: a failed test does not hang
        return real(name)

    monkeypatch.setattr(mgmt.lang.streams, "read_for_program", held)
    rt = run(f'import "os"\n$x = os.readfile("{path}")\nnoop "n" {{ comment => $x }}\n')
    try:
        rt.evaluate()
        async with asyncio.timeout(10):
            await reading.wait()
    finally:
        loop.call_soon(release.set)  # once the close waits (before: it did not)
        await rt.close()
    assert not threads[0].is_alive()


async def test_a_runtimes_close_leaves_a_read_that_does_not_end_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read that does not end (a hung NFS server, a FUSE file system that never answers)
    held the runtime's close for good (leaks review, 2026-12-07): the agent's stop, and a
    program edit (the old program is closed before the new one is evaluated). Now the close
    waits for its reads up to streams.READ_CLOSE_WAIT s (0 here), names the path still being
    read, and leaves its thread to end with it; the read here is held until the close has
    returned (a generous bound on the close: before, it never did)."""
    import threading

    import mgmt.lang.streams

    path = tmp_path / "input"
    path.write_text("x\n")
    real, release = mgmt.lang.streams.read_for_program, threading.Event()
    loop, reading, threads = asyncio.get_running_loop(), asyncio.Event(), []

    def held(name: str) -> str:
        threads.append(threading.current_thread())
        loop.call_soon_threadsafe(reading.set)
        release.wait(60)  # a generous bound: a failed test does not hang
        return real(name)

    monkeypatch.setattr(mgmt.lang.streams, "read_for_program", held)
    monkeypatch.setattr(mgmt.lang.streams, "READ_CLOSE_WAIT", 0.0)
    rt = run(f'import "os"\n$x = os.readfile("{path}")\nnoop "n" {{ comment => $x }}\n')
    try:
        rt.evaluate()
        async with asyncio.timeout(10):
            await reading.wait()
        async with asyncio.timeout(10):
            await rt.close()
        assert f"{path}: still being read at the program's close" in caplog.text
        assert threads[0].is_alive()
    finally:
        release.set()
    await asyncio.to_thread(threads[0].join, 30)
    assert not threads[0].is_alive()
