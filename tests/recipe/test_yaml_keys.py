"""Keys that are not names (merge keys ``<<``, lists, mappings, numbers, null, true,
dates, tags) in any YAML file poc-twin reads: one FILE:LINE:COL and exit 2, never a
traceback, and never a back door around the rule against aliases (a valid merge was taken
silently; an invalid one was a KeyError or a TypeError, exit 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from twin import sourcemap
from twin.bench import load_bench
from twin.cli import app
from twin.ensemble.spec import load_spec
from twin.errors import InvalidInput
from twin.recipe import load_recipe
from twin.recipe.approval import load_register
from twin.serve.scenario import load_scenario
from twin.sourcemap import load_yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()
GAS = "  gas: {type: gas_dispenser}\n"
cli = CliRunner()


def validate(tmp_path: Path, recipe: str, bench: str | None = None) -> tuple[int, str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    args = ["validate", str(path)]
    if bench is not None:
        (tmp_path / "bench.yaml").write_text(bench)
        args += ["--bench", str(tmp_path / "bench.yaml")]
    result = cli.invoke(app, args, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("item", "col"),
    [
        ("  gas: {type: gas_dispenser, <<: {on_hold: bogus}}\n", 30),  # was KeyError 'on_hold'
        ("  gas: {type: gas_dispenser, <<: {on_abort: safe}}\n", 30),  # was KeyError 'on_abort'
        # valid had it been written out, and accepted silently:
        ("  gas: {<<: {type: electroporator}, type: gas_dispenser, on_hold: control}\n", 9),
        ("  gas:\n    type: gas_dispenser\n    <<: {on_hold: safe}\n", 5),
        ("  gas: {type: gas_dispenser, !!merge <<: {on_hold: safe}}\n", 30),
        ("  gas: {type: gas_dispenser, ? <<\n    : {on_hold: safe}}\n", 32),
        ("  <<: {gas: {type: gas_dispenser}}\n", 3),
    ],
)
def test_a_merge_key_in_a_recipe_is_refused_where_it_stands(
    tmp_path: Path, item: str, col: int
) -> None:
    text = SMOKE.replace(GAS, item)
    code, out = validate(tmp_path, text)
    assert code == 2, out
    assert f"recipe.yaml:{line_of(text, '<<')}:{col}: YAML merge keys (<<) are not allowed" in out


def test_a_merge_key_in_a_phase_is_refused_where_it_stands(tmp_path: Path) -> None:
    """Was: TypeError cannot unpack non-iterable NoneType (the merged keys have no line)."""
    text = SMOKE.replace(
        "- {phase: set_rocking, rpm: 10}", "- <<: {phase: set_rocking, rpm: 99999}"
    )
    code, out = validate(tmp_path, text)
    assert code == 2, out
    assert f":{line_of(text, '<<')}:13: YAML merge keys" in out


@pytest.mark.parametrize(
    ("item", "col", "expect"),
    [
        ("  ? [gas]\n  : {type: gas_dispenser}\n", 5, "a list as a key"),  # was a TypeError
        ("  [gas]: {type: gas_dispenser}\n", 3, "a list as a key"),
        ("  ? {gas: 1}\n  : {type: gas_dispenser}\n", 5, "a mapping as a key"),
        ("  ? - gas\n  : {type: gas_dispenser}\n", 5, "a list as a key"),
        ("  1: {type: gas_dispenser}\n", 3, "key '1' reads as a number"),
        ("  1.5: {type: gas_dispenser}\n", 3, "key '1.5' reads as a number"),
        ("  0x1f: {type: gas_dispenser}\n", 3, "key '0x1f' reads as a number"),
        ("  null: {type: gas_dispenser}\n", 3, "key 'null' reads as null"),
        ("  ~: {type: gas_dispenser}\n", 3, "key '~' reads as null"),
        ("  : {type: gas_dispenser}\n", 3, "empty key"),
        ("  true: {type: gas_dispenser}\n", 3, "key 'true' reads as true or false"),
        ("  2026-01-01: {type: gas_dispenser}\n", 3, "key '2026-01-01' reads as a date"),
        ("  !!str gas: {type: gas_dispenser}\n", 3, "a tag (tag:yaml.org,2002:str) on a key"),
        ("  !gas gas: {type: gas_dispenser}\n", 3, "a tag (!gas) on a key"),
    ],
)
def test_a_key_that_is_not_a_name_is_refused_where_it_stands(
    tmp_path: Path, item: str, col: int, expect: str
) -> None:
    text = SMOKE.replace(GAS, item)
    code, out = validate(tmp_path, text)
    assert code == 2, out
    line = line_of(text, item.splitlines()[0])
    assert f"recipe.yaml:{line}:{col}: {expect}" in out, out
    assert len(out.strip().splitlines()) == 1, out


def test_yes_in_a_yaml_1_1_file_reads_as_true_and_is_refused(tmp_path: Path) -> None:
    text = "%YAML 1.1\n---\n" + SMOKE.replace("  gas: {", "  yes: {")
    code, out = validate(tmp_path, text)
    assert code == 2 and f":{line_of(text, 'yes:')}:3: key 'yes' reads as true or false" in out


def test_keys_quoted_or_spelled_as_text_are_names(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("'<<': 1\n\"1\": 2\nyes: 3\n'null': 4\n? gas\n: 5\n=: 6\na: [b: 1]\n")
    data, _ = load_yaml(path)
    assert list(data) == ["<<", "1", "yes", "null", "gas", "=", "a"]
    assert all(isinstance(k, str) for k in data["a"][0])


def test_a_non_text_key_past_the_event_check_is_refused_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after loading: whatever a parser reads as a key that is not text (here,
    with the event check off) is named at its line, never handed on."""
    monkeypatch.setattr(sourcemap, "_check_events", lambda file, text: None)
    path = tmp_path / "keys.yaml"
    path.write_text("a:\n  b: 1\n  2: x\n")
    with pytest.raises(InvalidInput) as err:
        load_yaml(path)
    (problem,) = err.value.problems
    assert (problem.line, problem.col) == (3, 3) and "is not text" in problem.message


