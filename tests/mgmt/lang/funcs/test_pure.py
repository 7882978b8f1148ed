"""The standard library's pure functions, with mgmt's meaning (lang/core of mgmt)."""

from __future__ import annotations

import os
import platform
import pwd
import re
from pathlib import Path

import pytest

from mgmt.lang.errors import FuncError
from mgmt.lang.funcs import net as lnet
from mgmt.lang.values import FrozenDict, Struct
from tests.mgmt.lang.helpers import problems, value_of

GOLANG = (
    'import "golang/strings" as golang_strings\nimport "golang/html"\nimport "golang/os"\n'
    'import "golang/os/exec"\nimport "golang/path"\nimport "golang/path/filepath"\n'
    'import "golang/strconv"\nimport "golang/math"\nimport "golang/runtime"'
)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ('golang_strings.trim_space("  x \\n")', "x"),
        ('golang_strings.join(["a", "b"], ", ")', "a, b"),
        ('golang_strings.has_prefix("/tmp/foo", "/tmp/fo")', True),
        ('golang_strings.replace("aaa", "a", "b", 2)', "bba"),
        ('golang_strings.replace("aaa", "a", "b", -1)', "bbb"),
        ('golang_strings.title("hello wide world")', "Hello Wide World"),
        ('golang_strings.index("chicken", "ken")', 4),
        ('golang_strings.index_any("golang", "ny")', 4),
        ('golang_strings.trim("xxhixx", "x")', "hi"),
        ('golang_strings.compare("a", "b")', -1),
        ('html.escape_string("Test & <Re-Test> \'\\"")', "Test &amp; &lt;Re-Test&gt; &#39;&#34;"),
        ('html.unescape_string("&lt;h1&gt;MGMT!&lt;/h1&gt;")', "<h1>MGMT!</h1>"),
        ('path.clean("//a/./b/../c/")', "/a/c"),
        ('path.base("/a/b/")', "b"),
        ('path.dir("/a/b/c")', "/a/b"),
        ('path.ext("/a/b.tar.gz")', ".gz"),
        ('filepath.rel("/a/b", "/a/b/c/d")', "c/d"),
        ("strconv.format_int(255, 16)", "ff"),
        ('strconv.quote("a\\"b")', '"a\\"b"'),
        ('strconv.atoi("-12")', -12),
        ("math.sqrt(-1.0) != math.sqrt(-1.0)", True),  # NaN, as Go's
        ("math.round(2.5)", 3.0),
        ("math.round_to_even(2.5)", 2.0),
        ("math.pow(2.0, 10.0)", 1024.0),
        ('os.expand_env("$MGMT_T_X-$MGMT_T_UNSET-$MGMT_T_X")', "x--x"),
        ('os.getenv("MGMT_T_X")', "x"),
    ],
)
def test_golang_modules(expr: str, value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGMT_T_X", "x")
    monkeypatch.delenv("MGMT_T_UNSET", raising=False)
    assert value_of(expr, GOLANG) == value


def test_golang_os_reads_the_file_system(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("target")
    assert value_of(f'os.readlink("{tmp_path}/link")', GOLANG) == "target"
    with pytest.raises(FuncError, match="No such file"):
        value_of(f'os.readlink("{tmp_path}/nothing")', GOLANG)


def test_golang_runtime_and_exec_say_what_runs_here() -> None:
    assert value_of("runtime.version()", GOLANG) == f"python{platform.python_version()}"
    assert value_of('exec.look_path("sh")', GOLANG).endswith("/sh")
    with pytest.raises(FuncError, match='exec: "no-such-tool-x": executable file not found'):
        value_of('exec.look_path("no-such-tool-x")', GOLANG)


def test_iter_list_and_strings() -> None:
    prelude = 'import "iter"\nimport "list"\nimport "strings"\nimport "sys"'
    assert value_of("iter.range(34, 37)", prelude) == (34, 35, 36)
    assert value_of("iter.range(10, 0, -4)", prelude) == (10, 6, 2)
    assert (
        value_of("iter.reduce([-1, 0, 1, 2, 3, 4, 5, -1], func($x, $y) { $x + $y })", prelude) == 13
    )
    assert (
        value_of("iter.reduce(-1, [-1, 0, 1, 2, 3, 4, 5, -1], func($x, $y) { $x + $y })", prelude)
        == 12
    )
    assert value_of("iter.reduce(7, [], func($x, $y) { $x + $y })", prelude) == 7
    assert value_of("iter.flatten([[1, 2], [3, 4, 5], [6]])", prelude) == (1, 2, 3, 4, 5, 6)
    assert value_of("iter.flatten(iter.map([1, 2], func($x) { [$x, $x + 10] }))", prelude) == (
        1,
        11,
        2,
        12,
    )
    assert value_of('iter.zip([1, 2, 3], ["a", "b"], func($x, $y) { "${y}" })', prelude) == (
        "a",
        "b",
    )
    assert value_of('list.concat(["a"], ["b", "c"], [], ["d"])', prelude) == ("a", "b", "c", "d")
    assert value_of("list.lookup([1, 2], 1)", prelude) == 2
    assert value_of("list.lookup([1, 2], 5, 0)", prelude) == 0
    assert value_of('strings.substr("hello", 0, 4)', prelude) == "hell"
    assert isinstance(value_of("sys.env()", prelude), FrozenDict)
    with pytest.raises(FuncError, match="list index not present, got: 42, len is: 3"):
        value_of('list.lookup(["a", "b", "c"], 42)', prelude)
    with pytest.raises(FuncError, match="low/high out of range"):
        value_of('strings.substr("hello", 2, 9)', prelude)
    with pytest.raises(FuncError, match="cannot reduce an empty list without an initial value"):
        value_of("iter.reduce([], func($x, $y) { $x + $y })", prelude)
    with pytest.raises(FuncError, match="the step cannot be 0"):
        value_of("iter.range(1, 5, 0)", prelude)


def test_encoding_regexp_and_example() -> None:
    prelude = 'import "encoding"\nimport "regexp"\nimport "example"'
    assert value_of(
        'encoding.decode_json("{\\"hello\\": 42}", "struct{hello int;}")', prelude
    ) == Struct(hello=42)
    assert value_of(
        'encoding.decode_json("{\\"hello\\": 42}", "map{str: int}")', prelude
    ) == FrozenDict(hello=42)
    assert value_of('encoding.decode_json("true") and true', prelude) is True
    assert value_of(
        'encoding.decode_json_flexible("{\\"hello\\": 42}", "struct{hello int; goodbye bool;}")',
        prelude,
    ) == Struct(hello=42, goodbye=False)
    with pytest.raises(FuncError, match="the data has no field 'goodbye'"):
        value_of(
            'encoding.decode_json("{\\"hello\\": 42}", "struct{hello int; goodbye bool;}")', prelude
        )
    with pytest.raises(FuncError, match="invalid JSON"):
        value_of('encoding.decode_json("{", "map{str: int}")', prelude)
    assert value_of('regexp.match("^db\\\\d+\\\\.example\\\\.com$", "db12.example.com")', prelude)
    assert value_of("example.answer() + example.str2int(example.int2str(0))", prelude) == 42


def test_int_division_is_a_float_as_in_mgmt() -> None:
    assert value_of("7 / 2") == 3.5
    assert value_of("1 / 3 * 3.0") == 1.0
    assert "type error: operator + cannot combine float and int" in problems("$x = 7 / 2 + 1\n")[0]
    with pytest.raises(FuncError, match="can't divide by zero"):
        value_of("1.0 / 0.0")


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (
            'import "list"\n$x = list.concat([1], ["a"])\n',
            "t.mcl:2:23: type error: argument 2 of list.concat",
        ),
        (
            'import "list"\n$x = list.concat()\n',
            "t.mcl:2:6: list.concat: expected at least 1 argument, got 0",
        ),
        (
            'import "encoding"\n$t = "int"\n$x = encoding.decode_json("1", $t)\n',
            "t.mcl:3:32: encoding.decode_json: the type must be a constant string",
        ),
        (
            'import "encoding"\n$x = encoding.decode_json("1", "struct{")\n',
            "t.mcl:2:32: encoding.decode_json:",
        ),
        (
            'import "iter"\n$x = iter.range(1, 2, 3, 4)\n',
            "t.mcl:2:6: iter.range: expected 1 or 2 or 3 arguments, got 4",
        ),
        (
            'import "golang/strings"\n$x = strings.nope("a")\n',
            "t.mcl:2:6: module golang/strings has no function nope",
        ),
    ],
)
def test_bad_calls_are_one_line_errors_with_positions(src: str, message: str) -> None:
    found = problems(src)
    assert found[0].startswith(message), found
    assert "\n" not in found[0]


