"""What an ensemble varies: ``--vary NAME=DIST`` for recipe parameters, donor traits and
the inoculum, each drawn per batch from a named distribution.

Names:
- a recipe parameter (``moi``, ``vector_titre``, ``expansion_time``): the value in the
  parameter's unit, drawn inside its declared ``min``/``max`` (a draw outside is drawn
  again: a batch record would refuse it, so the ensemble never runs it);
- ``donor.TRAIT`` (``donor.growth_potential``, ``donor.transduction_ceiling`` ...):
  replaces the trait of the batch's drawn donor (see twin/sim/donor.py);
- ``inoculum.volume_ml``, ``inoculum.viable_cells_per_ml``, ``inoculum.viability_pct``.

Distributions (arguments may carry the parameter's unit: ``uniform(1e7 TU/mL, 1e9 TU/mL)``):
``uniform(lo, hi)``, ``normal(mean, sd)``, ``lognormal(median, sigma)`` (sigma of the
natural log), ``triangular(lo, mode, hi)``, ``choice(a, b, ...)``, or one fixed value.
Each batch's draws come from its own seeded generator, so batch *i* of an ensemble is the
same batch whenever it is run (the basis of resuming a killed ensemble).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from twin.errors import PocTwinError
from twin.recipe.units import DIMENSIONS, dimension_of

__all__ = ["DONOR_TRAITS", "INOCULUM", "Distribution", "Variation", "VaryError", "parse_vary"]

#: Donor traits an ensemble may vary, with their bounds (twin.bench.Donor's).
DONOR_TRAITS: dict[str, tuple[float, float]] = {
    "growth_potential": (1e-9, 5.0),
    "division_capacity": (1e-9, 20.0),
    "transduction_ceiling": (0.0, 1.0),
    "death_factor": (1e-9, 20.0),
    "starting_viability_pct": (1e-9, 100.0),
    "cd4_fraction": (0.0, 1.0),
}
#: Inoculum quantities an ensemble may vary, with their bounds (twin.bench.Inoculum's).
INOCULUM: dict[str, tuple[float, float]] = {
    "volume_ml": (1e-9, 1000.0),
    "viable_cells_per_ml": (1e-9, 1.0e8),
    "viability_pct": (1e-9, 100.0),
}

_CALL = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$")
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")
_ARITY = {"uniform": 2, "normal": 2, "lognormal": 2, "triangular": 3}
MAX_REDRAWS = 1000


class VaryError(PocTwinError):
    """A ``--vary`` that cannot be used, saying why."""


@dataclass(frozen=True)
class Distribution:
    """A named distribution with its arguments in one unit (``unit``: "" if none)."""

    kind: str  # uniform, normal, lognormal, triangular, choice, fixed
    args: tuple[float, ...]
    unit: str = ""

    def draw(self, rng: random.Random) -> float:
        a = self.args
        if self.kind == "fixed":
            return a[0]
        if self.kind == "uniform":
            return rng.uniform(a[0], a[1])
        if self.kind == "normal":
            return rng.gauss(a[0], a[1])
        if self.kind == "lognormal":
            return a[0] * math.exp(rng.gauss(0.0, a[1]))
        if self.kind == "triangular":
            return rng.triangular(a[0], a[2], a[1])
        return rng.choice(a)

    def support(self) -> tuple[float, float]:
        """Smallest and largest value a draw can take."""
        a = self.args
        if self.kind in ("uniform",):
            return a[0], a[1]
        if self.kind == "triangular":
            return a[0], a[2]
        if self.kind in ("fixed", "choice"):
            return min(a), max(a)
        if self.kind == "lognormal":
            return 0.0, math.inf
        return -math.inf, math.inf

    @property
    def text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == "fixed":
            return f"{self.args[0]:g}{unit}"
        return f"{self.kind}({', '.join(f'{x:g}' for x in self.args)}){unit}"


@dataclass(frozen=True)
class Variation:
    """One ``--vary``: what it sets, its distribution, and the bounds a draw must keep."""

    name: str  # as given: a parameter, donor.TRAIT or inoculum.QUANTITY
    distribution: Distribution
    low: float
    high: float

    @property
    def kind(self) -> str:
        """``parameter``, ``donor`` or ``inoculum``."""
        head = self.name.split(".", 1)[0]
        return head if head in ("donor", "inoculum") else "parameter"

    @property
    def key(self) -> str:
        """The name within its kind (the trait, quantity or parameter name)."""
        return self.name.split(".", 1)[1] if self.kind != "parameter" else self.name

    def draw(self, rng: random.Random) -> float:
        """One value inside ``[low, high]``."""
        for _ in range(MAX_REDRAWS):
            value = self.distribution.draw(rng)
            if self.low <= value <= self.high:
                return value
        raise VaryError(
            f"--vary {self.name}: {MAX_REDRAWS} draws of {self.distribution.text} fell outside "
            f"[{self.low:g}, {self.high:g}]"
        )

    def as_value(self, value: float) -> Any:
        """The drawn number as the recipe or bench takes it (with its unit for a parameter)."""
        unit = self.distribution.unit
        return f"{value!r} {unit}" if unit else value


def _split_args(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")] if text.strip() else []


def _quantity(text: str, name: str) -> tuple[float, str]:
    match = _NUMBER.match(text)
    if match is None:
        raise VaryError(f"--vary {name}: '{text}' is not a number (with an optional unit)")
    value = float(match.group(1))
    if not math.isfinite(value):
        raise VaryError(f"--vary {name}: '{text}' is not a finite number")
    return value, match.group(2) or ""


def parse_distribution(name: str, text: str) -> Distribution:
    """``uniform(3, 8)``, ``normal(1e8 TU/mL, 2e7 TU/mL)``, ``choice(3, 5, 8)`` or ``5``."""
    call = _CALL.match(text)
    if call is None:
        value, unit = _quantity(text, name)
        return Distribution("fixed", (value,), unit)
    kind, inner = call.group(1), call.group(2)
    if kind not in (*_ARITY, "choice"):
        known = ", ".join([*_ARITY, "choice"])
        raise VaryError(f"--vary {name}: unknown distribution '{kind}' (known: {known})")
    parts = [_quantity(p, name) for p in _split_args(inner)]
    want = _ARITY.get(kind)
    if (want is not None and len(parts) != want) or (kind == "choice" and not parts):
        need = f"{want} arguments" if want else "at least one value"
        raise VaryError(f"--vary {name}: {kind}() takes {need}, got {len(parts)}")
    units = {u for _, u in parts if u}
    if len(units) > 1:
        raise VaryError(f"--vary {name}: arguments in different units ({', '.join(units)})")
    unit = units.pop() if units else ""
    args = tuple(v for v, _ in parts)
    _check_shape(name, kind, args)
    return Distribution(kind, args, unit)


def _check_shape(name: str, kind: str, a: tuple[float, ...]) -> None:
    bad = ""
    if kind == "uniform" and not a[0] < a[1]:
        bad = "uniform(lo, hi) needs lo < hi"
    elif kind in ("normal", "lognormal") and not a[1] > 0:
        bad = f"{kind}() needs a spread above 0"
    elif kind == "lognormal" and not a[0] > 0:
        bad = "lognormal(median, sigma) needs a median above 0"
    elif kind == "triangular" and not a[0] <= a[1] <= a[2]:
        bad = "triangular(lo, mode, hi) needs lo <= mode <= hi"
    if bad:
        raise VaryError(f"--vary {name}: {bad}")


def parse_vary(text: str, parameters: dict[str, Any]) -> Variation:
    """One ``NAME=DIST`` against the recipe's declared ``parameters`` (name -> Parameter)."""
    name, sep, dist_text = text.partition("=")
    name = name.strip()
    if not sep or not name or not dist_text.strip():
        raise VaryError(f"--vary '{text}': expected NAME=DISTRIBUTION, e.g. moi=uniform(3, 8)")
    distribution = parse_distribution(name, dist_text)
    head, _, key = name.partition(".")
    if head == "donor":
        if key not in DONOR_TRAITS:
            raise VaryError(
                f"--vary {name}: no donor trait '{key}' (traits: {', '.join(DONOR_TRAITS)})"
            )
        low, high = DONOR_TRAITS[key]
        _unitless(name, distribution)
    elif head == "inoculum":
        if key not in INOCULUM:
            raise VaryError(
                f"--vary {name}: no inoculum quantity '{key}' (quantities: {', '.join(INOCULUM)})"
            )
        low, high = INOCULUM[key]
        _unitless(name, distribution)
    else:
        spec = parameters.get(name)
        if spec is None:
            known = ", ".join(sorted(parameters)) or "none"
            raise VaryError(
                f"--vary {name}: the recipe has no parameter '{name}' (its parameters: {known}; "
                "or donor.TRAIT, inoculum.QUANTITY)"
            )
        low, high = _parameter_bounds(name, spec, distribution)
    lo, hi = distribution.support()
    if hi < low or lo > high:
        raise VaryError(
            f"--vary {name}: {distribution.text} never falls inside the allowed [{low:g}, {high:g}]"
        )
    return Variation(name, distribution, low, high)


