"""Recipes: shipped ones validate; every malformed one gets FILE:LINE:COL and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.errors import InvalidInput
from twin.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))

HEADER = """recipe:
  id: t
  product: test
  version: "1"
  status: draft
  author: me
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
procedure:
  - unit_procedure: u
    operations:
      - operation: a
        phases:
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as exc:
        load_recipe(path)
    return [str(p).replace(str(path), "R") for p in exc.value.problems]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path) -> None:
    loaded = load_recipe(path)
    assert loaded.model.procedure
    assert len(loaded.sha256) == 64


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    got = problems(tmp_path, HEADER + "          - {phase: add, volume_ml: [1,\n")
    assert len(got) == 1
    assert got[0].startswith("R:16:1: YAML syntax: ")


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    got = problems(tmp_path, HEADER + "          - {phase: set_temperature, setpiont_c: 37}\n")
    assert "R:15:38: unknown key 'setpiont_c' (did you mean 'setpoint_c'?)" in got
    assert "R:15:13: missing required key 'setpoint_c'" in got


def test_unknown_phase_did_you_mean(tmp_path: Path) -> None:
    got = problems(tmp_path, HEADER + "          - {phase: set_temprature, setpoint_c: 37}\n")
    assert got == ["R:15:13: unknown phase type 'set_temprature' (did you mean 'set_temperature'?)"]


def test_all_problems_at_once(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        HEADER
        + "          - {phase: add, material: plasma, volume_ml: 1}\n"
        + "          - {phase: culture, duration_h: -4}\n"
        + "          - {phase: set_rocking, rpm: fast}\n",
    )
    assert len(got) == 3
    assert got[0].startswith("R:15:") and "material" in got[0]
    assert got[1].startswith("R:16:") and "greater than 0" in got[1]
    assert got[2].startswith("R:17:") and "valid number" in got[2]


def test_undeclared_equipment(tmp_path: Path) -> None:
    got = problems(
        tmp_path, HEADER + "          - {phase: set_rocking, bioreactor: bag2, rpm: 5}\n"
    )
    assert got == [
        "R:15:46: phase 'set_rocking' uses equipment 'bag2', which the recipe's equipment list "
        "does not declare (declared: bioreactor, gas)"
    ]


def test_equipment_of_wrong_type(tmp_path: Path) -> None:
    got = problems(tmp_path, HEADER + "          - {phase: set_rocking, bioreactor: gas, rpm: 5}\n")
    assert got == ["R:15:46: equipment 'gas' is a gas_dispenser, this phase needs a bioreactor"]


def test_content_hash_pins_the_text(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    text = (ROOT / "recipes" / "smoke.yaml").read_text()
    a.write_text(text)
    b.write_text(text.replace("duration_h: 6", "duration_h: 7"))
    assert load_recipe(a).sha256 == load_recipe(ROOT / "recipes" / "smoke.yaml").sha256
    assert load_recipe(a).sha256 != load_recipe(b).sha256


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"nope.yaml:1:1: cannot read file"):
        load_recipe(tmp_path / "nope.yaml")