def _iface(root: Path, name: str, flags: int, mac: str, wireless: bool = False) -> None:
    (root / name).mkdir()
    (root / name / "flags").write_text(f"{flags:#x}\n")
    (root / name / "address").write_text(mac + "\n")
    if wireless:
        (root / name / "wireless").mkdir()


def test_net_and_util_read_the_interfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the net streams read (test_netlink_streams follows them on real interfaces)."""
    real = lnet.wired_interface()  # this machine's
    assert re.fullmatch(r"[\d.]+/\d+", lnet.interface_cidr(real))
    with pytest.raises(FuncError, match="interface `lo` has no global-unicast IPv4 address"):
        lnet.interface_cidr("lo")
    monkeypatch.setattr(lnet.Sys, "NET", str(tmp_path))
    _iface(tmp_path, "lo", 0x9, "00:00:00:00:00:00")
    _iface(tmp_path, "eth0", 0x1002, "00:11:22:33:44:55")  # down
    _iface(tmp_path, "wlan0", 0x1003, "aa:bb:cc:dd:ee:ff", wireless=True)
    _iface(tmp_path, "eth1", 0x1003, "00:11:22:33:44:56")  # up: preferred
    assert lnet.wired_interface() == "eth1"
    assert value_of('net.cidr_to_ip("192.168.1.5/24")', 'import "net"') == "192.168.1.5"
    names = '{"00:11:22:33:44:56" => "hostname1", "AA:BB:CC:DD:EE:FF" => "hostname2"}'
    assert value_of(f"util.hostname_mapper({names})", 'import "util"') == "hostname1"
    assert value_of('util.hostname_mapper({"01:02:03:04:05:06" => "x"})', 'import "util"') == ""


NET = 'import "net"\nimport "map"\nimport "os"\nimport "datetime"'


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ('net.macfmt("AA-BB-CC-DD-EE-0F")', "aa:bb:cc:dd:ee:0f"),
        ('net.macfmt("aa:BB:cc:dd:ee:ff")', "aa:bb:cc:dd:ee:ff"),
        ('net.oldmacfmt("AA:BB:CC:DD:EE:FF")', "aa-bb-cc-dd-ee-ff"),
        ('net.is_mac("aa:bb:cc:dd:ee:ff")', True),
        ('net.is_mac("AA:BB:CC:DD:EE:FF")', False),  # not the standard form
        ('net.is_mac("aa-bb-cc-dd-ee-ff")', False),
        ('net.is_mac("aa:bb:cc:dd:ee")', False),
        ('net.macfmt("zz:bb:cc:dd:ee:ff") <|> "bad"', "bad"),
        ('net.ip_in_cidr("10.1.2.3", "10.0.0.0/8")', True),
        ('net.ip_in_cidr("10.1.2.3", "10.0.0.1/16")', False),
        ('net.ip_in_cidr("::ffff:10.1.2.3", "10.0.0.0/8")', True),
        ('net.ip_in_cidr("fe80::1", "fe80::/10")', True),
        ('net.ip_in_cidr("10.1.2.3", "::/0")', False),
        ('net.ip_in_cidr("10.1.2", "10.0.0.0/8") <|> false', False),
        ('net.split_hostport("example.com:80")', Struct({"host": "example.com", "port": "80"})),
        ('net.split_hostport("[::1]:443")', Struct({"host": "::1", "port": "443"})),
        ('net.split_hostport(":80")', Struct({"host": "", "port": "80"})),
        (
            'net.url_parser("HTTPS://user:pw@example.com:8443/a%20b/c?x=1&y=%20#frag")',
            Struct(
                {
                    "scheme": "https",
                    "host": "example.com:8443",
                    "path": "/a b/c",
                    "raw_query": "x=1&y=%20",
                }
            ),
        ),
        ('map.lookup({"a" => 1}, "a")', 1),
        ('map.lookup({"a" => 1}, "b", 7)', 7),
        ('map.lookup({"a" => 1}, "b") <|> -1', -1),
        ('os.expand_home("~root/x/")', "/root/x"),
        ('os.expand_home("/a/~root/x")', "/a/~root/x"),
        ('os.expand_home("~")', "~"),
        ('os.uid("root")', "0"),
    ],
)
def test_mgmts_net_map_and_os_helpers(expr: str, value: object) -> None:
    """tester12's #4: mgmt's functions that were missing (lang/core/net, map/map_lookup.go,
    os/expand_home.go, os/uid.go), with mgmt's types and results."""
    assert value_of(expr, NET) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('net.macfmt("aa:bb")', "invalid MAC address length: aa:bb"),
        ('net.macfmt("aa:bb-cc:dd:ee:ff")', "address aa:bb-cc:dd:ee:ff: invalid MAC address"),
        ('net.ip_in_cidr("x", "10.0.0.0/8")', "invalid IP: x"),
        ('net.ip_in_cidr("10.0.0.1", "10.0.0.0")', "invalid CIDR address: 10.0.0.0"),
        ('net.split_hostport("a:b:c")', "address a:b:c: too many colons in address"),
        ('net.split_hostport("host")', "address host: missing port in address"),
        ('net.split_hostport("[::1:80")', "address \\[::1:80: missing ']' in address"),
        ('net.url_parser("example.com/x")', "empty schemes are invalid"),
        ('map.lookup({"a" => 1}, "b")', 'map key not present, got: "b"'),
        ('os.uid("no-such-user-here")', "unknown user no-such-user-here"),
        ('os.expand_home("~no-such-user-here/x")', "can't expand ~no-such-user-here/"),
    ],
)
def test_mgmts_helpers_errors_are_run_time_errors(expr: str, message: str) -> None:
    with pytest.raises(FuncError, match=message):
        value_of(expr, NET)


