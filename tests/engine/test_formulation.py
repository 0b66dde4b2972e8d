"""The patient's dose formulated from the harvest (issue 16): drawn from what the harvest
really holds, refused (nothing formulated, the batch held) when it holds less than one dose or
the bag would be too dense, and a recipe that formulates before harvesting does not start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from batch_harness import ROOT, S, finished
from typer.testing import CliRunner

from twin.cli import app
from twin.report.outcome import outcome_rows
from twin.report.record import build_record

SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()
HARVEST = "          - {phase: harvest}\n"


def formulating(dose_per_kg: str, weight: str, volume: str = "70 mL", extra: str = "") -> str:
    """The smoke recipe with a formulation after its harvest."""
    step = (
        f"          - {{phase: formulate, dose_per_kg: {dose_per_kg}, "
        f"patient_weight: {weight}, final_volume_ml: {volume}{extra}}}\n"
    )
    return SMOKE.replace(HARVEST, HARVEST + step)


async def test_the_dose_is_drawn_from_what_the_harvest_holds(running: Any) -> None:
    run = await running("f.yaml", formulating("1.0e+4 cells/kg", "10 kg", "50 mL"))
    assert await finished(run) is S.COMPLETE
    (harvest,) = run.kinds("harvest")
    (formulation,) = run.kinds("formulation")
    h, f = harvest.data, formulation.data
    car_per_ml = h["viable_cells_per_ml"] * h["transduced_pct"] / 100.0
    assert f["dose_car_positive_cells"] == pytest.approx(1.0e5)
    assert f["harvest_drawn_ml"] == pytest.approx(1.0e5 / car_per_ml, rel=1e-3)
    assert f["harvest_drawn_ml"] + f["retained_ml"] == pytest.approx(h["volume_ml"], abs=0.02)
    assert f["doses_in_harvest"] == pytest.approx(car_per_ml * h["volume_ml"] / 1.0e5, rel=1e-2)
    # All the viable cells drawn (CAR+ or not) go into the bag's volume.
    drawn = f["harvest_drawn_ml"] * h["viable_cells_per_ml"]
    assert f["viable_cells"] == pytest.approx(drawn, rel=1e-3)
    assert f["viable_cells_per_ml"] == pytest.approx(drawn / 50.0, rel=1e-3)
    assert formulation.seq > harvest.seq


async def test_a_harvest_short_of_one_dose_is_not_formulated(running: Any) -> None:
    run = await running("f.yaml", formulating("5.0e+6 cells/kg", "150 kg"))
    await run.until_state(S.HELD)  # a failed phase holds the batch for a person to decide
    assert not run.kinds("formulation")
    alarm = run.kinds("alarm")[-1].data["message"]
    assert "needs 7.5e+08" in alarm and "not formulated" in alarm
    run.batch.command("abort", who="qa.lee", why="not enough cells for the dose")
    assert await finished(run) is S.ABORTED


async def test_a_bag_denser_than_allowed_is_not_formulated(running: Any) -> None:
    text = formulating("1.0e+4 cells/kg", "10 kg", "1 mL", extra=", max_cells_per_ml: 1.0e+3")
    run = await running("f.yaml", text)
    await run.until_state(S.HELD)
    assert not run.kinds("formulation")
    assert "above 1e+03/mL" in run.kinds("alarm")[-1].data["message"]
    run.batch.command("abort", who="qa.lee", why="too dense")
    assert await finished(run) is S.ABORTED


def test_a_formulation_before_its_harvest_does_not_start(tmp_path: Path) -> None:
    step = (
        "          - {phase: formulate, dose_per_kg: 1.0e+5 cells/kg, patient_weight: 20 kg,"
        " final_volume_ml: 70 mL}"
    )
    sample = "          - {phase: sample, name: in-process check"
    early = SMOKE.replace(sample, step + "\n" + sample)
    path = tmp_path / "early.yaml"
    path.write_text(early)
    result = CliRunner().invoke(
        app, ["run", str(path), "--journal", str(tmp_path / "j.sqlite"), "-q"]
    )
    assert result.exit_code == 2, result.output
    line = early.splitlines().index(step) + 1
    assert f"early.yaml:{line}" in result.output
    assert "put a harvest phase of it before this one" in result.output
    assert not (tmp_path / "j.sqlite").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dose_per_kg", "0 cells/kg"),
        ("dose_per_kg", "1e300 cells/kg"),
        ("dose_per_kg", ".inf"),
        ("dose_per_kg", "nan"),
        ("patient_weight", "400 kg"),
        ("patient_weight", "''"),
        ("final_volume_ml", "-1 mL"),
        ("final_volume_ml", "1e308 mL"),
    ],
)
def test_impossible_formulation_values_are_refused_on_their_line(
    tmp_path: Path, field: str, value: str
) -> None:
    values = {"dose_per_kg": "1.0e+5 cells/kg", "patient_weight": "20 kg"}
    values["final_volume_ml"] = "70 mL"
    values[field] = value
    path = tmp_path / "bad.yaml"
    path.write_text(
        formulating(values["dose_per_kg"], values["patient_weight"], values["final_volume_ml"])
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert field in result.output and "bad.yaml:" in result.output


def test_the_batch_record_shows_the_formulated_dose(tmp_path: Path) -> None:
    recipe = tmp_path / "f.yaml"
    recipe.write_text(formulating("1.0e+4 cells/kg", "10 kg", "50 mL"))
    journal = tmp_path / "j.sqlite"
    cli = CliRunner()
    ran = cli.invoke(app, ["run", str(recipe), "--journal", str(journal), "-q"])
    assert ran.exit_code == 0, ran.output
    record = build_record(journal)
    outcome = dict(record.outcome)
    assert outcome["Formulated dose"].startswith("1e+05 CAR+ viable cells (1e+04/kg x 10 kg)")
    assert " in 50 mL, " in outcome["Formulated dose"]
    drawn = record.formulation["harvest_drawn_ml"] if record.formulation else None
    assert outcome["Harvest drawn"].startswith(f"{drawn:.1f} mL (")
    report = cli.invoke(app, ["report", str(journal), "-o", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert "Formulated dose" in (tmp_path / "r.html").read_text()


def test_a_record_whose_recipe_formulates_but_did_not_says_so(tmp_path: Path) -> None:
    rows = outcome_rows({"volume_ml": 50.0, "viable_cells": 1e8}, None, None, formulates=True)
    assert ("Formulated dose", "not formulated: no formulation in the journal") in rows
