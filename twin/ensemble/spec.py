"""A release specification for ``poc-twin whatif``: limits on a batch's outcomes, with units.

    spec: car-t-example
    source: ARI-0001 specification (PMC6319086 Table 2); axi-cel label dose
    ready_by: 10 d
    limits:
      - {outcome: viability, min: 70 %}
      - {outcome: car_positive, min: 20 %}
      - {outcome: dose_per_kg, min: 2.0e+6 cells/kg}
      - {outcome: vector_copies, max: 10 copies/cell}

A limit's unit must be one of its outcome's dimension (``2 d`` or ``48 h`` for a
duration, ``1e9 cells`` or ``1 e9 cells``); a number without a unit is read in the
outcome's own unit. Problems are named by file, line and column, like a recipe's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twin.recipe.units import convert
from twin.sourcemap import load_yaml, validate_document

__all__ = ["OUTCOMES", "Limit", "OutcomeKind", "ReleaseSpec", "load_spec"]


@dataclass(frozen=True)
class OutcomeKind:
    """One outcome a batch reports: its label, dimension and the unit it is kept in."""

    label: str
    dimension: str | None  # a key of DIMENSIONS, or None for a plain number
    unit: str  # the unit outcomes are stored in (a unit of ``dimension``)


#: Every outcome of an ensemble batch (twin/ensemble/member.py fills them).
OUTCOMES: dict[str, OutcomeKind] = {
    "viable_cells": OutcomeKind("Viable cells harvested", "cells", "cells"),
    "viability": OutcomeKind("Viability at harvest", "fraction", "%"),
    "car_positive": OutcomeKind("CAR+ at harvest", "fraction", "%"),
    "car_viable_cells": OutcomeKind("CAR+ viable cells", "cells", "cells"),
    "dose_per_kg": OutcomeKind("CAR+ viable cells per kg", "dose", "cells/kg"),
    "fold_expansion": OutcomeKind("Fold expansion", None, ""),
    "volume": OutcomeKind("Harvest volume", "volume", "mL"),
    "duration": OutcomeKind("Batch duration (to harvest)", "time", "d"),
    "vector_copies": OutcomeKind("Vector copies per cell (twin QC)", "copies", "copies/cell"),
    "cd4_fraction": OutcomeKind("CD4+ share at harvest (twin QC)", "fraction", "%"),
}


def _in_unit(value: Any, outcome: str) -> float:
    """A limit (number, or text with a unit of the outcome's dimension) in the outcome's unit."""
    kind = OUTCOMES[outcome]
    if kind.dimension is not None:
        return convert(value, kind.dimension, kind.unit)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{outcome} is a plain number, got {value!r}")


class Limit(BaseModel):
    """One release limit: an outcome with a minimum, a maximum or both."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    outcome: str
    min: float | str | None = None
    max: float | str | None = None

    @field_validator("outcome")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in OUTCOMES:
            raise ValueError(f"unknown outcome '{value}' (outcomes: {', '.join(OUTCOMES)})")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        low, high = self.low, self.high
        if low > high:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def low(self) -> float:
        return -math.inf if self.min is None else _in_unit(self.min, self.outcome)

    @property
    def high(self) -> float:
        return math.inf if self.max is None else _in_unit(self.max, self.outcome)

    def met(self, value: float | None) -> bool:
        """Whether ``value`` (in the outcome's unit) is inside; no value never is."""
        return value is not None and self.low <= value <= self.high

    @property
    def text(self) -> str:
        unit = OUTCOMES[self.outcome].unit
        parts = []
        if self.min is not None:
            parts.append(f"≥ {self.low:g} {unit}".rstrip())
        if self.max is not None:
            parts.append(f"≤ {self.high:g} {unit}".rstrip())
        return " and ".join(parts)


class ReleaseSpec(BaseModel):
    """A spec file: the limits a releasable batch meets, and the day it must be ready by."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    spec: str
    source: str = ""
    ready_by: float | str | None = None
    limits: list[Limit] = Field(min_length=1)

    @field_validator("ready_by")
    @classmethod
    def _days(cls, value: float | str | None) -> float | str | None:
        if value is not None and not convert(value, "time", "d") > 0:
            raise ValueError("ready_by must be after day 0")
        return value

    @property
    def ready_by_days(self) -> float | None:
        """``ready_by`` in days (a plain number is days)."""
        return None if self.ready_by is None else convert(self.ready_by, "time", "d")

    def failures(self, outcome: dict[str, Any]) -> list[str]:
        """The limits a batch's outcome misses (a batch that did not complete misses all)."""
        if outcome.get("state") != "Complete":
            return [f"batch ended {outcome.get('state')}"]
        return [lim.outcome for lim in self.limits if not lim.met(outcome.get(lim.outcome))]


def load_spec(path: Path | str) -> ReleaseSpec:
    """Parse and check a spec file; every problem as FILE:LINE:COL."""
    path = Path(path)
    data, source = load_yaml(path)
    return validate_document(ReleaseSpec, data, source, [ReleaseSpec, Limit])