def test_expand_home_and_macs_read_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert value_of('os.expand_home("~/a/b")', NET) == str(
        Path(pwd.getpwuid(os.getuid()).pw_dir) / "a" / "b"
    )
    monkeypatch.setattr(lnet.Sys, "NET", str(tmp_path))
    for index, (name, flags, mac) in enumerate(
        [
            ("lo", 0x9, "00:00:00:00:00:00"),
            ("eth9", 0x1003, "00:11:22:33:44:56"),
            ("tun0", 0x1091, ""),
        ],
        start=1,
    ):
        _iface(tmp_path, name, flags, mac)
        (tmp_path / name / "ifindex").write_text(f"{index}\n")
    _iface(tmp_path, "eth0", 0x1002, "00:11:22:33:44:55")
    (tmp_path / "eth0" / "ifindex").write_text("2\n")  # before eth9 (3), by index not name
    (tmp_path / "eth9" / "ifindex").write_text("3\n")
    assert value_of("net.macs()", NET) == ("00:11:22:33:44:55", "00:11:22:33:44:56")


def test_len_and_substr_count_bytes_as_mgmt() -> None:
    """tester12 #10: mgmt's len and strings.substr are Go's, in bytes (lang/core/len.go,
    strings/substring.go); a cut inside a character is an error here (Go makes a string
    that is not UTF-8)."""
    prelude = 'import "strings"'
    assert [value_of(e, prelude) for e in ('len("héllo")', 'len("hello")', 'strings.len("é")')] == [
        6,
        5,
        2,
    ]
    assert value_of('strings.substr("héllo", 0, 3)', prelude) == "hé"
    assert value_of('strings.substr("héllo", 3, 6)', prelude) == "llo"
    assert value_of('strings.substr("héllo", 0, 2) <|> "cut"', prelude) == "cut"
    with pytest.raises(FuncError, match="inside a character"):
        value_of('strings.substr("héllo", 2, 6)', prelude)
    with pytest.raises(FuncError, match=r"out of range: 0, 7 \(the length is 6 bytes\)"):
        value_of('strings.substr("héllo", 0, 7)', prelude)