def _unitless(name: str, distribution: Distribution) -> None:
    if distribution.unit:
        raise VaryError(
            f"--vary {name}: give plain numbers (its unit is fixed), not '{distribution.unit}'"
        )


def _in_unit(value: Any, unit: str, name: str) -> float:
    """A parameter bound (number or quantity text) as a number in ``unit``."""
    if isinstance(value, int | float):
        return float(value)
    number, bound_unit = _quantity(str(value), name)
    if not unit or bound_unit == unit:
        return number
    dimension = dimension_of(unit)
    if dimension is None or bound_unit not in DIMENSIONS[dimension]:
        raise VaryError(f"--vary {name}: the recipe's bound '{value}' is not in {unit}")
    units = DIMENSIONS[dimension]
    return number * units[bound_unit] / units[unit]


def _parameter_bounds(name: str, spec: Any, distribution: Distribution) -> tuple[float, float]:
    """The parameter's declared range in the distribution's unit (checked: same dimension)."""
    unit = distribution.unit
    declared = next(
        (v for v in (spec.value, spec.min, spec.max) if isinstance(v, str) and v.strip()), None
    )
    declared_unit = _quantity(declared, name)[1] if declared is not None else ""
    if declared_unit and not unit:
        raise VaryError(
            f"--vary {name}: give the distribution in a unit of the parameter "
            f"(e.g. '{declared_unit}'): the recipe writes {declared}"
        )
    if unit:
        if dimension_of(unit) is None:
            raise VaryError(f"--vary {name}: unknown unit '{unit}'")
        if declared_unit and dimension_of(unit) != dimension_of(declared_unit):
            raise VaryError(
                f"--vary {name}: '{unit}' is not a unit of this parameter ({declared_unit})"
            )
    low = _in_unit(spec.min, unit, name) if spec.min is not None else -math.inf
    high = _in_unit(spec.max, unit, name) if spec.max is not None else math.inf
    return low, high
