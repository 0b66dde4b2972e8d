"""Only approved master-file versions run on a production bench; anything runs on a dev bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.bench import load_bench
from twin.recipe import load_recipe
from twin.recipe.approval import check_approval
from twin.recipe.limits import check_against_bench

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "benches" / "example-lab.yaml"
REGISTER = ROOT / "benches" / "approved-recipes.yaml"


@pytest.mark.parametrize("recipe", ["car_t_autologous.yaml", "car_t_nonviral.yaml"])
def test_shipped_production_recipes_are_registered(recipe: str) -> None:
    assert check_against_bench(load_recipe(ROOT / "recipes" / recipe), load_bench(LAB)) == []


def test_edited_copy_is_refused_naming_the_register(tmp_path: Path) -> None:
    copy = tmp_path / "car_t.yaml"
    copy.write_text((ROOT / "recipes" / "car_t_autologous.yaml").read_text().replace("8 d", "9 d"))
    problems = check_approval(load_recipe(copy), development=False, register=REGISTER)
    assert len(problems) == 1
    assert "is not in the site's register" in problems[0].message
    versions = "approved versions of car-t-autologous-lv: 1.0.0, 1.1.0, 1.2.0, 1.3.0"
    assert versions in problems[0].message
    version_line = copy.read_text().splitlines().index("  version: 1.3.0") + 1
    assert problems[0].line == version_line  # the recipe's version line


def test_draft_is_refused_on_production_but_runs_on_development() -> None:
    smoke = load_recipe(ROOT / "recipes" / "smoke.yaml")
    problems = check_approval(smoke, development=False, register=REGISTER)
    assert "status is 'draft'" in problems[0].message
    assert check_approval(smoke, development=True, register=REGISTER) == []


def test_missing_register_is_a_problem(tmp_path: Path) -> None:
    loaded = load_recipe(ROOT / "recipes" / "car_t_autologous.yaml")
    problems = check_approval(loaded, development=False, register=tmp_path / "none.yaml")
    assert "no master-file register" in problems[0].message
