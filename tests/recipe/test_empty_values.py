"""A key written and left empty (``key:``, ``key: null``, ``key: ~``) is refused at its key,
exit 2, in every YAML file poc-twin reads. It was taken as not written: an empty
``min_viability_pct:`` silently dropped an acceptance check from the batch, an empty limit
``max:`` a release criterion. Leaving the key out still gives the default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

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
cli = CliRunner()
EMPTY = "written but empty: declare a value, or leave the key out for the default"
SPELLINGS = ["", " null", " ~", " Null", " NULL", " !!null ''"]

SAMPLE = "          - {phase: sample, name: in-process check, min_viability_pct: 50}\n"
CULTURE = "            perfusion: {start_at_cells_per_ml: 5.0e+5, volumes_per_day: 0.5}\n"
HARVEST = "          - {phase: harvest}\n"

#: (where in smoke.yaml, what it becomes with KEY left empty): each optional key the
#: schema takes as None = not written, written in block style, its value on the next line.
BLOCK = [
    ("min_viability_pct", SAMPLE, "          - phase: sample\n            min_viability_pct:{v}\n"),
    (
        "min_viable_cells_per_ml",
        SAMPLE,
        "          - phase: sample\n            min_viable_cells_per_ml:{v}\n",
    ),
    ("do_setpoint_pct", "            do_setpoint_pct: 40\n", "            do_setpoint_pct:{v}\n"),
    ("ph_setpoint", CULTURE, CULTURE + "            ph_setpoint:{v}\n"),
    ("perfusion", CULTURE, "            perfusion:{v}\n"),
    ("sample_every_h", "            sample_every_h: 2\n", "            sample_every_h:{v}\n"),
    ("target", CULTURE, CULTURE + "            target:{v}\n"),
    ("until", HARVEST, "          - phase: wait\n            until:{v}\n" + HARVEST),
    ("approved_by", "  author: Process Development\n", "  author: x\n  approved_by:{v}\n"),
    ("approved_on", "  author: Process Development\n", "  author: x\n  approved_on:{v}\n"),
    ("name", SAMPLE, "          - phase: sample\n            name:{v}\n"),
    (
        "on_hold",
        "  gas: {type: gas_dispenser}\n",
        "  gas:\n    type: gas_dispenser\n    on_hold:{v}\n",
    ),
    ("monitors", "procedure:\n", "monitors:{v}\n\nprocedure:\n"),
    ("parameters", "procedure:\n", "parameters:{v}\n\nprocedure:\n"),
]


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = cli.invoke(app, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("key", "old", "new"), BLOCK, ids=[k for k, *_ in BLOCK])
def test_an_optional_key_left_empty_in_block_style_is_refused_on_its_own_line(
    tmp_path: Path, key: str, old: str, new: str, spelling: str
) -> None:
    """Each of these was taken as not written (a check dropped, a loop not run, a label
    blank) and the batch ran. The problem is on the key's line, not the next key's."""
    assert old in SMOKE
    text = SMOKE.replace(old, new.replace("{v}", spelling), 1)
    line = line_of(text, f"{key}:")
    col = text.splitlines()[line - 1].index(f"{key}:") + 1
    out = refused(tmp_path, text)
    assert f"r.yaml:{line}:{col}: {key}: {EMPTY}" in out, out
    assert out.count(f"{key}:") == 1, out  # said once: not also as "not a valid number"


@pytest.mark.parametrize("spelling", ["", "null", "~"])
@pytest.mark.parametrize(
    "key", ["min_viability_pct", "min_viable_cells_per_ml", "name", "bioreactor", "qc"]
)
def test_an_optional_key_left_empty_in_flow_style_is_refused_at_the_key(
    tmp_path: Path, key: str, spelling: str
) -> None:
    text = SMOKE.replace(SAMPLE, f"          - {{phase: sample, {key}: {spelling}}}\n", 1)
    line = line_of(text, "phase: sample")
    col = text.splitlines()[line - 1].index(f"{key}:") + 1
    out = refused(tmp_path, text)
    assert f"r.yaml:{line}:{col}: {key}: {EMPTY}" in out, out


def test_every_key_left_empty_is_named_with_the_other_problems(tmp_path: Path) -> None:
    """All at once, with the schema's problems; a misspelt key left empty is named as
    unknown (with its did-you-mean), not as empty."""
    text = SMOKE.replace(
        SAMPLE,
        "          - {phase: sample, min_viability_pct: , min_viabilty_pct: ~, qc: [bogus]}\n",
    ).replace("            do_setpoint_pct: 40\n", "            do_setpoint_pct:\n")
    out = refused(tmp_path, text)
    assert f"do_setpoint_pct: {EMPTY}" in out
    assert f"min_viability_pct: {EMPTY}" in out
    assert "unknown key 'min_viabilty_pct' (did you mean 'min_viability_pct'?)" in out
    assert f"min_viabilty_pct: {EMPTY}" not in out
    assert "Input should be 'sterility'" in out  # qc: [bogus]


def test_a_parameter_left_empty_is_refused_and_leaving_value_out_still_asks_for_it(
    tmp_path: Path,
) -> None:
    params = (
        "parameters:\n  rate:\n  volume: {value: , min: 1 mL}\n  speed: {value: 10, max: ~}\n\n"
    )
    text = SMOKE.replace("equipment:\n", params + "equipment:\n", 1)
    out = refused(tmp_path, text)
    assert f":{line_of(text, 'rate:')}:3: rate: {EMPTY}" in out
    assert f"value: {EMPTY}" in out and f"max: {EMPTY}" in out
    assert "Input should be a valid dictionary" not in out
    fine = SMOKE.replace("equipment:\n", "parameters:\n  volume: {min: 1 mL}\n\nequipment:\n")
    (tmp_path / "ok.yaml").write_text(fine)
    with pytest.raises(InvalidInput) as err:
        load_recipe(tmp_path / "ok.yaml")
    assert "missing parameter 'volume'" in str(err.value.problems)
    assert load_recipe(tmp_path / "ok.yaml", {"volume": "2 mL"}).parameters == {"volume": "2 mL"}


def test_run_refuses_a_recipe_with_a_key_left_empty_before_any_journal(tmp_path: Path) -> None:
    text = SMOKE.replace("min_viability_pct: 50", "min_viability_pct: ", 1)
    (tmp_path / "r.yaml").write_text(text)
    journal = tmp_path / "j.sqlite"
    result = cli.invoke(app, ["run", str(tmp_path / "r.yaml"), "--journal", str(journal), "-q"])
    assert result.exit_code == 2, result.output
    assert f"r.yaml:{line_of(text, 'min_viability_pct')}:" in result.output
    assert f"min_viability_pct: {EMPTY}" in result.output
    assert not journal.exists()


#: Every YAML file poc-twin reads, with a line of each whose value is then left empty.
LOADERS: list[tuple[str, Path, Callable[[Path], Any], str]] = [
    ("recipe", ROOT / "recipes" / "smoke.yaml", load_recipe, "min_viability_pct: 50"),
    ("bench", ROOT / "benches" / "sim.yaml", load_bench, "  seed: 42"),
    ("bench-config", ROOT / "benches" / "example-lab.yaml", load_bench, "watchdog_s: 5.0"),
    (
        "register",
        ROOT / "benches" / "approved-recipes.yaml",
        load_register,
        "approved_by: QA Release",
    ),
    ("spec", ROOT / "recipes" / "specs" / "release-spec.yaml", load_spec, "ready_by: 10 d"),
    (
        "spec-limit",
        ROOT / "recipes" / "specs" / "release-spec.yaml",
        load_spec,
        "max: 10 copies/cell",
    ),
    (
        "scenario",
        ROOT / "hil_tests" / "scenarios" / "matrix" / "bioreactor_silent.yaml",
        load_scenario,
        "  alarm: {kind: communication, source: bioreactor}",
    ),
]


@pytest.mark.parametrize(
    ("kind", "shipped", "load", "written"), LOADERS, ids=[k for k, *_ in LOADERS]
)
@pytest.mark.parametrize("spelling", ["", " null", " ~"])
def test_every_yaml_file_the_cli_reads_refuses_a_key_left_empty(
    tmp_path: Path,
    kind: str,
    shipped: Path,
    load: Callable[[Path], Any],
    written: str,
    spelling: str,
) -> None:
    """The same rule everywhere: an empty ``ready_by:`` or limit ``max:`` dropped a release
    criterion, an empty ``watchdog_s:`` took the computed default, an empty ``alarm:``
    expected a batch with no alarm. No shipped file leaves a key empty."""
    text = shipped.read_text()
    load(shipped)  # the shipped file itself loads
    assert written in text
    key = written.strip().split(":")[0]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text.replace(written, written.split(":")[0] + ":" + (spelling or " "), 1))
    with pytest.raises(InvalidInput) as err:
        load(path)
    line = line_of(text, written)
    col = text.splitlines()[line - 1].index(key) + 1
    assert f"{path}:{line}:{col}: {key}: {EMPTY}" in [str(p) for p in err.value.problems]


@pytest.mark.parametrize(
    "path",
    sorted(
        [
            *(ROOT / "recipes").rglob("*.yaml"),
            *(ROOT / "benches").glob("*.yaml"),
            *(ROOT / "hil_tests" / "scenarios").rglob("*.yaml"),
        ]
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_shipped_yaml_file_leaves_a_key_empty(path: Path) -> None:
    """So none of them (nor a journal recording one) is refused by the rule."""
    _, source = load_yaml(path)
    assert source.empty == []
