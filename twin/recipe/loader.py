"""Load a recipe file: YAML -> typed model, every problem as FILE:LINE:COL, all at once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.errors import InvalidInput, Problem
from twin.recipe.model import ALL_MODELS, Recipe
from twin.recipe.parameters import resolve_parameters
from twin.sourcemap import SourceMap, load_yaml, validate_document

__all__ = ["LoadedRecipe", "content_hash", "load_recipe"]

#: Which phase field names an equipment item, and which equipment type it must be.
EQUIPMENT_FIELDS = {
    "bioreactor": "bioreactor",
    "gas_dispenser": "gas_dispenser",
    "electroporator": "electroporator",
}


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe with where it came from and the hash that pins it."""

    path: Path
    model: Recipe
    source: SourceMap
    text: str
    sha256: str
    parameters: dict[str, Any]


def content_hash(text: str) -> str:
    """SHA-256 of the recipe text (line endings normalised): what a site approves."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def _check_references(recipe: Recipe, source: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    seen_ops: set[str] = set()
    for u, unit in enumerate(recipe.procedure):
        for o, op in enumerate(unit.operations):
            loc_op = ["procedure", u, "operations", o]
            if op.operation in seen_ops:
                problems.append(
                    source.problem([*loc_op, "operation"], f"duplicate operation '{op.operation}'")
                )
            seen_ops.add(op.operation)
            for p, phase in enumerate(op.phases):
                for fld, kind in EQUIPMENT_FIELDS.items():
                    ref = getattr(phase, fld, None)
                    if ref is None:
                        continue
                    loc = [*loc_op, "phases", p, fld]
                    have = recipe.equipment.get(ref)
                    if have is None:
                        known = ", ".join(sorted(recipe.equipment))
                        problems.append(
                            source.problem(
                                loc,
                                f"phase '{phase.phase}' uses equipment '{ref}', which the "
                                f"recipe's equipment list does not declare (declared: {known})",
                            )
                        )
                    elif have.type != kind:
                        problems.append(
                            source.problem(
                                loc,
                                f"equipment '{ref}' is a {have.type}, this phase needs a {kind}",
                            )
                        )
    return problems


def load_recipe(path: Path | str, parameters: dict[str, str] | None = None) -> LoadedRecipe:
    """Parse and check a recipe; raises InvalidInput listing every problem.

    ``parameters`` are the batch's values for recipe parameters (``--param``).
    """
    path = Path(path)
    data, source = load_yaml(path)
    values, problems = resolve_parameters(data, source, parameters)
    if problems:
        raise InvalidInput(problems)
    model = validate_document(Recipe, data, source, ALL_MODELS)
    problems = _check_references(model, source)
    if problems:
        raise InvalidInput(problems)
    text = path.read_text(encoding="utf-8")
    return LoadedRecipe(
        path=path,
        model=model,
        source=source,
        text=text,
        sha256=content_hash(text),
        parameters=values,
    )
