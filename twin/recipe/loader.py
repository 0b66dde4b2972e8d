"""Load a recipe file: YAML -> typed model, every problem as FILE:LINE:COL, all at once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from twin.errors import InvalidInput, Problem
from twin.recipe.model import ALL_MODELS, Recipe
from twin.recipe.parameters import resolve_parameters
from twin.recipe.phases import Phase
from twin.sourcemap import SourceMap, load_yaml, validate_document, with_empty

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


def _equipment_fields() -> dict[str, dict[str, str]]:
    """For each phase type, its equipment fields and their defaults (e.g. bioreactor)."""
    fields: dict[str, dict[str, str]] = {}
    for model in get_args(get_args(Phase)[0]):
        tag = get_args(model.model_fields["phase"].annotation)[0]
        fields[tag] = {
            name: str(info.default)
            for name, info in model.model_fields.items()
            if name in EQUIPMENT_FIELDS
        }
    return fields


def _check_references(data: Any, source: SourceMap) -> list[Problem]:
    """Equipment references and duplicate operations, checked on the raw document so that
    they are reported together with schema problems, not after them."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        return problems
    raw_equipment = data.get("equipment")
    equipment = {
        name: (spec or {}).get("type") if isinstance(spec, dict) else None
        for name, spec in (raw_equipment.items() if isinstance(raw_equipment, dict) else [])
    }
    known = ", ".join(sorted(equipment)) or "none"
    phase_fields = _equipment_fields()

    def check(loc: list[Any], ref: Any, kind: str, what: str) -> None:
        if not isinstance(ref, str):
            return
        if ref not in equipment:
            problems.append(
                source.problem(
                    loc,
                    f"{what} uses equipment '{ref}', which the "
                    f"recipe's equipment list does not declare "
                    f"(declared: {known})",
                )
            )
        elif equipment[ref] is not None and equipment[ref] != kind:
            problems.append(
                source.problem(
                    loc, f"equipment '{ref}' is a {equipment[ref]}, {what} needs a {kind}"
                )
            )

    def check_monitors(monitors: Any, loc: list[Any]) -> None:
        for m, monitor in enumerate(monitors if isinstance(monitors, list) else []):
            if isinstance(monitor, dict):
                check(
                    [*loc, m, "equipment"],
                    monitor.get("equipment", "bioreactor"),
                    "bioreactor",
                    "this monitor",
                )

    check_monitors(data.get("monitors"), ["monitors"])
    seen_ops: set[str] = set()
    units = data.get("procedure")
    for u, unit in enumerate(units if isinstance(units, list) else []):
        ops = unit.get("operations") if isinstance(unit, dict) else None
        for o, op in enumerate(ops if isinstance(ops, list) else []):
            if not isinstance(op, dict):
                continue
            loc_op = ["procedure", u, "operations", o]
            name = op.get("operation")
            if not isinstance(name, str):
                continue  # not a name at all: the schema says so on its line
            if name in seen_ops:
                problems.append(
                    source.problem([*loc_op, "operation"], f"duplicate operation '{name}'")
                )
            seen_ops.add(name)
            phases = op.get("phases")
            for p, phase in enumerate(phases if isinstance(phases, list) else []):
                if not isinstance(phase, dict):
                    continue
                tag = phase.get("phase")
                fields = phase_fields.get(tag, {}) if isinstance(tag, str) else {}
                for fld, default in fields.items():
                    check(
                        [*loc_op, "phases", p, fld],
                        phase.get(fld, default),
                        EQUIPMENT_FIELDS[fld],
                        f"phase '{tag}'",
                    )
                check_monitors(phase.get("monitors"), [*loc_op, "phases", p, "monitors"])
    return problems


def load_recipe(path: Path | str, parameters: dict[str, str] | None = None) -> LoadedRecipe:
    """Parse and check a recipe; raises InvalidInput listing every problem.

    ``parameters`` are the batch's values for recipe parameters (``--param``).
    """
    path = Path(path)
    data, source = load_yaml(path)
    values, problems = resolve_parameters(data, source, parameters)
    if problems:
        raise InvalidInput(with_empty(source, problems))
    problems = _check_references(data, source)
    try:
        model = validate_document(Recipe, data, source, ALL_MODELS)
    except InvalidInput as exc:
        problems += exc.problems
    if problems:
        raise InvalidInput(sorted(set(problems), key=lambda p: (p.line, p.col, p.message)))
    text = path.read_text(encoding="utf-8")
    return LoadedRecipe(
        path=path,
        model=model,
        source=source,
        text=text,
        sha256=content_hash(text),
        parameters=values,
    )
