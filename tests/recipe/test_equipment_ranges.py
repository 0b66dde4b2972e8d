"""A recipe asks only what the bench's equipment can do: checked before anything starts,
each out-of-range value on its own line (issue 18: 100 L into a bag, 1,000,000 V, 1e9
pulses, a 1e9 µs pulse passed `validate` and then hung the batch)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app

ROOT = Path(__file__).resolve().parents[2]
NONVIRAL = (ROOT / "recipes" / "car_t_nonviral.yaml").read_text()
SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()
cli = CliRunner()


def validate(tmp_path: Path, text: str, *params: str) -> tuple[int, str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    args = ["validate", str(path)]
    for p in params:
        args += ["--param", p]
    result = cli.invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.output


ADDS = """\
recipe: {{id: adds, product: adds test, version: 1.0.0, status: draft, author: me}}
equipment:
  bioreactor: {{type: bioreactor}}
  gas: {{type: gas_dispenser}}
procedure:
  - unit_procedure: u
    operations:
      - operation: o
        phases:
{phases}
"""


@pytest.mark.parametrize(
    ("phases", "refused_at"),
    [
        (["{phase: add, material: medium, volume_ml: 900}"] * 2, 11),  # 100 + 900 + 900
        (["{phase: add, material: medium, volume_ml: 450}"] * 3, 12),  # the third one
        (
            [
                "{phase: add, material: medium, volume_ml: 800}",
                "{phase: harvest}",  # the bag is drained: room again
                "{phase: add, material: medium, volume_ml: 800}",
                "{phase: add, material: il2, volume_ml: 250}",  # 800 + 250 after the harvest
            ],
            13,
        ),
        (["{phase: add, material: medium, volume_ml: 450}"] * 2, None),  # 1,000 mL: fits
    ],
)
def test_additions_that_together_overfill_the_bag_are_refused_at_the_one_that_would(
    tmp_path: Path, phases: list[str], refused_at: int | None
) -> None:
    """Each addition fits the bag alone, but together with the twin's 100 mL inoculum and
    those before it one would take the bag past its working volume (1,000 mL): refused
    at that one before the batch starts. Before, the recipe validated, ran, and the
    device refused the addition mid-batch (the batch held)."""
    text = ADDS.format(phases="\n".join(f"          - {p}" for p in phases))
    code, out = validate(tmp_path, text)
    if refused_at is None:
        assert code == 0, out
        return
    assert code == 2 and f"r.yaml:{refused_at}:" in out, out
    assert "over its working volume of 1000 mL" in out and out.count("r.yaml:") == 1, out


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("volume_ml: 2.0", "volume_ml: 100 L", "volume_ml"),
        ("volume_ml: 2.0", "volume_ml: 1e9 mL", "volume_ml"),
    ],
)
def test_an_addition_larger_than_the_bag_is_refused(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    assert old in SMOKE
    text = SMOKE.replace(old, new, 1)
    code, out = validate(tmp_path, text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if new in s)
    assert code == 2 and f"r.yaml:{line}:" in out and "working volume" in out, out


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("voltage_v", "1000000", "voltage_v 1e+06 V is outside"),
        ("pulse_width_us", "1e9", "pulse_width_us 1e+09 µs is outside"),
        ("pulse_count", "1000000000", "pulse_count 1e+09 pulses is outside"),
        ("chamber_ul", "1e7", "chamber_ul 1e+07 µL is outside"),
        ("gap_mm", "40", "gap_mm 40 mm is outside"),
    ],
)
def test_a_pulse_program_beyond_the_electroporator_is_refused(
    tmp_path: Path, field: str, value: str, says: str
) -> None:
    text = re.sub(rf"(?m)^(\s+{field}): .*$", rf"\1: {value}", NONVIRAL, count=1)
    assert text != NONVIRAL
    line = next(i for i, s in enumerate(text.splitlines(), 1) if f"{field}: {value}" in s)
    code, out = validate(tmp_path, text, "pulse_voltage=700")
    assert code == 2 and f"r.yaml:{line}:" in out and says in out, out


def test_the_shipped_non_viral_recipe_is_within_its_bench() -> None:
    result = cli.invoke(
        app,
        ["validate", str(ROOT / "recipes" / "car_t_nonviral.yaml"), "--param", "pulse_voltage=700"],
    )
    assert result.exit_code == 0, result.output