BENCH = (ROOT / "benches" / "sim.yaml").read_text()


@pytest.mark.parametrize(
    ("added", "expect"),
    [
        ("<<: {clock: sundial}\n", "YAML merge keys"),  # was KeyError 'clock'
        ("? [clock]\n: sundial\n", "a list as a key"),
        ("1: sundial\n", "key '1' reads as a number"),
        ("null: sundial\n", "key 'null' reads as null"),
    ],
)
def test_a_bench_with_a_key_that_is_not_a_name_is_refused(
    tmp_path: Path, added: str, expect: str
) -> None:
    code, out = validate(tmp_path, SMOKE, bench=BENCH + added)
    line = len(BENCH.splitlines()) + 1
    assert code == 2 and f"bench.yaml:{line}:" in out and expect in out, out


LOADERS: list[tuple[str, Path, Callable[[Path], Any]]] = [
    ("recipe", ROOT / "recipes" / "smoke.yaml", load_recipe),
    ("bench", ROOT / "benches" / "sim.yaml", load_bench),
    ("register", ROOT / "benches" / "approved-recipes.yaml", load_register),
    ("spec", ROOT / "recipes" / "specs" / "release-spec.yaml", load_spec),
    ("scenario", sorted((ROOT / "hil_tests" / "scenarios").glob("*.yaml"))[0], load_scenario),
]


@pytest.mark.parametrize(("kind", "shipped", "load"), LOADERS, ids=[k for k, *_ in LOADERS])
@pytest.mark.parametrize("added", ["<<: {x: 1}", "[x]: 1", "2: x", "~: x", "false: x"])
def test_every_yaml_file_the_cli_reads_refuses_them(
    tmp_path: Path, kind: str, shipped: Path, load: Callable[[Path], Any], added: str
) -> None:
    text = shipped.read_text()
    load(shipped)  # the shipped file itself loads
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text + added + "\n")
    with pytest.raises(InvalidInput) as err:
        load(path)
    (problem,) = err.value.problems
    assert (problem.line, problem.col) == (len(text.splitlines()) + 1, 1), problem
