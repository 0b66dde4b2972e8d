"""What an ensemble varies and the spec it is judged by: every bad input named, draws inside
the recipe's own ranges, the same ensemble drawing the same batches."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from twin.ensemble.member import plan_members
from twin.ensemble.spec import load_spec
from twin.ensemble.vary import VaryError, parse_vary
from twin.errors import InvalidInput
from twin.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "car_t_autologous.yaml"


@pytest.fixture(scope="module")
def parameters() -> dict:
    return dict(load_recipe(RECIPE).model.parameters)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("moi", "expected NAME=DISTRIBUTION"),
        ("nothing=uniform(1, 2)", "the recipe has no parameter 'nothing'"),
        ("moi=gamma(1, 2)", "unknown distribution 'gamma'"),
        ("moi=uniform(8, 3)", "needs lo < hi"),
        ("moi=uniform(3)", "takes 2 arguments, got 1"),
        ("moi=normal(5, 0)", "spread above 0"),
        ("moi=uniform(20, 30)", "never falls inside the allowed [2, 10]"),
        ("vector_titre=uniform(1e7, 1e9)", "give the distribution in a unit of the parameter"),
        ("vector_titre=uniform(1 e8 TU/mL, 2 mL)", "different units"),
        ("vector_titre=uniform(1 mL, 2 mL)", "'mL' is not a unit of this parameter"),
        ("donor.charm=normal(1, 0.1)", "no donor trait 'charm'"),
        ("donor.growth_potential=normal(1 mL, 0.1 mL)", "give plain numbers"),
        ("inoculum.colour=uniform(1, 2)", "no inoculum quantity 'colour'"),
        ("moi=uniform(1e999, 3)", "not a finite number"),
        ("moi=uniform(nan, 3)", "is not a number"),
        ("moi=choice()", "at least one value"),
    ],
)
def test_a_vary_that_cannot_be_used_says_why(text: str, message: str, parameters: dict) -> None:
    with pytest.raises(VaryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_vary(text, parameters)


def test_draws_stay_inside_the_recipe_range_and_carry_the_unit(parameters: dict) -> None:
    moi = parse_vary("moi=normal(9, 3)", parameters)  # half its mass above the max of 10
    rng = random.Random(1)
    draws = [moi.draw(rng) for _ in range(2000)]
    assert min(draws) >= 2.0 and max(draws) <= 10.0
    titre = parse_vary("vector_titre=lognormal(1 e8 TU/mL, 0.5)", parameters)
    assert titre.low == pytest.approx(0.1) and titre.high == pytest.approx(100.0)  # in e8 TU/mL
    value = titre.as_value(titre.draw(rng))
    assert value.endswith(" e8 TU/mL")
    load_recipe(RECIPE, {"vector_titre": value})  # the recipe takes the drawn value


def test_the_same_ensemble_draws_the_same_batches(parameters: dict) -> None:
    variations = [
        parse_vary("moi=uniform(3, 8)", parameters),
        parse_vary("donor.growth_potential=lognormal(1, 0.2)", parameters),
        parse_vary("inoculum.viable_cells_per_ml=choice(5e5, 1e6, 2e6)", parameters),
    ]

    def plans(n: int, seed: int) -> list:
        return plan_members(recipe="r", bench="b", batches=n, base_seed=seed, variations=variations)

    ten, twenty = plans(10, 4), plans(20, 4)
    assert ten == twenty[:10]  # asking for more batches later keeps the first ones
    assert plans(10, 5) != ten
    assert len({p.donor_seed for p in twenty}) == 20 and len({p.seed for p in twenty}) == 20
    assert {p.inoculum["viable_cells_per_ml"] for p in twenty} <= {5e5, 1e6, 2e6}
    assert all(3 <= float(p.parameters["moi"]) <= 8 for p in twenty)


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("spec: t\n" + body)
    return path


def test_shipped_spec_loads_with_units() -> None:
    spec = load_spec(ROOT / "recipes" / "specs" / "release-spec.yaml")
    assert spec.ready_by_days == 10.0
    by = {lim.outcome: lim for lim in spec.limits}
    assert by["dose_per_kg"].low == 2.0e6 and by["vector_copies"].high == 10.0


def test_limits_in_other_units_are_converted(tmp_path: Path) -> None:
    spec = load_spec(
        _spec(
            tmp_path,
            "ready_by: 36 h\nlimits:\n  - {outcome: duration, max: 48 h}\n"
            "  - {outcome: viable_cells, min: 1 e9 cells}\n",
        )
    )
    assert spec.ready_by_days == 1.5
    duration, cells = spec.limits
    assert duration.high == 2.0 and cells.low == 1e9
    ok = {"state": "Complete", "duration": 1.9, "viable_cells": 2e9}
    assert spec.failures(ok) == []
    assert spec.failures({**ok, "duration": 2.1}) == ["duration"]
    assert spec.failures({**ok, "viable_cells": None}) == ["viable_cells"]
    assert spec.failures({**ok, "state": "Aborted"}) == ["batch ended Aborted"]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("limits:\n  - {outcome: potency, min: 3}\n", 3, "unknown outcome 'potency'"),
        ("limits:\n  - {outcome: viability}\n", 3, "give min, max or both"),
        ("limits:\n  - {outcome: viability, min: 70 h}\n", 3, "is a time"),
        ("limits:\n  - {outcome: viability, min: 80 %, max: 70 %}\n", 3, "is above max"),
        ("limits: []\n", 2, "at least 1"),
        ("ready_by: -2 d\nlimits:\n  - {outcome: viability, min: 70}\n", 2, "after day 0"),
    ],
)
def test_a_bad_spec_is_named_by_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = _spec(tmp_path, body)
    with pytest.raises(InvalidInput) as err:
        load_spec(path)
    text = [str(p) for p in err.value.problems]
    assert any(t.startswith(f"{path}:{line}:") and message in t for t in text), text
