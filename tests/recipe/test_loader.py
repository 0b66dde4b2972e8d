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
    assert got[2] == "R:17:39: rpm: expected a rotation such as '12 rpm', got 'fast'"


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
    assert got == [
        "R:15:46: equipment 'gas' is a gas_dispenser, phase 'set_rocking' needs a bioreactor"
    ]


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


def test_values_with_units_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        HEADER + "          - {phase: culture, duration_h: 2 d, poll_s: 1 min}\n"
        "          - {phase: add, material: il2, volume_ml: 500 uL}\n"
    )
    phases = load_recipe(path).model.procedure[0].operations[0].phases
    assert phases[0].duration_h == 48.0 and phases[0].poll_s == 60.0
    assert phases[1].volume_ml == 0.5


def test_wrong_unit_is_named(tmp_path: Path) -> None:
    got = problems(tmp_path, HEADER + "          - {phase: set_temperature, setpoint_c: 37 h}\n")
    assert got == ["R:15:50: setpoint_c: '37 h' is a time; expected a temperature in °C, degC, C"]


PARAMS = HEADER.replace(
    "equipment:",
    """parameters:
  culture_temp: {value: 37 °C, min: 36 °C, max: 38 °C}
  vector: {min: 1 mL, max: 10 mL, description: lentiviral vector volume for MOI 5}
equipment:""",
)


def test_parameters_are_substituted_and_range_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        PARAMS + "          - {phase: set_temperature, setpoint_c: $culture_temp}\n"
        "          - {phase: add, material: vector, volume_ml: $vector}\n"
    )
    loaded = load_recipe(path, {"vector": "6 mL"})
    phases = loaded.model.procedure[0].operations[0].phases
    assert phases[0].setpoint_c == 37.0 and phases[1].volume_ml == 6.0
    assert loaded.parameters == {"culture_temp": "37 °C", "vector": "6 mL"}
    with pytest.raises(
        InvalidInput,
        match=r"p.yaml:9:3: missing parameter 'vector': give it "
        r"with --param vector=VALUE",
    ):
        load_recipe(path)
    with pytest.raises(
        InvalidInput, match=r"parameter 'vector' = 20 mL is above the maximum 10 mL"
    ):
        load_recipe(path, {"vector": "20 mL"})
    with pytest.raises(InvalidInput, match=r"--param volume: the recipe has no such parameter"):
        load_recipe(path, {"vector": "6 mL", "volume": "1"})


def test_unknown_parameter_reference(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        PARAMS.replace("  vector: {min", "  vector: {value: 5 mL, min")
        + "          - {phase: set_temperature, setpoint_c: $culture_temperature}\n",
    )
    assert got == ["R:18:50: unknown parameter 'culture_temperature' (known: culture_temp, vector)"]


def test_schema_and_reference_problems_come_together(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        HEADER
        + "          - {phase: set_rocking, rpm: fast}\n"
        + "          - {phase: add, bioreactor: bag9, material: il2, volume_ml: 1}\n"
        + "          - {phase: sample, monitors: [{pv: ph, low: 6.8, equipment: gas}]}\n",
    )
    assert [p.split(":")[1] for p in got] == ["15", "16", "17"]
    assert "expected a rotation" in got[0]
    assert "uses equipment 'bag9'" in got[1]
    assert "equipment 'gas' is a gas_dispenser, this monitor needs a bioreactor" in got[2]


@pytest.mark.parametrize(
    ("phase", "words"),
    [
        ("{phase: add, material: medium, moi: 5}", "'moi' doses a vector"),
        ("{phase: add, material: vector, moi: 5}", "needs the vector's 'titre'"),
        (
            "{phase: add, material: vector, moi: 5, titre: 5 mL, max_volume_ml: 9}",
            "'5 mL' is a volume; expected a titre in TU/mL",
        ),
        ("{phase: add, material: vector, volume_ml: 5, moi: 5}", "exactly one of 'volume_ml'"),
        ("{phase: culture, duration_h: 2, target: {viable_cells: 1e9}}", "give 'sample_every_h'"),
        # samples with no culture time between them: a 1 h culture ran 37 h, draining the bag
        ("{phase: culture, duration_h: 1, sample_every_h: 1e-9}", "greater than or equal to 0.25"),
        ("{phase: culture, duration_h: 1, sample_every_h: 0.2}", "greater than or equal to 0.25"),
        ("{phase: culture, duration_h: 1, sample_every_h: 10 min}", "greater than or equal to 0.2"),
        (
            "{phase: culture, duration_h: 48, sample_every_h: 24,"
            " target: {car_positive_cells_per_kg: 2e6 cells/kg}}",
            "needs the 'patient_weight'",
        ),
        (
            "{phase: culture, duration_h: 48, sample_every_h: 24,"
            " target: {viable_cells: 1e9, patient_weight: 70 kg}}",
            "needs the 'patient_weight' (and only it)",
        ),
        (
            "{phase: culture, duration_h: 48, sample_every_h: 24,"
            " feeds: [{volume_ml: 20, when_glucose_below: 5 h}]}",
            "'5 h' is a time; expected a concentration",
        ),
        (
            "{phase: culture, duration_h: 48, perfusion: {start_at_cells_per_ml: 2e6,"
            " volumes_per_day: 0.5, ramp: [{at_cells_per_ml: 1e6, volumes_per_day: 1}]}}",
            "perfusion ramp densities must rise",
        ),
    ],
)
def test_quantities_from_measurements_are_checked_at_validate_time(
    tmp_path: Path, phase: str, words: str
) -> None:
    found = problems(tmp_path, HEADER + f"          - {phase}\n")
    assert any(words in p and p.startswith("R:15:") for p in found), found
