"""mgmt's `$const.res.<kind>.<param>.<value>`: the fixed values of resource params."""

from __future__ import annotations

from tests.mgmt.lang.helpers import problems, run, value_of


def test_constants_are_the_values_of_params_with_fixed_choices() -> None:
    assert value_of("$const.res.file.state.exists") == "exists"
    assert value_of("$const.res.svc.state.running") == "running"
    rt = run('file "/t/x" { state => $const.res.file.state.absent }\n')
    _changed, items, error = rt.evaluate()
    assert error is None and dict(items[0].params)["state"] == "absent"
    assert value_of('"${const.res.file.state.exists}!"') == "exists!"  # in a string too


def test_unknown_constants_and_package_variables_are_errors() -> None:
    assert "unknown constant $const.res.file.state.gone" in "\n".join(
        problems('$x = $const.res.file.state.gone\nnoop "n" {}\n')
    )
    assert "unknown constant $const.res.file.path.x" in "\n".join(
        problems('$x = $const.res.file.path.x\nnoop "n" {}\n')  # path has no fixed values
    )
    assert "$fmt.x: the built-in module fmt has functions only" in "\n".join(
        problems('import "fmt"\n$x = $fmt.x\nnoop "n" {}\n')
    )


def test_elvis_sets_a_param_only_while_its_condition_holds() -> None:
    """mgmt's `param => cond ?: value` (and for Meta:): unset while cond is false."""
    src = """
    $b = {flag}
    file "/t/x" {{
        state => "exists",
        content => $b ?: "hello\\n",
        Meta:noop => not $b ?: true,
    }}
    """
    for flag, params, meta in (
        ("true", {"state": "exists", "content": "hello\n"}, {}),
        ("false", {"state": "exists"}, {"noop": True}),
    ):
        _changed, items, error = run(src.format(flag=flag)).evaluate()
        assert error is None
        assert dict(items[0].params) == params and dict(items[0].meta) == meta


def test_an_elvis_condition_must_be_a_bool() -> None:
    assert "the condition of content (before ?:): expected bool, got int" in "\n".join(
        problems('file "/t/x" { content => 1 ?: "x" }\n')
    )
