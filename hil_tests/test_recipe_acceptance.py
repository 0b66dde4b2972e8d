"""Each shipped production recipe runs to Complete on the bench and meets its release figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.bench import LoadedBench
from twin.journal import read_events, verify
from twin.recipe import load_recipe
from twin.recipe.limits import check_against_bench
from twin.runner import run_batch, summarize

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", ["car_t_autologous.yaml"])
def test_recipe_reaches_complete(
    recipe: str, bench: LoadedBench, seed: int | None, tmp_path: Path
) -> None:
    loaded = load_recipe(ROOT / "recipes" / recipe)
    assert check_against_bench(loaded, bench) == []
    journal = tmp_path / "batch.sqlite"
    print(f"recipe {recipe} bench {bench.path} seed {seed} journal {journal}")
    final = run_batch(loaded, bench, journal, batch_id=f"HIL-{recipe}", operator="hil", seed=seed)
    summary = summarize(journal)
    assert final.label == "Complete", summary.hold_reasons
    assert verify(journal).ok
    # Release criteria of TWIN_MODELS.md (ARI-0001, PMC6319086 Table 2): viability >= 70 %,
    # CAR+ >= 20 %; and the reference process's ~20-40-fold expansion (Zhu 2018).
    assert summary.viability_pct is not None and summary.viability_pct >= 70.0
    assert summary.transduced_pct is not None and summary.transduced_pct >= 20.0
    if summary.fold_expansion is not None:  # known only where the bench knows the inoculum
        assert 20.0 <= summary.fold_expansion <= 40.0
    assert 9.9 <= summary.days <= 10.5
    started = next(read_events(journal))
    assert started.data["recipe"]["sha256"] == loaded.sha256
