"""Recipe parameters: named values with units and ranges, referenced in phases as ``$name``.

A master recipe declares its parameters (with a default value, or none: then the
batch must supply it, e.g. ``poc-twin run --param vector_volume=6mL``). Values are
range-checked in their own unit, then put where the phases reference them, so
the phase field's unit check applies too. Problems point at the line.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from twin.errors import Problem
from twin.recipe.units import DIMENSIONS, convert, dimension_of
from twin.sourcemap import SourceMap

__all__ = ["Parameter", "resolve_parameters"]

_UNIT = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*(\S.*?)?\s*$")


class Parameter(BaseModel):
    """One recipe parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    value: float | str | None = None
    min: float | str | None = None
    max: float | str | None = None
    description: str = ""


_KEYS = "value, min, max, description"


def _canonical(value: float | str) -> tuple[float, str | None]:
    """(number in the dimension's canonical unit, dimension) of a parameter value."""
    if isinstance(value, int | float):
        return float(value), None
    match = _UNIT.match(value)
    unit = match.group(1) if match else None
    dimension = dimension_of(unit) if unit else None
    if match is None or (unit and dimension is None):
        raise ValueError(f"'{value}' is not a number with a known unit")
    if dimension is None:
        return float(value), None
    canonical_unit = next(iter(DIMENSIONS[dimension]))
    return convert(value, dimension, canonical_unit), dimension


def _check(name: str, spec: Parameter, value: Any) -> str | None:
    try:
        number, dimension = _canonical(value)
        for bound, word in ((spec.min, "below the minimum"), (spec.max, "above the maximum")):
            if bound is None:
                continue
            limit, bound_dim = _canonical(bound)
            if bound_dim != dimension:
                return f"parameter '{name}': {value} and its limit {bound} are not the same kind"
            if (word.startswith("below") and number < limit) or (
                word.startswith("above") and number > limit
            ):
                return f"parameter '{name}' = {value} is {word} {bound}"
    except ValueError as exc:
        return f"parameter '{name}': {exc}"
    return None


def _substitute(
    node: Any, values: dict[str, Any], loc: list[Any], source: SourceMap, problems: list[Problem]
) -> None:
    items: Any = (
        node.items()
        if isinstance(node, CommentedMap)
        else (enumerate(node) if isinstance(node, CommentedSeq) else ())
    )
    for key, value in list(items):
        here = [*loc, key]
        if isinstance(value, str) and value.startswith("$"):
            name = value[1:]
            if name in values:
                node[key] = values[name]
            else:
                known = ", ".join(sorted(values)) or "none declared"
                problems.append(
                    source.problem(here, f"unknown parameter '{name}' (known: {known})")
                )
        else:
            _substitute(value, values, here, source, problems)


def resolve_parameters(
    data: CommentedMap, source: SourceMap, overrides: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """Check the declared parameters and substitute ``$name`` references in place."""
    problems: list[Problem] = []
    raw = data.get("parameters")
    if raw is None:
        raw = CommentedMap()
    if not isinstance(raw, CommentedMap):
        return {}, [source.problem(["parameters"], "parameters must be a mapping")]
    values: dict[str, Any] = {}
    overrides = dict(overrides or {})
    for name, spec_raw in raw.items():
        if spec_raw is None:
            continue  # written and left empty: said so at its key (SourceMap.empty)
        try:
            spec = Parameter.model_validate(spec_raw)
        except ValidationError as exc:  # one line per problem, at its key
            for error in exc.errors():
                where = [str(part) for part in error["loc"]]
                if error["type"] == "extra_forbidden":
                    what = f"unknown key '{where[-1]}' (a parameter has {_KEYS})"
                else:
                    what = f"{'.'.join(where) or 'spec'}: {error['msg']}"
                problems.append(
                    source.problem(["parameters", name, *where], f"parameter '{name}': {what}")
                )
            continue
        except ValueError as exc:
            problems.append(source.problem(["parameters", name], f"parameter '{name}': {exc}"))
            continue
        value = overrides.pop(name, spec.value)
        if value is None:
            problems.append(
                source.problem(
                    ["parameters", name],
                    f"missing parameter '{name}': give it with --param {name}=VALUE",
                    key=True,
                )
            )
            continue
        error = _check(name, spec, value)
        if error:
            problems.append(source.problem(["parameters", name, "value"], error))
            continue
        values[name] = value
    for name in overrides:
        problems.append(
            source.problem(
                ["parameters"], f"--param {name}: the recipe has no such parameter", key=True
            )
        )
    if problems:
        return values, problems
    for section in ("procedure", "monitors"):
        if section in data:
            _substitute(data[section], values, [section], source, problems)
    return values, problems