def test_mgmts_functions_missing_here_say_so() -> None:
    """tester12's #4: not a typo's close-match hint."""
    src = 'import "os"\nimport "sys"\n$a = os.readfilewait("/x")\n$b = sys.smbios()\nimport "sys/fwupd"\n'
    assert problems(src) == [
        "t.mcl:3:6: mgmt has os.readfilewait; not implemented here (docs/language.md, Not supported)",
        "t.mcl:4:6: mgmt has sys.smbios; not implemented here (docs/language.md, Not supported)",
        't.mcl:5:1: import "sys/fwupd": mgmt has sys/fwupd; not implemented here (docs/language.md, Not supported)',
    ]
    assert problems('import "os"\n$a = os.readfil("/x")\n') == [
        "t.mcl:2:6: module os has no function readfil (did you mean 'readfile'?)"
    ]


def test_printf_format_from_a_variable_or_computed_as_in_mgmt() -> None:
    """A format bound to a variable is checked at compile time like a literal; one computed at
    run time (mgmt allows it) is checked against the values when applied."""
    prelude = 'import "fmt"\nimport "strings"'
    assert value_of('fmt.printf($f, "n", 3.5)', f'{prelude}\n$f = "a %s is: %f"') == ("a n is: 3.5")
    computed = 'strings.to_lower("%S=%D")'
    assert value_of(f'fmt.printf({computed}, "a", 1)', prelude) == "a=1"
    with pytest.raises(FuncError, match=r"%d .*needs a value of type int"):
        value_of(f'fmt.printf({computed}, "a", "b")', prelude)
    with pytest.raises(FuncError, match=r"more verbs \(2\) than values \(1\)"):
        value_of(f'fmt.printf({computed}, "a")', prelude)
    (problem,) = problems(f'{prelude}\n$s = fmt.printf(42, "a")')
    assert problem.startswith("t.mcl:3:17: type error: fmt.printf's format: expected str, got int")
