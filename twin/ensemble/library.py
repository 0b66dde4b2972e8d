"""An ensemble's identity and how its batches get into a results file.

``whatif`` and ``forecast`` share this: a library of twin batches run with
``whatif`` before the patient's cells arrive is the one a forecast reads during
the batch, as long as it is the same ensemble (same recipe text, same resolved
parameters, same bench text, same seed and scripted operator). The definition
keeps content, not paths, so the same ensemble made from another directory is
still the same ensemble.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twin.bench import LoadedBench
from twin.ensemble.member import MemberPlan
from twin.ensemble.results import ResultsFile
from twin.ensemble.vary import Variation
from twin.recipe import LoadedRecipe

__all__ = ["ensemble_definition", "fill"]


def ensemble_definition(
    recipe: LoadedRecipe,
    bench: LoadedBench,
    *,
    variations: list[Variation],
    seed: int,
    scan_delay_min: float,
    max_days: float,
    hold_response_min: float,
) -> dict[str, Any]:
    """What makes an ensemble the one it is (kept in its results file, compared on reuse)."""
    return {
        "recipe_id": recipe.model.recipe.id,
        "recipe_version": recipe.model.recipe.version,
        "recipe_sha256": recipe.sha256,
        "parameters": resolved_parameters(recipe),
        "bench": bench.model.bench,
        "bench_text": bench.path.read_text(encoding="utf-8"),
        "vary": [f"{v.name}={v.distribution.text}" for v in variations],
        "seed": seed,
        "scan_delay_min": scan_delay_min,
        "max_days": max_days,
        "hold_response_min": hold_response_min,
    }


def resolved_parameters(recipe: LoadedRecipe) -> dict[str, str]:
    """Every recipe parameter's value as text (defaults included: what the batch ran with)."""
    return {name: str(value) for name, value in sorted(recipe.parameters.items())}


def fill(
    store: ResultsFile,
    plans: list[MemberPlan],
    keep: Callable[[dict[str, Any]], None],
    *,
    scheduler: str | None,
    workers: int | None,
) -> list[MemberPlan]:
    """Run the plans the results file lacks; ``keep`` is called after each one is stored.
    Returns the plans that were run."""
    from twin.ensemble.dispatch import run_ensemble

    done = store.done()
    todo = [p for p in plans if p.index not in done]

    def stored(result: dict[str, Any]) -> None:
        store.add(result)
        keep(result)

    run_ensemble(todo, stored, scheduler=scheduler, workers=workers or os.cpu_count() or 1)
    return todo
