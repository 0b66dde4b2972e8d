"""Property-based fuzzing of recipe and bench files (Hypothesis, bounded, derandomized so a
CI failure reproduces): whatever the bytes, loading and checking a file either succeeds or
raises InvalidInput with FILE:LINE:COL problems; never another exception, never a hang."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.bench import load_bench
from twin.errors import InvalidInput
from twin.recipe import load_recipe
from twin.recipe.limits import check_against_bench

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()
NONVIRAL = (ROOT / "recipes" / "car_t_nonviral.yaml").read_text()
BENCH_TEXT = (ROOT / "benches" / "sim.yaml").read_text()
BENCH = load_bench(ROOT / "benches" / "sim.yaml")

#: CI runs a fixed, derandomized 150 cases per property; FUZZ_EXAMPLES=5000 FUZZ_RANDOM=1
#: for a longer hunt (every finding becomes a regression test in test_bad_files.py).
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=2000,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Values a careless or hostile writer puts where a number, name or unit should be.
hostile_scalar = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.sampled_from(
        [
            ".inf",
            "-.inf",
            ".nan",
            "1e999",
            "1e999 mL",
            "100 L",
            "-0",
            "0x1F",
            "1_000",
            "~",
            "null",
            "[]",
            "{}",
            "''",
            "[/]",
            "[bold]x",
            "../../x",
            "２０",
            "1e-400 mL",
            "37 °F",
            "*alias",
            "&anchor x",
            "!!python/object:os.system x",
            "{a: [1, {b: 2}]}",
            "<<",
            "{<<: {a: 1}}",
            "{[a]: 1}",
        ]
    ),
    st.text(alphabet=string.printable + "°µ²₂éü漢", max_size=40),
)

#: Keys that are not names: merges, collections, numbers, null, booleans, dates, tags.
hostile_key = st.one_of(
    st.sampled_from(
        [
            "<<",
            "!!merge <<",
            "? <<\n",
            "[a]",
            "{a: 1}",
            "? [a]\n",
            "1",
            "-1.5",
            "0x1f",
            "~",
            "null",
            "true",
            "False",
            "2026-01-01",
            "!!str a",
            "!tag a",
            "'<<'",
            '"1"',
        ]
    ),
    st.text(alphabet=string.printable + "°µ漢", max_size=20),
)


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def load_and_check(path: Path) -> None:
    try:
        recipe = load_recipe(
            path,
            {"pulse_voltage": "700"}
            if "pulse_voltage" in path.read_text(errors="replace")
            else None,
        )
        check_against_bench(recipe, BENCH)
    except InvalidInput as exc:
        assert exc.problems and all(p.line >= 1 and p.col >= 1 and p.message for p in exc.problems)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_are_a_clear_problem(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    path.write_bytes(data)
    load_and_check(path)


@FUZZ
@given(recipe=st.sampled_from([SMOKE, NONVIRAL]), line=st.integers(0, 200), value=hostile_scalar)
def test_a_hostile_value_on_any_recipe_line_is_a_clear_problem(
    tmp_path_factory, recipe: str, line: int, value: str
) -> None:
    lines = recipe.splitlines()
    n = line % len(lines)
    key, sep, _ = lines[n].partition(": ")
    lines[n] = f"{key}{sep}{value}" if sep else lines[n] + value
    load_and_check(write(tmp_path_factory.mktemp("fuzz"), "r.yaml", "\n".join(lines) + "\n"))


@FUZZ
@given(recipe=st.sampled_from([SMOKE, NONVIRAL]), line=st.integers(0, 200), key=hostile_key)
def test_a_hostile_key_on_any_recipe_line_is_a_clear_problem(
    tmp_path_factory, recipe: str, line: int, key: str
) -> None:
    """Merge keys and keys that are not text were a KeyError or a TypeError (exit 1)."""
    lines = recipe.splitlines()
    n = line % len(lines)
    old, sep, value = lines[n].partition(": ")
    indent = old[: len(old) - len(old.lstrip(" -"))]
    lines[n] = f"{indent}{key}{sep}{value}" if sep else lines[n]
    load_and_check(write(tmp_path_factory.mktemp("fuzz"), "r.yaml", "\n".join(lines) + "\n"))


@FUZZ
@given(line=st.integers(0, 200), value=hostile_scalar)
def test_a_hostile_value_on_any_bench_line_is_a_clear_problem(
    tmp_path_factory, line: int, value: str
) -> None:
    lines = BENCH_TEXT.splitlines()
    n = line % len(lines)
    key, sep, _ = lines[n].partition(": ")
    lines[n] = f"{key}{sep}{value}" if sep else lines[n] + value
    path = write(tmp_path_factory.mktemp("fuzz"), "bench.yaml", "\n".join(lines) + "\n")
    try:
        load_bench(path)
    except InvalidInput as exc:
        assert exc.problems and all(p.line >= 1 and p.message for p in exc.problems)


RECIPES = {
    "smoke": SMOKE,
    "car_t_nonviral": NONVIRAL,
    "car_t_autologous": (ROOT / "recipes" / "car_t_autologous.yaml").read_text(),
}
#: A key and its plain value: on a block-style line (``key: value`` to the end of the line,
#: after ``- `` too) or as one entry of a flow mapping (``{a: 1, key: value}``, to , or }).
_BLOCK = re.compile(r"^[ -]*([a-z_][a-z0-9_]*): (?![\x22'])([^{\[#\n]*[^{\[#\s])")
_FLOW = re.compile(
    r"(?:(?<=\{)|(?<=, )|^ +)([a-z_][a-z0-9_]*): (?![\x22'])([^,{}\[\]#\n]*[^,{}\[\]#\s])"
)


def _keyed_values() -> list[tuple[str, int, str, int, int]]:
    """Every such place in the shipped recipes: (recipe, line index, key, its start, the
    value's end)."""
    places = []
    for name, text in RECIPES.items():
        depth = 0  # open flow mappings and lists (a flow mapping may go on over lines)
        for n, line in enumerate(text.splitlines()):
            if line.lstrip().startswith("#"):
                continue
            pattern = _FLOW if depth or "{" in line else _BLOCK
            places += [(name, n, m.group(1), m.start(1), m.end(2)) for m in pattern.finditer(line)]
            depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
    return places


KEYED_VALUES = _keyed_values()


@FUZZ
@given(
    place=st.sampled_from(KEYED_VALUES),
    empty=st.sampled_from(["", "null", "~", "Null", "NULL", "!!null ''"]),
)
def test_any_key_of_a_recipe_left_empty_is_refused_at_that_key(
    tmp_path_factory, place: tuple[str, int, str, int, int], empty: str
) -> None:
    """Whatever key of a shipped recipe (of the header, a parameter, an item, a monitor, a
    phase, a nested perfusion or target) is left empty, in block or flow style, the recipe
    is refused with that key named, at its line and column. Before, an optional one was
    taken as not written: ``min_viability_pct:`` dropped a check and the batch ran."""
    recipe, n, key, start, end = place
    lines = RECIPES[recipe].splitlines()
    lines[n] = f"{lines[n][:start]}{key}: {empty}{lines[n][end:]}"
    path = write(tmp_path_factory.mktemp("fuzz"), "r.yaml", "\n".join(lines) + "\n")
    with pytest.raises(InvalidInput) as err:
        load_recipe(path)
    where = (n + 1, start + 1)
    assert any(
        (p.line, p.col) == where and p.message.startswith(f"{key}: written but empty")
        for p in err.value.problems
    ), (lines[n], err.value.problems)
